//! ECAPA-TDNN speaker embeddings (`speechbrain.lobes.models.ECAPA_TDNN`): TDNN blocks,
//! SE-Res2Net blocks, multi-layer feature aggregation, attentive statistical pooling with
//! global context, and the cosine `Classifier`. Parameter paths equal SpeechBrain's
//! state_dict keys (`blocks.0.conv.conv.weight`, `asp.tdnn.norm.norm.running_mean`, ...).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::nnet::cnn::Conv1d;
use crate::nnet::normalization::BatchNorm1d;
use crate::nnet::stats_pooling::weighted_mean_std;
use crate::pretrained::hparams::{Object, Value};

/// ECAPA-TDNN hyperparameters (SpeechBrain's constructor arguments and defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct EcapaConfig {
    /// Input features per frame (`n_mels`).
    pub input_size: usize,
    /// Embedding size.
    pub lin_neurons: usize,
    /// Channels of each block; the last is the MFA output.
    pub channels: Vec<usize>,
    /// Kernel size of each block.
    pub kernel_sizes: Vec<usize>,
    /// Dilation of each block.
    pub dilations: Vec<usize>,
    /// Attention channels of the pooling.
    pub attention_channels: usize,
    /// Res2Net scale.
    pub res2net_scale: usize,
    /// Squeeze-excitation channels.
    pub se_channels: usize,
    /// Use the utterance mean/std as attention context.
    pub global_context: bool,
    /// Conv groups of each block.
    pub groups: Vec<usize>,
}

impl Default for EcapaConfig {
    fn default() -> Self {
        Self {
            input_size: 80,
            lin_neurons: 192,
            channels: vec![512, 512, 512, 512, 1536],
            kernel_sizes: vec![5, 3, 3, 3, 1],
            dilations: vec![1, 2, 3, 4, 1],
            attention_channels: 128,
            res2net_scale: 8,
            se_channels: 128,
            global_context: true,
            groups: vec![1, 1, 1, 1, 1],
        }
    }
}

fn usize_list(v: &Value, key: &str) -> std::result::Result<Vec<usize>, String> {
    v.as_list()
        .ok_or_else(|| format!("`{key}` must be a list"))?
        .iter()
        .map(|x| {
            x.as_i64()
                .map(|i| i as usize)
                .ok_or_else(|| format!("`{key}` must hold integers"))
        })
        .collect()
}

impl EcapaConfig {
    /// Reads the kwargs of a `!new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN` object.
    pub fn from_object(o: &Object) -> std::result::Result<Self, String> {
        let mut c = Self::default();
        for (k, v) in &o.kwargs {
            let int = || {
                v.as_i64()
                    .map(|i| i as usize)
                    .ok_or_else(|| format!("`{k}` must be an integer"))
            };
            match k.as_str() {
                "input_size" => c.input_size = int()?,
                "lin_neurons" => c.lin_neurons = int()?,
                "channels" => c.channels = usize_list(v, k)?,
                "kernel_sizes" => c.kernel_sizes = usize_list(v, k)?,
                "dilations" => c.dilations = usize_list(v, k)?,
                "attention_channels" => c.attention_channels = int()?,
                "res2net_scale" => c.res2net_scale = int()?,
                "se_channels" => c.se_channels = int()?,
                "global_context" => {
                    c.global_context = v.as_bool().ok_or("`global_context` must be a bool")?
                }
                "groups" => c.groups = usize_list(v, k)?,
                "device" | "activation" | "dropout" => {}
                other => return Err(format!("unknown ECAPA_TDNN argument `{other}`")),
            }
        }
        let n = c.channels.len();
        if n < 3 || c.kernel_sizes.len() != n || c.dilations.len() != n || c.groups.len() != n {
            return Err(
                "channels, kernel_sizes, dilations and groups must have the same length (>= 3)"
                    .into(),
            );
        }
        Ok(c)
    }
}

/// Conv1d -> ReLU -> BatchNorm1d (SpeechBrain's order).
#[derive(Debug, Clone)]
pub struct TdnnBlock {
    conv: Conv1d,
    norm: BatchNorm1d,
}

impl TdnnBlock {
    fn new(
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
        })
    }
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            return self
                .norm
                .forward_t(&self.conv.forward_mode(x, train)?.relu()?, train);
        }
        // Eval: bias, ReLU and BatchNorm in one pass.
        let (scale, shift) = self.norm.eval_affine()?;
        let y = self.conv.forward_unbiased(x, false)?;
        let bias = self.conv.bias().map(|b| b.detach());
        crate::nnet::fused::bias_relu_affine(&y, bias.as_ref(), &scale, &shift)
    }

    /// The block applied to `cat([x, ctx repeated over time], 1)` without building that
    /// concatenation (1x1 conv only): `ctx` `[B, Cc]` is constant over time, so its part of
    /// the convolution is a per-utterance bias.
    fn forward_with_context(&self, x: &Tensor, ctx: &Tensor, train: bool) -> Result<Tensor> {
        let w = crate::nnet::param(self.conv.weight(), train).squeeze(2)?; // [O, C + Cc]
        let c = x.dim(1)?;
        let y = crate::nnet::cnn::pointwise(x, &w.narrow(1, 0, c)?)?;
        let mut bias = ctx.matmul(&w.narrow(1, c, w.dim(1)? - c)?.t()?)?; // [B, O]
        if let Some(b) = self.conv.bias() {
            bias = bias.broadcast_add(&crate::nnet::param(b, train))?;
        }
        let y = y.broadcast_add(&bias.unsqueeze(2)?)?.relu()?;
        self.norm.forward_t(&y, train)
    }
}

/// Res2Net: channel groups, each convolved with the previous group's output added.
#[derive(Debug, Clone)]
struct Res2NetBlock {
    blocks: Vec<TdnnBlock>,
    scale: usize,
}

impl Res2NetBlock {
    fn new(c: usize, scale: usize, k: usize, d: usize, vb: VarBuilder) -> Result<Self> {
        let w = c / scale;
        let blocks = (0..scale - 1)
            .map(|i| TdnnBlock::new(w, w, k, d, 1, vb.pp("blocks").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Self { blocks, scale })
    }
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
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
    fn new(c: usize, se: usize, vb: VarBuilder) -> Result<Self> {
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
struct SeRes2NetBlock {
    tdnn1: TdnnBlock,
    res2net: Res2NetBlock,
    tdnn2: TdnnBlock,
    se: SeBlock,
    shortcut: Option<Conv1d>,
}

impl SeRes2NetBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(
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
    fn forward(&self, x: &Tensor, lengths: Option<&Tensor>, train: bool) -> Result<Tensor> {
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
struct AttentiveStatisticsPooling {
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
    fn new(c: usize, att: usize, global_context: bool, vb: VarBuilder) -> Result<Self> {
        let cin = if global_context { 3 * c } else { c };
        Ok(Self {
            tdnn: TdnnBlock::new(cin, att, 1, 1, 1, vb.pp("tdnn"))?,
            conv: Conv1d::new(att, c, 1, 1, 1, vb.pp("conv"))?,
            global_context,
        })
    }
    fn forward(&self, x: &Tensor, lengths: &Tensor, train: bool) -> Result<Tensor> {
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
        let attn = self.conv.forward_mode(&hidden.tanh()?, false)?;
        weighted_mean_std(x, Some(&attn), valid)?.unsqueeze(2)
    }
}

/// The ECAPA-TDNN embedding model.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::lobes::ecapa_tdnn::{EcapaConfig, EcapaTdnn};
/// let cfg = EcapaConfig { input_size: 24, lin_neurons: 16, channels: vec![32, 32, 32, 32, 96],
///     attention_channels: 8, se_channels: 8, ..Default::default() };
/// let vm = VarMap::new();
/// let model = EcapaTdnn::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
/// let feats = Tensor::zeros((2, 50, 24), DType::F32, &Device::Cpu).unwrap();
/// let emb = model.forward(&feats, None).unwrap();
/// assert_eq!(emb.dims(), &[2, 1, 16]);
/// ```
#[derive(Debug, Clone)]
pub struct EcapaTdnn {
    first: TdnnBlock,
    blocks: Vec<SeRes2NetBlock>,
    mfa: TdnnBlock,
    asp: AttentiveStatisticsPooling,
    asp_bn: BatchNorm1d,
    fc: Conv1d,
    cfg: EcapaConfig,
    train: bool,
}

impl EcapaTdnn {
    /// Builds the model with parameters from `vb` (paths as SpeechBrain's state_dict).
    pub fn new(cfg: &EcapaConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &cfg.channels;
        let n = ch.len();
        let bvb = vb.pp("blocks");
        let first = TdnnBlock::new(
            cfg.input_size,
            ch[0],
            cfg.kernel_sizes[0],
            cfg.dilations[0],
            cfg.groups[0],
            bvb.pp(0),
        )?;
        let blocks = (1..n - 1)
            .map(|i| {
                SeRes2NetBlock::new(
                    ch[i - 1],
                    ch[i],
                    cfg.res2net_scale,
                    cfg.se_channels,
                    cfg.kernel_sizes[i],
                    cfg.dilations[i],
                    cfg.groups[i],
                    bvb.pp(i),
                )
            })
            .collect::<Result<_>>()?;
        let mfa = TdnnBlock::new(
            ch[n - 2] * (n - 2),
            ch[n - 1],
            cfg.kernel_sizes[n - 1],
            cfg.dilations[n - 1],
            cfg.groups[n - 1],
            vb.pp("mfa"),
        )?;
        let asp = AttentiveStatisticsPooling::new(
            ch[n - 1],
            cfg.attention_channels,
            cfg.global_context,
            vb.pp("asp"),
        )?;
        let asp_bn = BatchNorm1d::new(ch[n - 1] * 2, vb.pp("asp_bn"))?;
        let fc = Conv1d::new(ch[n - 1] * 2, cfg.lin_neurons, 1, 1, 1, vb.pp("fc"))?;
        Ok(Self {
            first,
            blocks,
            mfa,
            asp,
            asp_bn,
            fc,
            cfg: cfg.clone(),
            train: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EcapaConfig {
        &self.cfg
    }

    /// Training mode (BatchNorm batch statistics) or evaluation mode (running statistics).
    pub fn set_train(&mut self, train: bool) {
        self.train = train;
    }

    /// Embeddings `[batch, 1, lin_neurons]` of features `[batch, time, input_size]`;
    /// `lengths` are relative lengths (padding excluded from SE means and pooling).
    pub fn forward(&self, feats: &Tensor, lengths: Option<&Tensor>) -> Result<Tensor> {
        let b = feats.dim(0)?;
        let ones;
        let lens = match lengths {
            Some(l) => l,
            None => {
                ones = Tensor::ones(b, DType::F32, feats.device())?;
                &ones
            }
        };
        let mut x = self
            .first
            .forward(&feats.transpose(1, 2)?.contiguous()?, self.train)?;
        let mut xl = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            x = blk.forward(&x, lengths, self.train)?;
            xl.push(x.clone());
        }
        let x = Tensor::cat(&xl, 1)?;
        let x = self.mfa.forward(&x, self.train)?;
        let x = self.asp.forward(&x, lens, self.train)?;
        let x = self.asp_bn.forward_t(&x, self.train)?;
        self.fc.forward_mode(&x, self.train)?.transpose(1, 2)
    }
}

/// The cosine-similarity speaker classifier head (`ECAPA_TDNN.Classifier`, `lin_blocks=0`).
#[derive(Debug, Clone)]
pub struct Classifier {
    weight: Tensor,
}

impl Classifier {
    /// `weight` is `[out_neurons, input_size]`.
    pub fn new(input_size: usize, out_neurons: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_neurons, input_size), "weight")?,
        })
    }

    /// Cosine scores `[batch, 1, out_neurons]` of embeddings `[batch, 1, input_size]`.
    pub fn forward(&self, emb: &Tensor) -> Result<Tensor> {
        let x = l2_normalize(&emb.squeeze(1)?)?;
        let w = l2_normalize(&self.weight)?;
        x.matmul(&w.t()?)?.unsqueeze(1)
    }
}

/// `torch.nn.functional.normalize` over the last axis (eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&n)
}
