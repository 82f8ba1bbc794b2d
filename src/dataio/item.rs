//! A fetched data point (SpeechBrain's output dict) and the arguments handed to dynamic items,
//! both with typed getters whose errors name the data point id and the key.

use candle_core::Tensor;

use super::error::{DataIoError, Result};
use super::value::Value;

/// Typed access by key, shared by [`DataPoint`] and [`Args`].
fn typed<'a, T>(
    id: &str,
    key: &str,
    v: Option<&'a Value>,
    expected: &'static str,
    f: impl Fn(&'a Value) -> Option<T>,
) -> Result<T> {
    let v = v.ok_or_else(|| DataIoError::MissingKey {
        id: id.to_string(),
        key: key.to_string(),
    })?;
    if v.is_null() {
        return Err(DataIoError::MissingKey {
            id: id.to_string(),
            key: key.to_string(),
        });
    }
    f(v).ok_or_else(|| DataIoError::WrongType {
        id: id.to_string(),
        key: key.to_string(),
        expected,
        found: v.type_name().to_string(),
    })
}

/// One data point as returned by [`DynamicItemDataset::get`](super::DynamicItemDataset::get):
/// the output keys, in the order they were set, with their values.
///
/// ```
/// use voxbrain::dataio::{DataPoint, Value};
/// let p = DataPoint::new("utt1", vec![("words".into(), Value::from("HELLO"))]);
/// assert_eq!(p.str("words").unwrap(), "HELLO");
/// assert!(p.tensor("words").unwrap_err().to_string().contains("'utt1', key 'words'"));
/// ```
#[derive(Debug, Clone)]
pub struct DataPoint {
    id: String,
    entries: Vec<(String, Value)>,
}

impl DataPoint {
    /// A data point with the given id and (key, value) entries.
    pub fn new(id: impl Into<String>, entries: Vec<(String, Value)>) -> Self {
        Self {
            id: id.into(),
            entries,
        }
    }

    /// The data point id (always known, even if `"id"` is not an output key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The output keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The (key, value) entries in order.
    pub fn entries(&self) -> &[(String, Value)] {
        &self.entries
    }

    /// Consumes the point, returning its entries.
    pub fn into_entries(self) -> Vec<(String, Value)> {
        self.entries
    }

    /// The value of `key`, if it is an output key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of `key`, or an error naming the id and key.
    pub fn value(&self, key: &str) -> Result<&Value> {
        typed(&self.id, key, self.get(key), "a value", Some)
    }

    /// A string value.
    pub fn str(&self, key: &str) -> Result<&str> {
        typed(&self.id, key, self.get(key), "string", Value::as_str)
    }

    /// An integer value.
    pub fn i64(&self, key: &str) -> Result<i64> {
        typed(&self.id, key, self.get(key), "int", Value::as_i64)
    }

    /// A number (int or float) as `f64`.
    pub fn f64(&self, key: &str) -> Result<f64> {
        typed(&self.id, key, self.get(key), "number", Value::as_f64)
    }

    /// A tensor value.
    pub fn tensor(&self, key: &str) -> Result<&Tensor> {
        typed(&self.id, key, self.get(key), "tensor", Value::as_tensor)
    }

    /// An integer list value.
    pub fn int_list(&self, key: &str) -> Result<&[i64]> {
        typed(&self.id, key, self.get(key), "int list", Value::as_int_list)
    }
}

/// The arguments a dynamic item function receives: the values of its `takes` keys, in order,
/// plus the data point id for error messages.
///
/// ```
/// use voxbrain::dataio::{Args, Value};
/// let (keys, values) = (["words".to_string()], [Value::from("a b c")]);
/// let args = Args::new("utt1", &keys, &values);
/// assert_eq!(args.str(0).unwrap(), "a b c");
/// assert!(args.i64(0).unwrap_err().to_string().contains("key 'words': expected int"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    id: &'a str,
    keys: &'a [String],
    values: &'a [Value],
}

impl<'a> Args<'a> {
    /// Arguments for data point `id`: `values[i]` is the value of `keys[i]`.
    pub fn new(id: &'a str, keys: &'a [String], values: &'a [Value]) -> Self {
        Self { id, keys, values }
    }

    /// The data point id.
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the item takes nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn key(&self, i: usize) -> &str {
        self.keys.get(i).map(|s| s.as_str()).unwrap_or("?")
    }

    /// The `i`-th argument.
    pub fn value(&self, i: usize) -> Result<&'a Value> {
        typed(self.id, self.key(i), self.values.get(i), "a value", Some)
    }

    /// The `i`-th argument as a string.
    pub fn str(&self, i: usize) -> Result<&'a str> {
        typed(
            self.id,
            self.key(i),
            self.values.get(i),
            "string",
            Value::as_str,
        )
    }

    /// The `i`-th argument as an integer.
    pub fn i64(&self, i: usize) -> Result<i64> {
        typed(
            self.id,
            self.key(i),
            self.values.get(i),
            "int",
            Value::as_i64,
        )
    }

    /// The `i`-th argument as a number.
    pub fn f64(&self, i: usize) -> Result<f64> {
        typed(
            self.id,
            self.key(i),
            self.values.get(i),
            "number",
            Value::as_f64,
        )
    }

    /// The `i`-th argument as a tensor.
    pub fn tensor(&self, i: usize) -> Result<&'a Tensor> {
        typed(
            self.id,
            self.key(i),
            self.values.get(i),
            "tensor",
            Value::as_tensor,
        )
    }

    /// The `i`-th argument as an integer list.
    pub fn int_list(&self, i: usize) -> Result<&'a [i64]> {
        typed(
            self.id,
            self.key(i),
            self.values.get(i),
            "int list",
            Value::as_int_list,
        )
    }
}
