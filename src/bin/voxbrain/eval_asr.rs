//! `voxbrain eval-asr`: the WER of an ASR model on test manifests, decoded as a user decodes
//! (one utterance at a time), with yaml overrides to tune the search on a validation set.

use std::path::PathBuf;

use clap::Args;
use voxbrain::brain::asr_recipe::{evaluate_with, EvalOptions};

use crate::train_asr::parse_tests;

#[derive(Args, Debug)]
pub struct EvalAsrArgs {
    /// The model: a local folder in SpeechBrain's layout (hyperparams.yaml, asr.ckpt, ...).
    #[arg(long)]
    pub source: PathBuf,
    /// YAML overrides of the model's search, e.g. "{lm_weight: 0.8, beam_size: 8}".
    #[arg(long)]
    pub overrides: Option<String>,
    /// Greedy decoding without the language model instead of the yaml's beam search.
    #[arg(long)]
    pub greedy: bool,
    /// Test set NAME=MANIFEST (repeatable; manifests as voxbrain-data librispeech-to-json
    /// writes them, with `file_path` and `words`).
    #[arg(long = "test", value_name = "NAME=MANIFEST", required = true)]
    pub tests: Vec<String>,
    /// Where each set's WER and first transcripts go (JSON); its model files are collected
    /// beside it in OUT.savedir.
    #[arg(long)]
    pub out: PathBuf,
}

/// Prints {"wer_<set>": WER %, ...} once every set is decoded.
pub fn run(a: EvalAsrArgs) -> anyhow::Result<()> {
    let tests = parse_tests(&a.tests)?;
    let opts = EvalOptions {
        overrides: a.overrides,
        greedy: a.greedy,
    };
    let wer = evaluate_with(&a.source, &tests, &a.out, &opts)?;
    let mut line = serde_json::json!({});
    for (name, w) in wer {
        line[format!("wer_{name}")] = serde_json::json!(w);
    }
    println!("{line}");
    Ok(())
}
