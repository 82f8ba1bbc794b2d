//! `speechbrain.lobes.models.CRDNN.CRDNN`: convolutional blocks, time pooling, a (bi)LSTM and
//! fully connected blocks: the encoder of the official `asr-crdnn-rnnlm-librispeech` model.
//!
//! Parameter names are SpeechBrain's: `CNN.block_{i}.{conv_1,norm_1,conv_2,norm_2}`,
//! `RNN.rnn.weight_ih_l0...`, `DNN.block_{i}.{linear.w,norm.norm}`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nnet::cnn::{max_pool_axis, Conv2d};
use crate::nnet::dropout::Dropout2d;
use crate::nnet::linear::Linear;
use crate::nnet::normalization::{BatchNorm1d, LayerNorm};
use crate::nnet::rnn::Lstm;
use crate::nnet::{Activation, Dropout};
use crate::pretrained::hparams::{Kwargs, Object};

/// The CRDNN's hyperparameters (the yaml's `enc` arguments, SpeechBrain's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct CrdnnConfig {
    /// Feature size (last entry of `input_shape`, or `input_size`).
    pub input_size: usize,
    /// `activation`.
    pub activation: Activation,
    /// `dropout`.
    pub dropout: f32,
    /// `cnn_channels` (one per CNN block; `cnn_blocks` of them are used).
    pub cnn_channels: Vec<usize>,
    /// `cnn_kernelsize` `(freq, time)`.
    pub cnn_kernelsize: (usize, usize),
    /// `inter_layer_pooling_size` (frequency max-pooling per block).
    pub inter_layer_pooling_size: Vec<usize>,
    /// `time_pooling` and its `time_pooling_size` (`None`: no time pooling).
    pub time_pooling_size: Option<usize>,
    /// `rnn_layers` (0: no RNN).
    pub rnn_layers: usize,
    /// `rnn_neurons`.
    pub rnn_neurons: usize,
    /// `rnn_bidirectional`.
    pub rnn_bidirectional: bool,
    /// `dnn_blocks`.
    pub dnn_blocks: usize,
    /// `dnn_neurons`.
    pub dnn_neurons: usize,
}

impl Default for CrdnnConfig {
    fn default() -> Self {
        Self {
            input_size: 40,
            activation: Activation::LeakyRelu,
            dropout: 0.15,
            cnn_channels: vec![128, 256],
            cnn_kernelsize: (3, 3),
            inter_layer_pooling_size: vec![2, 2],
            time_pooling_size: None,
            rnn_layers: 4,
            rnn_neurons: 512,
            rnn_bidirectional: true,
            dnn_blocks: 2,
            dnn_neurons: 512,
        }
    }
}

impl CrdnnConfig {
    /// Reads a `!new:speechbrain.lobes.models.CRDNN.CRDNN` object.
    pub fn from_object(o: &Object) -> std::result::Result<Self, String> {
        let kw = Kwargs::new(o);
        kw.check_known(&[
            "input_size",
            "input_shape",
            "activation",
            "dropout",
            "cnn_blocks",
            "cnn_channels",
            "cnn_kernelsize",
            "time_pooling",
            "time_pooling_size",
            "freq_pooling_size",
            "rnn_class",
            "inter_layer_pooling_size",
            "using_2d_pooling",
            "rnn_layers",
            "rnn_neurons",
            "rnn_bidirectional",
            "rnn_re_init",
            "dnn_blocks",
            "dnn_neurons",
            "projection_dim",
            "use_rnnp",
        ])?;
        let d = Self::default();
        // input_shape is [null, null, n_mels]: the feature size is its last entry.
        let input_size = match kw.get("input_shape").and_then(|v| v.as_list()) {
            Some(l) => l
                .last()
                .and_then(|v| v.as_i64())
                .filter(|&i| i > 0)
                .map(|i| i as usize)
                .ok_or("`input_shape` must end with the feature size")?,
            None => kw.usize("input_size", 0)?,
        };
        if input_size == 0 {
            return Err("one of `input_size` or `input_shape` must give the feature size".into());
        }
        let activation = match kw.class("activation") {
            None => d.activation,
            Some(c) => Activation::from_class(c).ok_or(format!("unsupported activation `{c}`"))?,
        };
        if let Some(c) = kw.class("rnn_class") {
            if !c.ends_with(".LSTM") {
                return Err(format!("rnn_class `{c}` is not supported (only LSTM)"));
            }
        } else if kw.usize("rnn_layers", d.rnn_layers)? > 0 {
            return Err("rnn_class defaults to LiGRU, which is not supported: give LSTM".into());
        }
        if kw.bool("using_2d_pooling", false)? {
            return Err("using_2d_pooling: True is not supported".into());
        }
        if kw.i64("projection_dim", -1)? != -1 {
            return Err("projection_dim is not supported".into());
        }
        if kw.bool("use_rnnp", false)? {
            return Err("use_rnnp is not supported".into());
        }
        let cnn_blocks = kw.usize("cnn_blocks", 2)?;
        let mut cnn_channels = kw.usize_list("cnn_channels", &d.cnn_channels)?;
        let mut pools = kw.usize_list("inter_layer_pooling_size", &d.inter_layer_pooling_size)?;
        if cnn_channels.len() < cnn_blocks || pools.len() < cnn_blocks {
            return Err(format!(
                "cnn_channels and inter_layer_pooling_size need {cnn_blocks} entries (cnn_blocks)"
            ));
        }
        cnn_channels.truncate(cnn_blocks);
        pools.truncate(cnn_blocks);
        let k = kw.usize_list("cnn_kernelsize", &[3, 3])?;
        let cnn_kernelsize = match k.as_slice() {
            [a] => (*a, *a),
            [a, b] => (*a, *b),
            _ => return Err("`cnn_kernelsize` must have one or two entries".into()),
        };
        let time_pooling_size = if kw.bool("time_pooling", false)? {
            Some(kw.usize("time_pooling_size", 2)?)
        } else {
            None
        };
        Ok(Self {
            input_size,
            activation,
            dropout: kw.f64("dropout", d.dropout as f64)? as f32,
            cnn_channels,
            cnn_kernelsize,
            inter_layer_pooling_size: pools,
            time_pooling_size,
            rnn_layers: kw.usize("rnn_layers", d.rnn_layers)?,
            rnn_neurons: kw.usize("rnn_neurons", d.rnn_neurons)?,
            rnn_bidirectional: kw.bool("rnn_bidirectional", true)?,
            dnn_blocks: kw.usize("dnn_blocks", d.dnn_blocks)?,
            dnn_neurons: kw.usize("dnn_neurons", d.dnn_neurons)?,
        })
    }
}

#[derive(Debug, Clone)]
struct CnnBlock {
    conv_1: Conv2d,
    norm_1: LayerNorm,
    conv_2: Conv2d,
    norm_2: LayerNorm,
    pool: usize,
}

#[derive(Debug, Clone)]
struct DnnBlock {
    linear: Linear,
    norm: BatchNorm1d,
}

/// The CRDNN encoder: `[B, T, F]` features -> `[B, T / time_pooling, dnn_neurons]`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::lobes::crdnn::{Crdnn, CrdnnConfig};
/// let cfg = CrdnnConfig { cnn_channels: vec![4, 8], rnn_neurons: 8, rnn_layers: 1,
///     dnn_neurons: 6, time_pooling_size: Some(4), ..Default::default() };
/// let vm = VarMap::new();
/// let crdnn = Crdnn::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
/// let x = Tensor::zeros((2, 100, 40), DType::F32, &Device::Cpu).unwrap();
/// assert_eq!(crdnn.forward(&x, false).unwrap().dims(), &[2, 25, 6]);
/// ```
#[derive(Debug, Clone)]
pub struct Crdnn {
    cnn: Vec<CnnBlock>,
    rnn: Option<Lstm>,
    dnn: Vec<DnnBlock>,
    cfg: CrdnnConfig,
}

/// `act(norm(x))`; in training on the CPU a LayerNorm followed by LeakyReLU runs as one op
/// (`nnet::train_ops::layer_norm_act`), which keeps one full-size tensor fewer for the backward.
fn norm_act(norm: &LayerNorm, act: Activation, x: &Tensor, train: bool) -> Result<Tensor> {
    if train && act == Activation::LeakyRelu && norm.fits_train_cpu(x) {
        return crate::nnet::train_ops::layer_norm_act(
            x,
            &norm.weight,
            &norm.bias,
            norm.eps,
            Some(0.01),
        );
    }
    act.forward(&norm.forward_t(x, train)?)
}

impl Crdnn {
    /// Builds the encoder; `vb` is its module path (`0` in `asr.ckpt`).
    pub fn new(cfg: &CrdnnConfig, vb: VarBuilder) -> Result<Self> {
        let (mut freq, mut chans) = (cfg.input_size, 1usize);
        let mut cnn = Vec::new();
        for (i, (&c, &pool)) in cfg
            .cnn_channels
            .iter()
            .zip(&cfg.inter_layer_pooling_size)
            .enumerate()
        {
            let vb = vb.pp("CNN").pp(format!("block_{i}"));
            cnn.push(CnnBlock {
                conv_1: Conv2d::new(chans, c, cfg.cnn_kernelsize, vb.pp("conv_1"))?,
                norm_1: LayerNorm::with_shape(&[freq, c], 1e-5, vb.pp("norm_1"))?,
                conv_2: Conv2d::new(c, c, cfg.cnn_kernelsize, vb.pp("conv_2"))?,
                norm_2: LayerNorm::with_shape(&[freq, c], 1e-5, vb.pp("norm_2"))?,
                pool,
            });
            freq /= pool.max(1);
            chans = c;
        }
        let mut width = freq * chans;
        let rnn = if cfg.rnn_layers > 0 {
            let lstm = Lstm::new(
                width,
                cfg.rnn_neurons,
                cfg.rnn_layers,
                cfg.rnn_bidirectional,
                cfg.dropout,
                vb.pp("RNN").pp("rnn"),
            )?;
            width = cfg.rnn_neurons * lstm.directions();
            Some(lstm)
        } else {
            None
        };
        let mut dnn = Vec::new();
        for i in 0..cfg.dnn_blocks {
            let vb = vb.pp("DNN").pp(format!("block_{i}"));
            dnn.push(DnnBlock {
                linear: Linear::new(width, cfg.dnn_neurons, true, vb.pp("linear"))?,
                norm: BatchNorm1d::new(cfg.dnn_neurons, vb.pp("norm"))?,
            });
            width = cfg.dnn_neurons;
        }
        Ok(Self {
            cnn,
            rnn,
            dnn,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CrdnnConfig {
        &self.cfg
    }

    /// Output size (`dnn_neurons`, or the RNN/CNN width without DNN blocks).
    pub fn output_size(&self) -> usize {
        if self.cfg.dnn_blocks > 0 {
            return self.cfg.dnn_neurons;
        }
        match &self.rnn {
            Some(r) => r.hidden_size() * r.directions(),
            None => {
                let f = self
                    .cfg
                    .inter_layer_pooling_size
                    .iter()
                    .fold(self.cfg.input_size, |f, p| f / p.max(&1));
                f * self.cfg.cnn_channels.last().copied().unwrap_or(1)
            }
        }
    }

    /// Encodes `[B, T, F]` features (`train`: dropout on, batch statistics in BatchNorm).
    ///
    /// Like SpeechBrain, the whole padded tensor is processed: the LSTM runs over padding.
    /// Callers wanting batch-independent results encode each utterance on its own frames.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let act = self.cfg.activation;
        let drop = Dropout {
            p: self.cfg.dropout,
        };
        let drop2d = Dropout2d {
            p: self.cfg.dropout,
        };
        let mut x = x.clone();
        for b in &self.cnn {
            x = norm_act(&b.norm_1, act, &b.conv_1.forward(&x, train)?, train)?;
            x = norm_act(&b.norm_2, act, &b.conv_2.forward(&x, train)?, train)?;
            x = max_pool_axis(&x, 2, b.pool)?;
            // SpeechBrain's Dropout2d: whole frequency bins of an utterance.
            x = drop2d.forward(&x, train)?;
        }
        if let Some(k) = self.cfg.time_pooling_size {
            x = max_pool_axis(&x, 1, k)?;
        }
        if let Some(rnn) = &self.rnn {
            x = rnn.forward(&x, None, train)?.0;
        } else if x.rank() == 4 {
            let (b, t, f, c) = x.dims4()?;
            x = x.reshape((b, t, f * c))?;
        }
        for blk in &self.dnn {
            x = blk.linear.forward(&x, train)?;
            // SpeechBrain's BatchNorm1d normalizes [B, T, F] over F by transposing to [B, F, T].
            x = blk
                .norm
                .forward_t(&x.transpose(1, 2)?, train)?
                .transpose(1, 2)?;
            x = act.forward(&x)?;
            x = drop.forward(&x, train)?;
        }
        Ok(x)
    }
}
