//! One recurrent step in eval mode on the CPU, for searches that advance many hypotheses one
//! token at a time (beam search's decoder GRU and RNNLM LSTM).
//!
//! Activations are feature-major (`[features, hypotheses]`, see [`super::gemm`]), and the
//! previous state is given with the [`Parents`] map instead of being permuted first: siblings
//! (hypotheses continuing the same parent) share their parent's state, so the recurrent
//! product `W_hh h` runs once per distinct parent and is gathered. The results equal
//! [`super::rnn::Lstm`] and [`super::rnn::GruCellStack`] on the permuted state up to float
//! rounding (tested against them).

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::fused::{f32_vec, gru_update_fm, lstm_update_fm};
use super::gemm::{gather_cols, matmul_into, matmul_into_with, wxt, HostF32, Parents, View};
use super::rnn::{GruCell, LstmCell};
use crate::fastmath;

/// A bias vector on the host: the sum of the given tensors (`None` entries skipped).
fn host_bias(parts: &[Option<&Tensor>], len: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; len];
    for t in parts.iter().flatten() {
        let v = f32_vec(t)?;
        if v.len() != len {
            candle_core::bail!("recurrent step: bias of {} values, expected {len}", v.len());
        }
        out.iter_mut().zip(v).for_each(|(o, x)| *o += x);
    }
    Ok(out)
}

/// `g[r, j] += s[r, slot[j]] + bias[r]` for feature-major `g` `[rows, b]` and `s`
/// `[rows, u]` (`s` absent: the bias alone).
fn add_gathered(g: &mut [f32], b: usize, s: Option<(&[f32], usize)>, slot: &[usize], bias: &[f32]) {
    const ROWS: usize = 64;
    g.par_chunks_mut(ROWS * b)
        .enumerate()
        .for_each(|(ci, chunk)| {
            for (ri, row) in chunk.chunks_mut(b).enumerate() {
                let r = ci * ROWS + ri;
                match s {
                    Some((s, u)) => {
                        let src = &s[r * u..(r + 1) * u];
                        for (v, &k) in row.iter_mut().zip(slot) {
                            *v += src[k] + bias[r];
                        }
                    }
                    None => row.iter_mut().for_each(|v| *v += bias[r]),
                }
            }
        });
}

/// The previous state of one layer, `[H, Bp]` feature-major, with who continues it.
pub(crate) struct Prev<'s> {
    /// Hidden state `[H, Bp]`.
    pub h: &'s [f32],
    /// Cell state `[H, Bp]` (LSTM only).
    pub c: Option<&'s [f32]>,
    /// Which previous column each hypothesis continues.
    pub parents: &'s Parents,
}

impl Prev<'_> {
    fn cols(&self, hidden: usize) -> usize {
        self.h.len() / hidden.max(1)
    }
}

/// One LSTM layer (one direction), borrowed from an [`super::rnn::Lstm`].
pub(crate) struct LstmLayerStep<'a> {
    w_ih: HostF32<'a>,
    w_hh: HostF32<'a>,
    bias: Vec<f32>,
    input: usize,
    hidden: usize,
}

impl<'a> LstmLayerStep<'a> {
    pub fn new(cell: &'a LstmCell) -> Result<Self> {
        let (g4, input) = cell.w_ih.dims2()?;
        let hidden = g4 / 4;
        let bias = cell.bias.as_ref();
        Ok(Self {
            w_ih: HostF32::new(&cell.w_ih, "LSTM weight_ih")?,
            w_hh: HostF32::new(&cell.w_hh, "LSTM weight_hh")?,
            bias: host_bias(&[bias.map(|b| &b.0), bias.map(|b| &b.1)], g4)?,
            input,
            hidden,
        })
    }

    /// The new `(h, c)` `[H, B]` for inputs `xt` `[I, B]` from `prev` (zeros when `None`).
    pub fn step(&self, xt: &[f32], b: usize, prev: Option<&Prev>) -> Result<(Vec<f32>, Vec<f32>)> {
        let (i, hd) = (self.input, self.hidden);
        let mut gates = wxt(self.w_ih.slice(), i, 4 * hd, xt, i, b)?;
        let c0 = match prev {
            Some(p) => {
                let bp = p.cols(hd);
                let u = p.parents.unique.len();
                let hu = gather_cols(p.h, bp, &p.parents.unique);
                let gh = wxt(self.w_hh.slice(), hd, 4 * hd, &hu, hd, u)?;
                add_gathered(&mut gates, b, Some((&gh, u)), &p.parents.slot, &self.bias);
                match p.c {
                    Some(c) => gather_cols(c, bp, &p.parents.parent),
                    None => candle_core::bail!("LSTM step: previous cell state missing"),
                }
            }
            None => {
                add_gathered(&mut gates, b, None, &[], &self.bias);
                vec![0f32; hd * b]
            }
        };
        let (mut h, mut c) = (vec![0f32; hd * b], vec![0f32; hd * b]);
        lstm_update_fm(&gates, &c0, &mut h, &mut c);
        Ok((h, c))
    }
}

/// One GRU cell, borrowed from a [`super::rnn::GruCellStack`].
pub(crate) struct GruLayerStep<'a> {
    w_ih: HostF32<'a>,
    w_hh: HostF32<'a>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
    input: usize,
    hidden: usize,
}

impl<'a> GruLayerStep<'a> {
    pub fn new(cell: &'a GruCell) -> Result<Self> {
        let (g3, input) = cell.w_ih.dims2()?;
        Ok(Self {
            w_ih: HostF32::new(&cell.w_ih, "GRU weight_ih")?,
            w_hh: HostF32::new(&cell.w_hh, "GRU weight_hh")?,
            b_ih: host_bias(&[Some(&cell.b_ih)], g3)?,
            b_hh: host_bias(&[Some(&cell.b_hh)], g3)?,
            input,
            hidden: g3 / 3,
        })
    }

    /// The new `h` `[H, B]`. The input is `[own; shared]`: `own` `[I1, B]` differs per
    /// hypothesis, `shared` `[I - I1, U]` (if any) belongs to the distinct parents
    /// (`prev.parents.unique`), such as the attention context a parent computed.
    pub fn step(
        &self,
        own: &[f32],
        b: usize,
        shared: Option<&[f32]>,
        prev: &Prev,
    ) -> Result<Vec<f32>> {
        let (i, hd) = (self.input, self.hidden);
        let i_own = own.len().checked_div(b).unwrap_or(0);
        let (u, slot) = (prev.parents.unique.len(), &prev.parents.slot);
        let w_ih = self.w_ih.slice();
        let mut gi = wxt(w_ih, i, 3 * hd, own, i_own, b)?;
        match shared {
            Some(xs) => {
                let w = View::rows(&w_ih[i_own..], 3 * hd, i - i_own, i);
                let mut s = vec![0f32; 3 * hd * u];
                matmul_into(&mut s, u, w, View::rows(xs, i - i_own, u, u), false)?;
                add_gathered(&mut gi, b, Some((&s, u)), slot, &self.b_ih);
            }
            None if i_own == i => add_gathered(&mut gi, b, None, &[], &self.b_ih),
            None => candle_core::bail!("GRU step: input of {i_own} features, expected {i}"),
        }
        let bp = prev.cols(hd);
        let hu = gather_cols(prev.h, bp, &prev.parents.unique);
        let ghu = wxt(self.w_hh.slice(), hd, 3 * hd, &hu, hd, u)?;
        let mut gh = vec![0f32; 3 * hd * b];
        add_gathered(&mut gh, b, Some((&ghu, u)), slot, &self.b_hh);
        let h0 = gather_cols(prev.h, bp, &prev.parents.parent);
        let mut h = vec![0f32; hd * b];
        gru_update_fm(&gi, &gh, &h0, &mut h);
        Ok(h)
    }
}

/// `log_softmax(x / temperature)` over the features of feature-major `x` `[V, B]`, returned
/// row-major `[B, V]` (the beam search's layout).
pub(crate) fn log_softmax_cols(x: &[f32], b: usize, temperature: f32) -> Vec<f32> {
    let v = x.len().checked_div(b).unwrap_or(0);
    let inv_t = 1.0 / temperature;
    let mut max = vec![f32::NEG_INFINITY; b];
    for row in x.chunks(b) {
        max.iter_mut()
            .zip(row)
            .for_each(|(m, &x)| *m = m.max(x * inv_t));
    }
    let mut sum = vec![0f32; b];
    for row in x.chunks(b) {
        for ((s, &x), &m) in sum.iter_mut().zip(row).zip(&max) {
            *s += fastmath::exp(x * inv_t - m);
        }
    }
    let shift: Vec<f32> = max.iter().zip(&sum).map(|(m, s)| m + s.ln()).collect();
    let mut out = vec![0f32; b * v];
    for (f, row) in x.chunks(b).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            out[j * v + f] = x * inv_t - shift[j];
        }
    }
    out
}

/// Layer normalization over the features of feature-major `x` `[F, B]` in place, with
/// per-feature `gamma`, `beta` (`torch.nn.LayerNorm`: biased variance, `eps` inside the root).
pub(crate) fn layer_norm_cols(x: &mut [f32], b: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    let f = gamma.len();
    let mut mean = vec![0f32; b];
    for row in x.chunks(b) {
        mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x);
    }
    mean.iter_mut().for_each(|m| *m /= f as f32);
    let mut var = vec![0f32; b];
    for row in x.chunks(b) {
        for ((s, &x), &m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (x - m) * (x - m);
        }
    }
    let inv: Vec<f32> = var
        .iter()
        .map(|s| 1.0 / (s / f as f32 + eps).sqrt())
        .collect();
    for (r, row) in x.chunks_mut(b).enumerate() {
        for ((x, &m), &i) in row.iter_mut().zip(&mean).zip(&inv) {
            *x = (*x - m) * i * gamma[r] + beta[r];
        }
    }
}

/// An LSTM direction over a whole sequence in eval mode on the CPU: `x` `[B, T, I]` from
/// `(h0, c0)` `[B, H]`, forwards or backwards in time; returns the outputs `[B, T, H]` and the
/// final state, as [`super::rnn::Lstm`]'s cells do. The input projection of every step is one
/// GEMM; each step's recurrent product runs on `threads` threads: one lets the two directions
/// of a bidirectional layer run side by side (at batch 1 the product is memory-bound and two
/// cores stream two weights twice as fast as one).
pub(crate) fn lstm_sequence(
    cell: &LstmCell,
    x: &Tensor,
    (h0, c0): (&Tensor, &Tensor),
    reverse: bool,
    threads: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, t_len, _) = x.dims3()?;
    // Before borrowing the weights: candle's op reads `w_ih` under its own lock.
    let xw = super::linear(x, &cell.w_ih, None)?; // [B, T, 4H]
    let xw = xw.flatten_all()?.to_vec1::<f32>()?;
    let step = LstmLayerStep::new(cell)?;
    let hd = step.hidden;
    let mut h = h0.t()?.flatten_all()?.to_vec1::<f32>()?; // [H, B]
    let mut c = c0.t()?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; b * t_len * hd];
    let mut gates = vec![0f32; 4 * hd * b];
    let (mut hn, mut cn) = (vec![0f32; hd * b], vec![0f32; hd * b]);
    let w_hh = View::rows(step.w_hh.slice(), 4 * hd, hd, hd);
    for s in 0..t_len {
        let t = if reverse { t_len - 1 - s } else { s };
        matmul_into_with(
            &mut gates,
            b,
            w_hh,
            View::rows(&h, hd, b, b),
            false,
            threads,
        )?;
        for (r, row) in gates.chunks_mut(b).enumerate() {
            for (j, g) in row.iter_mut().enumerate() {
                *g += xw[(j * t_len + t) * 4 * hd + r] + step.bias[r];
            }
        }
        lstm_update_fm(&gates, &c, &mut hn, &mut cn);
        std::mem::swap(&mut h, &mut hn);
        std::mem::swap(&mut c, &mut cn);
        for (f, row) in h.chunks(b).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                out[(j * t_len + t) * hd + f] = v;
            }
        }
    }
    let dev = x.device();
    let fm = |v: Vec<f32>| Tensor::from_vec(v, (hd, b), dev)?.t()?.contiguous();
    Ok((Tensor::from_vec(out, (b, t_len, hd), dev)?, fm(h)?, fm(c)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nnet::gemm::max_abs_diff;
    use crate::nnet::rnn::{GruCellStack, Lstm, LstmState};
    use candle_core::{DType, Device, D};
    use candle_nn::{VarBuilder, VarMap};

    fn fm(t: &Tensor) -> Vec<f32> {
        // [B, F] -> feature-major [F, B]
        t.t().unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Stepping with a parent map equals permuting the state and running candle's layers.
    #[test]
    fn steps_with_shared_parents_equal_permuted_layers() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let (bp, b, i, hd) = (4usize, 6usize, 5usize, 7usize);
        let parents = Parents::new(vec![2, 2, 0, 3, 2, 0]);
        let idx = Tensor::new(&[2u32, 2, 0, 3, 2, 0], &dev)?;
        let x = Tensor::randn(0f32, 1.0, (b, i), &dev)?;

        let lstm = Lstm::new(i, hd, 1, false, 0.0, vb.pp("lstm"))?;
        let h = Tensor::randn(0f32, 1.0, (1, bp, hd), &dev)?;
        let c = Tensor::randn(0f32, 1.0, (1, bp, hd), &dev)?;
        let st = LstmState {
            h: h.clone(),
            c: c.clone(),
        }
        .index_select(&idx)?;
        let (_, want) = lstm.forward(&x.unsqueeze(1)?, Some(&st), true)?;
        let step = LstmLayerStep::new(&lstm.layers[0][0])?;
        // The unpermuted state, as the search holds it.
        let (hp, cp) = (fm(&h.get(0)?), fm(&c.get(0)?));
        let prev = Prev {
            h: &hp,
            c: Some(&cp),
            parents: &parents,
        };
        let (hn, cn) = step.step(&fm(&x), b, Some(&prev))?;
        assert!(max_abs_diff(&hn, &fm(&want.h.get(0)?)) < 1e-5);
        assert!(max_abs_diff(&cn, &fm(&want.c.get(0)?)) < 1e-5);
        // No previous state: zeros.
        let (hz, _) = step.step(&fm(&x), b, None)?;
        let (_, want0) = lstm.forward(&x.unsqueeze(1)?, None, true)?;
        assert!(max_abs_diff(&hz, &fm(&want0.h.get(0)?)) < 1e-5);

        // GRU with an input whose last 3 features are shared by siblings.
        let gru = GruCellStack::new(i + 3, hd, 1, 0.0, vb.pp("gru"))?;
        let shared = Tensor::randn(0f32, 1.0, (bp, 3), &dev)?;
        let hg = Tensor::randn(0f32, 1.0, (1, bp, hd), &dev)?;
        let inp = Tensor::cat(&[&x, &shared.index_select(&idx, 0)?], D::Minus1)?;
        let (want, _) = gru.forward(&inp, Some(&hg.index_select(&idx, 1)?), true)?;
        let step = GruLayerStep::new(&gru.cells[0])?;
        let su = gather_cols(&fm(&shared), bp, &parents.unique);
        let hgp = fm(&hg.get(0)?);
        let prev = Prev {
            h: &hgp,
            c: None,
            parents: &parents,
        };
        let got = step.step(&fm(&x), b, Some(&su), &prev)?;
        assert!(max_abs_diff(&got, &fm(&want)) < 1e-5);
        Ok(())
    }
}
