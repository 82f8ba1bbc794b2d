//! Adam's update on host f32 tensors in place: three passes over the parameter's buffers
//! (first moment, second moment, weights) instead of a dozen candle ops that each allocate a
//! tensor of the parameter's size. Each pass computes what torch's single-tensor Adam computes,
//! in its order (`lerp_`, `mul_` + `addcmul_`, `sqrt` / `add_` + `addcdiv_`, in f32 with f32
//! scalars); torch's vectorized kernels fuse some products and sums (FMA), so values can differ
//! in the last bit or two (`tests/brain.rs` compares with torch 2.8.0's).

use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

use crate::nnet::gemm::{storage_f32 as slice, storage_f32_mut as slice_mut};

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

/// Which of Adam's three passes an [`AdamPass`] runs.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// `exp_avg.lerp_(grad, 1 - beta1)` as `m + w (g - m)` (torch's scalar lerp writes
    /// `g - (g - m)(1 - w)` for weights of 0.5 and above, its vector lerp fuses either with FMA:
    /// they differ in rounding only); sources: gradient, weight.
    FirstMoment,
    /// `exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)`; sources: gradient, weight.
    SecondMoment,
    /// `param.addcdiv_(exp_avg, exp_avg_sq.sqrt() / bc2_sqrt + eps, value=-step_size)`, after
    /// AdamW's `param.mul_(1 - lr * wd)`; sources: the two moments.
    Update,
}

struct AdamPass(Pass, AdamStep);

/// `f(d, a, b)` over three equal-length buffers, in parallel chunks.
fn zip3(d: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(&mut f32, f32, f32) + Sync) {
    d.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(d, (a, b))| {
            for ((d, a), b) in d.iter_mut().zip(a).zip(b) {
                f(d, *a, *b);
            }
        });
}

impl InplaceOp3 for AdamPass {
    fn name(&self) -> &'static str {
        "adam"
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
        let d = slice_mut(s1, l1, "adam")?;
        let (a, b) = (slice(s2, l2, "adam")?, slice(s3, l3, "adam")?);
        if d.len() != a.len() || d.len() != b.len() {
            candle_core::bail!(
                "adam: {} values against {} and {}",
                d.len(),
                a.len(),
                b.len()
            );
        }
        let s = self.1;
        match self.0 {
            Pass::FirstMoment => zip3(d, a, b, |m, g, w| *m += s.w1 * (s.grad(g, w) - *m)),
            Pass::SecondMoment => zip3(d, a, b, |v, g, w| {
                let g = s.grad(g, w);
                *v = *v * s.beta2 + s.w2 * g * g;
            }),
            Pass::Update => zip3(d, a, b, |w, m, v| {
                let denom = v.sqrt() / s.bc2_sqrt + s.eps;
                let x = if s.decay != 1.0 { *w * s.decay } else { *w };
                *w = x + (-s.step_size * m) / denom;
            }),
        }
        Ok(())
    }
}

/// Whether `t` lives on the CPU as f32 (the optimizers' in-place paths; a weight must also be
/// contiguous).
pub(super) fn host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// One Adam step of one parameter `w` (a contiguous host f32 tensor) with gradient `g`, its
/// moments (contiguous, the parameter's dtype: `load_buffers` restores them so) created as
/// zeros on the first step (torch's lazy state) and updated in place.
pub(super) fn step(
    w: &Tensor,
    g: &Tensor,
    m: &mut Option<Tensor>,
    v: &mut Option<Tensor>,
    s: AdamStep,
) -> Result<()> {
    let g = g.contiguous()?;
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
    m.inplace_op3(&g, w, &AdamPass(Pass::FirstMoment, s))?;
    v.inplace_op3(&g, w, &AdamPass(Pass::SecondMoment, s))?;
    w.inplace_op3(m, v, &AdamPass(Pass::Update, s))
}
