//! The CTC forward-backward recursions (Graves et al., 2006) in log space, f64, and the
//! candle op that carries their gradient into autograd (see [`super::losses::ctc_loss`]).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// Negative log-likelihood of `labels` under `lp` (`[T, C]` row-major log-probabilities, of
/// which the first `t_len` frames are used), and its gradient with respect to `lp` written into
/// `grad` (`[T, C]`, zero past `t_len`). Returns `+inf` when no alignment fits.
///
/// The gradient is `-gamma_t(c)`, the posterior occupancy of class `c` at frame `t`; after a
/// `log_softmax` it becomes torch's `softmax - gamma`.
pub(crate) fn ctc_forward_backward(
    lp: &[f32],
    c: usize,
    t_len: usize,
    labels: &[u32],
    blank: usize,
    grad: &mut [f32],
) -> f64 {
    grad.fill(0.0);
    let ninf = f64::NEG_INFINITY;
    // Extended label sequence: blank, l1, blank, l2, ..., blank.
    let ext: Vec<usize> = std::iter::once(blank)
        .chain(labels.iter().flat_map(|&l| [l as usize, blank]))
        .collect();
    let n = ext.len();
    if t_len == 0 {
        return if labels.is_empty() {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let y = |t: usize, k: usize| lp[t * c + k] as f64;
    // A skip from s-2 to s is allowed on a label that differs from the label two back.
    let can_skip = |s: usize| s >= 2 && ext[s] != blank && ext[s] != ext[s - 2];
    let mut alpha = vec![ninf; t_len * n];
    alpha[0] = y(0, ext[0]);
    if n > 1 {
        alpha[1] = y(0, ext[1]);
    }
    for t in 1..t_len {
        for s in 0..n {
            let mut a = alpha[(t - 1) * n + s];
            if s >= 1 {
                a = log_add(a, alpha[(t - 1) * n + s - 1]);
            }
            if can_skip(s) {
                a = log_add(a, alpha[(t - 1) * n + s - 2]);
            }
            alpha[t * n + s] = if a == ninf { ninf } else { a + y(t, ext[s]) };
        }
    }
    let last = (t_len - 1) * n;
    let mut ll = alpha[last + n - 1];
    if n > 1 {
        ll = log_add(ll, alpha[last + n - 2]);
    }
    if ll == ninf {
        return f64::INFINITY;
    }
    let mut beta = vec![ninf; t_len * n];
    beta[last + n - 1] = y(t_len - 1, ext[n - 1]);
    if n > 1 {
        beta[last + n - 2] = y(t_len - 1, ext[n - 2]);
    }
    for t in (0..t_len - 1).rev() {
        for s in 0..n {
            let mut b = beta[(t + 1) * n + s];
            if s + 1 < n {
                b = log_add(b, beta[(t + 1) * n + s + 1]);
            }
            if s + 2 < n && can_skip(s + 2) {
                b = log_add(b, beta[(t + 1) * n + s + 2]);
            }
            beta[t * n + s] = if b == ninf { ninf } else { b + y(t, ext[s]) };
        }
    }
    // gamma_t(k) = sum_{s: ext[s] = k} alpha_t(s) beta_t(s) / (p y_t(k)); both recursions
    // include y_t, hence the division.
    let mut acc = vec![ninf; c];
    for t in 0..t_len {
        acc.fill(ninf);
        for s in 0..n {
            let v = alpha[t * n + s] + beta[t * n + s];
            if v != ninf {
                acc[ext[s]] = log_add(acc[ext[s]], v);
            }
        }
        for (k, &a) in acc.iter().enumerate() {
            if a != ninf {
                grad[t * c + k] = -((a - ll - y(t, k)).exp()) as f32;
            }
        }
    }
    -ll
}

/// Per-utterance CTC losses `[B]` from `log_probs` `[B, T, C]`, with the gradient computed
/// alongside (as torch keeps its alpha/beta for the backward pass).
pub(crate) struct CtcOp {
    pub(crate) losses: Vec<f32>,
    pub(crate) grad: Vec<f32>,
    pub(crate) shape: (usize, usize, usize),
}

impl CustomOp1 for CtcOp {
    fn name(&self) -> &'static str {
        "ctc-loss"
    }

    fn cpu_fwd(&self, _storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        if layout.shape().dims() != [self.shape.0, self.shape.1, self.shape.2] {
            candle_core::bail!("ctc-loss: input shape {:?} changed", layout.shape());
        }
        Ok((
            CpuStorage::F32(self.losses.clone()),
            Shape::from(self.losses.len()),
        ))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (b, t, c) = self.shape;
        let g = Tensor::from_slice(&self.grad, (b, t, c), arg.device())?;
        Ok(Some(g.broadcast_mul(&grad_res.reshape((b, 1, 1))?)?))
    }
}
