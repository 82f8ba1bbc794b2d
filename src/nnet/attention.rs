//! `speechbrain.nnet.attention`: `MultiheadAttention` (a wrapper around
//! `torch.nn.MultiheadAttention`, held as `.att`) and `PositionalwiseFeedForward`.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::linear_train::StepLinear;
use super::qgemm::{quantize_linear, QWeight};
use super::{linear, param, Activation, Dropout};
use std::sync::Arc;

/// Largest attention-weight tensor computed at once (elements): 2^25 = 128 MB of f32.
pub const MAX_SCORE_ELEMS: usize = 1 << 25;

/// `speechbrain.nnet.attention.MultiheadAttention(nhead, d_model)` for self-attention with
/// `kdim = vdim = d_model`. Parameters: `att.in_proj_weight` `[3D, D]`, `att.in_proj_bias`
/// `[3D]`, `att.out_proj.weight` `[D, D]`, `att.out_proj.bias` `[D]`.
#[derive(Debug, Clone)]
pub struct MultiheadAttention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor,
    nhead: usize,
    d_model: usize,
    dropout: Dropout,
    max_score_elems: usize,
    /// int8 copies of the in- and out-projections ([`Self::quantize_dynamic`]).
    quant: Option<Arc<[QWeight; 2]>>,
}

impl MultiheadAttention {
    /// Sets the largest attention-weight tensor computed at once (default
    /// [`MAX_SCORE_ELEMS`]).
    pub fn with_max_score_elems(mut self, n: usize) -> Self {
        self.max_score_elems = n.max(1);
        self
    }

    /// Dynamic int8 quantization of the in- and out-projections, as torch's
    /// `quantize_dynamic` does to `nn.Linear` (see [`crate::nnet::qgemm`]); used by the CPU eval
    /// kernels only (the f32 weights stay for training and other devices).
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        self.quant = Some(Arc::new([
            quantize_linear(&self.in_proj_weight)?,
            quantize_linear(&self.out_proj_weight)?,
        ]));
        Ok(())
    }

    /// Builds the layer; `vb` is the SpeechBrain module's path (e.g. `...layers.0.self_att`).
    pub fn new(nhead: usize, d_model: usize, dropout: f32, vb: VarBuilder) -> Result<Self> {
        if nhead == 0 || !d_model.is_multiple_of(nhead) {
            candle_core::bail!(
                "MultiheadAttention: d_model {d_model} not divisible by nhead {nhead}"
            );
        }
        let att = vb.pp("att");
        Ok(Self {
            in_proj_weight: att.get((3 * d_model, d_model), "in_proj_weight")?,
            in_proj_bias: att.get(3 * d_model, "in_proj_bias")?,
            out_proj_weight: att.pp("out_proj").get((d_model, d_model), "weight")?,
            out_proj_bias: att.pp("out_proj").get(d_model, "bias")?,
            nhead,
            d_model,
            dropout: Dropout { p: dropout },
            max_score_elems: MAX_SCORE_ELEMS,
            quant: None,
        })
    }

    /// Self-attention over `x` `[B, T, D]` (no masks); returns `[B, T, D]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_add(x, None, train)
    }

    /// `residual + forward(x)` (a transformer layer's skip connection; `residual` `[B, T, D]`),
    /// fused into the output projection in eval mode on the CPU.
    pub fn forward_add(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, hd) = (self.nhead, self.d_model / self.nhead);
        if d != self.d_model {
            candle_core::bail!(
                "MultiheadAttention: input width {d}, expected {}",
                self.d_model
            );
        }
        if !train {
            // Eval: parameters are constants (`param` detaches them).
            let p = [
                &self.in_proj_weight,
                &self.in_proj_bias,
                &self.out_proj_weight,
                &self.out_proj_bias,
            ]
            .map(|t| param(t, false));
            if super::attention_eval::applies(x, &p.each_ref().map(Some)) {
                return super::attention_eval::SelfAttention {
                    in_w: &p[0],
                    in_b: &p[1],
                    out_w: &p[2],
                    out_b: &p[3],
                    nhead: h,
                    quant: self.quant.as_deref(),
                }
                .forward_add(x, residual);
            }
        }
        let qkv = linear(
            x,
            &param(&self.in_proj_weight, train),
            Some(&param(&self.in_proj_bias, train)),
        )?;
        if !(train && self.dropout.p > 0.0) && super::attention_train::applies(&qkv) {
            // Training without attention dropout: the core is one op (see attention_train).
            let ctx = super::attention_train::self_attention_core(&qkv, h)?;
            let y = linear(
                &ctx,
                &param(&self.out_proj_weight, train),
                Some(&param(&self.out_proj_bias, train)),
            )?;
            return match residual {
                Some(r) => r + y,
                None => Ok(y),
            };
        }
        let qkv = qkv.reshape((b, t, 3, h, hd))?.permute((2, 0, 3, 1, 4))?; // [3, B, H, T, hd]
        let scale = 1.0 / (hd as f64).sqrt();
        let q = (qkv.get(0)?.contiguous()? * scale)?.reshape((b * h, t, hd))?;
        let k = qkv.get(1)?.contiguous()?.reshape((b * h, t, hd))?;
        let v = qkv.get(2)?.contiguous()?.reshape((b * h, t, hd))?;
        // The [B*H, T, T] attention weights are computed in groups of sequences so that long
        // inputs (many inter-chunk positions) need bounded memory; numerics are unchanged.
        let group = (self.max_score_elems / (t * t).max(1)).clamp(1, b * h);
        let mut parts = Vec::with_capacity((b * h).div_ceil(group));
        let mut start = 0;
        while start < b * h {
            let n = group.min(b * h - start);
            let (q, k, v) = (
                q.narrow(0, start, n)?,
                k.narrow(0, start, n)?,
                v.narrow(0, start, n)?,
            );
            let scores = q.matmul(&k.t()?)?;
            let probs = super::fused::softmax_last_dim(&scores)?;
            let probs = self.dropout.forward(&probs, train)?;
            parts.push(probs.matmul(&v)?);
            start += n;
        }
        let ctx = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts, 0)?
        };
        let ctx = ctx // [B*H, T, hd]
            .reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, d))?;
        let y = linear(
            &ctx,
            &param(&self.out_proj_weight, train),
            Some(&param(&self.out_proj_bias, train)),
        )?;
        match residual {
            Some(r) => r + y,
            None => Ok(y),
        }
    }
}

/// `speechbrain.nnet.attention.PositionalwiseFeedForward(d_ffn, input_size)`:
/// `Linear -> activation -> Dropout -> Linear`, parameters `ffn.0.*` and `ffn.3.*`.
#[derive(Debug, Clone)]
pub struct PositionalwiseFeedForward {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    activation: Activation,
    dropout: Dropout,
    /// int8 copies of the two weights ([`Self::quantize_dynamic`]).
    quant: Option<Arc<[QWeight; 2]>>,
}

impl PositionalwiseFeedForward {
    /// Builds the block under `vb` (the module's path, e.g. `...layers.0.pos_ffn`).
    pub fn new(
        d_ffn: usize,
        input_size: usize,
        dropout: f32,
        activation: Activation,
        vb: VarBuilder,
    ) -> Result<Self> {
        let ffn = vb.pp("ffn");
        Ok(Self {
            w1: ffn.pp("0").get((d_ffn, input_size), "weight")?,
            b1: ffn.pp("0").get(d_ffn, "bias")?,
            w2: ffn.pp("3").get((input_size, d_ffn), "weight")?,
            b2: ffn.pp("3").get(input_size, "bias")?,
            activation,
            dropout: Dropout { p: dropout },
            quant: None,
        })
    }

    /// Dynamic int8 quantization of both layers (see [`MultiheadAttention::quantize_dynamic`]).
    pub fn quantize_dynamic(&mut self) -> Result<()> {
        self.quant = Some(Arc::new([
            quantize_linear(&self.w1)?,
            quantize_linear(&self.w2)?,
        ]));
        Ok(())
    }

    /// Applies the block over the last dimension.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_add(x, None, train)
    }

    /// `residual + forward(x)` (a transformer layer's skip connection), fused in eval mode on
    /// the CPU.
    pub fn forward_add(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        if !train {
            let p = [&self.w1, &self.b1, &self.w2, &self.b2].map(|t| param(t, false));
            if super::attention_eval::applies(x, &p.each_ref().map(Some)) {
                return super::attention_eval::FeedForward {
                    w1: &p[0],
                    b1: &p[1],
                    w2: &p[2],
                    b2: &p[3],
                    activation: self.activation,
                    quant: self.quant.as_deref(),
                }
                .forward_add(x, residual);
            }
        }
        let hdn = self.activation.forward(&linear(
            x,
            &param(&self.w1, train),
            Some(&param(&self.b1, train)),
        )?)?;
        let hdn = self.dropout.forward(&hdn, train)?;
        let y = linear(&hdn, &param(&self.w2, train), Some(&param(&self.b2, train)))?;
        match residual {
            Some(r) => r + y,
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn grouped_attention_equals_one_shot() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let att = MultiheadAttention::new(4, 16, 0.0, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 50, 16), &Device::Cpu).unwrap();
        let one = att.forward(&x, false).unwrap();
        // One sequence-head at a time (12 groups), and uneven groups of 5.
        for n in [2500, 5 * 2500] {
            let grouped = att
                .clone()
                .with_max_score_elems(n)
                .forward(&x, false)
                .unwrap();
            let diff = (&one - &grouped).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        }
    }
}

/// `speechbrain.nnet.attention.LocationAwareAttention`: additive attention whose energies also
/// see a convolution of the previous step's weights (Chorowski et al., 2015). Parameters:
/// `mlp_enc`, `mlp_dec`, `mlp_attn` (no bias), `conv_loc` (no bias), `mlp_loc`, `mlp_out`.
///
/// SpeechBrain keeps the per-utterance memory inside the module; here it is an explicit
/// [`LocationAttnState`], so that beam search can permute it and training can run several
/// sequences at once.
#[derive(Debug, Clone)]
pub struct LocationAwareAttention {
    pub(crate) mlp_enc: (Tensor, Tensor),
    pub(crate) mlp_dec: (Tensor, Tensor),
    pub(crate) mlp_attn: Tensor,
    pub(crate) conv_loc: Tensor,
    pub(crate) mlp_loc: (Tensor, Tensor),
    pub(crate) mlp_out: (Tensor, Tensor),
    pub(crate) kernel_size: usize,
    pub(crate) scaling: f64,
}

/// The start of location-aware attention for sequences with `enc_len` valid frames of `t`:
/// the mask (1 on valid frames) and the first "previous" weights (uniform over the valid
/// frames), each `[B, T]` row-major.
pub(crate) fn initial_weights(enc_len: &[usize], t: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let b = enc_len.len();
    let mut mask = vec![0f32; b * t];
    let mut prev = vec![0f32; b * t];
    for (i, &len) in enc_len.iter().enumerate() {
        if len == 0 || len > t {
            candle_core::bail!("attention: length {len} of sequence {i} not in 1..={t}");
        }
        mask[i * t..i * t + len].fill(1.0);
        prev[i * t..i * t + len].fill(1.0 / len as f32);
    }
    Ok((mask, prev))
}

/// The location convolution in training: `prev` `[B, T]` (zero-padded by `k` each side) as
/// `[B, T, 2k+1]` windows times the kernel `[C, 1, 2k+1]`, returned as `[B, C, T]`. A matrix
/// product, so the kernel's gradient comes from matmul's backward: candle 0.11's conv1d
/// backward gives wrong kernel gradients for batches of more than one sequence.
fn location_conv_train(
    prev: &Tensor,
    w: &Tensor,
    k: usize,
    step: Option<&StepLinear>,
) -> Result<Tensor> {
    let (_, t) = prev.dims2()?;
    let (c, _, width) = w.dims3()?;
    let padded = prev.pad_with_zeros(1, k, k)?;
    let cols = (0..width)
        .map(|j| padded.narrow(1, j, t))
        .collect::<Result<Vec<_>>>()?;
    let windows = Tensor::stack(&cols, 2)?; // [B, T, K]
    match step {
        Some(s) => s.forward(&windows)?,
        None => linear(&windows, &w.reshape((c, width))?, None)?,
    }
    .transpose(1, 2)
}

/// The attention's weights for one training pass of the decoder's recurrence, each applied
/// once per step (see [`StepLinear`]).
pub(crate) struct AttnSteps {
    conv_loc: StepLinear,
    mlp_loc: StepLinear,
    mlp_dec: StepLinear,
    mlp_attn: StepLinear,
    mlp_out: StepLinear,
}

/// `x W^T + b` through `step` when given, else as a layer of its own.
fn apply(
    step: Option<&StepLinear>,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    train: bool,
) -> Result<Tensor> {
    match step {
        Some(s) => s.forward(x),
        None => linear(x, &param(w, train), b.map(|b| param(b, train)).as_ref()),
    }
}

/// The memory of [`LocationAwareAttention`] for a batch of sequences.
#[derive(Debug, Clone)]
pub struct LocationAttnState {
    /// `mlp_enc(enc_states)`, `[B, T, attn_dim]`.
    pub enc_h: Tensor,
    /// 1 on valid frames, 0 on padding, `[B, T]`.
    pub mask: Tensor,
    /// The previous step's attention weights, `[B, T]`.
    pub prev_attn: Tensor,
}

impl LocationAttnState {
    /// Selects batch rows (beam-search permutation), as SpeechBrain's `permute_mem`: only the
    /// previous weights move. `enc_h` and `mask` are the same for every hypothesis of one
    /// utterance and beam search never moves a hypothesis to another utterance, so they are
    /// kept as they are (copying `enc_h` every step cost ~160 MB a step on 20 s inputs).
    pub fn index_select(&self, index: &Tensor) -> Result<Self> {
        Ok(Self {
            enc_h: self.enc_h.clone(),
            mask: self.mask.clone(),
            prev_attn: self.prev_attn.index_select(index, 0)?,
        })
    }
}

fn lin(vb: &VarBuilder, name: &str, inp: usize, out: usize) -> Result<(Tensor, Tensor)> {
    let l = candle_nn::linear(inp, out, vb.pp(name))?;
    Ok((
        l.weight().clone(),
        l.bias().expect("linear with bias").clone(),
    ))
}

impl LocationAwareAttention {
    /// Builds the layer (`kernel_size` is SpeechBrain's half-width: the convolution spans
    /// `2 * kernel_size + 1` frames).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        enc_dim: usize,
        dec_dim: usize,
        attn_dim: usize,
        output_dim: usize,
        conv_channels: usize,
        kernel_size: usize,
        scaling: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        Ok(Self {
            mlp_enc: lin(&vb, "mlp_enc", enc_dim, attn_dim)?,
            mlp_dec: lin(&vb, "mlp_dec", dec_dim, attn_dim)?,
            mlp_attn: vb
                .pp("mlp_attn")
                .get_with_hints((1, attn_dim), "weight", init)?,
            conv_loc: vb.pp("conv_loc").get_with_hints(
                (conv_channels, 1, 2 * kernel_size + 1),
                "weight",
                init,
            )?,
            mlp_loc: lin(&vb, "mlp_loc", conv_channels, attn_dim)?,
            mlp_out: lin(&vb, "mlp_out", enc_dim, output_dim)?,
            kernel_size,
            scaling,
        })
    }

    /// The memory for `enc_states` `[B, T, E]` with valid lengths `enc_len` (frames):
    /// the first step's "previous" weights are uniform over the valid frames.
    pub fn init_state(
        &self,
        enc_states: &Tensor,
        enc_len: &[usize],
        train: bool,
    ) -> Result<LocationAttnState> {
        let (b, t, _) = enc_states.dims3()?;
        let enc_h = linear(
            enc_states,
            &param(&self.mlp_enc.0, train),
            Some(&param(&self.mlp_enc.1, train)),
        )?;
        if enc_len.len() != b {
            candle_core::bail!("attention: {} lengths for {b} sequences", enc_len.len());
        }
        let (mask, prev) = initial_weights(enc_len, t)?;
        let dev = enc_states.device();
        Ok(LocationAttnState {
            enc_h,
            mask: Tensor::from_vec(mask, (b, t), dev)?,
            prev_attn: Tensor::from_vec(prev, (b, t), dev)?,
        })
    }

    /// The weights for one training pass of a recurrence (see [`StepLinear`]).
    pub(crate) fn step_linears(&self) -> Result<AttnSteps> {
        let (c, _, width) = self.conv_loc.dims3()?;
        let s = |wb: &(Tensor, Tensor)| StepLinear::new(&wb.0, Some(&wb.1));
        Ok(AttnSteps {
            conv_loc: StepLinear::new(&self.conv_loc.reshape((c, width))?, None),
            mlp_loc: s(&self.mlp_loc),
            mlp_dec: s(&self.mlp_dec),
            mlp_attn: StepLinear::new(&self.mlp_attn, None),
            mlp_out: s(&self.mlp_out),
        })
    }

    /// One step: attends `enc_states` `[B, T, E]` with the decoder state `dec` `[B, D]`;
    /// returns the context `[B, output_dim]` and the weights `[B, T]`, and updates `state`.
    pub fn forward(
        &self,
        enc_states: &Tensor,
        dec: &Tensor,
        state: &mut LocationAttnState,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.forward_with(enc_states, dec, state, train, None)
    }

    /// [`Self::forward`], with the weights applied through `steps` when given (training).
    pub(crate) fn forward_with(
        &self,
        enc_states: &Tensor,
        dec: &Tensor,
        state: &mut LocationAttnState,
        train: bool,
        steps: Option<&AttnSteps>,
    ) -> Result<(Tensor, Tensor)> {
        let p = |t: &Tensor| param(t, train);
        // `steps` come only with `train`.
        let conv = if train {
            let step = steps.map(|s| &s.conv_loc);
            location_conv_train(&state.prev_attn, &p(&self.conv_loc), self.kernel_size, step)?
        } else {
            state
                .prev_attn
                .unsqueeze(1)?
                .conv1d(&p(&self.conv_loc), self.kernel_size, 1, 1, 1)? // [B, C, T]
        };
        let dec_h = apply(
            steps.map(|s| &s.mlp_dec),
            dec,
            &self.mlp_dec.0,
            Some(&self.mlp_dec.1),
            train,
        )?;
        let energy = if !train && enc_states.device().is_cpu() && dec_h.dtype() == DType::F32 {
            // One fused pass; the [B, T, attn_dim] sums are never stored.
            let dec_bias = dec_h.broadcast_add(&p(&self.mlp_loc.1))?;
            super::fused::location_energies(
                &state.enc_h,
                &dec_bias,
                &conv,
                &p(&self.mlp_loc.0),
                &p(&self.mlp_attn),
            )?
        } else {
            let loc = conv.transpose(1, 2)?;
            let loc = apply(
                steps.map(|s| &s.mlp_loc),
                &loc,
                &self.mlp_loc.0,
                Some(&self.mlp_loc.1),
                train,
            )?;
            let e = super::train_ops::tanh_of_sum(&state.enc_h, &dec_h, &loc)?;
            let attn = steps.map(|s| &s.mlp_attn);
            apply(attn, &e, &self.mlp_attn, None, train)?.squeeze(2)? // [B, T]
        };
        let neg_inf = Tensor::full(f32::NEG_INFINITY, energy.shape(), energy.device())?;
        let energy = state.mask.ne(0f32)?.where_cond(&energy, &neg_inf)?;
        let energy = if self.scaling != 1.0 {
            (energy * self.scaling)?
        } else {
            energy
        };
        let w = super::fused::softmax_last_dim(&energy)?;
        state.prev_attn = w.detach();
        let context = w.unsqueeze(1)?.matmul(enc_states)?.squeeze(1)?;
        let out = steps.map(|s| &s.mlp_out);
        let context = apply(out, &context, &self.mlp_out.0, Some(&self.mlp_out.1), train)?;
        Ok((context, w))
    }
}
