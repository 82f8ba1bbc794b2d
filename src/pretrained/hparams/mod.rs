//! SpeechBrain's `hyperparams.yaml` (HyperPyYAML) read into typed Rust values.
//!
//! Supported: `!new:`, `!name:`, `!apply:`, `!module:` (kept as data: each model maps the
//! classes it knows), `!ref <key>` with nested keys (`<a[b]>`), attributes (`<a.b>`), string
//! interpolation and arithmetic (`!ref <a> * <b>`), `!copy`, implicit and explicit tuples,
//! `!PLACEHOLDER`, and overrides (a YAML string or mapping merged before resolution, as
//! SpeechBrain's `overrides`). The three official model files load as they are.

mod kwargs;
mod parse;
mod resolve;
mod value;

use std::path::Path;

use indexmap::IndexMap;

pub use kwargs::Kwargs;
pub use value::{python_float_repr, Object, Value};

/// Errors reading a hyperparameter file; each names the file (and key and line where known).
#[derive(Debug, thiserror::Error)]
pub enum HparamsError {
    /// The file cannot be read.
    #[error("cannot read hyperparameters {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax error.
    #[error("{origin}: YAML error: {message}")]
    Syntax { origin: String, message: String },
    /// A reference, tag or placeholder that cannot be resolved.
    #[error("{origin}: key `{key}`{}: {message}", if *line > 0 { format!(" (line {line})") } else { String::new() })]
    Resolve {
        origin: String,
        key: String,
        line: usize,
        message: String,
    },
    /// Overrides that do not fit the document.
    #[error("overrides: {0}")]
    Override(String),
    /// A key is missing or has the wrong type for the model being built.
    #[error("{origin}: {message}")]
    Missing { origin: String, message: String },
}

/// Resolved hyperparameters: the generic view (`keys()`, `get()`) that the tutorial's
/// `dir(asr_model.hparams)` shows, from which each model builds its typed view.
///
/// ```
/// use voxbrain::pretrained::hparams::Hparams;
/// let yaml = "n_mels: 80\nhop: !ref <n_mels> * 2\nfeats: !new:speechbrain.lobes.features.Fbank\n    n_mels: !ref <n_mels>\n";
/// let hp = Hparams::from_str(yaml, "example.yaml", None).unwrap();
/// assert_eq!(hp.get("hop").unwrap().as_i64(), Some(160));
/// assert_eq!(hp.get("feats").unwrap().class_name(), Some("speechbrain.lobes.features.Fbank"));
/// assert_eq!(hp.keys().collect::<Vec<_>>(), ["n_mels", "hop", "feats"]);
/// ```
#[derive(Debug, Clone)]
pub struct Hparams {
    origin: String,
    values: IndexMap<String, Value>,
}

impl Hparams {
    /// Reads and resolves a file. `overrides` is YAML text (like SpeechBrain's `overrides`).
    pub fn from_file(
        path: impl AsRef<Path>,
        overrides: Option<&str>,
    ) -> Result<Self, HparamsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| HparamsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_str(&text, &path.display().to_string(), overrides)
    }

    /// Resolves YAML text; `origin` names it in errors.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(
        text: &str,
        origin: &str,
        overrides: Option<&str>,
    ) -> Result<Self, HparamsError> {
        let mut tree = parse::parse_yaml(text, origin)?;
        if let Some(o) = overrides.filter(|o| !o.trim().is_empty()) {
            let o = parse::parse_yaml(o, "overrides")?;
            resolve::apply_overrides(&mut tree, &o, false, "")?;
        }
        let values = resolve::Resolver::new(&tree, origin).resolve_all()?;
        Ok(Self {
            origin: origin.to_string(),
            values,
        })
    }

    /// Where the hyperparameters came from (a path, for error messages).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Top-level keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// All top-level values.
    pub fn values(&self) -> &IndexMap<String, Value> {
        &self.values
    }

    /// A value by key; nested keys as `a[b][c]`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let mut parts = key.split('[').map(|p| p.trim_end_matches(']'));
        let mut v = self.values.get(parts.next()?)?;
        for p in parts {
            v = match v {
                Value::Map(m) => m.get(p)?,
                Value::New(o) | Value::Name(o) | Value::Apply(o) => o.kwargs.get(p)?,
                Value::List(l) | Value::Tuple(l) => l.get(p.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// A required value, with an error naming the file and key.
    pub fn require(&self, key: &str) -> Result<&Value, HparamsError> {
        self.get(key).ok_or_else(|| HparamsError::Missing {
            origin: self.origin.clone(),
            message: format!("no key `{key}`"),
        })
    }

    /// A required `!new:` object, checking its class name ends with `class_suffix`.
    pub fn object(&self, key: &str, class_suffix: &str) -> Result<&Object, HparamsError> {
        let v = self.require(key)?;
        let o = v.as_new().ok_or_else(|| HparamsError::Missing {
            origin: self.origin.clone(),
            message: format!("`{key}` is not a !new: object (it is {})", v.python_str()),
        })?;
        if !o.class.ends_with(class_suffix) {
            return Err(HparamsError::Missing {
                origin: self.origin.clone(),
                message: format!("`{key}` is a `{}`, expected `{class_suffix}`", o.class),
            });
        }
        Ok(o)
    }

    /// A JSON summary: scalars as values, objects as their class names.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests;
