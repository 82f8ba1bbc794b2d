//! Linear layers in training as one autograd op, `y = x W^T + b`, for the CPU.
//!
//! candle's `x.matmul(&w.t())` then `broadcast_add(b)` puts a Transpose node on the weight and a
//! Broadcast node on the bias into the graph. Their backward passes copy a weight-sized
//! gradient through a strided view and reduce the bias gradient through `[rows, out]` each time
//! the layer is used (1.6 s of a 16 s fine-tuning step of the official ASR). [`linear`] gives
//! the weight gradient `dy^T x` straight in its `[out, in]` layout.
//!
//! [`StepLinear`] does more for a weight used once per step of a recurrence (the attentional
//! decoder's GRU and attention). candle would compute and add up one weight-sized gradient per
//! step (29 in the tutorial's batches). Here each step's backward only gives its input's gradient
//! and keeps `(x, dy)`. The weight's gradient is then one product over every step, returned by
//! the first step's op. That op is always the last of the steps to run backward, because every
//! later step depends on its output. A step that runs backward after it is an error, never a
//! lost gradient.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::gemm::{
    few_rows_big_weight, lock, matmul_into, storage_f32 as host, transpose, HostF32, View,
};

/// Whether [`linear`] applies: CPU f32 with something to differentiate.
pub(crate) fn applies(x: &Tensor, w: &Tensor) -> bool {
    (x.track_op() || w.track_op())
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
}

/// `x @ w^T + b` for `x` `[rows, in]`, `w` `[out, in]`, `b` `[out]` as one op.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    apply(x, w, b, LinearOp { steps: None })
}

fn apply(x: &Tensor, w: &Tensor, b: Option<&Tensor>, op: LinearOp) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    match b {
        Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
        None => x.apply_op2(&w, op),
    }
}

/// A weight (and bias) used once per step of a recurrence, for one training pass: create it
/// before the first step, call [`StepLinear::forward`] at every step. Every step's output must
/// feed the later steps (true of recurrent weights, not of a per-step output projection, which
/// belongs after the loop as one [`linear`]).
pub(crate) struct StepLinear {
    w: Tensor,
    b: Option<Tensor>,
    steps: Arc<Mutex<Steps>>,
}

#[derive(Default)]
struct Steps {
    /// Ops created so far (the next op's index).
    created: usize,
    /// Each step's `(x, dy)`, in the order their backward passes ran.
    seen: Vec<(Tensor, Tensor)>,
    /// `w^T`, row-major, copied at the first backward step that runs feature-major.
    wt: Option<Vec<f32>>,
    /// Set once the weight's gradient has been returned.
    done: bool,
}

impl StepLinear {
    /// Wraps `w` `[out, in]` and `b` `[out]` for one pass.
    pub fn new(w: &Tensor, b: Option<&Tensor>) -> Self {
        Self {
            w: w.clone(),
            b: b.cloned(),
            steps: Arc::default(),
        }
    }

    /// One step: `x` `[.., in]` -> `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let d_in = dims.pop().unwrap_or(0);
        let x2 = x.reshape(((), d_in))?;
        let index = {
            let mut s = lock(&self.steps, "linear-step-train")?;
            s.created += 1;
            s.created - 1
        };
        let op = LinearOp {
            steps: Some((self.steps.clone(), index)),
        };
        dims.push(self.w.dim(0)?);
        apply(&x2, &self.w, self.b.as_ref(), op)?.reshape(dims)
    }
}

struct LinearOp {
    /// For a [`StepLinear`]: its shared record and this step's index.
    steps: Option<(Arc<Mutex<Steps>>, usize)>,
}

/// `[rows, out]`: `x w^T + b`.
fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, rows: usize, d_out: usize) -> Result<Vec<f32>> {
    let d_in = w.len() / d_out.max(1);
    let wv = View::rows(w, d_out, d_in, d_in);
    if few_rows_big_weight(rows, w.len()) {
        let xt = transpose(x, rows, d_in);
        let mut yt = vec![0f32; d_out * rows];
        matmul_into(&mut yt, rows, wv, View::rows(&xt, d_in, rows, rows), false)?;
        let mut y = transpose(&yt, d_out, rows);
        if let Some(b) = b {
            y.chunks_mut(d_out)
                .for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v += b));
        }
        return Ok(y);
    }
    let mut y = vec![0f32; rows * d_out];
    if let Some(b) = b {
        y.chunks_mut(d_out).for_each(|r| r.copy_from_slice(b));
    }
    matmul_into(
        &mut y,
        d_out,
        View::rows(x, rows, d_in, d_in),
        wv.t(),
        b.is_some(),
    )?;
    Ok(y)
}

/// `dy w`: `[rows, in]` from `dy` `[rows, out]` and `w` `[out, in]`. Feature-major
/// (`(w^T dy^T)^T`) when `wt`, a row-major copy of `w^T`, is given: with few rows that layout
/// needs no re-packing of the weight.
fn input_grad(
    g: &[f32],
    w: &[f32],
    wt: Option<&[f32]>,
    rows: usize,
    d_out: usize,
) -> Result<Vec<f32>> {
    let d_in = w.len() / d_out.max(1);
    if let Some(wt) = wt {
        let gt = transpose(g, rows, d_out);
        let mut v = vec![0f32; d_in * rows];
        let wtv = View::rows(wt, d_in, d_out, d_out);
        matmul_into(&mut v, rows, wtv, View::rows(&gt, d_out, rows, rows), false)?;
        return Ok(transpose(&v, d_in, rows));
    }
    let mut v = vec![0f32; rows * d_in];
    let gv = View::rows(g, rows, d_out, d_out);
    matmul_into(&mut v, d_in, gv, View::rows(w, d_out, d_in, d_in), false)?;
    Ok(v)
}

/// Column sums of a row-major `[rows, n]` matrix.
fn col_sums(g: &[f32], n: usize) -> Vec<f32> {
    let mut s = vec![0f32; n];
    g.chunks(n)
        .for_each(|r| s.iter_mut().zip(r).for_each(|(a, v)| *a += v));
    s
}

/// `dy^T x`: `[out, in]` from `dy` `[rows, out]` and `x` `[rows, in]`.
fn weight_grad(g: &[f32], x: &[f32], rows: usize, d_out: usize, d_in: usize) -> Result<Vec<f32>> {
    let mut dw = vec![0f32; d_out * d_in];
    let gt = View::rows(g, rows, d_out, d_out).t();
    matmul_into(&mut dw, d_in, gt, View::rows(x, rows, d_in, d_in), false)?;
    Ok(dw)
}

impl LinearOp {
    fn label(&self) -> &'static str {
        match self.steps {
            Some(_) => "linear-step-train",
            None => "linear-train",
        }
    }

    fn fwd(
        &self,
        sx: (&CpuStorage, &Layout),
        sw: (&CpuStorage, &Layout),
        sb: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (host(sx.0, sx.1, "linear")?, host(sw.0, sw.1, "linear")?);
        let b = sb.map(|(s, l)| host(s, l, "linear")).transpose()?;
        let (rows, d_in) = sx.1.shape().dims2()?;
        let (d_out, w_in) = sw.1.shape().dims2()?;
        if w_in != d_in || b.is_some_and(|b| b.len() != d_out) {
            candle_core::bail!("linear: input [{rows}, {d_in}] against weight [{d_out}, {w_in}]");
        }
        let y = forward(x, w, b, rows, d_out)?;
        Ok((CpuStorage::F32(y), Shape::from((rows, d_out))))
    }

    /// Gradients of `x`, `w` and (when `has_bias`) `b`.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        has_bias: bool,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, d_in) = x.dims2()?;
        let d_out = w.dim(0)?;
        let dev = x.device();
        let grad = grad.contiguous()?;
        let g = HostF32::new(&grad, "linear gradient")?;
        let wh = HostF32::new(w, "linear weight")?;
        let want_w = w.track_op();
        let mut dx = None;
        let (mut dw, mut db) = (None, None);
        match &self.steps {
            None => {
                if x.track_op() {
                    dx = Some(input_grad(g.slice(), wh.slice(), None, rows, d_out)?);
                }
                if want_w {
                    let xh = HostF32::new(x, "linear input")?;
                    dw = Some(weight_grad(g.slice(), xh.slice(), rows, d_out, d_in)?);
                }
                if has_bias {
                    db = Some(col_sums(g.slice(), d_out));
                }
            }
            Some((steps, index)) => {
                let mut s = lock(steps, "linear-step-train")?;
                if s.done {
                    candle_core::bail!(
                        "linear: step {index} ran backward after the first step (a step whose \
                         output does not feed the later steps: use one linear after the loop)"
                    );
                }
                if x.track_op() {
                    // The copy of w^T serves every step (the same weight each time).
                    let wt = few_rows_big_weight(rows, wh.slice().len()).then(|| {
                        s.wt.get_or_insert_with(|| transpose(wh.slice(), d_out, d_in))
                            .as_slice()
                    });
                    dx = Some(input_grad(g.slice(), wh.slice(), wt, rows, d_out)?);
                }
                s.seen.push((x.clone(), grad.clone()));
                if *index == 0 {
                    s.done = true;
                    let n: usize = s.seen.iter().map(|(x, _)| x.dim(0).unwrap_or(0)).sum();
                    let mut xs = Vec::with_capacity(n * d_in);
                    let mut gs = Vec::with_capacity(n * d_out);
                    for (x, g) in &s.seen {
                        xs.extend_from_slice(HostF32::new(x, "linear input")?.slice());
                        gs.extend_from_slice(HostF32::new(g, "linear gradient")?.slice());
                    }
                    s.seen.clear();
                    if want_w {
                        dw = Some(weight_grad(&gs, &xs, n, d_out, d_in)?);
                    }
                    if has_bias {
                        db = Some(col_sums(&gs, d_out));
                    }
                }
            }
        }
        let t = |v: Option<Vec<f32>>, shape: &[usize]| {
            v.map(|v| Tensor::from_vec(v, shape, dev)).transpose()
        };
        Ok((
            t(dx, &[rows, d_in])?,
            t(dw, &[d_out, d_in])?,
            t(db, &[d_out])?,
        ))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        self.label()
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd((s1, l1), (s2, l2), None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, false, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        self.label()
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
        self.fwd((s1, l1), (s2, l2), Some((s3, l3)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, true, grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: &Tensor, b: &Tensor, tol: f32) -> Result<()> {
        let (a, b) = (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        );
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= tol * (1.0 + q.abs()), "{p} vs {q}");
        }
        Ok(())
    }

    fn vars(dev: &Device, shapes: &[&[usize]]) -> Result<Vec<Var>> {
        shapes
            .iter()
            .map(|s| Var::from_tensor(&Tensor::randn(0f32, 0.5, *s, dev)?))
            .collect()
    }

    /// Outputs and the gradients of input, weight and bias equal candle's
    /// `x.matmul(w.t()) + b`, in both layouts (few rows against a large weight, many rows).
    #[test]
    fn linear_equals_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        for (rows, d_in, d_out) in [(5, 1024, 1030), (300, 37, 21), (3, 7, 5)] {
            let v = vars(&dev, &[&[rows, d_in], &[d_out, d_in], &[d_out]])?;
            let r = Tensor::randn(0f32, 1.0, (rows, d_out), &dev)?;
            let ours = linear(&v[0], &v[1], Some(&v[2]))?;
            let reference = v[0].matmul(&v[1].t()?)?.broadcast_add(&v[2])?;
            close(&ours, &reference, 1e-4)?;
            let g1 = (ours * &r)?.sum_all()?.backward()?;
            let g2 = (reference * &r)?.sum_all()?.backward()?;
            for t in &v {
                close(g1.get(t).unwrap(), g2.get(t).unwrap(), 1e-4)?;
            }
            // No bias, and an input that needs no gradient.
            let x = v[0].as_tensor().detach();
            let g1 = (linear(&x, &v[1], None)? * &r)?.sum_all()?.backward()?;
            let g2 = (x.matmul(&v[1].t()?)? * &r)?.sum_all()?.backward()?;
            close(g1.get(&v[1]).unwrap(), g2.get(&v[1]).unwrap(), 1e-4)?;
            assert!(g1.get(&x).is_none());
        }
        Ok(())
    }

    /// A recurrence `h_t = tanh(x_t A^T + h_{t-1} W^T + b)` through two [`StepLinear`]s gives
    /// candle's gradients for the weights, the bias and every step's input.
    #[test]
    fn step_linear_equals_candle_in_a_recurrence() -> Result<()> {
        let dev = Device::Cpu;
        let (b, i, h, steps) = (3, 6, 1030, 4);
        let v = vars(&dev, &[&[steps, b, i], &[h, i], &[h, h], &[h]])?;
        let r = Tensor::randn(0f32, 1.0, (steps, b, h), &dev)?;
        let run = |step: bool| -> Result<Tensor> {
            let (a, w) = (
                StepLinear::new(&v[1], None),
                StepLinear::new(&v[2], Some(&v[3])),
            );
            let mut hs = Vec::new();
            let mut hp = Tensor::zeros((b, h), DType::F32, &dev)?;
            for t in 0..steps {
                let x = v[0].get(t)?;
                let pre = if step {
                    (a.forward(&x)? + w.forward(&hp)?)?
                } else {
                    let xa = x.matmul(&v[1].t()?)?;
                    (xa + hp.matmul(&v[2].t()?)?.broadcast_add(&v[3])?)?
                };
                hp = pre.tanh()?;
                hs.push(hp.clone());
            }
            Tensor::stack(&hs, 0)
        };
        let (ours, reference) = (run(true)?, run(false)?);
        close(&ours, &reference, 1e-4)?;
        let g1 = (ours * &r)?.sum_all()?.backward()?;
        let g2 = (reference * &r)?.sum_all()?.backward()?;
        for t in &v {
            close(g1.get(t).unwrap(), g2.get(t).unwrap(), 1e-4)?;
        }
        Ok(())
    }

    /// Steps that do not feed each other can run backward in any order: when one runs after
    /// the first step's op has returned the weight's gradient, the backward pass fails
    /// instead of dropping that step's share.
    #[test]
    fn step_linear_refuses_a_late_step() -> Result<()> {
        let dev = Device::Cpu;
        let v = vars(&dev, &[&[2, 3], &[4, 3]])?;
        let s = StepLinear::new(&v[1], None);
        let y0 = s.forward(&v[0])?;
        let y1 = s.forward(&v[0])?;
        // Cat visits y1 first, so y0's op runs backward before y1's.
        let loss = Tensor::cat(&[&y1, &y0], 0)?.sum_all()?;
        let msg = format!("{}", loss.backward().expect_err("a late step must fail"));
        assert!(msg.contains("after the first step"), "{msg}");
        Ok(())
    }
}
