//! Normalization layers: SpeechBrain's `LayerNorm` (a wrapper holding `torch.nn.LayerNorm` as
//! `.norm`) and the "one group over everything" normalization of `Dual_Path_Model`
//! (`torch.nn.GroupNorm(1, C)`, and `GlobalLayerNorm`, which computes the same thing), and
//! `BatchNorm1d` (`torch.nn.BatchNorm1d` under `.norm`) with train/eval modes: its running
//! statistics are the `VarMap`'s own variables, so they are saved with the model.

use candle_core::{DType, ModuleT, Result, Tensor, D};
use candle_nn::VarBuilder;

/// `speechbrain.nnet.normalization.LayerNorm(input_size, eps)`: normalizes the last dimension
/// (or the last few, for an `input_shape` like CRDNN's `[freq, channels]`).
/// Parameters: `<path>.norm.weight`, `<path>.norm.bias`, shaped like the normalized dims.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    norm_dims: usize,
    pub(crate) eps: f32,
}

impl LayerNorm {
    /// SpeechBrain's wrapper (parameters under `norm.`).
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Self::torch(size, eps, vb.pp("norm"))
    }

    /// SpeechBrain's wrapper over several trailing dimensions (`input_shape[2:]`).
    pub fn with_shape(shape: &[usize], eps: f64, vb: VarBuilder) -> Result<Self> {
        Self::torch_shape(shape, eps, vb.pp("norm"))
    }

    /// A plain `torch.nn.LayerNorm` (parameters directly under `vb`).
    pub fn torch(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Self::torch_shape(&[size], eps, vb)
    }

    fn torch_shape(shape: &[usize], eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(shape, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(shape, "bias", candle_nn::Init::Const(0.0))?,
            norm_dims: shape.len(),
            eps: eps as f32,
        })
    }

    /// Normalizes over the trailing dimensions the layer was built for (eval mode).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// As [`forward`](Self::forward); `train` keeps the gain and bias in the autograd graph
    /// (candle's fused layer-norm op has no backward pass, so training composes the ops).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train || x.track_op() {
            return self.forward_autograd(x);
        }
        if self.norm_dims == 1 {
            let x = x.contiguous()?;
            return candle_nn::ops::layer_norm(&x, &self.weight, &self.bias, self.eps);
        }
        let dims = x.dims().to_vec();
        if dims.len() < self.norm_dims || dims[dims.len() - self.norm_dims..] != *self.weight.dims()
        {
            candle_core::bail!(
                "LayerNorm over {:?}: input shape {dims:?} does not end with it",
                self.weight.dims()
            );
        }
        let lead = &dims[..dims.len() - self.norm_dims];
        let n = self.weight.elem_count();
        let mut flat_shape = lead.to_vec();
        flat_shape.push(n);
        let xf = x.contiguous()?.reshape(flat_shape)?;
        let y = candle_nn::ops::layer_norm(
            &xf,
            &self.weight.flatten_all()?,
            &self.bias.flatten_all()?,
            self.eps,
        )?;
        y.reshape(dims)
    }

    /// Whether training on `x` can take the host op (CPU f32, trailing dims equal to the
    /// normalized shape).
    pub(crate) fn fits_train_cpu(&self, x: &Tensor) -> bool {
        let dims = x.dims();
        let nd = self.norm_dims;
        x.device().is_cpu()
            && x.dtype() == DType::F32
            && dims.len() >= nd
            && dims[dims.len() - nd..] == *self.weight.dims()
    }

    fn forward_autograd(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let nd = self.norm_dims;
        if self.fits_train_cpu(x) {
            return super::train_ops::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
        if dims.len() < nd || dims[dims.len() - nd..] != *self.weight.dims() {
            candle_core::bail!(
                "LayerNorm over {:?}: input shape {dims:?} does not end with it",
                self.weight.dims()
            );
        }
        let mut flat = dims[..dims.len() - nd].to_vec();
        flat.push(self.weight.elem_count());
        let xf = x.reshape(flat)?;
        let mean = xf.mean_keepdim(D::Minus1)?;
        let xc = xf.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + self.eps as f64)?.sqrt()?)?;
        y.reshape(dims)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// Normalization over all positions and channels of each batch item, with a per-channel
/// affine transform: `torch.nn.GroupNorm(1, C, eps)` (SB's `norm: ln`) and SB's
/// `GlobalLayerNorm` (`norm: gln`; same formula, parameters shaped `[C, 1]` / `[C, 1, 1]`).
///
/// Works on channel-last tensors `[B, ..., C]` (voxbrain's internal layout); statistics are
/// accumulated in f64 so long inputs do not lose precision.
#[derive(Debug, Clone)]
pub struct GlobalNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl GlobalNorm {
    /// `GroupNorm(1, channels)`: `weight` and `bias` `[C]`.
    pub fn group_norm(channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Self::with_shape(&[channels], eps, vb)
    }

    /// Parameters with the given shape (`[C]`, `[C, 1]`, `[C, 1, 1]`).
    pub fn with_shape(shape: &[usize], eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(shape, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(shape, "bias", candle_nn::Init::Const(0.0))?;
        let c = shape[0];
        Ok(Self {
            weight: weight.reshape(c)?,
            bias: bias.reshape(c)?,
            eps,
        })
    }

    /// Normalizes a channel-last tensor `[B, ..., C]` (`train`: keep the parameters in the
    /// autograd graph).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (w, b) = (
            super::param(&self.weight, train),
            super::param(&self.bias, train),
        );
        if super::global_norm_train::applies(&[x, &w, &b]) {
            return super::global_norm_train::global_norm(x, &w, &b, self.eps);
        }
        let dims = x.dims().to_vec();
        let b = dims[0];
        let flat = x.reshape((b, ()))?;
        let f64x = flat.to_dtype(DType::F64)?;
        let mean = f64x.mean_keepdim(D::Minus1)?;
        let centered = f64x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        let normed = centered
            .broadcast_mul(&inv)?
            .to_dtype(x.dtype())?
            .reshape(dims)?;
        normed
            .broadcast_mul(&super::param(&self.weight, train))?
            .broadcast_add(&super::param(&self.bias, train))
    }
}

/// BatchNorm over `[batch, channels, time]` (or `[batch, channels]`).
#[derive(Debug, Clone)]
pub struct BatchNorm1d {
    inner: candle_nn::BatchNorm,
}

impl BatchNorm1d {
    /// SpeechBrain's defaults: eps 1e-5, momentum 0.1, affine.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = candle_nn::BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        };
        Ok(Self {
            inner: candle_nn::batch_norm(channels, cfg, vb.pp("norm"))?,
        })
    }

    /// Normalises `x`; `train` selects batch statistics (and updates the running ones).
    ///
    /// In eval mode the affine transform is computed from detached parameters, so no autograd
    /// graph keeps the activations alive during inference.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            return self.inner.forward_t(x, train);
        }
        let c = self.inner.running_mean().dim(0)?;
        let mut shape = vec![1usize; x.rank()];
        shape[1] = c;
        let (scale, shift) = self.eval_affine()?;
        x.broadcast_mul(&scale.reshape(shape.as_slice())?)?
            .broadcast_add(&shift.reshape(shape.as_slice())?)
    }

    /// Eval mode as a per-channel affine map `x * scale + shift` (`[C]` each, detached), from
    /// the running statistics: lets callers fuse it with the preceding ops.
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let var = self.inner.running_var().detach();
        let inv = (var + self.inner.eps())?.sqrt()?.recip()?;
        Ok(match self.inner.weight_and_bias() {
            Some((w, b)) => {
                let scale = (w.detach() * &inv)?;
                let shift = (b.detach() - (self.inner.running_mean().detach() * &scale)?)?;
                (scale, shift)
            }
            None => {
                let shift = (self.inner.running_mean().detach() * &inv)?.neg()?;
                (inv, shift)
            }
        })
    }
}
