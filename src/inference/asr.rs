//! Speech recognition: SpeechBrain's `EncoderDecoderASR` (`speechbrain.inference.ASR`), running
//! the official `speechbrain/asr-crdnn-rnnlm-librispeech` files unchanged: Fbank -> global
//! normalization -> CRDNN encoder -> attentional GRU decoder with beam search, RNNLM shallow
//! fusion and a coverage penalty -> SentencePiece.
//!
//! **Batches.** SpeechBrain runs its LSTMs over the padded batch, so an utterance's transcript
//! changes with what else is in the batch. voxbrain's default ([`PaddingMode::Independent`])
//! encodes and decodes each utterance on its own samples: batched results equal single ones
//! (and SpeechBrain's single-utterance results). [`PaddingMode::SpeechBrain`] reproduces
//! SpeechBrain's padded computation.
//!
//! **Long recordings.** The attention decoder was trained on utterances of a few seconds, and
//! one beam search over minutes of audio needs memory in proportion (SpeechBrain users report
//! out-of-memory errors and truncated output past ~30 s). [`EncoderDecoderASR::transcribe_file`]
//! therefore splits recordings longer than [`ChunkOptions::max_seconds`] into chunks of about
//! [`ChunkOptions::chunk_seconds`], cutting at the quietest 25 ms within
//! [`ChunkOptions::search_seconds`] of each nominal boundary, transcribes the chunks one by
//! one (memory bounded by one chunk) and joins the texts.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::builders;
use super::speaker::PaddingMode;
use crate::audio::{load_audio, ChannelMix};
use crate::decoders::{
    enc_lens, greedy_search, BeamSearchConfig, GreedySearchConfig, S2SRNNBeamSearcher,
    Seq2SeqModules,
};
use crate::features::{Fbank, InputNormalization};
use crate::lobes::crdnn::{Crdnn, CrdnnConfig};
use crate::lobes::rnnlm::{Rnnlm, RnnlmConfig};
use crate::nnet::embedding::Embedding;
use crate::nnet::linear::Linear;
use crate::nnet::rnn_decoder::{AttentionalRNNDecoder, AttentionalRNNDecoderConfig};
use crate::pretrained::hparams::{Hparams, Kwargs, Object};
use crate::pretrained::{
    from_hparams, FromHparamsOptions, Loadable, Params, Pretrained, PretrainedError, Pretrainer,
};
use crate::tokenizers::SentencePiece;

fn err(e: impl std::fmt::Display) -> PretrainedError {
    PretrainedError::Load(e.to_string())
}

/// How `transcribe_*` decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodingMethod {
    /// The yaml's beam search (with its scorers).
    #[default]
    BeamSearch,
    /// Greedy (arg-max) decoding, no language model.
    Greedy,
}

/// How long recordings are split (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkOptions {
    /// Recordings up to this long are transcribed in one piece.
    pub max_seconds: f32,
    /// Nominal chunk length.
    pub chunk_seconds: f32,
    /// How far from a nominal boundary the quietest cut point is searched.
    pub search_seconds: f32,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            max_seconds: 30.0,
            chunk_seconds: 20.0,
            search_seconds: 3.0,
        }
    }
}

impl Loadable for Option<SentencePiece> {
    fn load_from(&mut self, path: &Path) -> Result<(), PretrainedError> {
        *self = Some(SentencePiece::open(path).map_err(err)?);
        Ok(())
    }
}

/// Positions of the ASR's modules in the yaml's `asr_model` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsrModuleIndices {
    /// The encoder (`enc`).
    pub enc: usize,
    /// The embedding (`emb`).
    pub emb: usize,
    /// The decoder (`dec`).
    pub dec: usize,
    /// The decoder's output layer (`seq_lin`).
    pub seq_lin: usize,
    /// The CTC output layer (`ctc_lin`), if any.
    pub ctc_lin: Option<usize>,
}

/// SpeechBrain's `EncoderDecoderASR` for CRDNN + attentional RNN decoder models.
pub struct EncoderDecoderASR {
    /// Resolved hyperparameters.
    pub hparams: Hparams,
    /// `compute_features`.
    pub compute_features: Fbank,
    /// `normalizer` (global statistics from `normalizer.ckpt`).
    pub normalizer: InputNormalization,
    /// The encoder model (`enc`, `asr_model[0]`).
    pub enc: Crdnn,
    /// Token embedding (`emb`).
    pub emb: Embedding,
    /// Attentional decoder (`dec`).
    pub dec: AttentionalRNNDecoder,
    /// CTC output layer (`ctc_lin`), used in training.
    pub ctc_lin: Option<Linear>,
    /// Decoder output layer (`seq_lin`).
    pub seq_lin: Linear,
    /// The language model (`lm_model`).
    pub lm_model: Option<Rnnlm>,
    /// The tokenizer (`tokenizer.ckpt`).
    pub tokenizer: Option<SentencePiece>,
    /// Beam-search options (the yaml's `decoder`).
    pub beam: BeamSearchConfig,
    /// Greedy or beam search.
    pub decoding: DecodingMethod,
    /// How padded batches are computed.
    pub padding: PaddingMode,
    /// How long recordings are split.
    pub chunking: ChunkOptions,
    /// Parameters of `asr_model` (keys as in `asr.ckpt`: `0.` encoder, `1.` embedding, ...).
    pub asr_varmap: VarMap,
    /// Where `enc`, `emb`, `dec`, `seq_lin` and `ctc_lin` sit in `asr_model` (the key prefix
    /// of their parameters in `asr.ckpt`).
    pub module_indices: AsrModuleIndices,
    /// Parameters of the language model (keys as in `lm.ckpt`).
    pub lm_varmap: VarMap,
    sample_rate: u32,
    device: Device,
}

fn object<'a>(list: &'a [(String, Object)], id: &str) -> Option<(usize, &'a Object)> {
    list.iter()
        .position(|(k, _)| k == id)
        .map(|i| (i, &list[i].1))
}

impl Pretrained for EncoderDecoderASR {
    fn build(hp: &Hparams, device: &Device) -> Result<Self, PretrainedError> {
        let origin = hp.origin().to_string();
        let ctx = |key: &str, e: String| err(format!("{origin}: `{key}`: {e}"));
        let compute_features = builders::fbank(hp, "compute_features")?;
        let mut normalizer = builders::input_normalization(hp, "normalizer")?;
        normalizer.train(false);
        let dec_obj = hp.object("decoder", "S2SRNNBeamSearcher")?;
        let beam = builders::beam_search(hp, "decoder")?;
        let list = builders::module_list(hp, "asr_model")?;
        let enc_id = hp
            .object("encoder", "LengthsCapableSequential")
            .ok()
            .and_then(|o| builders::ref_id(o, "model"))
            .unwrap_or_else(|| "enc".into());
        let find = |id: Option<String>, what: &str| {
            let id = id.ok_or_else(|| ctx("decoder", format!("`{what}` must be a !ref")))?;
            object(&list, &id)
                .ok_or_else(|| ctx("asr_model", format!("does not hold `{id}` ({what})")))
        };
        let (enc_i, enc_o) = find(Some(enc_id), "encoder model")?;
        let (emb_i, emb_o) = find(builders::ref_id(dec_obj, "embedding"), "embedding")?;
        let (dec_i, dec_o) = find(builders::ref_id(dec_obj, "decoder"), "decoder")?;
        let (lin_i, lin_o) = find(builders::ref_id(dec_obj, "linear"), "linear")?;
        let ctc = object(&list, "ctc_lin");

        let asr_varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&asr_varmap, DType::F32, device);
        let enc_cfg = CrdnnConfig::from_object(enc_o).map_err(|e| ctx("enc", e))?;
        let enc = Crdnn::new(&enc_cfg, vb.pp(enc_i))?;
        let kw = Kwargs::new(emb_o);
        let n_emb = kw.usize("num_embeddings", 0).map_err(|e| ctx("emb", e))?;
        let d_emb = kw.usize("embedding_dim", 128).map_err(|e| ctx("emb", e))?;
        if kw
            .bool("consider_as_one_hot", false)
            .map_err(|e| ctx("emb", e))?
        {
            return Err(ctx("emb", "consider_as_one_hot is not supported".into()));
        }
        let emb = Embedding::new(n_emb, d_emb, vb.pp(emb_i))?;
        let dec_cfg = decoder_config(dec_o).map_err(|e| ctx("dec", e))?;
        let dec = AttentionalRNNDecoder::new(&dec_cfg, vb.pp(dec_i))?;
        let linear = |o: &Object, i: usize, key: &str| -> Result<Linear, PretrainedError> {
            let kw = Kwargs::new(o);
            let inp = kw.usize("input_size", 0).map_err(|e| ctx(key, e))?;
            let out = kw.usize("n_neurons", 0).map_err(|e| ctx(key, e))?;
            if inp == 0 || out == 0 {
                return Err(ctx(key, "`input_size` and `n_neurons` are required".into()));
            }
            let bias = kw.bool("bias", true).map_err(|e| ctx(key, e))?;
            Ok(Linear::new(inp, out, bias, vb.pp(i))?)
        };
        let seq_lin = linear(lin_o, lin_i, "seq_lin")?;
        let ctc_lin = match ctc {
            Some((i, o)) => Some(linear(o, i, "ctc_lin")?),
            None => None,
        };
        // Any other module of the list still has to exist so that asr.ckpt loads strictly.
        for (i, (id, o)) in list.iter().enumerate() {
            if ![enc_i, emb_i, dec_i, lin_i].contains(&i) && ctc.is_none_or(|(c, _)| c != i) {
                return Err(ctx(
                    "asr_model",
                    format!("module `{id}` ({}) is not supported", o.short_name()),
                ));
            }
        }
        let lm_varmap = VarMap::new();
        let lm_model = match hp.get("lm_model").and_then(|v| v.as_new()) {
            Some(o) => {
                let cfg = RnnlmConfig::from_object(o).map_err(|e| ctx("lm_model", e))?;
                let vb = VarBuilder::from_varmap(&lm_varmap, DType::F32, device);
                Some(Rnnlm::new(&cfg, vb)?)
            }
            None => None,
        };
        if beam.scorer.rnnlm.is_some() && lm_model.is_none() {
            return Err(ctx("decoder", "an RNNLM scorer needs `lm_model`".into()));
        }
        let sample_rate = hp
            .get("sample_rate")
            .and_then(|v| v.as_i64())
            .map(|v| v as u32)
            .unwrap_or(compute_features.config().sample_rate);
        Ok(Self {
            hparams: hp.clone(),
            compute_features,
            normalizer,
            enc,
            emb,
            dec,
            ctc_lin,
            seq_lin,
            lm_model,
            tokenizer: None,
            beam,
            decoding: DecodingMethod::default(),
            padding: PaddingMode::default(),
            chunking: ChunkOptions::default(),
            asr_varmap,
            module_indices: AsrModuleIndices {
                enc: enc_i,
                emb: emb_i,
                dec: dec_i,
                seq_lin: lin_i,
                ctc_lin: ctc.map(|(i, _)| i),
            },
            lm_varmap,
            sample_rate,
            device: device.clone(),
        })
    }

    fn load(&mut self, pretrainer: &Pretrainer) -> Result<(), PretrainedError> {
        let mut asr = Params {
            varmap: &self.asr_varmap,
            prefix: String::new(),
        };
        let mut lm = Params {
            varmap: &self.lm_varmap,
            prefix: String::new(),
        };
        let known = |n: &str| pretrainer.collected().contains_key(n);
        let mut targets: Vec<(&str, &mut dyn Loadable)> = vec![("asr", &mut asr)];
        if known("normalizer") {
            targets.push(("normalizer", &mut self.normalizer));
        }
        if known("lm") && self.lm_model.is_some() {
            targets.push(("lm", &mut lm));
        }
        if known("tokenizer") {
            targets.push(("tokenizer", &mut self.tokenizer));
        }
        pretrainer.load_collected(&mut targets)
    }
}

fn decoder_config(o: &Object) -> Result<AttentionalRNNDecoderConfig, String> {
    let kw = Kwargs::new(o);
    kw.check_known(&[
        "rnn_type",
        "attn_type",
        "hidden_size",
        "attn_dim",
        "num_layers",
        "enc_dim",
        "input_size",
        "nonlinearity",
        "re_init",
        "normalization",
        "scaling",
        "channels",
        "kernel_size",
        "bias",
        "dropout",
    ])?;
    if !kw.bool("bias", true)? {
        return Err("bias: False is not supported".into());
    }
    Ok(AttentionalRNNDecoderConfig {
        rnn_type: kw.str("rnn_type", "gru")?,
        attn_type: kw.str("attn_type", "location")?,
        hidden_size: kw.usize("hidden_size", 0)?,
        attn_dim: kw.usize("attn_dim", 0)?,
        num_layers: kw.usize("num_layers", 1)?,
        enc_dim: kw.usize("enc_dim", 0)?,
        input_size: kw.usize("input_size", 0)?,
        scaling: kw.f64("scaling", 1.0)?,
        channels: kw.usize("channels", 0)?,
        kernel_size: kw.usize("kernel_size", 0)?,
        dropout: kw.f64("dropout", 0.0)? as f32,
    })
}

impl EncoderDecoderASR {
    /// Loads a model like SpeechBrain's `EncoderDecoderASR.from_hparams(source, savedir)`.
    ///
    /// ```no_run
    /// use voxbrain::inference::EncoderDecoderASR;
    /// use voxbrain::pretrained::FromHparamsOptions;
    /// let asr = EncoderDecoderASR::from_hparams("speechbrain/asr-crdnn-rnnlm-librispeech",
    ///     &FromHparamsOptions { savedir: Some("pretrained_ASR".into()), ..Default::default() }).unwrap();
    /// println!("{}", asr.transcribe_file("speech.wav").unwrap());
    /// ```
    pub fn from_hparams(source: &str, opts: &FromHparamsOptions) -> Result<Self, PretrainedError> {
        from_hparams(source, opts)
    }

    /// The model's sampling rate (files are resampled to it).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `bos_index` of the decoder.
    pub fn bos_index(&self) -> u32 {
        self.beam.bos_index
    }

    /// `eos_index` of the decoder.
    pub fn eos_index(&self) -> u32 {
        self.beam.eos_index
    }

    /// Loads a file as SpeechBrain's `load_audio` (resampled to the model rate, mono).
    pub fn load_audio(&self, path: impl AsRef<Path>) -> Result<Tensor, PretrainedError> {
        Ok(load_audio(path, self.sample_rate, ChannelMix::AvgToMono)?)
    }

    /// Normalized features of `wavs` `[B, T]` (`compute_features` then `normalize`).
    pub fn compute_normalized_features(
        &self,
        wavs: &Tensor,
        wav_lens: &[f32],
    ) -> Result<Tensor, PretrainedError> {
        // Enough frames for the time pooling and the convolutions' reflect padding.
        let frames = self.enc.config().time_pooling_size.unwrap_or(1).max(2);
        let min = self.compute_features.stft().hop_length * (frames - 1) + 1;
        if wavs.dim(1)? < min {
            return Err(err(format!(
                "audio too short for the CRDNN encoder: {} samples, at least {min} ({} ms) are needed",
                wavs.dim(1)?,
                min * 1000 / self.sample_rate as usize
            )));
        }
        let feats = self
            .compute_features
            .forward(wavs)?
            .to_device(&self.device)?;
        let lens = Tensor::from_vec(wav_lens.to_vec(), wav_lens.len(), &self.device)?;
        let mut norm = self.normalizer.clone();
        norm.train(false);
        Ok(norm.forward(&feats, Some(&lens), None)?)
    }

    fn check_batch(
        &self,
        wavs: &Tensor,
        wav_lens: Option<&[f32]>,
    ) -> Result<(Tensor, Vec<f32>), PretrainedError> {
        let wavs = match wavs.rank() {
            1 => wavs.unsqueeze(0)?,
            2 => wavs.clone(),
            r => {
                return Err(err(format!(
                    "waveforms must be [batch, time], got rank {r}"
                )))
            }
        };
        let wavs = wavs.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let b = wavs.dim(0)?;
        let lens = wav_lens
            .map(<[f32]>::to_vec)
            .unwrap_or_else(|| vec![1.0; b]);
        if lens.len() != b {
            return Err(err(format!(
                "{} relative lengths for a batch of {b}",
                lens.len()
            )));
        }
        if let Some(l) = lens.iter().find(|l| !(**l > 0.0 && **l <= 1.0 + 1e-6)) {
            return Err(err(format!("relative length {l} is not in (0, 1]")));
        }
        Ok((wavs, lens))
    }

    /// Each utterance's valid samples (SpeechBrain's `round(len * T)`).
    fn split(wavs: &Tensor, lens: &[f32]) -> Result<Vec<Tensor>, PretrainedError> {
        let t = wavs.dim(1)?;
        lens.iter()
            .enumerate()
            .map(|(i, &l)| {
                let n = ((l as f64 * t as f64).round() as usize).clamp(1, t);
                Ok(wavs.get(i)?.narrow(0, 0, n)?.unsqueeze(0)?)
            })
            .collect()
    }

    fn encode_padded(&self, wavs: &Tensor, lens: &[f32]) -> Result<Tensor, PretrainedError> {
        let feats = self.compute_normalized_features(wavs, lens)?;
        Ok(self.enc.forward(&feats, false)?)
    }

    /// SpeechBrain's `encode_batch`: encoder states `[B, T', D]` of `wavs` `[B, T]` with
    /// relative lengths (`None`: all 1.0). In [`PaddingMode::Independent`] each utterance is
    /// encoded on its own samples and the results are zero-padded to the longest.
    pub fn encode_batch(
        &self,
        wavs: &Tensor,
        wav_lens: Option<&[f32]>,
    ) -> Result<Tensor, PretrainedError> {
        let (wavs, lens) = self.check_batch(wavs, wav_lens)?;
        if self.padding == PaddingMode::SpeechBrain || lens.iter().all(|&l| l >= 1.0 - 1e-6) {
            return self.encode_padded(&wavs, &lens);
        }
        let encs = Self::split(&wavs, &lens)?
            .iter()
            .map(|w| self.encode_padded(w, &[1.0]))
            .collect::<Result<Vec<_>, _>>()?;
        let t_max = encs
            .iter()
            .map(|e| e.dim(1))
            .collect::<Result<Vec<_>, _>>()?;
        let t_max = t_max.into_iter().max().unwrap_or(0);
        let padded = encs
            .into_iter()
            .map(|e| {
                let t = e.dim(1)?;
                if t < t_max {
                    e.pad_with_zeros(1, 0, t_max - t)
                } else {
                    Ok(e)
                }
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&padded, 0)?)
    }

    /// The decoding modules (`emb`, `dec`, `seq_lin`).
    pub fn seq2seq_modules(&self) -> Seq2SeqModules {
        Seq2SeqModules {
            emb: self.emb.clone(),
            dec: self.dec.clone(),
            seq_lin: self.seq_lin.clone(),
        }
    }

    /// Decodes encoder states with [`EncoderDecoderASR::decoding`]: token ids per utterance.
    pub fn decode(
        &self,
        enc: &Tensor,
        enc_len: &[usize],
    ) -> Result<Vec<Vec<u32>>, PretrainedError> {
        let modules = self.seq2seq_modules();
        Ok(match self.decoding {
            DecodingMethod::Greedy => {
                let cfg = GreedySearchConfig {
                    bos_index: self.beam.bos_index,
                    eos_index: self.beam.eos_index,
                    min_decode_ratio: self.beam.min_decode_ratio,
                    max_decode_ratio: self.beam.max_decode_ratio,
                };
                greedy_search(&modules, enc, enc_len, &cfg)?
            }
            DecodingMethod::BeamSearch => {
                let searcher = S2SRNNBeamSearcher {
                    modules,
                    lm: self.lm_model.clone(),
                    ctc_lin: self.ctc_lin.clone(),
                    config: self.beam.clone(),
                };
                searcher
                    .search(enc, enc_len)?
                    .into_iter()
                    .map(|h| h.tokens)
                    .collect()
            }
        })
    }

    /// Text of token ids (the tokenizer's `decode_ids`).
    pub fn decode_ids(&self, ids: &[u32]) -> Result<String, PretrainedError> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| err("no tokenizer loaded (the pretrainer has no `tokenizer`)"))?;
        tok.decode_ids(ids).map_err(err)
    }

    /// SpeechBrain's `transcribe_batch`: `(texts, token ids)` of `wavs` `[B, T]` with relative
    /// lengths (`None`: all 1.0).
    pub fn transcribe_batch(
        &self,
        wavs: &Tensor,
        wav_lens: Option<&[f32]>,
    ) -> Result<(Vec<String>, Vec<Vec<u32>>), PretrainedError> {
        let (wavs, lens) = self.check_batch(wavs, wav_lens)?;
        let tokens = if self.padding == PaddingMode::SpeechBrain {
            let enc = self.encode_padded(&wavs, &lens)?;
            let el = enc_lens(enc.dim(1)?, &lens);
            self.decode(&enc, &el)?
        } else {
            let mut all = Vec::with_capacity(lens.len());
            for w in Self::split(&wavs, &lens)? {
                let enc = self.encode_padded(&w, &[1.0])?;
                let t = enc.dim(1)?;
                all.extend(self.decode(&enc, &[t])?);
            }
            all
        };
        let texts = tokens
            .iter()
            .map(|t| self.decode_ids(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((texts, tokens))
    }

    /// SpeechBrain's `transcribe_file`: the transcript of an audio file (resampled, mono).
    /// Recordings longer than [`ChunkOptions::max_seconds`] are transcribed in chunks (see the
    /// module docs).
    pub fn transcribe_file(&self, path: impl AsRef<Path>) -> Result<String, PretrainedError> {
        let wav = self.load_audio(&path)?;
        self.transcribe_signal(&wav)
    }

    /// Transcribes one signal at the model's rate, chunking long ones.
    pub fn transcribe_signal(&self, wav: &Tensor) -> Result<String, PretrainedError> {
        Ok(self.transcribe_signal_with_tokens(wav)?.0)
    }

    /// [`EncoderDecoderASR::transcribe_signal`] with the token ids (of all chunks, in order).
    pub fn transcribe_signal_with_tokens(
        &self,
        wav: &Tensor,
    ) -> Result<(String, Vec<u32>), PretrainedError> {
        let samples = wav.flatten_all()?.to_vec1::<f32>()?;
        if samples.is_empty() {
            return Err(err("empty audio: nothing to transcribe"));
        }
        let sr = self.sample_rate as f32;
        let bounds = super::chunking::chunk_bounds(&samples, sr, &self.chunking);
        let progress = crate::progress::items_bar(
            bounds.len() as u64,
            "transcribing chunks",
            bounds.len() > 1,
        );
        let (mut texts, mut ids) = (Vec::with_capacity(bounds.len()), Vec::new());
        for (a, b) in bounds {
            let w = Tensor::from_slice(&samples[a..b], (1, b - a), &Device::Cpu)?;
            let (t, tok) = self.transcribe_batch(&w, None)?;
            texts.extend(t.into_iter().filter(|s| !s.is_empty()));
            ids.extend(tok.into_iter().flatten());
            progress.inc(1);
        }
        progress.finish_and_clear();
        Ok((texts.join(" "), ids))
    }
}
