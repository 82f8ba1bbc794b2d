//! `librispeech-to-json`, `synth` and `mix` end to end through the CLI.
//! `synth` needs espeak-ng: without it that test prints a message and skips.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel)
}

fn run(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voxbrain-data"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

#[test]
fn librispeech_to_json_writes_every_format_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = fixture("dataio/corpus");
    for (name, extra) in [
        ("data.json", None),
        ("data.csv", Some("csv")),
        ("data.parquet", None),
    ] {
        let out = dir.path().join(name);
        let mut args = vec![
            os("librispeech-to-json"),
            corpus.as_os_str(),
            os("--out"),
            out.as_os_str(),
        ];
        if let Some(f) = extra {
            args.extend([os("--format"), os(f)]);
        }
        let (ok, stdout, stderr) = run(&args);
        assert!(ok, "{stderr}");
        assert!(
            stdout.contains("utterances")
                && stdout.contains("speakers")
                && stdout.contains("hours"),
            "{stdout}"
        );
        assert!(out.is_file());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("data.json")).unwrap())
            .unwrap();
    let (id, first) = json.as_object().unwrap().iter().next().unwrap();
    assert!(first["file_path"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{id}.flac")));
    assert!(first["spkID"].as_str().unwrap().starts_with("speaker_"));
    assert!(first["length"].as_f64().unwrap() > 0.5);
    let csv = std::fs::read_to_string(dir.path().join("data.csv")).unwrap();
    assert!(csv.starts_with("ID,file_path,words,spkID,length"), "{csv}");

    // A bad corpus: error, exit code 1, no output file left behind.
    let bad = dir.path().join("bad/1/2");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(
        fixture("foundation/formats/pcm_16.flac"),
        bad.join("1-2-0000.flac"),
    )
    .unwrap();
    std::fs::write(bad.join("1-2.trans.txt"), "HELLO WORLD\n").unwrap();
    let out = dir.path().join("bad.json");
    let (ok, _, stderr) = run(&[
        os("librispeech-to-json"),
        dir.path().join("bad").as_os_str(),
        os("--out"),
        out.as_os_str(),
    ]);
    assert!(
        !ok && stderr.contains("1-2.trans.txt") && stderr.contains("line 1"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn synth_makes_a_librispeech_shaped_corpus() {
    let has_espeak = Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_espeak {
        println!("SKIPPED: espeak-ng is not installed (apt-get install espeak-ng); the committed corpus covers the rest");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("corpus");
    let (ok, stdout, stderr) = run(&[
        os("synth"),
        os("--out"),
        out.as_os_str(),
        os("--speakers"),
        os("2"),
        os("--utterances"),
        os("2"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("4 utterances by 2 speakers"), "{stdout}");
    let trans = std::fs::read_to_string(out.join("100/1000/100-1000.trans.txt")).unwrap();
    assert!(
        trans.starts_with("100-1000-0000 THE BIRCH CANOE"),
        "{trans}"
    );
    let info = voxbrain::audio::audio_info(out.join("101/1010/101-1010-0001.flac")).unwrap();
    assert_eq!(info.sample_rate, 16000);
    assert!(info.duration().unwrap() > 0.5);
    // The corpus parses like LibriSpeech.
    let (ok, stdout, stderr) = run(&[
        os("librispeech-to-json"),
        out.as_os_str(),
        os("--out"),
        dir.path().join("d.json").as_os_str(),
    ]);
    assert!(
        ok && stdout.contains("4 utterances, 2 speakers"),
        "{stdout}{stderr}"
    );
}

#[test]
fn mix_makes_two_speaker_mixtures_with_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mix");
    let (ok, stdout, stderr) = run(&[
        os("mix"),
        fixture("dataio/corpus").as_os_str(),
        os("--out"),
        out.as_os_str(),
        os("--count"),
        os("3"),
        os("--sample-rate"),
        os("8000"),
        os("--snr"),
        os("-2.5"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("3 mixtures at 8000 Hz"), "{stdout}");
    let repl = [("data_root".to_string(), out.to_string_lossy().into_owned())]
        .into_iter()
        .collect();
    let mut ds =
        voxbrain::dataio::DynamicItemDataset::from_json(out.join("mixtures.json"), &repl).unwrap();
    assert_eq!(ds.len(), 3);
    ds.set_output_keys(&["mix_wav", "s1_wav", "s2_wav", "snr", "spk1", "spk2"]);
    for i in 0..3 {
        let p = ds.get(i).unwrap();
        assert_ne!(p.str("spk1").unwrap(), p.str("spk2").unwrap());
        assert_eq!(p.f64("snr").unwrap(), -2.5);
        let read = |k: &str| {
            let (t, sr) = voxbrain::audio::read_audio(p.str(k).unwrap()).unwrap();
            assert_eq!(sr, 8000);
            t.to_vec1::<f32>().unwrap()
        };
        let (m, a, b) = (read("mix_wav"), read("s1_wav"), read("s2_wav"));
        assert!(m.len() == a.len() && a.len() == b.len());
        // mix = s1 + s2 (up to 16-bit rounding) and s1 is 2.5 dB below s2... i.e. SNR -2.5 dB.
        let err = m
            .iter()
            .zip(a.iter().zip(&b))
            .map(|(m, (x, y))| (m - x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "{err}");
        let pw = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>();
        let snr = 10.0 * (pw(&a) / pw(&b)).log10();
        assert!((snr + 2.5).abs() < 0.1, "snr {snr}");
    }
    // The CSV twin resolves through SpeechBrain's `$data_root` to the same files.
    let mut csv =
        voxbrain::dataio::DynamicItemDataset::from_csv(out.join("mixtures.csv"), &repl).unwrap();
    assert_eq!(csv.len(), 3);
    csv.set_output_keys(&["id", "mix_wav"]);
    ds.set_output_keys(&["id", "mix_wav"]);
    for i in 0..3 {
        let (c, j) = (csv.get(i).unwrap(), ds.get(i).unwrap());
        assert_eq!(c.str("mix_wav").unwrap(), j.str("mix_wav").unwrap());
        assert!(Path::new(c.str("mix_wav").unwrap()).is_file());
    }
}
