//! `voxbrain train-asr` end to end on the small joint CTC-decoding ASR yaml of the fixtures
//! (tests/fixtures/asr_ctc: sizes of tests/fixtures/asr/model, blank 0, bos 1, eos 2; its
//! 48-piece tokenizer) and the committed mini corpus (8 utterances): the LM and the ASR model
//! train from scratch (joint CTC + attention; both losses fall), the LM and CTC decoding weights
//! are tuned on the validation set, the folder is written in SpeechBrain's layout and loads with
//! `from_hparams`, results.json holds the test WER, and a second run resumes instead of
//! starting over.

mod common;

use std::path::{Path, PathBuf};

use common::{fixture, run_ok, voxbrain};

const TRAINING_KEYS: &str = "seed: 3
number_of_epochs: 20
batch_size: 4
lr: 0.01
ctc_weight: 0.5
dropout: 0.0
lm_number_of_epochs: 15
lm_batch_size: 4
lm_lr: 0.02
lm_weight_grid: [0.0, 3.0]
ctc_weight_decode_grid: [0.0, 0.4]";

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

fn losses(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

#[test]
fn asr_and_lm_train_from_scratch_export_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let train = manifest(dir.path());
    let text = dir.path().join("lm.txt");
    std::fs::write(
        &text,
        "the birch canoe slid on the smooth planks\nglue the sheet to the dark blue background\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let run = |overrides: &str| {
        let mut cmd = voxbrain();
        cmd.arg("train-asr")
            .args([
                "--hparams",
                fixture("asr_ctc/hyperparams.yaml").to_str().unwrap(),
            ])
            .args(["--overrides", overrides])
            .args([
                "--tokenizer",
                fixture("asr/model/tokenizer.ckpt").to_str().unwrap(),
            ])
            .args(["--train", train.to_str().unwrap()])
            .args(["--valid", train.to_str().unwrap()])
            .args(["--lm-text", text.to_str().unwrap()])
            .args(["--test", &format!("seen={}", train.display())])
            .args(["--output-dir", out.to_str().unwrap(), "--no-progress"]);
        run_ok(&mut cmd)
    };
    let res = run(TRAINING_KEYS);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("\"wer_seen\""), "{stdout}");

    let asr = losses(&out.join("steps.jsonl"));
    assert_eq!(asr.len(), 40, "8 utterances, batch 4, 20 epochs");
    let (first, last) = (mean(&asr[..2]), mean(&asr[asr.len() - 2..]));
    println!("ASR loss {first:.3} -> {last:.3}");
    assert!(last < 0.6 * first, "ASR loss {first} -> {last}");
    let lm = losses(&out.join("lm_steps.jsonl"));
    assert_eq!(lm.len(), 15, "2 sentences, batch 4, 15 epochs");
    println!("LM loss {:.3} -> {:.3}", lm[0], lm[14]);
    assert!(lm[14] < 0.6 * lm[0], "LM loss {} -> {}", lm[0], lm[14]);

    let model = out.join("model");
    for f in [
        "hyperparams.yaml",
        "asr.ckpt",
        "normalizer.ckpt",
        "lm.ckpt",
        "tokenizer.ckpt",
    ] {
        assert!(model.join(f).is_file(), "model/{f} missing");
    }
    let yaml = std::fs::read_to_string(model.join("hyperparams.yaml")).unwrap();
    assert!(
        yaml.contains("\nlm_lr: 0.02"),
        "overrides written back: {yaml}"
    );
    // The pair of LM and CTC weights tried best on the validation set is the exported yaml's.
    let tuning: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tuning/search.json")).unwrap())
            .unwrap();
    let tried = tuning["tried"].as_array().unwrap();
    assert_eq!(tried.len(), 4, "2 LM x 2 CTC weights: {tuning}");
    let best = tried
        .iter()
        .min_by(|a, b| {
            let (a, b) = (
                a["valid_wer"].as_f64().unwrap(),
                b["valid_wer"].as_f64().unwrap(),
            );
            a.partial_cmp(&b).unwrap()
        })
        .unwrap();
    assert_eq!(&tuning["chosen"], best, "{tuning}");
    for key in ["lm_weight", "ctc_weight_decode"] {
        let chosen = tuning["chosen"][key].as_f64().unwrap();
        assert!(
            yaml.contains(&format!("\n{key}: {chosen}\n")),
            "tuned {key} {chosen} exported: {yaml}"
        );
        assert!(stdout.contains(&format!("\"{key}\"")), "{stdout}");
    }
    for t in tried {
        let (lm, ctc) = (
            t["lm_weight"].as_f64().unwrap(),
            t["ctc_weight_decode"].as_f64().unwrap(),
        );
        assert!(
            out.join(format!("tuning/search_{lm}_{ctc}.json")).is_file(),
            "transcripts of {t}"
        );
    }
    // The exported LM is the trained one, not a fresh draw.
    let shapes = voxbrain::pretrained::ckpt::read_ckpt(model.join("lm.ckpt")).unwrap();
    let trained = voxbrain::pretrained::ckpt::read_ckpt(out.join("lm.ckpt")).unwrap();
    let key = "out.w.weight";
    assert_eq!(
        shapes
            .tensor(key)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        trained
            .tensor(key)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    );
    let asr_model = voxbrain::inference::EncoderDecoderASR::from_hparams(
        model.to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    asr_model.transcribe_file(fixture("asr/utt_0.wav")).unwrap();

    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let seen = &results["sets"]["seen"];
    assert_eq!(seen["utterances"], 8);
    let wer = seen["wer"].as_f64().unwrap();
    println!("WER on the training utterances, beam + LM: {wer:.1}%");
    // 40 steps of a 16-unit model learn little: this checks the evaluation, not the model.
    assert!(wer.is_finite() && seen["words"] == 64, "{seen}");
    assert_eq!(seen["examples"].as_array().unwrap().len(), 8, "{seen}");

    // Run again with two more epochs: it recovers (LM done, ASR from its checkpoint) and
    // runs only the new epochs.
    let more = TRAINING_KEYS.replace("number_of_epochs: 20", "number_of_epochs: 22");
    run(&more);
    assert_eq!(
        losses(&out.join("steps.jsonl")).len(),
        44,
        "2 epochs more, not 22"
    );
    assert_eq!(
        losses(&out.join("lm_steps.jsonl")).len(),
        15,
        "the LM is not retrained"
    );
}

#[test]
fn a_ctc_grid_without_a_ctc_weight_to_tune_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let train = manifest(dir.path());
    let out = voxbrain()
        .arg("train-asr")
        .args([
            "--hparams",
            fixture("asr/model/hyperparams.yaml").to_str().unwrap(),
        ])
        .args(["--overrides", "ctc_weight_decode_grid: [0.0, 0.4]"])
        .args([
            "--tokenizer",
            fixture("asr/model/tokenizer.ckpt").to_str().unwrap(),
        ])
        .args(["--train", train.to_str().unwrap()])
        .args(["--valid", train.to_str().unwrap()])
        .args(["--output-dir", dir.path().join("run").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("hyperparams.yaml") && err.contains("`ctc_weight_decode`"),
        "{err}"
    );
    assert!(!dir.path().join("run/save").exists(), "nothing trained");
}

#[test]
fn a_decoding_setting_that_fails_stops_the_tuning_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let train = manifest(dir.path());
    let run_dir = dir.path().join("run");
    let out = voxbrain()
        .arg("train-asr")
        .args([
            "--hparams",
            fixture("asr_ctc/hyperparams.yaml").to_str().unwrap(),
        ])
        .args([
            "--overrides",
            "number_of_epochs: 1\nlm_number_of_epochs: 1\nctc_weight_decode_grid: [0.0, 1.0]",
        ])
        .args([
            "--tokenizer",
            fixture("asr/model/tokenizer.ckpt").to_str().unwrap(),
        ])
        .args(["--train", train.to_str().unwrap()])
        .args(["--valid", train.to_str().unwrap()])
        .args(["--output-dir", run_dir.to_str().unwrap(), "--no-progress"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    // SpeechBrain refuses CTC-only decoding as a partial scorer; so does the loader.
    assert!(err.contains("ctc weight of 1.0"), "{err}");
    assert!(
        run_dir.join("model/asr.ckpt").is_file(),
        "trained and exported first"
    );
    assert!(
        !run_dir.join("tuning/search.json").exists(),
        "no summary of a failed tuning"
    );
    assert!(!run_dir.join("results.json").exists(), "no test results");
}
