//! SepFormer (`speechbrain.lobes.models.dual_path`): the Conv1d [`Encoder`], the dual-path
//! transformer masking network [`DualPathModel`] and the ConvTranspose1d [`Decoder`], built
//! from a SpeechBrain `hyperparams.yaml` (the `modules: {encoder, masknet, decoder}` of
//! `speechbrain/sepformer-wsj02mix`) with parameter names equal to SpeechBrain's state_dict
//! keys (`encoder.ckpt`, `masknet.ckpt`, `decoder.ckpt`).

mod config;
mod dual_path;
mod encoder;
mod init;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

pub use config::SepformerConfig;
pub use dual_path::{
    over_add, segmentation, DualBlockConfig, DualComputationBlock, DualPathConfig, DualPathModel,
    Norm, NormKind, SBTransformerBlock,
};
pub use encoder::{Decoder, Encoder};

use crate::nnet::transformer::PositionalEncoding;
use crate::pretrained::ckpt::{load_state_dict, read_ckpt, LoadOptions};
use crate::pretrained::{Loadable, PretrainedError};

/// The three SepFormer modules, their parameters in one `VarMap` under `encoder.`,
/// `masknet.` and `decoder.`.
#[derive(Clone)]
pub struct Sepformer {
    /// The configuration it was built with.
    pub config: SepformerConfig,
    encoder: Encoder,
    masknet: DualPathModel,
    decoder: Decoder,
    varmap: VarMap,
    train: bool,
}

impl Sepformer {
    /// Builds the model with freshly initialised parameters on `device` (load weights with
    /// [`Sepformer::params`] or [`Sepformer::load_module`]).
    pub fn new(config: SepformerConfig, device: &Device) -> candle_core::Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let encoder = Encoder::new(config.kernel_size, config.n_filters, vb.pp("encoder"))?;
        let masknet = DualPathModel::new(&config.masknet, vb.pp("masknet"))?;
        let decoder = Decoder::new(
            config.n_filters,
            config.decoder_kernel_size,
            config.decoder_stride,
            config.decoder_bias,
            vb.pp("decoder"),
        )?;
        // Positional-encoding buffers start as SpeechBrain's sinusoid tables.
        {
            // Poisoned only if another thread panicked holding it: then panicking is right.
            let data = varmap.data().lock().expect("VarMap lock poisoned");
            for (name, var) in data.iter() {
                if name.ends_with("pos_enc.pe") {
                    let (_, len, d) = var.dims3()?;
                    var.set(&PositionalEncoding::table(len, d, device)?)?;
                }
            }
        }
        Ok(Self {
            config,
            encoder,
            masknet,
            decoder,
            varmap,
            train: false,
        })
    }

    /// The parameters (trainable `Var`s), named `<module>.<SpeechBrain key>`.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Training mode (dropout on) or eval mode (the default, as SpeechBrain's inference).
    pub fn set_train(&mut self, train: bool) {
        self.train = train;
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// A loadable for one module (`encoder`, `masknet`, `decoder`): strict, except that the
    /// positional-encoding buffers (`*.pos_enc.pe`) may be absent, as SpeechBrain's
    /// non-strict parameter transfer allows; they then keep their sinusoid values.
    pub fn params(&self, module: &str) -> ModuleParams<'_> {
        ModuleParams {
            varmap: &self.varmap,
            prefix: format!("{module}."),
        }
    }

    /// Loads a checkpoint file into one module.
    pub fn load_module(&self, module: &str, path: &Path) -> Result<(), PretrainedError> {
        self.params(module).load_from(path)
    }

    /// Encoder output `[B, L, N]` for a mixture `[B, T]` (`T >= kernel_size`).
    pub fn encode(&self, mix: &Tensor) -> candle_core::Result<Tensor> {
        self.encoder.forward(mix, self.train)
    }

    /// Opt-in dynamic int8 quantization of the masking network's transformers (CPU eval
    /// only; see [`DualPathModel::quantize_dynamic`]).
    pub fn quantize_dynamic(&mut self) -> candle_core::Result<()> {
        self.masknet.quantize_dynamic()
    }

    /// Masks `[num_spks, B, L, N]` for encoded mixtures `[B, L, N]`.
    pub fn masks(&self, mix_w: &Tensor) -> candle_core::Result<Tensor> {
        self.masknet.forward(mix_w, self.train)
    }

    /// SpeechBrain's `separate_batch` arithmetic: `[B, T]` -> `[B, T, num_spks]` (decoded
    /// sources zero-padded or trimmed to `T`). Inputs shorter than the encoder kernel (where
    /// SpeechBrain's Conv1d fails) are zero-padded to one kernel first.
    pub fn forward(&self, mix: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = mix.dims2()?;
        let kernel = self.encoder.kernel();
        let padded = if t < kernel {
            mix.pad_with_zeros(1, 0, kernel - t)?
        } else {
            mix.clone()
        };
        let mix_w = self.encode(&padded)?; // [B, L, N]
        let masks = self.masks(&mix_w)?; // [spk, B, L, N]
        let spk = self.masknet.num_spks();
        let (_, l, n) = mix_w.dims3()?;
        let sep = masks
            .broadcast_mul(&mix_w.unsqueeze(0)?)?
            .reshape((spk * b, l, n))?;
        let est = self.decoder.forward(&sep, self.train)?; // [spk*B, T']
        let t_est = est.dim(1)?;
        let est = if t_est >= t {
            est.narrow(1, 0, t)?
        } else {
            est.pad_with_zeros(1, 0, t - t_est)?
        };
        est.reshape((spk, b, t))?.permute((1, 2, 0))?.contiguous()
    }
}

impl std::fmt::Debug for Sepformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sepformer")
            .field("config", &self.config)
            .field("parameters", &self.varmap.all_vars().len())
            .field("train", &self.train)
            .finish()
    }
}

/// One SepFormer module's parameters as a [`Loadable`] (see [`Sepformer::params`]).
pub struct ModuleParams<'a> {
    varmap: &'a VarMap,
    prefix: String,
}

impl Loadable for ModuleParams<'_> {
    fn load_from(&mut self, path: &Path) -> Result<(), PretrainedError> {
        let mut ckpt = read_ckpt(path)?;
        {
            // Poisoned only if another thread panicked holding it: then panicking is right.
            let data = self.varmap.data().lock().expect("VarMap lock poisoned");
            for (name, var) in data.iter() {
                let Some(key) = name.strip_prefix(&self.prefix) else {
                    continue;
                };
                if key.ends_with("pos_enc.pe") && !ckpt.tensors.contains_key(key) {
                    ckpt.tensors
                        .insert(key.to_string(), var.as_tensor().copy()?);
                }
            }
        }
        load_state_dict(
            self.varmap,
            &ckpt,
            path,
            &LoadOptions::with_prefix(&self.prefix),
        )?;
        Ok(())
    }
}
