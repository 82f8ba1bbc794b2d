//! ECAPA-TDNN speaker recognition: parity with SpeechBrain on an SB-layout model directory
//! (official yaml shape, small channels, seeded weights, calibrated BatchNorm statistics).

mod common;

use candle_core::{Device, Tensor};
use common::{cosine, fixture, npy};
use voxbrain::inference::{EncoderClassifier, PaddingMode, SpeakerRecognition};
use voxbrain::pretrained::FromHparamsOptions;

fn model() -> SpeakerRecognition {
    // The yaml's pretrainer paths name a hub repo; the local source must win, offline.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let save = tempfile::tempdir().unwrap().keep();
    let opts = FromHparamsOptions {
        savedir: Some(save),
        ..Default::default()
    };
    SpeakerRecognition::from_hparams(fixture("speaker/model_small").to_str().unwrap(), &opts)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The bounds: cosine >= 0.99999 and max abs error <= 1e-4 of the largest value.
fn assert_embedding(what: &str, got: &[f32], want: &[f32]) {
    let cos = cosine(got, want);
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let (max, _) = common::diff(got, want);
    println!(
        "{what}: cosine {cos:.8}, max abs err {max:.2e} ({:.2e} of largest)",
        max / scale
    );
    assert!(cos >= 0.99999, "{what}: cosine {cos}");
    assert!(
        max <= 1e-4 * scale,
        "{what}: max abs err {max} vs largest {scale}"
    );
}

fn wav(i: usize) -> Tensor {
    let w = npy(&format!("foundation/speech_{i}_16k.npy")).data;
    let n = w.len();
    Tensor::from_vec(w, n, &Device::Cpu).unwrap()
}

#[test]
fn single_embeddings_match_speechbrain() {
    let m = model();
    for i in 0..3 {
        let e = m.encode_batch(&wav(i), None, false).unwrap();
        assert_eq!(e.dims(), &[1, 1, 24]);
        assert_embedding(
            &format!("emb {i}"),
            &vec(&e),
            &npy(&format!("speaker/emb_single_{i}.npy")).data,
        );
        let e = m.encode_batch(&wav(i), None, true).unwrap();
        assert_embedding(
            &format!("emb norm {i}"),
            &vec(&e),
            &npy(&format!("speaker/emb_norm_{i}.npy")).data,
        );
    }
}

fn padded_batch() -> (Tensor, Tensor) {
    let ws: Vec<Vec<f32>> = (0..3)
        .map(|i| npy(&format!("foundation/speech_{i}_16k.npy")).data)
        .collect();
    let n = ws.iter().map(|w| w.len()).max().unwrap();
    let mut flat = vec![0.0f32; 3 * n];
    for (i, w) in ws.iter().enumerate() {
        flat[i * n..i * n + w.len()].copy_from_slice(w);
    }
    let lens = npy("speaker/batch_lens.npy").data;
    (
        Tensor::from_vec(flat, (3, n), &Device::Cpu).unwrap(),
        Tensor::from_vec(lens, 3, &Device::Cpu).unwrap(),
    )
}

#[test]
fn padded_batches_match_speechbrain_in_its_mode_and_singles_in_ours() {
    let mut m = model();
    let (batch, lens) = padded_batch();
    // SpeechBrain's own padded computation.
    m.padding = PaddingMode::SpeechBrain;
    let e = m.encode_batch(&batch, Some(&lens), false).unwrap();
    let want = npy("speaker/emb_batch.npy").data;
    for i in 0..3 {
        assert_embedding(
            &format!("sb-mode batch item {i}"),
            &vec(&e.get(i).unwrap()),
            &want[i * 24..(i + 1) * 24],
        );
    }
    // voxbrain's default: each item equals its single-utterance embedding.
    m.padding = PaddingMode::Independent;
    let e = m.encode_batch(&batch, Some(&lens), false).unwrap();
    let mut sb_batch_vs_single = 0.0f32;
    for i in 0..3 {
        let single = npy(&format!("speaker/emb_single_{i}.npy")).data;
        assert_embedding(
            &format!("independent batch item {i}"),
            &vec(&e.get(i).unwrap()),
            &single,
        );
        sb_batch_vs_single =
            sb_batch_vs_single.max(common::diff(&want[i * 24..(i + 1) * 24], &single).0);
    }
    println!("SpeechBrain itself: batched vs single max abs difference {sb_batch_vs_single:.3e}");
}

#[test]
fn embedding_does_not_depend_on_the_batch() {
    let m = model();
    let short = npy("foundation/speech_0_16k.npy").data;
    let long: Vec<f32> = (0..3)
        .flat_map(|i| npy(&format!("foundation/speech_{i}_16k.npy")).data)
        .collect();
    assert!(long.len() >= 3 * short.len() - 1000);
    let n = long.len();
    let mut flat = vec![0.0f32; 2 * n];
    flat[..short.len()].copy_from_slice(&short);
    flat[n..].copy_from_slice(&long);
    let batch = Tensor::from_vec(flat, (2, n), &Device::Cpu).unwrap();
    let lens = Tensor::from_vec(vec![short.len() as f32 / n as f32, 1.0], 2, &Device::Cpu).unwrap();
    let together = m.encode_batch(&batch, Some(&lens), false).unwrap();
    let alone = m
        .encode_batch(
            &Tensor::from_vec(short.clone(), short.len(), &Device::Cpu).unwrap(),
            None,
            false,
        )
        .unwrap();
    let (max, _) = common::diff(&vec(&together.get(0).unwrap()), &vec(&alone));
    println!("alone vs in a batch with a 3x longer clip: max abs diff {max:.2e}");
    assert!(max <= 1e-4, "{max}");
}

#[test]
fn verify_files_and_classify_match_speechbrain() {
    let m = model();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("speaker/reference.json")).unwrap())
            .unwrap();
    let f = |n: &str| fixture(&format!("foundation/{n}"));
    let pairs = [
        ("0-1", f("speech_0.wav"), f("speech_1.wav")),
        ("0-2", f("speech_0.wav"), f("speech_2.wav")),
        ("1-2", f("speech_1.wav"), f("speech_2.wav")),
        (
            "stereo8k-0",
            fixture("speaker/stereo_8k.wav"),
            f("speech_0.wav"),
        ),
    ];
    for (k, a, b) in pairs {
        let (score, pred) = m.verify_files(&a, &b).unwrap();
        let want = &reference["verify"][k];
        let ws = want["score"].as_f64().unwrap() as f32;
        println!("verify {k}: voxbrain {score:.6} SpeechBrain {ws:.6}");
        assert!((score - ws).abs() <= 1e-4, "{k}: {score} vs {ws}");
        assert_eq!(pred, want["prediction"].as_bool().unwrap(), "{k}");
    }
    // The 8 kHz stereo file is resampled and downmixed like SpeechBrain's load_audio.
    let e = m
        .encode_batch(
            &m.load_audio(fixture("speaker/stereo_8k.wav")).unwrap(),
            None,
            false,
        )
        .unwrap();
    assert_embedding(
        "stereo 8k",
        &vec(&e),
        &npy("speaker/emb_stereo_8k.npy").data,
    );

    let clf: &EncoderClassifier = &m;
    for i in 0..3 {
        let (probs, _score, index, labels) = clf
            .classify_batch(&wav(i).unsqueeze(0).unwrap(), None)
            .unwrap();
        let want = &reference["singles"][i];
        assert_eq!(index[0] as u64, want["index"].as_u64().unwrap());
        assert_eq!(labels[0], want["label"].as_str().unwrap());
        common::assert_close(
            "class probs",
            &vec(&probs),
            &npy(&format!("speaker/cls_prob_{i}.npy")).data,
            1e-4,
            1e-5,
        );
    }
}

#[test]
fn bad_inputs_are_clear_errors_or_sb_behaviour() {
    let m = model();
    // 0.1 s works (as in SpeechBrain); 20 ms is too short for ECAPA's reflect padding.
    let tenth = Tensor::from_vec(
        wav(0).to_vec1::<f32>().unwrap()[8000..9600].to_vec(),
        1600,
        &Device::Cpu,
    )
    .unwrap();
    let e = m.encode_batch(&tenth, None, false).unwrap();
    assert!(vec(&e).iter().all(|x| x.is_finite()));
    let tiny = Tensor::zeros(320, candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = m.encode_batch(&tiny, None, false).unwrap_err().to_string();
    assert!(err.contains("too short"), "{err}");
    // Silence: finite embedding, no NaN.
    let silence = Tensor::zeros(16000, candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(vec(&m.encode_batch(&silence, None, false).unwrap())
        .iter()
        .all(|x| x.is_finite()));
    // A checkpoint from a different model: every mismatch named.
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "hyperparams.yaml",
        "classifier.ckpt",
        "label_encoder.txt",
        "mean_var_norm_emb.ckpt",
    ] {
        std::fs::copy(
            fixture(&format!("speaker/model_small/{f}")),
            dir.path().join(f),
        )
        .unwrap();
    }
    std::fs::copy(
        fixture("pretrained/sequential.ckpt"),
        dir.path().join("embedding_model.ckpt"),
    )
    .unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(dir.path().join("save")),
        ..Default::default()
    };
    let err = SpeakerRecognition::from_hparams(dir.path().to_str().unwrap(), &opts)
        .err()
        .unwrap()
        .to_string();
    println!("{}", &err[..err.len().min(400)]);
    assert!(
        err.contains("embedding_model.ckpt")
            && err.contains("missing keys")
            && err.contains("unexpected keys"),
        "{err}"
    );
}

#[test]
fn embed_and_verify_commands() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("speaker/model_small");
    let out = dir.path().join("emb.npy");
    common::run_ok(
        common::voxbrain()
            .args(["embed", "--source", src.to_str().unwrap(), "--savedir"])
            .arg(dir.path().join("save"))
            .arg(fixture("foundation/speech_0.wav"))
            .arg(fixture("foundation/speech_1.wav"))
            .arg("--out")
            .arg(&out),
    );
    let a = voxbrain::npy::read_npy(&out).unwrap();
    assert_eq!(a.shape, vec![2, 24]);
    let o = common::run_ok(
        common::voxbrain()
            .args(["verify", "--source", src.to_str().unwrap(), "--savedir"])
            .arg(dir.path().join("save"))
            .arg(fixture("foundation/speech_0.wav"))
            .arg(fixture("foundation/speech_2.wav")),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("speaker/reference.json")).unwrap())
            .unwrap();
    let want = reference["verify"]["0-2"]["score"].as_f64().unwrap();
    assert!((v["score"].as_f64().unwrap() - want).abs() < 1e-4, "{v}");
    assert_eq!(v["prediction"], reference["verify"]["0-2"]["prediction"]);
}
