//! Model architectures (`speechbrain.lobes.models`), with SpeechBrain's parameter names.

pub mod ecapa_tdnn;
pub mod sepformer;
pub mod crdnn;
pub mod rnnlm;
