//! SpeechBrain's `Checkpointer` (`speechbrain.utils.checkpoints`): one `CKPT+<time>+NN` folder
//! per checkpoint with one file per recoverable (`<name>.ckpt`) and `CKPT.yaml` (the meta:
//! `unixtime`, `end-of-epoch`, and the caller's metrics).
//!
//! A checkpoint is written into a hidden temporary folder and renamed into place only once
//! every file is complete, so a crash (or a failing disk) mid-save leaves the previous
//! checkpoints as they were and no half checkpoint that `recover_if_possible` could pick up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

/// What can go wrong saving or recovering.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File-system error on a path.
    #[error("checkpoint {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// A file that is not what it should be.
    #[error("checkpoint file {0}: {1}")]
    Format(PathBuf, String),
    /// A recoverable failed to save or load.
    #[error("checkpoint {0}: recoverable `{1}`: {2}")]
    Recoverable(PathBuf, String, String),
}

/// Something whose state goes into a checkpoint as `<name>.ckpt` (SpeechBrain's
/// `mark_as_saver` / `mark_as_loader` pair).
pub trait Recoverable {
    /// Writes the state to `path`.
    fn save(&self, path: &Path) -> Result<(), CheckpointError>;
    /// Restores it; `end_of_epoch` says whether the checkpoint closed an epoch.
    fn load(&mut self, path: &Path, end_of_epoch: bool) -> Result<(), CheckpointError>;
}

/// Writes `value` as JSON, atomically.
pub(crate) fn write_json(path: &Path, value: &Json) -> Result<(), CheckpointError> {
    let text = serde_json::to_string(value)
        .map_err(|e| CheckpointError::Format(path.to_path_buf(), e.to_string()))?;
    write_text(path, &text)
}

/// Writes a small text file atomically (temporary file beside it, then rename).
pub(crate) fn write_text(path: &Path, text: &str) -> Result<(), CheckpointError> {
    crate::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| CheckpointError::Io(path.to_path_buf(), e))
}

/// Reads a JSON file written by [`write_json`].
pub(crate) fn read_json(path: &Path) -> Result<Json, CheckpointError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| CheckpointError::Io(path.to_path_buf(), e))?;
    serde_json::from_str(&text)
        .map_err(|e| CheckpointError::Format(path.to_path_buf(), e.to_string()))
}

/// One saved checkpoint: its folder and meta (`CKPT.yaml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The `CKPT+...` folder.
    pub path: PathBuf,
    /// `unixtime`, `end-of-epoch` and the caller's entries.
    pub meta: BTreeMap<String, Json>,
}

impl Checkpoint {
    /// The save time (seconds since the epoch).
    pub fn unixtime(&self) -> f64 {
        self.meta
            .get("unixtime")
            .and_then(Json::as_f64)
            .unwrap_or(0.0)
    }
    /// Whether it was saved at the end of an epoch.
    pub fn end_of_epoch(&self) -> bool {
        self.meta
            .get("end-of-epoch")
            .and_then(Json::as_bool)
            .unwrap_or(true)
    }
    /// A numeric meta entry.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.meta.get(key).and_then(Json::as_f64)
    }
    /// Whether the meta holds `key`.
    pub fn has(&self, key: &str) -> bool {
        self.meta.contains_key(key)
    }
    /// The file of recoverable `name`.
    pub fn paramfile(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.ckpt"))
    }
}

/// Which checkpoints to keep or pick: the newest, or the best by a meta metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Importance {
    /// Most recent first.
    Recency,
    /// Lowest value of this meta key first (`min_keys`).
    Min(String),
    /// Highest value of this meta key first (`max_keys`).
    Max(String),
}

impl Importance {
    fn sort(&self, ckpts: &mut [Checkpoint]) {
        let key = |c: &Checkpoint| -> f64 {
            match self {
                Importance::Recency => -c.unixtime(),
                Importance::Min(k) => c.metric(k).unwrap_or(f64::INFINITY),
                Importance::Max(k) => -c.metric(k).unwrap_or(f64::NEG_INFINITY),
            }
        };
        ckpts.sort_by(|a, b| key(a).total_cmp(&key(b)));
    }
}

fn yaml_scalar(v: &Json) -> String {
    match v {
        Json::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Json::Null => "null".into(),
        o => o.to_string(),
    }
}

fn parse_yaml_scalar(s: &str) -> Json {
    let s = s.trim();
    match s {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        "null" | "~" => Json::Null,
        _ => serde_json::from_str(s)
            .ok()
            .or_else(|| s.parse::<f64>().ok().map(Json::from))
            .unwrap_or_else(|| Json::String(s.trim_matches('\'').to_string())),
    }
}

/// Saves and recovers checkpoints under one folder (`save/` in SpeechBrain's recipes).
///
/// ```no_run
/// use voxbrain::brain::Checkpointer;
/// let ckpt = Checkpointer::new("results/save");
/// for c in ckpt.find_checkpoints(None).unwrap() {
///     println!("{} end-of-epoch={}", c.path.display(), c.end_of_epoch());
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Checkpointer {
    /// The folder holding the `CKPT+...` folders.
    pub checkpoints_dir: PathBuf,
}

impl Checkpointer {
    /// A checkpointer over `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            checkpoints_dir: dir.into(),
        }
    }

    fn io(&self, p: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
        let p = p.to_path_buf();
        move |e| CheckpointError::Io(p.clone(), e)
    }

    fn new_checkpoint_dirpath(&self, unixtime: f64) -> PathBuf {
        let secs = unixtime as i64;
        let (d, s) = (secs.div_euclid(86400), secs.rem_euclid(86400));
        let (y, m, day) = civil_from_days(d);
        let stamp = format!(
            "{y:04}-{m:02}-{day:02}+{:02}-{:02}-{:02}",
            s / 3600,
            s % 3600 / 60,
            s % 60
        );
        (0..)
            .map(|n| self.checkpoints_dir.join(format!("CKPT+{stamp}+{n:02}")))
            .find(|p| !p.exists())
            .unwrap_or_default()
    }

    /// Saves every recoverable into a new checkpoint folder with `meta` added to `CKPT.yaml`.
    pub fn save_checkpoint(
        &self,
        recoverables: &[(&str, &dyn Recoverable)],
        meta: &BTreeMap<String, Json>,
        end_of_epoch: bool,
    ) -> Result<Checkpoint, CheckpointError> {
        let dir = &self.checkpoints_dir;
        std::fs::create_dir_all(dir).map_err(self.io(dir))?;
        let unixtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let tmp = tempfile::Builder::new()
            .prefix(".ckpt-tmp-")
            .tempdir_in(dir)
            .map_err(self.io(dir))?;
        for (name, obj) in recoverables {
            let file = tmp.path().join(format!("{name}.ckpt"));
            obj.save(&file)?;
        }
        let mut all = BTreeMap::new();
        all.insert("unixtime".to_string(), Json::from(unixtime));
        all.insert("end-of-epoch".to_string(), Json::Bool(end_of_epoch));
        all.extend(meta.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut text = String::from("# yamllint disable\n");
        for (k, v) in &all {
            text.push_str(&format!("{k}: {}\n", yaml_scalar(v)));
        }
        // CKPT.yaml last: a folder without it is not a checkpoint (as in SpeechBrain).
        write_text(&tmp.path().join("CKPT.yaml"), &text)?;
        let final_dir = self.new_checkpoint_dirpath(unixtime);
        crate::fsutil::publish_dir(tmp, &final_dir)
            .map_err(|e| CheckpointError::Io(final_dir.clone(), e))?;
        tracing::debug!(
            "saved an {} checkpoint in {}",
            if end_of_epoch {
                "end-of-epoch"
            } else {
                "intra-epoch"
            },
            final_dir.display()
        );
        Ok(Checkpoint {
            path: final_dir,
            meta: all,
        })
    }

    /// Every complete checkpoint (a `CKPT+*` folder with a `CKPT.yaml`), filtered by
    /// `predicate`, most recent first.
    pub fn find_checkpoints(
        &self,
        predicate: Option<&dyn Fn(&Checkpoint) -> bool>,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let dir = &self.checkpoints_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CheckpointError::Io(dir.clone(), e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let path = e.map_err(self.io(dir))?.path();
            let is_ckpt = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("CKPT+"));
            let meta_file = path.join("CKPT.yaml");
            if !is_ckpt || !meta_file.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&meta_file).map_err(self.io(&meta_file))?;
            let meta = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), parse_yaml_scalar(v)))
                .collect();
            let c = Checkpoint { path, meta };
            if predicate.is_none_or(|p| p(&c)) {
                out.push(c);
            }
        }
        Importance::Recency.sort(&mut out);
        Ok(out)
    }

    /// The best checkpoint by `importance` among those passing `predicate`.
    pub fn find_checkpoint(
        &self,
        importance: &Importance,
        predicate: Option<&dyn Fn(&Checkpoint) -> bool>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let mut all = self.find_checkpoints(predicate)?;
        importance.sort(&mut all);
        Ok(all.into_iter().next())
    }

    /// Saves, then deletes older checkpoints so that `num_to_keep` remain for each of
    /// `importance` (recency always counts; a checkpoint kept by any criterion survives).
    /// Only checkpoints passing `predicate` are candidates for deletion.
    pub fn save_and_keep_only(
        &self,
        recoverables: &[(&str, &dyn Recoverable)],
        meta: &BTreeMap<String, Json>,
        end_of_epoch: bool,
        num_to_keep: usize,
        importance: &[Importance],
        predicate: Option<&dyn Fn(&Checkpoint) -> bool>,
    ) -> Result<Checkpoint, CheckpointError> {
        let saved = self.save_checkpoint(recoverables, meta, end_of_epoch)?;
        self.delete_checkpoints(num_to_keep, importance, predicate)?;
        Ok(saved)
    }

    /// Deletes checkpoints not among the `num_to_keep` best by any of `importance` (and by
    /// recency).
    pub fn delete_checkpoints(
        &self,
        num_to_keep: usize,
        importance: &[Importance],
        predicate: Option<&dyn Fn(&Checkpoint) -> bool>,
    ) -> Result<(), CheckpointError> {
        let candidates = self.find_checkpoints(predicate)?;
        let mut keep = std::collections::HashSet::new();
        let mut crits = vec![Importance::Recency];
        crits.extend(importance.iter().cloned());
        for imp in &crits {
            let mut sorted = candidates.clone();
            imp.sort(&mut sorted);
            keep.extend(sorted.into_iter().take(num_to_keep).map(|c| c.path));
        }
        for c in candidates.into_iter().filter(|c| !keep.contains(&c.path)) {
            // Remove CKPT.yaml first: a folder whose deletion is interrupted is no checkpoint.
            let _ = std::fs::remove_file(c.path.join("CKPT.yaml"));
            std::fs::remove_dir_all(&c.path).map_err(self.io(&c.path))?;
        }
        Ok(())
    }

    /// Loads the most recent complete checkpoint (or the best by `importance`) into the
    /// recoverables; `Ok(None)` when there is none. A recoverable without a file in the
    /// checkpoint is an error naming it.
    pub fn recover_if_possible(
        &self,
        recoverables: &mut [(&str, &mut dyn Recoverable)],
        importance: &Importance,
        predicate: Option<&dyn Fn(&Checkpoint) -> bool>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let Some(c) = self.find_checkpoint(importance, predicate)? else {
            tracing::info!(
                "would load a checkpoint here, but none found in {}",
                self.checkpoints_dir.display()
            );
            return Ok(None);
        };
        tracing::info!("loading a checkpoint from {}", c.path.display());
        let eoe = c.end_of_epoch();
        for (name, obj) in recoverables.iter_mut() {
            let file = c.paramfile(name);
            if !file.is_file() {
                return Err(CheckpointError::Recoverable(
                    c.path.clone(),
                    name.to_string(),
                    "no file in this checkpoint".into(),
                ));
            }
            obj.load(&file, eoe)?;
        }
        Ok(Some(c))
    }
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (UTC stamps).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
