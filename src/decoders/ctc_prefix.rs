//! CTC prefix scores for joint attention + CTC beam search (SpeechBrain's `CTCPrefixScore`
//! behind `CTCScorer`, after Watanabe et al., "Hybrid CTC/attention", Algorithm 2): the
//! log-probability that the CTC output of the whole utterance begins with a hypothesis's
//! prefix, updated one token at a time for a few candidate tokens per hypothesis.
//!
//! Plain vectors in f32, in SpeechBrain's order of operations (its `-1e20` stands for an
//! impossible path, and `logsumexp` subtracts the maximum first), so that the same
//! log-probabilities give the same scores.

/// SpeechBrain's `minus_inf` of the CTC scorer.
const MINUS_INF: f32 = -1e20;

/// `torch.logsumexp` of two values.
fn lse2(a: f32, b: f32) -> f32 {
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// The CTC prefix state of every hypothesis of a beam search.
#[derive(Debug, Clone)]
pub(crate) struct CtcPrefixScorer {
    /// `[B, T, V]` CTC log-probabilities; frames past an utterance's length are impossible
    /// for every token but token 0, which is certain (SpeechBrain's padding rule).
    x: Vec<f32>,
    batch: usize,
    frames: usize,
    vocab: usize,
    blank: usize,
    eos: usize,
    /// Each utterance's last valid frame.
    last_frame: Vec<usize>,
    /// `-1` before the first step, then the length of the prefixes scored.
    prefix_length: i64,
    /// `[n_bh][T][2]`: log-probabilities of each hypothesis's prefix ending at frame `t`
    /// in a non-blank (0) or blank (1) symbol.
    r_prev: Vec<f32>,
    /// Each hypothesis's own prefix score (SpeechBrain's `psi_prev`, one value per row).
    psi_prev: Vec<f32>,
    /// Of the last step: each hypothesis's candidates, their `r` (`[n_bh][K][T][2]`) and
    /// full score row `[n_bh][V]`.
    candidates: Vec<Vec<usize>>,
    r: Vec<f32>,
    psi: Vec<f32>,
}

impl CtcPrefixScorer {
    /// `log_probs` `[B, T, V]` (log-softmax of `ctc_lin` over the encoder output), `enc_len`
    /// valid frames per utterance, `beam` hypotheses per utterance.
    pub fn new(
        mut log_probs: Vec<f32>,
        (batch, frames, vocab): (usize, usize, usize),
        enc_len: &[usize],
        beam: usize,
        blank: usize,
        eos: usize,
    ) -> Self {
        for (b, &len) in enc_len.iter().enumerate() {
            for t in len.min(frames)..frames {
                let row = &mut log_probs[(b * frames + t) * vocab..(b * frames + t + 1) * vocab];
                row.fill(MINUS_INF);
                row[0] = 0.0;
            }
        }
        let n_bh = batch * beam;
        // Before the first token: only blanks so far (the running sum of blank log-probs).
        let mut r_prev = vec![MINUS_INF; n_bh * frames * 2];
        for h in 0..n_bh {
            let b = h / beam;
            // torch's CPU cumsum accumulates a float tensor in double.
            let mut acc = 0f64;
            for t in 0..frames {
                acc += log_probs[(b * frames + t) * vocab + blank] as f64;
                r_prev[(h * frames + t) * 2 + 1] = acc as f32;
            }
        }
        Self {
            x: log_probs,
            batch,
            frames,
            vocab,
            blank,
            eos,
            last_frame: enc_len.iter().map(|&l| l.max(1) - 1).collect(),
            prefix_length: -1,
            r_prev,
            psi_prev: vec![0.0; n_bh],
            candidates: Vec::new(),
            r: Vec::new(),
            psi: Vec::new(),
        }
    }

    fn xv(&self, b: usize, t: usize, v: usize) -> f32 {
        self.x[(b * self.frames + t) * self.vocab + v]
    }

    /// Scores `[n_bh * V]` of extending each hypothesis (whose last token is `last[h]`) by
    /// each token: the change of its CTC prefix score for its `candidates[h]`, `-1e20` minus
    /// the old score for the others (and the blank), the whole-utterance score for EOS.
    pub fn score(&mut self, last: &[u32], candidates: Vec<Vec<usize>>) -> Vec<f32> {
        let (t_max, vocab) = (self.frames, self.vocab);
        let n_bh = last.len();
        let beam = n_bh / self.batch.max(1);
        self.prefix_length += 1;
        let p = self.prefix_length as usize;
        let start = p.max(1);
        let k_n = candidates.first().map_or(0, Vec::len);
        let mut r = vec![MINUS_INF; n_bh * k_n * t_max * 2];
        let mut psi = vec![MINUS_INF; n_bh * vocab];
        let mut phi = vec![0f32; t_max];
        let mut r_sum = vec![0f32; t_max];
        let mut phix = Vec::with_capacity(t_max);
        for h in 0..n_bh {
            let b = h / beam;
            let rp = &self.r_prev[h * t_max * 2..(h + 1) * t_max * 2];
            for t in 0..t_max {
                r_sum[t] = lse2(rp[t * 2], rp[t * 2 + 1]);
            }
            for (k, &c) in candidates[h].iter().enumerate() {
                // phi: the prefix may be extended at frame t by c; a repeated token needs a
                // blank in between.
                let same = c == last[h] as usize;
                for t in 0..t_max {
                    phi[t] = if same { rp[t * 2 + 1] } else { r_sum[t] };
                }
                let rk = &mut r[(h * k_n + k) * t_max * 2..(h * k_n + k + 1) * t_max * 2];
                if p == 0 {
                    rk[0] = self.xv(b, 0, c);
                }
                for t in start..t_max {
                    let (rnb, rb) = (rk[(t - 1) * 2], rk[(t - 1) * 2 + 1]);
                    rk[t * 2] = lse2(rnb, phi[t - 1]) + self.xv(b, t, c);
                    rk[t * 2 + 1] = lse2(rnb, rb) + self.xv(b, t, self.blank);
                }
                // psi: the prefix + c ending at any frame from `start` on, or before.
                let psi_init = rk[(start - 1) * 2];
                // phix[t] for t in start.., computed once for the max and the sum.
                phix.clear();
                phix.extend((start..t_max).map(|t| phi[t - 1] + self.xv(b, t, c)));
                let m = phix.iter().fold(psi_init, |m, &v| m.max(v));
                let mut s = 0f32;
                for &v in &phix {
                    s += (v - m).exp();
                }
                s += (psi_init - m).exp();
                psi[h * vocab + c] = m + s.ln();
            }
            psi[h * vocab + self.eos] = r_sum[self.last_frame[b]];
            if self.eos != self.blank {
                psi[h * vocab + self.blank] = MINUS_INF;
            }
        }
        let scores = psi
            .iter()
            .enumerate()
            .map(|(i, &v)| v - self.psi_prev[i / vocab])
            .collect();
        self.candidates = candidates;
        self.r = r;
        self.psi = psi;
        scores
    }

    /// Keeps the state of each chosen extension: hypothesis `from[j]` extended by `token[j]`
    /// (SpeechBrain's `permute_mem`; a token that was not a candidate takes the first
    /// candidate's path probabilities, as SpeechBrain does).
    pub fn permute(&mut self, from: &[usize], token: &[u32]) {
        let t2 = self.frames * 2;
        let k_n = self.candidates.first().map_or(0, Vec::len);
        let mut r_prev = Vec::with_capacity(from.len() * t2);
        let mut psi_prev = Vec::with_capacity(from.len());
        for (&h, &tok) in from.iter().zip(token) {
            let tok = tok as usize;
            psi_prev.push(self.psi[h * self.vocab + tok]);
            let k = self.candidates[h]
                .iter()
                .position(|&c| c == tok)
                .unwrap_or(0);
            let at = (h * k_n + k) * t2;
            r_prev.extend_from_slice(&self.r[at..at + t2]);
        }
        self.r_prev = r_prev;
        self.psi_prev = psi_prev;
    }
}
