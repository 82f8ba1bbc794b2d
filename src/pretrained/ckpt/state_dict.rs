//! Mapping a checkpoint's state_dict onto a model's parameters (a candle `VarMap` whose names
//! are SpeechBrain's state_dict keys), with one report of every problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use candle_nn::VarMap;

use super::{read_ckpt, save_ckpt, save_safetensors, Checkpoint, CkptError};

/// Everything that did not line up between a checkpoint and a model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateDictReport {
    /// The checkpoint file.
    pub path: PathBuf,
    /// Parameters the model has and the checkpoint lacks.
    pub missing: Vec<String>,
    /// Checkpoint entries the model does not have.
    pub unexpected: Vec<String>,
    /// `(key, model shape, checkpoint shape)`.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl StateDictReport {
    /// True when nothing is missing, unexpected or mismatched.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }
}

impl fmt::Display for StateDictReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint {} does not match the model:",
            self.path.display()
        )?;
        if !self.missing.is_empty() {
            write!(
                f,
                "\n  missing keys ({}): {}",
                self.missing.len(),
                self.missing.join(", ")
            )?;
        }
        if !self.unexpected.is_empty() {
            write!(
                f,
                "\n  unexpected keys ({}): {}",
                self.unexpected.len(),
                self.unexpected.join(", ")
            )?;
        }
        for (k, m, c) in &self.mismatched {
            write!(
                f,
                "\n  shape mismatch for {k}: model {m:?}, checkpoint {c:?}"
            )?;
        }
        Ok(())
    }
}

/// How to map checkpoint keys onto model parameter names.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Only model parameters under this prefix (`"embedding_model."`) are filled, and the
    /// prefix is removed before looking the key up in the checkpoint.
    pub prefix: Option<String>,
    /// Report missing/unexpected keys as errors (default true). Shape mismatches always are.
    pub strict: bool,
}

impl LoadOptions {
    /// Strict loading of the whole VarMap.
    pub fn strict() -> Self {
        Self {
            prefix: None,
            strict: true,
        }
    }
    /// Strict loading of the parameters under `prefix`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: Some(prefix.to_string()),
            strict: true,
        }
    }
}

/// Keys SpeechBrain checkpoints carry that hold no parameter (BatchNorm's step counter).
fn ignorable(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

/// SpeechBrain renamed some keys over releases; it fixes them on load, and so do we.
pub fn canonical_key(key: &str) -> String {
    key.replace("mutihead_attn", "multihead_attn")
}

/// Fills `varmap` from a checkpoint. Every missing key, unexpected key and shape mismatch is
/// reported at once; on any problem nothing is modified.
///
/// ```no_run
/// use candle_nn::VarMap;
/// use voxbrain::pretrained::ckpt::{load_state_dict, read_ckpt, LoadOptions};
/// let varmap = VarMap::new();
/// // ... build the model with VarBuilder::from_varmap(&varmap, ...) ...
/// let ckpt = read_ckpt("embedding_model.ckpt").unwrap();
/// load_state_dict(&varmap, &ckpt, "embedding_model.ckpt", &LoadOptions::strict()).unwrap();
/// ```
pub fn load_state_dict(
    varmap: &VarMap,
    ckpt: &Checkpoint,
    origin: impl AsRef<Path>,
    opts: &LoadOptions,
) -> Result<StateDictReport, CkptError> {
    let available: BTreeMap<String, &Tensor> = ckpt
        .tensors
        .iter()
        .filter(|(k, _)| !ignorable(k))
        .map(|(k, t)| (canonical_key(k), t))
        .collect();
    // Poisoned only if another thread panicked holding it: then panicking is right.
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut report = StateDictReport {
        path: origin.as_ref().to_path_buf(),
        ..Default::default()
    };
    let mut plan = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let key = match &opts.prefix {
            Some(p) => match name.strip_prefix(p.as_str()) {
                Some(k) => k.to_string(),
                None => continue,
            },
            None => name.clone(),
        };
        let var = &data[name];
        match available.get(&key) {
            None => report.missing.push(key),
            Some(t) => {
                used.insert(key.clone());
                if t.dims() != var.dims() {
                    report
                        .mismatched
                        .push((key, var.dims().to_vec(), t.dims().to_vec()));
                } else {
                    plan.push((var, *t));
                }
            }
        }
    }
    report.unexpected = available
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    let fatal = !report.mismatched.is_empty()
        || (opts.strict && (!report.missing.is_empty() || !report.unexpected.is_empty()));
    if fatal {
        return Err(CkptError::StateDict(Box::new(report)));
    }
    for (var, t) in plan {
        let t = t
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .map_err(|e| CkptError::Format {
                path: report.path.clone(),
                reason: e.to_string(),
            })?;
        var.set(&t).map_err(|e| CkptError::Format {
            path: report.path.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(report)
}

/// Reads `path` and fills `varmap` (see [`load_state_dict`]).
pub fn load_state_dict_file(
    varmap: &VarMap,
    path: impl AsRef<Path>,
    opts: &LoadOptions,
) -> Result<StateDictReport, CkptError> {
    let ckpt = read_ckpt(path.as_ref())?;
    load_state_dict(varmap, &ckpt, path.as_ref(), opts)
}

/// The parameters of `varmap` (optionally those under `prefix`, with the prefix removed),
/// sorted by name.
pub fn state_dict(varmap: &VarMap, prefix: Option<&str>) -> Vec<(String, Tensor)> {
    // Poisoned only if another thread panicked holding it: then panicking is right.
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut out: Vec<(String, Tensor)> = data
        .iter()
        .filter_map(|(k, v)| {
            let key = match prefix {
                Some(p) => k.strip_prefix(p)?.to_string(),
                None => k.clone(),
            };
            Some((key, v.as_tensor().clone()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Writes the parameters of `varmap` in SpeechBrain's layout: `.safetensors` by extension,
/// otherwise a torch `.ckpt`.
pub fn save_state_dict(
    varmap: &VarMap,
    prefix: Option<&str>,
    path: impl AsRef<Path>,
) -> Result<(), CkptError> {
    let path = path.as_ref();
    let sd = state_dict(varmap, prefix);
    if path.extension().is_some_and(|e| e == "safetensors") {
        save_safetensors(path, &sd)
    } else {
        save_ckpt(path, &sd)
    }
}
