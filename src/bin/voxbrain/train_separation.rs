//! `voxbrain train-separation`: a SepFormer trained from scratch with SpeechBrain's separation
//! recipe (PIT SI-SNR), from one hyperparams.yaml (see `recipes/separation/`).

use std::path::PathBuf;

use clap::Args;
use voxbrain::brain::separation_recipe::{train_separation, SeparationRecipe};

#[derive(Args, Debug)]
pub struct TrainSeparationArgs {
    /// The recipe's hyperparams.yaml: the model (as speechbrain/sepformer-wsj02mix's) plus
    /// seed, number_of_epochs, batch_size, lr, clip_grad_norm, threshold_byloss, threshold,
    /// ckpt_interval_minutes. It becomes the trained model's hyperparams.yaml.
    #[arg(long)]
    pub hparams: PathBuf,
    /// YAML overrides, e.g. "number_of_epochs: 2".
    #[arg(long)]
    pub overrides: Option<String>,
    /// Training manifest with mix_wav, s1_wav, s2_wav (JSON, or CSV by extension), as
    /// `voxbrain-data mix` writes it.
    #[arg(long)]
    pub train: PathBuf,
    /// Validation manifest (each epoch then reports its SI-SNR).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Test manifest: the trained model's SI-SNR improvement per mixture goes to results.json.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Output folder: save/ (checkpoints; a run started again resumes there), steps.jsonl,
    /// model/ (SpeechBrain's layout), results.json.
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(a: TrainSeparationArgs) -> anyhow::Result<()> {
    let cfg = SeparationRecipe {
        hparams: a.hparams,
        overrides: a.overrides,
        train: a.train,
        valid: a.valid,
        test: a.test,
        output_dir: a.output_dir,
        noprogressbar: a.no_progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = train_separation(&cfg)?;
    for (e, train, valid) in &report.epochs {
        let mut line = serde_json::json!({"epoch": e, "train_si_snr": train});
        if let Some(v) = valid {
            line["valid_si_snr"] = serde_json::json!(v);
        }
        println!("{line}");
    }
    let mut last = serde_json::json!({"model": report.model_dir.display().to_string()});
    if let Some(s) = report.test_si_snri {
        last["test_si_snri_db"] = serde_json::json!(s);
    }
    println!("{last}");
    Ok(())
}
