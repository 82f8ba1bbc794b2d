//! ECAPA-TDNN speaker embeddings (`speechbrain.lobes.models.ECAPA_TDNN`): TDNN blocks,
//! SE-Res2Net blocks, multi-layer feature aggregation, attentive statistical pooling with
//! global context, and the cosine `Classifier`. Parameter paths equal SpeechBrain's
//! state_dict keys (`blocks.0.conv.conv.weight`, `asp.tdnn.norm.norm.running_mean`, ...).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

mod blocks;

pub use blocks::TdnnBlock;
use blocks::{AttentiveStatisticsPooling, SeRes2NetBlock};

use crate::nnet::cnn::Conv1d;
use crate::nnet::normalization::BatchNorm1d;
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

    /// Dynamic int8 quantization of the convolutions over time (see
    /// [`crate::nnet::cnn::Conv1d::quantize_dynamic`]); the final `fc` (one frame) keeps f32.
    /// Eval on the CPU only; the f32 weights stay, so training is unchanged.
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        self.first.quantize_dynamic()?;
        self.blocks
            .iter_mut()
            .try_for_each(|b| b.quantize_dynamic())?;
        self.mfa.quantize_dynamic()?;
        self.asp.quantize_dynamic()
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
        let x = self.mfa.forward_cat(&xl, self.train)?;
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
