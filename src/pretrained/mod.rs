//! Loading pretrained SpeechBrain models: `hyperparams.yaml` (HyperPyYAML), `.ckpt` torch
//! pickles, fetching from local directories, URLs and the HuggingFace hub, the `Pretrainer`,
//! and `from_hparams`.

pub mod ckpt;
pub mod fetching;
pub mod hparams;
mod interfaces;
pub mod official;
mod pretrainer;

pub use interfaces::{
    collected_path, from_hparams, inspect, load_hparams, FromHparamsOptions, GenericModel,
    Pretrained,
};
pub use pretrainer::{Loadable, Params, Pretrainer};

/// Errors of the pretrained-loading path.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// Fetching a file failed.
    #[error(transparent)]
    Fetch(#[from] fetching::FetchError),
    /// The hyperparameters could not be read or lack something.
    #[error(transparent)]
    Hparams(#[from] hparams::HparamsError),
    /// A checkpoint could not be read or does not match.
    #[error(transparent)]
    Ckpt(#[from] ckpt::CkptError),
    /// Loading a file into a model part failed.
    #[error("{0}")]
    Load(String),
    /// A class in the hyperparameters has no Rust implementation.
    #[error("{origin}: `{key}` is a `{class}`, which voxbrain cannot build")]
    UnsupportedClass {
        origin: String,
        key: String,
        class: String,
    },
    /// Feature extraction failed.
    #[error(transparent)]
    Features(#[from] crate::features::FeatureError),
    /// Audio could not be read.
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
    /// Tensor error.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}
