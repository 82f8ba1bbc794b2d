//! `voxbrain inspect`: what a model source holds, before using it.

use std::path::PathBuf;

use clap::Args;
use voxbrain::pretrained::{inspect, FromHparamsOptions};

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A local model directory, an http(s) URL prefix, or a HuggingFace repo id such as
    /// speechbrain/spkrec-ecapa-voxceleb (downloads honour HF_ENDPOINT, HF_HOME, HF_TOKEN and
    /// HF_HUB_OFFLINE).
    #[arg(long)]
    pub source: String,
    /// Where files are collected (default: pretrained_models/<name>).
    #[arg(long)]
    pub savedir: Option<PathBuf>,
    /// The hyperparameter file inside the source.
    #[arg(long, default_value = "hyperparams.yaml")]
    pub hparams_file: String,
    /// YAML overrides applied before resolution, e.g. "n_mels: 40".
    #[arg(long)]
    pub overrides: Option<String>,
    /// Symlink files into the savedir instead of copying them.
    #[arg(long)]
    pub symlink: bool,
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let mut opts = FromHparamsOptions {
        savedir: a.savedir,
        hparams_file: a.hparams_file,
        overrides: a.overrides,
        ..Default::default()
    };
    if a.symlink {
        opts.fetch.strategy = voxbrain::pretrained::fetching::LocalStrategy::Symlink;
    }
    let report = inspect(&a.source, &opts)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
