//! `voxbrain-data audio-info` reads headers and reports bad files without stopping.

use std::process::Command;

fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

#[test]
fn audio_info_prints_json_lines_and_flags_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.flac");
    std::fs::write(&bad, "not flac").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voxbrain-data"))
        .arg("audio-info")
        .arg(fixture("foundation/speech_0.wav"))
        .arg(&bad)
        .arg(fixture("foundation/formats/stereo_24.wav"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad file makes the command fail");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "both good files are reported: {stdout}");
    assert_eq!(lines[0]["sample_rate"], 22050);
    assert_eq!(lines[1]["channels"], 2);
    assert_eq!(lines[1]["frames"], 8000);
    assert!((lines[1]["seconds"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("broken.flac"), "{stderr}");
}
