//! Shallow-fusion scorers of SpeechBrain's beam search (`speechbrain.decoders.scorer`):
//! `RNNLMScorer` (language-model log-probabilities), `CoverageScorer` (a penalty on
//! attention that keeps returning to the same frames) and `CTCScorer` (CTC prefix scores of
//! the best candidates, joint attention + CTC decoding), combined by `ScorerBuilder` weights.

/// Which scorers run and with what weights (the yaml's `scorer: !new:...ScorerBuilder`).
///
/// ```
/// let s = voxbrain::decoders::ScorerConfig::default();
/// assert_eq!(s.scorer_beam_scale, 2.0);
/// assert!(s.ctc.is_none());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerConfig {
    /// `weights: {rnnlm: w}` with `RNNLMScorer(temperature)`: `Some((w, temperature))`.
    pub rnnlm: Option<(f32, f32)>,
    /// `weights: {coverage: w}` with `CoverageScorer(threshold)`: `Some((w, threshold))`.
    pub coverage: Option<(f32, f32)>,
    /// `partial_scorers: [CTCScorer]` with `weights: {ctc: w}`.
    pub ctc: Option<CtcScorerConfig>,
    /// `scorer_beam_scale`: partial scorers score `int(beam_size * scale)` candidates per
    /// hypothesis, the best after the full scorers.
    pub scorer_beam_scale: f64,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            rnnlm: None,
            coverage: None,
            ctc: None,
            scorer_beam_scale: 2.0,
        }
    }
}

/// SpeechBrain's `CTCScorer(ctc_fc, blank_index, eos_index)` as a partial scorer: the
/// attention log-probabilities are scaled by `1 - weight` and the CTC prefix scores of the
/// candidates added with `weight`. The searcher needs the model's `ctc_lin`.
#[derive(Debug, Clone, PartialEq)]
pub struct CtcScorerConfig {
    /// `weights: {ctc: w}`, in `(0, 1)`.
    pub weight: f64,
    /// `blank_index`.
    pub blank_index: u32,
    /// `eos_index` (the scorer's; SpeechBrain requires it to differ from the blank).
    pub eos_index: u32,
}

/// `CoverageScorer`: the accumulated attention of each hypothesis; the penalty is the
/// attention mass above `threshold` per frame, averaged over the steps taken.
#[derive(Debug, Clone)]
pub(crate) struct CoverageScorer {
    pub threshold: f32,
    /// `[N * T]` accumulated attention.
    pub coverage: Vec<f32>,
    pub frames: usize,
    pub time_step: usize,
}

impl CoverageScorer {
    pub fn new(threshold: f32, n: usize, frames: usize) -> Self {
        Self {
            threshold,
            coverage: vec![0.0; n * frames],
            frames,
            time_step: 0,
        }
    }

    /// Adds this step's attention `[N * T]`; returns the score of each hypothesis (the same
    /// for every token): `-(sum_t max(cov_t, thr) - T * thr) / steps`.
    pub fn score(&mut self, attn: &[f32]) -> Vec<f32> {
        self.time_step += 1;
        let t = self.frames;
        let thr = self.threshold;
        self.coverage
            .iter_mut()
            .zip(attn)
            .for_each(|(c, a)| *c += *a);
        self.coverage
            .chunks(t)
            .map(|row| {
                let s: f32 = row.iter().map(|&c| c.max(thr)).sum();
                -(s - t as f32 * thr) / self.time_step as f32
            })
            .collect()
    }

    /// Reorders the hypotheses (beam-search permutation).
    pub fn permute(&mut self, index: &[usize]) {
        let t = self.frames;
        let mut out = Vec::with_capacity(self.coverage.len());
        for &i in index {
            out.extend_from_slice(&self.coverage[i * t..(i + 1) * t]);
        }
        self.coverage = out;
    }
}
