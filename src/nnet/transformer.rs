//! `speechbrain.lobes.models.transformer.Transformer`: `TransformerEncoderLayer`,
//! `TransformerEncoder` (regular multi-head attention, regular FFN) and the absolute
//! sinusoidal `PositionalEncoding`.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention::{MultiheadAttention, PositionalwiseFeedForward};
use super::normalization::LayerNorm;
use super::{Activation, Dropout};

/// Hyperparameters of a transformer encoder (the `SBTransformerBlock` / `TransformerEncoder`
/// keyword arguments voxbrain supports).
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerConfig {
    /// Number of encoder layers.
    pub num_layers: usize,
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub nhead: usize,
    /// Feed-forward width.
    pub d_ffn: usize,
    /// Dropout probability (used in training mode only).
    pub dropout: f32,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Pre-norm (`normalize_before` / `norm_before`).
    pub normalize_before: bool,
}

/// One `TransformerEncoderLayer` (self-attention `self_att`, feed-forward `pos_ffn`, SB
/// `LayerNorm`s `norm1`/`norm2` with eps 1e-6).
#[derive(Debug, Clone)]
pub struct TransformerEncoderLayer {
    self_att: MultiheadAttention,
    pos_ffn: PositionalwiseFeedForward,
    norm1: LayerNorm,
    norm2: LayerNorm,
    dropout1: Dropout,
    dropout2: Dropout,
    normalize_before: bool,
}

impl TransformerEncoderLayer {
    /// Builds the layer under `vb` (e.g. `mdl.layers.0`).
    pub fn new(cfg: &TransformerConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            self_att: MultiheadAttention::new(
                cfg.nhead,
                cfg.d_model,
                cfg.dropout,
                vb.pp("self_att"),
            )?,
            pos_ffn: PositionalwiseFeedForward::new(
                cfg.d_ffn,
                cfg.d_model,
                cfg.dropout,
                cfg.activation,
                vb.pp("pos_ffn"),
            )?,
            norm1: LayerNorm::new(cfg.d_model, 1e-6, vb.pp("norm1"))?,
            norm2: LayerNorm::new(cfg.d_model, 1e-6, vb.pp("norm2"))?,
            dropout1: Dropout { p: cfg.dropout },
            dropout2: Dropout { p: cfg.dropout },
            normalize_before: cfg.normalize_before,
        })
    }

    /// Dynamic int8 quantization of the attention's projections and the feed-forward layers
    /// (see [`MultiheadAttention::quantize_dynamic`]).
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        self.self_att.quantize_dynamic()?;
        self.pos_ffn.quantize_dynamic()
    }

    /// `src` `[B, T, D]` -> `[B, T, D]`.
    pub fn forward(&self, src: &Tensor, train: bool) -> Result<Tensor> {
        if self.normalize_before && !train {
            // Eval (dropout is the identity): the skip connections fuse into the products.
            let src = self
                .self_att
                .forward_add(&self.norm1.forward(src)?, Some(src), false)?;
            self.pos_ffn
                .forward_add(&self.norm2.forward(&src)?, Some(&src), false)
        } else if self.normalize_before {
            let att = self.self_att.forward(&self.norm1.forward(src)?, train)?;
            let src = (src + self.dropout1.forward(&att, train)?)?;
            let ffn = self.pos_ffn.forward(&self.norm2.forward(&src)?, train)?;
            src + self.dropout2.forward(&ffn, train)?
        } else if !train {
            let src = self
                .norm1
                .forward(&self.self_att.forward_add(src, Some(src), false)?)?;
            self.norm2
                .forward(&self.pos_ffn.forward_add(&src, Some(&src), false)?)
        } else {
            let att = self.self_att.forward(src, train)?;
            let src = self
                .norm1
                .forward(&(src + self.dropout1.forward(&att, train)?)?)?;
            let ffn = self.pos_ffn.forward(&src, train)?;
            self.norm2
                .forward(&(src + self.dropout2.forward(&ffn, train)?)?)
        }
    }
}

/// `TransformerEncoder`: `layers.<i>` then a final SB `LayerNorm` `norm` (eps 1e-6).
#[derive(Debug, Clone)]
pub struct TransformerEncoder {
    layers: Vec<TransformerEncoderLayer>,
    norm: LayerNorm,
}

impl TransformerEncoder {
    /// Builds the encoder under `vb` (e.g. `intra_mdl.mdl`).
    pub fn new(cfg: &TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let layers = (0..cfg.num_layers)
            .map(|i| TransformerEncoderLayer::new(cfg, vb.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            norm: LayerNorm::new(cfg.d_model, 1e-6, vb.pp("norm"))?,
        })
    }

    /// Dynamic int8 quantization of every layer's products (see
    /// [`TransformerEncoderLayer::quantize_dynamic`]).
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        self.layers
            .iter_mut()
            .try_for_each(|l| l.quantize_dynamic())
    }

    /// `src` `[B, T, D]` -> `[B, T, D]`.
    pub fn forward(&self, src: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = src.clone();
        for layer in &self.layers {
            x = layer.forward(&x, train)?;
        }
        self.norm.forward(&x)
    }
}

/// SpeechBrain's `PositionalEncoding(input_size, max_len=2500)`: the table is a buffer `pe`
/// `[1, max_len, D]` (saved in checkpoints; filled here when a checkpoint lacks it).
#[derive(Debug, Clone)]
pub struct PositionalEncoding {
    pe: Tensor,
    d_model: usize,
}

/// SpeechBrain's default `max_len`.
pub const PE_MAX_LEN: usize = 2500;

impl PositionalEncoding {
    /// Registers the `pe` buffer under `vb` (initialised with the sinusoid table).
    pub fn new(d_model: usize, vb: VarBuilder) -> Result<Self> {
        if !d_model.is_multiple_of(2) {
            candle_core::bail!("PositionalEncoding: odd channels ({d_model})");
        }
        let pe = vb.get_with_hints((1, PE_MAX_LEN, d_model), "pe", candle_nn::Init::Const(0.0))?;
        Ok(Self { pe, d_model })
    }

    /// The sinusoid table `[1, len, d_model]`, computed as SpeechBrain does in float32.
    pub fn table(len: usize, d_model: usize, device: &Device) -> Result<Tensor> {
        let mut v = vec![0f32; len * d_model];
        let scale = -(10000f32.ln() / d_model as f32);
        for p in 0..len {
            for i in (0..d_model).step_by(2) {
                let den = (i as f32 * scale).exp();
                let a = p as f32 * den;
                v[p * d_model + i] = a.sin();
                v[p * d_model + i + 1] = a.cos();
            }
        }
        Tensor::from_vec(v, (1, len, d_model), device)
    }

    /// The encoding for `len` positions, `[1, len, D]`. Past the table's length (where
    /// SpeechBrain fails) the sinusoids are computed on the fly.
    pub fn forward(&self, len: usize) -> Result<Tensor> {
        let max = self.pe.dim(1)?;
        if len <= max {
            // A buffer, never trained.
            self.pe.detach().narrow(1, 0, len)
        } else {
            Self::table(len, self.d_model, self.pe.device())
        }
    }
}
