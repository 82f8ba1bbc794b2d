//! Evaluation metrics (`speechbrain.utils.metric_stats`).

pub mod verification;

pub use verification::{eer, min_dcf, read_trials, score_trials, Trial};
