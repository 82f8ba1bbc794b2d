//! Optimizers with torch's update rules (`torch.optim.SGD`, `Adam`, `AdamW`), over named
//! candle [`Var`]s, with their state saved and restored by the [`Checkpointer`](super::Checkpointer).
//!
//! A parameter without a gradient in a step is left alone (torch skips `grad is None`).

use std::collections::HashMap;

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;

use super::adam_host::{self, host_f32};
use crate::nnet::gemm::{storage_f32, storage_f32_mut};

/// A trainable parameter and its state_dict key (e.g. `0.CNN.block_0.conv_1.conv.weight`).
#[derive(Debug, Clone)]
pub struct NamedParam {
    /// The key (as in the module's `.ckpt`).
    pub name: String,
    /// The variable (shares storage with the model).
    pub var: Var,
}

/// A gradient-descent optimizer (SpeechBrain's `opt_class` builds one from the parameters).
pub trait Optimizer: Send {
    /// One update; `grads[i]` belongs to `params()[i]` (`None`: no gradient, not updated).
    fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()>;
    /// One update with every gradient multiplied by `scale` first (gradient clipping).
    fn step_scaled(&mut self, grads: &[Option<Tensor>], scale: f64) -> Result<()> {
        if scale == 1.0 {
            return self.step(grads);
        }
        let scaled = grads
            .iter()
            .map(|g| g.as_ref().map(|g| g * scale).transpose())
            .collect::<Result<Vec<_>>>()?;
        self.step(&scaled)
    }
    /// The parameters it updates.
    fn params(&self) -> &[NamedParam];
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Changes the learning rate (schedulers' `update_learning_rate`).
    fn set_lr(&mut self, lr: f64);
    /// The optimizer state as named tensors (momentum buffers, moments, step count).
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>>;
    /// Restores [`state_tensors`](Self::state_tensors).
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;
}

fn buffers(prefix: &str, params: &[NamedParam], bufs: &[Option<Tensor>]) -> Vec<(String, Tensor)> {
    params
        .iter()
        .zip(bufs)
        .filter_map(|(p, b)| {
            b.as_ref()
                .map(|b| (format!("{prefix}.{}", p.name), b.clone()))
        })
        .collect()
}

fn load_buffers(
    prefix: &str,
    params: &[NamedParam],
    bufs: &mut [Option<Tensor>],
    state: &HashMap<String, Tensor>,
) -> Result<()> {
    for (p, b) in params.iter().zip(bufs.iter_mut()) {
        *b = match state.get(&format!("{prefix}.{}", p.name)) {
            // The parameter's dtype and a contiguous layout, as the in-place updates need.
            Some(t) if t.dims() == p.var.dims() => Some(
                t.to_dtype(p.var.dtype())?
                    .to_device(p.var.device())?
                    .contiguous()?,
            ),
            Some(t) => candle_core::bail!(
                "optimizer state `{prefix}.{}`: shape {:?}, parameter {:?}",
                p.name,
                t.dims(),
                p.var.dims()
            ),
            None => None,
        };
    }
    Ok(())
}

fn scalar(state: &HashMap<String, Tensor>, key: &str) -> Result<Option<f64>> {
    state
        .get(key)
        .map(|t| {
            t.flatten_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()
        })
        .transpose()
        .map(|v| v.and_then(|v| v.first().copied()))
}

/// `torch.optim.SGD(params, lr, momentum, dampening, weight_decay, nesterov)`.
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use voxbrain::brain::optim::{NamedParam, Optimizer, Sgd};
/// let w = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
/// let mut sgd = Sgd::new(vec![NamedParam { name: "w".into(), var: w.clone() }], 0.5);
/// sgd.step(&[Some(Tensor::new(&[2f32, 2.0], &Device::Cpu).unwrap())]).unwrap();
/// assert_eq!(w.to_vec1::<f32>().unwrap(), vec![0.0, 1.0]);
/// ```
pub struct Sgd {
    params: Vec<NamedParam>,
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    bufs: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    pub fn new(params: Vec<NamedParam>, lr: f64) -> Self {
        let n = params.len();
        Self {
            params,
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            bufs: vec![None; n],
        }
    }

    /// With momentum.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
}

/// Plain SGD's update in place, `w -= (g * scale) * lr`, rounded as candle's three ops
/// `w - (g * scale) * lr` round it, in one pass over the weights instead of three allocations.
struct SgdUpdate {
    scale: Option<f32>,
    lr: f32,
}

impl InplaceOp2 for SgdUpdate {
    fn name(&self) -> &'static str {
        "sgd-update"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let w = storage_f32_mut(s1, l1, "sgd-update")?;
        let g = storage_f32(s2, l2, "sgd-update")?;
        if w.len() != g.len() {
            candle_core::bail!("sgd-update: {} weights, {} gradients", w.len(), g.len());
        }
        let (lr, scale) = (self.lr, self.scale);
        w.par_chunks_mut(1 << 16)
            .zip(g.par_chunks(1 << 16))
            .for_each(|(w, g)| match scale {
                Some(s) => w.iter_mut().zip(g).for_each(|(w, g)| *w -= (g * s) * lr),
                None => w.iter_mut().zip(g).for_each(|(w, g)| *w -= g * lr),
            });
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        self.step_scaled(grads, 1.0)
    }

    fn step_scaled(&mut self, grads: &[Option<Tensor>], scale: f64) -> Result<()> {
        let plain = self.momentum == 0.0 && self.weight_decay == 0.0;
        for ((p, g), buf) in self.params.iter().zip(grads).zip(self.bufs.iter_mut()) {
            let Some(g) = g else { continue };
            let w = p.var.as_tensor();
            if plain && host_f32(w) && host_f32(g) && w.dims() == g.dims() {
                let scale = (scale != 1.0).then_some(scale as f32);
                let update = SgdUpdate {
                    scale,
                    lr: self.lr as f32,
                };
                w.inplace_op2(&g.contiguous()?, &update)?;
                continue;
            }
            let g = if scale == 1.0 {
                g.clone()
            } else {
                (g * scale)?
            };
            let w = w.detach();
            let mut d = g.detach();
            if self.weight_decay != 0.0 {
                d = (d + (&w * self.weight_decay)?)?;
            }
            if self.momentum != 0.0 {
                let b = match buf.take() {
                    None => d.copy()?,
                    Some(b) => ((b * self.momentum)? + (&d * (1.0 - self.dampening))?)?,
                };
                d = if self.nesterov {
                    (d + (&b * self.momentum)?)?
                } else {
                    b.clone()
                };
                *buf = Some(b);
            }
            p.var.set(&(w - (d * self.lr)?)?)?;
        }
        Ok(())
    }
    fn params(&self) -> &[NamedParam] {
        &self.params
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(buffers("momentum_buffer", &self.params, &self.bufs))
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        load_buffers("momentum_buffer", &self.params, &mut self.bufs, state)
    }
}

/// `torch.optim.Adam` (`decoupled: false`, L2 penalty in the gradient) and `torch.optim.AdamW`
/// (`decoupled: true`, weights decayed by `lr * weight_decay` before the update).
///
/// ```
/// use candle_core::{Device, Tensor, Var};
/// use voxbrain::brain::optim::{Adam, NamedParam, Optimizer};
/// let w = Var::new(&[1f32], &Device::Cpu).unwrap();
/// let mut adam = Adam::new(vec![NamedParam { name: "w".into(), var: w.clone() }], 0.1);
/// adam.step(&[Some(Tensor::new(&[3f32], &Device::Cpu).unwrap())]).unwrap();
/// assert!((w.to_vec1::<f32>().unwrap()[0] - 0.9).abs() < 1e-6); // first step moves by lr
/// ```
pub struct Adam {
    params: Vec<NamedParam>,
    /// Learning rate.
    pub lr: f64,
    /// `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay (L2 for Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay.
    pub decoupled: bool,
    t: u64,
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
}

impl Adam {
    /// `torch.optim.Adam(params, lr)` (betas 0.9/0.999, eps 1e-8, no weight decay).
    pub fn new(params: Vec<NamedParam>, lr: f64) -> Self {
        let n = params.len();
        Self {
            params,
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            t: 0,
            m: vec![None; n],
            v: vec![None; n],
        }
    }

    /// `torch.optim.AdamW(params, lr)` (weight decay 0.01).
    pub fn adamw(params: Vec<NamedParam>, lr: f64) -> Self {
        Self {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::new(params, lr)
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        self.step_scaled(grads, 1.0)
    }

    fn step_scaled(&mut self, grads: &[Option<Tensor>], scale: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        // torch's scalars, each rounded to f32 once.
        let host = adam_host::AdamStep {
            scale: (scale != 1.0).then_some(scale as f32),
            l2: if self.decoupled {
                0.0
            } else {
                self.weight_decay as f32
            },
            decay: if self.decoupled {
                (1.0 - self.lr * self.weight_decay) as f32
            } else {
                1.0
            },
            w1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            w2: (1.0 - b2) as f32,
            step_size: (self.lr / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: self.eps as f32,
        };
        let iter = self.params.iter().zip(grads);
        for ((p, g), (m, v)) in iter.zip(self.m.iter_mut().zip(self.v.iter_mut())) {
            let Some(g) = g else { continue };
            let w = p.var.as_tensor();
            if host_f32(w) && w.is_contiguous() && host_f32(g) && g.dims() == w.dims() {
                adam_host::step(w, g, m, v, host)?;
                continue;
            }
            let mut w = w.detach();
            let mut g = if scale == 1.0 {
                g.detach()
            } else {
                (g * scale)?.detach()
            };
            if self.weight_decay != 0.0 {
                if self.decoupled {
                    w = (w * (1.0 - self.lr * self.weight_decay))?;
                } else {
                    g = (g + (&w * self.weight_decay)?)?;
                }
            }
            let m_new = match m.take() {
                None => (&g * (1.0 - b1))?,
                Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
            };
            let g2 = g.sqr()?;
            let v_new = match v.take() {
                None => (g2 * (1.0 - b2))?,
                Some(v) => ((v * b2)? + (g2 * (1.0 - b2))?)?,
            };
            let denom = ((v_new.sqrt()? / bc2.sqrt())? + self.eps)?;
            let upd = (m_new.div(&denom)? * (self.lr / bc1))?;
            p.var.set(&(w - upd)?)?;
            *m = Some(m_new);
            *v = Some(v_new);
        }
        Ok(())
    }
    fn params(&self) -> &[NamedParam] {
        &self.params
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let dev = self
            .params
            .first()
            .map(|p| p.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let mut out = vec![("step".to_string(), Tensor::new(&[self.t as f64], &dev)?)];
        out.extend(buffers("exp_avg", &self.params, &self.m));
        out.extend(buffers("exp_avg_sq", &self.params, &self.v));
        Ok(out)
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.t = scalar(state, "step")?.unwrap_or(0.0) as u64;
        load_buffers("exp_avg", &self.params, &mut self.m, state)?;
        load_buffers("exp_avg_sq", &self.params, &mut self.v, state)
    }
}

/// Which optimizer an `opt_class` closure or `--optimizer` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD` (with the given momentum).
    Sgd,
    /// `torch.optim.Adam`.
    Adam,
    /// `torch.optim.AdamW`.
    AdamW,
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            "adamw" => Ok(Self::AdamW),
            o => Err(format!("unknown optimizer `{o}` (sgd, adam, adamw)")),
        }
    }
}

impl OptimizerKind {
    /// Builds the optimizer over `params` with learning rate `lr` (SGD: `momentum`).
    pub fn build(self, params: Vec<NamedParam>, lr: f64, momentum: f64) -> Box<dyn Optimizer> {
        match self {
            Self::Sgd => Box::new(Sgd::new(params, lr).with_momentum(momentum)),
            Self::Adam => Box::new(Adam::new(params, lr)),
            Self::AdamW => Box::new(Adam::adamw(params, lr)),
        }
    }
}
