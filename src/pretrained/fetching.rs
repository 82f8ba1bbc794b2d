//! `fetch`: getting a model file from a local directory, a URL prefix or the HuggingFace hub
//! into a `savedir`, as SpeechBrain's `speechbrain.utils.fetching.fetch` does.
//!
//! Differences from SpeechBrain, on purpose: files are **copied** into `savedir` by default
//! (symlinks break on Windows and in containers), a file already in `savedir` is used without
//! asking the network (SpeechBrain re-checks the hub), and `HF_HUB_OFFLINE=1` is honoured with
//! one clear error when nothing is cached.

use std::path::{Path, PathBuf};

use hf_hub::{Repo, RepoType};

/// Where a file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFrom {
    /// A local directory.
    Local,
    /// An `http(s)://` URL prefix.
    Uri,
    /// A HuggingFace hub repository id (`speechbrain/spkrec-ecapa-voxceleb`).
    HuggingFace,
}

/// How a fetched file is placed into `savedir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalStrategy {
    /// Copy the file (default: works everywhere).
    #[default]
    Copy,
    /// Symlink to the source / cache file (SpeechBrain's default).
    Symlink,
    /// Leave the file where it is and return that path.
    NoLink,
}

/// Options of [`fetch`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Fetch again even if the file is already in `savedir`.
    pub overwrite: bool,
    /// Hub revision (branch, tag or commit); `None` = `main`.
    pub revision: Option<String>,
    /// How files land in `savedir`.
    pub strategy: LocalStrategy,
    /// Allow network access (also disabled by `HF_HUB_OFFLINE=1`).
    pub allow_network: bool,
    /// Hub token; `None` = `HF_TOKEN`, then the token file under `HF_HOME`.
    pub token: Option<String>,
    /// Show download progress bars.
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            overwrite: false,
            revision: None,
            strategy: LocalStrategy::Copy,
            allow_network: true,
            token: None,
            progress: true,
        }
    }
}

/// Errors of [`fetch`]; each names the source and file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A local source lacks the file.
    #[error("{file} not found in local source {source_dir}")]
    LocalMissing { source_dir: PathBuf, file: String },
    /// Offline, and the hub cache does not have the file.
    #[error("cannot fetch {file} from {repo}: offline (HF_HUB_OFFLINE or allow_network=false) and the file is not in the HuggingFace cache")]
    Offline { repo: String, file: String },
    /// The hub or URL download failed.
    #[error("cannot fetch {file} from {source_name}: {reason}")]
    Download {
        source_name: String,
        file: String,
        reason: String,
    },
    /// Writing into `savedir` failed.
    #[error("cannot place {file} into {savedir}: {reason}")]
    Save {
        savedir: PathBuf,
        file: String,
        reason: String,
    },
}

/// SpeechBrain's `guess_source`: an existing directory is local, `http(s)://` is a URL,
/// anything else is a hub repository id.
pub fn guess_source(source: &str) -> FetchFrom {
    if source.starts_with("http://") || source.starts_with("https://") {
        FetchFrom::Uri
    } else if Path::new(source).is_dir() {
        FetchFrom::Local
    } else {
        FetchFrom::HuggingFace
    }
}

/// True when `HF_HUB_OFFLINE` is set to a true value.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// SpeechBrain's `split_path`: `"speechbrain/spkrec-ecapa-voxceleb/embedding_model.ckpt"` ->
/// `("speechbrain/spkrec-ecapa-voxceleb", "embedding_model.ckpt")`.
pub fn split_path(path: &str) -> (String, String) {
    match path.rsplit_once('/') {
        Some((src, file)) => (src.to_string(), file.to_string()),
        None => ("./".to_string(), path.to_string()),
    }
}

/// Fetches `filename` from `source` into `savedir` and returns the local path.
///
/// ```no_run
/// use voxbrain::pretrained::fetching::{fetch, FetchOptions};
/// let p = fetch("hyperparams.yaml", "speechbrain/spkrec-ecapa-voxceleb",
///               Some("pretrained_ecapa".as_ref()), &FetchOptions::default()).unwrap();
/// ```
pub fn fetch(
    filename: &str,
    source: &str,
    savedir: Option<&Path>,
    opts: &FetchOptions,
) -> Result<PathBuf, FetchError> {
    fetch_as(filename, source, savedir, filename, opts)
}

/// [`fetch`], saving the file in `savedir` as `save_filename` (the Pretrainer stores each
/// loadable as `<name>.ckpt`, as SpeechBrain does).
pub fn fetch_as(
    filename: &str,
    source: &str,
    savedir: Option<&Path>,
    save_filename: &str,
    opts: &FetchOptions,
) -> Result<PathBuf, FetchError> {
    let from = guess_source(source);
    let strategy = if savedir.is_none() {
        LocalStrategy::NoLink
    } else {
        opts.strategy
    };
    let destination = match savedir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| FetchError::Save {
                savedir: d.to_path_buf(),
                file: filename.into(),
                reason: e.to_string(),
            })?;
            Some(d.join(save_filename))
        }
        None => None,
    };
    if let Some(dst) = &destination {
        let local = (from == FetchFrom::Local).then(|| Path::new(source).join(filename));
        if dst.exists() && !opts.overwrite && !local.is_some_and(|src| stale_copy(&src, dst)) {
            tracing::debug!(file = filename, path = %dst.display(), "using file already in savedir");
            return Ok(dst.clone());
        }
    }
    match from {
        FetchFrom::Local => {
            let src = Path::new(source).join(filename);
            if !src.is_file() {
                return Err(FetchError::LocalMissing {
                    source_dir: PathBuf::from(source),
                    file: filename.into(),
                });
            }
            place(&src, destination.as_deref(), strategy, filename)
        }
        FetchFrom::Uri => {
            let dst = destination.ok_or_else(|| FetchError::Save {
                savedir: PathBuf::new(),
                file: filename.into(),
                reason: "a savedir is needed to fetch from a URL".into(),
            })?;
            // HF_HUB_OFFLINE is about the hub: SpeechBrain fetches plain URLs regardless.
            if !opts.allow_network {
                return Err(FetchError::Offline {
                    repo: source.into(),
                    file: filename.into(),
                });
            }
            let url = format!("{}/{}", source.trim_end_matches('/'), filename);
            download_url(&url, &dst, opts).map_err(|reason| FetchError::Download {
                source_name: url.clone(),
                file: filename.into(),
                reason,
            })?;
            Ok(dst)
        }
        FetchFrom::HuggingFace => {
            let cached = hf_get(source, filename, opts)?;
            place(&cached, destination.as_deref(), strategy, filename)
        }
    }
}

fn hf_repo(source: &str, opts: &FetchOptions) -> Repo {
    match &opts.revision {
        Some(r) => Repo::with_revision(source.into(), RepoType::Model, r.clone()),
        None => Repo::new(source.into(), RepoType::Model),
    }
}

/// The file in the HuggingFace cache, downloading it when allowed.
fn hf_get(source: &str, filename: &str, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    let repo = hf_repo(source, opts);
    let cache = hf_hub::Cache::from_env();
    if let Some(p) = cache.repo(repo.clone()).get(filename) {
        return Ok(p);
    }
    if !opts.allow_network || hub_offline() {
        return Err(FetchError::Offline {
            repo: source.into(),
            file: filename.into(),
        });
    }
    let token = opts
        .token
        .clone()
        .or_else(|| std::env::var("HF_TOKEN").ok())
        .or_else(|| std::env::var("HUGGING_FACE_HUB_TOKEN").ok())
        .or_else(|| cache.token());
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(opts.progress)
        .with_token(token)
        .build()
        .map_err(|e| FetchError::Download {
            source_name: source.into(),
            file: filename.into(),
            reason: e.to_string(),
        })?;
    tracing::info!(
        repo = source,
        file = filename,
        "downloading from the HuggingFace hub"
    );
    api.repo(repo)
        .get(filename)
        .map_err(|e| FetchError::Download {
            source_name: source.into(),
            file: filename.into(),
            reason: e.to_string(),
        })
}

/// Puts `src` at `dst` (copy through a temporary file, or symlink), or returns `src`.
/// Whether `dst`, a copy of the local file `src` in a savedir, is out of date: SpeechBrain
/// symlinks local files, so a model folder written again (a new training run, a re-export)
/// is what it loads next; a copy must follow the same way. A symlink is never stale.
fn stale_copy(src: &Path, dst: &Path) -> bool {
    if dst.is_symlink() {
        return false;
    }
    match (src.metadata(), dst.metadata()) {
        (Ok(s), Ok(d)) => {
            s.len() != d.len()
                || matches!((s.modified(), d.modified()), (Ok(sm), Ok(dm)) if sm > dm)
        }
        _ => false,
    }
}

fn place(
    src: &Path,
    dst: Option<&Path>,
    strategy: LocalStrategy,
    file: &str,
) -> Result<PathBuf, FetchError> {
    let Some(dst) = dst else {
        return Ok(src.to_path_buf());
    };
    let save_err = |reason: String| FetchError::Save {
        savedir: dst.parent().map(Path::to_path_buf).unwrap_or_default(),
        file: file.into(),
        reason,
    };
    if let (Ok(a), Ok(b)) = (src.canonicalize(), dst.canonicalize()) {
        if a == b {
            return Ok(dst.to_path_buf());
        }
    }
    match strategy {
        LocalStrategy::NoLink => Ok(src.to_path_buf()),
        LocalStrategy::Symlink => {
            let target = src.canonicalize().map_err(|e| save_err(e.to_string()))?;
            symlink_atomic(&target, dst).map_err(|e| save_err(e.to_string()))?;
            Ok(dst.to_path_buf())
        }
        LocalStrategy::Copy => {
            let mut input = std::fs::File::open(src).map_err(|e| save_err(e.to_string()))?;
            // The rename replaces whatever is there (an older copy, a symlink) in one step,
            // so a process loading the same savedir meanwhile sees the old file or the new.
            crate::fsutil::write_atomic_with(dst, |f| std::io::copy(&mut input, f).map(drop))
                .map_err(|e| save_err(e.to_string()))?;
            Ok(dst.to_path_buf())
        }
    }
}

/// Downloads `url` to `dst` through a temporary file; a short body is an error.
fn download_url(url: &str, dst: &Path, opts: &FetchOptions) -> Result<(), String> {
    let resp = ureq::get(url).call().map_err(|e| e.to_string())?;
    let expected: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    let bar = crate::progress::bytes_bar(expected, url, opts.progress);
    let mut reader = bar.wrap_read(resp.into_reader());
    crate::fsutil::write_atomic_with(dst, |f| {
        let n = std::io::copy(&mut reader, f)?;
        match expected {
            Some(e) if n != e => Err(std::io::Error::other(format!(
                "connection closed after {n} of {e} bytes"
            ))),
            _ => Ok(()),
        }
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    Ok(())
}

/// Points `dst` at `target` through a symlink made beside it and renamed over `dst`, so two
/// processes linking the same savedir never see it missing (remove-then-link races: one
/// process's link fails with "file exists" or the other's load finds nothing).
fn symlink_atomic(target: &Path, dst: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = crate::fsutil::parent_dir(dst);
        for attempt in 0u32.. {
            let tmp = dir.join(format!(".voxbrain-link-{}-{attempt}", std::process::id()));
            match std::os::unix::fs::symlink(target, &tmp) {
                Ok(()) => {
                    return std::fs::rename(&tmp, dst).inspect_err(|_| {
                        let _ = std::fs::remove_file(&tmp);
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {}
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns by its 100th attempt")
    }
    #[cfg(not(unix))]
    {
        let mut input = std::fs::File::open(target)?;
        crate::fsutil::write_atomic_with(dst, |f| std::io::copy(&mut input, f).map(drop))
    }
}
