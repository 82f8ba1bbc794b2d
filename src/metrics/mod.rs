//! Evaluation metrics (`speechbrain.utils.metric_stats`, `speechbrain.nnet.losses`,
//! `speechbrain.utils.edit_distance`).

pub mod separation;
pub mod verification;
pub mod wer;

pub use separation::*;
pub use verification::{eer, min_dcf, read_trials, score_trials, Trial};
pub use wer::{
    alignment, count_ops, op_table, op_table_by, wer_details_by_utterance, wer_details_for_batch,
    wer_summary, write_alignments, write_wer_summary, AlignmentStep, AlignmentStyle, EditCounts,
    EditOp, ErrorRateStats, MissingHypothesis, ScoringMode, UtteranceDetails, WerSummary,
};
