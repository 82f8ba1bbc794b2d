//! Autoregressive search over an attentional RNN decoder, as SpeechBrain's
//! `S2SRNNGreedySearcher` and `S2SRNNBeamSearcher` (`speechbrain.decoders.seq2seq`).
//!
//! The neural steps run on tensors; the beam bookkeeping (masks, top-k, permutations) runs on
//! plain vectors in f32, in SpeechBrain's order of operations, so that the same scores give
//! the same hypotheses.

use candle_core::{Result, Tensor};

use super::ctc_prefix::CtcPrefixScorer;
use super::scorer::{CoverageScorer, ScorerConfig};
use super::step::search_step;
use crate::lobes::rnnlm::Rnnlm;
use crate::nnet::embedding::Embedding;
use crate::nnet::linear::Linear;
use crate::nnet::rnn_decoder::AttentionalRNNDecoder;

/// The embedding, decoder and output layer that a search drives (`emb`, `dec`, `seq_lin`).
#[derive(Debug, Clone)]
pub struct Seq2SeqModules {
    /// Token embedding (`emb`).
    pub emb: Embedding,
    /// Attentional decoder (`dec`).
    pub dec: AttentionalRNNDecoder,
    /// Output layer (`seq_lin`).
    pub seq_lin: Linear,
}

/// Valid encoder frames for relative lengths: `round(T * wav_len)` (SpeechBrain's `enc_lens`),
/// at least one frame.
pub fn enc_lens(frames: usize, wav_lens: &[f32]) -> Vec<usize> {
    wav_lens
        .iter()
        .map(|&r| ((frames as f32 * r).round_ties_even() as usize).clamp(1, frames.max(1)))
        .collect()
}

/// Options of [`greedy_search`] (`S2SRNNGreedySearcher`'s arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct GreedySearchConfig {
    /// `bos_index`.
    pub bos_index: u32,
    /// `eos_index`.
    pub eos_index: u32,
    /// `min_decode_ratio`.
    pub min_decode_ratio: f64,
    /// `max_decode_ratio`.
    pub max_decode_ratio: f64,
}

impl Default for GreedySearchConfig {
    fn default() -> Self {
        Self {
            bos_index: 0,
            eos_index: 0,
            min_decode_ratio: 0.0,
            max_decode_ratio: 1.0,
        }
    }
}

/// Greedy decoding of `enc` `[B, T, E]` (valid lengths `enc_len` in frames): the arg-max token
/// at each step until EOS, for `int(T * max_ratio) - int(T * min_ratio)` steps at most.
/// Returns each utterance's tokens without the EOS.
pub fn greedy_search(
    modules: &Seq2SeqModules,
    enc: &Tensor,
    enc_len: &[usize],
    cfg: &GreedySearchConfig,
) -> Result<Vec<Vec<u32>>> {
    greedy_search_with(modules, enc, enc_len, cfg, false)
}

pub(crate) fn greedy_search_with(
    modules: &Seq2SeqModules,
    enc: &Tensor,
    enc_len: &[usize],
    cfg: &GreedySearchConfig,
    candle: bool,
) -> Result<Vec<Vec<u32>>> {
    let (b, t, _) = enc.dims3()?;
    let min_steps = (t as f64 * cfg.min_decode_ratio) as usize;
    let max_steps = (t as f64 * cfg.max_decode_ratio) as usize;
    let mut net = search_step(modules, None, enc, enc_len, 1, candle)?;
    let n_out = modules.seq_lin.out_features();
    let mut inp = vec![cfg.bos_index; b];
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut ended = vec![false; b];
    for _ in min_steps..max_steps {
        let (lp, _) = net.decoder(&inp, 1.0)?;
        for i in 0..b {
            let best = argmax_first(&lp[i * n_out..(i + 1) * n_out]) as u32;
            if ended[i] {
                inp[i] = cfg.eos_index;
                continue;
            }
            if best == cfg.eos_index {
                ended[i] = true;
            } else {
                out[i].push(best);
            }
            inp[i] = best;
        }
        if ended.iter().all(|&e| e) {
            break;
        }
    }
    Ok(out)
}

/// Options of [`S2SRNNBeamSearcher`] (SpeechBrain's `S2SBeamSearcher` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct BeamSearchConfig {
    /// `bos_index`.
    pub bos_index: u32,
    /// `eos_index`.
    pub eos_index: u32,
    /// `min_decode_ratio`.
    pub min_decode_ratio: f64,
    /// `max_decode_ratio`.
    pub max_decode_ratio: f64,
    /// `beam_size`.
    pub beam_size: usize,
    /// `using_eos_threshold`.
    pub using_eos_threshold: bool,
    /// `eos_threshold`: EOS is only allowed when its log-probability exceeds this times the
    /// best one.
    pub eos_threshold: f32,
    /// `length_normalization`.
    pub length_normalization: bool,
    /// `using_max_attn_shift`.
    pub using_max_attn_shift: bool,
    /// `max_attn_shift` (frames).
    pub max_attn_shift: usize,
    /// `temperature` of the decoder's softmax.
    pub temperature: f32,
    /// `minus_inf`.
    pub minus_inf: f32,
    /// Shallow-fusion scorers.
    pub scorer: ScorerConfig,
}

impl Default for BeamSearchConfig {
    fn default() -> Self {
        Self {
            bos_index: 0,
            eos_index: 0,
            min_decode_ratio: 0.0,
            max_decode_ratio: 1.0,
            beam_size: 1,
            using_eos_threshold: true,
            eos_threshold: 1.5,
            length_normalization: true,
            using_max_attn_shift: false,
            max_attn_shift: 60,
            temperature: 1.0,
            minus_inf: -1e20,
            scorer: ScorerConfig::default(),
        }
    }
}

/// A finished hypothesis: its tokens (no EOS) and final (length-normalized) score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Score.
    pub score: f32,
}

/// SpeechBrain's `S2SRNNBeamSearcher` with its `ScorerBuilder` (RNNLM and coverage; CTC as
/// a partial scorer).
///
/// Reproduces SpeechBrain's end-of-search rule: when a beam never reaches EOS within
/// `int(T * max_decode_ratio)` steps, the hypotheses still alive are taken as they are and,
/// as in SpeechBrain, their last token is dropped.
#[derive(Debug, Clone)]
pub struct S2SRNNBeamSearcher {
    /// Embedding, decoder, output layer.
    pub modules: Seq2SeqModules,
    /// The language model of the RNNLM scorer.
    pub lm: Option<Rnnlm>,
    /// The CTC layer (`ctc_lin`) of the CTC scorer.
    pub ctc_lin: Option<Linear>,
    /// Search options.
    pub config: BeamSearchConfig,
}

/// Indices of the `k` largest values, ties broken by lower index.
fn topk(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let cmp = |a: &usize, b: &usize| {
        values[*b]
            .partial_cmp(&values[*a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    let k = k.min(idx.len());
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx
}

impl S2SRNNBeamSearcher {
    /// Searches `enc` `[B, T, E]` (valid lengths `enc_len` in frames); returns the best
    /// hypothesis of each utterance.
    pub fn search(&self, enc: &Tensor, enc_len: &[usize]) -> Result<Vec<Hypothesis>> {
        self.search_with(enc, enc_len, false)
    }

    /// [`Self::search`] with the candle backend forced (`candle`), for comparisons.
    pub(crate) fn search_with(
        &self,
        enc: &Tensor,
        enc_len: &[usize],
        candle: bool,
    ) -> Result<Vec<Hypothesis>> {
        let cfg = &self.config;
        let (batch, frames, _) = enc.dims3()?;
        let beam = cfg.beam_size.max(1);
        let n_bh = batch * beam;
        let n_out = self.modules.seq_lin.out_features();
        let eos = cfg.eos_index as usize;
        let min_steps = (frames as f64 * cfg.min_decode_ratio) as usize;
        let max_steps = (frames as f64 * cfg.max_decode_ratio) as usize;
        if max_steps == 0 {
            candle_core::bail!(
                "beam search: {frames} encoder frames give no decoding step (input too short)"
            );
        }
        let lm = match (&self.lm, cfg.scorer.rnnlm) {
            (Some(lm), Some(_)) => Some(lm),
            (None, Some(_)) => candle_core::bail!("beam search: RNNLM weight set but no LM"),
            _ => None,
        };
        // Each utterance's `beam` hypotheses are adjacent.
        let mut net = search_step(&self.modules, lm, enc, enc_len, beam, candle)?;
        let mut coverage = cfg
            .scorer
            .coverage
            .map(|(_, thr)| CoverageScorer::new(thr, n_bh, frames));
        let mut ctc = match (&cfg.scorer.ctc, &self.ctc_lin) {
            (Some(c), Some(lin)) => {
                let lp = candle_nn::ops::log_softmax(&lin.forward(enc, false)?, 2)?;
                let lp: Vec<f32> = lp.flatten_all()?.to_vec1()?;
                let scorer = CtcPrefixScorer::new(
                    lp,
                    (batch, frames, n_out),
                    enc_len,
                    beam,
                    c.blank_index as usize,
                    c.eos_index as usize,
                );
                // SpeechBrain scales the attention scores by `1 - ctc_weight` (a Python
                // float) and the CTC scores by `ctc_weight`, each cast to the tensors' f32.
                Some((scorer, (1.0 - c.weight) as f32, c.weight as f32))
            }
            (Some(_), None) => candle_core::bail!("beam search: CTC scorer set but no ctc_lin"),
            _ => None,
        };
        // Candidates per hypothesis for the partial (CTC) scorer: int(beam * scale).
        let n_cand = ((beam as f64 * cfg.scorer.scorer_beam_scale) as usize).clamp(1, n_out);

        let mut inp = vec![cfg.bos_index; n_bh];
        let mut seq_scores = vec![f32::NEG_INFINITY; n_bh];
        for b in 0..batch {
            seq_scores[b * beam] = 0.0;
        }
        let mut alive: Vec<Vec<u32>> = vec![Vec::new(); n_bh];
        let mut prev_peak = vec![0usize; n_bh];
        let mut finished: Vec<Vec<(Vec<u32>, f32)>> = vec![Vec::new(); batch];
        let mut scores = vec![0f32; n_bh];

        for step in 0..max_steps {
            if finished.iter().all(|f| f.len() == beam) {
                break;
            }
            let (mut lp, attn_v) = net.decoder(&inp, cfg.temperature)?;
            if let Some((_, attn_weight, _)) = &ctc {
                lp.iter_mut().for_each(|v| *v *= attn_weight);
            }

            for r in 0..n_bh {
                let row = &mut lp[r * n_out..(r + 1) * n_out];
                if cfg.using_max_attn_shift {
                    let a = &attn_v[r * frames..(r + 1) * frames];
                    let peak = argmax_first(a);
                    let prev = prev_peak[r] as i64;
                    let shift = cfg.max_attn_shift as i64;
                    let ok = (peak as i64) <= prev + shift && (peak as i64) > prev - shift;
                    if !ok {
                        row.iter_mut().for_each(|v| *v = cfg.minus_inf);
                    }
                    prev_peak[r] = peak;
                }
                if step < min_steps {
                    row[eos] = cfg.minus_inf;
                }
                if cfg.using_eos_threshold {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    if row[eos] <= cfg.eos_threshold * max {
                        row[eos] = cfg.minus_inf;
                    }
                }
            }
            if let Some((w, temperature)) = cfg.scorer.rnnlm {
                let lm_lp = net.lm(&inp, temperature)?;
                lp.iter_mut().zip(&lm_lp).for_each(|(v, l)| *v += l * w);
            }
            if let Some(cov) = coverage.as_mut() {
                let w = cfg.scorer.coverage.map(|(w, _)| w).unwrap_or(0.0);
                let pen = cov.score(&attn_v);
                for r in 0..n_bh {
                    let add = pen[r] * w;
                    lp[r * n_out..(r + 1) * n_out]
                        .iter_mut()
                        .for_each(|v| *v += add);
                }
            }

            if let Some((scorer, _, w)) = ctc.as_mut() {
                let cands = (0..n_bh)
                    .map(|r| topk(&lp[r * n_out..(r + 1) * n_out], n_cand))
                    .collect();
                let sc = scorer.score(&inp, cands);
                lp.iter_mut().zip(&sc).for_each(|(v, s)| *v += s * *w);
            }

            // Scores of every extension, then the best `beam` per utterance.
            let norm = if cfg.length_normalization {
                (step + 1) as f32
            } else {
                1.0
            };
            let mut predecessors = vec![0usize; n_bh];
            let mut new_inp = vec![0u32; n_bh];
            for b in 0..batch {
                let span = beam * n_out;
                let mut cand = vec![0f32; span];
                for k in 0..beam {
                    let r = b * beam + k;
                    for v in 0..n_out {
                        let s = seq_scores[r] + lp[r * n_out + v];
                        cand[k * n_out + v] = if cfg.length_normalization {
                            s / norm
                        } else {
                            s
                        };
                    }
                }
                for (j, c) in topk(&cand, beam).into_iter().enumerate() {
                    let r = b * beam + j;
                    scores[r] = cand[c];
                    seq_scores[r] = if cfg.length_normalization {
                        cand[c] * norm
                    } else {
                        cand[c]
                    };
                    new_inp[r] = (c % n_out) as u32;
                    predecessors[r] = b * beam + c / n_out;
                }
            }
            // Every memory follows its hypothesis.
            net.permute(&predecessors)?;
            if let Some(cov) = coverage.as_mut() {
                cov.permute(&predecessors);
            }
            if let Some((scorer, _, _)) = ctc.as_mut() {
                scorer.permute(&predecessors, &new_inp);
            }
            prev_peak = predecessors.iter().map(|&p| prev_peak[p]).collect();
            alive = predecessors
                .iter()
                .zip(&new_inp)
                .map(|(&p, &tok)| {
                    let mut h = alive[p].clone();
                    h.push(tok);
                    h
                })
                .collect();
            inp = new_inp;
            for r in 0..n_bh {
                if inp[r] as usize == eos {
                    let b = r / beam;
                    if finished[b].len() < beam {
                        finished[b].push((alive[r].clone(), scores[r]));
                    }
                    seq_scores[r] = f32::NEG_INFINITY;
                }
            }
        }
        // Beams that never reached EOS: the alive hypotheses, in order, until each is full.
        if !finished.iter().all(|f| f.len() == beam) {
            for r in 0..n_bh {
                let b = r / beam;
                if finished[b].len() < beam {
                    finished[b].push((alive[r].clone(), scores[r]));
                }
            }
        }
        Ok(finished
            .into_iter()
            .map(|hyps| {
                let best = topk(&hyps.iter().map(|h| h.1).collect::<Vec<_>>(), 1)[0];
                let (mut tokens, score) = hyps[best].clone();
                // SpeechBrain keeps `len(hyp) - 1` tokens: the EOS, or the last token of a
                // hypothesis that never ended.
                tokens.pop();
                Hypothesis { tokens, score }
            })
            .collect())
    }
}

fn argmax_first(a: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in a.iter().enumerate() {
        if v > a[best] {
            best = i;
        }
    }
    best
}
