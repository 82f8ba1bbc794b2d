//! [`GlobalNorm`](super::normalization::GlobalNorm) (torch's `GroupNorm(1, C)`, SpeechBrain's
//! `GlobalLayerNorm`) and PReLU with one shared slope as single autograd ops, for the CPU.
//!
//! candle composes the norm from a dozen f64 ops over the whole activation and reduces the
//! per-channel gain and bias gradients with its single-threaded strided reduction; SepFormer
//! applies it to every `[B, S, K, N]` block output. Statistics are accumulated in f64 over
//! fixed blocks of rows, added in order, so results do not depend on the thread count or on
//! scheduling (a resumed run must repeat an uninterrupted one bit for bit).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{storage_f32 as host, HostF32};

/// Rows per block of a per-item sum (a fixed partition: see the module doc).
fn block_rows(c: usize) -> usize {
    (16384 / c.max(1)).max(1)
}

/// Sum over `item` (rows of `c` values) of `f(row)`, in f64 and in a fixed order.
fn sum_rows(item: &[f32], c: usize, f: impl Fn(&[f32]) -> f64 + Sync) -> f64 {
    let parts: Vec<f64> = item
        .par_chunks(block_rows(c) * c)
        .map(|block| block.chunks(c).map(&f).sum())
        .collect();
    parts.iter().sum()
}

/// Mean and `1 / sqrt(var + eps)` of one item, as the composed f64 ops computed them.
fn item_stats(item: &[f32], c: usize, eps: f64) -> (f64, f64) {
    let m = item.len().max(1) as f64;
    let mean = sum_rows(item, c, |r| r.iter().map(|&v| v as f64).sum()) / m;
    let var = sum_rows(item, c, |r| {
        r.iter().map(|&v| (v as f64 - mean).powi(2)).sum()
    }) / m;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Whether [`global_norm`] applies: CPU f32 input and parameters.
pub(crate) fn applies(ts: &[&Tensor]) -> bool {
    super::gemm::all_host_f32(ts)
}

/// `GroupNorm(1, C)` of a channel-last `x` `[B, ..., C]`: per batch item, statistics over all
/// its values; then `normed * w[c] + b[c]`.
pub(crate) fn global_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let c = w.elem_count();
    if x.rank() < 2 || x.dims()[x.rank() - 1] != c || b.elem_count() != c {
        candle_core::bail!(
            "GlobalNorm over {c} channels: input {:?}, bias of {}",
            x.dims(),
            b.elem_count()
        );
    }
    x.contiguous()?
        .apply_op3(&w.flatten_all()?, &b.flatten_all()?, GlobalNormOp { eps })
}

struct GlobalNormOp {
    eps: f64,
}

impl CustomOp3 for GlobalNormOp {
    fn name(&self) -> &'static str {
        "global-norm"
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
        let x = host(s1, l1, "global-norm")?;
        let (w, b) = (host(s2, l2, "global-norm")?, host(s3, l3, "global-norm")?);
        let c = w.len();
        let per_item = x.len() / l1.shape().dims()[0].max(1);
        let mut y = vec![0f32; x.len()];
        if per_item > 0 {
            for (yi, xi) in y.chunks_mut(per_item).zip(x.chunks(per_item)) {
                let (mean, inv) = item_stats(xi, c, self.eps);
                yi.par_chunks_mut(c)
                    .zip(xi.par_chunks(c))
                    .with_min_len(64)
                    .for_each(|(yr, xr)| {
                        for j in 0..c {
                            let normed = ((xr[j] as f64 - mean) * inv) as f32;
                            yr[j] = normed * w[j] + b[j];
                        }
                    });
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (xh, wh, gh) = (
            HostF32::new(x, "global-norm backward")?,
            HostF32::new(w, "global-norm backward")?,
            HostF32::new(&grad, "global-norm backward")?,
        );
        let (xs, ws, gs) = (xh.slice(), wh.slice(), gh.slice());
        let c = ws.len();
        let per_item = xs.len() / x.dim(0)?.max(1);
        let mut dx = vec![0f32; xs.len()];
        let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
        let rows = block_rows(c);
        if per_item > 0 {
            for ((dxi, xi), gi) in dx
                .chunks_mut(per_item)
                .zip(xs.chunks(per_item))
                .zip(gs.chunks(per_item))
            {
                let (mean, inv) = item_stats(xi, c, self.eps);
                let m = xi.len() as f64;
                // Means over the item of g = dy * w and of g * xhat.
                let (mut s1, mut s2) = (0f64, 0f64);
                let parts: Vec<(f64, f64, Vec<f64>, Vec<f64>)> = xi
                    .par_chunks(rows * c)
                    .zip(gi.par_chunks(rows * c))
                    .map(|(xb, gb)| {
                        let (mut s1, mut s2) = (0f64, 0f64);
                        let (mut dw, mut db) = (vec![0f64; c], vec![0f64; c]);
                        for (xr, gr) in xb.chunks(c).zip(gb.chunks(c)) {
                            for j in 0..c {
                                let xhat = (xr[j] as f64 - mean) * inv;
                                let g = gr[j] as f64;
                                s1 += g * ws[j] as f64;
                                s2 += g * ws[j] as f64 * xhat;
                                dw[j] += g * (xhat as f32) as f64;
                                db[j] += g;
                            }
                        }
                        (s1, s2, dw, db)
                    })
                    .collect();
                for (p1, p2, pw, pb) in parts {
                    s1 += p1;
                    s2 += p2;
                    dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
                    db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
                }
                let (s1, s2) = (s1 / m, s2 / m);
                dxi.par_chunks_mut(c)
                    .zip(xi.par_chunks(c).zip(gi.par_chunks(c)))
                    .with_min_len(64)
                    .for_each(|(dr, (xr, gr))| {
                        for j in 0..c {
                            let xhat = (xr[j] as f64 - mean) * inv;
                            let g = gr[j] as f64 * ws[j] as f64;
                            dr[j] = (inv * (g - s1 - xhat * s2)) as f32;
                        }
                    });
            }
        }
        let dev = x.device();
        let to = |v: Vec<f64>| {
            Tensor::from_vec(v.into_iter().map(|x| x as f32).collect::<Vec<_>>(), c, dev)
        };
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(to(dw)?),
            Some(to(db)?),
        ))
    }
}

/// PReLU with one shared slope `a` (`torch.nn.PReLU()`): `x` where positive, else `a x`.
/// Gradients as torch's: `dy` or `a dy` for `x`, and `sum(dy x)` over `x <= 0` for `a`.
pub(crate) fn prelu(x: &Tensor, a: &Tensor) -> Result<Tensor> {
    if !applies(&[x, a]) || a.elem_count() != 1 {
        return x.relu()? - x.neg()?.relu()?.broadcast_mul(a)?;
    }
    x.contiguous()?.apply_op2(&a.flatten_all()?, PRelu)
}

struct PRelu;

impl CustomOp2 for PRelu {
    fn name(&self) -> &'static str {
        "prelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = host(s1, l1, "prelu")?;
        let a = host(s2, l2, "prelu")?[0];
        let y: Vec<f32> = x
            .par_iter()
            .with_min_len(4096)
            .map(|&v| if v > 0.0 { v } else { a * v })
            .collect();
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (xh, gh) = (
            HostF32::new(x, "prelu backward")?,
            HostF32::new(&grad, "prelu backward")?,
        );
        let (xs, gs) = (xh.slice(), gh.slice());
        let av = a.flatten_all()?.to_vec1::<f32>()?[0];
        let dx: Vec<f32> = xs
            .par_iter()
            .zip(gs.par_iter())
            .with_min_len(4096)
            .map(|(&v, &g)| if v > 0.0 { g } else { av * g })
            .collect();
        // Fixed blocks, added in order (see the module doc).
        let parts: Vec<f64> = xs
            .par_chunks(16384)
            .zip(gs.par_chunks(16384))
            .map(|(xb, gb)| {
                xb.iter()
                    .zip(gb)
                    .filter(|(v, _)| **v <= 0.0)
                    .map(|(&v, &g)| (v * g) as f64)
                    .sum()
            })
            .collect();
        let da = parts.iter().sum::<f64>() as f32;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(vec![da], a.shape(), a.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nnet::fused::tests::max_diff;
    use candle_core::{DType, Device, Var, D};

    /// The composed f64 ops `GlobalNorm` used before.
    fn composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let f = x.reshape((dims[0], ()))?.to_dtype(DType::F64)?;
        let mean = f.mean_keepdim(D::Minus1)?;
        let cen = f.broadcast_sub(&mean)?;
        let inv = (cen.sqr()?.mean_keepdim(D::Minus1)? + eps)?
            .sqrt()?
            .recip()?;
        cen.broadcast_mul(&inv)?
            .to_dtype(DType::F32)?
            .reshape(dims)?
            .broadcast_mul(w)?
            .broadcast_add(b)
    }

    fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
        let scale = want
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        max_diff(got, want) / scale.max(1e-6)
    }

    #[test]
    fn global_norm_matches_the_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        // Large enough for several blocks per item, with an offset and non-trivial gains.
        for shape in [vec![2, 7, 5], vec![3, 40, 30, 64]] {
            let c = *shape.last().unwrap();
            let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, shape.clone(), &dev)? + 3.0)?)?;
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, c, &dev)?)?;
            let b = Var::from_tensor(&Tensor::randn(0f32, 0.5, c, &dev)?)?;
            let probe = Tensor::randn(0f32, 1.0, shape.clone(), &dev)?;
            let want = composed(&x, &w, &b, 1e-8)?;
            let got = global_norm(&x, &w, &b, 1e-8)?;
            assert!(max_diff(&got, &want) < 1e-6, "forward {shape:?}");
            let gw = (want * &probe)?.sum_all()?.backward()?;
            let gg = (got * &probe)?.sum_all()?.backward()?;
            for (v, name) in [(&x, "x"), (&w, "w"), (&b, "b")] {
                let e = rel_err(gg.get(v).unwrap(), gw.get(v).unwrap());
                assert!(e < 1e-5, "{name} gradient {shape:?}: {e}");
            }
        }
        Ok(())
    }

    #[test]
    fn global_norm_refuses_a_channel_mismatch() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        let w = Tensor::ones(5, DType::F32, &dev).unwrap();
        let err = global_norm(&x, &w, &w, 1e-8).unwrap_err().to_string();
        assert!(err.contains("5 channels"), "{err}");
    }

    #[test]
    fn prelu_matches_torch_rule() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 9000), &dev)?)?;
        let a = Var::from_tensor(&Tensor::new(&[0.3f32], &dev)?)?;
        let probe = Tensor::randn(0f32, 1.0, (4, 9000), &dev)?;
        let got = prelu(&x, &a)?;
        // Without ties at 0 the composed form has torch's gradients too.
        let want = (x.relu()? - x.neg()?.relu()?.broadcast_mul(&a)?)?;
        assert!(max_diff(&got, &want) < 1e-7);
        let gg = (got * &probe)?.sum_all()?.backward()?;
        let gw = (want * &probe)?.sum_all()?.backward()?;
        assert!(rel_err(gg.get(&x).unwrap(), gw.get(&x).unwrap()) < 1e-6);
        assert!(rel_err(gg.get(&a).unwrap(), gw.get(&a).unwrap()) < 1e-5);
        Ok(())
    }
}
