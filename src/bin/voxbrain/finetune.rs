//! `voxbrain finetune`: the tutorial's "Fine-tuning the ASR model" (EncDecFineTune + Brain.fit).

use std::path::PathBuf;

use clap::Args;
use voxbrain::brain::recipe::{fine_tune, FineTuneConfig};
use voxbrain::brain::{BrainOptions, OptimizerKind};

use crate::speaker::ModelSource;

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub model: ModelSource,
    /// Training manifest: the tutorial's JSON ({id: {file_path, words, spkID, length}}), as
    /// written by `voxbrain-data librispeech-to-json`.
    #[arg(long)]
    pub train: PathBuf,
    /// Validation manifest: each epoch then also reports the valid loss and the greedy WER.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Epochs.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Utterances per batch (the last partial batch is dropped, as the tutorial's drop_last).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-5)]
    pub lr: f64,
    /// Optimizer: sgd (torch.optim.SGD), adam, adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// Label smoothing of the nll_loss.
    #[arg(long, default_value_t = 0.1)]
    pub label_smoothing: f64,
    /// Keep only the N shortest training utterances (the tutorial's select_n=100).
    #[arg(long)]
    pub select_n: Option<usize>,
    /// Clip the gradients' total L2 norm to this (0: no clipping).
    #[arg(long, default_value_t = 5.0)]
    pub max_grad_norm: f64,
    /// Sum the gradients of this many batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accumulation_factor: usize,
    /// Save an intra-epoch checkpoint every M minutes (0: only at epoch ends).
    #[arg(long, default_value_t = 0.0)]
    pub ckpt_interval_minutes: f64,
    /// Save an intra-epoch checkpoint every N batches (0: only at epoch ends).
    #[arg(long, default_value_t = 0)]
    pub ckpt_interval_steps: usize,
    /// Anneal the learning rate (SpeechBrain's NewBobScheduler) on the validation loss.
    #[arg(long)]
    pub newbob: bool,
    /// Non-finite losses tolerated per epoch before stopping.
    #[arg(long, default_value_t = 3)]
    pub nonfinite_patience: usize,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Output folder: steps.jsonl, train_log.txt, loss.png, save/CKPT+..., model/. A run
    /// started again with the same folder resumes from its last checkpoint.
    #[arg(long)]
    pub output_dir: PathBuf,
}

pub fn run(a: FinetuneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(
        a.grad_accumulation_factor > 0,
        "--grad-accumulation-factor must be at least 1"
    );
    let cfg = FineTuneConfig {
        source: a.model.source.clone(),
        model: a.model.options(),
        train: a.train,
        valid: a.valid,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        optimizer: a.optimizer,
        momentum: a.momentum,
        label_smoothing: a.label_smoothing,
        select_n: a.select_n,
        newbob: a.newbob,
        brain: BrainOptions {
            max_grad_norm: a.max_grad_norm,
            grad_accumulation_factor: a.grad_accumulation_factor,
            nonfinite_patience: a.nonfinite_patience,
            ckpt_interval_minutes: a.ckpt_interval_minutes,
            ckpt_interval_steps: a.ckpt_interval_steps,
            noprogressbar: a.no_progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
            steps_log: None,
        },
        output_dir: a.output_dir,
    };
    let report = fine_tune(&cfg)?;
    for (e, tl, vl, wer) in &report.epochs {
        let mut line = serde_json::json!({"epoch": e, "train_loss": tl});
        if let Some(v) = vl {
            line["valid_loss"] = serde_json::json!(v);
        }
        if let Some(w) = wer {
            line["valid_wer"] = serde_json::json!(w);
        }
        println!("{line}");
    }
    println!(
        "{}",
        serde_json::json!({"model": report.model_dir.display().to_string()})
    );
    Ok(())
}
