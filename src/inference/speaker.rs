//! Speaker embeddings, classification and verification: SpeechBrain's `EncoderClassifier`
//! and `SpeakerRecognition` (`speechbrain.inference.speaker`), running the official
//! `speechbrain/spkrec-ecapa-voxceleb` files unchanged.
//!
//! **Batch independence.** SpeechBrain computes a padded batch as one tensor: ECAPA's reflect
//! padding and convolutions at the end of a short utterance see the padding of the longer
//! ones, so its embedding changes with what else is in the batch. voxbrain's default
//! ([`PaddingMode::Independent`]) computes each utterance on its own valid samples, so an
//! utterance's embedding is the same alone or in any batch (and equals SpeechBrain's
//! single-utterance embedding); [`PaddingMode::SpeechBrain`] reproduces SpeechBrain's padded
//! computation exactly.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};

use super::builders;
use crate::audio::{load_audio, ChannelMix};
use crate::dataio::encoder::CategoricalEncoder;
use crate::features::{Fbank, InputNormalization};
use crate::lobes::ecapa_tdnn::{Classifier, EcapaConfig, EcapaTdnn};
use crate::pretrained::hparams::Hparams;
use crate::pretrained::{
    from_hparams, FromHparamsOptions, Loadable, Params, Pretrained, PretrainedError, Pretrainer,
};

/// How padded batches are computed (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingMode {
    /// Each utterance on its own valid samples: results do not depend on the batch.
    #[default]
    Independent,
    /// One padded tensor, exactly as SpeechBrain computes it.
    SpeechBrain,
}

/// SpeechBrain's `EncoderClassifier`: Fbank -> sentence mean normalization -> ECAPA-TDNN
/// (-> cosine classifier).
pub struct EncoderClassifier {
    /// Resolved hyperparameters (`hparams.keys()` lists them).
    pub hparams: Hparams,
    /// `compute_features`.
    pub compute_features: Fbank,
    /// `mean_var_norm` (sentence-level).
    pub mean_var_norm: InputNormalization,
    /// `embedding_model`.
    pub embedding_model: EcapaTdnn,
    /// `mean_var_norm_emb` (global statistics, used when `normalize` is asked for).
    pub mean_var_norm_emb: Option<InputNormalization>,
    /// `classifier`, when the hyperparameters have one.
    pub classifier: Option<Classifier>,
    /// `label_encoder`.
    pub label_encoder: CategoricalEncoder,
    /// All trainable parameters (`embedding_model.*`, `classifier.*`).
    pub varmap: VarMap,
    /// How padded batches are computed.
    pub padding: PaddingMode,
    sample_rate: u32,
    device: Device,
}

fn load_err(e: impl std::fmt::Display) -> PretrainedError {
    PretrainedError::Load(e.to_string())
}

impl Pretrained for EncoderClassifier {
    fn build(hparams: &Hparams, device: &Device) -> Result<Self, PretrainedError> {
        let compute_features = builders::fbank(hparams, "compute_features")?;
        let mean_var_norm = builders::input_normalization(hparams, "mean_var_norm")?;
        let mean_var_norm_emb = match hparams.get("mean_var_norm_emb") {
            Some(_) => Some(builders::input_normalization(hparams, "mean_var_norm_emb")?),
            None => None,
        };
        let emb_obj = hparams.object("embedding_model", "ECAPA_TDNN")?;
        let cfg = EcapaConfig::from_object(emb_obj)
            .map_err(|e| load_err(format!("{}: `embedding_model`: {e}", hparams.origin())))?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let embedding_model = EcapaTdnn::new(&cfg, vb.pp("embedding_model"))?;
        let classifier = match hparams.get("classifier").and_then(|v| v.as_new()) {
            Some(o) => {
                let get = |k: &str, d: usize| {
                    o.kwarg(k)
                        .and_then(|v| v.as_i64())
                        .map(|i| i as usize)
                        .unwrap_or(d)
                };
                if o.kwarg("lin_blocks").and_then(|v| v.as_i64()).unwrap_or(0) != 0 {
                    return Err(load_err(format!(
                        "{}: `classifier`: lin_blocks > 0 is not supported yet",
                        hparams.origin()
                    )));
                }
                Some(Classifier::new(
                    get("input_size", 192),
                    get("out_neurons", 1211),
                    vb.pp("classifier"),
                )?)
            }
            None => None,
        };
        let sample_rate = hparams
            .get("sample_rate")
            .and_then(|v| v.as_i64())
            .map(|v| v as u32)
            .unwrap_or(compute_features.config().sample_rate);
        Ok(Self {
            hparams: hparams.clone(),
            compute_features,
            mean_var_norm,
            embedding_model,
            mean_var_norm_emb,
            classifier,
            label_encoder: CategoricalEncoder::default(),
            varmap,
            padding: PaddingMode::default(),
            sample_rate,
            device: device.clone(),
        })
    }

    fn load(&mut self, pretrainer: &Pretrainer) -> Result<(), PretrainedError> {
        let mut emb = Params {
            varmap: &self.varmap,
            prefix: "embedding_model.".into(),
        };
        let mut cls = Params {
            varmap: &self.varmap,
            prefix: "classifier.".into(),
        };
        let mut targets: Vec<(&str, &mut dyn Loadable)> = vec![("embedding_model", &mut emb)];
        let known = |n: &str| pretrainer.collected().contains_key(n);
        if known("classifier") && self.classifier.is_some() {
            targets.push(("classifier", &mut cls));
        }
        if known("label_encoder") {
            targets.push(("label_encoder", &mut self.label_encoder));
        }
        if let (true, Some(n)) = (known("mean_var_norm_emb"), self.mean_var_norm_emb.as_mut()) {
            targets.push(("mean_var_norm_emb", n));
        }
        pretrainer.load_collected(&mut targets)
    }
}

impl EncoderClassifier {
    /// Loads a model like SpeechBrain's `EncoderClassifier.from_hparams(source, savedir)`.
    ///
    /// ```no_run
    /// use voxbrain::inference::EncoderClassifier;
    /// use voxbrain::pretrained::FromHparamsOptions;
    /// let clf = EncoderClassifier::from_hparams("speechbrain/spkrec-ecapa-voxceleb",
    ///     &FromHparamsOptions { savedir: Some("pretrained_ecapa".into()), ..Default::default() }).unwrap();
    /// let (probs, score, index, labels) = clf.classify_file("speaker.wav").unwrap();
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

    /// Opt-in dynamic int8 quantization of the embedding model, as torch's
    /// `quantize_dynamic`: faster on the CPU, at a small cost in accuracy (the README measures
    /// both on real speech with the official weights). Embeddings no longer equal SpeechBrain's
    /// f32 ones; without this call nothing changes. The int8 copies are taken at this call:
    /// quantize after any fine-tuning.
    ///
    /// ```no_run
    /// use voxbrain::inference::speaker::SpeakerRecognition;
    /// use voxbrain::pretrained::FromHparamsOptions;
    /// let mut verification = SpeakerRecognition::from_hparams("speechbrain/spkrec-ecapa-voxceleb",
    ///     &FromHparamsOptions::default()).unwrap();
    /// verification.quantize_dynamic().unwrap();
    /// let (score, same) = verification.verify_files("a.flac", "b.flac").unwrap();
    /// ```
    pub fn quantize_dynamic(&mut self) -> Result<(), PretrainedError> {
        Ok(self.embedding_model.quantize_dynamic()?)
    }

    /// Loads a file as SpeechBrain's `load_audio` (resampled to the model rate, mono).
    pub fn load_audio(&self, path: impl AsRef<Path>) -> Result<Tensor, PretrainedError> {
        Ok(load_audio(path, self.sample_rate, ChannelMix::AvgToMono)?)
    }

    fn embed_padded(&self, wavs: &Tensor, lens: &Tensor) -> Result<Tensor, PretrainedError> {
        let min_samples = self.compute_features.stft().hop_length * 5;
        if wavs.dim(1)? < min_samples {
            return Err(load_err(format!(
                "audio too short for ECAPA-TDNN: {} samples, at least {min_samples} ({} ms) are needed",
                wavs.dim(1)?,
                min_samples * 1000 / self.sample_rate as usize
            )));
        }
        let feats = self
            .compute_features
            .forward(wavs)?
            .to_device(&self.device)?;
        let lens = lens.to_device(&self.device)?;
        let mut norm = self.mean_var_norm.clone();
        let feats = norm.forward(&feats, Some(&lens), None)?;
        self.embedding_model
            .forward(&feats, Some(&lens))
            .map_err(Into::into)
    }

    /// SpeechBrain's `encode_batch`: embeddings `[batch, 1, lin_neurons]` of `wavs`
    /// (`[batch, time]` or `[time]`) with relative lengths `wav_lens`; `normalize` applies
    /// `mean_var_norm_emb`.
    pub fn encode_batch(
        &self,
        wavs: &Tensor,
        wav_lens: Option<&Tensor>,
        normalize: bool,
    ) -> Result<Tensor, PretrainedError> {
        let wavs = if wavs.rank() == 1 {
            wavs.unsqueeze(0)?
        } else {
            wavs.clone()
        };
        let wavs = wavs.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let (b, t) = wavs.dims2()?;
        let lens: Vec<f32> = match wav_lens {
            Some(l) => l.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            None => vec![1.0; b],
        };
        if lens.len() != b {
            return Err(load_err(format!(
                "{} relative lengths for a batch of {b}",
                lens.len()
            )));
        }
        let all_full = lens.iter().all(|&l| l >= 1.0 - 1e-6);
        let emb = if self.padding == PaddingMode::SpeechBrain || all_full {
            let lt = Tensor::from_vec(lens, b, &Device::Cpu)?;
            self.embed_padded(&wavs, &lt)?
        } else {
            let mut out = Vec::with_capacity(b);
            for (i, &l) in lens.iter().enumerate() {
                // Valid samples, as SpeechBrain's masks count them: round(len * T).
                let n = ((l as f64 * t as f64).round() as usize).clamp(1, t);
                let w = wavs.get(i)?.narrow(0, 0, n)?.unsqueeze(0)?;
                let one = Tensor::ones(1, DType::F32, &Device::Cpu)?;
                out.push(self.embed_padded(&w, &one)?);
            }
            Tensor::cat(&out, 0)?
        };
        if normalize {
            let mut n = self.mean_var_norm_emb.clone().ok_or_else(|| {
                load_err("normalize=true needs `mean_var_norm_emb` in the hyperparameters")
            })?;
            n.train(false);
            let ones = Tensor::ones(emb.dim(0)?, DType::F32, emb.device())?;
            return n.forward(&emb, Some(&ones), None).map_err(Into::into);
        }
        Ok(emb)
    }

    /// SpeechBrain's `classify_batch`: `(out_prob [batch, n_classes], best score [batch],
    /// index [batch], labels)`.
    pub fn classify_batch(
        &self,
        wavs: &Tensor,
        wav_lens: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Vec<u32>, Vec<String>), PretrainedError> {
        let clf = self
            .classifier
            .as_ref()
            .ok_or_else(|| load_err("this model has no `classifier`"))?;
        let emb = self.encode_batch(wavs, wav_lens, false)?;
        let probs = clf.forward(&emb)?.squeeze(1)?;
        let score = probs.max(D::Minus1)?;
        let index: Vec<u32> = probs.argmax(D::Minus1)?.to_vec1()?;
        let labels = index
            .iter()
            .map(|&i| {
                self.label_encoder
                    .decode(i as usize)
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        Ok((probs, score, index, labels))
    }

    /// SpeechBrain's `classify_file`.
    pub fn classify_file(
        &self,
        path: impl AsRef<Path>,
    ) -> Result<(Tensor, Tensor, Vec<u32>, Vec<String>), PretrainedError> {
        let wav = self.load_audio(path)?;
        self.classify_batch(&wav.unsqueeze(0)?, None)
    }
}

/// SpeechBrain's `SpeakerRecognition`: an [`EncoderClassifier`] with cosine verification.
///
/// ```no_run
/// use voxbrain::inference::SpeakerRecognition;
/// use voxbrain::pretrained::FromHparamsOptions;
/// let verification = SpeakerRecognition::from_hparams("speechbrain/spkrec-ecapa-voxceleb",
///     &FromHparamsOptions { savedir: Some("pretrained_ecapa".into()), ..Default::default() }).unwrap();
/// let (score, same) = verification.verify_files("a.flac", "b.flac").unwrap();
/// ```
pub struct SpeakerRecognition {
    /// The encoder (embeddings, classification).
    pub encoder: EncoderClassifier,
}

impl std::ops::Deref for SpeakerRecognition {
    type Target = EncoderClassifier;
    fn deref(&self) -> &EncoderClassifier {
        &self.encoder
    }
}

impl std::ops::DerefMut for SpeakerRecognition {
    fn deref_mut(&mut self) -> &mut EncoderClassifier {
        &mut self.encoder
    }
}

/// SpeechBrain's default verification threshold.
pub const DEFAULT_THRESHOLD: f32 = 0.25;

impl SpeakerRecognition {
    /// Loads a model like SpeechBrain's `SpeakerRecognition.from_hparams`.
    pub fn from_hparams(source: &str, opts: &FromHparamsOptions) -> Result<Self, PretrainedError> {
        Ok(Self {
            encoder: EncoderClassifier::from_hparams(source, opts)?,
        })
    }

    /// Cosine similarity of embeddings (`torch.nn.CosineSimilarity(dim=-1, eps=1e-6)`).
    pub fn similarity(a: &Tensor, b: &Tensor) -> Result<Tensor, PretrainedError> {
        let dot = (a * b)?.sum(D::Minus1)?;
        let na = a
            .sqr()?
            .sum(D::Minus1)?
            .sqrt()?
            .clamp(1e-6, f64::INFINITY)?;
        let nb = b
            .sqr()?
            .sum(D::Minus1)?
            .sqrt()?
            .clamp(1e-6, f64::INFINITY)?;
        Ok(dot.div(&(na * nb)?)?)
    }

    /// SpeechBrain's `verify_batch`: cosine scores `[batch, 1]` and decisions `score > threshold`.
    pub fn verify_batch(
        &self,
        wavs1: &Tensor,
        wavs2: &Tensor,
        wav1_lens: Option<&Tensor>,
        wav2_lens: Option<&Tensor>,
        threshold: f32,
    ) -> Result<(Tensor, Vec<bool>), PretrainedError> {
        let e1 = self.encode_batch(wavs1, wav1_lens, false)?;
        let e2 = self.encode_batch(wavs2, wav2_lens, false)?;
        let score = Self::similarity(&e1, &e2)?;
        let decisions = score
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|s| s > threshold)
            .collect();
        Ok((score, decisions))
    }

    /// SpeechBrain's `verify_files`: loads both files (resampled, mono) and compares them.
    pub fn verify_files(
        &self,
        path_x: impl AsRef<Path>,
        path_y: impl AsRef<Path>,
    ) -> Result<(f32, bool), PretrainedError> {
        let x = self.load_audio(path_x)?.unsqueeze(0)?;
        let y = self.load_audio(path_y)?.unsqueeze(0)?;
        let (score, dec) = self.verify_batch(&x, &y, None, None, DEFAULT_THRESHOLD)?;
        Ok((score.flatten_all()?.to_vec1::<f32>()?[0], dec[0]))
    }
}
