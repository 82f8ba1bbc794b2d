//! `speechbrain.nnet.normalization.BatchNorm1d`: a `torch.nn.BatchNorm1d` under `norm.`, with
//! train/eval modes. In training it normalises with batch statistics and updates the running
//! statistics, which are the `VarMap`'s own variables (so they are saved with the model).

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

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
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.inner.forward_t(x, train)
    }
}
