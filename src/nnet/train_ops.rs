//! Elementwise training ops with their backward pass written out, for the CPU: candle composes
//! ReLU's backward from four ops, LeakyReLU from five and LayerNorm from a dozen, each allocating a full-size tensor in
//! the forward and more in the backward (on CRDNN's `[8, 319, 40, 128]` activations that is
//! most of a fine-tuning step). Both are tested against the composed candle ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{storage_f32 as host, HostF32};
use crate::fastmath::simd_dispatch;

/// `relu(x)` with autograd through one op (CPU f32; elsewhere candle's `relu`): candle's
/// backward pass builds a zero tensor, a comparison (single-threaded), a cast and a product,
/// four full-size passes, on the SepFormer's largest tensors (the feed-forward's hidden layer).
/// The forward values are candle's (`max(x, 0)`); the gradient is torch's (passed where the
/// output is positive, so 0 at x = 0, where candle passes it).
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// let x = Var::new(&[-1f32, 0.0, 2.0], &Device::Cpu)?;
/// let y = voxbrain::nnet::train_ops::relu(x.as_tensor())?;
/// assert_eq!(y.to_vec1::<f32>()?, vec![0.0, 0.0, 2.0]);
/// let g = y.sum_all()?.backward()?;
/// assert_eq!(g.get(&x).unwrap().to_vec1::<f32>()?, vec![0.0, 0.0, 1.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Relu)
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu-train"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = host(s, l, "relu")?;
        let y: Vec<f32> = x
            .par_iter()
            .with_min_len(4096)
            .map(|&v| v.max(0.0))
            .collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (yh, gh) = (
            HostF32::new(res, "relu output")?,
            HostF32::new(&grad, "relu gradient")?,
        );
        let d: Vec<f32> = yh
            .slice()
            .par_iter()
            .zip(gh.slice().par_iter())
            .with_min_len(4096)
            .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
            .collect();
        Ok(Some(Tensor::from_vec(d, arg.shape(), arg.device())?))
    }
}

/// `leaky_relu(x, slope)` with autograd through one op (CPU f32; elsewhere candle's).
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return candle_nn::ops::leaky_relu(x, slope);
    }
    x.contiguous()?.apply_op1(LeakyRelu(slope as f32))
}

struct LeakyRelu(f32);

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "leaky-relu-train"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = host(s, l, "leaky-relu")?;
        let a = self.0;
        let y: Vec<f32> = x
            .par_iter()
            .with_min_len(4096)
            .map(|&v| if v > 0.0 { v } else { a * v })
            .collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (xh, gh) = (
            HostF32::new(arg, "leaky-relu input")?,
            HostF32::new(&grad, "leaky-relu gradient")?,
        );
        let a = self.0;
        let d: Vec<f32> = xh
            .slice()
            .par_iter()
            .zip(gh.slice().par_iter())
            .with_min_len(4096)
            .map(|(&v, &g)| if v > 0.0 { g } else { a * g })
            .collect();
        Ok(Some(Tensor::from_vec(d, arg.shape(), arg.device())?))
    }
}

/// Layer normalization over the last `n = weight.elem_count()` values of each row, with
/// `weight` and `bias` of any shape of `n` elements (CPU f32 only; callers fall back).
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    layer_norm_act(x, weight, bias, eps, None)
}

/// [`layer_norm`] followed by `leaky_relu(_, slope)` when `slope` is given, as one op: the
/// normalized activations are neither kept for the backward pass nor given a gradient of
/// their own (CRDNN's CNN blocks apply the two back to back on their largest tensors).
pub(crate) fn layer_norm_act(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f32,
    slope: Option<f32>,
) -> Result<Tensor> {
    let n = weight.elem_count();
    let dims = x.dims().to_vec();
    let x2 = x.contiguous()?.reshape(((), n))?;
    let w = weight.flatten_all()?;
    let b = bias.flatten_all()?;
    x2.apply_op3(&w, &b, LayerNormOp { eps, slope })?
        .reshape(dims)
}

struct LayerNormOp {
    eps: f32,
    /// LeakyReLU's negative slope, when the activation is fused in.
    slope: Option<f32>,
}

/// Per row: mean and 1/std (biased variance, as torch; two passes, each summed in 8
/// independent lanes so that it vectorizes).
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lanes_sum(row, |v| v) / n;
    let var = lanes_sum(row, |v| (v - mean) * (v - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `sum(f(v))` over `row` in 8 lanes, then the lanes and the tail.
#[inline(always)]
fn lanes_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += f(c[i]);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f32>()
}

/// `sum(a * b)` in 8 lanes.
#[inline(always)]
fn lanes_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Rows per task of the backward pass: their `dw`/`db` are summed in f32, then added to the
/// f64 totals (a serial f32 sum over every row of a batch would lose digits).
const LN_BLOCK_ROWS: usize = 32;

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm-train"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (
            host(s1, l1, "layer-norm")?,
            host(s2, l2, "layer-norm")?,
            host(s3, l3, "layer-norm")?,
        );
        let n = w.len();
        let mut y = vec![0f32; x.len()];
        let block = n * LN_BLOCK_ROWS;
        y.par_chunks_mut(block)
            .zip(x.par_chunks(block))
            .for_each(|(yb, xb)| ln_forward_rows(xb, yb, w, b, self.eps, self.slope));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = w.elem_count();
        let grad = grad.contiguous()?;
        let (xh, wh, bh, gh) = (
            HostF32::new(x, "layer-norm input")?,
            HostF32::new(w, "layer-norm weight")?,
            HostF32::new(b, "layer-norm bias")?,
            HostF32::new(&grad, "layer-norm gradient")?,
        );
        let (xs, ws, bs, gs) = (xh.slice(), wh.slice(), bh.slice(), gh.slice());
        let (eps, slope) = (self.eps, self.slope);
        let mut dx = vec![0f32; xs.len()];
        let block = n * LN_BLOCK_ROWS;
        let zeros = || (vec![0f64; n], vec![0f64; n]);
        let (dw, db) = dx
            .par_chunks_mut(block)
            .zip(xs.par_chunks(block).zip(gs.par_chunks(block)))
            .map(|(dxb, (xb, gb))| ln_backward_rows(xb, gb, dxb, ws, bs, eps, slope))
            .fold(zeros, |(mut tw, mut tb), (dw, db)| {
                tw.iter_mut().zip(dw).for_each(|(t, v)| *t += f64::from(v));
                tb.iter_mut().zip(db).for_each(|(t, v)| *t += f64::from(v));
                (tw, tb)
            })
            .reduce(zeros, |(mut aw, mut ab), (bw, bb)| {
                aw.iter_mut().zip(bw).for_each(|(a, b)| *a += b);
                ab.iter_mut().zip(bb).for_each(|(a, b)| *a += b);
                (aw, ab)
            });
        let dev = x.device();
        let to = |v: Vec<f64>| {
            Tensor::from_vec(
                v.into_iter().map(|x| x as f32).collect::<Vec<_>>(),
                w.shape(),
                dev,
            )
        };
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(to(dw)?),
            Some(to(db)?),
        ))
    }
}

simd_dispatch!(fn ln_forward_rows(x: &[f32], y: &mut [f32], w: &[f32], b: &[f32], eps: f32,
    slope: Option<f32>) => ln_forward_rows_generic);

/// The forward pass over a block of whole rows (compiled for the CPU's vector width).
#[inline(always)]
fn ln_forward_rows_generic(
    x: &[f32],
    y: &mut [f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
    slope: Option<f32>,
) {
    let n = w.len();
    for (yr, xr) in y.chunks_mut(n).zip(x.chunks(n)) {
        let (m, r) = row_stats(xr, eps);
        for ((y, &x), (&w, &b)) in yr.iter_mut().zip(xr).zip(w.iter().zip(b)) {
            *y = (x - m) * r * w + b;
        }
        if let Some(a) = slope {
            yr.iter_mut()
                .for_each(|v| *v = if *v <= 0.0 { *v * a } else { *v });
        }
    }
}

simd_dispatch!(fn ln_backward_rows(xb: &[f32], gb: &[f32], dxb: &mut [f32], ws: &[f32], bs: &[f32],
    eps: f32, slope: Option<f32>) -> (Vec<f32>, Vec<f32>) => ln_backward_rows_generic);

/// The backward pass over a block of whole rows: the block's input gradient, and its weight
/// and bias gradients summed in f32.
#[inline(always)]
fn ln_backward_rows_generic(
    xb: &[f32],
    gb: &[f32],
    dxb: &mut [f32],
    ws: &[f32],
    bs: &[f32],
    eps: f32,
    slope: Option<f32>,
) -> (Vec<f32>, Vec<f32>) {
    let n = ws.len();
    let (mut dw, mut db) = (vec![0f32; n], vec![0f32; n]);
    let (mut g, mut gw, mut xn) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    for (dxr, (xr, gr)) in dxb.chunks_mut(n).zip(xb.chunks(n).zip(gb.chunks(n))) {
        let (m, r) = row_stats(xr, eps);
        xn.iter_mut().zip(xr).for_each(|(xn, &x)| *xn = (x - m) * r);
        g.copy_from_slice(gr);
        if let Some(a) = slope {
            // Through the activation first: its input, the normalized value, is
            // recomputed as the forward pass computed it.
            for ((g, &xn), (&w, &b)) in g.iter_mut().zip(&xn).zip(ws.iter().zip(bs)) {
                *g = if xn * w + b <= 0.0 { *g * a } else { *g };
            }
        }
        for ((gw, &g), &w) in gw.iter_mut().zip(&g).zip(ws) {
            *gw = g * w;
        }
        for ((dw, db), (&g, &xn)) in dw.iter_mut().zip(db.iter_mut()).zip(g.iter().zip(&xn)) {
            *dw += g * xn;
            *db += g;
        }
        let s1 = lanes_sum(&gw, |v| v) / n as f32;
        let s2 = lanes_dot(&gw, &xn) / n as f32;
        for (dx, (&gw, &xn)) in dxr.iter_mut().zip(gw.iter().zip(&xn)) {
            *dx = r * (gw - s1 - xn * s2);
        }
    }
    (dw, db)
}

/// `tanh(a + b[:, None, :] + c)` for `a`, `c` `[B, T, N]` and `b` `[B, N]` as one op (the
/// additive attention's energies, once per decoder step): candle's version stores the two sums
/// and runs libm's scalar `tanh` in the forward pass, and broadcasts, reduces and composes
/// `1 - y^2` from four more full-size ops in the backward pass (CPU f32; elsewhere candle's).
pub(crate) fn tanh_of_sum(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    if !super::gemm::all_host_f32(&[a, b, c]) {
        return (a.broadcast_add(&b.unsqueeze(1)?)? + c)?.tanh();
    }
    let (a, b, c) = (a.contiguous()?, b.contiguous()?, c.contiguous()?);
    a.apply_op3(&b, &c, TanhOfSum)
}

struct TanhOfSum;

simd_dispatch!(fn tanh_sum_rows(a: &[f32], b: &[f32], c: &[f32], y: &mut [f32]) => tanh_sum_rows_generic);

#[inline(always)]
fn tanh_sum_rows_generic(a: &[f32], b: &[f32], c: &[f32], y: &mut [f32]) {
    let n = b.len();
    for ((y, a), c) in y
        .chunks_exact_mut(n)
        .zip(a.chunks_exact(n))
        .zip(c.chunks_exact(n))
    {
        for j in 0..n {
            y[j] = crate::fastmath::tanh(a[j] + b[j] + c[j]);
        }
    }
}

impl CustomOp3 for TanhOfSum {
    fn name(&self) -> &'static str {
        "tanh-of-sum-train"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b, c) = (
            host(s1, l1, "tanh-of-sum")?,
            host(s2, l2, "tanh-of-sum")?,
            host(s3, l3, "tanh-of-sum")?,
        );
        let (nb, t, n) = l1.shape().dims3()?;
        if l2.shape().dims2()? != (nb, n) || l3.shape().dims3()? != (nb, t, n) {
            candle_core::bail!(
                "tanh-of-sum: shapes {:?} {:?} {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let mut y = vec![0f32; a.len()];
        let tn = t * n;
        y.par_chunks_mut(tn.max(1)).enumerate().for_each(|(i, yb)| {
            let r = i * tn..(i + 1) * tn;
            tanh_sum_rows(&a[r.clone()], &b[i * n..(i + 1) * n], &c[r], yb)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (nb, t, n) = res.dims3()?;
        let grad = grad.contiguous()?;
        let (y, g) = (
            HostF32::new(res, "tanh-of-sum")?,
            HostF32::new(&grad, "tanh-of-sum")?,
        );
        let (y, g) = (y.slice(), g.slice());
        // dz = g (1 - y^2) is the gradient of a and c; b's sums it over the T axis.
        let mut dz = vec![0f32; y.len()];
        let mut db = vec![0f32; nb * n];
        dz.par_chunks_mut((t * n).max(1))
            .zip(db.par_chunks_mut(n.max(1)))
            .enumerate()
            .for_each(|(i, (dzb, dbb))| {
                let r = i * t * n..(i + 1) * t * n;
                for ((d, &y), &g) in dzb.iter_mut().zip(&y[r.clone()]).zip(&g[r]) {
                    *d = g * (1.0 - y * y);
                }
                for row in dzb.chunks_exact(n) {
                    dbb.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
            });
        let dev = res.device();
        let dz = Tensor::from_vec(dz, (nb, t, n), dev)?;
        let want = |x: &Tensor| x.track_op();
        Ok((
            want(a).then(|| dz.clone()),
            if want(b) {
                Some(Tensor::from_vec(db, (nb, n), dev)?)
            } else {
                None
            },
            want(c).then_some(dz),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    fn grads_of(
        f: &dyn Fn(&[&Tensor]) -> Result<Tensor>,
        vars: &[&Var],
        r: &Tensor,
    ) -> Result<Vec<Vec<f32>>> {
        let ts: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let loss = (f(&ts)? * r)?.sum_all()?;
        let g = loss.backward()?;
        ts.iter()
            .map(|t| g.get(t).unwrap().flatten_all()?.to_vec1::<f32>())
            .collect()
    }

    fn close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32) {
        for (x, y) in a.iter().zip(b) {
            for (p, q) in x.iter().zip(y) {
                assert!((p - q).abs() <= tol * (1.0 + q.abs()), "{p} vs {q}");
            }
        }
    }

    #[test]
    fn ops_equal_candle_composition() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (3, 4, 5, 6), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(1f32, 0.3, (5, 6), &dev)?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 0.3, (5, 6), &dev)?)?;
        let r = Tensor::randn(0f32, 1.0, (3, 4, 5, 6), &dev)?;
        let ours = grads_of(&|t| layer_norm(t[0], t[1], t[2], 1e-5), &[&x, &w, &b], &r)?;
        let reference = grads_of(
            &|t| {
                let xf = t[0].reshape((3, 4, 30))?;
                let m = xf.mean_keepdim(D::Minus1)?;
                let xc = xf.broadcast_sub(&m)?;
                let v = xc.sqr()?.mean_keepdim(D::Minus1)?;
                xc.broadcast_div(&(v + 1e-5)?.sqrt()?)?
                    .reshape((3, 4, 5, 6))?
                    .broadcast_mul(t[1])?
                    .broadcast_add(t[2])
            },
            &[&x, &w, &b],
            &r,
        )?;
        close(&ours, &reference, 1e-4);
        // Many rows of a SepFormer-like width: the weight and bias gradients sum over blocks
        // of rows (a block left out, or counted twice, fails this), with a ragged last block.
        let x2 = Var::from_tensor(&Tensor::randn(0.5f32, 2.0, (7, 37, 64), &dev)?)?;
        let w2 = Var::from_tensor(&Tensor::randn(1f32, 0.3, 64, &dev)?)?;
        let b2 = Var::from_tensor(&Tensor::randn(0f32, 0.3, 64, &dev)?)?;
        let r2 = Tensor::randn(0f32, 1.0, (7, 37, 64), &dev)?;
        for slope in [None, Some(0.2)] {
            let ours = grads_of(
                &|t| layer_norm_act(t[0], t[1], t[2], 1e-6, slope),
                &[&x2, &w2, &b2],
                &r2,
            )?;
            let reference = grads_of(
                &|t| {
                    let m = t[0].mean_keepdim(D::Minus1)?;
                    let xc = t[0].broadcast_sub(&m)?;
                    let v = xc.sqr()?.mean_keepdim(D::Minus1)?;
                    let y = xc
                        .broadcast_div(&(v + 1e-6)?.sqrt()?)?
                        .broadcast_mul(t[1])?
                        .broadcast_add(t[2])?;
                    match slope {
                        Some(a) => candle_nn::ops::leaky_relu(&y, f64::from(a)),
                        None => Ok(y),
                    }
                },
                &[&x2, &w2, &b2],
                &r2,
            )?;
            close(&ours, &reference, 1e-4);
        }
        // Fused with LeakyReLU: equal to the two ops in a row (a sign error in the fused
        // backward, or a slope applied to the positive side, fails this).
        let ours = grads_of(
            &|t| layer_norm_act(t[0], t[1], t[2], 1e-5, Some(0.1)),
            &[&x, &w, &b],
            &r,
        )?;
        let reference = grads_of(
            &|t| leaky_relu(&layer_norm(t[0], t[1], t[2], 1e-5)?, 0.1),
            &[&x, &w, &b],
            &r,
        )?;
        close(&ours, &reference, 1e-4);
        // The attention energies' tanh(a + b[:, None] + c) against candle's composition.
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 7, 13), &dev)?)?;
        let bb = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 13), &dev)?)?;
        let c = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 7, 13), &dev)?)?;
        let r3 = Tensor::randn(0f32, 1.0, (3, 7, 13), &dev)?;
        let ours = grads_of(&|t| tanh_of_sum(t[0], t[1], t[2]), &[&a, &bb, &c], &r3)?;
        let reference = grads_of(
            &|t| (t[0].broadcast_add(&t[1].unsqueeze(1)?)? + t[2])?.tanh(),
            &[&a, &bb, &c],
            &r3,
        )?;
        close(&ours, &reference, 1e-5);
        let ours = grads_of(&|t| relu(t[0]), &[&x], &r)?;
        let reference = grads_of(&|t| t[0].relu(), &[&x], &r)?;
        close(&ours, &reference, 0.0);
        assert_eq!(
            relu(x.as_tensor())?.flatten_all()?.to_vec1::<f32>()?,
            x.as_tensor().relu()?.flatten_all()?.to_vec1::<f32>()?
        );
        let ours = grads_of(&|t| leaky_relu(t[0], 0.01), &[&x], &r)?;
        let reference = grads_of(&|t| candle_nn::ops::leaky_relu(t[0], 0.01), &[&x], &r)?;
        close(&ours, &reference, 1e-6);
        Ok(())
    }
}
