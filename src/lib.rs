//! # voxbrain
//!
//! SpeechBrain's pretrained speech models, features and data pipelines in Rust, on
//! [candle](https://github.com/huggingface/candle).
//!
//! The crate mirrors SpeechBrain's layout so its users find things blind:
//! [`audio`] (`speechbrain.dataio.dataio.read_audio`, `AudioNormalizer`),
//! [`features`] (`speechbrain.lobes.features.Fbank`, `speechbrain.processing.features`),
//! [`dataio`] (`speechbrain.dataio`: `DynamicItemDataset`, `PaddedBatch`, data loaders, manifests).

pub mod audio;
pub mod brain;
pub mod dataio;
pub mod decoders;
pub mod demo;
pub mod fastmath;
pub mod features;
pub mod fsutil;
pub mod inference;
pub mod lobes;
pub mod metrics;
pub mod nnet;
pub mod npy;
pub mod pretrained;
pub mod progress;
pub mod runtime;
pub mod tokenizers;
pub mod viz;
