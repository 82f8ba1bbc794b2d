//! `speechbrain.nnet.linear.Linear`: a `torch.nn.Linear` held as `.w`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::{linear, param};

/// SpeechBrain's Linear (`<path>.w.weight` `[out, in]`, `<path>.w.bias` `[out]`); 4-d inputs
/// `[B, T, F, C]` are flattened to `[B, T, F*C]` first (`combine_dims`).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::nnet::linear::Linear;
/// let vm = VarMap::new();
/// let lin = Linear::new(6, 3, true, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
/// let x = Tensor::zeros((2, 5, 6), DType::F32, &Device::Cpu).unwrap();
/// assert_eq!(lin.forward(&x, false).unwrap().dims(), &[2, 5, 3]);
/// ```
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl Linear {
    /// Builds the layer; `vb` is the SpeechBrain module's path (parameters under `w.`).
    pub fn new(input_size: usize, n_neurons: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("w");
        let bound = 1.0 / (input_size as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((n_neurons, input_size), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(n_neurons, "bias", init)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Output size.
    pub fn out_features(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    /// Applies the layer over the last dimension.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = if x.rank() == 4 {
            let (b, t, f, c) = x.dims4()?;
            x.reshape((b, t, f * c))?
        } else {
            x.clone()
        };
        let b = self.bias.as_ref().map(|b| param(b, train));
        linear(&x, &param(&self.weight, train), b.as_ref())
    }
}
