//! Evaluation metrics (`speechbrain.utils.metric_stats`, `speechbrain.nnet.losses`).

pub mod separation;
pub mod verification;

pub use separation::*;
pub use verification::{eer, min_dcf, read_trials, score_trials, Trial};
