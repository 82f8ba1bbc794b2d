//! `voxbrain separate`: SpeechBrain's `SepformerSeparation.separate_file`, writing each
//! source as a wav (and optionally all of them as one `.npy`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use voxbrain::inference::separation::{write_sources, SepformerSeparation};
use voxbrain::pretrained::FromHparamsOptions;

#[derive(Args, Debug)]
pub struct SeparateArgs {
    /// A local model directory, URL prefix or HuggingFace repo id, e.g.
    /// speechbrain/sepformer-wsj02mix.
    #[arg(long)]
    pub source: String,
    /// Where model files are collected (default: pretrained_models/<name>-<hash of the source>).
    #[arg(long)]
    pub savedir: Option<PathBuf>,
    /// The mixture (any format voxbrain reads; resampled to the model's rate, channels
    /// averaged).
    pub audio: PathBuf,
    /// Directory for `<stem>_source1.wav`, `<stem>_source2.wav`, ... (at the model's rate).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Also write the sources as one float32 `[time, n_src]` .npy.
    #[arg(long)]
    pub out_npy: Option<PathBuf>,
    /// Separate in windows of this many seconds (bounded memory for long files; 0 = whole
    /// file at once).
    #[arg(long, default_value_t = 0.0)]
    pub chunk_seconds: f64,
    /// Overlap between windows, seconds (with --chunk-seconds).
    #[arg(long, default_value_t = 2.0)]
    pub overlap_seconds: f64,
}

pub fn run(a: SeparateArgs) -> anyhow::Result<()> {
    let opts = FromHparamsOptions {
        savedir: a.savedir,
        ..Default::default()
    };
    let model = SepformerSeparation::from_hparams(&a.source, &opts)
        .with_context(|| format!("loading {}", a.source))?;
    let mix = model.load_mixture(&a.audio)?;
    let fs = model.sample_rate();
    let mut sources = if a.chunk_seconds > 0.0 {
        let chunk = (a.chunk_seconds * fs as f64) as usize;
        let overlap = (a.overlap_seconds * fs as f64) as usize;
        model.separate_long(&mix, chunk.max(1), overlap.min(chunk.saturating_sub(1)))?
    } else {
        model.separate_samples(&mix)?
    };
    // SpeechBrain's separate_file scales each source to a peak of 1.
    for s in &mut sources {
        let peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        if peak > 0.0 {
            s.iter_mut().for_each(|x| *x /= peak);
        }
    }
    let stem = a
        .audio
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "mixture".into());
    let paths = write_sources(&sources, fs, &a.out_dir, &stem)?;
    for p in &paths {
        println!("{}", p.display());
    }
    if let Some(npy) = &a.out_npy {
        let t = sources.first().map_or(0, Vec::len);
        let n = sources.len();
        let mut data = vec![0f32; t * n];
        for (j, s) in sources.iter().enumerate() {
            for (i, x) in s.iter().enumerate() {
                data[i * n + j] = *x;
            }
        }
        voxbrain::npy::write_npy(npy, &[t, n], &data)
            .with_context(|| format!("writing {}", npy.display()))?;
        println!("{}", npy.display());
    }
    Ok(())
}
