//! `speechbrain.nnet.RNN.AttentionalRNNDecoder`: a recurrent decoder that attends the encoder
//! states at every step (GRU cells with location-aware attention, as the official
//! `asr-crdnn-rnnlm-librispeech` model uses).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::attention::{AttnSteps, LocationAttnState, LocationAwareAttention};
use super::linear_train::StepLinear;
use super::rnn::GruCellStack;
use super::{linear, param, Dropout};

/// Configuration of an [`AttentionalRNNDecoder`] (the yaml's `dec` arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionalRNNDecoderConfig {
    /// `rnn_type` (only `gru` is implemented).
    pub rnn_type: String,
    /// `attn_type` (only `location` is implemented).
    pub attn_type: String,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `attn_dim`.
    pub attn_dim: usize,
    /// `num_layers`.
    pub num_layers: usize,
    /// `enc_dim`.
    pub enc_dim: usize,
    /// `input_size` (the embedding size).
    pub input_size: usize,
    /// `scaling` of the attention energies.
    pub scaling: f64,
    /// `channels` of the location convolution.
    pub channels: usize,
    /// `kernel_size` (half-width) of the location convolution.
    pub kernel_size: usize,
    /// `dropout`.
    pub dropout: f32,
}

/// The decoder's memory between steps: RNN state, previous context, attention memory.
#[derive(Debug, Clone)]
pub struct DecoderState {
    /// GRU state `[layers, B, H]` (`None` before the first step: zeros).
    pub hs: Option<Tensor>,
    /// Previous context vector `[B, attn_dim]`.
    pub c: Tensor,
    /// Attention memory.
    pub attn: LocationAttnState,
}

impl DecoderState {
    /// Selects batch rows (beam-search permutation, SpeechBrain's `permute_mem`).
    pub fn index_select(&self, index: &Tensor) -> Result<Self> {
        Ok(Self {
            hs: match &self.hs {
                Some(h) => Some(h.index_select(index, 1)?),
                None => None,
            },
            c: self.c.index_select(index, 0)?,
            attn: self.attn.index_select(index)?,
        })
    }
}

/// SpeechBrain's `AttentionalRNNDecoder` (parameters `proj`, `attn.*`,
/// `rnn.rnn_cells.{i}.*`).
#[derive(Debug, Clone)]
pub struct AttentionalRNNDecoder {
    pub(crate) proj: (Tensor, Tensor),
    pub(crate) attn: LocationAwareAttention,
    pub(crate) rnn: GruCellStack,
    drop: Dropout,
    cfg: AttentionalRNNDecoderConfig,
}

impl AttentionalRNNDecoder {
    /// Builds the decoder; `vb` is its module path (`2.` in `asr.ckpt`, `dec` in the yaml).
    pub fn new(cfg: &AttentionalRNNDecoderConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.rnn_type.to_lowercase() != "gru" {
            candle_core::bail!(
                "AttentionalRNNDecoder: rnn_type `{}` is not supported (only gru)",
                cfg.rnn_type
            );
        }
        if cfg.attn_type.to_lowercase() != "location" {
            candle_core::bail!(
                "AttentionalRNNDecoder: attn_type `{}` is not supported (only location)",
                cfg.attn_type
            );
        }
        let p = candle_nn::linear(
            cfg.hidden_size + cfg.attn_dim,
            cfg.hidden_size,
            vb.pp("proj"),
        )?;
        let attn = LocationAwareAttention::new(
            cfg.enc_dim,
            cfg.hidden_size,
            cfg.attn_dim,
            cfg.attn_dim,
            cfg.channels,
            cfg.kernel_size,
            cfg.scaling,
            vb.pp("attn"),
        )?;
        // SpeechBrain: no dropout between cells when there is a single layer.
        let cell_dropout = if cfg.num_layers == 1 {
            0.0
        } else {
            cfg.dropout
        };
        let rnn = GruCellStack::new(
            cfg.input_size + cfg.attn_dim,
            cfg.hidden_size,
            cfg.num_layers,
            cell_dropout,
            vb.pp("rnn"),
        )?;
        Ok(Self {
            // `p` is built just above with a bias (SpeechBrain's Linear default).
            proj: (p.weight().clone(), p.bias().expect("bias").clone()),
            attn,
            rnn,
            drop: Dropout { p: cfg.dropout },
            cfg: cfg.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AttentionalRNNDecoderConfig {
        &self.cfg
    }

    /// The memory before the first step for `enc_states` `[B, T, E]` with valid lengths
    /// `enc_len` (SpeechBrain's `reset_mem` + the attention's lazy initialization).
    pub fn init_state(
        &self,
        enc_states: &Tensor,
        enc_len: &[usize],
        train: bool,
    ) -> Result<DecoderState> {
        let b = enc_states.dim(0)?;
        Ok(DecoderState {
            hs: None,
            c: Tensor::zeros(
                (b, self.cfg.attn_dim),
                enc_states.dtype(),
                enc_states.device(),
            )?,
            attn: self.attn.init_state(enc_states, enc_len, train)?,
        })
    }

    /// One step (`forward_step`): `inp` `[B, input_size]` (the embedded previous token) ->
    /// `(dec_out [B, H], attention weights [B, T])`; `state` is updated.
    pub fn forward_step(
        &self,
        inp: &Tensor,
        state: &mut DecoderState,
        enc_states: &Tensor,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (cat, w) = self.step(inp, state, enc_states, train, None)?;
        Ok((self.project(&cat, train)?, w))
    }

    /// A step up to the output projection: `cat(context, cell output)` `[B, A + H]` and the
    /// attention weights.
    fn step(
        &self,
        inp: &Tensor,
        state: &mut DecoderState,
        enc_states: &Tensor,
        train: bool,
        steps: Option<&TrainSteps>,
    ) -> Result<(Tensor, Tensor)> {
        let cell_inp = Tensor::cat(&[inp, &state.c], D::Minus1)?;
        let cell_inp = self.drop.forward(&cell_inp, train)?;
        let gru = steps.map(|s| s.gru.as_slice());
        let (cell_out, hs) = self
            .rnn
            .forward_with(&cell_inp, state.hs.as_ref(), train, gru)?;
        state.hs = Some(hs);
        let attn = steps.map(|s| &s.attn);
        let (c, w) = self
            .attn
            .forward_with(enc_states, &cell_out, &mut state.attn, train, attn)?;
        let cat = Tensor::cat(&[&c, &cell_out], D::Minus1)?;
        state.c = c;
        Ok((cat, w))
    }

    /// The output projection `proj` over the last dimension.
    fn project(&self, cat: &Tensor, train: bool) -> Result<Tensor> {
        let (w, b) = (param(&self.proj.0, train), param(&self.proj.1, train));
        linear(cat, &w, Some(&b))
    }

    /// Teacher-forced decoding (`forward`): `inp` `[B, U, input_size]` -> outputs
    /// `[B, U, H]` and attention `[B, U, T]`; `enc_len` in frames. The output projection runs
    /// once over all steps; in training on the CPU, each recurrent weight's gradient is one
    /// product over all steps ([`StepLinear`]).
    pub fn forward(
        &self,
        inp: &Tensor,
        enc_states: &Tensor,
        enc_len: &[usize],
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        let mut state = self.init_state(enc_states, enc_len, train)?;
        let steps = if train && enc_states.device().is_cpu() && enc_states.dtype() == DType::F32 {
            Some(TrainSteps {
                gru: self.rnn.cells.iter().map(|c| c.step_linears()).collect(),
                attn: self.attn.step_linears()?,
            })
        } else {
            None
        };
        let u = inp.dim(1)?;
        let (mut outs, mut attns) = (Vec::with_capacity(u), Vec::with_capacity(u));
        for t in 0..u {
            let x = inp.narrow(1, t, 1)?.squeeze(1)?;
            let (o, w) = self.step(&x, &mut state, enc_states, train, steps.as_ref())?;
            outs.push(o);
            attns.push(w);
        }
        let out = self.project(&Tensor::stack(&outs, 1)?, train)?;
        Ok((out, Tensor::stack(&attns, 1)?))
    }
}

/// The decoder's recurrent weights for one training pass (see [`StepLinear`]).
struct TrainSteps {
    gru: Vec<(StepLinear, StepLinear)>,
    attn: AttnSteps,
}
