//! `speechbrain.nnet.CNN.Conv1d`: a `torch.nn.Conv1d` (parameters under `conv.`) with
//! SpeechBrain's "same" padding, which pads in **reflect** mode by default (candle's conv1d
//! only zero-pads, so the padding is done here).

use super::fgemm;
use super::gemm::{matmul_into, HostF32, View};
use super::qgemm::{qmatmul_into, quantize_tensor, QWeight};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use std::sync::Arc;

/// How the time axis is padded before the convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Output length equals input length (stride 1), padding in `PaddingMode`.
    Same(PaddingMode),
    /// No padding.
    Valid,
    /// `(kernel-1)*dilation` zeros on the left.
    Causal,
}

/// Values used for "same" padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingMode {
    /// Mirror without repeating the edge sample (SpeechBrain's default).
    Reflect,
    /// Zeros.
    Zeros,
    /// Repeat the edge sample.
    Replicate,
}

/// SpeechBrain's Conv1d on `[batch, channels, time]` inputs (`skip_transpose=True` layout).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::nnet::cnn::Conv1d;
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let conv = Conv1d::new(4, 8, 3, 2, 1, vb.pp("conv")).unwrap(); // weights at conv.conv.weight
/// let x = Tensor::zeros((1, 4, 50), DType::F32, &Device::Cpu).unwrap();
/// assert_eq!(conv.forward_t(&x).unwrap().dims(), &[1, 8, 50]);
/// ```
#[derive(Debug, Clone)]
pub struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel_size: usize,
    dilation: usize,
    stride: usize,
    groups: usize,
    padding: Padding,
    /// The int8 weight of [`Self::quantize_dynamic`], used by the CPU eval kernels.
    quant: Option<Arc<QWeight>>,
}

impl Conv1d {
    /// A Conv1d with "same" reflect padding and a bias (SpeechBrain's defaults).
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        dilation: usize,
        groups: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Self::with_options(
            in_channels,
            out_channels,
            kernel_size,
            1,
            dilation,
            groups,
            true,
            Padding::Same(PaddingMode::Reflect),
            vb,
        )
    }

    /// Full control over stride, bias and padding.
    #[allow(clippy::too_many_arguments)]
    pub fn with_options(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        dilation: usize,
        groups: usize,
        bias: bool,
        padding: Padding,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        let weight = vb.get((out_channels, in_channels / groups, kernel_size), "weight")?;
        let bias = if bias {
            Some(vb.get(out_channels, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            kernel_size,
            dilation,
            stride,
            groups,
            padding,
            quant: None,
        })
    }

    /// Dynamic int8 quantization, as torch's `quantize_dynamic` (see [`super::qgemm`]): the
    /// weight is quantized once here, the activations on every call. Only the CPU eval kernels
    /// (stride 1, one group, see [`Self::host_ok`]) use it; training and other devices keep
    /// the f32 weight, which stays loaded. The int8 copy is taken now: quantize after
    /// training (again, if the weights change afterwards).
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use candle_nn::{VarBuilder, VarMap};
    /// use voxbrain::nnet::cnn::Conv1d;
    /// let vm = VarMap::new();
    /// let init = candle_nn::Init::Randn { mean: 0.0, stdev: 0.5 };
    /// vm.get((8, 4, 3), "conv.conv.weight", init, DType::F32, &Device::Cpu).unwrap();
    /// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    /// let mut conv = Conv1d::new(4, 8, 3, 1, 1, vb.pp("conv")).unwrap();
    /// let x = Tensor::randn(0f32, 1.0, (1, 4, 50), &Device::Cpu).unwrap();
    /// let y = conv.forward_mode(&x, false).unwrap();
    /// conv.quantize_dynamic().unwrap();
    /// let yq = conv.forward_mode(&x, false).unwrap();
    /// let peak = y.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    /// let err = (y - yq).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    /// // Close, but not the f32 result.
    /// assert!(err > 0.0 && err < 0.05 * peak, "{err} of {peak}");
    /// ```
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        if self.groups != 1 || !self.weight.device().is_cpu() {
            return Ok(());
        }
        let (co, ci, k) = self.weight.dims3()?;
        self.quant = Some(Arc::new(quantize_tensor(
            &self.weight.reshape((co, ci * k))?,
        )?));
        Ok(())
    }

    /// Whether [`Self::quantize_dynamic`] was applied.
    pub fn is_quantized(&self) -> bool {
        self.quant.is_some()
    }

    /// Left and right padding for an input of `len` frames.
    fn pads(&self) -> (usize, usize) {
        match self.padding {
            Padding::Valid => (0, 0),
            Padding::Causal => ((self.kernel_size - 1) * self.dilation, 0),
            Padding::Same(_) => {
                // SpeechBrain's get_padding_elem: floor((L_in - L_out) / 2) on both sides for
                // stride 1, kernel_size // 2 otherwise.
                let p = if self.stride > 1 {
                    self.kernel_size / 2
                } else {
                    self.dilation * (self.kernel_size - 1) / 2
                };
                (p, p)
            }
        }
    }

    /// Applies the convolution to `[batch, channels, time]`, keeping the parameters in the
    /// autograd graph (training).
    pub fn forward_t(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_mode(x, true)
    }

    /// The convolution without its bias (callers that fuse the bias into a later op).
    pub fn forward_unbiased(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train && self.host_ok(x) {
            let (b, _, t) = x.dims3()?;
            let co = self.weight.dim(0)?;
            return Tensor::from_vec(self.forward_host_batch(x)?, (b, co, t), x.device());
        }
        let (l, r) = self.pads();
        let x = match self.padding {
            Padding::Same(PaddingMode::Reflect) if l + r > 0 => reflect_pad(x, l, r)?,
            Padding::Same(PaddingMode::Replicate) if l + r > 0 => {
                x.pad_with_same(D::Minus1, l, r)?
            }
            _ if l + r > 0 => x.pad_with_zeros(D::Minus1, l, r)?,
            _ => x.clone(),
        };
        let weight = super::param(&self.weight, train);
        if self.groups == 1 && self.stride == 1 {
            self.matmul_conv(&x, &weight)
        } else {
            x.conv1d(&weight, 0, self.stride, self.dilation, self.groups)
        }
    }

    /// Whether the host kernels ([`Self::forward_host`]) apply to `x` in eval mode: a CPU f32
    /// input and weight, stride 1, one group, no padding or "same" reflect padding
    /// (SpeechBrain's default).
    pub(crate) fn host_ok(&self, x: &Tensor) -> bool {
        let (l, r) = self.pads();
        self.groups == 1
            && self.stride == 1
            && l == r
            && (l == 0 || self.padding == Padding::Same(PaddingMode::Reflect))
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && x.elem_count() > 0
            && self.weight.device().is_cpu()
            && self.weight.dtype() == DType::F32
    }

    /// [`Self::forward_host`] over each sequence of `x` `[B, C_in, T]`: `[B, C_out, T]` values.
    pub(crate) fn forward_host_batch(&self, x: &Tensor) -> Result<Vec<f32>> {
        let (b, c, t) = x.dims3()?;
        let co = self.weight.dim(0)?;
        let x = x.contiguous()?;
        let xs = HostF32::new(&x, "Conv1d input")?;
        let mut out = vec![0f32; b * co * t];
        for (xb, ob) in xs.slice().chunks(c * t).zip(out.chunks_mut(co * t)) {
            self.forward_host(xb, (t, t), ob)?;
        }
        Ok(out)
    }

    /// Eval on the CPU for one sequence on host slices (see [`Self::host_ok`]): `out`
    /// `[C_out, T]` gets the convolution of `x` `[C_in, T]` (rows `ld` apart) without the bias,
    /// as one GEMM on the reflect-padded shifted copies of `x`, or on `x` itself for a 1x1
    /// kernel. The GEMM runs over a frame count rounded up to 16 where the input has room for
    /// it (zero columns for the shifted copies; `ld` for a 1x1 kernel): its kernels then need
    /// no ragged edge, which is up to 40% faster for the small Res2Net convolutions.
    pub(crate) fn forward_host(
        &self,
        x: &[f32],
        (t, ld): (usize, usize),
        out: &mut [f32],
    ) -> Result<()> {
        let (co, ci, k) = self.weight.dims3()?;
        let (pad, _) = self.pads();
        if ld < t || x.len() < (ci - 1) * ld + t || out.len() != co * t {
            candle_core::bail!("Conv1d: host buffers do not fit [{ci}, {t}] -> [{co}, {t}]");
        }
        if pad >= t {
            candle_core::bail!(
                "reflect padding of {pad}/{pad} needs more than {t} frames (input too short)"
            );
        }
        let w = HostF32::new(&self.weight, "Conv1d weight")?;
        if self.quant.is_none() && fgemm::enabled() {
            // The AVX2 path: frames are the tile's vector lanes, no rounding of `t` needed.
            if k == 1 {
                return fgemm::par_wx_into(out, w.slice(), co, View::rows(x, ci, t, ld));
            }
            let mut cols = vec![0f32; ci * k * t];
            im2col_reflect_into(x, (t, ld, t), k, self.dilation, pad, &mut cols);
            return fgemm::par_wx_into(out, w.slice(), co, View::rows(&cols, ci * k, t, t));
        }
        let w = View::rows(w.slice(), co, ci * k, ci * k);
        // The int8 kernel pads its own panels, so it runs on exactly `t` frames.
        let tp = if self.quant.is_some() {
            t
        } else {
            t.next_multiple_of(16)
        };
        let product = |dst: &mut [f32], ldd: usize, rhs: View| match &self.quant {
            Some(q) => qmatmul_into(dst, ldd, q, rhs),
            None => matmul_into(dst, ldd, w, rhs, false),
        };
        let cols;
        let rhs = if k == 1 {
            View::rows(x, ci, if ld >= tp { tp } else { t }, ld)
        } else {
            let mut c = vec![0f32; ci * k * tp];
            im2col_reflect_into(x, (t, ld, tp), k, self.dilation, pad, &mut c);
            cols = c;
            View::rows(&cols, ci * k, tp, tp)
        };
        if rhs.cols == t {
            return product(out, t, rhs);
        }
        let mut y = vec![0f32; co * rhs.cols];
        product(&mut y, rhs.cols, rhs)?;
        for (o, y) in out.chunks_mut(t).zip(y.chunks(rhs.cols)) {
            o.copy_from_slice(&y[..t]);
        }
        Ok(())
    }

    /// Applies the convolution; in eval mode (`train == false`) the parameters are detached so
    /// that no autograd graph keeps the activations alive.
    pub fn forward_mode(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.forward_unbiased(x, train)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&super::param(b, train).reshape((1, (), 1))?),
            None => Ok(y),
        }
    }
}

impl Conv1d {
    /// Stride-1, ungrouped convolution as one matrix product: the `k` dilated shifts of the
    /// (already padded) input are stacked under each channel (`[B, C*k, T]`, the order of the
    /// weight's `[out, C, k]` layout), so dilated kernels get the same multi-threaded GEMM as
    /// 1x1 ones (candle's direct kernel is single-threaded for dilation > 1).
    fn matmul_conv(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let (b, c, tp) = x.dims3()?;
        let k = self.kernel_size;
        let span = self.dilation * (k - 1);
        if tp <= span {
            candle_core::bail!(
                "conv1d input of {tp} frames is shorter than the kernel span {}",
                span + 1
            );
        }
        let t = tp - span;
        let cols = if k == 1 {
            x.contiguous()?
        } else {
            let shifts: Vec<Tensor> = (0..k)
                .map(|j| x.narrow(2, j * self.dilation, t))
                .collect::<Result<_>>()?;
            Tensor::stack(&shifts, 2)?.reshape((b, c * k, t))?
        };
        pointwise(&cols, &weight.reshape((weight.dim(0)?, c * k))?)
    }

    /// The weight `[out, in / groups, kernel]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

/// A 1x1 convolution without bias as one GEMM: `[B, C, T]` with weight `[O, C]` -> `[B, O, T]`.
/// For `B > 1` the weight is broadcast with a zero batch stride (no copy per utterance).
pub fn pointwise(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let b = x.dim(0)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    if b == 1 {
        return w.matmul(&x.squeeze(0)?)?.unsqueeze(0);
    }
    w.broadcast_left(b)?.matmul(&x)
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x)
    }
}

/// The im2col of a "same" reflect-padded dilated convolution on host rows: for input rows of
/// `t` frames (`ld_in` apart, `pad < t`), output row `c*k + j` (`ld_out` apart) is row `c`
/// shifted by `j*dilation - pad` frames, reflect-padded at both ends (torch's "reflect": the
/// edge sample is not repeated), i.e. what [`reflect_pad`] followed by stacking the `k` dilated
/// shifts gives, in one pass. Columns past `t` are left as they are.
fn im2col_reflect_into(
    xs: &[f32],
    (t, ld_in, ld_out): (usize, usize, usize),
    k: usize,
    dilation: usize,
    pad: usize,
    out: &mut [f32],
) {
    // Source index of output frame `i` for a shift of `off` (reflect at both ends).
    let src = |i: usize, off: usize| -> usize {
        let p = i + off; // position in the padded signal
        if p < pad {
            pad - p
        } else if p - pad >= t {
            2 * (t - 1) - (p - pad)
        } else {
            p - pad
        }
    };
    out.par_chunks_mut(ld_out).enumerate().for_each(|(row, o)| {
        let (bc, j) = (row / k, row % k);
        let x = &xs[bc * ld_in..bc * ld_in + t];
        let o = &mut o[..t];
        let off = j * dilation;
        // Interior: a straight copy; only the first/last `pad` frames reflect.
        let lo = pad.saturating_sub(off).min(t);
        let hi = (t + pad).saturating_sub(off).min(t).max(lo);
        o[lo..hi].copy_from_slice(&x[lo + off - pad..hi + off - pad]);
        for i in (0..lo).chain(hi..t) {
            o[i] = x[src(i, off)];
        }
    });
}

/// Reflect padding of the last axis (`torch.nn.functional.pad(mode="reflect")`): the edge
/// sample is not repeated. Needs `left, right < len`, as in torch.
pub fn reflect_pad(x: &Tensor, left: usize, right: usize) -> Result<Tensor> {
    reflect_pad_dim(x, x.rank() - 1, left, right)
}

/// Reflect padding of axis `dim` (see [`reflect_pad`]).
pub fn reflect_pad_dim(x: &Tensor, dim: usize, left: usize, right: usize) -> Result<Tensor> {
    let len = x.dim(dim)?;
    if left >= len || right >= len {
        candle_core::bail!(
            "reflect padding of {left}/{right} needs more than {len} frames (input too short)"
        );
    }
    let mut idx: Vec<u32> = Vec::with_capacity(len + left + right);
    idx.extend((1..=left).rev().map(|i| i as u32));
    idx.extend((0..len).map(|i| i as u32));
    idx.extend((0..right).map(|i| (len - 2 - i) as u32));
    let idx = Tensor::from_vec(idx, len + left + right, x.device())?;
    x.contiguous()?.index_select(&idx, dim)
}

/// SpeechBrain's `Conv2d` (`torch.nn.Conv2d` under `conv.`) in its default layout:
/// inputs `[batch, time, freq]` or `[batch, time, freq, channels]`, outputs
/// `[batch, time, freq, out_channels]`; "same" reflect padding on both axes. The kernel's first
/// axis runs over frequency and its second over time, as in SpeechBrain (which transposes
/// time and channels before the convolution).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::nnet::cnn::Conv2d;
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let conv = Conv2d::new(1, 8, (3, 3), vb.pp("conv_1")).unwrap();
/// let x = Tensor::zeros((2, 50, 40), DType::F32, &Device::Cpu).unwrap();
/// assert_eq!(conv.forward(&x, false).unwrap().dims(), &[2, 50, 40, 8]);
/// ```
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: (usize, usize),
}

impl Conv2d {
    /// A Conv2d with a bias, stride 1, dilation 1 and "same" reflect padding (SpeechBrain's
    /// defaults). `kernel` is `(k_freq, k_time)` as SpeechBrain's `kernel_size`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        if kernel.0.is_multiple_of(2) || kernel.1.is_multiple_of(2) {
            candle_core::bail!("Conv2d: \"same\" padding needs odd kernel sizes, got {kernel:?}");
        }
        let vb = vb.pp("conv");
        let weight = vb.get((out_channels, in_channels, kernel.0, kernel.1), "weight")?;
        let bias = Some(vb.get(out_channels, "bias")?);
        Ok(Self {
            weight,
            bias,
            kernel,
        })
    }

    /// Applies the convolution (`train`: keep the parameters in the autograd graph).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = match x.rank() {
            3 => x.unsqueeze(3)?,
            4 => x.clone(),
            r => candle_core::bail!("Conv2d: expected a 3-d or 4-d input, got rank {r}"),
        };
        if !train && x.device().is_cpu() && x.dtype() == DType::F32 {
            return self.forward_eval_cpu(&x, 1 << 23);
        }
        if train && x.device().is_cpu() && x.dtype() == DType::F32 {
            // One op with a chunked im2col forward and col2im backward (conv_train.rs).
            let op = super::conv_train::Conv2dSame { block_rows: 0 };
            let bias = match &self.bias {
                Some(b) => b.clone(),
                None => Tensor::zeros(self.weight.dim(0)?, DType::F32, x.device())?,
            };
            return x.contiguous()?.apply_op3(&self.weight, &bias, op);
        }
        if train {
            return self.forward_train(&x);
        }
        // [B, T, F, C] -> [B, C, F, T]
        let x = x.permute((0, 3, 2, 1))?;
        let x = reflect_pad_dim(&x, 3, self.kernel.1 / 2, self.kernel.1 / 2)?;
        let x = reflect_pad_dim(&x, 2, self.kernel.0 / 2, self.kernel.0 / 2)?;
        let mut y = x.conv2d(&self.weight.detach(), 0, 1, 1, 1)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.detach().reshape((1, (), 1, 1))?)?;
        }
        y.permute((0, 3, 2, 1))
    }

    /// Training (autograd), channels last: the reflect-padded input's windows concatenated
    /// `[B, T, F, kt*kf*C]` times the reordered kernel. Its backward is narrow/cat/matmul;
    /// candle 0.11's conv backward gives wrong kernel gradients for some batched shapes.
    fn forward_train(&self, x: &Tensor) -> Result<Tensor> {
        let (_, t, f, ci) = x.dims4()?;
        let (kf, kt) = self.kernel;
        let co = self.weight.dim(0)?;
        let xp = reflect_pad_dim(x, 1, kt / 2, kt / 2)?;
        let xp = reflect_pad_dim(&xp, 2, kf / 2, kf / 2)?;
        let mut cols = Vec::with_capacity(kt * kf);
        for j in 0..kt {
            let rows = xp.narrow(1, j, t)?;
            for i in 0..kf {
                cols.push(rows.narrow(2, i, f)?);
            }
        }
        let patches = Tensor::cat(&cols, 3)?; // [B, T, F, kt*kf*ci], order (j, i, c)
                                              // [co, ci, kf, kt] -> [co, kt, kf, ci]: the patch order.
        let w = self
            .weight
            .permute((0, 3, 2, 1))?
            .reshape((co, kt * kf * ci))?;
        super::linear(&patches, &w, self.bias.as_ref())
    }

    /// Eval on the CPU, channels last: each output position's receptive field (reflect
    /// padding written in) becomes a row of one GEMM with the reordered weight, in blocks of
    /// frames so that the patch matrix stays small. candle's conv2d needs channels first,
    /// which costs two transposes and the padded copies, and runs at a quarter of the speed.
    fn forward_eval_cpu(&self, x: &Tensor, max_patch_values: usize) -> Result<Tensor> {
        let (b, t, f, ci) = x.dims4()?;
        let (kf, kt) = self.kernel;
        let (pf, pt) = (kf / 2, kt / 2);
        if pf >= f || pt >= t {
            candle_core::bail!(
                "reflect padding of {pt} frames / {pf} bins needs a larger input than \
                 {t} frames x {f} bins (input too short)"
            );
        }
        let co = self.weight.dim(0)?;
        let kk = kt * kf * ci;
        // [co, ci, kf, kt] -> [co, kt, kf, ci]: the patch order below.
        let w = self
            .weight
            .permute((0, 3, 2, 1))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = match &self.bias {
            Some(b) => b.to_vec1::<f32>()?,
            None => vec![0f32; co],
        };
        let x = x.contiguous()?;
        let xs = HostF32::new(&x, "Conv2d input")?;
        let xs = xs.slice();
        let reflect = |p: isize, n: usize| -> usize {
            if p < 0 {
                (-p) as usize
            } else if p as usize >= n {
                2 * (n - 1) - p as usize
            } else {
                p as usize
            }
        };
        let mut y = vec![0f32; b * t * f * co];
        // Frames per block: a patch matrix of at most `max_patch_values` (2^23: 32 MB).
        let block = (max_patch_values / (f * kk).max(1)).max(1);
        let mut cols = vec![0f32; block.min(b * t) * f * kk];
        let mut start = 0;
        while start < b * t {
            let n = block.min(b * t - start);
            let cols = &mut cols[..n * f * kk];
            cols.par_chunks_mut(f * kk)
                .enumerate()
                .for_each(|(r, rows)| {
                    let (bi, ti) = ((start + r) / t, (start + r) % t);
                    for (fi, dst) in rows.chunks_mut(kk).enumerate() {
                        for j in 0..kt {
                            let ts = reflect(ti as isize + j as isize - pt as isize, t);
                            for i in 0..kf {
                                let fs = reflect(fi as isize + i as isize - pf as isize, f);
                                let src = ((bi * t + ts) * f + fs) * ci;
                                dst[(j * kf + i) * ci..(j * kf + i + 1) * ci]
                                    .copy_from_slice(&xs[src..src + ci]);
                            }
                        }
                    }
                });
            let out = &mut y[start * f * co..(start + n) * f * co];
            let patches = View::rows(cols, n * f, kk, kk);
            matmul_into(out, co, patches, View::rows(&w, co, kk, kk).t(), false)?;
            out.par_chunks_mut(co)
                .for_each(|row| row.iter_mut().zip(&bias).for_each(|(v, b)| *v += b));
            start += n;
        }
        Tensor::from_vec(y, (b, t, f, co), x.device())
    }
}

pub use super::pooling::max_pool_axis;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The training op (chunked im2col / col2im) gives the window-matrix candle ops' outputs
    /// and gradients (input, kernel, bias), with chunks that split the batch unevenly, for
    /// kernels of 3 and 5 (windows reaching two frames and two bins into the padding).
    #[test]
    fn conv2d_training_op_equals_candle_ops() -> Result<()> {
        for kernel in [(3, 3), (5, 5), (3, 5)] {
            conv2d_training_op_case(kernel)?;
        }
        Ok(())
    }

    fn conv2d_training_op_case(kernel: (usize, usize)) -> Result<()> {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let conv = Conv2d::new(3, 4, kernel, vb.pp("c"))?;
        for (name, var) in vm.data().lock().unwrap().iter() {
            let shape = var.shape().clone();
            let _ = name;
            var.set(&Tensor::randn(0f32, 0.5, shape, &dev)?)?;
        }
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 6, 3), &dev)?)?;
        let r = Tensor::randn(0f32, 1.0, (2, 5, 6, 4), &dev)?;
        let grads = |y: Tensor| -> Result<Vec<Vec<f32>>> {
            let g = (y * &r)?.sum_all()?.backward()?;
            [x.as_tensor(), &conv.weight, conv.bias.as_ref().unwrap()]
                .iter()
                .map(|t| g.get(t).unwrap().flatten_all()?.to_vec1::<f32>())
                .collect()
        };
        let want_y = conv.forward_train(x.as_tensor())?;
        // Chunks of 1 and 3 frames (every window reaching into a neighbour's frames), the
        // automatic size, and one chunk of all 10 frames.
        for block_rows in [1, 3, 0, 1000] {
            let op = super::super::conv_train::Conv2dSame { block_rows };
            let got_y = x
                .as_tensor()
                .apply_op3(&conv.weight, conv.bias.as_ref().unwrap(), op)?;
            let (a, b) = (
                want_y.flatten_all()?.to_vec1::<f32>()?,
                got_y.flatten_all()?.to_vec1::<f32>()?,
            );
            assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5));
            for (ga, gb) in grads(want_y.clone())?.iter().zip(grads(got_y)?) {
                for (p, q) in ga.iter().zip(&gb) {
                    assert!(
                        (p - q).abs() < 1e-4 * (1.0 + p.abs()),
                        "kernel {kernel:?}, chunk {block_rows}: gradient {q} vs {p}"
                    );
                }
            }
        }
        Ok(())
    }

    /// The eval kernel (patches + GEMM, in blocks of frames) equals candle's conv2d path.
    #[test]
    fn conv2d_eval_kernel_equals_candle_conv() -> Result<()> {
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let conv = Conv2d::new(3, 5, (3, 5), vb.pp("c"))?;
        for var in vm.all_vars() {
            var.set(&Tensor::randn(0f32, 1.0, var.shape(), &Device::Cpu)?)?;
        }
        let x = Tensor::randn(0f32, 1.0, (2, 9, 6, 3), &Device::Cpu)?;
        let want = conv.forward(&x, true)?;
        // One block, then blocks of 2 frames (crossing the utterance boundary).
        for max in [1 << 23, 2 * 6 * 45] {
            let got = conv.forward_eval_cpu(&x, max)?;
            let d = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-4, "{max}: {d}");
        }
        let short = Tensor::zeros((1, 2, 6, 3), DType::F32, &Device::Cpu)?;
        assert!(conv.forward(&short, false).is_err());
        Ok(())
    }

    /// Conv1d's eval host kernel (one GEMM per sequence, frames padded to 16 inside) equals
    /// candle's ops (training mode), dilated and 1x1, with a frame count not a multiple of 16.
    #[test]
    fn conv1d_host_kernel_equals_candle_ops() -> Result<()> {
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let convs = [
            Conv1d::new(4, 6, 3, 2, 1, vb.pp("a"))?,
            Conv1d::new(4, 6, 1, 1, 1, vb.pp("b"))?,
            // More output channels than one row block of the AVX2 tiles, a dilated kernel.
            Conv1d::new(4, 200, 3, 3, 1, vb.pp("c"))?,
        ];
        for var in vm.all_vars() {
            var.set(&Tensor::randn(0f32, 1.0, var.shape(), &Device::Cpu)?)?;
        }
        let x = Tensor::randn(0f32, 1.0, (2, 4, 21), &Device::Cpu)?;
        // The `gemm` crate's product, and the AVX2 tiles where the CPU has AVX2.
        for tiles in [false, crate::nnet::fgemm::supported()] {
            for conv in &convs {
                assert!(conv.host_ok(&x));
                let host = crate::nnet::with_avx2_tiles(tiles, || conv.forward_mode(&x, false))?;
                let d = (host - conv.forward_mode(&x, true)?)?;
                assert!(
                    d.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4,
                    "tiles {tiles}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn im2col_reflect_equals_pad_then_stack() -> Result<()> {
        for (t, k, d) in [(9usize, 3usize, 1usize), (9, 3, 4), (5, 5, 1), (7, 3, 3)] {
            let pad = d * (k - 1) / 2;
            let x = Tensor::randn(0f32, 1.0, (2, 3, t), &Device::Cpu)?;
            let padded = reflect_pad(&x, pad, pad)?;
            let shifts: Vec<Tensor> = (0..k)
                .map(|j| padded.narrow(2, j * d, t))
                .collect::<Result<_>>()?;
            let want = Tensor::stack(&shifts, 2)?.reshape((2, 3 * k, t))?;
            // Output rows 16 apart (the padded frame count); the extra columns stay zero.
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let mut out = vec![0f32; 2 * 3 * k * 16];
            im2col_reflect_into(&xs, (t, t, 16), k, d, pad, &mut out);
            let got = Tensor::from_vec(out, (2, 3 * k, 16), &Device::Cpu)?;
            let diff = (got.narrow(2, 0, t)? - want)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "t {t} k {k} d {d}");
            assert_eq!(
                got.narrow(2, t, 16 - t)?
                    .abs()?
                    .max_all()?
                    .to_scalar::<f32>()?,
                0.0
            );
        }
        // Reflect padding longer than the input is an error, not a read past the end.
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let conv = Conv1d::new(1, 1, 3, 4, 1, vb.pp("c"))?;
        let short = Tensor::zeros((1, 1, 4), DType::F32, &Device::Cpu)?;
        assert!(conv.forward_mode(&short, false).is_err());
        Ok(())
    }
}
