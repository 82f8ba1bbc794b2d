//! Errors of the data pipeline. Each variant names what a user needs to find the culprit in a
//! manifest of hundreds of thousands of rows: the file, the data point id, the key.

use std::path::PathBuf;

/// A boxed error returned by user-provided dynamic item functions.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while loading manifests, computing items, batching or loading.
#[derive(Debug, thiserror::Error)]
pub enum DataIoError {
    /// A manifest or corpus file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A manifest is not valid JSON / CSV / Parquet, or not shaped as SpeechBrain expects.
    #[error("malformed manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// A `{name}` (JSON) or `$name` (CSV) placeholder has no replacement.
    #[error("data point '{id}', key '{key}': the value {value:?} needs the replacement '{name}', which was not given")]
    MissingReplacement {
        id: String,
        key: String,
        value: String,
        name: String,
    },
    /// A data point lacks a key (or holds null for it).
    #[error("data point '{id}' has no value for key '{key}'")]
    MissingKey { id: String, key: String },
    /// A key is neither a static column nor provided by any dynamic item.
    #[error("key '{key}' is neither in the data ({available}) nor provided by a dynamic item")]
    UnknownKey { key: String, available: String },
    /// A value has another type than the one asked for.
    #[error("data point '{id}', key '{key}': expected {expected}, found {found}")]
    WrongType {
        id: String,
        key: String,
        expected: &'static str,
        found: String,
    },
    /// A dynamic item function failed.
    #[error("data point '{id}': dynamic item providing {provides:?} failed: {source}")]
    DynamicItem {
        id: String,
        provides: Vec<String>,
        #[source]
        source: BoxError,
    },
    /// Dynamic items depend on each other in a cycle.
    #[error("dynamic items form a dependency cycle through key '{key}'")]
    Cycle { key: String },
    /// Invalid configuration (e.g. a dynamic item that provides nothing, batch_size 0).
    #[error("{0}")]
    Invalid(String),
    /// Index out of range.
    #[error("index {index} is out of range for a dataset of {len} data points")]
    Index { index: usize, len: usize },
    /// A LibriSpeech-style corpus is inconsistent (e.g. a transcript line without an id).
    #[error("corpus {path}: {reason}")]
    Corpus { path: PathBuf, reason: String },
    /// Audio could not be read (the path is in the message).
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    /// A polars operation failed.
    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
    /// A tensor operation failed (e.g. padding tensors of different dtypes).
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Result alias for the data pipeline.
pub type Result<T> = std::result::Result<T, DataIoError>;

impl DataIoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataIoError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn manifest(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataIoError::Manifest {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
