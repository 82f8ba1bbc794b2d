//! `Pretrainer`: collects the files a model needs (`collect_files`) and loads them into its
//! parts (`load_collected`), as SpeechBrain's `speechbrain.utils.parameter_transfer.Pretrainer`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_nn::VarMap;
use indexmap::IndexMap;

use super::ckpt::{load_state_dict_file, LoadOptions};
use super::fetching::{fetch_as, guess_source, split_path, FetchFrom, FetchOptions};
use super::hparams::Hparams;
use super::PretrainedError;

/// Something a checkpoint file can be loaded into (a model's parameters, a normalizer's
/// statistics, a tokenizer, a label encoder).
pub trait Loadable {
    /// Loads the state saved in `path`.
    fn load_from(&mut self, path: &Path) -> Result<(), PretrainedError>;
}

impl Loadable for crate::features::InputNormalization {
    fn load_from(&mut self, path: &Path) -> Result<(), PretrainedError> {
        self.load_statistics(path)
            .map_err(|e| PretrainedError::Load(format!("{}: {e}", path.display())))
    }
}

/// A model's parameters: the part of a `VarMap` under `prefix`, filled strictly from a
/// state_dict (every missing, unexpected or mis-shaped key is reported at once).
pub struct Params<'a> {
    /// The VarMap the model was built with.
    pub varmap: &'a VarMap,
    /// Prefix of this module's parameters in the VarMap (`""` for all).
    pub prefix: String,
}

impl Loadable for Params<'_> {
    fn load_from(&mut self, path: &Path) -> Result<(), PretrainedError> {
        let opts = if self.prefix.is_empty() {
            LoadOptions::strict()
        } else {
            LoadOptions::with_prefix(&self.prefix)
        };
        load_state_dict_file(self.varmap, path, &opts)?;
        Ok(())
    }
}

/// Collects and loads pretrained files.
///
/// ```no_run
/// use voxbrain::features::{InputNormalization, NormType};
/// use voxbrain::pretrained::{Loadable, Pretrainer};
/// let mut norm = InputNormalization::new(NormType::Global);
/// let mut pretrainer = Pretrainer::new(
///     "pretrained_ASR",
///     ["normalizer"],
///     [("normalizer", "speechbrain/asr-crdnn-rnnlm-librispeech/normalizer.ckpt")],
/// );
/// pretrainer.collect_files(None).unwrap();
/// pretrainer.load_collected(&mut [("normalizer", &mut norm as &mut dyn Loadable)]).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Pretrainer {
    /// Where files are collected (`savedir`).
    pub collect_in: PathBuf,
    /// Names of the loadables, in order.
    pub loadables: Vec<String>,
    /// Where each loadable comes from: `<hf-repo>/<file>`, `<dir>/<file>` or `<url>/<file>`.
    pub paths: IndexMap<String, String>,
    /// Fetch options (copy/symlink, revision, offline, ...).
    pub fetch: FetchOptions,
    collected: BTreeMap<String, PathBuf>,
}

impl Pretrainer {
    /// A pretrainer with `loadables` and their `paths` (a loadable without a path comes from
    /// the default source given to `collect_files`, as `<name>.ckpt`).
    pub fn new<L, P, S1, S2>(collect_in: impl AsRef<Path>, loadables: L, paths: P) -> Self
    where
        L: IntoIterator<Item = S1>,
        P: IntoIterator<Item = (S1, S2)>,
        S1: Into<String>,
        S2: Into<String>,
    {
        Self {
            collect_in: collect_in.as_ref().to_path_buf(),
            loadables: loadables.into_iter().map(Into::into).collect(),
            paths: paths
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            fetch: FetchOptions::default(),
            collected: BTreeMap::new(),
        }
    }

    /// The `pretrainer:` section of a hyperparams file (`!new:...Pretrainer` with `loadables`
    /// and optional `paths`), collecting into `collect_in` (SpeechBrain replaces the yaml's
    /// `collect_in` with the `savedir`).
    pub fn from_hparams(
        hparams: &Hparams,
        collect_in: impl AsRef<Path>,
    ) -> Result<Self, PretrainedError> {
        let obj = hparams.object("pretrainer", "Pretrainer")?;
        let loadables: Vec<String> = match obj.kwarg("loadables").and_then(|v| v.as_map()) {
            Some(m) => m.keys().cloned().collect(),
            None => Vec::new(),
        };
        let mut paths = IndexMap::new();
        if let Some(m) = obj.kwarg("paths").and_then(|v| v.as_map()) {
            for (k, v) in m {
                let p = v.as_str().ok_or_else(|| {
                    PretrainedError::Load(format!(
                        "{}: pretrainer path for `{k}` is not a string",
                        hparams.origin()
                    ))
                })?;
                paths.insert(k.clone(), p.to_string());
            }
        }
        Ok(Self {
            collect_in: collect_in.as_ref().to_path_buf(),
            loadables,
            paths,
            fetch: FetchOptions::default(),
            collected: BTreeMap::new(),
        })
    }

    /// Fetches every loadable's file into `collect_in` as `<name>.ckpt`.
    ///
    /// When `default_source` is a local directory holding the file (by its own name or as
    /// `<name>.ckpt`), that copy wins over the path written in the yaml, so a fully offline
    /// load never touches the network (SpeechBrain would fetch the yaml's hub path).
    pub fn collect_files(
        &mut self,
        default_source: Option<&str>,
    ) -> Result<&BTreeMap<String, PathBuf>, PretrainedError> {
        let local_default = default_source.filter(|s| guess_source(s) == FetchFrom::Local);
        for name in self.loadables.clone() {
            let save_filename = format!("{name}.ckpt");
            let (mut source, mut filename) = match (self.paths.get(&name), default_source) {
                (Some(p), _) => split_path(p),
                (None, Some(d)) => (d.to_string(), save_filename.clone()),
                (None, None) => {
                    return Err(PretrainedError::Load(format!(
                        "path not specified for `{name}`, and no default source given"
                    )))
                }
            };
            if let Some(dir) = local_default {
                for candidate in [filename.clone(), save_filename.clone()] {
                    if Path::new(dir).join(&candidate).is_file() {
                        source = dir.to_string();
                        filename = candidate;
                        break;
                    }
                }
            }
            let path = fetch_as(
                &filename,
                &source,
                Some(&self.collect_in),
                &save_filename,
                &self.fetch,
            )?;
            tracing::debug!(loadable = %name, path = %path.display(), "collected");
            self.collected.insert(name, path);
        }
        Ok(&self.collected)
    }

    /// The collected path of each loadable.
    pub fn collected(&self) -> &BTreeMap<String, PathBuf> {
        &self.collected
    }

    /// Loads each collected file into the loadable of the same name. Names the pretrainer
    /// knows but that are not passed are skipped with a debug log (e.g. a tokenizer handled
    /// elsewhere); passing a name the pretrainer does not know is an error.
    pub fn load_collected(
        &self,
        loadables: &mut [(&str, &mut dyn Loadable)],
    ) -> Result<(), PretrainedError> {
        for (name, target) in loadables.iter_mut() {
            let path = self.collected.get(*name).ok_or_else(|| {
                PretrainedError::Load(format!(
                    "`{name}` was not collected (the pretrainer knows: {})",
                    self.loadables.join(", ")
                ))
            })?;
            target.load_from(path)?;
        }
        Ok(())
    }
}
