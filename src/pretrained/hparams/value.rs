//! The values a HyperPyYAML file resolves to.

use indexmap::IndexMap;

/// A resolved hyperparameter value.
///
/// Objects (`!new:`), function references (`!name:`) and calls (`!apply:`) are kept as data:
/// each model maps the classes it knows onto Rust types, and an unknown class only fails when
/// something tries to build it (with the class name in the error).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value (Python `None`).
    Null,
    /// `true` / `false` (also `True`, `TRUE`, ...).
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A YAML sequence (Python list).
    List(Vec<Value>),
    /// A `(a, b)` plain scalar (HyperPyYAML's implicit `!tuple`).
    Tuple(Vec<Value>),
    /// A mapping, in file order.
    Map(IndexMap<String, Value>),
    /// `!new:module.Class` — an object to construct.
    New(Object),
    /// `!name:module.function` — a callable (with bound keyword arguments).
    Name(Object),
    /// `!apply:module.function` — the result of a call made at load time.
    Apply(Object),
    /// `<key.attribute>`: an attribute of another value.
    Attr(Box<Value>, String),
}

/// A class or function with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Fully qualified Python name, e.g. `speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN`.
    pub class: String,
    /// Positional arguments (from a YAML sequence).
    pub args: Vec<Value>,
    /// Keyword arguments (from a YAML mapping), in file order.
    pub kwargs: IndexMap<String, Value>,
    /// Top-level key path where the object was written (`embedding_model`, `modules[encoder]`).
    /// Every `!ref` to it shares this id, as every Python reference shares one object; a
    /// `!copy` has none.
    pub id: Option<String>,
}

impl Object {
    /// The last component of the class name (`ECAPA_TDNN`).
    pub fn short_name(&self) -> &str {
        self.class.rsplit('.').next().unwrap_or(&self.class)
    }

    /// A keyword argument.
    pub fn kwarg(&self, key: &str) -> Option<&Value> {
        self.kwargs.get(key)
    }
}

impl Value {
    /// Python's `str(value)`, used for string interpolation in `!ref` expressions.
    pub fn python_str(&self) -> String {
        match self {
            Value::Null => "None".into(),
            Value::Bool(b) => if *b { "True" } else { "False" }.into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => python_float_repr(*f),
            Value::Str(s) => s.clone(),
            Value::List(v) => format!(
                "[{}]",
                v.iter()
                    .map(|x| x.python_repr())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Tuple(v) => {
                let inner: Vec<String> = v.iter().map(|x| x.python_repr()).collect();
                if inner.len() == 1 {
                    format!("({},)", inner[0])
                } else {
                    format!("({})", inner.join(", "))
                }
            }
            Value::Map(m) => format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, v)| format!("'{k}': {}", v.python_repr()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::New(o) | Value::Name(o) | Value::Apply(o) => format!("<{}>", o.class),
            Value::Attr(v, a) => format!("{}.{a}", v.python_str()),
        }
    }

    fn python_repr(&self) -> String {
        match self {
            Value::Str(s) => format!("'{s}'"),
            other => other.python_str(),
        }
    }

    /// A short, JSON-friendly description: scalars as themselves, objects as their class.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => json!(b),
            Value::Int(i) => json!(i),
            Value::Float(f) => json!(f),
            Value::Str(s) => json!(s),
            Value::List(v) | Value::Tuple(v) => {
                serde_json::Value::Array(v.iter().map(|x| x.to_json()).collect())
            }
            Value::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Value::New(o) => json!(o.class),
            Value::Name(o) => json!(format!("!name:{}", o.class)),
            Value::Apply(o) => json!(format!("!apply:{}", o.class)),
            Value::Attr(v, a) => json!(format!("{}.{a}", v.python_str())),
        }
    }

    /// The integer, if this is an `Int` (or a `Float` with an integral value).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            _ => None,
        }
    }

    /// The number as `f64`, if this is an `Int` or a `Float`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The boolean, if this is a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string, if this is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is a `List` or a `Tuple`.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The mapping, if this is a `Map`.
    pub fn as_map(&self) -> Option<&IndexMap<String, Value>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The object, if this is a `!new:` value.
    pub fn as_new(&self) -> Option<&Object> {
        match self {
            Value::New(o) => Some(o),
            _ => None,
        }
    }

    /// The class (or function) name of `!new:`, `!name:` and `!apply:` values.
    pub fn class_name(&self) -> Option<&str> {
        match self {
            Value::New(o) | Value::Name(o) | Value::Apply(o) => Some(&o.class),
            _ => None,
        }
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..16).contains(&exp) {
        // Rust's `{:e}` is shortest round-trip too; Python writes e-05 / e+16.
        let s = format!("{f:e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", e.abs())
    } else {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    }
}
