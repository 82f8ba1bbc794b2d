//! `voxbrain finetune`: the tutorial's fine-tuning as one call. Loads the model, builds the
//! tutorial's data pipeline over the manifests, runs [`EncDecFineTune`] with
//! checkpoints in `D/save`, and writes `D/steps.jsonl`, `D/train_log.txt`, `D/loss.png` and
//! the fine-tuned model in SpeechBrain's layout in `D/model`.

use std::path::{Path, PathBuf};

use super::asr_finetune::{asr_dataset, EncDecFineTune};
use super::{
    Brain, BrainError, BrainOptions, Checkpointer, EpochCounter, FileTrainLogger, NewBobScheduler,
    OptimizerKind,
};
use crate::dataio::DataLoaderOptions;
use crate::inference::EncoderDecoderASR;
use crate::pretrained::FromHparamsOptions;

/// Settings of a fine-tuning run (the CLI's options).
#[derive(Debug, Clone)]
pub struct FineTuneConfig {
    /// Model directory, URL or hub id.
    pub source: String,
    /// `from_hparams` options (savedir, overrides such as `dropout: 0.0`).
    pub model: FromHparamsOptions,
    /// Training manifest (the tutorial's JSON).
    pub train: PathBuf,
    /// Validation manifest.
    pub valid: Option<PathBuf>,
    /// Epochs.
    pub epochs: usize,
    /// Batch size (`drop_last`, no shuffle, as the tutorial).
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    pub momentum: f64,
    /// `nll_loss` label smoothing.
    pub label_smoothing: f64,
    /// Keep the `select_n` shortest utterances (the tutorial: 100).
    pub select_n: Option<usize>,
    /// Anneal the learning rate with NewBob on the validation loss.
    pub newbob: bool,
    /// Loop options (clipping, accumulation, checkpoint intervals, progress bar).
    pub brain: BrainOptions,
    /// Output folder.
    pub output_dir: PathBuf,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct FineTuneReport {
    /// `(epoch, train loss, valid loss, valid WER %)` per epoch run in this process.
    pub epochs: Vec<(usize, f64, Option<f64>, Option<f64>)>,
    /// Loss of each optimizer step run in this process.
    pub step_losses: Vec<f64>,
    /// The exported model folder.
    pub model_dir: PathBuf,
}

/// Runs the fine-tuning described by `cfg` (resuming from `D/save` when a checkpoint is there).
pub fn fine_tune(cfg: &FineTuneConfig) -> Result<FineTuneReport, BrainError> {
    let out = &cfg.output_dir;
    std::fs::create_dir_all(out).map_err(|e| BrainError::Io(out.clone(), e))?;
    // Two runs writing one folder would interleave checkpoints and logs: the second stops.
    let _lock = crate::fsutil::DirLock::acquire(out, "a fine-tuning run")
        .map_err(|e| BrainError::Io(out.clone(), e))?;
    let asr = EncoderDecoderASR::from_hparams(&cfg.source, &cfg.model)
        .map_err(|e| BrainError::Config(format!("loading {}: {e}", cfg.source)))?;
    let files =
        super::asr_finetune::model_files_dir(&cfg.source, &cfg.model.savedir_for(&cfg.source));
    let train = asr_dataset(&cfg.train, &asr, cfg.select_n)?;
    let valid = cfg
        .valid
        .as_ref()
        .map(|v| asr_dataset(v, &asr, None))
        .transpose()?;
    tracing::info!(
        "fine-tuning on {} utterances{}",
        train.len(),
        valid
            .as_ref()
            .map(|v| format!(", validating on {}", v.len()))
            .unwrap_or_default()
    );
    let (kind, lr, momentum) = (cfg.optimizer, cfg.lr, cfg.momentum);
    let opt_class: super::OptClass = Box::new(move |params| kind.build(params, lr, momentum));
    let mut brain_opts = cfg.brain.clone();
    brain_opts.steps_log = Some(out.join("steps.jsonl"));
    let mut brain = EncDecFineTune::new(asr, Some(opt_class), brain_opts)?;
    brain.label_smoothing = cfg.label_smoothing;
    brain.train_logger = Some(FileTrainLogger::new(out.join("train_log.txt")));
    brain.valid_wer = valid.is_some();
    if cfg.newbob {
        brain.lr_annealing = Some(NewBobScheduler::new(cfg.lr));
    }
    brain.core_mut().checkpointer = Some(Checkpointer::new(out.join("save")));
    let train_opts = DataLoaderOptions {
        batch_size: cfg.batch_size,
        drop_last: true,
        ..Default::default()
    };
    let valid_opts = DataLoaderOptions::batch_size(cfg.batch_size);
    if train.len() < cfg.batch_size {
        return Err(BrainError::Config(format!(
            "{} training utterances is fewer than one batch of {} (drop_last)",
            train.len(),
            cfg.batch_size
        )));
    }
    brain.fit(
        EpochCounter::new(cfg.epochs),
        &train,
        valid.as_ref(),
        train_opts,
        valid_opts,
    )?;
    let model_dir = out.join("model");
    brain.export(&files, &model_dir)?;
    plot_losses(
        &out.join("steps.jsonl"),
        &brain.epoch_stats,
        &out.join("loss.png"),
    )?;
    Ok(FineTuneReport {
        epochs: brain.epoch_stats.clone(),
        step_losses: brain.core().history.iter().map(|r| r.loss).collect(),
        model_dir,
    })
}

/// Reads `steps.jsonl` as `(epoch, step, loss)` triples.
pub fn read_step_losses(path: &Path) -> Result<Vec<(usize, f64, f64)>, BrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BrainError::Io(path.to_path_buf(), e)),
    };
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| BrainError::Config(format!("{} line {}: {e}", path.display(), i + 1)))?;
        if let (Some(e), Some(s), Some(l)) =
            (v["epoch"].as_u64(), v["step"].as_f64(), v["loss"].as_f64())
        {
            out.push((e as usize, s, l));
        }
    }
    Ok(out)
}

/// The loss figure: training loss per optimizer step, validation loss at the last step of
/// each epoch (read from the step log, so epochs run before a resume are placed right).
pub fn plot_losses(
    steps_log: &Path,
    epochs: &[(usize, f64, Option<f64>, Option<f64>)],
    path: &Path,
) -> Result<(), BrainError> {
    let steps = read_step_losses(steps_log)?;
    let mut curves = vec![crate::viz::Curve {
        label: "train (per step)".into(),
        points: steps.iter().map(|&(_, s, l)| (s, l)).collect(),
    }];
    let end_of = |e: usize| {
        steps
            .iter()
            .filter(|r| r.0 == e)
            .map(|r| r.1)
            .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
    };
    let valid: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|(e, _, v, _)| Some((end_of(*e)?, (*v)?)))
        .collect();
    if !valid.is_empty() {
        curves.push(crate::viz::Curve {
            label: "valid (per epoch)".into(),
            points: valid,
        });
    }
    crate::viz::line_plot(&curves, "Fine-tuning loss", "optimizer step", "loss", path)
        .map_err(BrainError::Config)
}
