//! Acoustic features, computed exactly as SpeechBrain computes them
//! (`speechbrain.processing.features` and `speechbrain.lobes.features`).
//!
//! SpeechBrain's `Fbank` is not Kaldi's: periodic Hamming window, `center=True` zero padding,
//! power spectrum, HTK mel triangles symmetric in Hz without area normalisation,
//! `10*log10(max(x, 1e-10))` and an 80 dB floor below each utterance's maximum.

mod deltas;
mod fbank;
mod filterbank;
mod normalization;
mod stft;

pub use deltas::{context_window, deltas};
pub use fbank::{Fbank, FbankConfig};
pub use filterbank::{FilterShape, Filterbank, FilterbankConfig};
pub use normalization::{padding_mask, InputNormalization, NormType};
pub use stft::{Stft, WindowFn};

/// Errors from feature extraction.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// Invalid settings (e.g. `f_min >= f_max`).
    #[error("invalid feature configuration: {0}")]
    Config(String),
    /// Input with the wrong shape.
    #[error("wrong input shape: {0}")]
    Shape(String),
    /// Missing or unreadable normalization state.
    #[error("{0}")]
    State(String),
    /// Tensor error.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Result alias for feature extraction.
pub type Result<T> = std::result::Result<T, FeatureError>;
