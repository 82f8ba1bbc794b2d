//! The `voxbrain` command line: SpeechBrain's tutorial steps as subcommands.

mod eval_asr;
mod fbank;
mod finetune;
mod inspect;
mod separate;
mod speaker;
mod tour;
mod tour_results;
mod train_asr;
mod train_separation;
mod transcribe;

use clap::{Parser, Subcommand};

/// SpeechBrain's pretrained speech models and features, in Rust.
///
/// Each subcommand mirrors a step of SpeechBrain's "Pretrained Models and Fine-Tuning with
/// HuggingFace" tutorial. Set RUST_LOG=debug (or use -v) for detailed logs.
#[derive(Parser, Debug)]
#[command(name = "voxbrain", version, about, long_about)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). Logs go to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute SpeechBrain's Fbank features of an audio file and write them as .npy.
    Fbank(fbank::FbankArgs),
    /// Speaker embeddings of audio files (ECAPA-TDNN), written as a [n, lin_neurons] .npy.
    Embed(speaker::EmbedArgs),
    /// Speaker verification of two files: prints {"score": <cosine>, "prediction": <bool>}.
    Verify(speaker::VerifyArgs),
    /// Print what a model source holds as one JSON object: its resolved hyperparameters and
    /// the parameter names and shapes of every checkpoint its pretrainer collects.
    Inspect(inspect::InspectArgs),
    /// Separate the sources of a mixture with a SepFormer (SpeechBrain's
    /// SepformerSeparation.separate_file); writes <stem>_source<i>.wav at the model's rate.
    Separate(separate::SeparateArgs),
    /// Transcribe audio files with an encoder-decoder ASR model (SpeechBrain's
    /// EncoderDecoderASR.transcribe_file); prints one JSON object per file:
    /// {"file": ..., "text": ..., "tokens": [ids]}.
    Transcribe(transcribe::TranscribeArgs),
    /// Fine-tune an encoder-decoder ASR model on a manifest (the tutorial's EncDecFineTune
    /// with Brain.fit): checkpoints, resumable, writes the model in SpeechBrain's layout.
    Finetune(finetune::FinetuneArgs),
    /// Train a SepFormer from scratch with SpeechBrain's separation recipe (PIT SI-SNR) from
    /// one hyperparams.yaml: checkpoints, resumable, writes the model in SpeechBrain's layout.
    TrainSeparation(train_separation::TrainSeparationArgs),
    /// Train a CRDNN ASR model (joint CTC + attention) and its RNN language model from scratch
    /// with SpeechBrain's LibriSpeech recipes from one hyperparams.yaml: checkpoints,
    /// resumable, writes the model in SpeechBrain's layout and its test WER.
    TrainAsr(train_asr::TrainAsrArgs),
    /// The WER of an ASR model on test manifests (beam search + LM as its yaml says, or
    /// greedy), with yaml overrides to tune the search; prints {"wer_<set>": ...}.
    EvalAsr(eval_asr::EvalAsrArgs),
    /// Walk through the tutorial steps voxbrain can run so far, on bundled audio.
    Tour(tour::TourArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Plain text (no colour codes) when stderr is a file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Fbank(a) => fbank::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Embed(a) => speaker::embed(a),
        Command::Verify(a) => speaker::verify(a),
        Command::Separate(a) => separate::run(a),
        Command::Transcribe(a) => transcribe::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::TrainSeparation(a) => train_separation::run(a),
        Command::TrainAsr(a) => train_asr::run(a),
        Command::EvalAsr(a) => eval_asr::run(a),
        Command::Tour(a) => tour::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
