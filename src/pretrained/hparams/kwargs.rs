//! Typed access to the keyword arguments of a `!new:` object, or to a file's top-level keys
//! (a recipe's `number_of_epochs`, `lr`, ...), with errors that name the argument (what every
//! model builder and recipe needs).

use indexmap::IndexMap;

use super::{Hparams, Object, Value};

/// The keyword arguments of an [`Object`], read with defaults; unknown names can be rejected
/// with [`Kwargs::check_known`].
///
/// ```
/// use voxbrain::pretrained::hparams::{Hparams, Kwargs};
/// let hp = Hparams::from_str("enc: !new:a.B\n  n: 3\n  sizes: (2, 4)\n", "x.yaml", None).unwrap();
/// let kw = Kwargs::new(hp.object("enc", "B").unwrap());
/// assert_eq!(kw.usize("n", 1).unwrap(), 3);
/// assert_eq!(kw.usize_list("sizes", &[]).unwrap(), vec![2, 4]);
/// assert_eq!(kw.f64_list("sizes", &[]).unwrap(), vec![2.0, 4.0]);
/// assert!(kw.check_known(&["n"]).is_err());
/// let top = Kwargs::top_level(&hp);
/// assert_eq!(top.usize("number_of_epochs", 10).unwrap(), 10);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Kwargs<'a> {
    map: &'a IndexMap<String, Value>,
    /// What `check_known` names (the object's class), `None` for a file's top level.
    owner: Option<&'a Object>,
}

impl<'a> Kwargs<'a> {
    /// Wraps an object.
    pub fn new(obj: &'a Object) -> Self {
        Self {
            map: &obj.kwargs,
            owner: Some(obj),
        }
    }

    /// The top-level keys of a resolved file, read the same way.
    pub fn top_level(hp: &'a Hparams) -> Self {
        Self {
            map: hp.values(),
            owner: None,
        }
    }

    /// The raw value of an argument.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        self.get(key).filter(|v| !matches!(v, Value::Null))
    }

    /// A non-negative integer.
    pub fn usize(&self, key: &str, default: usize) -> Result<usize, String> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .filter(|i| *i >= 0)
                .map(|i| i as usize)
                .ok_or_else(|| format!("`{key}` must be a non-negative integer")),
        }
    }

    /// An integer (possibly negative).
    pub fn i64(&self, key: &str, default: i64) -> Result<i64, String> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| format!("`{key}` must be an integer")),
        }
    }

    /// A number.
    pub fn f64(&self, key: &str, default: f64) -> Result<f64, String> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("`{key}` must be a number")),
        }
    }

    /// A number that may be absent (`None`; `null` counts as absent).
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("`{key}` must be a number")),
        }
    }

    /// A boolean.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.present(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| format!("`{key}` must be a bool")),
        }
    }

    /// A string.
    pub fn str(&self, key: &str, default: &str) -> Result<String, String> {
        match self.present(key) {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("`{key}` must be a string")),
        }
    }

    /// A list or tuple of non-negative integers (a single integer counts as a list of one).
    pub fn usize_list(&self, key: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        match self.present(key) {
            None => Ok(default.to_vec()),
            Some(v) => {
                if let Some(i) = v.as_i64().filter(|i| *i >= 0) {
                    return Ok(vec![i as usize]);
                }
                v.as_list()
                    .ok_or_else(|| format!("`{key}` must be a list of integers"))?
                    .iter()
                    .map(|x| {
                        x.as_i64()
                            .filter(|i| *i >= 0)
                            .map(|i| i as usize)
                            .ok_or_else(|| format!("`{key}` must hold non-negative integers"))
                    })
                    .collect()
            }
        }
    }

    /// A list or tuple of numbers (a single number counts as a list of one).
    pub fn f64_list(&self, key: &str, default: &[f64]) -> Result<Vec<f64>, String> {
        match self.present(key) {
            None => Ok(default.to_vec()),
            Some(v) => {
                if let Some(x) = v.as_f64() {
                    return Ok(vec![x]);
                }
                v.as_list()
                    .ok_or_else(|| format!("`{key}` must be a list of numbers"))?
                    .iter()
                    .map(|x| {
                        x.as_f64()
                            .ok_or_else(|| format!("`{key}` must hold numbers"))
                    })
                    .collect()
            }
        }
    }

    /// The class or function name of an argument given as `!name:` / `!new:`.
    pub fn class(&self, key: &str) -> Option<&'a str> {
        self.present(key).and_then(|v| v.class_name())
    }

    /// Fails on the first argument not in `known`.
    pub fn check_known(&self, known: &[&str]) -> Result<(), String> {
        let owner = self.owner.map_or("top-level", |o| o.short_name());
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(format!("unknown {owner} argument `{k}`")),
            None => Ok(()),
        }
    }
}
