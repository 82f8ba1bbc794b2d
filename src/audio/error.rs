//! Errors raised while reading, writing or resampling audio.

use std::path::PathBuf;

/// Everything that can go wrong with audio I/O. Each variant names the file, so a user with
/// thousands of files in a manifest knows which one is bad.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The path does not exist or cannot be opened.
    #[error("cannot open audio file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path is a directory, not a file.
    #[error("cannot read audio from {path}: it is a directory, not a file")]
    IsDirectory { path: PathBuf },
    /// The file is empty (0 bytes).
    #[error("cannot read audio from {path}: the file is empty (0 bytes)")]
    EmptyFile { path: PathBuf },
    /// The container format was not recognised (e.g. a text file named `.wav`).
    #[error("cannot read audio from {path}: unrecognised or unsupported format ({reason})")]
    UnsupportedFormat { path: PathBuf, reason: String },
    /// The file has no audio track or lacks the codec parameters needed to decode it.
    #[error("cannot read audio from {path}: {reason}")]
    NoAudioTrack { path: PathBuf, reason: String },
    /// Decoding failed part-way (e.g. a truncated or corrupt FLAC).
    #[error("cannot decode audio in {path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// The file decoded to zero samples.
    #[error("audio file {path} contains no samples")]
    NoSamples { path: PathBuf },
    /// Writing the output file failed.
    #[error("cannot write audio file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    /// Invalid argument (sample rate 0, channel mismatch, ...).
    #[error("invalid audio argument: {0}")]
    Invalid(String),
    /// Tensor conversion failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Result alias for audio operations.
pub type Result<T> = std::result::Result<T, AudioError>;
