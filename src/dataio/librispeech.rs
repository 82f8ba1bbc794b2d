//! LibriSpeech-style corpora to manifests: the tutorial's `parse_to_json`.
//!
//! A corpus is `root/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` plus one
//! `<speaker>-<chapter>.trans.txt` per chapter whose lines read `<utt id> <WORDS...>`. Each
//! utterance becomes `{id: {file_path, words, spkID: "speaker_<speaker>", length}}`; the length
//! comes from the audio header (no decoding), read on all cores.
//!
//! Differences from the tutorial's script, on purpose: ids are sorted (the script follows
//! `glob`'s arbitrary order); `length` is in seconds by default, as SpeechBrain's recipes
//! ([`LengthUnit::Samples`] gives the script's `num_frames`); a transcript line without an id
//! and an audio file without a transcript are errors naming the file (the script would store
//! junk or raise a bare `KeyError`); transcript lines without audio are skipped with a warning.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::*;
use rayon::prelude::*;

use super::error::{DataIoError, Result};
use super::manifest::{write_manifest, ManifestFormat};

/// Unit of the `length` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LengthUnit {
    /// Seconds (float), as SpeechBrain's LibriSpeech recipes' `duration`.
    #[default]
    Seconds,
    /// Samples (int), as the tutorial's `parse_data.py` (`torchaudio.info(f).num_frames`).
    Samples,
}

/// Options of [`parse_librispeech`].
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// Unit of `length`.
    pub length_unit: LengthUnit,
    /// Write `file_path` as `{data_root}/<relative path>` (load with the replacement
    /// `data_root`), making the manifest portable; otherwise `root` joined with the path.
    pub data_root_placeholder: bool,
    /// Show a progress bar on stderr (hidden automatically when stderr is not a terminal).
    pub progress: bool,
    /// Audio file extensions (lower case).
    pub extensions: Vec<String>,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            length_unit: LengthUnit::Seconds,
            data_root_placeholder: false,
            progress: false,
            extensions: vec!["flac".into()],
        }
    }
}

/// What a parse found.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusSummary {
    /// Utterances written.
    pub utterances: usize,
    /// Distinct speakers.
    pub speakers: usize,
    /// Total audio, in hours.
    pub hours: f64,
    /// Transcript lines skipped because their audio file is missing.
    pub skipped_transcripts: usize,
}

impl std::fmt::Display for CorpusSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} utterances, {} speakers, {:.3} hours",
            self.utterances, self.speakers, self.hours
        )?;
        if self.skipped_transcripts > 0 {
            write!(
                f,
                " ({} transcript lines without audio skipped)",
                self.skipped_transcripts
            )?;
        }
        Ok(())
    }
}

/// Reads every `*.trans.txt` transcript: utterance id -> words.
fn read_transcripts(files: &[PathBuf]) -> Result<HashMap<String, String>> {
    let mut words = HashMap::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| DataIoError::io(f, e))?;
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let prefix = name.strip_suffix(".trans.txt").unwrap_or("");
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let (id, w) = line.split_once(' ').unwrap_or((line, ""));
            // A line must start with the chapter's "<speaker>-<chapter>-" prefix: otherwise it
            // has no id (e.g. its words were written alone) and would poison the manifest.
            let ok = if prefix.contains('-') {
                id.strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('-') && r.len() > 1)
            } else {
                id.contains('-')
            };
            if !ok {
                return Err(DataIoError::Corpus {
                    path: f.clone(),
                    reason: format!(
                        "line {}: {:?} does not start with an utterance id (expected \"{}-<utt> WORDS...\")",
                        i + 1,
                        shorten(line),
                        if prefix.is_empty() { "<speaker>-<chapter>" } else { prefix }
                    ),
                });
            }
            if words.insert(id.to_string(), w.to_string()).is_some() {
                tracing::warn!(path = %f.display(), id, "utterance transcribed twice: keeping the later line");
            }
        }
    }
    Ok(words)
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(59).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Walks a LibriSpeech-style corpus and returns its manifest as a `DataFrame` (columns `id`,
/// `file_path`, `words`, `spkID`, `length`, sorted by id) with a summary.
///
/// ```no_run
/// let (df, summary) = voxbrain::dataio::librispeech::parse_librispeech(
///     "LibriSpeech/dev-clean-2", &Default::default()).unwrap();
/// println!("{summary}\n{df}");
/// ```
pub fn parse_librispeech(
    root: impl AsRef<Path>,
    opts: &ParseOptions,
) -> Result<(DataFrame, CorpusSummary)> {
    let root = root.as_ref();
    if !root.is_dir() {
        return Err(DataIoError::Corpus {
            path: root.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let mut audio: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut transcripts = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| DataIoError::Corpus {
            path: e
                .path()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.to_path_buf()),
            reason: e.to_string(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if name.ends_with(".trans.txt") {
            transcripts.push(entry.into_path());
            continue;
        }
        let path = entry.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        if ext.is_some_and(|e| opts.extensions.contains(&e)) {
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            if let Some(prev) = audio.insert(id.clone(), path.to_path_buf()) {
                return Err(DataIoError::Corpus {
                    path: path.to_path_buf(),
                    reason: format!("utterance id {id} also names {}", prev.display()),
                });
            }
        }
    }
    let mut words = read_transcripts(&transcripts)?;
    let ids: Vec<&String> = audio.keys().collect();
    for id in &ids {
        if !words.contains_key(*id) {
            return Err(DataIoError::Corpus {
                path: audio[*id].clone(),
                reason: format!("no transcript line for utterance {id} in any *.trans.txt"),
            });
        }
    }
    let audio_ids: HashSet<&str> = ids.iter().map(|s| s.as_str()).collect();
    let skipped = words
        .keys()
        .filter(|k| !audio_ids.contains(k.as_str()))
        .count();
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "transcript lines without an audio file were skipped"
        );
    }

    let bar = if opts.progress {
        ProgressBar::new(ids.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} reading headers {pos}/{len} [{elapsed}] {per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Header reads dominate: spread them over all cores.
    let infos: Vec<(f64, u64, u32)> = ids
        .par_iter()
        .map(|id| {
            let path = &audio[*id];
            let info = crate::audio::audio_info(path)?;
            let frames = match info.num_frames {
                Some(n) => n,
                None => {
                    tracing::warn!(path = %path.display(), "header states no length: decoding");
                    crate::audio::read_waveform(path)?.num_frames() as u64
                }
            };
            bar.inc(1);
            Ok((
                frames as f64 / info.sample_rate.max(1) as f64,
                frames,
                info.sample_rate,
            ))
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();

    let n = ids.len();
    let mut col_path = Vec::with_capacity(n);
    let mut col_words = Vec::with_capacity(n);
    let mut col_spk = Vec::with_capacity(n);
    let mut speakers = HashSet::new();
    for id in &ids {
        let path = &audio[*id];
        col_path.push(if opts.data_root_placeholder {
            let rel = path.strip_prefix(root).unwrap_or(path);
            format!("{{data_root}}/{}", rel.to_string_lossy().replace('\\', "/"))
        } else {
            path.to_string_lossy().into_owned()
        });
        col_words.push(words.remove(*id).unwrap_or_default());
        let spk = id.split('-').next().unwrap_or(id);
        speakers.insert(spk.to_string());
        col_spk.push(format!("speaker_{spk}"));
    }
    let seconds: f64 = infos.iter().map(|i| i.0).sum();
    let length: Column = match opts.length_unit {
        LengthUnit::Seconds => Column::new(
            "length".into(),
            infos.iter().map(|i| i.0).collect::<Vec<_>>(),
        ),
        LengthUnit::Samples => Column::new(
            "length".into(),
            infos.iter().map(|i| i.1 as i64).collect::<Vec<_>>(),
        ),
    };
    let df = DataFrame::new_infer_height(vec![
        Column::new(
            "id".into(),
            ids.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        ),
        Column::new("file_path".into(), col_path),
        Column::new("words".into(), col_words),
        Column::new("spkID".into(), col_spk),
        length,
    ])?;
    let summary = CorpusSummary {
        utterances: n,
        speakers: speakers.len(),
        hours: seconds / 3600.0,
        skipped_transcripts: skipped,
    };
    Ok((df, summary))
}

/// The tutorial's `parse_to_json(root)`: parses the corpus and writes SpeechBrain's JSON
/// manifest to `out` atomically.
///
/// ```no_run
/// let s = voxbrain::dataio::librispeech::parse_to_json(
///     "LibriSpeech/dev-clean-2", "data.json", &Default::default()).unwrap();
/// println!("{s}");
/// ```
pub fn parse_to_json(
    root: impl AsRef<Path>,
    out: impl AsRef<Path>,
    opts: &ParseOptions,
) -> Result<CorpusSummary> {
    parse_to_manifest(root, out, ManifestFormat::Json, opts)
}

/// Parses the corpus and writes the manifest in any [`ManifestFormat`] (atomically).
pub fn parse_to_manifest(
    root: impl AsRef<Path>,
    out: impl AsRef<Path>,
    format: ManifestFormat,
    opts: &ParseOptions,
) -> Result<CorpusSummary> {
    let (df, summary) = parse_librispeech(root, opts)?;
    write_manifest(&df, out, format)?;
    tracing::info!(%summary, "manifest written");
    Ok(summary)
}
