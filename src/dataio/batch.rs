//! `PaddedBatch` (SpeechBrain's `speechbrain.dataio.batch.PaddedBatch` with `batch_pad_right`):
//! tensors of each key padded on the right of their first dimension and stacked, with lengths
//! relative to the longest, exactly `len / max_len` (float32), as SpeechBrain's `wav_lens`.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::error::{DataIoError, Result};
use super::item::DataPoint;
use super::value::Value;

/// A padded tensor key: `data` is `[batch, max_len, ...]`, `lengths` is `[batch]` float32 with
/// each example's first-dimension length divided by `max_len` (SpeechBrain's `PaddedData`).
#[derive(Debug, Clone)]
pub struct PaddedData {
    /// The padded, stacked tensors.
    pub data: Tensor,
    /// Relative lengths in `(0, 1]`.
    pub lengths: Tensor,
}

impl PaddedData {
    /// `(data, lengths)`, as Python's tuple unpacking `wavs, wav_lens = batch.signal`.
    pub fn pair(&self) -> (&Tensor, &Tensor) {
        (&self.data, &self.lengths)
    }

    /// Absolute lengths (`round(rel * max_len)`), handy for masking.
    pub fn abs_lengths(&self) -> Result<Vec<usize>> {
        let max = self.data.dim(1)? as f32;
        Ok(self
            .lengths
            .to_vec1::<f32>()?
            .into_iter()
            .map(|r| (r * max).round() as usize)
            .collect())
    }
}

/// The values of one key across a batch.
#[derive(Debug, Clone)]
pub enum BatchValue {
    /// Tensors, padded.
    Padded(PaddedData),
    /// Scalars stacked into a `[batch]` tensor (ints as i64, floats as f64, like torch's
    /// default collate).
    Stacked(Tensor),
    /// Anything else (strings, lists), one value per example.
    List(Vec<Value>),
}

/// Collates data points by key: tensors padded (see [`PaddedData`]), numbers stacked, strings
/// and lists kept as lists.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use voxbrain::dataio::{DataPoint, PaddedBatch, Value};
/// let p = |id: &str, n: usize| DataPoint::new(id, vec![
///     ("id".into(), Value::from(id)),
///     ("signal".into(), Value::Tensor(Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap())),
/// ]);
/// let batch = PaddedBatch::new(vec![p("a", 2), p("b", 4)]).unwrap();
/// let (wavs, wav_lens) = batch.padded("signal").unwrap().pair();
/// assert_eq!(wavs.dims(), &[2, 4]);
/// assert_eq!(wav_lens.to_vec1::<f32>().unwrap(), [0.5, 1.0]);
/// assert_eq!(batch.ids(), ["a", "b"]);
/// ```
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    ids: Vec<String>,
    keys: Vec<String>,
    values: HashMap<String, BatchValue>,
}

/// Padding options (SpeechBrain's `padding_kwargs` / `per_key_padding_kwargs`, constant mode).
#[derive(Debug, Clone, Default)]
pub struct PaddingConfig {
    /// Value padded with by default (0).
    pub value: f64,
    /// Per-key padding values (e.g. `-100` for labels).
    pub per_key: Vec<(String, f64)>,
}

impl PaddedBatch {
    /// Collates with zero padding.
    pub fn new(examples: Vec<DataPoint>) -> Result<Self> {
        Self::with_padding(examples, &PaddingConfig::default())
    }

    /// Collates with the given padding values.
    pub fn with_padding(examples: Vec<DataPoint>, padding: &PaddingConfig) -> Result<Self> {
        if examples.is_empty() {
            return Err(DataIoError::Invalid("cannot collate an empty batch".into()));
        }
        let keys: Vec<String> = examples[0].keys().map(|k| k.to_string()).collect();
        let ids: Vec<String> = examples.iter().map(|e| e.id().to_string()).collect();
        let mut columns: Vec<Vec<Value>> = vec![Vec::with_capacity(examples.len()); keys.len()];
        for ex in examples {
            let id = ex.id().to_string();
            let mut entries = ex.into_entries();
            if entries.len() != keys.len() {
                return Err(DataIoError::Invalid(format!(
                    "data point '{id}' has keys {:?}, the batch's first point has {keys:?}",
                    entries.iter().map(|(k, _)| k).collect::<Vec<_>>()
                )));
            }
            for (c, (k, v)) in entries.drain(..).enumerate() {
                if k != keys[c] {
                    return Err(DataIoError::MissingKey {
                        id,
                        key: keys[c].clone(),
                    });
                }
                columns[c].push(v);
            }
        }
        let mut values = HashMap::with_capacity(keys.len());
        for (key, vals) in keys.iter().zip(columns) {
            let pad = padding
                .per_key
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| *v)
                .unwrap_or(padding.value);
            values.insert(key.clone(), collate(key, vals, &ids, pad)?);
        }
        Ok(Self { ids, keys, values })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false (a batch has at least one example).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The data point ids (also available as `batch.list("id")` when `id` is an output key).
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The keys in order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The values of `key`.
    pub fn get(&self, key: &str) -> Result<&BatchValue> {
        self.values.get(key).ok_or_else(|| DataIoError::UnknownKey {
            key: key.to_string(),
            available: self.keys.join(", "),
        })
    }

    /// The padded tensors of `key` (SpeechBrain's `batch.signal`).
    pub fn padded(&self, key: &str) -> Result<&PaddedData> {
        match self.get(key)? {
            BatchValue::Padded(p) => Ok(p),
            other => Err(self.wrong(key, "padded tensors", other)),
        }
    }

    /// The stacked scalars of `key`.
    pub fn stacked(&self, key: &str) -> Result<&Tensor> {
        match self.get(key)? {
            BatchValue::Stacked(t) => Ok(t),
            other => Err(self.wrong(key, "stacked numbers", other)),
        }
    }

    /// The per-example values of a non-tensor key (strings, lists).
    pub fn list(&self, key: &str) -> Result<&[Value]> {
        match self.get(key)? {
            BatchValue::List(v) => Ok(v),
            other => Err(self.wrong(key, "a list of values", other)),
        }
    }

    /// The strings of a string key (e.g. `batch.words`).
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let list = self.list(key)?;
        list.iter()
            .zip(&self.ids)
            .map(|(v, id)| {
                v.as_str().ok_or_else(|| DataIoError::WrongType {
                    id: id.clone(),
                    key: key.to_string(),
                    expected: "string",
                    found: v.type_name().to_string(),
                })
            })
            .collect()
    }

    fn wrong(&self, key: &str, expected: &'static str, found: &BatchValue) -> DataIoError {
        DataIoError::WrongType {
            id: format!("batch of {}", self.ids.join(",")),
            key: key.to_string(),
            expected,
            found: match found {
                BatchValue::Padded(_) => "padded tensors",
                BatchValue::Stacked(_) => "stacked numbers",
                BatchValue::List(_) => "a list of values",
            }
            .to_string(),
        }
    }

    /// Moves every tensor (padded data, lengths, stacked values) to `device`, as
    /// SpeechBrain's `batch.to(device)`.
    pub fn to(mut self, device: &Device) -> Result<Self> {
        for v in self.values.values_mut() {
            match v {
                BatchValue::Padded(p) => {
                    p.data = p.data.to_device(device)?;
                    p.lengths = p.lengths.to_device(device)?;
                }
                BatchValue::Stacked(t) => *t = t.to_device(device)?,
                BatchValue::List(_) => {}
            }
        }
        Ok(self)
    }
}

fn collate(key: &str, vals: Vec<Value>, ids: &[String], pad: f64) -> Result<BatchValue> {
    if matches!(vals[0], Value::Tensor(_)) {
        let mut tensors = Vec::with_capacity(vals.len());
        for (v, id) in vals.into_iter().zip(ids) {
            match v {
                Value::Tensor(t) => tensors.push(t),
                other => {
                    return Err(DataIoError::WrongType {
                        id: id.clone(),
                        key: key.to_string(),
                        expected: "tensor (as the batch's first point)",
                        found: other.type_name().to_string(),
                    })
                }
            }
        }
        return Ok(BatchValue::Padded(pad_right(key, &tensors, ids, pad)?));
    }
    if vals.iter().all(|v| matches!(v, Value::Int(_))) {
        let v: Vec<i64> = vals.iter().filter_map(Value::as_i64).collect();
        let n = v.len();
        return Ok(BatchValue::Stacked(Tensor::from_vec(v, n, &Device::Cpu)?));
    }
    if vals
        .iter()
        .all(|v| matches!(v, Value::Float(_) | Value::Int(_)))
    {
        let v: Vec<f64> = vals.iter().filter_map(Value::as_f64).collect();
        let n = v.len();
        return Ok(BatchValue::Stacked(Tensor::from_vec(v, n, &Device::Cpu)?));
    }
    Ok(BatchValue::List(vals))
}

/// SpeechBrain's `batch_pad_right`: pads the first dimension to the longest, requires the
/// other dimensions to match, returns relative lengths `len / max_len` as float32 (a single
/// example gets `[1.0]`).
pub fn pad_right(key: &str, tensors: &[Tensor], ids: &[String], pad: f64) -> Result<PaddedData> {
    let first = &tensors[0];
    let rank = first.rank();
    for (t, id) in tensors.iter().zip(ids) {
        if t.rank() != rank || t.rank() == 0 {
            return Err(DataIoError::Invalid(format!(
                "key '{key}': data point '{id}' has a tensor of shape {:?}, the first has {:?} \
                 (tensors must have the same number of dimensions, at least 1)",
                t.dims(),
                first.dims()
            )));
        }
        if t.dims()[1..] != first.dims()[1..] {
            return Err(DataIoError::Invalid(format!(
                "key '{key}': data point '{id}' has shape {:?}, the first has {:?}; tensors \
                 must have the same dimensions except for the first one",
                t.dims(),
                first.dims()
            )));
        }
        if t.dtype() != first.dtype() {
            return Err(DataIoError::WrongType {
                id: id.clone(),
                key: key.to_string(),
                expected: "the dtype of the batch's first tensor",
                found: format!("{:?} (first is {:?})", t.dtype(), first.dtype()),
            });
        }
    }
    let max = tensors
        .iter()
        .map(|t| t.dim(0))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let max_len = max.iter().copied().max().unwrap_or(0);
    let lengths: Vec<f32> = max
        .iter()
        .map(|&l| {
            if max_len == 0 {
                1.0
            } else {
                (l as f64 / max_len as f64) as f32
            }
        })
        .collect();
    let mut padded = Vec::with_capacity(tensors.len());
    for t in tensors {
        let l = t.dim(0)?;
        let t = if l < max_len {
            let mut shape = t.dims().to_vec();
            shape[0] = max_len - l;
            let fill = if pad == 0.0 {
                Tensor::zeros(shape, t.dtype(), t.device())?
            } else {
                Tensor::full(pad, shape, t.device())?.to_dtype(t.dtype())?
            };
            Tensor::cat(&[t, &fill], 0)?
        } else {
            t.clone()
        };
        padded.push(t);
    }
    let data = Tensor::stack(&padded, 0)?;
    let n = lengths.len();
    let lengths = Tensor::from_vec(lengths, n, first.device())?.to_dtype(DType::F32)?;
    Ok(PaddedData { data, lengths })
}
