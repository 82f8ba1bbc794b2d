//! Inference interfaces (`speechbrain.inference`): load a pretrained model with
//! `from_hparams` and run it on files or batches.

mod builders;
pub mod separation;
pub mod speaker;

pub use separation::SepformerSeparation;
pub use speaker::{EncoderClassifier, PaddingMode, SpeakerRecognition};
