//! `voxbrain train-asr`: a CRDNN ASR model and its RNNLM trained from scratch with SpeechBrain's
//! LibriSpeech recipes (joint CTC + attention; the LM on text), from one hyperparams.yaml
//! (see `recipes/asr/`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use voxbrain::brain::asr_recipe::{train_asr, AsrRecipe};

#[derive(Args, Debug)]
pub struct TrainAsrArgs {
    /// The recipe's hyperparams.yaml: the model (as speechbrain/asr-crdnn-rnnlm-librispeech's)
    /// plus seed, number_of_epochs, batch_size, lr, ctc_weight, label_smoothing,
    /// clip_grad_norm, ckpt_interval_minutes, lm_number_of_epochs, lm_batch_size, lm_lr,
    /// lm_weight_grid and ctc_weight_decode_grid (decoding weights tried on --valid). It
    /// becomes the trained model's hyperparams.yaml.
    #[arg(long)]
    pub hparams: PathBuf,
    /// YAML overrides, e.g. "number_of_epochs: 2".
    #[arg(long)]
    pub overrides: Option<String>,
    /// SentencePiece model (output_neurons pieces, <unk> = 0) trained on the recipe's text;
    /// with bos/eos pieces at the yaml's bos_index/eos_index when they differ from 0.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Training manifest {id: {file_path, words, spkID, length}} (voxbrain-data
    /// librispeech-to-json).
    #[arg(long)]
    pub train: PathBuf,
    /// Validation manifest (each epoch then reports its loss and greedy WER).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Text for the language model, one sentence per line (default: the training transcripts).
    #[arg(long)]
    pub lm_text: Option<PathBuf>,
    /// Test set NAME=MANIFEST (repeatable): the trained model's WER on each, decoded with beam
    /// search and the LM, goes to results.json.
    #[arg(long = "test", value_name = "NAME=MANIFEST")]
    pub tests: Vec<String>,
    /// Output folder: lm.ckpt and save_lm/ (the LM), save/ (checkpoints; a run started again
    /// resumes there), steps.jsonl, model/ (SpeechBrain's layout), results.json.
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Hide the progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(a: TrainAsrArgs) -> anyhow::Result<()> {
    let tests = parse_tests(&a.tests)?;
    let cfg = AsrRecipe {
        hparams: a.hparams,
        overrides: a.overrides,
        tokenizer: a.tokenizer,
        train: a.train,
        valid: a.valid,
        lm_text: a.lm_text,
        tests,
        output_dir: a.output_dir,
        noprogressbar: a.no_progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = train_asr(&cfg)?;
    for (e, train, valid) in &report.epochs {
        let mut line = serde_json::json!({"epoch": e, "train_loss": train});
        if let Some(v) = valid {
            line["valid_loss"] = serde_json::json!(v);
        }
        println!("{line}");
    }
    let mut last = serde_json::json!({"model": report.model_dir.display().to_string()});
    if let Some(t) = report.search {
        if let Some(w) = t.lm_weight {
            last["lm_weight"] = serde_json::json!(w);
        }
        if let Some(w) = t.ctc_weight {
            last["ctc_weight_decode"] = serde_json::json!(w);
        }
    }
    for (name, wer) in &report.wer {
        last[format!("wer_{name}")] = serde_json::json!(wer);
    }
    println!("{last}");
    Ok(())
}

/// `NAME=MANIFEST` arguments as `(name, manifest)`.
pub fn parse_tests(tests: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    tests
        .iter()
        .map(|t| {
            let (name, path) = t
                .split_once('=')
                .with_context(|| format!("--test {t:?}: expected NAME=MANIFEST"))?;
            Ok((name.to_string(), PathBuf::from(path)))
        })
        .collect()
}
