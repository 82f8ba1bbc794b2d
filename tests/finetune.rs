//! `voxbrain finetune` end to end on the small seeded ASR model (tests/fixtures/asr/model) and
//! the committed mini corpus (tests/fixtures/dataio/corpus, 8 utterances, LibriSpeech layout):
//! it learns (loss halves, the exported model transcribes its training data better, and
//! SpeechBrain's layout is written), it survives a SIGKILL mid-epoch (with dropout on, resumed
//! parameters equal an uninterrupted run's), and bad manifests are errors naming the utterance.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{fixture, run_ok, voxbrain};
use voxbrain::metrics::{count_ops, op_table};

fn manifest(dir: &Path) -> PathBuf {
    let out = dir.join("train.json");
    voxbrain::dataio::librispeech::parse_to_json(
        fixture("dataio/corpus"),
        &out,
        &Default::default(),
    )
    .unwrap();
    out
}

fn finetune(train: &Path, out: &Path, extra: &[&str]) -> Command {
    finetune_with(train, out, "dropout: 0.0", extra)
}

/// `finetune` with other yaml overrides.
fn finetune_with(train: &Path, out: &Path, overrides: &str, extra: &[&str]) -> Command {
    let mut cmd = voxbrain();
    cmd.arg("finetune")
        .args(["--source", fixture("asr/model").to_str().unwrap()])
        .args([
            "--savedir",
            out.with_extension("pretrained").to_str().unwrap(),
        ])
        .args(["--overrides", overrides])
        .args(["--train", train.to_str().unwrap()])
        .args(["--output-dir", out.to_str().unwrap()])
        .args(["--no-progress"])
        .args(extra);
    cmd
}

fn steps(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("steps.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Complete lines of `steps.jsonl` while a run may still be writing it (an unterminated last
/// line is one being written).
fn complete_steps(out: &Path) -> usize {
    std::fs::read_to_string(out.join("steps.jsonl"))
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .count()
}

/// WER (%) of greedy transcripts of the corpus by the model in `source`.
fn corpus_wer(source: &Path, savedir: &Path, train: &Path) -> f64 {
    let m: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(train).unwrap()).unwrap();
    let mut cmd = voxbrain();
    cmd.arg("transcribe")
        .args([
            "--source",
            source.to_str().unwrap(),
            "--savedir",
            savedir.to_str().unwrap(),
        ])
        .args(["--decoding", "greedy"]);
    let refs: Vec<String> = m
        .values()
        .map(|v| v["words"].as_str().unwrap().to_string())
        .collect();
    for v in m.values() {
        cmd.arg(v["file_path"].as_str().unwrap());
    }
    let out = run_ok(&mut cmd);
    let (mut errors, mut words) = (0usize, 0usize);
    for (line, r) in String::from_utf8_lossy(&out.stdout).lines().zip(&refs) {
        let hyp: serde_json::Value = serde_json::from_str(line).unwrap();
        let h: Vec<&str> = hyp["text"].as_str().unwrap().split_whitespace().collect();
        let r: Vec<&str> = r.split_whitespace().collect();
        errors += count_ops(&op_table(&r, &h)).total();
        words += r.len();
    }
    100.0 * errors as f64 / words as f64
}

#[test]
fn finetune_learns_and_exports_speechbrain_layout() {
    let dir = tempfile::tempdir().unwrap();
    let train = manifest(dir.path());
    let out = dir.path().join("run");
    let res = run_ok(&mut finetune(
        &train,
        &out,
        &[
            "--epochs",
            "25",
            "--batch-size",
            "4",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
            "--valid",
            train.to_str().unwrap(),
        ],
    ));
    let s = steps(&out);
    assert_eq!(s.len(), 50, "8 utterances, batch 4, 25 epochs: 50 steps");
    let loss = |r: &serde_json::Value| r["loss"].as_f64().unwrap();
    let first = loss(&s[0]);
    let last = s[s.len() - 2..].iter().map(loss).sum::<f64>() / 2.0;
    println!("training loss {first:.3} -> {last:.3}");
    assert!(last < first / 2.0, "loss {first} -> {last}: not halved");
    for r in &s {
        for k in ["epoch", "step", "loss", "grad_norm", "lr"] {
            assert!(r[k].is_number(), "steps.jsonl line without {k}: {r}");
        }
    }
    let log = std::fs::read_to_string(out.join("train_log.txt")).unwrap();
    assert_eq!(log.lines().count(), 25, "{log}");
    assert!(
        log.lines()
            .next()
            .unwrap()
            .starts_with("epoch: 1, lr: 1.00e-02 - train loss: "),
        "{log}"
    );
    assert!(
        log.contains("valid loss: ") && log.contains("valid WER: "),
        "{log}"
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("\"valid_wer\""), "{stdout}");
    for f in [
        "hyperparams.yaml",
        "asr.ckpt",
        "normalizer.ckpt",
        "lm.ckpt",
        "tokenizer.ckpt",
    ] {
        assert!(out.join("model").join(f).is_file(), "model/{f} missing");
    }
    assert!(std::fs::metadata(out.join("loss.png")).unwrap().len() > 1000);
    assert_eq!(
        std::fs::read_dir(out.join("save")).unwrap().count(),
        1,
        "one end-of-epoch checkpoint kept"
    );
    let before = corpus_wer(&fixture("asr/model"), &dir.path().join("p0"), &train);
    let after = corpus_wer(&out.join("model"), &dir.path().join("p1"), &train);
    println!("greedy WER on the training utterances: {before:.1}% before, {after:.1}% after");
    assert!(after < before, "WER {before} -> {after}");
}

fn ckpt_tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    voxbrain::pretrained::ckpt::read_ckpt(path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                t.flatten_all()
                    .unwrap()
                    .to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn killed_run_resumes_to_the_same_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let train = manifest(dir.path());
    let args = [
        "--epochs",
        "3",
        "--batch-size",
        "2",
        "--optimizer",
        "adam",
        "--lr",
        "0.005",
        "--ckpt-interval-steps",
        "1",
    ];
    // With dropout: its masks are keyed by epoch and step, so the resumed run draws the ones
    // the uninterrupted run drew.
    let run = |out: &Path| finetune_with(&train, out, "dropout: 0.3", &args);
    let full = dir.path().join("full");
    let full_out = run_ok(&mut run(&full));
    assert_eq!(steps(&full).len(), 12);

    let resumed = dir.path().join("resumed");
    let mut child = run(&resumed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it in the second epoch (after 6 of 12 steps, so that the checkpoint after step 5,
    // inside the epoch, is complete), whatever it is doing then.
    let t0 = std::time::Instant::now();
    while complete_steps(&resumed) < 6 {
        assert!(t0.elapsed().as_secs() < 300, "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!resumed.join("model").exists());
    let out = run_ok(&mut run(&resumed));
    // The epoch it was killed in reports the same train loss as the uninterrupted run's (the
    // running mean is restored with the checkpoint).
    let epoch_losses = |o: &std::process::Output| -> Vec<(u64, f64)> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| Some((v["epoch"].as_u64()?, v["train_loss"].as_f64()?)))
            .collect()
    };
    let (want, got) = (epoch_losses(&full_out), epoch_losses(&out));
    println!("epoch train losses: uninterrupted {want:?}, resumed {got:?}");
    assert!(got.iter().any(|(e, _)| *e == 2), "{got:?}");
    for (e, loss) in &got {
        let (_, w) = want.iter().find(|(we, _)| we == e).unwrap();
        assert!(
            (loss - w).abs() <= 1e-5 * w.abs().max(1.0),
            "epoch {e}: train loss {loss} after the resume, {w} uninterrupted"
        );
    }
    let s = steps(&resumed);
    let ids: Vec<u64> = s.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        (1..=12).collect::<Vec<_>>(),
        "one line per step after the resume"
    );
    for f in ["asr.ckpt", "normalizer.ckpt"] {
        let (a, b) = (
            ckpt_tensors(&full.join("model").join(f)),
            ckpt_tensors(&resumed.join("model").join(f)),
        );
        assert_eq!(a.len(), b.len());
        let mut worst = 0f32;
        for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            for (x, y) in va.iter().zip(vb) {
                worst = worst.max((x - y).abs());
            }
        }
        println!("{f}: max difference resumed vs uninterrupted {worst:e}");
        assert!(worst <= 1e-6, "{f}: resumed run differs by {worst}");
    }
}

#[test]
fn bad_manifests_name_the_utterance() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("bad.json");
    std::fs::write(
        &m,
        r#"{"utt_missing": {"file_path": "/nonexistent/a.wav", "words": "HELLO", "spkID": "s", "length": 1.0}}"#,
    )
    .unwrap();
    let out = finetune(
        &m,
        &dir.path().join("o"),
        &["--batch-size", "1", "--epochs", "1"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("utt_missing"), "{err}");

    std::fs::write(
        &m,
        r#"{"u1": {"file_path": "x.wav", "spkID": "s", "length": 1.0}}"#,
    )
    .unwrap();
    let out = finetune(&m, &dir.path().join("o2"), &["--batch-size", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("words"), "{err}");
}
