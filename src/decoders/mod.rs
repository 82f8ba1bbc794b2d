//! Decoding (`speechbrain.decoders`): greedy and beam search over attentional RNN decoders,
//! with RNN language-model, coverage and CTC prefix scorers.

mod ctc_prefix;
pub mod scorer;
pub mod seq2seq;
mod step;

pub use scorer::{CtcScorerConfig, ScorerConfig};
pub use seq2seq::{
    enc_lens, greedy_search, BeamSearchConfig, GreedySearchConfig, Hypothesis, S2SRNNBeamSearcher,
    Seq2SeqModules,
};
