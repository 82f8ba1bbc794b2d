//! The modules map of a [`Brain`](super::Brain) (SpeechBrain's `self.modules`, a
//! `ModuleDict`): named groups of parameters with per-module freezing (`requires_grad`) and
//! train/eval mode.

use std::path::Path;

use candle_core::Var;
use candle_nn::VarMap;
use indexmap::IndexMap;

use super::checkpoints::{CheckpointError, Recoverable};
use super::optim::NamedParam;

/// Buffers, not parameters: BatchNorm's running statistics and positional-encoding tables are
/// saved but never optimized.
fn is_buffer(key: &str) -> bool {
    key.ends_with("running_mean")
        || key.ends_with("pos_enc.pe")
        || key.ends_with("running_var")
        || key.ends_with("num_batches_tracked")
}

/// One module: its parameters (optimized), buffers (saved only), and flags.
#[derive(Debug, Clone)]
pub struct ModuleEntry {
    /// Trainable parameters, keyed as in the module's state_dict file.
    pub params: Vec<NamedParam>,
    /// Saved but not optimized (running statistics).
    pub buffers: Vec<NamedParam>,
    /// Whether the optimizer updates it (torch's `requires_grad`).
    pub requires_grad: bool,
    /// Train mode (dropout on, BatchNorm batch statistics) or eval mode.
    pub training: bool,
}

/// Named modules, in insertion order.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::brain::Modules;
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let _ = voxbrain::nnet::linear::Linear::new(4, 2, true, vb.pp("3")).unwrap();
/// let mut modules = Modules::new();
/// modules.add_from_varmap("seq_lin", &vm, "3.");
/// modules.set_requires_grad("seq_lin", false).unwrap();
/// assert_eq!(modules.trainable_parameters().len(), 0);
/// assert_eq!(modules.parameters().len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Modules {
    entries: IndexMap<String, ModuleEntry>,
}

impl Modules {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a module whose variables are those of `varmap` under `prefix` (keys kept whole, so
    /// that a checkpoint of the modules is the original state_dict). A module with no
    /// variables (a feature extractor, a normalizer) is still listed for its mode.
    pub fn add_from_varmap(&mut self, name: &str, varmap: &VarMap, prefix: &str) {
        // Poisoned only if another thread panicked holding it: then panicking is right.
        let data = varmap.data().lock().expect("VarMap lock poisoned");
        let mut vars: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let (buffers, params): (Vec<_>, Vec<_>) = vars
            .into_iter()
            .map(|(name, var)| NamedParam { name, var })
            .partition(|p| is_buffer(&p.name));
        self.add(name, params, buffers);
    }

    /// Adds (or replaces) a module.
    pub fn add(&mut self, name: &str, params: Vec<NamedParam>, buffers: Vec<NamedParam>) {
        self.entries.insert(
            name.to_string(),
            ModuleEntry {
                params,
                buffers,
                requires_grad: true,
                training: false,
            },
        );
    }

    /// The module names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// A module by name.
    pub fn get(&self, name: &str) -> Option<&ModuleEntry> {
        self.entries.get(name)
    }

    fn entry(&mut self, name: &str) -> Result<&mut ModuleEntry, String> {
        let known = self.entries.keys().cloned().collect::<Vec<_>>().join(", ");
        self.entries
            .get_mut(name)
            .ok_or_else(|| format!("no module `{name}` (modules: {known})"))
    }

    /// Freezes (`false`) or unfreezes a module (the tutorial's `p.requires_grad = True`).
    pub fn set_requires_grad(&mut self, name: &str, on: bool) -> Result<(), String> {
        self.entry(name)?.requires_grad = on;
        Ok(())
    }

    /// Sets one module's train/eval mode.
    pub fn set_training(&mut self, name: &str, on: bool) -> Result<(), String> {
        self.entry(name)?.training = on;
        Ok(())
    }

    /// `self.modules.train()` (`true`) or `.eval()` (`false`) for every module.
    pub fn train(&mut self, on: bool) {
        self.entries.values_mut().for_each(|e| e.training = on);
    }

    /// Whether `name` is in train mode (false for an unknown module).
    pub fn training(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.training)
    }

    /// Whether `name` is trained (false for an unknown module).
    pub fn requires_grad(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.requires_grad)
    }

    /// Every parameter (`self.modules.parameters()`), frozen ones included, in module order.
    pub fn parameters(&self) -> Vec<NamedParam> {
        self.entries
            .values()
            .flat_map(|e| e.params.iter().cloned())
            .collect()
    }

    /// The parameters of modules that require gradients.
    pub fn trainable_parameters(&self) -> Vec<NamedParam> {
        self.entries
            .values()
            .filter(|e| e.requires_grad)
            .flat_map(|e| e.params.iter().cloned())
            .collect()
    }

    /// Whether the parameter with this key is trainable now.
    pub fn is_trainable(&self, key: &str) -> bool {
        self.entries
            .values()
            .any(|e| e.requires_grad && e.params.iter().any(|p| p.name == key))
    }

    /// Every parameter and buffer as `(key, tensor)`, sorted by key (a state_dict).
    pub fn state_dict(&self) -> Vec<(String, candle_core::Tensor)> {
        let mut out: Vec<_> = self
            .entries
            .values()
            .flat_map(|e| e.params.iter().chain(&e.buffers))
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }
}

impl Recoverable for Modules {
    fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        crate::pretrained::ckpt::save_ckpt(path, &self.state_dict())
            .map_err(|e| CheckpointError::Format(path.to_path_buf(), e.to_string()))
    }

    fn load(&mut self, path: &Path, _end_of_epoch: bool) -> Result<(), CheckpointError> {
        let ckpt = crate::pretrained::ckpt::read_ckpt(path)
            .map_err(|e| CheckpointError::Format(path.to_path_buf(), e.to_string()))?;
        for e in self.entries.values() {
            for p in e.params.iter().chain(&e.buffers) {
                let t = ckpt.tensor(&p.name).ok_or_else(|| {
                    CheckpointError::Format(path.to_path_buf(), format!("no `{}`", p.name))
                })?;
                if t.dims() != p.var.dims() {
                    return Err(CheckpointError::Format(
                        path.to_path_buf(),
                        format!(
                            "`{}`: shape {:?}, model {:?}",
                            p.name,
                            t.dims(),
                            p.var.dims()
                        ),
                    ));
                }
                let t = t
                    .to_dtype(p.var.dtype())
                    .and_then(|t| t.to_device(p.var.device()))
                    .and_then(|t| p.var.set(&t));
                t.map_err(|e| CheckpointError::Format(path.to_path_buf(), e.to_string()))?;
            }
        }
        Ok(())
    }
}
