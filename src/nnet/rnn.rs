//! Recurrent layers in PyTorch's parameter layout, as SpeechBrain wraps them
//! (`speechbrain.nnet.RNN`): [`Lstm`] (`torch.nn.LSTM` under `.rnn`, keys
//! `weight_ih_l{k}[_reverse]`, ...) and [`GruCell`] / [`GruCellStack`] (`torch.nn.GRUCell`s
//! under `.rnn_cells.{i}`, keys `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`).
//!
//! candle-nn's own LSTM/GRU name their parameters differently, so the cells are written here
//! from PyTorch's equations (gate order `i, f, g, o` for the LSTM, `r, z, n` for the GRU).
//! The input projection of a whole sequence is one GEMM; only the recurrent product runs per
//! step.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::linear_train::StepLinear;
use super::{linear, param, Dropout};

fn sigmoid(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::sigmoid(x)
}

/// The weights of one direction of one LSTM layer.
#[derive(Debug, Clone)]
pub(crate) struct LstmCell {
    pub(crate) w_ih: Tensor,
    pub(crate) w_hh: Tensor,
    pub(crate) bias: Option<(Tensor, Tensor)>,
}

impl LstmCell {
    fn new(input: usize, hidden: usize, bias: bool, suffix: &str, vb: &VarBuilder) -> Result<Self> {
        let init = candle_nn::Init::Uniform {
            lo: -1.0 / (hidden as f64).sqrt(),
            up: 1.0 / (hidden as f64).sqrt(),
        };
        let w_ih = vb.get_with_hints((4 * hidden, input), &format!("weight_ih{suffix}"), init)?;
        let w_hh = vb.get_with_hints((4 * hidden, hidden), &format!("weight_hh{suffix}"), init)?;
        let bias = if bias {
            Some((
                vb.get_with_hints(4 * hidden, &format!("bias_ih{suffix}"), init)?,
                vb.get_with_hints(4 * hidden, &format!("bias_hh{suffix}"), init)?,
            ))
        } else {
            None
        };
        Ok(Self { w_ih, w_hh, bias })
    }

    /// Runs the cell over `x` `[B, T, I]` from state `(h0, c0)` (`[B, H]`), forwards or
    /// backwards in time; returns the outputs `[B, T, H]` and the final state.
    fn run(
        &self,
        x: &Tensor,
        h0: Tensor,
        c0: Tensor,
        reverse: bool,
        train: bool,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let t_len = x.dim(1)?;
        let w_ih = param(&self.w_ih, train);
        let w_hh = param(&self.w_hh, train);
        let bias = match &self.bias {
            Some((bi, bh)) => Some((param(bi, train) + param(bh, train))?),
            None => None,
        };
        let hidden = h0.dim(1)?;
        // Input projections of every step at once: one GEMM instead of T small ones.
        let xw = linear(x, &w_ih, bias.as_ref())?;
        let (mut h, mut c) = (h0, c0);
        let mut outs: Vec<Tensor> = Vec::with_capacity(t_len);
        for step in 0..t_len {
            let t = if reverse { t_len - 1 - step } else { step };
            let gates = (xw.narrow(1, t, 1)?.squeeze(1)? + super::matmul_wt(&h, &w_hh)?)?;
            (h, c) = cell_update(&gates, &c)?;
            outs.push(h.clone());
        }
        if reverse {
            outs.reverse();
        }
        let out = if outs.is_empty() {
            Tensor::zeros((x.dim(0)?, 0, hidden), x.dtype(), x.device())?
        } else {
            Tensor::stack(&outs, 1)?
        };
        Ok((out, h, c))
    }
}

/// Each direction's `(outputs [B, T, H], h, c)` -> the layer's output `[B, T, D*H]` and each
/// direction's final `(h, c)`.
fn join_directions(r: Vec<(Tensor, Tensor, Tensor)>) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
    let (ys, states): (Vec<Tensor>, Vec<(Tensor, Tensor)>) =
        r.into_iter().map(|(y, h, c)| (y, (h, c))).unzip();
    let y = if ys.len() == 1 {
        ys[0].clone()
    } else {
        Tensor::cat(&ys, D::Minus1)?
    };
    Ok((y, states))
}

/// One layer's directions trained from a zero state on the CPU: the input projections as
/// candle matmuls, the recurrence (and its backward pass) as one
/// [`super::rnn_train::LstmLayerSeq`] op over every direction. Returns the layer's output
/// `[B, T, D*H]` and each direction's final `(h, c)` (`c` without gradient).
fn layer_train_cpu(cells: &[LstmCell], x: &Tensor) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
    let (b, t, _) = x.dims3()?;
    let d = cells.len();
    let hidden = cells[0].w_hh.dim(1)?;
    if t == 0 {
        let z = Tensor::zeros((b, hidden), x.dtype(), x.device())?;
        let y = Tensor::zeros((b, 0, d * hidden), x.dtype(), x.device())?;
        return Ok((y, vec![(z.clone(), z); d]));
    }
    let mut xws = Vec::with_capacity(d);
    let mut whh = Vec::with_capacity(d);
    for cell in cells {
        let bias = match &cell.bias {
            Some((bi, bh)) => Some((bi + bh)?),
            None => None,
        };
        xws.push(linear(x, &cell.w_ih, bias.as_ref())?);
        whh.push(cell.w_hh.clone());
    }
    let xw = Tensor::cat(&xws, D::Minus1)?.contiguous()?;
    let w = Tensor::stack(&whh, 0)?.contiguous()?;
    let op = super::rnn_train::LstmLayerSeq::default();
    let c_last = op.c_last.clone();
    let y = xw.apply_op2(&w, op)?;
    let c = super::gemm::lock(&c_last, "lstm-layer")?
        .take()
        .unwrap_or_else(|| vec![0f32; d * b * hidden]);
    let c = Tensor::from_vec(c, (d, b, hidden), x.device())?;
    let mut states = Vec::with_capacity(d);
    for dir in 0..d {
        let last = if dir == 1 { 0 } else { t - 1 };
        let h = y
            .narrow(1, last, 1)?
            .squeeze(1)?
            .narrow(1, dir * hidden, hidden)?;
        states.push((h, c.get(dir)?));
    }
    Ok((y, states))
}

/// PyTorch's LSTM update `c = σ(f) c0 + σ(i) tanh(g)`, `h = σ(o) tanh(c)` from the gates
/// `[B, 4H]` (order `i, f, g, o`) and `c0` `[B, H]`, as candle ops (autograd). Eval on the CPU
/// runs [`super::rnn_step::lstm_sequence`] instead.
fn cell_update(gates: &Tensor, c0: &Tensor) -> Result<(Tensor, Tensor)> {
    let hidden = c0.dim(1)?;
    let gate = |k: usize| gates.narrow(1, k * hidden, hidden);
    let (i, f) = (sigmoid(&gate(0)?)?, sigmoid(&gate(1)?)?);
    let (g, o) = (gate(2)?.tanh()?, sigmoid(&gate(3)?)?);
    let c = ((f * c0)? + (i * g)?)?;
    Ok(((o * c.tanh()?)?, c))
}

/// The hidden state of an [`Lstm`]: `h` and `c`, each `[layers * directions, B, H]`
/// (PyTorch's `(h_n, c_n)`).
#[derive(Debug, Clone)]
pub struct LstmState {
    /// Hidden states.
    pub h: Tensor,
    /// Cell states.
    pub c: Tensor,
}

impl LstmState {
    /// Selects batch rows (`torch.index_select(h, dim=1, index)`), as beam search permutes
    /// its hypotheses.
    pub fn index_select(&self, index: &Tensor) -> Result<Self> {
        Ok(Self {
            h: self.h.index_select(index, 1)?,
            c: self.c.index_select(index, 1)?,
        })
    }
}

/// `torch.nn.LSTM(batch_first=True)`, as `speechbrain.nnet.RNN.LSTM` wraps it: inputs
/// `[B, T, F]`, or `[B, T, F, C]` flattened to `[B, T, F*C]`. Dropout between layers in
/// training mode.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::nnet::rnn::Lstm;
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let lstm = Lstm::new(5, 4, 2, true, 0.0, vb.pp("rnn")).unwrap();
/// let x = Tensor::zeros((3, 7, 5), DType::F32, &Device::Cpu).unwrap();
/// let (y, state) = lstm.forward(&x, None, false).unwrap();
/// assert_eq!(y.dims(), &[3, 7, 8]);
/// assert_eq!(state.h.dims(), &[4, 3, 4]);
/// ```
#[derive(Debug, Clone)]
pub struct Lstm {
    pub(crate) layers: Vec<Vec<LstmCell>>,
    hidden: usize,
    dropout: Dropout,
}

impl Lstm {
    /// An LSTM whose parameters are `vb`'s `weight_ih_l0`, ... (the `torch.nn.LSTM` module).
    pub fn new(
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        bidirectional: bool,
        dropout: f32,
        vb: VarBuilder,
    ) -> Result<Self> {
        let dirs = if bidirectional { 2 } else { 1 };
        let mut layers = Vec::with_capacity(num_layers);
        for l in 0..num_layers {
            let input = if l == 0 {
                input_size
            } else {
                hidden_size * dirs
            };
            let mut cells = vec![LstmCell::new(
                input,
                hidden_size,
                true,
                &format!("_l{l}"),
                &vb,
            )?];
            if bidirectional {
                cells.push(LstmCell::new(
                    input,
                    hidden_size,
                    true,
                    &format!("_l{l}_reverse"),
                    &vb,
                )?);
            }
            layers.push(cells);
        }
        Ok(Self {
            layers,
            hidden: hidden_size,
            dropout: Dropout { p: dropout },
        })
    }

    /// Hidden size per direction.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Number of directions (1 or 2).
    pub fn directions(&self) -> usize {
        self.layers.first().map_or(1, |l| l.len())
    }

    /// Runs over `x` `[B, T, F]` (or `[B, T, F, C]`), from `hx` (zeros when `None`); returns
    /// the last layer's outputs `[B, T, H * directions]` and the final state.
    pub fn forward(
        &self,
        x: &Tensor,
        hx: Option<&LstmState>,
        train: bool,
    ) -> Result<(Tensor, LstmState)> {
        let mut x = match x.rank() {
            3 => x.clone(),
            4 => {
                let (b, t, f, c) = x.dims4()?;
                x.reshape((b, t, f * c))?
            }
            r => candle_core::bail!("LSTM: expected a 3-d or 4-d input, got rank {r}"),
        };
        let b = x.dim(0)?;
        let zeros = Tensor::zeros((b, self.hidden), x.dtype(), x.device())?;
        let (mut hs, mut cs) = (Vec::new(), Vec::new());
        let n_layers = self.layers.len();
        for (l, cells) in self.layers.iter().enumerate() {
            let init = |d: usize| -> Result<(Tensor, Tensor)> {
                let k = l * cells.len() + d;
                Ok(match hx {
                    Some(s) => (s.h.get(k)?, s.c.get(k)?),
                    None => (zeros.clone(), zeros.clone()),
                })
            };
            let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32;
            let (y, states) = if !train && cpu_f32 && x.dim(1)? > 0 {
                // Eval on the CPU: plain kernels, the directions side by side.
                let results = super::rnn_train::per_direction(cells.len(), |d, threads| {
                    let (h0, c0) = init(d)?;
                    super::rnn_step::lstm_sequence(&cells[d], &x, (&h0, &c0), d == 1, threads)
                })?;
                join_directions(results)?
            } else if train && hx.is_none() && cpu_f32 {
                // Training on the CPU: the layer's recurrence as one op (rnn_train.rs), whose
                // output already holds the directions side by side.
                layer_train_cpu(cells, &x)?
            } else {
                let mut r = Vec::with_capacity(cells.len());
                for (d, cell) in cells.iter().enumerate() {
                    let (h0, c0) = init(d)?;
                    r.push(cell.run(&x, h0, c0, d == 1, train)?);
                }
                join_directions(r)?
            };
            for (h, c) in states {
                hs.push(h);
                cs.push(c);
            }
            x = y;
            if l + 1 < n_layers {
                x = self.dropout.forward(&x, train)?;
            }
        }
        let state = LstmState {
            h: Tensor::stack(&hs, 0)?,
            c: Tensor::stack(&cs, 0)?,
        };
        Ok((x, state))
    }
}

/// `torch.nn.GRUCell`: one step of a GRU (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`).
#[derive(Debug, Clone)]
pub struct GruCell {
    pub(crate) w_ih: Tensor,
    pub(crate) w_hh: Tensor,
    pub(crate) b_ih: Tensor,
    pub(crate) b_hh: Tensor,
    hidden: usize,
}

impl GruCell {
    /// A cell with PyTorch's parameter names under `vb`.
    pub fn new(input_size: usize, hidden_size: usize, vb: VarBuilder) -> Result<Self> {
        let s = 1.0 / (hidden_size as f64).sqrt();
        let init = candle_nn::Init::Uniform { lo: -s, up: s };
        Ok(Self {
            w_ih: vb.get_with_hints((3 * hidden_size, input_size), "weight_ih", init)?,
            w_hh: vb.get_with_hints((3 * hidden_size, hidden_size), "weight_hh", init)?,
            b_ih: vb.get_with_hints(3 * hidden_size, "bias_ih", init)?,
            b_hh: vb.get_with_hints(3 * hidden_size, "bias_hh", init)?,
            hidden: hidden_size,
        })
    }

    /// One step: `x` `[B, I]`, `h` `[B, H]` -> `h'` `[B, H]`.
    pub fn forward(&self, x: &Tensor, h: &Tensor, train: bool) -> Result<Tensor> {
        let gi = linear(
            x,
            &param(&self.w_ih, train),
            Some(&param(&self.b_ih, train)),
        )?;
        let gh = linear(
            h,
            &param(&self.w_hh, train),
            Some(&param(&self.b_hh, train)),
        )?;
        self.gates(&gi, &gh, h)
    }

    /// The step from its projections `gi = x W_ih^T + b_ih` and `gh = h W_hh^T + b_hh`
    /// (`[B, 3H]` each) and `h` `[B, H]`.
    pub(crate) fn gates(&self, gi: &Tensor, gh: &Tensor, h: &Tensor) -> Result<Tensor> {
        if super::gemm::all_host_f32(&[gi, gh, h]) {
            // One op with its own backward pass (gru_train.rs).
            return super::gru_train::gru_gates(gi, gh, h);
        }
        let hs = self.hidden;
        let r = sigmoid(&(gi.narrow(1, 0, hs)? + gh.narrow(1, 0, hs)?)?)?;
        let z = sigmoid(&(gi.narrow(1, hs, hs)? + gh.narrow(1, hs, hs)?)?)?;
        let n = (gi.narrow(1, 2 * hs, hs)? + (r * gh.narrow(1, 2 * hs, hs)?)?)?.tanh()?;
        // h' = (1 - z) * n + z * h = n + z * (h - n)
        n.clone() + (z * (h - &n)?)?
    }

    /// The cell's two projections for one training pass of a recurrence (see [`StepLinear`]).
    pub(crate) fn step_linears(&self) -> (StepLinear, StepLinear) {
        (
            StepLinear::new(&self.w_ih, Some(&self.b_ih)),
            StepLinear::new(&self.w_hh, Some(&self.b_hh)),
        )
    }
}

/// SpeechBrain's `GRUCell` module: a stack of `torch.nn.GRUCell`s under `rnn_cells.{i}`,
/// with dropout between layers. The state is `[layers, B, H]`.
#[derive(Debug, Clone)]
pub struct GruCellStack {
    pub(crate) cells: Vec<GruCell>,
    dropout: Dropout,
    hidden: usize,
}

impl GruCellStack {
    /// `num_layers` cells: the first takes `input_size`, the others `hidden_size`.
    pub fn new(
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        dropout: f32,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mut cells = Vec::with_capacity(num_layers);
        for i in 0..num_layers {
            let inp = if i == 0 { input_size } else { hidden_size };
            cells.push(GruCell::new(inp, hidden_size, vb.pp("rnn_cells").pp(i))?);
        }
        Ok(Self {
            cells,
            dropout: Dropout { p: dropout },
            hidden: hidden_size,
        })
    }

    /// Hidden size.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// One step from `hx` `[layers, B, H]` (zeros when `None`): returns the last layer's
    /// output `[B, H]` and the new state.
    pub fn forward(
        &self,
        x: &Tensor,
        hx: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.forward_with(x, hx, train, None)
    }

    /// [`Self::forward`], with each cell's projections through `steps` (from
    /// [`GruCell::step_linears`], one pair per cell) when given.
    pub(crate) fn forward_with(
        &self,
        x: &Tensor,
        hx: Option<&Tensor>,
        train: bool,
        steps: Option<&[(StepLinear, StepLinear)]>,
    ) -> Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        let mut hidden = Vec::with_capacity(self.cells.len());
        let mut inp = x.clone();
        for (i, cell) in self.cells.iter().enumerate() {
            let h0 = match hx {
                Some(h) => h.get(i)?,
                None => Tensor::zeros((b, self.hidden), x.dtype(), x.device())?,
            };
            if i > 0 {
                inp = self.dropout.forward(&inp, train)?;
            }
            let h = match steps.and_then(|s| s.get(i)) {
                Some((ih, hh)) => cell.gates(&ih.forward(&inp)?, &hh.forward(&h0)?, &h0)?,
                None => cell.forward(&inp, &h0, train)?,
            };
            hidden.push(h.clone());
            inp = h;
        }
        Ok((inp, Tensor::stack(&hidden, 0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    /// The training recurrence op (rnn_train.rs) gives candle autograd's outputs, final states
    /// and gradients (input, weights, biases), one direction and both, for batch sizes and
    /// hidden sizes that leave ragged vector tails.
    #[test]
    fn training_op_equals_candle_autograd() -> Result<()> {
        let dev = Device::Cpu;
        for (dirs, b, t, i, h) in [
            (1, 3, 7, 5, 4),
            (2, 3, 7, 5, 4),
            (2, 8, 5, 6, 19),
            (1, 2, 1, 3, 5),
        ] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let cells = (0..dirs)
                .map(|d| LstmCell::new(i, h, true, if d == 0 { "_l0" } else { "_l0_reverse" }, &vb))
                .collect::<Result<Vec<_>>>()?;
            let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, i), &dev)?)?;
            let r = Tensor::randn(0f32, 1.0, (b, t, dirs * h), &dev)?;
            let rh = Tensor::randn(0f32, 1.0, (dirs, b, h), &dev)?;
            let z = Tensor::zeros((b, h), DType::F32, &dev)?;
            // Reference: candle ops step by step, directions side by side.
            let mut ys = vec![];
            let mut fin = vec![];
            for (d, cell) in cells.iter().enumerate() {
                let (y, hn, cn) = cell.run(x.as_tensor(), z.clone(), z.clone(), d == 1, true)?;
                ys.push(y);
                fin.push((hn, cn));
            }
            let ya = Tensor::cat(&ys, D::Minus1)?;
            let (yb, finb) = layer_train_cpu(&cells, x.as_tensor())?;
            let grads = |y: &Tensor, fin: &[(Tensor, Tensor)]| -> Result<Vec<Vec<f32>>> {
                let mut loss = (y * &r)?.sum_all()?;
                for (d, (hn, _)) in fin.iter().enumerate() {
                    loss = (loss + (hn * rh.get(d)?)?.sum_all()?)?;
                }
                let g = loss.backward()?;
                let mut out = vec![g
                    .get(x.as_tensor())
                    .unwrap()
                    .flatten_all()?
                    .to_vec1::<f32>()?];
                for cell in &cells {
                    for p in [&cell.w_ih, &cell.w_hh, &cell.bias.as_ref().unwrap().0] {
                        out.push(g.get(p).unwrap().flatten_all()?.to_vec1::<f32>()?);
                    }
                }
                Ok(out)
            };
            let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            let mut pairs = vec![(flat(&ya)?, flat(&yb)?)];
            for ((ha, ca), (hb, cb)) in fin.iter().zip(&finb) {
                pairs.push((flat(ha)?, flat(hb)?));
                pairs.push((flat(ca)?, flat(cb)?));
            }
            for (pa, pb) in &pairs {
                assert_eq!(pa.len(), pb.len());
                for (p, q) in pa.iter().zip(pb) {
                    assert!(
                        (p - q).abs() < 1e-5,
                        "dirs {dirs}: outputs differ: {p} vs {q}"
                    );
                }
            }
            for (ga, gb) in grads(&ya, &fin)?.iter().zip(grads(&yb, &finb)?) {
                assert_eq!(ga.len(), gb.len());
                for (p, q) in ga.iter().zip(&gb) {
                    assert!(
                        (p - q).abs() < 1e-4,
                        "dirs {dirs} b {b} h {h}: gradient {p} vs {q}"
                    );
                }
            }
        }
        Ok(())
    }

    /// Eval mode (the CPU sequence kernels, bidirectional, one step and several) equals
    /// training mode (candle ops with autograd) when dropout is off.
    #[test]
    fn eval_kernels_equal_training_ops() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let lstm = Lstm::new(
            6,
            20,
            2,
            true,
            0.0,
            VarBuilder::from_varmap(&vm, DType::F32, &dev),
        )?;
        for (b, t) in [(3usize, 7usize), (5, 1)] {
            let x = Tensor::randn(0f32, 1.0, (b, t, 6), &dev)?;
            let h0 = Tensor::randn(0f32, 1.0, (4, b, 20), &dev)?;
            let hx = LstmState {
                c: (&h0 * 0.5)?,
                h: h0,
            };
            let (ye, se) = lstm.forward(&x, Some(&hx), false)?;
            let (yt, st) = lstm.forward(&x, Some(&hx), true)?;
            for (a, b) in [(&ye, &yt), (&se.h, &st.h), (&se.c, &st.c)] {
                let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(d < 1e-5, "b {b} t {t}: {d}");
            }
        }
        Ok(())
    }
}
