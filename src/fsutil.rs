//! Atomic file writing: every file voxbrain writes goes to a temporary file beside its final
//! path and is renamed into place, so a crash or a full disk never leaves a partial file.

use std::path::{Path, PathBuf};

/// The directory a file will be written in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file in `path`'s directory (hidden, ending in `suffix`), readable by others
/// once persisted (tempfile creates files with mode 0600, which would survive the rename).
pub fn temp_beside(path: &Path, suffix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix(".voxbrain-")
        .suffix(suffix)
        .tempfile_in(parent_dir(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(tmp)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("a.txt");
/// voxbrain::fsutil::write_atomic(&p, b"hello").unwrap();
/// assert_eq!(std::fs::read(&p).unwrap(), b"hello");
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// Writes `path` atomically through `write`, which fills a temporary file beside it; the
/// file is synced and renamed into place only when `write` succeeds. On any error the
/// previous file is untouched and the temporary file is removed. Every file voxbrain writes
/// goes through this or [`write_atomic_via_path`].
///
/// ```
/// use std::io::Write;
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("a.txt");
/// voxbrain::fsutil::write_atomic_with(&p, |f| writeln!(f, "one")).unwrap();
/// let failed = voxbrain::fsutil::write_atomic_with(&p, |f| {
///     writeln!(f, "half")?;
///     Err(std::io::Error::other("disk full"))
/// });
/// assert!(failed.is_err());
/// assert_eq!(std::fs::read_to_string(&p).unwrap(), "one\n");
/// ```
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut tmp = temp_beside(path, ".part")?;
    write(tmp.as_file_mut())?;
    commit(tmp, path)
}

/// As [`write_atomic_with`], for libraries that write to a path themselves (plotters,
/// safetensors): `write` gets the temporary file's path, which ends in `suffix` (plotters
/// picks the image format from it).
pub fn write_atomic_via_path(
    path: &Path,
    suffix: &str,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_beside(path, suffix)?;
    write(tmp.path())?;
    commit(tmp, path)
}

fn commit(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A temporary folder beside `path` to build a whole folder in before [`publish_dir`].
pub fn temp_dir_beside(path: &Path) -> std::io::Result<tempfile::TempDir> {
    let parent = parent_dir(path);
    std::fs::create_dir_all(&parent)?;
    tempfile::Builder::new()
        .prefix(".voxbrain-dir-")
        .tempdir_in(parent)
}

/// Moves a folder built in [`temp_dir_beside`] to `path`. An existing `path` is first moved
/// aside and removed only once the new folder is in place, so at every instant `path` is
/// either the old folder or the new one, whole.
///
/// ```
/// let root = tempfile::tempdir().unwrap();
/// let dst = root.path().join("model");
/// let tmp = voxbrain::fsutil::temp_dir_beside(&dst).unwrap();
/// std::fs::write(tmp.path().join("a.ckpt"), b"x").unwrap();
/// voxbrain::fsutil::publish_dir(tmp, &dst).unwrap();
/// assert!(dst.join("a.ckpt").exists());
/// ```
pub fn publish_dir(tmp: tempfile::TempDir, path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let old = if path.exists() {
        let aside = tempfile::Builder::new()
            .prefix(".voxbrain-old-")
            .tempdir_in(parent_dir(path))?
            .keep();
        let aside = aside.join("old");
        std::fs::rename(path, &aside)?;
        Some(aside)
    } else {
        None
    };
    let built = tmp.keep();
    if let Err(e) = std::fs::rename(&built, path) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, path);
        }
        let _ = std::fs::remove_dir_all(&built);
        return Err(e);
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(parent_dir(&old));
    }
    Ok(())
}

/// An exclusive lock on a folder, held while the value lives (an OS file lock on
/// `<dir>/.voxbrain.lock`, released by the OS when the process exits, even when killed).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Locks `dir` for `what` (e.g. "a fine-tuning run"), or fails at once with a message
    /// that names the folder when another process holds it.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let held = voxbrain::fsutil::DirLock::acquire(dir.path(), "a fine-tuning run").unwrap();
    /// # drop(held);
    /// ```
    pub fn acquire(dir: &Path, what: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(".voxbrain.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another process ({what}; lock {}): wait for it to \
                     finish or choose another folder",
                    dir.display(),
                    path.display()
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
