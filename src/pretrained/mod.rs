//! Loading pretrained SpeechBrain models: `hyperparams.yaml` (HyperPyYAML), `.ckpt` torch
//! pickles, fetching from local directories, URLs and the HuggingFace hub, the `Pretrainer`.

pub mod ckpt;
pub mod fetching;
pub mod hparams;
