//! Model architectures (`speechbrain.lobes.models`), with SpeechBrain's parameter names.

pub mod crdnn;
pub mod ecapa_tdnn;
pub mod rnnlm;
pub mod sepformer;
