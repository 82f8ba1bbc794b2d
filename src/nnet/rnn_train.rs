//! One LSTM direction over a whole sequence as a single autograd op, for training on the CPU.
//!
//! Step-by-step candle ops make backpropagation through time quadratic in the sequence length
//! (each step's `narrow` of the input projection gets a full-size zero-padded gradient) and
//! produce one `[4H, H]` weight-gradient product per step. This op runs the recurrence on the
//! host and, in its backward pass, computes every step's gate gradients first, then the
//! recurrent weight gradient as one matrix product over all steps (as torch does). The input
//! projection stays a candle matmul outside, so its gradients come from candle.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::gemm::{matmul_into, storage_f32, View};

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The recurrence of one direction: `xw` `[B, T, 4H]` (input projection plus both biases,
/// gates in PyTorch's order i, f, g, o), `w_hh` `[4H, H]`, zero initial state.
pub(crate) struct LstmSeq {
    pub(crate) reverse: bool,
    /// The final cell state `[B, H]`, set by the forward pass.
    pub(crate) c_last: Arc<Mutex<Option<Vec<f32>>>>,
}

/// Activations of a forward pass: per step (in time order) the gates after their
/// nonlinearities `[B, 4H]`, the cell `[B, H]` and the hidden state `[B, H]`.
struct Trace {
    gates: Vec<f32>,
    cells: Vec<f32>,
    hidden: Vec<f32>,
}

impl LstmSeq {
    fn run(&self, xw: &[f32], w: &[f32], (b, t, h): (usize, usize, usize)) -> Result<Trace> {
        let g4 = 4 * h;
        let mut tr = Trace {
            gates: vec![0f32; b * t * g4],
            cells: vec![0f32; b * t * h],
            hidden: vec![0f32; b * t * h],
        };
        let mut pre = vec![0f32; b * g4];
        let (mut h_prev, mut c_prev) = (vec![0f32; b * h], vec![0f32; b * h]);
        for s in 0..t {
            let step = if self.reverse { t - 1 - s } else { s };
            for bi in 0..b {
                let src = &xw[(bi * t + step) * g4..(bi * t + step + 1) * g4];
                pre[bi * g4..(bi + 1) * g4].copy_from_slice(src);
            }
            if s > 0 {
                // pre += h_prev @ w^T
                let hv = View::rows(&h_prev, b, h, h);
                matmul_into(&mut pre, g4, hv, View::rows(w, g4, h, h).t(), true)?;
            }
            let base = step * b;
            for bi in 0..b {
                let p = &pre[bi * g4..(bi + 1) * g4];
                let gate = &mut tr.gates[(base + bi) * g4..(base + bi + 1) * g4];
                for j in 0..h {
                    let (i, f) = (sigmoid(p[j]), sigmoid(p[h + j]));
                    let (g, o) = (p[2 * h + j].tanh(), sigmoid(p[3 * h + j]));
                    let c = f * c_prev[bi * h + j] + i * g;
                    let hn = o * c.tanh();
                    gate[j] = i;
                    gate[h + j] = f;
                    gate[2 * h + j] = g;
                    gate[3 * h + j] = o;
                    tr.cells[(base + bi) * h + j] = c;
                    tr.hidden[(base + bi) * h + j] = hn;
                }
            }
            h_prev.copy_from_slice(&tr.hidden[base * h..(base + b) * h]);
            c_prev.copy_from_slice(&tr.cells[base * h..(base + b) * h]);
        }
        Ok(tr)
    }
}

impl CustomOp2 for LstmSeq {
    fn name(&self) -> &'static str {
        "lstm-seq"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, t, g4) = l1.shape().dims3()?;
        let h = g4 / 4;
        if l2.shape().dims() != [g4, h] {
            candle_core::bail!("lstm-seq: w_hh {:?} for {g4} gates", l2.shape());
        }
        let tr = self.run(
            storage_f32(s1, l1, "lstm-seq xw")?,
            storage_f32(s2, l2, "lstm-seq w_hh")?,
            (b, t, h),
        )?;
        // [T, B, H] (step-major) -> [B, T, H]
        let mut out = vec![0f32; b * t * h];
        for step in 0..t {
            for bi in 0..b {
                out[(bi * t + step) * h..(bi * t + step + 1) * h]
                    .copy_from_slice(&tr.hidden[(step * b + bi) * h..(step * b + bi + 1) * h]);
            }
        }
        if t > 0 {
            let last = if self.reverse { 0 } else { t - 1 };
            let c = tr.cells[last * b * h..(last + 1) * b * h].to_vec();
            *self
                .c_last
                .lock()
                .map_err(|_| candle_core::Error::Msg("poisoned".into()))? = Some(c);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, t, h))))
    }

    fn bwd(
        &self,
        xw: &Tensor,
        w_hh: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, t, g4) = xw.dims3()?;
        let h = g4 / 4;
        let xs = xw.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let w = w_hh.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let dy = grad_res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        // The forward again, keeping the activations (cheaper than holding them for every op).
        let tr = self.run(&xs, &w, (b, t, h))?;
        let mut dgates = vec![0f32; t * b * g4]; // step-major, like the trace
        let (mut dh_next, mut dc_next) = (vec![0f32; b * h], vec![0f32; b * h]);
        for s in (0..t).rev() {
            let step = if self.reverse { t - 1 - s } else { s };
            let prev = (s > 0).then(|| if self.reverse { step + 1 } else { step - 1 });
            let base = step * b;
            for bi in 0..b {
                let gate = &tr.gates[(base + bi) * g4..(base + bi + 1) * g4];
                let dg = &mut dgates[(base + bi) * g4..(base + bi + 1) * g4];
                for j in 0..h {
                    let (i, f, g, o) = (gate[j], gate[h + j], gate[2 * h + j], gate[3 * h + j]);
                    let c = tr.cells[(base + bi) * h + j];
                    let c_prev = prev.map_or(0.0, |p| tr.cells[(p * b + bi) * h + j]);
                    let dh = dy[(bi * t + step) * h + j] + dh_next[bi * h + j];
                    let tc = c.tanh();
                    let dc = dh * o * (1.0 - tc * tc) + dc_next[bi * h + j];
                    dg[j] = dc * g * i * (1.0 - i);
                    dg[h + j] = dc * c_prev * f * (1.0 - f);
                    dg[2 * h + j] = dc * i * (1.0 - g * g);
                    dg[3 * h + j] = dh * tc * o * (1.0 - o);
                    dc_next[bi * h + j] = dc * f;
                }
            }
            // dh_prev = dgates_t @ w_hh
            let dgv = View::rows(&dgates[base * g4..(base + b) * g4], b, g4, g4);
            matmul_into(&mut dh_next, h, dgv, View::rows(&w, g4, h, h), false)?;
        }
        // dW_hh = sum over steps of dgates_t^T h_{t-1}: one product over all steps but the
        // first processed (whose previous state is zero).
        let mut dw = vec![0f32; g4 * h];
        if t > 1 {
            // Pair step `step` with the hidden state of the step processed before it.
            let (dg_rows, h_rows): (&[f32], &[f32]) = if self.reverse {
                (&dgates[..(t - 1) * b * g4], &tr.hidden[b * h..])
            } else {
                (&dgates[b * g4..], &tr.hidden[..(t - 1) * b * h])
            };
            let n = (t - 1) * b;
            let a = View::rows(dg_rows, n, g4, g4).t();
            matmul_into(&mut dw, h, a, View::rows(h_rows, n, h, h), false)?;
        }
        // dxw back to [B, T, 4H].
        let mut dxw = vec![0f32; b * t * g4];
        for step in 0..t {
            for bi in 0..b {
                dxw[(bi * t + step) * g4..(bi * t + step + 1) * g4]
                    .copy_from_slice(&dgates[(step * b + bi) * g4..(step * b + bi + 1) * g4]);
            }
        }
        let dev = xw.device();
        Ok((
            Some(Tensor::from_vec(dxw, (b, t, g4), dev)?),
            Some(Tensor::from_vec(dw, (g4, h), dev)?),
        ))
    }
}
