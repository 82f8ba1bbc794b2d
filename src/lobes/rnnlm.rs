//! `speechbrain.lobes.models.RNNLM.RNNLM`: the recurrent language model used for shallow
//! fusion in beam search (embedding -> LSTM -> linear/LayerNorm/activation -> output layer).
//!
//! Parameter names are SpeechBrain's: `embedding.Embedding.weight`, `rnn.rnn.*`,
//! `dnn.linear.w.*`, `dnn.norm.norm.*`, `out.w.*`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nnet::embedding::Embedding;
use crate::nnet::fused::f32_vec;
use crate::nnet::gemm::{embed_fm, HostF32, HostLinear, Parents};
use crate::nnet::linear::Linear;
use crate::nnet::normalization::LayerNorm;
use crate::nnet::rnn::{Lstm, LstmState};
use crate::nnet::rnn_step::{layer_norm_cols, log_softmax_cols, LstmLayerStep, Prev};
use crate::nnet::{Activation, Dropout};
use crate::pretrained::hparams::{Kwargs, Object};

/// The RNNLM's hyperparameters (the yaml's `lm_model` arguments, SpeechBrain's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct RnnlmConfig {
    /// `output_neurons` (vocabulary size).
    pub output_neurons: usize,
    /// `embedding_dim`.
    pub embedding_dim: usize,
    /// `activation`.
    pub activation: Activation,
    /// `dropout`.
    pub dropout: f32,
    /// `rnn_layers`.
    pub rnn_layers: usize,
    /// `rnn_neurons`.
    pub rnn_neurons: usize,
    /// `dnn_blocks` (0 or 1).
    pub dnn_blocks: usize,
    /// `dnn_neurons`.
    pub dnn_neurons: usize,
}

impl RnnlmConfig {
    /// Reads a `!new:speechbrain.lobes.models.RNNLM.RNNLM` object.
    pub fn from_object(o: &Object) -> std::result::Result<Self, String> {
        let kw = Kwargs::new(o);
        kw.check_known(&[
            "output_neurons",
            "embedding_dim",
            "activation",
            "dropout",
            "rnn_class",
            "rnn_layers",
            "rnn_neurons",
            "rnn_re_init",
            "return_hidden",
            "dnn_blocks",
            "dnn_neurons",
        ])?;
        if let Some(c) = kw.class("rnn_class") {
            if !c.ends_with(".LSTM") {
                return Err(format!("rnn_class `{c}` is not supported (only LSTM)"));
            }
        }
        let activation = match kw.class("activation") {
            None => Activation::LeakyRelu,
            Some(c) => Activation::from_class(c).ok_or(format!("unsupported activation `{c}`"))?,
        };
        let output_neurons = kw.usize("output_neurons", 0)?;
        if output_neurons == 0 {
            return Err("`output_neurons` is required".into());
        }
        let cfg = Self {
            output_neurons,
            embedding_dim: kw.usize("embedding_dim", 128)?,
            activation,
            dropout: kw.f64("dropout", 0.15)? as f32,
            rnn_layers: kw.usize("rnn_layers", 2)?,
            rnn_neurons: kw.usize("rnn_neurons", 1024)?,
            dnn_blocks: kw.usize("dnn_blocks", 1)?,
            dnn_neurons: kw.usize("dnn_neurons", 512)?,
        };
        // SpeechBrain names every block's layers alike (`dnn.linear`), so more than one block
        // cannot be saved or loaded there either.
        if cfg.dnn_blocks > 1 {
            return Err("dnn_blocks > 1 is not supported (SpeechBrain's names collide)".into());
        }
        if cfg.dnn_blocks == 0 && cfg.rnn_neurons != cfg.dnn_neurons {
            return Err(
                "dnn_blocks: 0 needs rnn_neurons == dnn_neurons (SpeechBrain's out layer)".into(),
            );
        }
        Ok(cfg)
    }
}

/// SpeechBrain's RNNLM.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::lobes::rnnlm::{Rnnlm, RnnlmConfig};
/// use voxbrain::nnet::Activation;
/// let cfg = RnnlmConfig { output_neurons: 20, embedding_dim: 8, activation: Activation::LeakyRelu,
///     dropout: 0.0, rnn_layers: 2, rnn_neurons: 16, dnn_blocks: 1, dnn_neurons: 12 };
/// let vm = VarMap::new();
/// let lm = Rnnlm::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
/// let tokens = Tensor::new(&[[0u32, 3, 5]], &Device::Cpu).unwrap();
/// let (logits, _state) = lm.forward(&tokens, None, false).unwrap();
/// assert_eq!(logits.dims(), &[1, 3, 20]);
/// ```
#[derive(Debug, Clone)]
pub struct Rnnlm {
    embedding: Embedding,
    rnn: Lstm,
    dnn: Option<(Linear, LayerNorm)>,
    out: Linear,
    cfg: RnnlmConfig,
}

impl Rnnlm {
    /// Builds the model; `vb` is its root (the keys of `lm.ckpt`).
    pub fn new(cfg: &RnnlmConfig, vb: VarBuilder) -> Result<Self> {
        let embedding = Embedding::new(cfg.output_neurons, cfg.embedding_dim, vb.pp("embedding"))?;
        let rnn = Lstm::new(
            cfg.embedding_dim,
            cfg.rnn_neurons,
            cfg.rnn_layers,
            false,
            cfg.dropout,
            vb.pp("rnn").pp("rnn"),
        )?;
        let dnn = if cfg.dnn_blocks == 1 {
            let l = Linear::new(cfg.rnn_neurons, cfg.dnn_neurons, true, vb.pp("dnn.linear"))?;
            let norm = LayerNorm::new(cfg.dnn_neurons, 1e-5, vb.pp("dnn.norm"))?;
            Some((l, norm))
        } else {
            None
        };
        let out = Linear::new(cfg.dnn_neurons, cfg.output_neurons, true, vb.pp("out"))?;
        Ok(Self {
            embedding,
            rnn,
            dnn,
            out,
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RnnlmConfig {
        &self.cfg
    }

    /// Logits for `tokens` `[B, U]` (-> `[B, U, V]`) or `[B]` (one step, -> `[B, V]`), from
    /// the LSTM state `hx` (zeros when `None`); returns the new state as well.
    pub fn forward(
        &self,
        tokens: &Tensor,
        hx: Option<&LstmState>,
        train: bool,
    ) -> Result<(Tensor, LstmState)> {
        let one_step = tokens.rank() == 1;
        let mut x = self.embedding.forward(tokens, train)?;
        x = Dropout {
            p: self.cfg.dropout,
        }
        .forward(&x, train)?;
        if one_step {
            x = x.unsqueeze(1)?;
        }
        let (mut x, state) = self.rnn.forward(&x, hx, train)?;
        if let Some((lin, norm)) = &self.dnn {
            x = lin.forward(&x, train)?;
            x = self.cfg.activation.forward(&norm.forward(&x)?)?;
            x = Dropout {
                p: self.cfg.dropout,
            }
            .forward(&x, train)?;
        }
        let mut out = self.out.forward(&x, train)?;
        if one_step {
            out = out.squeeze(1)?;
        }
        Ok((out, state))
    }
}

/// The RNNLM advanced one token at a time on the CPU in eval mode (beam search's RNNLM
/// scorer): feature-major activations and siblings sharing their parent's recurrent products
/// ([`crate::nnet::rnn_step`]). Equal to [`Rnnlm::forward`] on the permuted state up to float
/// rounding.
pub(crate) struct RnnlmStepper<'a> {
    emb: HostF32<'a>,
    emb_dim: usize,
    layers: Vec<LstmLayerStep<'a>>,
    dnn: Option<(HostLinear<'a>, Vec<f32>, Vec<f32>, f32)>,
    out: HostLinear<'a>,
    activation: Activation,
    /// Per layer `(h, c)` `[H, B]` after the last step, and that step's `B`.
    state: Option<Vec<(Vec<f32>, Vec<f32>)>>,
    n_prev: usize,
    parents: Option<Parents>,
}

impl<'a> RnnlmStepper<'a> {
    /// Borrows `lm`'s weights (CPU f32).
    pub fn new(lm: &'a Rnnlm) -> Result<Self> {
        if lm.rnn.directions() != 1 {
            candle_core::bail!("RNNLM step: a bidirectional LSTM cannot step");
        }
        let layers = lm
            .rnn
            .layers
            .iter()
            .map(|cells| LstmLayerStep::new(&cells[0]))
            .collect::<Result<Vec<_>>>()?;
        let dnn = match &lm.dnn {
            Some((lin, norm)) => Some((
                HostLinear::new(&lin.weight, lin.bias.as_ref(), "RNNLM dnn")?,
                f32_vec(&norm.weight)?,
                f32_vec(&norm.bias)?,
                norm.eps,
            )),
            None => None,
        };
        Ok(Self {
            emb: HostF32::new(&lm.embedding.weight, "RNNLM embedding")?,
            emb_dim: lm.cfg.embedding_dim,
            layers,
            dnn,
            out: HostLinear::new(&lm.out.weight, lm.out.bias.as_ref(), "RNNLM out")?,
            activation: lm.cfg.activation,
            state: None,
            n_prev: 0,
            parents: None,
        })
    }

    /// `log_softmax(logits / temperature)` `[B, V]` (row-major) after feeding `tokens`.
    pub fn step(&mut self, tokens: &[u32], temperature: f32) -> Result<Vec<f32>> {
        let b = tokens.len();
        let emb = embed_fm(self.emb.slice(), self.emb_dim, tokens)?;
        let parents = match self.parents.take() {
            Some(p) => p,
            None => Parents::identity(b),
        };
        if self.state.is_some() {
            parents.check(b, self.n_prev)?;
        }
        let mut new_state: Vec<(Vec<f32>, Vec<f32>)> = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            let prev = self.state.as_ref().map(|st| Prev {
                h: &st[l].0,
                c: Some(&st[l].1),
                parents: &parents,
            });
            let inp = new_state.last().map_or(&emb, |(h, _)| h);
            let hc = layer.step(inp, b, prev.as_ref())?;
            new_state.push(hc);
        }
        self.n_prev = b;
        let state = self.state.insert(new_state);
        let h = state.last().map_or(&emb, |(h, _)| h);
        let logits = match &self.dnn {
            Some((lin, gamma, beta, eps)) => {
                let mut y = lin.forward(h, b)?;
                layer_norm_cols(&mut y, b, gamma, beta, *eps);
                let t = Tensor::from_vec(y, (lin.out, b), &candle_core::Device::Cpu)?;
                self.out
                    .forward(&f32_vec(&self.activation.forward(&t)?)?, b)?
            }
            None => self.out.forward(h, b)?,
        };
        Ok(log_softmax_cols(&logits, b, temperature))
    }

    /// Hypothesis `j` now continues hypothesis `parent[j]` of the last step.
    pub fn permute(&mut self, parent: &[usize]) {
        self.parents = Some(Parents::new(parent.to_vec()));
    }
}
