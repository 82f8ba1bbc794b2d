//! `DynamicItemDataset`: static data in a polars `DataFrame`, dynamic items computed on access
//! (SpeechBrain's `speechbrain.dataio.dataset.DynamicItemDataset`).

use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use super::error::{BoxError, DataIoError, Result};
use super::item::{Args, DataPoint};
use super::manifest::{self, Replacements};
use super::pipeline::{DataPipeline, DynamicItem, Plan};
use super::value::Value;

/// A dataset of data points: static items from a manifest (a polars `DataFrame` with an `id`
/// column), dynamic items computed from them when a point is fetched.
///
/// Views made by [`filtered_sorted`](Self::filtered_sorted) share the `DataFrame` (nothing is
/// copied, audio is never read) and get their own copy of the dynamic items and output keys,
/// as SpeechBrain's `FilteredSortedDynamicItemDataset`.
///
/// ```
/// use polars::prelude::*;
/// use voxbrain::dataio::{DynamicItemDataset, Value};
/// let df = DataFrame::new_infer_height(vec![
///     Column::new("id".into(), ["a", "b"]),
///     Column::new("words".into(), ["HELLO WORLD", "HI"]),
/// ]).unwrap();
/// let mut ds = DynamicItemDataset::from_polars(df).unwrap();
/// ds.add_dynamic_item(&["words"], &["n_words"], |a| {
///     Ok(vec![Value::Int(a.str(0)?.split_whitespace().count() as i64)])
/// }).unwrap();
/// ds.set_output_keys(&["id", "n_words"]);
/// assert_eq!(ds.get(0).unwrap().i64("n_words").unwrap(), 2);
/// ```
#[derive(Clone)]
pub struct DynamicItemDataset {
    data: Arc<DataFrame>,
    /// Row of `data` for each position of this view.
    rows: Arc<Vec<IdxSize>>,
    pipeline: DataPipeline,
    /// Evaluation plan of the output keys (None until valid).
    plan: Option<Arc<Plan>>,
}

impl std::fmt::Debug for DynamicItemDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicItemDataset")
            .field("len", &self.len())
            .field("static_keys", &self.pipeline.static_keys())
            .field("dynamic_items", &self.pipeline.items())
            .field("output_keys", &self.pipeline.output_mapping())
            .finish()
    }
}

impl DynamicItemDataset {
    /// A dataset over a `DataFrame` with a unique string `id` column (SpeechBrain's data dict).
    pub fn from_polars(df: DataFrame) -> Result<Self> {
        let ids = df.column("id").map_err(|_| {
            DataIoError::Invalid("the DataFrame needs an 'id' column (the data point ids)".into())
        })?;
        if ids.dtype() != &DataType::String {
            return Err(DataIoError::Invalid(format!(
                "the 'id' column must hold strings, not {}",
                ids.dtype()
            )));
        }
        if ids.null_count() > 0 {
            return Err(DataIoError::Invalid("the 'id' column has nulls".into()));
        }
        if ids.n_unique()? != ids.len() {
            return Err(DataIoError::Invalid(
                "the 'id' column has duplicates".into(),
            ));
        }
        // One chunk per column keeps random access O(1).
        let mut df = df;
        df.rechunk_mut();
        let keys = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let n = df.height() as IdxSize;
        Ok(Self {
            data: Arc::new(df),
            rows: Arc::new((0..n).collect()),
            pipeline: DataPipeline::new(keys),
            plan: Some(Arc::new(Plan::default())),
        })
    }

    /// Loads a SpeechBrain JSON manifest (`{id: {key: value}}`), replacing `{name}` in strings
    /// (e.g. `{data_root}`), as `DynamicItemDataset.from_json`.
    pub fn from_json(path: impl AsRef<Path>, replacements: &Replacements) -> Result<Self> {
        Self::from_polars(manifest::read_json_manifest(path, replacements)?)
    }

    /// Loads a SpeechBrain CSV manifest (`ID` column, `$name` replacements, `duration` as float,
    /// every other column a string), as `DynamicItemDataset.from_csv`.
    pub fn from_csv(path: impl AsRef<Path>, replacements: &Replacements) -> Result<Self> {
        Self::from_polars(manifest::read_csv_manifest(path, replacements, &[])?)
    }

    /// [`from_csv`](Self::from_csv) with column types (SpeechBrain's `col_types`), e.g.
    /// `&[("length", DataType::Float64)]`.
    pub fn from_csv_typed(
        path: impl AsRef<Path>,
        replacements: &Replacements,
        col_types: &[(&str, DataType)],
    ) -> Result<Self> {
        Self::from_polars(manifest::read_csv_manifest(path, replacements, col_types)?)
    }

    /// Loads a Parquet manifest with an `id` column.
    pub fn from_parquet(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_polars(manifest::read_parquet_manifest(path)?)
    }

    /// Number of data points in this view.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the view is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The static data of every row (shared by all views).
    pub fn data(&self) -> &DataFrame {
        &self.data
    }

    /// The static data of this view's rows, in this view's order.
    pub fn to_polars(&self) -> Result<DataFrame> {
        let idx = IdxCa::from_vec("idx".into(), self.rows.as_ref().clone());
        Ok(self.data.take(&idx)?)
    }

    /// The pipeline (dynamic items and output keys).
    pub fn pipeline(&self) -> &DataPipeline {
        &self.pipeline
    }

    /// The id of the data point at `index`.
    pub fn id(&self, index: usize) -> Result<&str> {
        let row = self.row(index)?;
        Ok(self.data.column("id")?.str()?.get(row).unwrap_or(""))
    }

    /// The ids of this view, in order.
    pub fn ids(&self) -> Result<Vec<String>> {
        let ids = self.data.column("id")?.str()?;
        Ok(self
            .rows
            .iter()
            .map(|&r| ids.get(r as usize).unwrap_or("").to_string())
            .collect())
    }

    fn row(&self, index: usize) -> Result<usize> {
        self.rows
            .get(index)
            .map(|&r| r as usize)
            .ok_or(DataIoError::Index {
                index,
                len: self.len(),
            })
    }

    /// Makes a new dynamic item available: `f` receives the values of `takes` (in order) and
    /// returns one value per `provides` key (a function may provide several keys, as the
    /// tutorial's `text_pipeline`). Items may take keys other items provide.
    ///
    /// Errors returned by `f` are reported with the data point id and the provided keys.
    pub fn add_dynamic_item<F>(&mut self, takes: &[&str], provides: &[&str], f: F) -> Result<()>
    where
        F: Fn(Args<'_>) -> std::result::Result<Vec<Value>, BoxError> + Send + Sync + 'static,
    {
        self.add_item(DynamicItem::new(takes, provides, f)?);
        Ok(())
    }

    /// Adds a prepared [`DynamicItem`].
    pub fn add_item(&mut self, item: DynamicItem) {
        self.pipeline.add_dynamic_item(item);
        self.replan();
    }

    /// Sets the keys returned by [`get`](Self::get) (static or dynamic), in order.
    pub fn set_output_keys(&mut self, keys: &[&str]) {
        self.pipeline.set_output_keys(keys);
        self.replan();
    }

    /// Sets output keys as (outside name, internal key) pairs (SpeechBrain's dict form).
    pub fn set_output_mapping(&mut self, mapping: &[(&str, &str)]) {
        self.pipeline.set_output_mapping(mapping);
        self.replan();
    }

    fn replan(&mut self) {
        let keys: Vec<&str> = self
            .pipeline
            .output_mapping()
            .iter()
            .map(|(_, k)| k.as_str())
            .collect();
        // An unknown key may still be provided by an item added later: report it on access.
        self.plan = self.pipeline.plan(&keys).ok().map(Arc::new);
    }

    /// Reads a static value; a null (a row missing the key) is an error naming id and key.
    pub(crate) fn static_value(&self, row: usize, key: &str, id: &str) -> Result<Value> {
        let col = self.data.column(key).map_err(|_| DataIoError::MissingKey {
            id: id.to_string(),
            key: key.to_string(),
        })?;
        let v = Value::from_any(col.get(row)?);
        if v.is_null() {
            return Err(DataIoError::MissingKey {
                id: id.to_string(),
                key: key.to_string(),
            });
        }
        Ok(v)
    }

    /// Computes `keys` for the point at `index` with the given plan.
    pub(crate) fn compute_with(
        &self,
        index: usize,
        plan: &Plan,
        keys: &[&str],
    ) -> Result<(String, Vec<Value>)> {
        let row = self.row(index)?;
        let id = self
            .data
            .column("id")?
            .str()?
            .get(row)
            .unwrap_or("")
            .to_string();
        let get = |k: &str| -> Result<Value> {
            if k == "id" {
                return Ok(Value::Str(id.clone()));
            }
            self.static_value(row, k, &id)
        };
        let values = self.pipeline.run(&id, plan, &get, keys)?;
        Ok((id, values))
    }

    /// Fetches the data point at `index` with the output keys (SpeechBrain's `dataset[index]`).
    /// Only the dynamic items the output keys need are computed.
    pub fn get(&self, index: usize) -> Result<DataPoint> {
        let keys: Vec<&str> = self
            .pipeline
            .output_mapping()
            .iter()
            .map(|(_, k)| k.as_str())
            .collect();
        let plan = match &self.plan {
            Some(p) => p.clone(),
            None => Arc::new(self.pipeline.plan(&keys)?),
        };
        let (id, values) = self.compute_with(index, &plan, &keys)?;
        let entries = self
            .pipeline
            .output_mapping()
            .iter()
            .map(|(o, _)| o.clone())
            .zip(values)
            .collect();
        Ok(DataPoint::new(id, entries))
    }

    /// Computes specific keys of one point without changing the output keys (SpeechBrain's
    /// `compute_specific`).
    pub fn compute(&self, index: usize, keys: &[&str]) -> Result<DataPoint> {
        let plan = self.pipeline.plan(keys)?;
        let (id, values) = self.compute_with(index, &plan, keys)?;
        Ok(DataPoint::new(
            id,
            keys.iter().map(|k| k.to_string()).zip(values).collect(),
        ))
    }

    /// Iterates over the data points of this view, in order.
    pub fn iter(&self) -> impl Iterator<Item = Result<DataPoint>> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// A view with the same data and pipeline over the given positions of this view.
    pub(crate) fn with_positions(&self, positions: &[usize]) -> Self {
        let rows = positions.iter().map(|&p| self.rows[p]).collect();
        Self {
            data: self.data.clone(),
            rows: Arc::new(rows),
            pipeline: self.pipeline.clone(),
            plan: self.plan.clone(),
        }
    }

    /// Row of `data` for position `pos` (no bounds check beyond the slice's).
    pub(crate) fn rows(&self) -> &[IdxSize] {
        &self.rows
    }
}
