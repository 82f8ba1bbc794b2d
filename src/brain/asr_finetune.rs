//! The tutorial's `EncDecFineTune`: fine-tuning a loaded [`EncoderDecoderASR`] (features ->
//! normalize -> enc -> emb -> dec -> seq_lin -> log_softmax, `nll_loss` with label smoothing on
//! `tokens_eos`), its data pipeline, and the export of the result in SpeechBrain's layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Tensor, D};
use serde_json::{json, Value as Json};

use super::{
    Brain, BrainCore, BrainError, FileTrainLogger, LinearScheduler, Modules, NewBobScheduler,
    Recoverable, Stage,
};
use crate::dataio::{self, DynamicItemDataset, FilterSort, PaddedBatch, Value};
use crate::inference::EncoderDecoderASR;
use crate::metrics::{count_ops, op_table};
use crate::nnet::losses::{ctc_loss, nll_loss, Reduction};

/// `EncDecFineTune(sb.Brain)` of the tutorial, over a loaded ASR model.
///
/// Modules (the tutorial's dict): `enc`, `emb`, `dec`, `seq_lin` (parameters of `asr.ckpt`,
/// keys `0.`, `1.`, ... as in the file), `compute_features` and `normalize` (no parameters;
/// `normalize` updates its global statistics in train mode, as SpeechBrain's does).
pub struct EncDecFineTune {
    core: BrainCore,
    /// The model being fine-tuned (its `Var`s are the modules' parameters).
    pub asr: EncoderDecoderASR,
    /// `nll_loss`'s `label_smoothing` (the tutorial: 0.1).
    pub label_smoothing: f64,
    /// Writes `train_log.txt` lines at each epoch's end when set.
    pub train_logger: Option<FileTrainLogger>,
    /// Anneals the learning rate on the validation loss when set.
    pub lr_annealing: Option<NewBobScheduler>,
    /// Sets each epoch's learning rate from a straight line when set (applied at the end of
    /// each training stage, for the next epoch; the recipe's `lr_final`).
    pub lr_linear: Option<LinearScheduler>,
    /// Decode the validation set greedily and report its WER.
    pub valid_wer: bool,
    /// Weight of the CTC loss on `ctc_lin`'s outputs in the objective (SpeechBrain's
    /// LibriSpeech CRDNN recipe: `ctc_weight * ctc + (1 - ctc_weight) * nll`); 0 (the
    /// tutorial's fine-tuning) leaves `ctc_lin` out. Set it with [`Self::with_ctc_weight`].
    ctc_weight: f64,
    /// The yaml's `blank_index` (default 0), read once when CTC is turned on.
    blank_index: usize,
    wer: (usize, usize),
    train_loss: Option<f64>,
    /// The learning rate the last training stage ran with (logged, as SpeechBrain logs the
    /// old value after a scheduler steps).
    epoch_lr: f64,
    /// `(epoch, train loss, valid loss, valid WER)` of each finished epoch.
    pub epoch_stats: Vec<(usize, f64, Option<f64>, Option<f64>)>,
}

impl EncDecFineTune {
    /// The tutorial's `modules` dict over `asr`, and a core with `opt_class`.
    pub fn new(
        asr: EncoderDecoderASR,
        opt_class: Option<super::OptClass>,
        opts: super::BrainOptions,
    ) -> Result<Self, BrainError> {
        let mut modules = Modules::new();
        let ix = asr.module_indices;
        for (name, i) in [
            ("enc", ix.enc),
            ("emb", ix.emb),
            ("dec", ix.dec),
            ("seq_lin", ix.seq_lin),
        ] {
            modules.add_from_varmap(name, &asr.asr_varmap, &format!("{i}."));
        }
        modules.add("compute_features", Vec::new(), Vec::new());
        modules.add("normalize", Vec::new(), Vec::new());
        Ok(Self {
            core: BrainCore::new(modules, opt_class, opts),
            asr,
            label_smoothing: 0.1,
            train_logger: None,
            lr_annealing: None,
            lr_linear: None,
            valid_wer: false,
            ctc_weight: 0.0,
            blank_index: 0,
            wer: (0, 0),
            train_loss: None,
            epoch_lr: 0.0,
            epoch_stats: Vec::new(),
        })
    }

    /// Trains with joint CTC + attention: `ctc_lin` becomes a module (trained) and the loss
    /// `ctc_weight * ctc + (1 - ctc_weight) * nll`, as SpeechBrain's LibriSpeech CRDNN recipe.
    /// A model without `ctc_lin` is an error.
    ///
    /// ```no_run
    /// # fn f(b: voxbrain::brain::asr_finetune::EncDecFineTune) -> Result<(), voxbrain::brain::BrainError> {
    /// let brain = b.with_ctc_weight(0.5)?;
    /// # Ok(()) }
    /// ```
    pub fn with_ctc_weight(mut self, ctc_weight: f64) -> Result<Self, BrainError> {
        if !(0.0..=1.0).contains(&ctc_weight) {
            return Err(BrainError::Config(format!(
                "ctc_weight {ctc_weight} is not within 0..=1"
            )));
        }
        if ctc_weight > 0.0 {
            let Some(i) = self.asr.module_indices.ctc_lin else {
                return Err(BrainError::Config(
                    "ctc_weight > 0 needs a `ctc_lin` in `asr_model`".into(),
                ));
            };
            self.core
                .modules
                .add_from_varmap("ctc_lin", &self.asr.asr_varmap, &format!("{i}."));
        }
        let blank = self.asr.hparams.get("blank_index").and_then(|v| v.as_i64());
        self.blank_index = blank.unwrap_or(0).max(0) as usize;
        self.ctc_weight = ctc_weight;
        Ok(self)
    }

    /// Writes the fine-tuned model in SpeechBrain's layout into `dir`: `asr.ckpt` (all of
    /// `asr_model`), `normalizer.ckpt`, `lm.ckpt`, and `hyperparams.yaml` / `tokenizer.ckpt`
    /// copied from `model_dir` (the loaded model's files). The folder is written beside its
    /// final place and renamed, so a crash leaves no half model.
    pub fn export(&self, model_dir: &Path, dir: &Path) -> Result<(), BrainError> {
        let io = |p: &Path, e: std::io::Error| BrainError::Io(p.to_path_buf(), e);
        let tmp = crate::fsutil::temp_dir_beside(dir).map_err(|e| io(dir, e))?;
        let fmt = |e: String| BrainError::Config(e);
        crate::pretrained::ckpt::save_state_dict(
            &self.asr.asr_varmap,
            None,
            tmp.path().join("asr.ckpt"),
        )
        .map_err(|e| fmt(e.to_string()))?;
        self.asr
            .normalizer
            .save_statistics(tmp.path().join("normalizer.ckpt"))
            .map_err(|e| fmt(e.to_string()))?;
        if self.asr.lm_model.is_some() {
            crate::pretrained::ckpt::save_state_dict(
                &self.asr.lm_varmap,
                None,
                tmp.path().join("lm.ckpt"),
            )
            .map_err(|e| fmt(e.to_string()))?;
        }
        for f in ["hyperparams.yaml", "tokenizer.ckpt"] {
            let src = model_dir.join(f);
            let dst = tmp.path().join(f);
            let bytes = std::fs::read(&src).map_err(|e| io(&src, e))?;
            crate::fsutil::write_atomic(&dst, &bytes).map_err(|e| io(&dst, e))?;
        }
        crate::fsutil::publish_dir(tmp, dir).map_err(|e| io(dir, e))
    }

    fn module_train(&self, name: &str) -> bool {
        self.core.modules.training(name)
    }
}

/// What `compute_forward` hands to `compute_objectives`: `p_seq` `[B, U, V]`, `p_ctc`
/// `[B, T, V]` (joint CTC training), `wav_lens`, and (validation with WER) the encoder states.
pub struct FineTunePredictions {
    /// Log-probabilities of the decoder steps.
    pub p_seq: Tensor,
    /// Log-probabilities of `ctc_lin` over the encoder frames, when the CTC weight is > 0.
    pub p_ctc: Option<Tensor>,
    /// Relative lengths.
    pub wav_lens: Tensor,
    enc: Option<(Tensor, Vec<usize>)>,
}

impl Brain for EncDecFineTune {
    type Predictions = FineTunePredictions;

    fn core(&self) -> &BrainCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut BrainCore {
        &mut self.core
    }

    fn on_stage_start(&mut self, stage: Stage, _epoch: Option<usize>) -> Result<(), BrainError> {
        // The tutorial: every module to fine-tune gets requires_grad = True in training.
        if stage == Stage::Train {
            let ctc = (self.ctc_weight > 0.0).then_some("ctc_lin");
            for m in ["enc", "emb", "dec", "seq_lin"].into_iter().chain(ctc) {
                self.core
                    .modules
                    .set_requires_grad(m, true)
                    .map_err(BrainError::Config)?;
            }
        }
        self.wer = (0, 0);
        Ok(())
    }

    fn compute_forward(
        &mut self,
        batch: &PaddedBatch,
        stage: Stage,
    ) -> Result<Self::Predictions, BrainError> {
        let dev = self.asr.device().clone();
        let (wavs, wav_lens) = batch.padded("signal")?.pair();
        let (wavs, wav_lens) = (wavs.to_device(&dev)?, wav_lens.to_device(&dev)?);
        let (tokens_bos, _) = batch.padded("tokens_bos")?.pair();
        let feats = self.asr.compute_features.forward(&wavs)?;
        self.asr.normalizer.train(self.module_train("normalize"));
        let feats = self.asr.normalizer.forward(&feats, Some(&wav_lens), None)?;
        let x = self.asr.enc.forward(&feats, self.module_train("enc"))?;
        let e_in = self
            .asr
            .emb
            .forward(&tokens_bos.to_device(&dev)?, self.module_train("emb"))?;
        let lens = wav_lens
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let t = x.dim(1)?;
        let enc_len: Vec<usize> = lens
            .iter()
            .map(|&l| ((t as f32 * l).round() as usize).clamp(1, t))
            .collect();
        let (h, _) = self
            .asr
            .dec
            .forward(&e_in, &x, &enc_len, self.module_train("dec"))?;
        let logits = self.asr.seq_lin.forward(&h, self.module_train("seq_lin"))?;
        let p_seq = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let p_ctc = match (&self.asr.ctc_lin, self.ctc_weight > 0.0) {
            (Some(lin), true) => {
                let logits = lin.forward(&x, self.module_train("ctc_lin"))?;
                Some(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
            }
            _ => None,
        };
        let enc = (stage != Stage::Train && self.valid_wer).then(|| (x.detach(), enc_len));
        Ok(FineTunePredictions {
            p_seq,
            p_ctc,
            wav_lens,
            enc,
        })
    }

    fn compute_objectives(
        &mut self,
        predictions: Self::Predictions,
        batch: &PaddedBatch,
        stage: Stage,
    ) -> Result<Tensor, BrainError> {
        let (tokens_eos, tokens_eos_lens) = batch.padded("tokens_eos")?.pair();
        let dev = predictions.p_seq.device().clone();
        let loss = nll_loss(
            &predictions.p_seq,
            &tokens_eos.to_device(&dev)?,
            Some(&tokens_eos_lens.to_device(&dev)?),
            self.label_smoothing,
            Reduction::Mean,
        )?;
        let loss = match &predictions.p_ctc {
            Some(p_ctc) => {
                let (tokens, tokens_lens) = batch.padded("tokens")?.pair();
                let ctc = ctc_loss(
                    p_ctc,
                    &tokens.to_device(&dev)?,
                    &predictions.wav_lens,
                    &tokens_lens.to_device(&dev)?,
                    self.blank_index,
                    Reduction::Mean,
                )?;
                let w = self.ctc_weight;
                ((ctc * w)? + (loss * (1.0 - w))?)?
            }
            None => loss,
        };
        if let Some((enc, enc_len)) = predictions.enc {
            let cfg = crate::decoders::GreedySearchConfig {
                bos_index: self.asr.bos_index(),
                eos_index: self.asr.eos_index(),
                min_decode_ratio: self.asr.beam.min_decode_ratio,
                max_decode_ratio: self.asr.beam.max_decode_ratio,
            };
            let hyps =
                crate::decoders::greedy_search(&self.asr.seq2seq_modules(), &enc, &enc_len, &cfg)?;
            let words = batch.strings("words")?;
            for (hyp, reference) in hyps.iter().zip(words) {
                let text = self
                    .asr
                    .decode_ids(hyp)
                    .map_err(|e| BrainError::Config(e.to_string()))?;
                let r: Vec<&str> = reference.split_whitespace().collect();
                let h: Vec<&str> = text.split_whitespace().collect();
                self.wer.0 += count_ops(&op_table(&r, &h)).total();
                self.wer.1 += r.len();
            }
        }
        let _ = stage;
        Ok(loss)
    }

    fn on_stage_end(
        &mut self,
        stage: Stage,
        loss: f64,
        epoch: Option<usize>,
    ) -> Result<(), BrainError> {
        let epoch_n = epoch.unwrap_or(0);
        match stage {
            Stage::Train => {
                self.train_loss = Some(loss);
                self.epoch_stats.push((epoch_n, loss, None, None));
                self.epoch_lr = self.core.lr();
                if let (Some(s), Some(opt)) = (&self.lr_linear, self.core.optimizer.as_deref_mut())
                {
                    super::schedulers::update_learning_rate(opt, s.step(epoch_n).1);
                }
            }
            Stage::Valid | Stage::Test => {
                let wer = (self.valid_wer && self.wer.1 > 0)
                    .then(|| 100.0 * self.wer.0 as f64 / self.wer.1 as f64);
                if let Some(last) = self.epoch_stats.last_mut().filter(|s| s.0 == epoch_n) {
                    last.2 = Some(loss);
                    last.3 = wer;
                }
                if let (Some(s), Stage::Valid) = (&mut self.lr_annealing, stage) {
                    let (_, new) = s.step(loss);
                    if let Some(opt) = self.core.optimizer.as_deref_mut() {
                        super::schedulers::update_learning_rate(opt, new);
                    }
                }
            }
        }
        let wer = match (stage, self.epoch_stats.last().and_then(|s| s.3)) {
            (Stage::Train, _) | (_, None) => String::new(),
            (_, Some(w)) => format!(", greedy WER {w:.2}%"),
        };
        tracing::info!("epoch {epoch_n}, {stage:?}: loss {loss:.4}{wer}");
        // One train_log.txt line per epoch: after validation, or after training without it.
        let log_now = stage == Stage::Valid || (stage == Stage::Train && !self.expects_valid());
        if let (Some(logger), true) = (&self.train_logger, log_now) {
            let mut valid: Vec<(&str, Json)> = Vec::new();
            if stage == Stage::Valid {
                valid.push(("loss", json!(loss)));
                if let Some(w) = self.epoch_stats.last().and_then(|s| s.3) {
                    valid.push(("WER", json!(w)));
                }
            }
            let meta = [("epoch", json!(epoch_n)), ("lr", json!(self.epoch_lr))];
            let train = [("loss", json!(self.train_loss.unwrap_or(f64::NAN)))];
            logger
                .log_stats(
                    &meta,
                    Some(&train),
                    (!valid.is_empty()).then_some(&valid[..]),
                    None,
                )
                .map_err(|e| BrainError::Io(logger.save_file.clone(), e))?;
        }
        Ok(())
    }

    fn recoverables(&self) -> Vec<(&'static str, &dyn Recoverable)> {
        let mut v: Vec<(&'static str, &dyn Recoverable)> =
            vec![("normalizer", &self.asr.normalizer)];
        if let Some(s) = &self.lr_annealing {
            v.push(("scheduler", s));
        }
        v
    }

    fn recoverables_mut(&mut self) -> Vec<(&'static str, &mut dyn Recoverable)> {
        let mut v: Vec<(&'static str, &mut dyn Recoverable)> =
            vec![("normalizer", &mut self.asr.normalizer)];
        if let Some(s) = &mut self.lr_annealing {
            v.push(("scheduler", s));
        }
        v
    }
}

impl EncDecFineTune {
    fn expects_valid(&self) -> bool {
        self.core.has_valid
    }
}

/// The tutorial's data pipeline over a manifest (`{id: {file_path, words, spkID, length}}`):
/// `filtered_sorted(sort_key="length", select_n)`, `read_audio` -> `signal`, and
/// `text_pipeline` -> `words, tokens_list, tokens_bos, tokens_eos, tokens`. Token ids at or
/// above `vocab` (the model's output size) are an error naming the utterance.
pub fn asr_dataset(
    manifest: &Path,
    asr: &EncoderDecoderASR,
    select_n: Option<usize>,
) -> Result<DynamicItemDataset, BrainError> {
    let ds = DynamicItemDataset::from_json(manifest, &Default::default())?;
    let mut fs = FilterSort::new().sort_key("length");
    if let Some(n) = select_n {
        fs = fs.select_n(n);
    }
    let mut ds = ds.filtered_sorted(&fs)?;
    ds.add_dynamic_item(&["file_path"], &["signal"], dataio::read_audio_item)?;
    add_text_pipeline(&mut ds, asr)?;
    ds.set_output_keys(&[
        "id",
        "signal",
        "words",
        "tokens_list",
        "tokens_bos",
        "tokens_eos",
        "tokens",
    ]);
    Ok(ds)
}

/// The tutorial's `text_pipeline` on `ds`: `words` -> `words, tokens_list, tokens_bos,
/// tokens_eos, tokens` with `asr`'s tokenizer, bos/eos indices and vocabulary size (an id at
/// or above it is an error naming the words). Shared by the ASR and LM datasets.
pub fn add_text_pipeline(
    ds: &mut DynamicItemDataset,
    asr: &EncoderDecoderASR,
) -> Result<(), BrainError> {
    // The dataset's items run on loader threads: they get their own tokenizer instance.
    let tok = asr
        .tokenizer
        .as_ref()
        .ok_or_else(|| BrainError::Config("the model has no tokenizer".into()))?;
    let tok = Arc::new(
        crate::tokenizers::SentencePiece::open(tok.path())
            .map_err(|e| BrainError::Config(e.to_string()))?,
    );
    let (bos, eos) = (asr.bos_index() as i64, asr.eos_index() as i64);
    let vocab = asr.emb.num_embeddings();
    ds.add_dynamic_item(
        &["words"],
        &["words", "tokens_list", "tokens_bos", "tokens_eos", "tokens"],
        move |a| {
            let words = a.str(0)?;
            let ids: Vec<i64> = tok
                .encode_as_ids(words)?
                .into_iter()
                .map(i64::from)
                .collect();
            if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= vocab) {
                return Err(format!(
                    "token id {bad} of {words:?} is outside the model's vocabulary of {vocab}"
                )
                .into());
            }
            let with_bos: Vec<i64> = std::iter::once(bos).chain(ids.iter().copied()).collect();
            let with_eos: Vec<i64> = ids.iter().copied().chain(std::iter::once(eos)).collect();
            Ok(vec![
                Value::from(words),
                Value::from(ids.clone()),
                dataio::long_tensor(with_bos)?,
                dataio::long_tensor(with_eos)?,
                dataio::long_tensor(ids)?,
            ])
        },
    )?;
    Ok(())
}

/// Where `from_hparams` collected a model's files (the savedir, or the source folder).
pub fn model_files_dir(source: &str, savedir: &Path) -> PathBuf {
    if savedir.join("hyperparams.yaml").exists() && savedir.join("tokenizer.ckpt").exists() {
        return savedir.to_path_buf();
    }
    PathBuf::from(source)
}
