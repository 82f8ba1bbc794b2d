//! The neural half of a search step, behind one interface with two backends:
//! [`CandleStep`] (candle ops on any device, the reference) and [`CpuStep`] (eval-mode CPU
//! kernels, feature-major, siblings sharing their parent's recurrent products; see
//! [`crate::nnet::rnn_step`]). Both give the same log-probabilities up to float rounding
//! (tested), so the search picks the CPU one whenever it can.

use candle_core::{DType, Result, Tensor};

use super::seq2seq::Seq2SeqModules;
use crate::lobes::rnnlm::{Rnnlm, RnnlmStepper};
use crate::nnet::fused::{f32_vec, location_energies_host, softmax_row};
use crate::nnet::gemm::{embed_fm, gather_cols, matmul_into, HostF32, HostLinear, Parents, View};
use crate::nnet::rnn::LstmState;
use crate::nnet::rnn_decoder::DecoderState;
use crate::nnet::rnn_step::{log_softmax_cols, GruLayerStep, Prev};

/// One step of a search over `N` hypotheses (`group` adjacent ones per utterance).
pub(crate) trait SearchStep {
    /// The decoder's `log_softmax(logits / temperature)` `[N, V]` and attention `[N, T]` after
    /// feeding `inp`.
    fn decoder(&mut self, inp: &[u32], temperature: f32) -> Result<(Vec<f32>, Vec<f32>)>;
    /// The language model's `log_softmax(logits / temperature)` `[N, V]` after feeding `inp`.
    fn lm(&mut self, inp: &[u32], temperature: f32) -> Result<Vec<f32>>;
    /// Hypothesis `j` continues hypothesis `parent[j]` of the last step.
    fn permute(&mut self, parent: &[usize]) -> Result<()>;
}

/// The backend for `enc`: [`CpuStep`] for CPU f32 encodings, [`CandleStep`] otherwise (or when
/// `candle` is forced, for tests).
pub(crate) fn search_step<'a>(
    modules: &'a Seq2SeqModules,
    lm: Option<&'a Rnnlm>,
    enc: &Tensor,
    enc_len: &[usize],
    group: usize,
    candle: bool,
) -> Result<Box<dyn SearchStep + 'a>> {
    if !candle && enc.device().is_cpu() && enc.dtype() == DType::F32 {
        return Ok(Box::new(CpuStep {
            dec: DecoderStepper::new(modules, enc, enc_len, group)?,
            lm: lm.map(RnnlmStepper::new).transpose()?,
        }));
    }
    Ok(Box::new(CandleStep::new(modules, lm, enc, enc_len, group)?))
}

/// candle ops on every hypothesis (the encoding repeated `group` times per utterance).
pub(crate) struct CandleStep<'a> {
    modules: &'a Seq2SeqModules,
    lm: Option<&'a Rnnlm>,
    enc: Tensor,
    state: DecoderState,
    lm_state: Option<LstmState>,
}

impl<'a> CandleStep<'a> {
    fn new(
        modules: &'a Seq2SeqModules,
        lm: Option<&'a Rnnlm>,
        enc: &Tensor,
        enc_len: &[usize],
        group: usize,
    ) -> Result<Self> {
        let n = enc.dim(0)? * group;
        let rep: Vec<u32> = (0..n).map(|i| (i / group) as u32).collect();
        let enc = enc.index_select(&Tensor::new(rep.as_slice(), enc.device())?, 0)?;
        let lens: Vec<usize> = (0..n).map(|i| enc_len[i / group]).collect();
        let state = modules.dec.init_state(&enc, &lens, false)?;
        Ok(Self {
            modules,
            lm,
            enc,
            state,
            lm_state: None,
        })
    }
}

fn log_probs(logits: &Tensor, temperature: f32) -> Result<Vec<f32>> {
    let logits = if temperature != 1.0 {
        (logits / temperature as f64)?
    } else {
        logits.clone()
    };
    candle_nn::ops::log_softmax(&logits, 1)?
        .flatten_all()?
        .to_vec1::<f32>()
}

impl SearchStep for CandleStep<'_> {
    fn decoder(&mut self, inp: &[u32], temperature: f32) -> Result<(Vec<f32>, Vec<f32>)> {
        let m = self.modules;
        let e = m
            .emb
            .forward(&Tensor::new(inp, self.enc.device())?, false)?;
        let (dec_out, w) = m.dec.forward_step(&e, &mut self.state, &self.enc, false)?;
        let logits = m.seq_lin.forward(&dec_out, false)?;
        Ok((
            log_probs(&logits, temperature)?,
            w.flatten_all()?.to_vec1::<f32>()?,
        ))
    }

    fn lm(&mut self, inp: &[u32], temperature: f32) -> Result<Vec<f32>> {
        let Some(lm) = self.lm else {
            candle_core::bail!("beam search: RNNLM weight set but no LM");
        };
        let ids = Tensor::new(inp, self.enc.device())?;
        let (logits, st) = lm.forward(&ids, self.lm_state.as_ref(), false)?;
        self.lm_state = Some(st);
        log_probs(&logits, temperature)
    }

    fn permute(&mut self, parent: &[usize]) -> Result<()> {
        let idx: Vec<u32> = parent.iter().map(|&p| p as u32).collect();
        let index = Tensor::new(idx.as_slice(), self.enc.device())?;
        self.state = self.state.index_select(&index)?;
        if let Some(st) = &self.lm_state {
            self.lm_state = Some(st.index_select(&index)?);
        }
        Ok(())
    }
}

/// Eval-mode CPU kernels: the decoder ([`DecoderStepper`]) and the LM ([`RnnlmStepper`]).
pub(crate) struct CpuStep<'a> {
    dec: DecoderStepper<'a>,
    lm: Option<RnnlmStepper<'a>>,
}

impl SearchStep for CpuStep<'_> {
    fn decoder(&mut self, inp: &[u32], temperature: f32) -> Result<(Vec<f32>, Vec<f32>)> {
        self.dec.step(inp, temperature)
    }

    fn lm(&mut self, inp: &[u32], temperature: f32) -> Result<Vec<f32>> {
        match self.lm.as_mut() {
            Some(lm) => lm.step(inp, temperature),
            None => candle_core::bail!("beam search: RNNLM weight set but no LM"),
        }
    }

    fn permute(&mut self, parent: &[usize]) -> Result<()> {
        self.dec.parents = Some(Parents::new(parent.to_vec()));
        if let Some(lm) = self.lm.as_mut() {
            lm.permute(parent);
        }
        Ok(())
    }
}

/// `AttentionalRNNDecoder` (GRU cells, location-aware attention) with its embedding and
/// output layer, stepped on the CPU. The encoder projection `mlp_enc` is computed once per
/// utterance, not per hypothesis.
pub(crate) struct DecoderStepper<'a> {
    emb: HostF32<'a>,
    emb_dim: usize,
    gru: Vec<GruLayerStep<'a>>,
    mlp_dec: HostLinear<'a>,
    loc_bias: Vec<f32>,
    /// `mlp_loc`'s weight transposed, `[C, A]`.
    loc_wt: Vec<f32>,
    v_attn: Vec<f32>,
    /// `conv_loc`'s weight `[C, 2K + 1]`.
    conv_w: Vec<f32>,
    half_kernel: usize,
    scaling: f32,
    mlp_out: HostLinear<'a>,
    proj: HostLinear<'a>,
    seq_lin: HostLinear<'a>,
    /// Encoder states `[U, T, E]` and their projection `[U, T, A]`, per utterance.
    enc: Vec<f32>,
    enc_h: Vec<f32>,
    frames: usize,
    lens: Vec<usize>,
    group: usize,
    /// Per GRU layer `[H, N]`; the attention's output `[A, N]` and weights `[N, T]`.
    h: Vec<Vec<f32>>,
    ctx: Vec<f32>,
    prev_attn: Vec<f32>,
    parents: Option<Parents>,
}

impl<'a> DecoderStepper<'a> {
    /// For `enc` `[U, T, E]` (valid lengths `enc_len`), `group` hypotheses per utterance.
    pub fn new(
        m: &'a Seq2SeqModules,
        enc: &Tensor,
        enc_len: &[usize],
        group: usize,
    ) -> Result<Self> {
        let (u, t, _) = enc.dims3()?;
        let at = &m.dec.attn;
        let enc_h = crate::nnet::linear(enc, &at.mlp_enc.0, Some(&at.mlp_enc.1))?;
        let a = enc_h.dim(2)?;
        if enc_len.len() != u {
            candle_core::bail!("decoder step: {} lengths for {u} utterances", enc_len.len());
        }
        let n = u * group;
        let lens: Vec<usize> = (0..n).map(|j| enc_len[j / group]).collect();
        let (_, prev_attn) = crate::nnet::attention::initial_weights(&lens, t)?;
        let hidden = m.dec.rnn.hidden_size();
        let gru = m.dec.rnn.cells.iter().map(GruLayerStep::new);
        Ok(Self {
            emb: HostF32::new(&m.emb.weight, "decoder embedding")?,
            emb_dim: m.emb.weight.dim(1)?,
            gru: gru.collect::<Result<Vec<_>>>()?,
            mlp_dec: HostLinear::new(&at.mlp_dec.0, Some(&at.mlp_dec.1), "attention mlp_dec")?,
            loc_bias: f32_vec(&at.mlp_loc.1)?,
            loc_wt: f32_vec(&at.mlp_loc.0.t()?)?,
            v_attn: f32_vec(&at.mlp_attn)?,
            conv_w: f32_vec(&at.conv_loc)?,
            half_kernel: at.kernel_size,
            scaling: at.scaling as f32,
            mlp_out: HostLinear::new(&at.mlp_out.0, Some(&at.mlp_out.1), "attention mlp_out")?,
            proj: HostLinear::new(&m.dec.proj.0, Some(&m.dec.proj.1), "decoder proj")?,
            seq_lin: HostLinear::new(&m.seq_lin.weight, m.seq_lin.bias.as_ref(), "seq_lin")?,
            enc: f32_vec(enc)?,
            enc_h: f32_vec(&enc_h)?,
            frames: t,
            lens: enc_len.to_vec(),
            group,
            h: vec![vec![0f32; hidden * n]; m.dec.rnn.cells.len()],
            ctx: vec![0f32; a * n],
            prev_attn,
            // Every beam of an utterance starts from the same state.
            parents: Some(Parents::new((0..n).map(|j| j - j % group).collect())),
        })
    }

    /// `log_softmax(logits / temperature)` `[N, V]` and the attention weights `[N, T]`.
    pub fn step(&mut self, inp: &[u32], temperature: f32) -> Result<(Vec<f32>, Vec<f32>)> {
        let (b, t) = (inp.len(), self.frames);
        let a = self.mlp_dec.out;
        let n_prev = self.ctx.len() / a.max(1);
        let p = match self.parents.take() {
            Some(p) => p,
            None => Parents::identity(b),
        };
        p.check(b, n_prev)?;
        // The GRU: its input is [embedding; previous attention output], the latter shared by
        // siblings.
        let emb = embed_fm(self.emb.slice(), self.emb_dim, inp)?;
        let ctx_u = gather_cols(&self.ctx, n_prev, &p.unique);
        let mut new_h: Vec<Vec<f32>> = Vec::with_capacity(self.gru.len());
        for (l, cell) in self.gru.iter().enumerate() {
            let prev = Prev {
                h: &self.h[l],
                c: None,
                parents: &p,
            };
            let (inp, shared) = match new_h.last() {
                Some(h) => (h, None),
                None => (&emb, Some(ctx_u.as_slice())),
            };
            let h = cell.step(inp, b, shared, &prev)?;
            new_h.push(h);
        }
        let x = new_h.last().map_or(&emb, |h| h);
        // Location-aware attention.
        let prev_attn: Vec<f32> = p
            .parent
            .iter()
            .flat_map(|&i| self.prev_attn[i * t..(i + 1) * t].iter().copied())
            .collect();
        let conv = self.location_conv(&prev_attn, b);
        let dec_h = self.mlp_dec.forward(x, b)?; // [A, N]
        let mut dec_rows = vec![0f32; b * a];
        for (r, row) in dec_h.chunks(b).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                dec_rows[j * a + r] = v + self.loc_bias[r];
            }
        }
        let c = self.loc_wt.len() / a.max(1);
        let mut w = location_energies_host(
            &self.enc_h,
            self.group,
            (t, a, c),
            &dec_rows,
            &conv,
            &self.loc_wt,
            &self.v_attn,
        );
        for (j, row) in w.chunks_mut(t).enumerate() {
            let len = self.lens[j / self.group];
            row[len..].fill(f32::NEG_INFINITY);
            if self.scaling != 1.0 {
                row.iter_mut().for_each(|v| *v *= self.scaling);
            }
            softmax_row(row);
        }
        // Context: each utterance's encoder states weighted by its hypotheses' attention.
        let e = self.enc.len() / (self.lens.len() * t).max(1);
        let mut ctx = vec![0f32; e * b];
        for (ui, ws) in w.chunks(self.group * t).enumerate() {
            let g = ws.len() / t;
            let enc_t = View::rows(&self.enc[ui * t * e..(ui + 1) * t * e], t, e, e).t();
            let wt = View::rows(ws, g, t, t).t();
            matmul_into(&mut ctx[ui * self.group..], b, enc_t, wt, false)?;
        }
        let c_out = self.mlp_out.forward(&ctx, b)?; // [A, N]
        let mut cat = c_out.clone();
        cat.extend_from_slice(x);
        let dec_out = self.proj.forward(&cat, b)?;
        let logits = self.seq_lin.forward(&dec_out, b)?;
        self.h = new_h;
        self.ctx = c_out;
        self.prev_attn = w.clone();
        Ok((log_softmax_cols(&logits, b, temperature), w))
    }

    /// `conv_loc` (one input channel, `C` outputs, `2K + 1` taps, zero padding `K`) on the
    /// previous attention `[N, T]`: `[N, T, C]`.
    fn location_conv(&self, prev: &[f32], b: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let (t, k) = (self.frames, self.half_kernel);
        let taps = 2 * k + 1;
        let c = self.conv_w.len() / taps;
        let mut out = vec![0f32; b * t * c];
        out.par_chunks_mut(t * c)
            .zip(prev.par_chunks(t))
            .for_each(|(o, x)| {
                for ti in 0..t {
                    // Output ti reads x[ti + tap - k] for the taps that land inside x.
                    let lo = k.saturating_sub(ti);
                    let hi = taps.min(t + k - ti);
                    if lo >= hi {
                        continue;
                    }
                    let xs = &x[ti + lo - k..ti + hi - k];
                    for ch in 0..c {
                        let w = &self.conv_w[ch * taps + lo..ch * taps + hi];
                        o[ti * c + ch] = crate::fastmath::lanes_sum(w, xs, |a, b| a * b);
                    }
                }
            });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoders::seq2seq::{BeamSearchConfig, S2SRNNBeamSearcher};
    use crate::decoders::{greedy_search, GreedySearchConfig, ScorerConfig};
    use crate::lobes::rnnlm::RnnlmConfig;
    use crate::nnet::embedding::Embedding;
    use crate::nnet::gemm::max_abs_diff;
    use crate::nnet::linear::Linear;
    use crate::nnet::rnn_decoder::{AttentionalRNNDecoder, AttentionalRNNDecoderConfig};
    use crate::nnet::Activation;
    use candle_core::Device;
    use candle_nn::{VarBuilder, VarMap};

    /// A random small decoder (two GRU layers, location attention) and LM.
    fn models(vm: &VarMap) -> Result<(Seq2SeqModules, Rnnlm)> {
        let vb = VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu);
        let (v, e, h, a) = (23usize, 6usize, 12usize, 10usize);
        let cfg = AttentionalRNNDecoderConfig {
            rnn_type: "gru".into(),
            attn_type: "location".into(),
            hidden_size: h,
            attn_dim: a,
            num_layers: 2,
            enc_dim: 9,
            input_size: e,
            scaling: 1.5,
            channels: 3,
            kernel_size: 4,
            dropout: 0.0,
        };
        let modules = Seq2SeqModules {
            emb: Embedding::new(v, e, vb.pp("emb"))?,
            dec: AttentionalRNNDecoder::new(&cfg, vb.pp("dec"))?,
            seq_lin: Linear::new(h, v, true, vb.pp("seq_lin"))?,
        };
        let lm_cfg = RnnlmConfig {
            output_neurons: v,
            embedding_dim: 5,
            activation: Activation::LeakyRelu,
            dropout: 0.0,
            rnn_layers: 2,
            rnn_neurons: 14,
            dnn_blocks: 1,
            dnn_neurons: 8,
        };
        Ok((modules, Rnnlm::new(&lm_cfg, vb.pp("lm"))?))
    }

    /// The CPU kernels give candle's log-probabilities and attention over several steps with
    /// permutations (siblings, dropped hypotheses), two utterances of different lengths.
    #[test]
    fn cpu_steps_equal_candle_steps() -> Result<()> {
        let vm = VarMap::new();
        let (modules, lm) = models(&vm)?;
        let enc = Tensor::randn(0f32, 1.0, (2, 7, 9), &Device::Cpu)?;
        let lens = [7usize, 4];
        let group = 3;
        let mut cpu = search_step(&modules, Some(&lm), &enc, &lens, group, false)?;
        let mut reference = search_step(&modules, Some(&lm), &enc, &lens, group, true)?;
        let mut inp = vec![0u32; 6];
        let perms = [
            [0usize, 0, 1, 3, 3, 3],
            [2, 1, 2, 5, 4, 3],
            [1, 1, 1, 4, 4, 4],
        ];
        for (step, perm) in perms.iter().enumerate() {
            let (lp, w) = cpu.decoder(&inp, 1.25)?;
            let (lp_ref, w_ref) = reference.decoder(&inp, 1.25)?;
            assert!(max_abs_diff(&lp, &lp_ref) < 1e-5, "step {step}: decoder");
            assert!(max_abs_diff(&w, &w_ref) < 1e-6, "step {step}: attention");
            // The short utterance's padded frames get no attention.
            assert!(w[3 * 7 + 4..3 * 7 + 7].iter().all(|&x| x == 0.0));
            let l = cpu.lm(&inp, 1.0)?;
            assert!(
                max_abs_diff(&l, &reference.lm(&inp, 1.0)?) < 1e-5,
                "step {step}: LM"
            );
            cpu.permute(perm)?;
            reference.permute(perm)?;
            inp = vec![3, 7, 7, 22, 1, 5];
            inp.rotate_left(step);
        }
        // A parent that does not exist is an error in both models, not a panic.
        cpu.permute(&[0, 0, 0, 0, 0, 6])?;
        assert!(cpu.decoder(&inp, 1.0).is_err());
        assert!(cpu.lm(&inp, 1.0).is_err());
        Ok(())
    }

    /// Whole searches give the same hypotheses with either backend.
    #[test]
    fn searches_agree_across_backends() -> Result<()> {
        let vm = VarMap::new();
        let (modules, lm) = models(&vm)?;
        let enc = Tensor::randn(0f32, 1.0, (2, 8, 9), &Device::Cpu)?;
        let lens = [8usize, 5];
        let searcher = S2SRNNBeamSearcher {
            modules: modules.clone(),
            lm: Some(lm),
            ctc_lin: None,
            config: BeamSearchConfig {
                beam_size: 4,
                eos_index: 2,
                temperature: 1.25,
                scorer: ScorerConfig {
                    rnnlm: Some((0.5, 1.25)),
                    coverage: Some((1.5, 0.5)),
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        let cpu = searcher.search_with(&enc, &lens, false)?;
        let reference = searcher.search_with(&enc, &lens, true)?;
        assert_eq!(cpu.len(), 2);
        for (a, b) in cpu.iter().zip(&reference) {
            assert_eq!(a.tokens, b.tokens);
            assert!((a.score - b.score).abs() < 1e-4);
        }
        let g = GreedySearchConfig {
            eos_index: 2,
            ..Default::default()
        };
        let greedy = greedy_search(&modules, &enc, &lens, &g)?;
        let greedy_ref =
            super::super::seq2seq::greedy_search_with(&modules, &enc, &lens, &g, true)?;
        assert_eq!(greedy, greedy_ref);
        Ok(())
    }
}
