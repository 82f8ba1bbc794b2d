//! `speechbrain.lobes.models.dual_path`: `SBTransformerBlock`, `Dual_Computation_Block` and
//! `Dual_Path_Model` (the SepFormer masking network), on channel-last tensors.
//!
//! SpeechBrain keeps chunked features as `[B, N, K, S]`; voxbrain keeps `[B, S, K, N]` so
//! that every pointwise convolution is one GEMM over the channel axis and the intra-chunk
//! transformer input is a free reshape. The arithmetic is the same.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nnet::normalization::{GlobalNorm, LayerNorm};
use crate::nnet::transformer::{PositionalEncoding, TransformerConfig, TransformerEncoder};
use crate::nnet::{linear, param};

/// `SBTransformerBlock`: optional positional encoding (added once, at the input) and a
/// `TransformerEncoder` under `mdl`.
#[derive(Debug, Clone)]
pub struct SBTransformerBlock {
    mdl: TransformerEncoder,
    pos_enc: Option<PositionalEncoding>,
}

impl SBTransformerBlock {
    /// Builds the block under `vb` (e.g. `dual_mdl.0.intra_mdl`).
    pub fn new(
        cfg: &TransformerConfig,
        use_positional_encoding: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            mdl: TransformerEncoder::new(cfg, vb.pp("mdl"))?,
            pos_enc: if use_positional_encoding {
                Some(PositionalEncoding::new(cfg.d_model, vb.pp("pos_enc"))?)
            } else {
                None
            },
        })
    }

    /// Dynamic int8 quantization of the transformer's products.
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        self.mdl.quantize_dynamic()
    }

    /// `x` `[B, T, D]` -> `[B, T, D]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.pos_enc {
            Some(pe) => {
                let x = x.broadcast_add(&pe.forward(x.dim(1)?)?)?;
                self.mdl.forward(&x, train)
            }
            None => self.mdl.forward(x, train),
        }
    }
}

/// The normalizations `select_norm` offers (`ln`, `gln`, `cln`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `torch.nn.GroupNorm(1, C, eps=1e-8)`.
    Ln,
    /// `GlobalLayerNorm` (same statistics, parameters `[C, 1]` / `[C, 1, 1]`).
    Gln,
    /// `CumulativeLayerNorm` (normalizes the channels of each position).
    Cln,
}

impl NormKind {
    /// Parses SB's `norm` argument.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ln" => Some(Self::Ln),
            "gln" => Some(Self::Gln),
            "cln" => Some(Self::Cln),
            _ => None,
        }
    }
}

/// A built `select_norm(norm, C, shape)`.
#[derive(Debug, Clone)]
pub enum Norm {
    /// `ln` / `gln`.
    Global(GlobalNorm),
    /// `cln`.
    Channel(LayerNorm),
}

impl Norm {
    /// `select_norm(kind, channels, rank)` under `vb`; `rank` is 3 or 4 (SB's `shape`).
    pub fn new(kind: NormKind, channels: usize, rank: usize, vb: VarBuilder) -> Result<Self> {
        const EPS: f64 = 1e-8;
        Ok(match kind {
            NormKind::Ln => Norm::Global(GlobalNorm::group_norm(channels, EPS, vb)?),
            NormKind::Gln => {
                let shape: Vec<usize> = if rank == 4 {
                    vec![channels, 1, 1]
                } else {
                    vec![channels, 1]
                };
                Norm::Global(GlobalNorm::with_shape(&shape, EPS, vb)?)
            }
            NormKind::Cln => Norm::Channel(LayerNorm::torch(channels, EPS, vb)?),
        })
    }

    /// Normalizes a channel-last tensor.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Norm::Global(n) => n.forward(x, train),
            Norm::Channel(n) => n.forward(x),
        }
    }
}

/// `Dual_Computation_Block`: intra-chunk model, norm, skip, inter-chunk model, norm, residual.
#[derive(Debug, Clone)]
pub struct DualComputationBlock {
    intra_mdl: SBTransformerBlock,
    inter_mdl: SBTransformerBlock,
    intra_norm: Option<Norm>,
    inter_norm: Option<Norm>,
    intra_linear: Option<(Tensor, Tensor)>,
    inter_linear: Option<(Tensor, Tensor)>,
    skip_around_intra: bool,
}

/// What [`DualComputationBlock::new`] needs besides the two transformers.
#[derive(Debug, Clone)]
pub struct DualBlockConfig {
    /// Width of the chunked features.
    pub out_channels: usize,
    /// `norm` (None for `norm: null`).
    pub norm: Option<NormKind>,
    /// `skip_around_intra`.
    pub skip_around_intra: bool,
    /// `linear_layer_after_inter_intra`.
    pub linear_layer_after_inter_intra: bool,
}

impl DualComputationBlock {
    /// Builds block `vb` (e.g. `dual_mdl.0`).
    pub fn new(
        intra: (&TransformerConfig, bool),
        inter: (&TransformerConfig, bool),
        cfg: &DualBlockConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let n = cfg.out_channels;
        let lin = |name: &str| -> Result<Option<(Tensor, Tensor)>> {
            if !cfg.linear_layer_after_inter_intra {
                return Ok(None);
            }
            // speechbrain.nnet.linear.Linear keeps its torch.nn.Linear as `w`.
            let w = vb.pp(name).pp("w");
            Ok(Some((w.get((n, n), "weight")?, w.get(n, "bias")?)))
        };
        Ok(Self {
            intra_mdl: SBTransformerBlock::new(intra.0, intra.1, vb.pp("intra_mdl"))?,
            inter_mdl: SBTransformerBlock::new(inter.0, inter.1, vb.pp("inter_mdl"))?,
            intra_norm: cfg
                .norm
                .map(|k| Norm::new(k, n, 4, vb.pp("intra_norm")))
                .transpose()?,
            inter_norm: cfg
                .norm
                .map(|k| Norm::new(k, n, 4, vb.pp("inter_norm")))
                .transpose()?,
            intra_linear: lin("intra_linear")?,
            inter_linear: lin("inter_linear")?,
            skip_around_intra: cfg.skip_around_intra,
        })
    }

    /// Dynamic int8 quantization of both transformers.
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        self.intra_mdl.quantize_dynamic()?;
        self.inter_mdl.quantize_dynamic()
    }

    /// `x` `[B, S, K, N]` -> `[B, S, K, N]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, s, k, n) = x.dims4()?;
        // Intra-chunk: sequences of K frames.
        let mut intra = self.intra_mdl.forward(&x.reshape((b * s, k, n))?, train)?;
        if let Some((w, bias)) = &self.intra_linear {
            intra = linear(&intra, &param(w, train), Some(&param(bias, train)))?;
        }
        let mut intra = intra.reshape((b, s, k, n))?;
        if let Some(norm) = &self.intra_norm {
            intra = norm.forward(&intra, train)?;
        }
        if self.skip_around_intra {
            intra = (intra + x)?;
        }
        // Inter-chunk: sequences of S chunks, one per position within the chunk.
        let seq = intra
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * k, s, n))?;
        let mut inter = self.inter_mdl.forward(&seq, train)?;
        if let Some((w, bias)) = &self.inter_linear {
            inter = linear(&inter, &param(w, train), Some(&param(bias, train)))?;
        }
        let mut inter = inter.reshape((b, k, s, n))?.transpose(1, 2)?.contiguous()?;
        if let Some(norm) = &self.inter_norm {
            inter = norm.forward(&inter, train)?;
        }
        inter + intra
    }
}

/// Splits `[B, L, N]` into `[B, S, K, N]` chunks with 50% overlap (SB's `_Segmentation`, with
/// `_padding`: `gap` zeros at the end, `K/2` zeros on both sides). Returns the chunks and `gap`.
pub fn segmentation(x: &Tensor, k: usize) -> Result<(Tensor, usize)> {
    let (b, l, n) = x.dims3()?;
    let p = k / 2;
    let gap = k - (p + l % k) % k;
    let padded = x.pad_with_zeros(1, p, gap + p)?;
    let m = l + gap + p; // a multiple of K
    let even = padded.narrow(1, 0, m)?.reshape((b, m / k, k, n))?;
    let odd = padded.narrow(1, p, m)?.reshape((b, m / k, k, n))?;
    let chunks = Tensor::stack(&[even, odd], 2)?.reshape((b, 2 * m / k, k, n))?;
    Ok((chunks, gap))
}

/// Overlap-add of `[B, S, K, N]` chunks back to `[B, L, N]` (SB's `_over_add`).
pub fn over_add(x: &Tensor, gap: usize) -> Result<Tensor> {
    let (b, s, k, n) = x.dims4()?;
    let p = k / 2;
    let m = s / 2 * k;
    let pairs = x.reshape((b, s / 2, 2, k, n))?;
    let even = pairs.narrow(2, 0, 1)?.contiguous()?.reshape((b, m, n))?;
    let odd = pairs.narrow(2, 1, 1)?.contiguous()?.reshape((b, m, n))?;
    let sum = (even.narrow(1, p, m - p)? + odd.narrow(1, 0, m - p)?)?;
    sum.narrow(1, 0, m - p - gap)
}

/// `Dual_Path_Model` hyperparameters.
#[derive(Debug, Clone)]
pub struct DualPathConfig {
    /// Encoder channels.
    pub in_channels: usize,
    /// Chunked feature width.
    pub out_channels: usize,
    /// Number of dual-computation blocks.
    pub num_layers: usize,
    /// `norm`.
    pub norm: NormKind,
    /// Chunk length `K` (frames).
    pub k: usize,
    /// Sources.
    pub num_spks: usize,
    /// `skip_around_intra`.
    pub skip_around_intra: bool,
    /// `linear_layer_after_inter_intra`.
    pub linear_layer_after_inter_intra: bool,
    /// Intra transformer and whether it uses positional encoding.
    pub intra: (TransformerConfig, bool),
    /// Inter transformer and whether it uses positional encoding.
    pub inter: (TransformerConfig, bool),
}

/// The masking network (`masknet`).
#[derive(Debug, Clone)]
pub struct DualPathModel {
    norm: Norm,
    conv1d: Tensor,
    dual_mdl: Vec<DualComputationBlock>,
    prelu: Tensor,
    conv2d_w: Tensor,
    conv2d_b: Tensor,
    output_w: Tensor,
    output_b: Tensor,
    gate_w: Tensor,
    gate_b: Tensor,
    end_conv1x1: Tensor,
    k: usize,
    num_spks: usize,
    in_channels: usize,
}

impl DualPathModel {
    /// Builds the masking network under `vb` (the `masknet` module).
    pub fn new(cfg: &DualPathConfig, vb: VarBuilder) -> Result<Self> {
        let (ni, no, spk) = (cfg.in_channels, cfg.out_channels, cfg.num_spks);
        if cfg.k < 2 {
            candle_core::bail!("Dual_Path_Model: K must be >= 2 (got {})", cfg.k);
        }
        let block_cfg = DualBlockConfig {
            out_channels: no,
            norm: Some(cfg.norm),
            skip_around_intra: cfg.skip_around_intra,
            linear_layer_after_inter_intra: cfg.linear_layer_after_inter_intra,
        };
        let dual_mdl = (0..cfg.num_layers)
            .map(|i| {
                DualComputationBlock::new(
                    (&cfg.intra.0, cfg.intra.1),
                    (&cfg.inter.0, cfg.inter.1),
                    &block_cfg,
                    vb.pp("dual_mdl").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let pw = |name: &str, o: usize, i: usize| -> Result<Tensor> {
            vb.pp(name).get((o, i, 1), "weight")?.reshape((o, i))
        };
        Ok(Self {
            norm: Norm::new(cfg.norm, ni, 3, vb.pp("norm"))?,
            conv1d: pw("conv1d", no, ni)?,
            dual_mdl,
            prelu: vb
                .pp("prelu")
                .get_with_hints(1, "weight", candle_nn::Init::Const(0.25))?,
            conv2d_w: vb
                .pp("conv2d")
                .get((no * spk, no, 1, 1), "weight")?
                .reshape((no * spk, no))?,
            conv2d_b: vb.pp("conv2d").get(no * spk, "bias")?,
            output_w: pw("output.0", no, no)?,
            output_b: vb.pp("output.0").get(no, "bias")?,
            gate_w: pw("output_gate.0", no, no)?,
            gate_b: vb.pp("output_gate.0").get(no, "bias")?,
            end_conv1x1: pw("end_conv1x1", ni, no)?,
            k: cfg.k,
            num_spks: spk,
            in_channels: ni,
        })
    }

    /// Number of sources.
    pub fn num_spks(&self) -> usize {
        self.num_spks
    }

    /// Dynamic int8 quantization of the dual-path transformers, where nearly all of the
    /// products are (see [`crate::nnet::qgemm`]); the 1x1 convolutions around them keep f32.
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        self.dual_mdl
            .iter_mut()
            .try_for_each(|b| b.quantize_dynamic())
    }

    /// Encoded mixture `[B, L, N]` -> masks `[num_spks, B, L, N]` (SB: `[spks, B, N, L]`).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let p = |t: &Tensor| param(t, train);
        let x = self.norm.forward(x, train)?;
        let x = linear(&x, &p(&self.conv1d), None)?;
        let (mut x, gap) = segmentation(&x, self.k)?;
        for block in &self.dual_mdl {
            x = block.forward(&x, train)?;
        }
        // PReLU with one shared slope.
        let x = crate::nnet::global_norm_train::prelu(&x, &p(&self.prelu))?;
        let x = linear(&x, &p(&self.conv2d_w), Some(&p(&self.conv2d_b)))?;
        let (_, s, k, c) = x.dims4()?;
        let no = c / self.num_spks;
        let x = x
            .reshape((b, s, k, self.num_spks, no))?
            .permute((3, 0, 1, 2, 4))?
            .contiguous()?
            .reshape((self.num_spks * b, s, k, no))?;
        let x = over_add(&x, gap)?;
        let out = linear(&x, &p(&self.output_w), Some(&p(&self.output_b)))?.tanh()?;
        let gate = candle_nn::ops::sigmoid(&linear(&x, &p(&self.gate_w), Some(&p(&self.gate_b)))?)?;
        let x =
            crate::nnet::train_ops::relu(&linear(&(out * gate)?, &p(&self.end_conv1x1), None)?)?;
        x.reshape((self.num_spks, b, l, self.in_channels))
    }
}
