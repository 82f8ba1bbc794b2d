//! Inference interfaces (`speechbrain.inference`): load a pretrained model with
//! `from_hparams` and run it on files or batches.

pub mod asr;
mod builders;
mod chunking;
pub mod separation;
pub mod speaker;

pub use asr::{AsrModuleIndices, ChunkOptions, DecodingMethod, EncoderDecoderASR};
pub use chunking::chunk_bounds;
pub use separation::SepformerSeparation;
pub use speaker::{EncoderClassifier, PaddingMode, SpeakerRecognition};
