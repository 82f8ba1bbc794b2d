//! Fetching from a local directory, a URL and the HuggingFace hub (a fake hub on 127.0.0.1
//! that answers like the hub's `resolve` endpoint, reached through hf-hub via HF_ENDPOINT).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use voxbrain::pretrained::fetching::{fetch, FetchError, FetchOptions, LocalStrategy};

/// Tests here change process-wide environment variables: run them one at a time.
static ENV_LOCK: Mutex<()> = Mutex::new(());

struct FakeHub {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeHub {
    /// Serves `files` under `/<repo>/resolve/<rev>/<name>` and `/plain/<name>`; files whose
    /// name starts with `drop` are cut off halfway through the body.
    fn start(files: HashMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !s.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        r.fetch_add(1, Ordering::SeqCst);
                        let _ = handle(stream, &files);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            requests,
            stop,
        }
    }
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn handle(stream: TcpStream, files: &HashMap<String, Vec<u8>>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range: Option<(usize, Option<usize>)> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let v = v.trim();
            let (a, b) = v.split_once('-').unwrap();
            range = Some((a.parse().unwrap(), b.parse().ok()));
        }
    }
    let name = path.rsplit('/').next().unwrap_or("");
    let mut out = stream;
    let Some(data) = files.get(name) else {
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    };
    let size = data.len();
    let (start, end) = match range {
        Some((a, Some(b))) => (a, b.min(size - 1)),
        Some((a, None)) => (a, size - 1),
        None => (0, size - 1),
    };
    let body = &data[start..=end];
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\
         ETag: \"etag-{name}-{size}\"\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    if name.starts_with("drop") && body.len() > 1 {
        out.write_all(&body[..body.len() / 2])?;
        out.flush()?;
        return Ok(()); // connection closes mid-body
    }
    out.write_all(body)?;
    out.flush()
}

fn files() -> HashMap<String, Vec<u8>> {
    let mut f = HashMap::new();
    f.insert("hyperparams.yaml".to_string(), b"n_mels: 80\n".to_vec());
    f.insert(
        "model.ckpt".to_string(),
        (0..50_000u32).flat_map(|x| x.to_le_bytes()).collect(),
    );
    f.insert("drop.ckpt".to_string(), vec![7u8; 200_000]);
    f
}

fn set_hub_env(endpoint: &str, hf_home: &Path, offline: bool) {
    std::env::set_var("HF_ENDPOINT", endpoint);
    std::env::set_var("HF_HOME", hf_home);
    if offline {
        std::env::set_var("HF_HUB_OFFLINE", "1");
    } else {
        std::env::remove_var("HF_HUB_OFFLINE");
    }
}

fn quiet() -> FetchOptions {
    FetchOptions {
        progress: false,
        ..Default::default()
    }
}

#[test]
fn hub_download_then_cache_and_savedir_hits_make_no_request() {
    let _g = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let hub = FakeHub::start(files());
    let home = tempfile::tempdir().unwrap();
    let save = tempfile::tempdir().unwrap();
    set_hub_env(&hub.endpoint(), home.path(), false);

    let p = fetch(
        "model.ckpt",
        "speechbrain/fake-model",
        Some(save.path()),
        &quiet(),
    )
    .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), files()["model.ckpt"]);
    assert!(!p.is_symlink(), "copied into savedir by default");
    let after_first = hub.requests();
    assert!(
        after_first >= 2,
        "metadata + download requests, got {after_first}"
    );

    // Same savedir: no request at all.
    fetch(
        "model.ckpt",
        "speechbrain/fake-model",
        Some(save.path()),
        &quiet(),
    )
    .unwrap();
    // New savedir, same HF cache: no request either.
    let save2 = tempfile::tempdir().unwrap();
    let p2 = fetch(
        "model.ckpt",
        "speechbrain/fake-model",
        Some(save2.path()),
        &quiet(),
    )
    .unwrap();
    assert_eq!(std::fs::read(&p2).unwrap(), files()["model.ckpt"]);
    assert_eq!(
        hub.requests(),
        after_first,
        "second loads must not touch the network"
    );

    // Offline mode with the file cached works; without it, one clear error.
    set_hub_env(&hub.endpoint(), home.path(), true);
    let save3 = tempfile::tempdir().unwrap();
    fetch(
        "model.ckpt",
        "speechbrain/fake-model",
        Some(save3.path()),
        &quiet(),
    )
    .unwrap();
    let err = fetch(
        "hyperparams.yaml",
        "speechbrain/fake-model",
        Some(save3.path()),
        &quiet(),
    )
    .unwrap_err();
    assert!(matches!(err, FetchError::Offline { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("speechbrain/fake-model") && msg.contains("hyperparams.yaml"),
        "{msg}"
    );
    assert_eq!(hub.requests(), after_first);
    std::env::remove_var("HF_HUB_OFFLINE");
}

#[test]
fn hub_connection_dropped_midway_leaves_no_partial_file() {
    let _g = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let hub = FakeHub::start(files());
    let home = tempfile::tempdir().unwrap();
    let save = tempfile::tempdir().unwrap();
    set_hub_env(&hub.endpoint(), home.path(), false);
    let err = fetch(
        "drop.ckpt",
        "speechbrain/fake-model",
        Some(save.path()),
        &quiet(),
    )
    .unwrap_err();
    println!("{err}");
    assert!(err.to_string().contains("drop.ckpt"));
    assert!(
        !save.path().join("drop.ckpt").exists(),
        "no partial file in savedir"
    );
    // Nor in the hub cache under its final name: a later fetch must not see a complete file.
    let cached = hf_hub::Cache::new(home.path().join("hub"))
        .repo(hf_hub::Repo::model("speechbrain/fake-model".into()))
        .get("drop.ckpt");
    assert!(
        cached.is_none(),
        "partial download visible in the cache: {cached:?}"
    );
    // Missing file on the hub: the error names repo and file.
    let err = fetch(
        "absent.ckpt",
        "speechbrain/fake-model",
        Some(save.path()),
        &quiet(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("absent.ckpt") && msg.contains("speechbrain/fake-model"),
        "{msg}"
    );
}

#[test]
fn url_source_downloads_atomically() {
    let _g = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let hub = FakeHub::start(files());
    let save = tempfile::tempdir().unwrap();
    std::env::remove_var("HF_HUB_OFFLINE");
    let src = format!("{}/plain", hub.endpoint());
    let p = fetch("hyperparams.yaml", &src, Some(save.path()), &quiet()).unwrap();
    assert_eq!(std::fs::read_to_string(p).unwrap(), "n_mels: 80\n");
    let err = fetch("drop.ckpt", &src, Some(save.path()), &quiet()).unwrap_err();
    println!("{err}");
    assert!(!save.path().join("drop.ckpt").exists());
    let leftovers = std::fs::read_dir(save.path()).unwrap().count();
    assert_eq!(leftovers, 1, "only hyperparams.yaml, no temporary files");
}

#[test]
fn local_source_copies_or_links_and_names_missing_files() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.ckpt"), b"abc").unwrap();
    let save = tempfile::tempdir().unwrap();
    let s = src.path().to_str().unwrap();
    let p = fetch("a.ckpt", s, Some(save.path()), &quiet()).unwrap();
    assert!(!p.is_symlink());
    assert_eq!(std::fs::read(&p).unwrap(), b"abc");
    let save2 = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        strategy: LocalStrategy::Symlink,
        ..quiet()
    };
    let p = fetch("a.ckpt", s, Some(save2.path()), &opts).unwrap();
    assert!(p.is_symlink());
    let err = fetch("missing.ckpt", s, Some(save.path()), &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.ckpt") && err.contains(s), "{err}");
    // Without a savedir the source path itself is returned.
    assert_eq!(
        fetch("a.ckpt", s, None, &quiet()).unwrap(),
        src.path().join("a.ckpt")
    );
    let mut f = std::fs::File::open(src.path().join("a.ckpt")).unwrap();
    let mut buf = String::new();
    f.read_to_string(&mut buf).unwrap();
    assert_eq!(buf, "abc");
}

/// A local model folder written again (a new training run, a re-export) is what the next load
/// gets, as through SpeechBrain's symlinks; an unchanged one is not copied again.
#[test]
fn local_source_rewritten_replaces_the_savedir_copy() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("a.ckpt");
    std::fs::write(&file, b"old").unwrap();
    let save = tempfile::tempdir().unwrap();
    let s = src.path().to_str().unwrap();
    let p = fetch("a.ckpt", s, Some(save.path()), &quiet()).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    // Unchanged: the copy stays (its modification time is kept).
    let before = p.metadata().unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fetch("a.ckpt", s, Some(save.path()), &quiet()).unwrap();
    assert_eq!(p.metadata().unwrap().modified().unwrap(), before);
    // Same size, newer content: copied again.
    std::fs::write(&file, b"new").unwrap();
    let p = fetch("a.ckpt", s, Some(save.path()), &quiet()).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    // Another size, even with an older time stamp: copied again.
    std::fs::write(&file, b"newer").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    let p = fetch("a.ckpt", s, Some(save.path()), &quiet()).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"newer");
}
