//! SpeechBrain's `FileTrainLogger`: one line per epoch in `train_log.txt`, e.g.
//! `epoch: 1, lr: 1.00e-05 - train loss: 2.31 - valid loss: 2.05, valid WER: 12.50`.

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value as Json;

/// Appends SpeechBrain-formatted statistics lines to a file.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let log = voxbrain::brain::FileTrainLogger::new(dir.path().join("train_log.txt"));
/// let line = log.log_stats(&[("epoch", 1.into()), ("lr", 1e-5.into())],
///     Some(&[("loss", 2.3456.into())]), None, None).unwrap();
/// assert_eq!(line, "epoch: 1, lr: 1.00e-05 - train loss: 2.35");
/// ```
#[derive(Debug, Clone)]
pub struct FileTrainLogger {
    /// The log file.
    pub save_file: PathBuf,
    /// Digits after the point (SpeechBrain: 2).
    pub precision: usize,
}

impl FileTrainLogger {
    /// A logger appending to `save_file`.
    pub fn new(save_file: impl Into<PathBuf>) -> Self {
        Self {
            save_file: save_file.into(),
            precision: 2,
        }
    }

    fn item(&self, key: &str, v: &Json, dataset: Option<&str>) -> String {
        let p = self.precision;
        let value = match v {
            Json::Number(n) if n.is_f64() => {
                let x = n.as_f64().unwrap_or(0.0);
                if 1.0 < x && x < 100.0 {
                    format!("{x:.p$}")
                } else {
                    python_exp(x, p)
                }
            }
            Json::String(s) => s.clone(),
            o => o.to_string(),
        };
        match dataset {
            Some(d) => format!("{d} {key}: {value}"),
            None => format!("{key}: {value}"),
        }
    }

    fn stats(&self, stats: &[(&str, Json)], dataset: Option<&str>) -> String {
        let items: Vec<String> = stats
            .iter()
            .map(|(k, v)| self.item(k, v, dataset))
            .collect();
        items.join(", ")
    }

    /// Appends one line; returns it.
    pub fn log_stats(
        &self,
        stats_meta: &[(&str, Json)],
        train_stats: Option<&[(&str, Json)]>,
        valid_stats: Option<&[(&str, Json)]>,
        test_stats: Option<&[(&str, Json)]>,
    ) -> std::io::Result<String> {
        let mut line = self.stats(stats_meta, None);
        for (name, s) in [
            ("train", train_stats),
            ("valid", valid_stats),
            ("test", test_stats),
        ] {
            if let Some(s) = s {
                line.push_str(" - ");
                line.push_str(&self.stats(s, Some(name)));
            }
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.save_file)?;
        writeln!(f, "{line}")?;
        tracing::info!("{line}");
        Ok(line)
    }
}

/// Python's `f"{x:.{p}e}"` (two-digit exponent at least: `1.00e-05`).
fn python_exp(x: f64, p: usize) -> String {
    let s = format!("{x:.p$e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}
