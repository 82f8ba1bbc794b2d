//! Neural-network layers in SpeechBrain's parameter layout (`speechbrain.nnet`): each
//! constructor takes a [`candle_nn::VarBuilder`] whose path mirrors the PyTorch module path,
//! so the parameter names equal SpeechBrain's state_dict keys.

pub mod attention;
pub(crate) mod attention_eval;
pub(crate) mod attention_train;
#[cfg(test)]
mod backprop_tests;
pub mod cnn;
pub(crate) mod conv_train;
pub(crate) mod ctc;
pub mod dropout;
pub use dropout::Dropout;
pub mod embedding;
pub(crate) mod fgemm;
pub mod fused;
pub(crate) mod gemm;
pub(crate) mod global_norm_train;
pub(crate) mod gru_train;
pub mod init;
pub mod linear;
pub(crate) mod linear_train;
pub mod losses;
pub mod normalization;
pub(crate) mod pit;
pub mod pooling;
pub mod qgemm;
pub mod rnn;
pub mod rnn_decoder;
pub(crate) mod rnn_step;
pub(crate) mod rnn_train;
pub mod stats_pooling;
pub mod train_ops;
pub mod transformer;

use candle_core::{Result, Tensor};

pub use fgemm::with_avx2_tiles;

/// `torch.nn.functional.linear` over the last dimension of a tensor of any rank:
/// `x @ weight^T + bias`, with `weight` `[out, in]`. Leading dimensions are flattened into one
/// matrix product (one large GEMM is much faster on the CPU than a batched one).
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (d_in, lead) = match dims.split_last() {
        Some((d, lead)) => (*d, lead.to_vec()),
        None => candle_core::bail!("linear: scalar input"),
    };
    let rows: usize = lead.iter().product();
    let d_out = weight.dim(0)?;
    let x2 = x.reshape((rows, d_in))?;
    let y = if linear_train::applies(&x2, weight) {
        linear_train::linear(&x2, weight, bias)?
    } else if attention_eval::applies(&x2, &[Some(weight), bias])
        && !gemm::few_rows_big_weight(rows, d_in * d_out)
    {
        attention_eval::linear(&x2, weight, bias)?
    } else {
        let y = matmul_wt(&x2, weight)?;
        match bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        }
    };
    let mut out_shape = lead;
    out_shape.push(d_out);
    y.reshape(out_shape)
}

/// `x @ weight^T` for `x` `[rows, in]` and `weight` `[out, in]`. With few rows and a large
/// weight (beam search: 80 hypotheses against an LSTM's `[8192, 2048]`) candle's CPU GEMM spends
/// most of its time re-packing the transposed weight; `(weight @ x^T)^T` reads the weight in its
/// stored layout and is ~2x faster there. Elsewhere the plain product is as fast or faster.
pub fn matmul_wt(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (rows, d_in) = x.dims2()?;
    let d_out = weight.dim(0)?;
    // Not in training: there candle's backward of `weight @ x^T` kept a weight-sized gradient
    // per decoder step until the end of the backward pass (2.4 GB of the official ASR's 29
    // steps); `x @ weight^T` accumulates into one.
    let tracked = x.track_op() || weight.track_op();
    if gemm::few_rows_big_weight(rows, d_in * d_out) && x.device().is_cpu() && !tracked {
        return weight.matmul(&x.t()?.contiguous()?)?.t()?.contiguous();
    }
    x.matmul(&weight.t()?)
}

/// A parameter as used in a forward pass: itself in training mode (gradients flow to the
/// `Var`), detached in eval mode so that no backprop graph keeps intermediate tensors alive
/// (the detached tensor shares the `Var`'s storage, so later loads are still seen).
pub fn param(t: &Tensor, train: bool) -> Tensor {
    if train {
        t.clone()
    } else {
        t.detach()
    }
}

/// The activation of a feed-forward block (`activation: relu | gelu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.GELU` (exact, erf-based).
    Gelu,
    /// `torch.nn.LeakyReLU` (negative slope 0.01, PyTorch's default).
    LeakyRelu,
}

impl Activation {
    /// Applies the activation.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => train_ops::relu(x),
            Activation::Gelu => x.gelu_erf(),
            Activation::LeakyRelu => train_ops::leaky_relu(x, 0.01),
        }
    }

    /// The activation a `!name:torch.nn.X` class names (`ReLU`, `GELU`, `LeakyReLU`).
    pub fn from_class(class: &str) -> Option<Self> {
        match class.rsplit('.').next()? {
            "ReLU" => Some(Activation::Relu),
            "GELU" => Some(Activation::Gelu),
            "LeakyReLU" => Some(Activation::LeakyRelu),
            _ => None,
        }
    }
}
