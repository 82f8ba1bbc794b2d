//! `voxbrain fbank`: features of one file, as SpeechBrain's `Fbank` computes them.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use voxbrain::audio::{load_audio, ChannelMix};
use voxbrain::features::{Fbank, FbankConfig};
use voxbrain::npy::write_npy;

#[derive(Args, Debug)]
pub struct FbankArgs {
    /// Input audio (wav, flac, ogg/vorbis, mp3). Multi-channel audio is averaged to mono and
    /// other rates are resampled to --sample-rate first, as SpeechBrain's load_audio does.
    pub audio: PathBuf,
    /// Output .npy file: a float32 [frames, features] array.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Number of mel filters (SpeechBrain's default is 40; ECAPA uses 80).
    #[arg(long, default_value_t = 40)]
    pub n_mels: usize,
    /// Sampling rate the features are computed at (the audio is resampled to it).
    #[arg(long, default_value_t = 16000)]
    pub sample_rate: u32,
    /// FFT size in samples.
    #[arg(long, default_value_t = 400)]
    pub n_fft: usize,
    /// Window length in milliseconds.
    #[arg(long, default_value_t = 25.0)]
    pub win_length: f64,
    /// Hop length in milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub hop_length: f64,
    /// Lowest filter frequency in Hz.
    #[arg(long, default_value_t = 0.0)]
    pub f_min: f64,
    /// Highest filter frequency in Hz (default: half the sampling rate).
    #[arg(long)]
    pub f_max: Option<f64>,
    /// Append first and second derivatives (3x the features).
    #[arg(long)]
    pub deltas: bool,
    /// Stack 5 frames of context on each side (11x the features).
    #[arg(long)]
    pub context: bool,
}

pub fn run(a: FbankArgs) -> anyhow::Result<()> {
    let fbank = Fbank::new(FbankConfig {
        n_mels: a.n_mels,
        sample_rate: a.sample_rate,
        n_fft: a.n_fft,
        win_length: a.win_length,
        hop_length: a.hop_length,
        f_min: a.f_min,
        f_max: a.f_max,
        deltas: a.deltas,
        context: a.context,
        ..Default::default()
    })?;
    let wav = load_audio(&a.audio, a.sample_rate, ChannelMix::AvgToMono)?;
    let samples: Vec<f32> = wav.to_vec1()?;
    let feats = fbank.compute(&samples);
    let frames = fbank.num_frames(samples.len());
    write_npy(&a.out, &[frames, fbank.n_features()], &feats)
        .with_context(|| format!("writing {}", a.out.display()))?;
    tracing::info!(
        "{} -> {} [{frames}, {}]",
        a.audio.display(),
        a.out.display(),
        fbank.n_features()
    );
    Ok(())
}
