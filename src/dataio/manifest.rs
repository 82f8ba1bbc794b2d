//! Manifests (SpeechBrain's data-prep JSON / CSV files, and Parquet) to and from polars
//! `DataFrame`s whose first column is `id`.
//!
//! JSON follows `speechbrain.dataio.dataio.load_data_json`: `{ "<id>": {key: value, ...}, ... }`
//! in file order, every string (also inside lists and objects) formatted with Python's
//! `str.format_map(replacements)` (`"{data_root}/a.flac"`). CSV follows `load_data_csv`: an `ID`
//! column, `$name` replacements, every column a string except `duration` (float) and the
//! columns given a type.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use polars::prelude::*;
use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde_json::Value as Json;

use super::error::{DataIoError, Result};
use super::value::Value;

/// Replacements for `{name}` (JSON) or `$name` (CSV) placeholders, e.g. `data_root`.
pub type Replacements = HashMap<String, String>;

/// File format of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// SpeechBrain's JSON: `{id: {key: value}}`.
    #[default]
    Json,
    /// SpeechBrain's legacy CSV: an `ID` column first.
    Csv,
    /// Parquet with an `id` column (typed, compact, fast to load).
    Parquet,
}

impl ManifestFormat {
    /// The format named by a file extension (`json`, `csv`, `parquet`).
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "csv" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON reading: a streaming visitor keeps the file's order of ids and keys (serde_json's own
// map would sort them, and SpeechBrain's order is the file's order).

type Row = Vec<(String, Json)>;

struct OrderedObject;
impl<'de> Visitor<'de> for OrderedObject {
    type Value = Row;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object {key: value} for a data point")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Row, A::Error> {
        let mut row = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            row.push((k, v));
        }
        Ok(row)
    }
}
impl<'de> DeserializeSeed<'de> for OrderedObject {
    type Value = Row;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<Row, D::Error> {
        d.deserialize_map(self)
    }
}

struct TopLevel;
impl<'de> Visitor<'de> for TopLevel {
    type Value = Vec<(String, Row)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object {\"<id>\": {key: value, ...}, ...}")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut rows = Vec::with_capacity(map.size_hint().unwrap_or(1024));
        while let Some(id) = map.next_key::<String>()? {
            let row = map.next_value_seed(OrderedObject)?;
            rows.push((id, row));
        }
        Ok(rows)
    }
}

/// Python's `str.format_map(replacements)` for the `{name}` / `{{` / `}}` subset used in
/// manifests. Returns `Err(name)` for a placeholder without a replacement.
pub(crate) fn format_map(s: &str, repl: &Replacements) -> std::result::Result<String, String> {
    if !s.contains(['{', '}']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len() + 32);
    let mut rest = s;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if tail.starts_with('{') {
            let end = tail.find('}').ok_or_else(|| tail.to_string())?;
            let name = &tail[1..end];
            out.push_str(repl.get(name).ok_or_else(|| name.to_string())?);
            rest = &tail[end + 1..];
        } else {
            // A lone '}' is an error in Python too.
            return Err("}".to_string());
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn replace_json(v: &mut Json, repl: &Replacements) -> std::result::Result<(), String> {
    match v {
        Json::String(s) => *s = format_map(s, repl)?,
        Json::Array(a) => a.iter_mut().try_for_each(|x| replace_json(x, repl))?,
        Json::Object(o) => o.values_mut().try_for_each(|x| replace_json(x, repl))?,
        _ => {}
    }
    Ok(())
}

/// Reads a SpeechBrain JSON manifest into a `DataFrame` (`id` first, then the keys in order of
/// first appearance), applying `{name}` replacements to every string.
///
/// A row without some key gets a null there (an error only when that key is used, as in
/// SpeechBrain). A repeated id keeps its first position and its last value, like Python's
/// `json.load`, with a warning.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("data.json");
/// std::fs::write(&p, r#"{"a": {"file_path": "{data_root}/a.flac", "length": 1.5}}"#).unwrap();
/// let repl = [("data_root".to_string(), "/data".to_string())].into_iter().collect();
/// let df = voxbrain::dataio::read_json_manifest(&p, &repl).unwrap();
/// assert_eq!(df.height(), 1);
/// assert_eq!(df.column("file_path").unwrap().str().unwrap().get(0), Some("/data/a.flac"));
/// ```
pub fn read_json_manifest(
    path: impl AsRef<Path>,
    replacements: &Replacements,
) -> Result<DataFrame> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataIoError::io(path, e))?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let rows = serde::Deserializer::deserialize_map(&mut de, TopLevel)
        .and_then(|rows| de.end().map(|_| rows))
        .map_err(|e| DataIoError::manifest(path, e.to_string()))?;
    drop(bytes);

    // Columns in order of first appearance; repeated ids overwrite in place.
    let mut col_index: HashMap<String, usize> = HashMap::new();
    let mut columns: Vec<(String, Vec<Option<Json>>)> = Vec::new();
    let mut ids: Vec<String> = Vec::with_capacity(rows.len());
    let mut id_pos: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for (id, row) in rows {
        let r = match id_pos.get(&id) {
            Some(&r) => {
                tracing::warn!(path = %path.display(), id, "duplicate id: the later entry replaces the earlier one");
                for (_, c) in columns.iter_mut() {
                    c[r] = None;
                }
                r
            }
            None => {
                id_pos.insert(id.clone(), ids.len());
                ids.push(id.clone());
                for (_, c) in columns.iter_mut() {
                    c.push(None);
                }
                ids.len() - 1
            }
        };
        for (key, mut v) in row {
            if key == "id" {
                return Err(DataIoError::manifest(
                    path,
                    format!("data point '{id}': the key 'id' is reserved for the data point id"),
                ));
            }
            replace_json(&mut v, replacements).map_err(|name| DataIoError::MissingReplacement {
                id: id.clone(),
                key: key.clone(),
                value: v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string()),
                name,
            })?;
            let c = match col_index.get(&key) {
                Some(&c) => c,
                None => {
                    col_index.insert(key.clone(), columns.len());
                    columns.push((key.clone(), vec![None; ids.len()]));
                    columns.len() - 1
                }
            };
            columns[c].1[r] = if v.is_null() { None } else { Some(v) };
        }
    }
    let mut cols = Vec::with_capacity(columns.len() + 1);
    cols.push(Column::new("id".into(), ids));
    for (name, vals) in columns {
        cols.push(json_column(&name, vals).into());
    }
    Ok(DataFrame::new_infer_height(cols)?)
}

/// Builds a typed column from JSON values: strings, ints, floats (ints and floats mixed give
/// floats), bools, lists of those; anything else (objects, mixed types) keeps its JSON text.
fn json_column(name: &str, vals: Vec<Option<Json>>) -> Series {
    let name: PlSmallStr = name.into();
    let present = || vals.iter().flatten();
    if present().all(Json::is_string) {
        let v: Vec<Option<&str>> = vals
            .iter()
            .map(|x| x.as_ref().and_then(Json::as_str))
            .collect();
        return Series::new(name, v);
    }
    if present().all(|x| x.is_i64()) {
        let v: Vec<Option<i64>> = vals
            .iter()
            .map(|x| x.as_ref().and_then(Json::as_i64))
            .collect();
        return Series::new(name, v);
    }
    if present().all(Json::is_number) {
        let v: Vec<Option<f64>> = vals
            .iter()
            .map(|x| x.as_ref().and_then(Json::as_f64))
            .collect();
        return Series::new(name, v);
    }
    if present().all(Json::is_boolean) {
        let v: Vec<Option<bool>> = vals
            .iter()
            .map(|x| x.as_ref().and_then(Json::as_bool))
            .collect();
        return Series::new(name, v);
    }
    if present().all(Json::is_array) {
        // Every `unwrap` below is on a kind checked by the `all(...)` guarding it.
        let items = || present().flat_map(|x| x.as_array().unwrap().iter());
        let list = |f: &dyn Fn(&[Json]) -> Series| -> Series {
            let v: Vec<Option<Series>> = vals
                .iter()
                .map(|x| x.as_ref().map(|a| f(a.as_array().unwrap())))
                .collect();
            Series::new(name.clone(), v)
        };
        if items().all(Json::is_string) {
            return list(&|a| {
                Series::new(
                    "".into(),
                    a.iter().map(|x| x.as_str().unwrap()).collect::<Vec<_>>(),
                )
            });
        }
        if items().all(|x| x.is_i64()) {
            return list(&|a| {
                Series::new(
                    "".into(),
                    a.iter().map(|x| x.as_i64().unwrap()).collect::<Vec<_>>(),
                )
            });
        }
        if items().all(Json::is_number) {
            return list(&|a| {
                Series::new(
                    "".into(),
                    a.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(),
                )
            });
        }
    }
    tracing::debug!(column = %name, "mixed or nested JSON values: keeping their JSON text");
    let v: Vec<Option<String>> = vals
        .iter()
        .map(|x| {
            x.as_ref().map(|j| match j {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
        .collect();
    Series::new(name, v)
}

/// Reads a SpeechBrain CSV manifest (`ID` column, `$name` replacements). Every column is a
/// string, except `duration` (float, as SpeechBrain) and the columns named in `col_types`.
pub fn read_csv_manifest(
    path: impl AsRef<Path>,
    replacements: &Replacements,
    col_types: &[(&str, DataType)],
) -> Result<DataFrame> {
    let path = path.as_ref();
    // Opening first gives an io error naming the file instead of polars' generic one.
    std::fs::metadata(path).map_err(|e| DataIoError::io(path, e))?;
    let mut df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|e| DataIoError::manifest(path, e.to_string()))?;
    if df.column("ID").is_err() {
        return Err(DataIoError::manifest(
            path,
            "CSV has to have an 'ID' field, with unique ids for all data points",
        ));
    }
    df.rename("ID", "id".into())?;
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ids: Vec<String> = df
        .column("id")?
        .str()?
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect();
    for name in names.iter().filter(|n| *n != "id") {
        let col = df.column(name)?.str()?.clone();
        let mut out: Vec<Option<String>> = Vec::with_capacity(col.len());
        for (i, v) in col.iter().enumerate() {
            out.push(match v {
                Some(v) => Some(dollar_replace(v, replacements).map_err(|n| {
                    DataIoError::MissingReplacement {
                        id: ids[i].clone(),
                        key: name.clone(),
                        value: v.to_string(),
                        name: n,
                    }
                })?),
                None => None,
            });
        }
        let mut s = Series::new(name.as_str().into(), out);
        let target = col_types
            .iter()
            .find(|(c, _)| c == name)
            .map(|(_, t)| t.clone())
            .or_else(|| (name == "duration").then_some(DataType::Float64));
        if let Some(t) = target {
            s = s.strict_cast(&t).map_err(|e| {
                DataIoError::manifest(path, format!("column '{name}' cannot be read as {t}: {e}"))
            })?;
        }
        df.replace(name, s.into())?;
    }
    check_unique_ids(&df, path)?;
    Ok(df)
}

/// `$name` replacement of SpeechBrain's CSV loader (`$` followed by word characters or dots).
fn dollar_replace(s: &str, repl: &Replacements) -> std::result::Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len() + 32);
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let n = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(after.len());
        if n == 0 {
            out.push('$');
        } else {
            out.push_str(
                repl.get(&after[..n])
                    .ok_or_else(|| after[..n].to_string())?,
            );
        }
        rest = &after[n..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads a Parquet manifest (an `id` column and typed columns).
pub fn read_parquet_manifest(path: impl AsRef<Path>) -> Result<DataFrame> {
    let path = path.as_ref();
    let f = std::fs::File::open(path).map_err(|e| DataIoError::io(path, e))?;
    let df = ParquetReader::new(f)
        .finish()
        .map_err(|e| DataIoError::manifest(path, e.to_string()))?;
    check_unique_ids(&df, path)?;
    Ok(df)
}

fn check_unique_ids(df: &DataFrame, path: &Path) -> Result<()> {
    let ids = df
        .column("id")
        .map_err(|_| DataIoError::manifest(path, "no 'id' column"))?;
    let ids = ids
        .str()
        .map_err(|_| DataIoError::manifest(path, "the 'id' column is not a string column"))?;
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for id in ids.iter() {
        let id = id.ok_or_else(|| DataIoError::manifest(path, "a row has no id"))?;
        if !seen.insert(id) {
            return Err(DataIoError::manifest(path, format!("duplicate id: {id}")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writing, always to a temporary file in the target directory, renamed into place at the end.

/// Writes `df` (with an `id` column) to `path` atomically in the given format.
///
/// JSON is SpeechBrain's shape (`{id: {key: value}}`, nulls left out), CSV has `ID` first.
///
/// ```
/// use polars::prelude::*;
/// let df = DataFrame::new_infer_height(vec![
///     Column::new("id".into(), ["a", "b"]),
///     Column::new("length".into(), [1.5f64, 2.0]),
/// ]).unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("m.json");
/// voxbrain::dataio::write_manifest(&df, &p, voxbrain::dataio::ManifestFormat::Json).unwrap();
/// let back = voxbrain::dataio::read_json_manifest(&p, &Default::default()).unwrap();
/// assert!(back.equals(&df));
/// ```
pub fn write_manifest(
    df: &DataFrame,
    path: impl AsRef<Path>,
    format: ManifestFormat,
) -> Result<()> {
    let path = path.as_ref();
    crate::fsutil::write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        match format {
            ManifestFormat::Json => write_json(df, &mut w)?,
            ManifestFormat::Csv => {
                let mut out = df.clone();
                out.rename("id", "ID".into())
                    .map_err(std::io::Error::other)?;
                CsvWriter::new(&mut w)
                    .include_header(true)
                    .finish(&mut out)
                    .map_err(std::io::Error::other)?;
            }
            ManifestFormat::Parquet => {
                ParquetWriter::new(&mut w)
                    .finish(&mut df.clone())
                    .map_err(std::io::Error::other)?;
            }
        }
        w.flush()
    })
    .map_err(|e| DataIoError::io(path, e))
}

fn value_to_json(v: Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(b),
        Value::Int(i) => Json::from(i),
        Value::Float(f) => Json::from(f),
        Value::Str(s) => Json::String(s),
        Value::IntList(l) => Json::from(l),
        Value::FloatList(l) => Json::from(l),
        Value::StrList(l) => Json::from(l),
        Value::Tensor(t) => Json::String(format!("{t}")),
    }
}

fn write_json(df: &DataFrame, w: &mut impl Write) -> std::io::Result<()> {
    let err = |e: PolarsError| std::io::Error::other(e.to_string());
    let ids = df.column("id").map_err(err)?.str().map_err(err)?;
    let others: Vec<&Column> = df.columns().iter().filter(|c| c.name() != "id").collect();
    w.write_all(b"{\n")?;
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            w.write_all(b",\n")?;
        }
        // Written pair by pair to keep the column order (serde_json's map would sort keys).
        write!(w, "  {}: {{", Json::String(id.unwrap_or("").to_string()))?;
        let mut first = true;
        for c in &others {
            let v = Value::from_any(c.get(i).map_err(err)?);
            if v.is_null() {
                continue;
            }
            if !first {
                w.write_all(b", ")?;
            }
            first = false;
            write!(w, "{}: ", Json::String(c.name().to_string()))?;
            serde_json::to_writer(&mut *w, &value_to_json(v))?;
        }
        w.write_all(b"}")?;
    }
    w.write_all(b"\n}\n")
}
