//! `filtered_sorted`: SpeechBrain's `DynamicItemDataset.filtered_sorted`, with conditions on
//! static columns evaluated by polars over the whole column and the sort done by polars.
//!
//! Order of operations, exactly as SpeechBrain 1.1:
//! 1. walk the data points in the current order, keeping those with
//!    `key_min_value <= value <= key_max_value` and `key_test(value)`;
//! 2. stop as soon as `select_n` points are kept (so `select_n` picks the *first* n passing
//!    points, and only those are sorted; it is not "the n shortest");
//! 3. sort by `sort_key` — ties keep their order, and with `reverse` ties come in reverse order
//!    (SpeechBrain sorts `(value, index, id)` tuples, reversed).

use std::sync::Arc;

use polars::prelude::*;

use super::dataset::DynamicItemDataset;
use super::error::{DataIoError, Result};
use super::value::Value;

/// A predicate for [`FilterSort::key_test`].
pub type KeyTest = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// The arguments of [`DynamicItemDataset::filtered_sorted`] (SpeechBrain's keyword arguments).
///
/// ```
/// use voxbrain::dataio::FilterSort;
/// let opts = FilterSort::new().sort_key("length").select_n(100).key_max_value("length", 20.0);
/// assert_eq!(opts.select_n, Some(100));
/// ```
#[derive(Clone, Default)]
pub struct FilterSort {
    /// Keep a point only if `point[key] >= limit` for each (key, limit).
    pub key_min_value: Vec<(String, Value)>,
    /// Keep a point only if `point[key] <= limit` for each (key, limit).
    pub key_max_value: Vec<(String, Value)>,
    /// Keep a point only if `test(point[key])` for each (key, test).
    pub key_test: Vec<(String, KeyTest)>,
    /// Sort by this key (ascending unless `reverse`).
    pub sort_key: Option<String>,
    /// Sort in descending order.
    pub reverse: bool,
    /// Keep at most the first `n` passing points (before sorting, as SpeechBrain).
    pub select_n: Option<usize>,
}

impl FilterSort {
    /// No filtering, no sorting.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `sort_key`.
    pub fn sort_key(mut self, key: &str) -> Self {
        self.sort_key = Some(key.to_string());
        self
    }
    /// Sets `reverse`.
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }
    /// Sets `select_n`.
    pub fn select_n(mut self, n: usize) -> Self {
        self.select_n = Some(n);
        self
    }
    /// Adds a `key_min_value` entry.
    pub fn key_min_value(mut self, key: &str, limit: impl Into<Value>) -> Self {
        self.key_min_value.push((key.to_string(), limit.into()));
        self
    }
    /// Adds a `key_max_value` entry.
    pub fn key_max_value(mut self, key: &str, limit: impl Into<Value>) -> Self {
        self.key_max_value.push((key.to_string(), limit.into()));
        self
    }
    /// Adds a `key_test` entry.
    pub fn key_test(
        mut self,
        key: &str,
        test: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.key_test.push((key.to_string(), Arc::new(test)));
        self
    }
}

fn is_static(ds: &DynamicItemDataset, key: &str) -> bool {
    ds.data().column(key).is_ok()
}

impl DynamicItemDataset {
    /// A filtered and/or sorted view sharing the static data (SpeechBrain's
    /// `filtered_sorted`). See the module documentation for the exact order of operations.
    ///
    /// ```
    /// use polars::prelude::*;
    /// use voxbrain::dataio::{DynamicItemDataset, FilterSort};
    /// let df = DataFrame::new_infer_height(vec![
    ///     Column::new("id".into(), ["a", "b", "c", "d"]),
    ///     Column::new("length".into(), [3.0f64, 1.0, 2.0, 1.0]),
    /// ]).unwrap();
    /// let ds = DynamicItemDataset::from_polars(df).unwrap();
    /// let s = ds.filtered_sorted(&FilterSort::new().sort_key("length")).unwrap();
    /// assert_eq!(s.ids().unwrap(), ["b", "d", "c", "a"]);
    /// let r = ds.filtered_sorted(&FilterSort::new().sort_key("length").reverse(true)).unwrap();
    /// assert_eq!(r.ids().unwrap(), ["a", "c", "d", "b"]);
    /// ```
    pub fn filtered_sorted(&self, opts: &FilterSort) -> Result<Self> {
        let n = self.len();
        let idx = IdxCa::from_vec("idx".into(), self.rows().to_vec());
        // 1a. Static min/max conditions: one vectorised mask over the view.
        let mut mask: Option<BooleanChunked> = None;
        let mut row_conds: Vec<(&str, Cond)> = Vec::new();
        for (key, limit, is_min) in opts
            .key_min_value
            .iter()
            .map(|(k, l)| (k, l, true))
            .chain(opts.key_max_value.iter().map(|(k, l)| (k, l, false)))
        {
            if is_static(self, key) {
                let col = self.data().column(key)?.take(&idx)?;
                self.check_no_nulls(&col, key, None)?;
                let m = compare_column(&col, limit, is_min, key)?;
                mask = Some(match mask {
                    Some(prev) => &prev & &m,
                    None => m,
                });
            } else {
                row_conds.push((key, Cond::Limit(limit.clone(), is_min)));
            }
        }
        for (key, test) in &opts.key_test {
            row_conds.push((key, Cond::Test(test.clone())));
        }
        // 1b + 2. Row-wise conditions (dynamic keys, tests) in order, stopping at select_n.
        let limit = opts.select_n.unwrap_or(usize::MAX);
        let mut kept: Vec<usize> = Vec::with_capacity(n.min(limit));
        let test_keys: Vec<&str> = row_conds.iter().map(|(k, _)| *k).collect();
        let plan = if row_conds.is_empty() {
            None
        } else {
            Some(self.pipeline().plan(&test_keys)?)
        };
        for pos in 0..n {
            if kept.len() >= limit {
                break;
            }
            if let Some(m) = &mask {
                if m.get(pos) != Some(true) {
                    continue;
                }
            }
            if let Some(plan) = &plan {
                let p = self.compute_planned(pos, plan, &test_keys)?;
                let mut pass = true;
                for ((key, cond), v) in row_conds.iter().zip(p.1.iter()) {
                    if !cond.check(v, &p.0, key)? {
                        pass = false;
                        break;
                    }
                }
                if !pass {
                    continue;
                }
            }
            kept.push(pos);
        }
        // 3. Sort the kept points with polars: by (value, position), both reversed if asked.
        if let Some(key) = &opts.sort_key {
            let values: Column = if is_static(self, key) {
                let rows: Vec<IdxSize> = kept.iter().map(|&p| self.rows()[p]).collect();
                let c = self
                    .data()
                    .column(key)?
                    .take(&IdxCa::from_vec("idx".into(), rows))?;
                self.check_no_nulls(&c, key, Some(&kept))?;
                c
            } else {
                let plan = self.pipeline().plan(&[key])?;
                let vals = kept
                    .iter()
                    .map(|&p| {
                        self.compute_planned(p, &plan, &[key])
                            .map(|(_, mut v)| v.remove(0))
                    })
                    .collect::<Result<Vec<Value>>>()?;
                values_to_column(key, &vals, &kept, self)?
            };
            let sort_col = if values.dtype().is_primitive_numeric() {
                values.cast(&DataType::Float64)?
            } else if values.dtype() == &DataType::String || values.dtype() == &DataType::Boolean {
                values
            } else {
                return Err(DataIoError::Invalid(format!(
                    "cannot sort by key '{key}' holding {}",
                    values.dtype()
                )));
            };
            let pos: Vec<IdxSize> = kept.iter().map(|&p| p as IdxSize).collect();
            let df = DataFrame::new_infer_height(vec![
                sort_col.with_name("__key".into()),
                Column::new("__pos".into(), pos),
            ])?;
            let sorted = df.sort(
                ["__key", "__pos"],
                SortMultipleOptions::default()
                    .with_order_descending_multi([opts.reverse, opts.reverse])
                    .with_maintain_order(true)
                    .with_multithreaded(false),
            )?;
            kept = sorted
                .column("__pos")?
                .idx()?
                .into_no_null_iter()
                .map(|p| p as usize)
                .collect();
        }
        Ok(self.with_positions(&kept))
    }

    /// Errors on the first null of `col`, whose entry `i` is view position `positions[i]`
    /// (or `i` itself when `positions` is None).
    fn check_no_nulls(&self, col: &Column, key: &str, positions: Option<&[usize]>) -> Result<()> {
        if col.null_count() == 0 {
            return Ok(());
        }
        let i = col
            .is_null()
            .iter()
            .position(|b| b == Some(true))
            .unwrap_or(0);
        let pos = positions.map(|p| p[i]).unwrap_or(i);
        let id = self.id(pos)?.to_string();
        Err(DataIoError::MissingKey {
            id,
            key: key.to_string(),
        })
    }

    fn compute_planned(
        &self,
        pos: usize,
        plan: &super::pipeline::Plan,
        keys: &[&str],
    ) -> Result<(String, Vec<Value>)> {
        self.compute_with(pos, plan, keys)
    }
}

enum Cond {
    Limit(Value, bool),
    Test(KeyTest),
}

impl Cond {
    fn check(&self, v: &Value, id: &str, key: &str) -> Result<bool> {
        match self {
            Cond::Test(t) => Ok(t(v)),
            Cond::Limit(limit, is_min) => {
                let ord = match (v.as_f64(), limit.as_f64(), v.as_str(), limit.as_str()) {
                    (Some(a), Some(b), _, _) => a.partial_cmp(&b),
                    (_, _, Some(a), Some(b)) => Some(a.cmp(b)),
                    _ => None,
                };
                let ord = ord.ok_or_else(|| DataIoError::WrongType {
                    id: id.to_string(),
                    key: key.to_string(),
                    expected: "a value comparable with the filter limit",
                    found: format!("{} vs limit {}", v.type_name(), limit.type_name()),
                })?;
                Ok(if *is_min { ord.is_ge() } else { ord.is_le() })
            }
        }
    }
}

/// `col >= limit` (or `<=`) as a boolean mask.
fn compare_column(col: &Column, limit: &Value, is_min: bool, key: &str) -> Result<BooleanChunked> {
    let series = col.as_materialized_series();
    if let (true, Some(l)) = (col.dtype().is_primitive_numeric(), limit.as_f64()) {
        let s = series.cast(&DataType::Float64)?;
        let ca = s.f64()?;
        return Ok(if is_min { ca.gt_eq(l) } else { ca.lt_eq(l) });
    }
    if let (DataType::String, Some(l)) = (col.dtype(), limit.as_str()) {
        let ca = series.str()?;
        return Ok(if is_min { ca.gt_eq(l) } else { ca.lt_eq(l) });
    }
    Err(DataIoError::Invalid(format!(
        "cannot compare key '{key}' ({}) with the limit {limit} ({})",
        col.dtype(),
        limit.type_name()
    )))
}

/// Dynamic sort values as a column (numbers as f64, strings as strings).
fn values_to_column(
    key: &str,
    vals: &[Value],
    kept: &[usize],
    ds: &DynamicItemDataset,
) -> Result<Column> {
    let bad = |i: usize, v: &Value| -> Result<DataIoError> {
        Ok(DataIoError::WrongType {
            id: ds.id(kept[i])?.to_string(),
            key: key.to_string(),
            expected: "a number or a string to sort by",
            found: v.type_name().to_string(),
        })
    };
    if let Some(v) = vals.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>() {
        return Ok(Column::new(key.into(), v));
    }
    if let Some(v) = vals
        .iter()
        .map(Value::as_str)
        .collect::<Option<Vec<&str>>>()
    {
        return Ok(Column::new(key.into(), v));
    }
    // Not all numbers: name the first value that is not one.
    match vals.iter().enumerate().find(|(_, v)| v.as_f64().is_none()) {
        Some((i, v)) => Err(bad(i, v)?),
        None => Ok(Column::new(key.into(), Vec::<f64>::new())),
    }
}
