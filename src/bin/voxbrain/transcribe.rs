//! `voxbrain transcribe`: the tutorial's first step (EncoderDecoderASR.transcribe_file).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use voxbrain::inference::{DecodingMethod, EncoderDecoderASR};

use crate::speaker::ModelSource;

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Decoding {
    /// The model's beam search, with its language model and coverage scorers.
    Beam,
    /// Greedy (arg-max) decoding without the language model: faster, usually worse.
    Greedy,
}

#[derive(Args, Debug)]
pub struct TranscribeArgs {
    #[command(flatten)]
    pub model: ModelSource,
    /// Audio files; each is resampled to the model rate and averaged to mono.
    #[arg(required = true)]
    pub audio: Vec<PathBuf>,
    /// Decoding method.
    #[arg(long, value_enum, default_value = "beam")]
    pub decoding: Decoding,
    /// Override the yaml's beam size.
    #[arg(long)]
    pub beam_size: Option<usize>,
    /// Recordings longer than this (seconds) are transcribed in chunks cut at quiet points.
    #[arg(long, default_value_t = 30.0)]
    pub max_seconds: f32,
    /// Nominal chunk length (seconds) for long recordings.
    #[arg(long, default_value_t = 20.0)]
    pub chunk_seconds: f32,
}

/// Prints one JSON object per file: {"file": ..., "text": ..., "tokens": [ids]}. Tokens are
/// those of the whole file (chunks concatenated).
pub fn run(a: TranscribeArgs) -> anyhow::Result<()> {
    let mut asr = EncoderDecoderASR::from_hparams(&a.model.source, &a.model.options())?;
    asr.decoding = match a.decoding {
        Decoding::Beam => DecodingMethod::BeamSearch,
        Decoding::Greedy => DecodingMethod::Greedy,
    };
    if let Some(b) = a.beam_size {
        anyhow::ensure!(b > 0, "--beam-size must be at least 1");
        asr.beam.beam_size = b;
    }
    asr.chunking.max_seconds = a.max_seconds;
    asr.chunking.chunk_seconds = a.chunk_seconds;
    let stdout = std::io::stdout();
    for p in &a.audio {
        let wav = asr
            .load_audio(p)
            .with_context(|| format!("reading {}", p.display()))?;
        let (text, tokens) = asr
            .transcribe_signal_with_tokens(&wav)
            .with_context(|| format!("transcribing {}", p.display()))?;
        let line =
            serde_json::json!({"file": p.display().to_string(), "text": text, "tokens": tokens});
        writeln!(stdout.lock(), "{line}")?;
    }
    Ok(())
}
