//! Eval-mode kernels for the transformer layers on the CPU: a dense layer with its bias folded
//! into the product, and multi-head self-attention that reads queries, keys and values in
//! place from the packed in-projection.
//!
//! candle's batched matmul runs each of the `B * H` small products (`[T, hd] x [hd, T]`,
//! hd = 32 in SepFormer) on all threads, with a barrier after each; permuting q/k/v to
//! `[B*H, T, hd]`, scaling q and transposing the context back are full copies. Here each
//! sequence-head is one single-threaded task (rayon runs them side by side), the scores stay in
//! a per-thread scratch buffer, and the only copy is the context's head-major to row-major
//! reorder. The arithmetic is torch's: q scaled before `q k^T`, softmax, then `p v`.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use super::fgemm::{self, HeadScratch, PackedW};
use super::fused::softmax_row;
use super::gemm::{matmul_into, matmul_into_with, HostF32, View};
use super::qgemm::{qlinear_rows, QWeight};
use super::Activation;

/// Whether the host kernels apply: CPU f32 tensors outside autograd.
pub(crate) fn applies(x: &Tensor, params: &[Option<&Tensor>]) -> bool {
    std::iter::once(x)
        .chain(params.iter().flatten().copied())
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && !t.track_op())
}

/// `x w^T + b` for row-major `x` `[rows, in]`, `w` `[out, in]`: returns `[rows, out]`. The
/// bias is written first and the product accumulated onto it (one pass over the output fewer
/// than adding it afterwards).
pub(crate) fn linear_rows(
    x: &[f32],
    rows: usize,
    w: &Tensor,
    b: Option<&Tensor>,
    what: &str,
) -> Result<Vec<f32>> {
    linear_rows_add(x, rows, (w, None), b, None, fgemm::enabled(), what)
}

/// `residual + (x w^T + b)` (see [`linear_rows`]); `residual` is `[rows, out]`. Residual and
/// bias are written first and the product accumulated onto them: the same sum as torch's
/// `residual + linear(x)` in another order (within an ulp of each output), one pass fewer.
/// With an int8 copy of `w` (`quant`) the product is the int8 one; else with `tiles` it is
/// [`fgemm`]'s (the AVX2 path), else the `gemm` crate's.
pub(crate) fn linear_rows_add(
    x: &[f32],
    rows: usize,
    (w, quant): (&Tensor, Option<&QWeight>),
    b: Option<&Tensor>,
    residual: Option<&[f32]>,
    tiles: bool,
    what: &str,
) -> Result<Vec<f32>> {
    let (out, inp) = w.dims2()?;
    if x.len() != rows * inp {
        candle_core::bail!("{what}: input of {} values is not [{rows}, {inp}]", x.len());
    }
    if residual.is_some_and(|r| r.len() != rows * out) {
        candle_core::bail!("{what}: residual is not [{rows}, {out}]");
    }
    if rows == 0 || out == 0 {
        return Ok(Vec::new());
    }
    // A transposed view of a stored `[in, out]` matrix (e.g. a tied or transposed weight) is
    // read in place, as candle's matmul would.
    let (w, stored_t) = if w.is_contiguous() {
        (w.clone(), false)
    } else if w.t()?.is_contiguous() {
        (w.t()?, true)
    } else {
        (w.contiguous()?, false)
    };
    let wh = HostF32::new(&w, what)?;
    let wv = if stored_t {
        View::rows(wh.slice(), inp, out, out)
    } else {
        View::rows(wh.slice(), out, inp, inp).t()
    };
    let b = b.map(|b| b.contiguous()).transpose()?;
    let bh = b.as_ref().map(|b| HostF32::new(b, what)).transpose()?;
    let bias = bh.as_ref().map(|b| b.slice());
    if bias.is_some_and(|b| b.len() != out) {
        candle_core::bail!("{what}: bias does not have {out} values");
    }
    if let Some(q) = quant {
        if q.dims() != (out, inp) {
            candle_core::bail!("{what}: int8 weight {:?} is not [{out}, {inp}]", q.dims());
        }
        // The int8 kernel adds bias and residual as it writes each tile.
        let mut y = vec![0f32; rows * out];
        qlinear_rows(&mut y, (bias, residual), q, x, rows)?;
        return Ok(y);
    }
    if tiles {
        let ep = fgemm::Epilogue {
            bias,
            residual,
            relu: false,
        };
        return fgemm::par_rows(x, rows, &PackedW::new(wv.t()), ep);
    }
    // The initial output in one pass: residual + bias, or either, or zeros.
    let mut y = Vec::with_capacity(rows * out);
    match (residual, bias) {
        (Some(r), Some(b)) => {
            for row in r.chunks(out) {
                y.extend(row.iter().zip(b).map(|(r, b)| r + b));
            }
        }
        (Some(r), None) => y.extend_from_slice(r),
        (None, Some(b)) => (0..rows).for_each(|_| y.extend_from_slice(b)),
        (None, None) => y.resize(rows * out, 0.0),
    }
    let accumulate = bias.is_some() || residual.is_some();
    matmul_into(&mut y, out, View::rows(x, rows, inp, inp), wv, accumulate)?;
    Ok(y)
}

/// `x w^T + b` on a tensor whose last dimension is `in` (eval, CPU f32): same shape with the
/// last dimension `out`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let x = x.contiguous()?;
    let mut shape = x.dims().to_vec();
    let inp = shape.pop().unwrap_or(0);
    let rows = x.elem_count() / inp.max(1);
    let y = linear_rows(HostF32::new(&x, "linear")?.slice(), rows, w, b, "linear")?;
    shape.push(w.dim(0)?);
    Tensor::from_vec(y, shape, x.device())
}

/// The parameters of one packed-projection self-attention (torch's `nn.MultiheadAttention`).
pub(crate) struct SelfAttention<'a> {
    pub in_w: &'a Tensor,
    pub in_b: &'a Tensor,
    pub out_w: &'a Tensor,
    pub out_b: &'a Tensor,
    pub nhead: usize,
    /// int8 copies of `in_w` and `out_w`, if quantized.
    pub quant: Option<&'a [QWeight; 2]>,
}

impl SelfAttention<'_> {
    /// `residual + attention(x)` for `x` `[B, T, D]` (no masks; `residual` of the same shape,
    /// or none) -> `[B, T, D]`.
    /// The products are [`fgemm`]'s on the AVX2 path (see `with_avx2_tiles`), else the `gemm`
    /// crate's.
    pub fn forward_add(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let tiles = fgemm::enabled();
        let (b, t, d) = x.dims3()?;
        let h = self.nhead;
        if h == 0 || !d.is_multiple_of(h) {
            candle_core::bail!("MultiheadAttention: d_model {d} not divisible by nhead {h}");
        }
        let x = x.contiguous()?;
        if tiles && self.quant.is_none() && fgemm::per_sequence(b) {
            return self.fused(&x, (b, t, d, h), residual);
        }
        let qkv = linear_rows_add(
            HostF32::new(&x, "MultiheadAttention")?.slice(),
            b * t,
            (self.in_w, self.quant.map(|q| &q[0])),
            Some(self.in_b),
            None,
            tiles,
            "MultiheadAttention in_proj",
        )?;
        let ctx = context(&qkv, (b, t, d, h), tiles)?;
        let residual = residual.map(|r| r.contiguous()).transpose()?;
        let rh = residual
            .as_ref()
            .map(|r| HostF32::new(r, "MultiheadAttention residual"))
            .transpose()?;
        let y = linear_rows_add(
            &ctx,
            b * t,
            (self.out_w, self.quant.map(|q| &q[1])),
            Some(self.out_b),
            rh.as_ref().map(|r| r.slice()),
            tiles,
            "MultiheadAttention out_proj",
        )?;
        Tensor::from_vec(y, (b, t, d), x.device())
    }

    /// The layer with [`fgemm::self_attention`] (one task per sequence).
    fn fused(
        &self,
        x: &Tensor,
        (b, t, d, h): (usize, usize, usize, usize),
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let what = "MultiheadAttention";
        let (b_in, b_out) = (self.in_b.contiguous()?, self.out_b.contiguous()?);
        let (b_in, b_out) = (HostF32::new(&b_in, what)?, HostF32::new(&b_out, what)?);
        let residual = residual.map(|r| r.contiguous()).transpose()?;
        let rh = residual
            .as_ref()
            .map(|r| HostF32::new(r, what))
            .transpose()?;
        let y = fgemm::self_attention(
            HostF32::new(x, what)?.slice(),
            (b, t, d, h),
            (&packed(self.in_w, what)?, b_in.slice()),
            (&packed(self.out_w, what)?, b_out.slice()),
            rh.as_ref().map(|r| r.slice()),
        )?;
        Tensor::from_vec(y, (b, t, d), x.device())
    }
}

/// A weight `[out, in]` packed for [`fgemm`].
fn packed(w: &Tensor, what: &str) -> Result<PackedW> {
    let (o, i) = w.dims2()?;
    let w = w.contiguous()?;
    let h = HostF32::new(&w, what)?;
    Ok(PackedW::new(View::rows(h.slice(), o, i, i)))
}

/// The attention context `[B, T, H * hd]` from the packed projection `qkv` `[B, T, 3 D]`:
/// per sequence and head, `softmax((q * sqrt(1 / hd)) k^T) v` (torch's order).
fn context(
    qkv: &[f32],
    (b, t, d, h): (usize, usize, usize, usize),
    tiles: bool,
) -> Result<Vec<f32>> {
    let hd = d / h;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let mut ctx = vec![0f32; b * t * d];
    if t == 0 || hd == 0 {
        return Ok(ctx);
    }
    // Head `o / hd`'s queries (o), keys (d + o) or values (2 d + o) of sequence `bi`.
    let view = |bi: usize, o: usize| View::rows(&qkv[bi * t * 3 * d + o..], t, hd, 3 * d);
    if tiles && fgemm::per_sequence(b) {
        // One task per sequence, writing its heads' columns of the context in place.
        ctx.par_chunks_mut(t * d).enumerate().try_for_each_init(
            HeadScratch::default,
            |s, (bi, dst)| {
                let seq = &qkv[bi * t * 3 * d..][..t * 3 * d];
                fgemm::sequence_context(dst, seq, (t, d, h), s)
            },
        )?;
        return Ok(ctx);
    }
    // One task per sequence-head, into [B, H, T, hd], then reordered.
    let mut heads = vec![0f32; b * t * d];
    heads.par_chunks_mut(t * hd).enumerate().try_for_each_init(
        || {
            (
                vec![0f32; t * hd],
                vec![0f32; t * t],
                HeadScratch::default(),
            )
        },
        |(q, s, scratch), (i, out)| {
            let (bi, o) = (i / h, (i % h) * hd);
            let (qv, k, v) = (view(bi, o), view(bi, d + o), view(bi, 2 * d + o));
            if tiles {
                return fgemm::attention_head(out, (qv, k, v), scale, hd, scratch);
            }
            for (r, qr) in q.chunks_mut(hd).enumerate() {
                let src = &qv.data[r * qv.rs..][..hd];
                qr.iter_mut().zip(src).for_each(|(q, &v)| *q = v * scale);
            }
            matmul_into_with(s, t, View::rows(q, t, hd, hd), k.t(), false, 1)?;
            s.chunks_mut(t).for_each(softmax_row);
            matmul_into_with(out, hd, View::rows(s, t, t, t), v, false, 1)
        },
    )?;
    ctx.par_chunks_mut(t * d).enumerate().for_each(|(bi, dst)| {
        for hi in 0..h {
            let src = &heads[(bi * h + hi) * t * hd..][..t * hd];
            for (r, row) in src.chunks(hd).enumerate() {
                dst[r * d + hi * hd..][..hd].copy_from_slice(row);
            }
        }
    });
    Ok(ctx)
}

/// The parameters of a `PositionalwiseFeedForward` (`Linear -> activation -> Linear`).
pub(crate) struct FeedForward<'a> {
    pub w1: &'a Tensor,
    pub b1: &'a Tensor,
    pub w2: &'a Tensor,
    pub b2: &'a Tensor,
    pub activation: Activation,
    /// int8 copies of `w1` and `w2`, if quantized.
    pub quant: Option<&'a [QWeight; 2]>,
}

impl FeedForward<'_> {
    /// `residual + ffn(x)` over the last dimension of `x` (`residual` of the output's shape,
    /// or none). ReLU is applied in place on the hidden layer.
    /// The products are [`fgemm`]'s on the AVX2 path (ReLU layers then run both products
    /// block by block of rows), else the `gemm` crate's.
    pub fn forward_add(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let tiles = fgemm::enabled();
        let x = x.contiguous()?;
        let mut shape = x.dims().to_vec();
        let inp = shape.pop().unwrap_or(0);
        let rows = x.elem_count() / inp.max(1);
        let what = "PositionalwiseFeedForward";
        let residual = residual.map(|r| r.contiguous()).transpose()?;
        let rh = residual
            .as_ref()
            .map(|r| HostF32::new(r, what))
            .transpose()?;
        if tiles && self.quant.is_none() && self.activation == Activation::Relu {
            let y = self.fused_relu(HostF32::new(&x, what)?.slice(), rows, rh.as_ref())?;
            shape.push(self.w2.dim(0)?);
            return Tensor::from_vec(y, shape, x.device());
        }
        let mut hdn = linear_rows_add(
            HostF32::new(&x, what)?.slice(),
            rows,
            (self.w1, self.quant.map(|q| &q[0])),
            Some(self.b1),
            None,
            tiles,
            what,
        )?;
        match self.activation {
            // NaN stays NaN, as in torch.
            Activation::Relu => hdn.par_chunks_mut(1 << 14).for_each(|c| {
                // A select, not a conditional store, so that it vectorises.
                c.iter_mut()
                    .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v })
            }),
            other => {
                let t = Tensor::from_vec(hdn, (rows, self.w1.dim(0)?), x.device())?;
                hdn = other.forward(&t)?.flatten_all()?.to_vec1::<f32>()?;
            }
        }
        let y = linear_rows_add(
            &hdn,
            rows,
            (self.w2, self.quant.map(|q| &q[1])),
            Some(self.b2),
            rh.as_ref().map(|r| r.slice()),
            tiles,
            what,
        )?;
        shape.push(self.w2.dim(0)?);
        Tensor::from_vec(y, shape, x.device())
    }

    /// Both products of a ReLU layer with [`fgemm::feed_forward`].
    fn fused_relu(&self, x: &[f32], rows: usize, residual: Option<&HostF32>) -> Result<Vec<f32>> {
        let what = "PositionalwiseFeedForward";
        let (b1, b2) = (self.b1.contiguous()?, self.b2.contiguous()?);
        let (b1, b2) = (HostF32::new(&b1, what)?, HostF32::new(&b2, what)?);
        let (p1, p2) = (packed(self.w1, what)?, packed(self.w2, what)?);
        if b1.slice().len() != p1.dims().0 || b2.slice().len() != p2.dims().0 {
            candle_core::bail!("{what}: a bias does not match its weight");
        }
        if p1.dims().1 * rows != x.len() {
            candle_core::bail!("{what}: input is not [{rows}, {}]", p1.dims().1);
        }
        fgemm::feed_forward(
            x,
            rows,
            (&p1, b1.slice()),
            (&p2, b2.slice()),
            residual.map(|r| r.slice()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nnet::attention::MultiheadAttention;
    use crate::nnet::fused::tests::max_diff;
    use crate::nnet::with_avx2_tiles;
    use candle_core::{Device, Var};
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn host_attention_equals_candle_composition() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        // hd = 6 and T = 37: no SIMD-width multiples anywhere.
        let att = MultiheadAttention::new(4, 24, 0.0, vb)?;
        for var in vm.data().lock().unwrap().values() {
            // Random weights and biases (the default initialisation leaves them at zero).
            var.set(&Tensor::randn(0f32, 0.5, var.dims(), &Device::Cpu)?)?;
        }
        let x = Tensor::randn(0f32, 1.0, (3, 37, 24), &Device::Cpu)?;
        // Training mode with dropout 0 runs candle's ops (the path autograd uses).
        let reference = att.forward(&Var::from_tensor(&x)?.as_tensor().clone(), true)?;
        let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(scale > 0.1);
        let one = Tensor::randn(0f32, 1.0, (2, 1, 24), &Device::Cpu)?;
        let r1 = att.forward(&Var::from_tensor(&one)?.as_tensor().clone(), true)?;
        // 40 sequences: the tiles run one task per sequence (else per sequence-head).
        let many = Tensor::randn(0f32, 1.0, (40, 9, 24), &Device::Cpu)?;
        let r40 = att.forward(&Var::from_tensor(&many)?.as_tensor().clone(), true)?;
        // The `gemm` crate's products and the AVX2 tiles (where the CPU has AVX2).
        for tiles in [false, fgemm::supported()] {
            with_avx2_tiles(tiles, || -> Result<()> {
                let host = att.forward(&x, false)?;
                let diff = max_diff(&reference, &host);
                assert!(diff < 1e-5 * scale, "tiles {tiles}: {diff}");
                // A sequence of one frame and an empty batch.
                assert!(max_diff(&r1, &att.forward(&one, false)?) < 1e-5);
                assert!(max_diff(&r40, &att.forward(&many, false)?) < 1e-5 * scale);
                let empty = Tensor::zeros((0, 5, 24), DType::F32, &Device::Cpu)?;
                assert_eq!(att.forward(&empty, false)?.dims(), &[0, 5, 24]);
                Ok(())
            })?;
        }
        Ok(())
    }

    #[test]
    fn fused_transformer_layers_equal_candle_composition() -> Result<()> {
        use crate::nnet::transformer::{TransformerConfig, TransformerEncoderLayer};
        for (normalize_before, activation) in [
            (true, Activation::Relu),
            (false, Activation::Relu),
            (true, Activation::Gelu),
        ] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let cfg = TransformerConfig {
                num_layers: 1,
                d_model: 16,
                nhead: 2,
                d_ffn: 40,
                dropout: 0.0,
                activation,
                normalize_before,
            };
            let layer = TransformerEncoderLayer::new(&cfg, vb)?;
            for var in vm.data().lock().unwrap().values() {
                var.set(&Tensor::randn(0f32, 0.5, var.dims(), &Device::Cpu)?)?;
            }
            // 130 rows: more than one block of the tiles' feed-forward.
            let x = Tensor::randn(0f32, 1.0, (2, 65, 16), &Device::Cpu)?;
            let reference = layer.forward(&x, true)?; // candle's ops (dropout 0)
            for tiles in [false, fgemm::supported()] {
                let host = with_avx2_tiles(tiles, || layer.forward(&x, false))?;
                let diff = max_diff(&reference, &host);
                assert!(
                    diff < 2e-5,
                    "{normalize_before} {activation:?} {tiles}: {diff}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn host_linear_equals_matmul_plus_bias() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 33, 19), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (11, 19), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 11, &dev)?;
        let reference = x
            .reshape((66, 19))?
            .matmul(&w.t()?)?
            .broadcast_add(&b)?
            .reshape((2, 33, 11))?;
        let no_bias = x.reshape((66, 19))?.matmul(&w.t()?)?.reshape((2, 33, 11))?;
        // A weight stored as [in, out] and used through its transpose.
        let wt = w.t()?.contiguous()?.t()?;
        assert!(!wt.is_contiguous());
        for tiles in [false, fgemm::supported()] {
            with_avx2_tiles(tiles, || -> Result<()> {
                assert!(max_diff(&reference, &linear(&x, &w, Some(&b))?) < 1e-5);
                assert!(max_diff(&no_bias, &linear(&x, &w, None)?) < 1e-5);
                assert!(max_diff(&reference, &linear(&x, &wt, Some(&b))?) < 1e-5);
                let bad = Tensor::zeros(10, DType::F32, &dev)?;
                let err = linear(&x, &w, Some(&bad)).unwrap_err().to_string();
                assert!(err.contains("bias"), "{err}");
                Ok(())
            })?;
        }
        Ok(())
    }
}
