//! The building blocks of ECAPA-TDNN: TDNN block, Res2Net, squeeze-excitation, SE-Res2Net,
//! attentive statistical pooling; each with its eval-mode CPU path (host kernels, the
//! composed candle ops staying the reference and the training path).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::nnet::cnn::Conv1d;
use crate::nnet::fused::bias_relu_affine_rows;
use crate::nnet::gemm::{matmul_into, HostF32, View};
use crate::nnet::normalization::BatchNorm1d;
use crate::nnet::qgemm::{qmatmul_into, quantize_tensor, QWeight};
use crate::nnet::stats_pooling::weighted_mean_std;
use std::sync::Arc;

/// Conv1d -> ReLU -> BatchNorm1d (SpeechBrain's order).
#[derive(Debug, Clone)]
pub struct TdnnBlock {
    conv: Conv1d,
    norm: BatchNorm1d,
    /// int8 copy of the weight's input part for [`Self::forward_with_context`].
    x_quant: Option<Arc<QWeight>>,
}

impl TdnnBlock {
    pub(super) fn new(
        cin: usize,
        cout: usize,
        k: usize,
        d: usize,
        groups: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv1d::new(cin, cout, k, d, groups, vb.pp("conv"))?,
            norm: BatchNorm1d::new(cout, vb.pp("norm"))?,
            x_quant: None,
        })
    }
    pub(super) fn quantize_dynamic(&mut self) -> Result<()> {
        self.conv.quantize_dynamic()
    }
    /// int8 for [`Self::forward_with_context`]: the weight's first `c` input channels (the
    /// context part is a per-utterance bias and keeps f32).
    fn quantize_input_part(&mut self, c: usize) -> Result<()> {
        let w = self.conv.weight().squeeze(2)?.narrow(1, 0, c)?;
        self.x_quant = Some(Arc::new(quantize_tensor(&w)?));
        Ok(())
    }
    pub(super) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            return self
                .norm
                .forward_t(&self.conv.forward_mode(x, train)?.relu()?, train);
        }
        if self.conv.host_ok(x) {
            // The convolution, then bias + ReLU + BatchNorm in place.
            let (b, _, t) = x.dims3()?;
            let co = self.conv.weight().dim(0)?;
            let mut y = self.conv.forward_host_batch(x)?;
            self.epilogue()?.apply(&mut y, t);
            return Tensor::from_vec(y, (b, co, t), x.device());
        }
        // Eval: bias, ReLU and BatchNorm in one pass.
        let (scale, shift) = self.norm.eval_affine()?;
        let y = self.conv.forward_unbiased(x, false)?;
        let bias = self.conv.bias().map(|b| b.detach());
        crate::nnet::fused::bias_relu_affine(&y, bias.as_ref(), &scale, &shift)
    }

    /// Eval-mode constants: the conv bias and the BatchNorm as `x * scale + shift`.
    fn epilogue(&self) -> Result<Epilogue> {
        let (scale, shift) = self.norm.eval_affine()?;
        Ok(Epilogue {
            bias: self.conv.bias().map(|b| b.to_vec1::<f32>()).transpose()?,
            scale: scale.to_vec1()?,
            shift: shift.to_vec1()?,
        })
    }

    /// Eval on host slices for one sequence: `out` `[C_out, T]` for `x` `[C_in, T]` with rows
    /// `ld` apart (see `Conv1d::forward_host`).
    fn forward_host(
        &self,
        x: &[f32],
        (t, ld): (usize, usize),
        ep: &Epilogue,
        out: &mut [f32],
    ) -> Result<()> {
        self.conv.forward_host(x, (t, ld), out)?;
        ep.apply(out, t);
        Ok(())
    }

    /// The block on `cat(parts, 1)` (multi-layer feature aggregation). In eval on the CPU with
    /// a 1x1 kernel the concatenation is written once, with its rows padded to a multiple of 16
    /// frames, so that the GEMM needs no ragged edge (see `Conv1d::forward_host`).
    pub(super) fn forward_cat(&self, parts: &[Tensor], train: bool) -> Result<Tensor> {
        let first = parts
            .first()
            .ok_or_else(|| candle_core::Error::Msg("no input".into()))?;
        let (b, _, t) = first.dims3()?;
        let (co, ci, k) = self.conv.weight().dims3()?;
        if train || k != 1 || !self.conv.host_ok(first) {
            return self.forward(&Tensor::cat(parts, 1)?, train);
        }
        let tp = t.next_multiple_of(16);
        let parts = parts
            .iter()
            .map(|p| p.contiguous())
            .collect::<Result<Vec<_>>>()?;
        let hosts = parts
            .iter()
            .map(|p| HostF32::new(p, "TDNN input"))
            .collect::<Result<Vec<_>>>()?;
        let ep = self.epilogue()?;
        let mut cat = vec![0f32; ci * tp];
        let mut out = vec![0f32; b * co * t];
        for (bi, ob) in out.chunks_mut(co * t).enumerate() {
            let mut rows = cat.chunks_mut(tp);
            for (p, h) in parts.iter().zip(&hosts) {
                let c = p.dim(1)?;
                for src in h.slice()[bi * c * t..(bi + 1) * c * t].chunks(t) {
                    match rows.next() {
                        Some(row) => row[..t].copy_from_slice(src),
                        None => candle_core::bail!("TDNN: inputs have more than {ci} channels"),
                    }
                }
            }
            self.forward_host(&cat, (t, tp), &ep, ob)?;
        }
        Tensor::from_vec(out, (b, co, t), first.device())
    }

    /// The block applied to `cat([x, ctx repeated over time], 1)` without building that
    /// concatenation (1x1 conv only): `ctx` `[B, Cc]` is constant over time, so its part of
    /// the convolution is a per-utterance bias.
    fn forward_with_context(&self, x: &Tensor, ctx: &Tensor, train: bool) -> Result<Tensor> {
        let w = crate::nnet::param(self.conv.weight(), train).squeeze(2)?; // [O, C + Cc]
        let c = x.dim(1)?;
        let mut bias = ctx.matmul(&w.narrow(1, c, w.dim(1)? - c)?.t()?)?; // [B, O]
        if let Some(b) = self.conv.bias() {
            bias = bias.broadcast_add(&crate::nnet::param(b, train))?;
        }
        if !train && self.conv.host_ok(x) && w.is_contiguous() {
            return self.context_host(x, &w, &bias);
        }
        let y = crate::nnet::cnn::pointwise(x, &w.narrow(1, 0, c)?)?;
        let y = y.broadcast_add(&bias.unsqueeze(2)?)?.relu()?;
        self.norm.forward_t(&y, train)
    }
}

impl TdnnBlock {
    /// [`Self::forward_with_context`] in eval on the CPU: the input part of the weight `w`
    /// `[O, C + Cc]` read in place (or its int8 copy), then the per-utterance `bias` `[B, O]`,
    /// ReLU and BatchNorm in one pass.
    fn context_host(&self, x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let (o, ctot) = w.dims2()?;
        let x = x.contiguous()?;
        let (xh, wh) = (
            HostF32::new(&x, "ASP input")?,
            HostF32::new(w, "ASP weight")?,
        );
        let bias = bias.to_vec2::<f32>()?;
        let (scale, shift) = self.norm.eval_affine()?;
        let (scale, shift) = (scale.to_vec1::<f32>()?, shift.to_vec1::<f32>()?);
        let mut out = vec![0f32; b * o * t];
        for ((xb, ob), bias) in xh
            .slice()
            .chunks(c * t)
            .zip(out.chunks_mut(o * t))
            .zip(&bias)
        {
            let xv = View::rows(xb, c, t, t);
            match &self.x_quant {
                Some(q) => qmatmul_into(ob, t, q, xv)?,
                None => matmul_into(ob, t, View::rows(wh.slice(), o, c, ctot), xv, false)?,
            }
            bias_relu_affine_rows(ob, t, Some(bias), &scale, &shift);
        }
        Tensor::from_vec(out, (b, o, t), x.device())
    }
}

/// Res2Net: channel groups, each convolved with the previous group's output added.
#[derive(Debug, Clone)]
struct Res2NetBlock {
    blocks: Vec<TdnnBlock>,
    scale: usize,
}

impl Res2NetBlock {
    pub(super) fn new(c: usize, scale: usize, k: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        let w = c / scale;
        let blocks = (0..scale - 1)
            .map(|i| TdnnBlock::new(w, w, k, d, 1, vb.pp("blocks").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self { blocks, scale })
    }
    fn quantize_dynamic(&mut self) -> Result<()> {
        self.blocks
            .iter_mut()
            .try_for_each(|b| b.quantize_dynamic())
    }
    pub(super) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train && self.blocks.iter().all(|b| b.conv.host_ok(x)) && x.dim(1)? % self.scale == 0 {
            return self.forward_host(x);
        }
        let chunks = x.chunk(self.scale, 1)?;
        let mut ys: Vec<Tensor> = Vec::with_capacity(self.scale);
        for (i, xi) in chunks.iter().enumerate() {
            let y = match i {
                0 => xi.clone(),
                1 => self.blocks[0].forward(xi, train)?,
                _ => self.blocks[i - 1].forward(&(xi + &ys[i - 1])?, train)?,
            };
            ys.push(y);
        }
        Tensor::cat(&ys, 1)
    }
}

impl Res2NetBlock {
    /// Eval on the CPU: each group's convolution reads its input (the group plus the previous
    /// group's output) from a scratch row and writes straight into its place in the output,
    /// so no chunk, sum or concatenation runs as a separate op.
    fn forward_host(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let n = c / self.scale * t; // values per group
        let x = x.contiguous()?;
        let xs = HostF32::new(&x, "Res2Net input")?;
        let eps = self
            .blocks
            .iter()
            .map(|b| b.epilogue())
            .collect::<Result<Vec<_>>>()?;
        let mut out = vec![0f32; b * c * t];
        let mut inp = vec![0f32; n];
        for (xb, ob) in xs.slice().chunks(c * t).zip(out.chunks_mut(c * t)) {
            ob[..n].copy_from_slice(&xb[..n]);
            for i in 1..self.scale {
                let (done, rest) = ob.split_at_mut(i * n);
                let xi = &xb[i * n..(i + 1) * n];
                if i == 1 {
                    inp.copy_from_slice(xi);
                } else {
                    let prev = &done[(i - 1) * n..];
                    inp.iter_mut()
                        .zip(xi.iter().zip(prev))
                        .for_each(|(v, (a, p))| *v = a + p);
                }
                self.blocks[i - 1].forward_host(&inp, (t, t), &eps[i - 1], &mut rest[..n])?;
            }
        }
        Tensor::from_vec(out, (b, c, t), x.device())
    }
}

/// A TDNN block's eval-mode constants (see `TdnnBlock::epilogue`).
struct Epilogue {
    bias: Option<Vec<f32>>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl Epilogue {
    /// Bias, ReLU and BatchNorm in place on rows of `t` frames (`[.., C, T]`).
    fn apply(&self, y: &mut [f32], t: usize) {
        bias_relu_affine_rows(y, t, self.bias.as_deref(), &self.scale, &self.shift);
    }
}

/// Relative lengths -> `[B, 1, L]` float mask with `t < len * L` (SpeechBrain's length_to_mask).
fn length_mask(lengths: &Tensor, l: usize) -> Result<Tensor> {
    let lens = lengths.to_dtype(DType::F32)?;
    let abs = (lens * l as f64)?.unsqueeze(1)?; // [B,1]
    let t = Tensor::arange(0f32, l as f32, lengths.device())?.unsqueeze(0)?; // [1,L]
    t.broadcast_lt(&abs)?.to_dtype(DType::F32)?.unsqueeze(1)
}

/// Squeeze-excitation with the mean over valid frames.
#[derive(Debug, Clone)]
struct SeBlock {
    conv1: Conv1d,
    conv2: Conv1d,
}

impl SeBlock {
    pub(super) fn new(c: usize, se: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: Conv1d::new(c, se, 1, 1, 1, vb.pp("conv1"))?,
            conv2: Conv1d::new(se, c, 1, 1, 1, vb.pp("conv2"))?,
        })
    }
    /// The excitation `[B, C, 1]` (the gate `forward` multiplies `x` by).
    fn gate(&self, x: &Tensor, lengths: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let l = x.dim(2)?;
        let s = match lengths {
            Some(lens) => {
                let mask = length_mask(lens, l)?;
                let total = mask.sum_keepdim(2)?;
                x.broadcast_mul(&mask)?
                    .sum_keepdim(2)?
                    .broadcast_div(&total)?
            }
            None => x.mean_keepdim(2)?,
        };
        let s = self.conv1.forward_mode(&s, train)?.relu()?;
        candle_nn::ops::sigmoid(&self.conv2.forward_mode(&s, train)?)
    }
}

/// TDNN -> Res2Net -> TDNN -> SE, plus a residual (1x1 conv when channels change).
#[derive(Debug, Clone)]
pub(super) struct SeRes2NetBlock {
    tdnn1: TdnnBlock,
    res2net: Res2NetBlock,
    tdnn2: TdnnBlock,
    se: SeBlock,
    shortcut: Option<Conv1d>,
}

impl SeRes2NetBlock {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cin: usize,
        cout: usize,
        scale: usize,
        se: usize,
        k: usize,
        d: usize,
        groups: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            tdnn1: TdnnBlock::new(cin, cout, 1, 1, groups, vb.pp("tdnn1"))?,
            res2net: Res2NetBlock::new(cout, scale, k, d, vb.pp("res2net_block"))?,
            tdnn2: TdnnBlock::new(cout, cout, 1, 1, groups, vb.pp("tdnn2"))?,
            se: SeBlock::new(cout, se, vb.pp("se_block"))?,
            shortcut: if cin != cout {
                Some(Conv1d::new(cin, cout, 1, 1, 1, vb.pp("shortcut"))?)
            } else {
                None
            },
        })
    }
    /// int8 for every convolution over time; the squeeze-excitation's (one frame each) keeps
    /// f32: it costs nothing and scales every channel.
    pub(super) fn quantize_dynamic(&mut self) -> Result<()> {
        self.tdnn1.quantize_dynamic()?;
        self.res2net.quantize_dynamic()?;
        self.tdnn2.quantize_dynamic()?;
        self.shortcut
            .iter_mut()
            .try_for_each(|s| s.quantize_dynamic())
    }
    pub(super) fn forward(
        &self,
        x: &Tensor,
        lengths: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let residual = match &self.shortcut {
            Some(s) => s.forward_mode(x, train)?,
            None => x.clone(),
        };
        let y = self.tdnn1.forward(x, train)?;
        let y = self.res2net.forward(&y, train)?;
        let y = self.tdnn2.forward(&y, train)?;
        let gate = self.se.gate(&y, lengths, train)?;
        if train {
            return gate.broadcast_mul(&y)? + residual;
        }
        // Eval: the gate and the residual connection in one pass.
        crate::nnet::fused::scale_add(&y, &gate, &residual)
    }
}

/// Attentive statistical pooling: attention over valid frames, weighted mean and std.
#[derive(Debug, Clone)]
pub(super) struct AttentiveStatisticsPooling {
    tdnn: TdnnBlock,
    conv: Conv1d,
    global_context: bool,
}

const ASP_EPS: f64 = 1e-12;

fn weighted_stats(x: &Tensor, w: &Tensor) -> Result<(Tensor, Tensor)> {
    let mean = x.broadcast_mul(w)?.sum(2)?; // [B, C]
    let centred = x.broadcast_sub(&mean.unsqueeze(2)?)?.sqr()?;
    let std = centred
        .broadcast_mul(w)?
        .sum(2)?
        .clamp(ASP_EPS, f64::INFINITY)?
        .sqrt()?;
    Ok((mean, std))
}

impl AttentiveStatisticsPooling {
    pub(super) fn new(c: usize, att: usize, global_context: bool, vb: VarBuilder) -> Result<Self> {
        let cin = if global_context { 3 * c } else { c };
        Ok(Self {
            tdnn: TdnnBlock::new(cin, att, 1, 1, 1, vb.pp("tdnn"))?,
            conv: Conv1d::new(att, c, 1, 1, 1, vb.pp("conv"))?,
            global_context,
        })
    }
    pub(super) fn quantize_dynamic(&mut self) -> Result<()> {
        if self.global_context {
            self.tdnn.quantize_input_part(self.conv.weight().dim(0)?)?;
        } else {
            self.tdnn.quantize_dynamic()?;
        }
        self.conv.quantize_dynamic()
    }
    pub(super) fn forward(&self, x: &Tensor, lengths: &Tensor, train: bool) -> Result<Tensor> {
        let l = x.dim(2)?;
        if !train && x.device().is_cpu() && x.dtype() == DType::F32 {
            // Valid frames as length_mask counts them: t < len * L in f32.
            let valid: Vec<usize> = (lengths.to_dtype(DType::F32)?.to_vec1::<f32>()?.iter())
                .map(|&r| (0..l).filter(|&t| (t as f32) < r * l as f32).count())
                .collect();
            if valid.iter().all(|&n| n > 0) {
                return self.forward_eval_cpu(x, &valid);
            }
        }
        let mask = length_mask(lengths, l)?; // [B,1,L]
        let hidden = if self.global_context {
            // SpeechBrain concatenates [x, mean, std] repeated over time (3C channels); the
            // same convolution is done here without materialising that [B, 3C, L] tensor.
            let total = mask.sum_keepdim(2)?;
            let (mean, std) = weighted_stats(x, &mask.broadcast_div(&total)?)?;
            self.tdnn
                .forward_with_context(x, &Tensor::cat(&[mean, std], 1)?, train)?
        } else {
            self.tdnn.forward(x, train)?
        };
        let attn = self.conv.forward_mode(&hidden.tanh()?, train)?;
        // Padded frames get -inf before the softmax.
        let neg = ((mask.ones_like()? - &mask)? * -1e30)?;
        let attn = attn.broadcast_add(&neg)?;
        let attn = candle_nn::ops::softmax(&attn, D::Minus1)?;
        let (mean, std) = weighted_stats(x, &attn)?;
        Tensor::cat(&[mean, std], 1)?.unsqueeze(2)
    }

    /// Eval on the CPU: the same computation with the masked statistics and the masked
    /// softmax + weighted statistics each in one pass per channel.
    fn forward_eval_cpu(&self, x: &Tensor, valid: &[usize]) -> Result<Tensor> {
        let hidden = if self.global_context {
            let context = weighted_mean_std(x, None, valid)?; // [B, 2C]: mean, std
            self.tdnn.forward_with_context(x, &context, false)?
        } else {
            self.tdnn.forward(x, false)?
        };
        // The conv's bias is left out: softmax over time is unchanged by a per-channel constant.
        let attn = self.conv.forward_unbiased(&hidden.tanh()?, false)?;
        weighted_mean_std(x, Some(&attn), valid)?.unsqueeze(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn randomize(vm: &VarMap) -> Result<()> {
        for (name, var) in vm.data().lock().expect("varmap").iter() {
            let r = Tensor::randn(0f32, 1.0, var.shape(), &Device::Cpu)?;
            // Running variances must be positive.
            let r = if name.contains("running_var") {
                (r.abs()? + 0.5)?
            } else {
                r
            };
            var.set(&r)?;
        }
        Ok(())
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    /// The eval host kernels (TDNN block, Res2Net groups written in place) equal candle's
    /// composed eval-mode ops.
    #[test]
    fn host_kernels_equal_composed_ops() -> Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let tdnn = TdnnBlock::new(8, 6, 3, 2, 1, vb.pp("tdnn"))?;
        let mfa = TdnnBlock::new(8, 6, 1, 1, 1, vb.pp("mfa"))?;
        let r2 = Res2NetBlock::new(16, 4, 3, 2, vb.pp("r2"))?;
        randomize(&vm)?;
        // candle's ops: the convolution in training mode (no host kernel), BatchNorm in eval.
        let composed = |b: &TdnnBlock, x: &Tensor| -> Result<Tensor> {
            b.norm
                .forward_t(&b.conv.forward_mode(x, true)?.relu()?, false)
        };
        let x = Tensor::randn(0f32, 1.0, (2, 8, 11), &Device::Cpu)?;
        assert!(tdnn.conv.host_ok(&x));
        assert!(max_diff(&tdnn.forward(&x, false)?, &composed(&tdnn, &x)?)? < 1e-4);
        // Aggregation over a concatenation written with padded frames.
        let parts = [x.narrow(1, 0, 3)?, x.narrow(1, 3, 5)?];
        let got = mfa.forward_cat(&parts, false)?;
        assert!(max_diff(&got, &composed(&mfa, &x)?)? < 1e-4);

        let x = Tensor::randn(0f32, 1.0, (2, 16, 11), &Device::Cpu)?;
        let chunks = x.chunk(4, 1)?;
        let mut ys = vec![chunks[0].clone()];
        for i in 1..4 {
            let inp = if i == 1 {
                chunks[1].clone()
            } else {
                (&chunks[i] + &ys[i - 1])?
            };
            ys.push(composed(&r2.blocks[i - 1], &inp)?);
        }
        let want = Tensor::cat(&ys, 1)?;
        assert!(max_diff(&r2.forward(&x, false)?, &want)? < 1e-4);
        Ok(())
    }
}
