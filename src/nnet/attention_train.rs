//! Multi-head self-attention's core in training, `softmax(q k^T / sqrt(hd)) v` per head, as one
//! autograd op for the CPU.
//!
//! candle composes it from head-splitting copies, a batched matmul, a five-op softmax and a
//! second matmul; each keeps a `[B*H, T, T]` tensor, and the backward pass allocates,
//! zero-fills and adds one per node (on the separation recipe's SepFormer that is most of a
//! training step). Here the forward pass keeps nothing: the backward pass recomputes each
//! head's probabilities from q and k (`T x T x hd` multiply-adds, cheap next to the memory
//! traffic they replace) and writes the gradients of q, k and v straight into the packed
//! `[B, T, 3D]` layout of the in-projection. One single-threaded task per sequence; the
//! arithmetic is torch's (q scaled before `q k^T`).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fused::softmax_row;
use super::gemm::{matmul_into_with, storage_f32 as host, HostF32, View};

/// Whether [`self_attention_core`] applies: CPU f32 (gradients wanted or not).
pub(crate) fn applies(qkv: &Tensor) -> bool {
    qkv.device().is_cpu() && qkv.dtype() == DType::F32
}

/// The attention of packed projections `qkv` `[B, T, 3D]` (per position: q, k, v, each `[H,
/// hd]`, as torch's `in_proj` gives them) -> the heads' contexts side by side, `[B, T, D]`.
pub(crate) fn self_attention_core(qkv: &Tensor, nhead: usize) -> Result<Tensor> {
    let (_, _, d3) = qkv.dims3()?;
    if nhead == 0 || !d3.is_multiple_of(3 * nhead) {
        candle_core::bail!("self-attention: packed width {d3} is not 3 x {nhead} heads x hd");
    }
    qkv.contiguous()?.apply_op1(AttentionCore { nhead })
}

struct AttentionCore {
    nhead: usize,
}

/// One sequence's geometry: `t` positions, `h` heads of `hd`, model width `d = h * hd`.
#[derive(Clone, Copy)]
struct Geom {
    t: usize,
    h: usize,
    hd: usize,
    d: usize,
    scale: f32,
}

impl Geom {
    fn new(t: usize, d3: usize, h: usize) -> Self {
        let d = d3 / 3;
        let hd = d / h;
        // torch: q * sqrt(1 / hd) before the product.
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        Self { t, h, hd, d, scale }
    }

    /// Head `hi`'s probabilities `softmax(q_scaled k^T)` into `p` `[T, T]`, its scaled queries
    /// into `q` `[T, hd]`.
    fn probs(&self, seq: &[f32], hi: usize, q: &mut [f32], p: &mut [f32]) -> Result<()> {
        let Geom {
            t, hd, d, scale, ..
        } = *self;
        for (r, qr) in q.chunks_mut(hd).enumerate() {
            let src = &seq[r * 3 * d + hi * hd..][..hd];
            qr.iter_mut().zip(src).for_each(|(q, &v)| *q = v * scale);
        }
        let k = View::rows(&seq[d + hi * hd..], t, hd, 3 * d);
        matmul_into_with(p, t, View::rows(q, t, hd, hd), k.t(), false, 1)?;
        p.chunks_mut(t).for_each(softmax_row);
        Ok(())
    }
}

impl CustomOp1 for AttentionCore {
    fn name(&self) -> &'static str {
        "self-attention-train"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = host(s, l, "self-attention")?;
        let (b, t, d3) = l.shape().dims3()?;
        let g = Geom::new(t, d3, self.nhead);
        let mut ctx = vec![0f32; b * t * g.d];
        if t > 0 && g.hd > 0 {
            ctx.par_chunks_mut(t * g.d)
                .zip(qkv.par_chunks(t * d3))
                .try_for_each_init(
                    || (vec![0f32; t * g.hd], vec![0f32; t * t]),
                    |(q, p), (out, seq)| {
                        for hi in 0..g.h {
                            g.probs(seq, hi, q, p)?;
                            let v = View::rows(&seq[2 * g.d + hi * g.hd..], t, g.hd, d3);
                            let dst = &mut out[hi * g.hd..];
                            matmul_into_with(dst, g.d, View::rows(p, t, t, t), v, false, 1)?;
                        }
                        Ok::<_, candle_core::Error>(())
                    },
                )?;
        }
        Ok((CpuStorage::F32(ctx), (b, t, g.d).into()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, t, d3) = arg.dims3()?;
        let g = Geom::new(t, d3, self.nhead);
        let (t_, hd, d) = (t, g.hd, g.d);
        let grad = grad.contiguous()?;
        let qkv_h = HostF32::new(arg, "self-attention backward")?;
        let do_h = HostF32::new(&grad, "self-attention backward")?;
        let (qkv, dout) = (qkv_h.slice(), do_h.slice());
        let mut dqkv = vec![0f32; b * t * d3];
        if t > 0 && hd > 0 {
            dqkv.par_chunks_mut(t * d3)
                .zip(qkv.par_chunks(t * d3).zip(dout.par_chunks(t * d)))
                .try_for_each_init(
                    || (vec![0f32; t * hd], vec![0f32; t * t], vec![0f32; t * t]),
                    |(q, p, dp), (dseq, (seq, dout))| {
                        for hi in 0..g.h {
                            g.probs(seq, hi, q, p)?;
                            let d_o = View::rows(&dout[hi * hd..], t_, hd, d);
                            let v = View::rows(&seq[2 * d + hi * hd..], t_, hd, d3);
                            let k = View::rows(&seq[d + hi * hd..], t_, hd, d3);
                            let p_v = View::rows(p, t_, t_, t_);
                            // dV = P^T dO
                            let dv = &mut dseq[2 * d + hi * hd..];
                            matmul_into_with(dv, d3, p_v.t(), d_o, false, 1)?;
                            // dP = dO V^T; dS = P (dP - rowsum(dP P)), times the scale (the
                            // scores' gradient with respect to the unscaled q).
                            matmul_into_with(dp, t_, d_o, v.t(), false, 1)?;
                            for (pr, dr) in p.chunks(t_).zip(dp.chunks_mut(t_)) {
                                let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                                dr.iter_mut()
                                    .zip(pr)
                                    .for_each(|(dv, &pv)| *dv = pv * (*dv - dot) * g.scale);
                            }
                            let ds = View::rows(dp, t_, t_, t_);
                            // dQ = dS K, dK = dS^T q
                            let dq = &mut dseq[hi * hd..];
                            matmul_into_with(dq, d3, ds, k, false, 1)?;
                            let q_raw = View::rows(&seq[hi * hd..], t_, hd, d3);
                            let dk = &mut dseq[d + hi * hd..];
                            matmul_into_with(dk, d3, ds.t(), q_raw, false, 1)?;
                        }
                        Ok::<_, candle_core::Error>(())
                    },
                )?;
        }
        Ok(Some(Tensor::from_vec(dqkv, (b, t, d3), arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nnet::fused::tests::max_diff;
    use candle_core::{Device, Var, D};

    /// The composition `MultiheadAttention` used before: split heads, scale q, two products and
    /// candle's softmax.
    fn composed(qkv: &Tensor, h: usize) -> Result<Tensor> {
        let (b, t, d3) = qkv.dims3()?;
        let (d, hd) = (d3 / 3, d3 / 3 / h);
        let x = qkv.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let q = (x.get(0)?.contiguous()? * scale)?.reshape((b * h, t, hd))?;
        let k = x.get(1)?.contiguous()?.reshape((b * h, t, hd))?;
        let v = x.get(2)?.contiguous()?.reshape((b * h, t, hd))?;
        let p = candle_nn::ops::softmax(&q.matmul(&k.t()?)?, D::Minus1)?;
        p.matmul(&v)?
            .reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))
    }

    #[test]
    fn matches_candle_forward_and_gradient() -> Result<()> {
        let dev = Device::Cpu;
        for (b, t, h, hd) in [(3, 7, 2, 4), (2, 33, 4, 16), (1, 1, 1, 8)] {
            let qkv = Var::from_tensor(&(Tensor::randn(0f32, 1.5, (b, t, 3 * h * hd), &dev)?))?;
            // A loss that weights every output differently.
            let w = Tensor::randn(0f32, 1.0, (b, t, h * hd), &dev)?;
            let want = composed(qkv.as_tensor(), h)?;
            let got = self_attention_core(qkv.as_tensor(), h)?;
            assert!(max_diff(&got, &want) < 1e-5, "forward {b} {t} {h}");
            let gw = (want * &w)?.sum_all()?.backward()?;
            let gg = (got * &w)?.sum_all()?.backward()?;
            let (gw, gg) = (gw.get(&qkv).unwrap(), gg.get(&qkv).unwrap());
            let scale = gw.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(scale > 1e-3);
            let err = max_diff(gg, gw);
            assert!(err < 2e-5 * scale.max(1.0), "gradient {b} {t} {h}: {err}");
        }
        Ok(())
    }

    #[test]
    fn rejects_a_width_that_does_not_split_into_heads() {
        let x = Tensor::zeros((1, 2, 10), DType::F32, &Device::Cpu).unwrap();
        assert!(self_attention_core(&x, 3).is_err());
        assert!(self_attention_core(&x, 0).is_err());
    }
}
