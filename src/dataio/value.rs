//! Typed values of data points: what a static column cell or a dynamic item holds.
//!
//! SpeechBrain's data points are Python dicts of anything; here the common cases are typed so
//! a wrong type fails with a message naming the data point and the key instead of deep inside
//! a model.

use std::fmt;

use candle_core::Tensor;
use polars::prelude::AnyValue;

/// One value of a data point (a static manifest cell or a dynamic item's output).
///
/// ```
/// use voxbrain::dataio::Value;
/// let v = Value::from("hello world");
/// assert_eq!(v.as_str(), Some("hello world"));
/// assert_eq!(Value::from(3i64).as_f64(), Some(3.0));
/// ```
#[derive(Debug, Clone)]
pub enum Value {
    /// Missing (a JSON row without the key, a CSV/Parquet null).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string (paths, transcripts, ids).
    Str(String),
    /// A list of integers (e.g. `tokens_list`).
    IntList(Vec<i64>),
    /// A list of floats.
    FloatList(Vec<f64>),
    /// A list of strings.
    StrList(Vec<String>),
    /// A tensor (signals, token tensors): padded by [`PaddedBatch`](super::PaddedBatch).
    Tensor(Tensor),
}

impl Value {
    /// The name of the variant, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::IntList(_) => "int list",
            Value::FloatList(_) => "float list",
            Value::StrList(_) => "string list",
            Value::Tensor(_) => "tensor",
        }
    }

    /// The string, if this is a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is a [`Value::Int`].
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// A number as `f64` (ints are converted), as Python compares them.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The tensor, if this is a [`Value::Tensor`].
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The integer list, if this is a [`Value::IntList`].
    pub fn as_int_list(&self) -> Option<&[i64]> {
        match self {
            Value::IntList(v) => Some(v),
            _ => None,
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Converts a polars cell. Nested lists become typed lists; anything else falls back to
    /// its string form (so a value is never silently dropped).
    pub(crate) fn from_any(v: AnyValue<'_>) -> Value {
        match v {
            AnyValue::Null => Value::Null,
            AnyValue::Boolean(b) => Value::Bool(b),
            AnyValue::String(s) => Value::Str(s.to_string()),
            AnyValue::StringOwned(s) => Value::Str(s.to_string()),
            AnyValue::Int32(i) => Value::Int(i as i64),
            AnyValue::Int64(i) => Value::Int(i),
            AnyValue::UInt32(i) => Value::Int(i as i64),
            AnyValue::UInt64(i) => Value::Int(i as i64),
            AnyValue::Float32(f) => Value::Float(f as f64),
            AnyValue::Float64(f) => Value::Float(f),
            AnyValue::List(s) => {
                use polars::prelude::DataType;
                match s.dtype() {
                    DataType::String => Value::StrList(
                        s.str()
                            .map(|c| c.iter().map(|x| x.unwrap_or("").to_string()).collect())
                            .unwrap_or_default(),
                    ),
                    DataType::Float32 | DataType::Float64 => Value::FloatList(
                        s.cast(&DataType::Float64)
                            .ok()
                            .and_then(|s| {
                                s.f64()
                                    .ok()
                                    .map(|c| c.iter().map(|x| x.unwrap_or(f64::NAN)).collect())
                            })
                            .unwrap_or_default(),
                    ),
                    dt if dt.is_integer() => Value::IntList(
                        s.cast(&DataType::Int64)
                            .ok()
                            .and_then(|s| {
                                s.i64()
                                    .ok()
                                    .map(|c| c.iter().map(|x| x.unwrap_or(0)).collect())
                            })
                            .unwrap_or_default(),
                    ),
                    _ => Value::Str(format!("{s}")),
                }
            }
            other => Value::Str(other.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s}"),
            Value::IntList(v) => write!(f, "{v:?}"),
            Value::FloatList(v) => write!(f, "{v:?}"),
            Value::StrList(v) => write!(f, "{v:?}"),
            Value::Tensor(t) => write!(f, "tensor{:?} {:?}", t.dims(), t.dtype()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Vec<i64>> for Value {
    fn from(v: Vec<i64>) -> Self {
        Value::IntList(v)
    }
}
impl From<Vec<f64>> for Value {
    fn from(v: Vec<f64>) -> Self {
        Value::FloatList(v)
    }
}
impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::StrList(v)
    }
}
impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Tensor(t)
    }
}
