//! Elementwise training ops with their backward pass written out, for the CPU: candle composes
//! LeakyReLU from five ops and LayerNorm from a dozen, each allocating a full-size tensor in
//! the forward and more in the backward (on CRDNN's `[8, 319, 40, 128]` activations that is
//! most of a fine-tuning step). Both are tested against the composed candle ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{storage_f32 as host, HostF32};
use crate::fastmath::simd_dispatch;

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
        let x = arg.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let a = self.0;
        let d: Vec<f32> = x
            .par_iter()
            .zip(g.par_iter())
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

/// Per row: mean and 1/std (biased variance, as torch).
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f64;
    let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
}

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
        y.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .for_each(|(yr, xr)| {
                let (m, r) = row_stats(xr, self.eps);
                for j in 0..n {
                    yr[j] = (xr[j] - m) * r * w[j] + b[j];
                }
                if let Some(a) = self.slope {
                    yr.iter_mut().filter(|v| **v <= 0.0).for_each(|v| *v *= a);
                }
            });
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
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.flatten_all()?.to_vec1::<f32>()?;
        let mut gs = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let bs = match self.slope {
            Some(_) => b.flatten_all()?.to_vec1::<f32>()?,
            None => Vec::new(),
        };
        let mut dx = vec![0f32; xs.len()];
        // Per-row partial sums of dw and db, reduced after (rows in parallel).
        let partial: Vec<(Vec<f64>, Vec<f64>)> = dx
            .par_chunks_mut(n)
            .zip(xs.par_chunks(n).zip(gs.par_chunks_mut(n)))
            .fold(
                || (vec![0f64; n], vec![0f64; n]),
                |(mut dw, mut db), (dxr, (xr, gr))| {
                    let (m, r) = row_stats(xr, self.eps);
                    if let Some(a) = self.slope {
                        // Through the activation first: its input, the normalized value, is
                        // recomputed from the row's statistics.
                        for j in 0..n {
                            if (xr[j] - m) * r * ws[j] + bs[j] <= 0.0 {
                                gr[j] *= a;
                            }
                        }
                    }
                    let (mut s1, mut s2) = (0f64, 0f64);
                    for j in 0..n {
                        let xh = (xr[j] - m) * r;
                        let gw = (gr[j] * ws[j]) as f64;
                        s1 += gw;
                        s2 += gw * xh as f64;
                        dw[j] += (gr[j] * xh) as f64;
                        db[j] += gr[j] as f64;
                    }
                    let (s1, s2) = ((s1 / n as f64) as f32, (s2 / n as f64) as f32);
                    for j in 0..n {
                        let xh = (xr[j] - m) * r;
                        dxr[j] = r * (gr[j] * ws[j] - s1 - xh * s2);
                    }
                    (dw, db)
                },
            )
            .collect();
        let (mut dw, mut db) = (vec![0f64; n], vec![0f64; n]);
        for (pw, pb) in partial {
            dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
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

/// `tanh(a + b[:, None, :] + c)` for `a`, `c` `[B, T, N]` and `b` `[B, N]` as one op (the
/// additive attention's energies, once per decoder step): candle's version stores the two sums
/// and runs libm's scalar `tanh` in the forward pass, and broadcasts, reduces and composes
/// `1 - y^2` from four more full-size ops in the backward pass (CPU f32; elsewhere candle's).
pub(crate) fn tanh_of_sum(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    let on_host = [a, b, c]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32);
    if !on_host {
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
        let ours = grads_of(&|t| leaky_relu(t[0], 0.01), &[&x], &r)?;
        let reference = grads_of(&|t| candle_nn::ops::leaky_relu(t[0], 0.01), &[&x], &r)?;
        close(&ours, &reference, 1e-6);
        Ok(())
    }
}
