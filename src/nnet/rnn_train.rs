//! One LSTM layer (one or both directions) over a whole sequence as a single autograd op, for
//! training on the CPU.
//!
//! Step-by-step candle ops make backpropagation through time quadratic in the sequence length
//! (each step's `narrow` of the input projection gets a full-size zero-padded gradient) and
//! produce one `[4H, H]` weight-gradient product per step. This op runs the recurrence on the
//! host and, in its backward pass, computes every step's gate gradients first, then the
//! recurrent weight gradient as one matrix product over all steps (as torch does). The input
//! projection stays a candle matmul outside, so its gradients come from candle.
//!
//! Layout: the per-step products are feature-major (`W [4H, H] x h^T [H, B]`), the layout in
//! which the `gemm` crate runs near peak for a small batch (row-major `[B, 4H]` results made it
//! re-pack the weight every step, at a third of the speed). The forward pass keeps its
//! activations (a few MB per direction) for the backward pass instead of running again, and the
//! two directions of a bidirectional layer run side by side, one thread each.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::gemm::{lock, matmul_into_with, storage_f32, transpose, View};
use crate::fastmath::{self, simd_dispatch};

/// The recurrence of one layer: `xw` `[B, T, D*4H]` (for each direction `d` its input
/// projection plus both biases in columns `d*4H..(d+1)*4H`, gates in PyTorch's order
/// i, f, g, o) and `w_hh` `[D, 4H, H]`, from a zero state; the output is `[B, T, D*H]` (the
/// directions side by side, as `torch.nn.LSTM` returns them). Direction 1 runs backwards in
/// time.
#[derive(Default)]
pub(crate) struct LstmLayerSeq {
    /// Each direction's final cell state, `[D, B, H]`, set by the forward pass.
    pub(crate) c_last: Arc<Mutex<Option<Vec<f32>>>>,
    /// The forward pass's activations, taken by the backward pass.
    trace: Arc<Mutex<Option<Vec<Trace>>>>,
}

/// Activations of one direction, step-major (`[T, rows, B]`, indexed by time, not by the
/// order of processing): the gates after their nonlinearities (`rows = 4H`), the cell and
/// the hidden state (`rows = H`).
struct Trace {
    gates: Vec<f32>,
    cells: Vec<f32>,
    hidden: Vec<f32>,
}

/// Sizes: batch, time, hidden, directions.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    d: usize,
}

impl Dims {
    /// The time index of the `s`-th step processed by direction `dir`.
    fn time(&self, dir: usize, s: usize) -> usize {
        if dir == 1 {
            self.t - 1 - s
        } else {
            s
        }
    }
}

/// Runs `f(direction, threads)` for each direction of a recurrent layer: side by side on one
/// thread each when there are two (each step's product is too small to split well), else on
/// all threads. Shared by the eval kernels and this training op.
pub(crate) fn per_direction<R: Send>(
    d: usize,
    f: impl Fn(usize, usize) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    if d == 2 && candle_core::utils::get_num_threads() > 1 {
        let (a, b) = rayon::join(|| f(0, 1), || f(1, 1));
        Ok(vec![a?, b?])
    } else {
        let threads = candle_core::utils::get_num_threads();
        (0..d).map(|dir| f(dir, threads)).collect()
    }
}

simd_dispatch!(fn lstm_forward_rows(g: &mut [f32], c_prev: Option<&[f32]>, c: &mut [f32],
    h: &mut [f32]) => lstm_forward_rows_generic);

/// The LSTM update of one step on feature-major pre-activations `g` (`4n` values, gate `k` in
/// `k*n..(k+1)*n`); `g` becomes the activations, `c`, `h` the new state.
#[inline(always)]
fn lstm_forward_rows_generic(g: &mut [f32], c_prev: Option<&[f32]>, c: &mut [f32], h: &mut [f32]) {
    // Two loops, with and without a previous cell, so that neither tests an Option per
    // element (that kept the loop from vectorising).
    match c_prev {
        Some(cp) => lstm_forward_loop::<true>(g, cp, c, h),
        None => lstm_forward_loop::<false>(g, &[], c, h),
    }
}

#[inline(always)]
fn lstm_forward_loop<const PREV: bool>(g: &mut [f32], cp: &[f32], c: &mut [f32], h: &mut [f32]) {
    let sig = fastmath::sigmoid;
    let n = c.len();
    let h = &mut h[..n];
    let (gi, rest) = g.split_at_mut(n);
    let (gf, rest) = rest.split_at_mut(n);
    let (gg, go) = rest.split_at_mut(n);
    let go = &mut go[..n];
    let cp = if PREV { &cp[..n] } else { cp };
    for j in 0..n {
        let (i, f) = (sig(gi[j]), sig(gf[j]));
        let (gv, o) = (fastmath::tanh(gg[j]), sig(go[j]));
        let cj = i * gv + if PREV { f * cp[j] } else { 0.0 };
        c[j] = cj;
        h[j] = o * fastmath::tanh(cj);
        (gi[j], gf[j], gg[j], go[j]) = (i, f, gv, o);
    }
}

simd_dispatch!(fn lstm_backward_rows(g: &[f32], c: &[f32], c_prev: Option<&[f32]>,
    dh: &[f32], dc_next: &mut [f32], dg: &mut [f32]) => lstm_backward_rows_generic);

/// The gate gradients of one step: `g` the activations (`4n`), `c` the cell, `dh` the
/// gradient reaching the hidden state; `dc_next` holds the gradient reaching the cell from the
/// next step and becomes the one passed to the previous step.
#[inline(always)]
fn lstm_backward_rows_generic(
    g: &[f32],
    c: &[f32],
    c_prev: Option<&[f32]>,
    dh: &[f32],
    dc_next: &mut [f32],
    dg: &mut [f32],
) {
    match c_prev {
        Some(cp) => lstm_backward_loop::<true>(g, c, cp, dh, dc_next, dg),
        None => lstm_backward_loop::<false>(g, c, &[], dh, dc_next, dg),
    }
}

#[inline(always)]
fn lstm_backward_loop<const PREV: bool>(
    g: &[f32],
    c: &[f32],
    cp: &[f32],
    dh: &[f32],
    dc_next: &mut [f32],
    dg: &mut [f32],
) {
    let n = c.len();
    let (gi, gf, gg, go) = (&g[..n], &g[n..2 * n], &g[2 * n..3 * n], &g[3 * n..4 * n]);
    let (dh, dc_next) = (&dh[..n], &mut dc_next[..n]);
    let (di, rest) = dg.split_at_mut(n);
    let (df, rest) = rest.split_at_mut(n);
    let (dgg, dgo) = rest.split_at_mut(n);
    let dgo = &mut dgo[..n];
    let cp = if PREV { &cp[..n] } else { cp };
    for j in 0..n {
        let (i, f, gv, o) = (gi[j], gf[j], gg[j], go[j]);
        let tc = fastmath::tanh(c[j]);
        let dc = dh[j] * o * (1.0 - tc * tc) + dc_next[j];
        di[j] = dc * gv * i * (1.0 - i);
        df[j] = if PREV {
            dc * cp[j] * f * (1.0 - f)
        } else {
            0.0
        };
        dgg[j] = dc * i * (1.0 - gv * gv);
        dgo[j] = dh[j] * tc * o * (1.0 - o);
        dc_next[j] = dc * f;
    }
}

impl LstmLayerSeq {
    /// The forward recurrence of direction `dir`.
    fn run(&self, xw: &[f32], w: &[f32], dm: Dims, dir: usize, threads: usize) -> Result<Trace> {
        let Dims { b, t, h, d } = dm;
        let (g4, hb) = (4 * h, h * b);
        let mut tr = Trace {
            gates: vec![0f32; t * g4 * b],
            cells: vec![0f32; t * hb],
            hidden: vec![0f32; t * hb],
        };
        let w = View::rows(&w[dir * g4 * h..(dir + 1) * g4 * h], g4, h, h);
        let mut h_prev = vec![0f32; hb];
        for s in 0..t {
            let time = dm.time(dir, s);
            let gates = &mut tr.gates[time * g4 * b..(time + 1) * g4 * b];
            if s > 0 {
                matmul_into_with(gates, b, w, View::rows(&h_prev, h, b, b), false, threads)?;
            }
            for bi in 0..b {
                let row = (bi * t + time) * d * g4 + dir * g4;
                for (r, &v) in xw[row..row + g4].iter().enumerate() {
                    gates[r * b + bi] += v;
                }
            }
            let (before, rest) = tr.cells.split_at_mut(time * hb);
            let (c, after) = rest.split_at_mut(hb);
            let c_prev: Option<&[f32]> = (s > 0).then(|| {
                if dir == 1 {
                    &after[..hb]
                } else {
                    &before[(time - 1) * hb..]
                }
            });
            let hid = &mut tr.hidden[time * hb..(time + 1) * hb];
            lstm_forward_rows(gates, c_prev, c, hid);
            h_prev.copy_from_slice(hid);
        }
        Ok(tr)
    }

    /// The backward pass of direction `dir`: the gradients of its columns of `xw`
    /// (step-major `[T, 4H, B]`) and of its `w_hh` `[4H, H]`.
    fn grad(
        tr: &Trace,
        dy: &[f32],
        w: &[f32],
        dm: Dims,
        dir: usize,
        threads: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let Dims { b, t, h, d } = dm;
        let (g4, hb) = (4 * h, h * b);
        // w_hh^T as a row-major copy: the product with a transposed view ran at half the speed.
        let wt = transpose(&w[dir * g4 * h..(dir + 1) * g4 * h], g4, h);
        let w = View::rows(&wt, h, g4, g4);
        let mut dgates = vec![0f32; t * g4 * b];
        let (mut dh, mut dh_next, mut dc) = (vec![0f32; hb], vec![0f32; hb], vec![0f32; hb]);
        for s in (0..t).rev() {
            let time = dm.time(dir, s);
            for (j, row) in dh.chunks_mut(b).enumerate() {
                for (bi, v) in row.iter_mut().enumerate() {
                    *v = dy[(bi * t + time) * d * h + dir * h + j] + dh_next[j * b + bi];
                }
            }
            let prev_time = (s > 0).then(|| dm.time(dir, s - 1));
            let c_prev = prev_time.map(|p| &tr.cells[p * hb..(p + 1) * hb]);
            let dg = &mut dgates[time * g4 * b..(time + 1) * g4 * b];
            lstm_backward_rows(
                &tr.gates[time * g4 * b..(time + 1) * g4 * b],
                &tr.cells[time * hb..(time + 1) * hb],
                c_prev,
                &dh,
                &mut dc,
                dg,
            );
            if s > 0 {
                // dh_prev = w_hh^T dgates
                matmul_into_with(&mut dh_next, b, w, View::rows(dg, g4, b, b), false, threads)?;
            }
        }
        // dW_hh = sum over steps of dgates_t h_prev^T: one product over every step but the
        // first processed (whose previous state is zero), its factors gathered into
        // `[4H, N]` and `[N, H]` with N = (T - 1) B.
        let mut dw = vec![0f32; g4 * h];
        if t > 1 {
            let n = (t - 1) * b;
            let (mut a, mut hm) = (vec![0f32; g4 * n], vec![0f32; n * h]);
            for s in 1..t {
                let (time, prev) = (dm.time(dir, s), dm.time(dir, s - 1));
                let col = (s - 1) * b;
                let dg = &dgates[time * g4 * b..(time + 1) * g4 * b];
                for (r, src) in dg.chunks(b).enumerate() {
                    a[r * n + col..r * n + col + b].copy_from_slice(src);
                }
                let hp = &tr.hidden[prev * hb..(prev + 1) * hb];
                for (j, src) in hp.chunks(b).enumerate() {
                    for (bi, &v) in src.iter().enumerate() {
                        hm[(col + bi) * h + j] = v;
                    }
                }
            }
            matmul_into_with(
                &mut dw,
                h,
                View::rows(&a, g4, n, n),
                View::rows(&hm, n, h, h),
                false,
                threads,
            )?;
        }
        Ok((dgates, dw))
    }

    fn dims(l1: &Layout, l2: &Layout) -> Result<Dims> {
        let (b, t, cols) = l1.shape().dims3()?;
        let (d, g4, h) = l2.shape().dims3()?;
        if g4 != 4 * h || cols != d * g4 || !(1..=2).contains(&d) {
            candle_core::bail!(
                "lstm-layer: xw {:?} does not fit w_hh {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        Ok(Dims { b, t, h, d })
    }
}

impl CustomOp2 for LstmLayerSeq {
    fn name(&self) -> &'static str {
        "lstm-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = Self::dims(l1, l2)?;
        let Dims { b, t, h, d } = dm;
        let xw = storage_f32(s1, l1, "lstm-layer xw")?;
        let w = storage_f32(s2, l2, "lstm-layer w_hh")?;
        let traces = per_direction(d, |dir, threads| self.run(xw, w, dm, dir, threads))?;
        let hb = h * b;
        let mut out = vec![0f32; b * t * d * h];
        let mut c_last = vec![0f32; d * b * h];
        for (dir, tr) in traces.iter().enumerate() {
            for time in 0..t {
                let hid = &tr.hidden[time * hb..(time + 1) * hb];
                for (j, row) in hid.chunks(b).enumerate() {
                    for (bi, &v) in row.iter().enumerate() {
                        out[(bi * t + time) * d * h + dir * h + j] = v;
                    }
                }
            }
            if t > 0 {
                let last = dm.time(dir, t - 1);
                let c = &tr.cells[last * hb..(last + 1) * hb];
                for (j, row) in c.chunks(b).enumerate() {
                    for (bi, &v) in row.iter().enumerate() {
                        c_last[(dir * b + bi) * h + j] = v;
                    }
                }
            }
        }
        *lock(&self.c_last, "lstm-layer")? = Some(c_last);
        *lock(&self.trace, "lstm-layer")? = Some(traces);
        Ok((CpuStorage::F32(out), Shape::from((b, t, d * h))))
    }

    fn bwd(
        &self,
        xw: &Tensor,
        w_hh: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, t, _) = xw.dims3()?;
        let (d, g4, h) = w_hh.dims3()?;
        let dm = Dims { b, t, h, d };
        let w = w_hh.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let dy = grad_res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let traces = match lock(&self.trace, "lstm-layer")?.take() {
            Some(tr) => tr,
            // A second backward pass through the same graph: run the forward again.
            None => {
                let xs = xw.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                per_direction(d, |dir, threads| self.run(&xs, &w, dm, dir, threads))?
            }
        };
        let grads = per_direction(d, |dir, threads| {
            Self::grad(&traces[dir], &dy, &w, dm, dir, threads)
        })?;
        drop(traces);
        let mut dxw = vec![0f32; b * t * d * g4];
        let mut dw = Vec::with_capacity(d * g4 * h);
        for (dir, (dg, dwd)) in grads.into_iter().enumerate() {
            for time in 0..t {
                let src = &dg[time * g4 * b..(time + 1) * g4 * b];
                for (r, row) in src.chunks(b).enumerate() {
                    for (bi, &v) in row.iter().enumerate() {
                        dxw[(bi * t + time) * d * g4 + dir * g4 + r] = v;
                    }
                }
            }
            dw.extend_from_slice(&dwd);
        }
        let dev = xw.device();
        Ok((
            Some(Tensor::from_vec(dxw, (b, t, d * g4), dev)?),
            Some(Tensor::from_vec(dw, (d, g4, h), dev)?),
        ))
    }
}
