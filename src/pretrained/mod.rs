//! Loading pretrained SpeechBrain artefacts. So far: reading `.ckpt` torch pickles.

pub mod ckpt;
