//! Adam's update on host f32 tensors in place: three passes over the parameter's buffers
//! (first moment, second moment, weights) instead of a dozen candle ops that each allocate a
//! tensor of the parameter's size. Each pass rounds as torch's single-tensor Adam rounds
//! (`lerp_`, `mul_` + `addcmul_`, `sqrt` / `add_` + `addcdiv_`, in f32 with f32 scalars), so
//! the weights follow `torch.optim.Adam` at least as closely as the composed ops did.

use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 15;

/// The constants of one Adam step for one parameter.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdamStep {
    /// Gradient-clipping factor applied to the gradient first (`None`: 1).
    pub scale: Option<f32>,
    /// L2 penalty added to the gradient (Adam's `weight_decay`; 0 for AdamW).
    pub l2: f32,
    /// `1 - lr * weight_decay` (AdamW's decoupled decay; 1 for Adam).
    pub decay: f32,
    /// `1 - beta1` (lerp's weight), rounded from f64 as torch passes it.
    pub w1: f32,
    pub beta2: f32,
    /// `1 - beta2`, rounded from f64.
    pub w2: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
    pub eps: f32,
}

impl AdamStep {
    /// The gradient as Adam sees it: clipped, plus the L2 term (torch: `grad.add(param, alpha=wd)`).
    #[inline(always)]
    fn grad(&self, g: f32, w: f32) -> f32 {
        let g = match self.scale {
            Some(s) => g * s,
            None => g,
        };
        if self.l2 != 0.0 {
            g + w * self.l2
        } else {
            g
        }
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
        candle_core::bail!("adam: {what} must be a contiguous f32 tensor");
    };
    Ok(&v[a..b])
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
        candle_core::bail!("adam: {what} must be a contiguous f32 tensor");
    };
    Ok(&mut v[a..b])
}

/// `exp_avg.lerp_(grad, 1 - beta1)` (torch's lerp: `m + w (g - m)` for a weight below 0.5).
struct FirstMoment(AdamStep);
/// `exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)`.
struct SecondMoment(AdamStep);
/// `param.addcdiv_(exp_avg, exp_avg_sq.sqrt() / bc2_sqrt + eps, value=-step_size)`, after
/// AdamW's `param.mul_(1 - lr * wd)`.
struct Update(AdamStep);

macro_rules! moment_op {
    ($op:ident, $name:literal, |$s:ident, $m:ident, $g:ident| $body:expr) => {
        impl InplaceOp3 for $op {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &self,
                s1: &mut CpuStorage,
                l1: &Layout,
                s2: &CpuStorage,
                l2: &Layout,
                s3: &CpuStorage,
                l3: &Layout,
            ) -> Result<()> {
                let m = slice_mut(s1, l1, "the moment")?;
                let (g, w) = (slice(s2, l2, "the gradient")?, slice(s3, l3, "the weight")?);
                if m.len() != g.len() || m.len() != w.len() {
                    candle_core::bail!("adam: {} values, {} gradients", m.len(), g.len());
                }
                let $s = self.0;
                m.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK).zip(w.par_chunks(CHUNK)))
                    .for_each(|(m, (g, w))| {
                        for (($m, g), w) in m.iter_mut().zip(g).zip(w) {
                            let $g = $s.grad(*g, *w);
                            *$m = $body;
                        }
                    });
                Ok(())
            }
        }
    };
}

moment_op!(FirstMoment, "adam-exp-avg", |s, m, g| *m + s.w1 * (g - *m));
moment_op!(SecondMoment, "adam-exp-avg-sq", |s, v, g| *v * s.beta2
    + s.w2 * g * g);

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adam-update"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let w = slice_mut(s1, l1, "the weight")?;
        let (m, v) = (slice(s2, l2, "exp_avg")?, slice(s3, l3, "exp_avg_sq")?);
        if w.len() != m.len() || w.len() != v.len() {
            candle_core::bail!("adam: {} weights, {} moments", w.len(), m.len());
        }
        let s = self.0;
        w.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(w, (m, v))| {
                for ((w, m), v) in w.iter_mut().zip(m).zip(v) {
                    let denom = v.sqrt() / s.bc2_sqrt + s.eps;
                    let x = if s.decay != 1.0 { *w * s.decay } else { *w };
                    *w = x + (-s.step_size * m) / denom;
                }
            });
        Ok(())
    }
}

/// Whether `t` can take the host path (CPU, f32, contiguous).
pub(super) fn on_host(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous()
}

/// One Adam step of one parameter `w` (a host tensor) with gradient `g`, its moments created
/// as zeros on the first step (torch's lazy state) and updated in place.
pub(super) fn step(
    w: &Tensor,
    g: &Tensor,
    m: &mut Option<Tensor>,
    v: &mut Option<Tensor>,
    s: AdamStep,
) -> Result<()> {
    let g = g.contiguous()?;
    // Restored state may come back in another dtype or layout.
    for b in [&mut *m, &mut *v].into_iter().flatten() {
        if !on_host(b) {
            *b = b.to_dtype(candle_core::DType::F32)?.contiguous()?;
        }
    }
    let m = match m {
        Some(m) => m,
        None => m.insert(w.zeros_like()?),
    };
    let v = match v {
        Some(v) => v,
        None => v.insert(w.zeros_like()?),
    };
    // The moments see the weight before AdamW's decay (torch decays it first but only the
    // L2 term reads it, and AdamW has none).
    m.inplace_op3(&g, w, &FirstMoment(s))?;
    v.inplace_op3(&g, w, &SecondMoment(s))?;
    w.inplace_op3(m, v, &Update(s))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use crate::brain::{Adam, NamedParam, Optimizer};

    /// The host path over more values than one chunk, with clipping and both kinds of weight
    /// decay, against torch's update written out in f64.
    #[test]
    fn host_adam_follows_torch_over_chunks() {
        let n = super::CHUNK * 2 + 37;
        let val = |i: usize, k: f64| ((i as f64 * 0.618 + k).sin() * 2.0) as f32;
        for decoupled in [false, true] {
            let w0: Vec<f32> = (0..n).map(|i| val(i, 0.0)).collect();
            let var = Var::new(w0.as_slice(), &Device::Cpu).unwrap();
            let p = vec![NamedParam {
                name: "w".into(),
                var: var.clone(),
            }];
            let mut opt = if decoupled {
                Adam::adamw(p, 0.01)
            } else {
                Adam::new(p, 0.01)
            };
            opt.weight_decay = 0.1;
            let mut x: Vec<f64> = w0.iter().map(|&v| v as f64).collect();
            let (mut m, mut v) = (vec![0f64; n], vec![0f64; n]);
            for step in 1..=3 {
                let g: Vec<f32> = (0..n).map(|i| val(i, step as f64)).collect();
                let scale = 0.5;
                let gt = Tensor::new(g.as_slice(), &Device::Cpu).unwrap();
                opt.step_scaled(&[Some(gt)], scale).unwrap();
                for i in 0..n {
                    let mut gi = g[i] as f64 * scale;
                    if decoupled {
                        x[i] *= 1.0 - 0.01 * 0.1;
                    } else {
                        gi += 0.1 * x[i];
                    }
                    m[i] = 0.9 * m[i] + 0.1 * gi;
                    v[i] = 0.999 * v[i] + 0.001 * gi * gi;
                    let denom = (v[i] / (1.0 - 0.999f64.powi(step))).sqrt() + 1e-8;
                    x[i] -= 0.01 / (1.0 - 0.9f64.powi(step)) * m[i] / denom;
                }
            }
            let got = var.to_vec1::<f32>().unwrap();
            let worst = got
                .iter()
                .zip(&x)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0f64, f64::max);
            assert!(worst < 2e-6, "decoupled={decoupled}: worst {worst}");
            // The moments are kept for the checkpoint, in place.
            let state = opt.state_tensors().unwrap();
            let avg = &state.iter().find(|(k, _)| k == "exp_avg.w").unwrap().1;
            let avg = avg.to_vec1::<f32>().unwrap();
            assert!((avg[n - 1] as f64 - m[n - 1]).abs() < 1e-6);
        }
    }
}
