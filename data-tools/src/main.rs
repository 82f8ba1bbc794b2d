//! `voxbrain-data`: dataset preparation tools for voxbrain.
//!
//! So far: `audio-info`, which reads audio headers (sample rate, channels, duration) without
//! decoding, the building block of manifest generation. LibriSpeech parsing, corpus synthesis
//! and mixing arrive with the data-pipeline issue.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Dataset preparation tools for voxbrain (SpeechBrain-style manifests and corpora).
#[derive(Parser, Debug)]
#[command(name = "voxbrain-data", version, about, long_about)]
struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print one JSON object per audio file: path, sample_rate, channels, frames, seconds.
    /// Reads headers only (no decoding); a bad file prints an error line and the command
    /// exits non-zero after processing the rest.
    AudioInfo {
        /// Audio files (wav, flac, ogg, mp3).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::AudioInfo { files } => {
            let mut failed = 0usize;
            for f in &files {
                match voxbrain::audio::audio_info(f) {
                    Ok(info) => println!(
                        "{}",
                        serde_json::json!({
                            "path": f.display().to_string(),
                            "sample_rate": info.sample_rate,
                            "channels": info.channels,
                            "frames": info.num_frames,
                            "seconds": info.duration(),
                        })
                    ),
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {e}");
                    }
                }
            }
            if failed > 0 {
                eprintln!("{failed} of {} files could not be read", files.len());
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
    }
}
