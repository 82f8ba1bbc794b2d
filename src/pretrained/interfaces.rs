//! `from_hparams`: the loading path every inference interface shares (SpeechBrain's
//! `Pretrained.from_hparams`): fetch `hyperparams.yaml`, resolve it with overrides, build the
//! model, run its `pretrainer` section, place it on the device.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Var};
use candle_nn::VarMap;

use super::ckpt::read_ckpt;
use super::fetching::{fetch, FetchOptions};
use super::hparams::Hparams;
use super::pretrainer::Pretrainer;
use super::PretrainedError;

/// Options of [`from_hparams`] (SpeechBrain's keyword arguments).
#[derive(Debug, Clone)]
pub struct FromHparamsOptions {
    /// Where files are collected; default `pretrained_models/<last part of source>-<hash>`, the
    /// hash naming the source (a local folder by its absolute path), so two sources never share
    /// a default savedir: files already in a savedir are reused, as SpeechBrain's `fetch`
    /// reuses them, and a shared one would hand one model's files to another.
    pub savedir: Option<PathBuf>,
    /// The hyperparameter file in the source (default `hyperparams.yaml`).
    pub hparams_file: String,
    /// YAML overrides applied before resolution.
    pub overrides: Option<String>,
    /// Device for the model (`run_opts={"device": ...}`).
    pub device: Device,
    /// Fetch options (copy/symlink, revision, offline, token, progress).
    pub fetch: FetchOptions,
}

impl Default for FromHparamsOptions {
    fn default() -> Self {
        Self {
            savedir: None,
            hparams_file: "hyperparams.yaml".into(),
            overrides: None,
            device: Device::Cpu,
            fetch: FetchOptions::default(),
        }
    }
}

impl FromHparamsOptions {
    /// The savedir for `source`.
    pub fn savedir_for(&self, source: &str) -> PathBuf {
        self.savedir.clone().unwrap_or_else(|| {
            use sha2::Digest;
            let last = source
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("model");
            let key = std::fs::canonicalize(source)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| source.to_string());
            let hash = sha2::Sha256::digest(key.as_bytes());
            let hex: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
            PathBuf::from("pretrained_models").join(format!("{last}-{hex}"))
        })
    }
}

/// A model that can be built from SpeechBrain hyperparameters and filled by a Pretrainer.
pub trait Pretrained: Sized {
    /// Builds the model's parts from the resolved hyperparameters, on `device`.
    fn build(hparams: &Hparams, device: &Device) -> Result<Self, PretrainedError>;
    /// Loads the collected files into the model's parts.
    fn load(&mut self, pretrainer: &Pretrainer) -> Result<(), PretrainedError>;
}

/// Fetches and resolves the hyperparameter file of `source`; returns it with the savedir.
pub fn load_hparams(
    source: &str,
    opts: &FromHparamsOptions,
) -> Result<(Hparams, PathBuf), PretrainedError> {
    let savedir = opts.savedir_for(source);
    let path = fetch(&opts.hparams_file, source, Some(&savedir), &opts.fetch)?;
    let hparams = Hparams::from_file(&path, opts.overrides.as_deref())?;
    Ok((hparams, savedir))
}

/// SpeechBrain's `from_hparams` for any [`Pretrained`] model. Also applies
/// [`crate::runtime::tune_allocator`] (once per process; `VOXBRAIN_TUNE_MALLOC=0` opts out).
///
/// ```no_run
/// use voxbrain::pretrained::{from_hparams, FromHparamsOptions, GenericModel};
/// let model: GenericModel = from_hparams("speechbrain/spkrec-ecapa-voxceleb",
///     &FromHparamsOptions { savedir: Some("pretrained_ecapa".into()), ..Default::default() }).unwrap();
/// ```
pub fn from_hparams<M: Pretrained>(
    source: &str,
    opts: &FromHparamsOptions,
) -> Result<M, PretrainedError> {
    crate::runtime::tune_allocator();
    let (hparams, savedir) = load_hparams(source, opts)?;
    let mut model = M::build(&hparams, &opts.device)?;
    if hparams.get("pretrainer").is_some() {
        let mut pretrainer = Pretrainer::from_hparams(&hparams, &savedir)?;
        pretrainer.fetch = opts.fetch.clone();
        pretrainer.collect_files(Some(source))?;
        model.load(&pretrainer)?;
    }
    Ok(model)
}

/// What a model directory holds, without knowing the architecture: the hyperparameters and
/// every collected checkpoint as trainable `Var`s (one `VarMap` per loadable). Files that are
/// not checkpoints (a SentencePiece tokenizer, a label encoder) are kept as paths.
pub struct GenericModel {
    /// Resolved hyperparameters.
    pub hparams: Hparams,
    /// Parameters per loadable name.
    pub params: BTreeMap<String, VarMap>,
    /// Collected files that are not torch/safetensors checkpoints.
    pub other_files: BTreeMap<String, PathBuf>,
    device: Device,
}

impl Pretrained for GenericModel {
    fn build(hparams: &Hparams, device: &Device) -> Result<Self, PretrainedError> {
        Ok(Self {
            hparams: hparams.clone(),
            params: BTreeMap::new(),
            other_files: BTreeMap::new(),
            device: device.clone(),
        })
    }

    fn load(&mut self, pretrainer: &Pretrainer) -> Result<(), PretrainedError> {
        for (name, path) in pretrainer.collected() {
            match read_ckpt(path) {
                Ok(ckpt) => {
                    let varmap = VarMap::new();
                    {
                        // Poisoned only if another thread panicked holding it: then panicking is right.
                        let mut data = varmap.data().lock().expect("VarMap lock poisoned");
                        for (k, t) in ckpt.tensors {
                            let t = t.to_device(&self.device)?;
                            data.insert(k, Var::from_tensor(&t)?);
                        }
                    }
                    self.params.insert(name.clone(), varmap);
                }
                // Tokenizers and label files are loadables too: kept as files. A torch
                // archive that cannot be read safely is an error, never an empty listing.
                Err(e @ super::ckpt::CkptError::NotCheckpoint { .. }) => {
                    tracing::debug!(loadable = %name, "{e}; kept as a file");
                    self.other_files.insert(name.clone(), path.clone());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for GenericModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenericModel")
            .field("hparams", &self.hparams.origin())
            .field("params", &self.params.keys().collect::<Vec<_>>())
            .field("other_files", &self.other_files)
            .finish()
    }
}

impl GenericModel {
    /// `(name, shape)` of every parameter of a loadable, sorted by name.
    pub fn shapes(&self, loadable: &str) -> Vec<(String, Vec<usize>)> {
        let Some(vm) = self.params.get(loadable) else {
            return Vec::new();
        };
        // Poisoned only if another thread panicked holding it: then panicking is right.
        let data = vm.data().lock().expect("VarMap lock poisoned");
        let mut v: Vec<_> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        v.sort();
        v
    }
}

/// Describes a model source as one JSON object: `{"hparams": {...}, "checkpoints":
/// {"<file>": {"<key>": [shape]}}, "files": {...}}` (what `voxbrain inspect` prints).
pub fn inspect(
    source: &str,
    opts: &FromHparamsOptions,
) -> Result<serde_json::Value, PretrainedError> {
    let model: GenericModel = from_hparams(source, opts)?;
    let mut ckpts = serde_json::Map::new();
    for name in model.params.keys() {
        let shapes: serde_json::Map<String, serde_json::Value> = model
            .shapes(name)
            .into_iter()
            .map(|(k, s)| (k, serde_json::json!(s)))
            .collect();
        ckpts.insert(format!("{name}.ckpt"), serde_json::Value::Object(shapes));
    }
    let files: serde_json::Map<String, serde_json::Value> = model
        .other_files
        .iter()
        .map(|(k, p)| (k.clone(), serde_json::json!(p.display().to_string())))
        .collect();
    Ok(serde_json::json!({
        "hparams": model.hparams.to_json(),
        "checkpoints": ckpts,
        "files": files,
    }))
}

/// A path inside the savedir, for callers that want the collected file of a loadable.
pub fn collected_path(savedir: &Path, loadable: &str) -> PathBuf {
    savedir.join(format!("{loadable}.ckpt"))
}
