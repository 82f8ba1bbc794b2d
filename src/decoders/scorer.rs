//! Shallow-fusion scorers of SpeechBrain's beam search (`speechbrain.decoders.scorer`):
//! `RNNLMScorer` (language-model log-probabilities) and `CoverageScorer` (a penalty on
//! attention that keeps returning to the same frames), combined by `ScorerBuilder` weights.

/// Which scorers run and with what weights (the yaml's `scorer: !new:...ScorerBuilder`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScorerConfig {
    /// `weights: {rnnlm: w}` with `RNNLMScorer(temperature)`: `Some((w, temperature))`.
    pub rnnlm: Option<(f32, f32)>,
    /// `weights: {coverage: w}` with `CoverageScorer(threshold)`: `Some((w, threshold))`.
    pub coverage: Option<(f32, f32)>,
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
