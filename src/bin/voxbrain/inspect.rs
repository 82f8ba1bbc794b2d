//! `voxbrain inspect`: what a model source holds, before using it.

use clap::Args;
use voxbrain::pretrained::inspect;

use crate::speaker::ModelSource;

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelSource,
    /// Symlink files into the savedir instead of copying them.
    #[arg(long)]
    pub symlink: bool,
}

pub fn run(a: InspectArgs) -> anyhow::Result<()> {
    let mut opts = a.model.options();
    if a.symlink {
        opts.fetch.strategy = voxbrain::pretrained::fetching::LocalStrategy::Symlink;
    }
    let report = inspect(&a.model.source, &opts)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
