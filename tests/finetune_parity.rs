//! The tutorial's `EncDecFineTune` step against SpeechBrain 1.1.2 (tests/fixtures/finetune,
//! written by data-tools/reference/fixtures_finetune.py from the small seeded ASR model in
//! tests/fixtures/asr/model, dropout 0.0): the eval loss, the training loss (label smoothing
//! 0.1), every parameter's gradient, the total gradient norm, the parameters after one clipped
//! SGD step, the normalizer's statistics update, and the losses after the step.

mod common;

use std::path::Path;

use common::fixture;
use voxbrain::brain::asr_finetune::{asr_dataset, EncDecFineTune};
use voxbrain::brain::{Brain, BrainOptions, OptClass, Sgd, Stage};
use voxbrain::dataio::{DataLoader, DataLoaderOptions, PaddedBatch};
use voxbrain::inference::EncoderDecoderASR;
use voxbrain::npy::read_npy;
use voxbrain::pretrained::FromHparamsOptions;

fn expected(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// The fixture's three utterances as a manifest, in SpeechBrain's batch order.
fn batch(asr: &EncoderDecoderASR, dir: &std::path::Path, e: &serde_json::Value) -> PaddedBatch {
    let mut manifest = serde_json::Map::new();
    let words = e["words"].as_array().unwrap();
    for (i, (id, w)) in e["ids"].as_array().unwrap().iter().zip(words).enumerate() {
        let wav = fixture(&format!("asr/utt_{i}.wav"));
        manifest.insert(
            id.as_str().unwrap().to_string(),
            serde_json::json!({"file_path": wav, "words": w, "spkID": "s", "length": i as f64 + 1.0}),
        );
    }
    let path = dir.join("data.json");
    std::fs::write(&path, serde_json::Value::Object(manifest).to_string()).unwrap();
    let ds = asr_dataset(&path, asr, None).unwrap();
    let loader = DataLoader::new(ds, DataLoaderOptions::batch_size(3)).unwrap();
    let b = loader.iter(0).next().unwrap().unwrap();
    assert_eq!(b.ids(), ["utt_0", "utt_1", "utt_2"]);
    b
}

fn brain(model: &Path, dir: &Path, lr: f64) -> EncDecFineTune {
    let asr = EncoderDecoderASR::from_hparams(
        model.to_str().unwrap(),
        &FromHparamsOptions {
            savedir: Some(dir.join("pretrained")),
            overrides: Some("dropout: 0.0".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let opt: OptClass = Box::new(move |p| Box::new(Sgd::new(p, lr)));
    let opts = BrainOptions {
        max_grad_norm: 5.0,
        noprogressbar: true,
        ..Default::default()
    };
    EncDecFineTune::new(asr, Some(opt), opts).unwrap()
}

fn loss_of(b: &mut EncDecFineTune, batch: &PaddedBatch, stage: Stage) -> f64 {
    let out = b.compute_forward(batch, stage).unwrap();
    let loss = b.compute_objectives(out, batch, stage).unwrap();
    loss.to_scalar::<f32>().unwrap() as f64
}

#[test]
fn one_sgd_step_matches_speechbrain() {
    step_parity(
        &fixture("finetune"),
        &fixture("asr/model"),
        1e-3,
        1e-5,
        1e-4,
    );
}

/// The same at the official full size (119 M parameters; ~1 GB of reference files written by
/// `data-tools/reference/full_size_finetune.py OUT`, not committed):
/// `VOXBRAIN_FULL_FINETUNE=OUT cargo test --release --test finetune_parity -- --ignored`.
#[test]
#[ignore]
fn one_sgd_step_matches_speechbrain_full_size() {
    let dir = std::path::PathBuf::from(
        std::env::var("VOXBRAIN_FULL_FINETUNE").expect("set VOXBRAIN_FULL_FINETUNE"),
    );
    // At full size six CNN bias gradients (sums over 8 x 319 x 40 positions that largely
    // cancel) differ by 1.2e-3 to 2.0e-3 relative, every other gradient is within 1e-3; the
    // updated parameters then differ by up to 1.3e-5 (mean 5e-9). That step (lr 0.1, clipped)
    // lifts the eval loss from 24.2 to 40.0, and there the parameter differences move it by
    // 1.3e-4 relative (39.9465 vs SpeechBrain's 39.9518 on an AMD EPYC, the same before and
    // after the training ops of this crate changed), so the last check allows 3e-4.
    step_parity(&dir, &dir.join("model"), 2.5e-3, 5e-5, 3e-4);
}

fn step_parity(fixtures: &Path, model: &Path, grad_tol: f64, param_tol: f32, end_tol: f64) {
    let e = expected(fixtures);
    let npy = |name: &str| read_npy(fixtures.join(name)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut b = brain(model, dir.path(), e["lr"].as_f64().unwrap());
    let batch = batch(&b.asr, dir.path(), &e);
    let (wavs, lens) = batch.padded("signal").unwrap().pair();
    assert_eq!(
        wavs.dims()[1],
        e["signal_shape"][1].as_u64().unwrap() as usize
    );
    let lens: Vec<f32> = lens.to_vec1().unwrap();
    let want_lens: Vec<f64> = serde_json::from_value(e["wav_lens"].clone()).unwrap();
    for (g, w) in lens.iter().zip(&want_lens) {
        assert!(
            (*g as f64 - w).abs() < 1e-6,
            "wav_lens {lens:?} vs {want_lens:?}"
        );
    }

    // Validation stage before training (eval mode: running statistics, no update).
    b.core_mut().modules.train(false);
    b.on_stage_start(Stage::Valid, Some(1)).unwrap();
    let loss_eval = loss_of(&mut b, &batch, Stage::Valid);
    let want = e["loss_eval"].as_f64().unwrap();
    println!("eval loss {loss_eval} (SpeechBrain {want})");
    assert!(
        rel(loss_eval, want) < 1e-4,
        "eval loss {loss_eval} vs {want}"
    );

    // Training step.
    b.core_mut().init_optimizers();
    b.core_mut().modules.train(true);
    b.on_stage_start(Stage::Train, Some(1)).unwrap();
    let out = b.compute_forward(&batch, Stage::Train).unwrap();
    let loss = b.compute_objectives(out, &batch, Stage::Train).unwrap();
    let lv = loss.to_scalar::<f32>().unwrap() as f64;
    let want = e["loss"].as_f64().unwrap();
    println!("train loss {lv} (SpeechBrain {want})");
    assert!(rel(lv, want) < 1e-4, "train loss {lv} vs {want}");
    let (count, mean, _) = b.asr.normalizer.statistics();
    let nf = &e["normalizer_after_first_forward"];
    assert_eq!(count, nf["count"].as_u64().unwrap());
    let mean: Vec<f32> = mean.unwrap().to_vec1().unwrap();
    let want_mean: Vec<f32> = serde_json::from_value(nf["glob_mean"].clone()).unwrap();
    common::assert_close("normalizer mean", &mean, &want_mean, 1e-3, 1e-4);

    b.core_mut().backward(&loss).unwrap();
    let grads = b.core().gradients();
    let want_grads = npy("grads.npy").data;
    let errs = grad_errors(&e, &grads, &want_grads);
    let worst = worst_of(&errs);
    for (k, r) in &errs {
        if *r >= grad_tol.min(1e-3) {
            println!("  {k}: {r:.3e}");
        }
    }
    let bad: Vec<_> = errs.iter().filter(|(_, r)| *r >= grad_tol).collect();
    assert!(
        bad.is_empty(),
        "{} gradients off by more than {grad_tol} (relative): {bad:?}",
        bad.len()
    );
    println!(
        "worst gradient relative error {:.2e} ({})",
        worst.0, worst.1
    );
    assert_eq!(grads.len(), e["params"].as_array().unwrap().len());

    let norm = b.core_mut().optimizers_step().unwrap();
    let want = e["grad_norm_f64"].as_f64().unwrap();
    println!("grad norm {norm} (SpeechBrain {want})");
    assert!(rel(norm, want) < 1e-4);
    let after = npy("params_after_step.npy").data;
    let sd = b.core().modules.state_dict();
    let mut got = vec![0f32; after.len()];
    for p in e["params"].as_array().unwrap() {
        let key = p["key"].as_str().unwrap();
        let off = p["offset"].as_u64().unwrap() as usize;
        let t = &sd.iter().find(|(k, _)| k == key).unwrap().1;
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        got[off..off + v.len()].copy_from_slice(&v);
    }
    common::assert_close("parameters after the step", &got, &after, param_tol, 1e-7);

    let after_step = loss_of(&mut b, &batch, Stage::Train);
    let want = e["loss_after_step"].as_f64().unwrap();
    println!("train loss after the step {after_step} (SpeechBrain {want})");
    assert!(rel(after_step, want) < 1e-4);
    b.core_mut().modules.train(false);
    let end = loss_of(&mut b, &batch, Stage::Valid);
    let want = e["loss_eval_end"].as_f64().unwrap();
    assert!(
        rel(end, want) < end_tol,
        "eval loss at the end {end} vs {want}"
    );
}

/// The joint CTC + attention loss of SpeechBrain's LibriSpeech CRDNN recipe (what
/// `voxbrain train-asr` trains with), in train mode on the same batch: both terms, their
/// weighted sum and every `asr_model` gradient, `ctc_lin`'s included (tests/fixtures/joint_ctc,
/// `make_fixtures.py joint_ctc`).
#[test]
fn joint_ctc_attention_loss_and_gradients_match_speechbrain() {
    let fixtures = fixture("joint_ctc");
    let e = expected(&fixtures);
    let dir = tempfile::tempdir().unwrap();
    let b = brain(&fixture("asr/model"), dir.path(), 0.1);
    let mut b = b
        .with_ctc_weight(e["ctc_weight"].as_f64().unwrap())
        .unwrap();
    b.label_smoothing = e["label_smoothing"].as_f64().unwrap();
    let batch = batch(&b.asr, dir.path(), &e);
    b.core_mut().init_optimizers();
    b.core_mut().modules.train(true);
    b.on_stage_start(Stage::Train, Some(1)).unwrap();
    let out = b.compute_forward(&batch, Stage::Train).unwrap();
    let loss = b.compute_objectives(out, &batch, Stage::Train).unwrap();
    let lv = loss.to_scalar::<f32>().unwrap() as f64;
    let want = e["loss"].as_f64().unwrap();
    println!(
        "joint loss {lv} (SpeechBrain {want}: ctc {}, seq {})",
        e["loss_ctc"], e["loss_seq"]
    );
    assert!(rel(lv, want) < 1e-4, "joint loss {lv} vs {want}");
    b.core_mut().backward(&loss).unwrap();
    let grads = b.core().gradients();
    let want_grads = read_npy(fixtures.join("grads.npy")).unwrap().data;
    let params = e["params"].as_array().unwrap();
    assert!(params.iter().any(|p| p["key"] == "3.w.weight"), "ctc_lin");
    let errs = grad_errors(&e, &grads, &want_grads);
    for (key, r) in &errs {
        assert!(*r < 1e-3, "{key}: gradient off by {r:.2e} (relative)");
    }
    let worst = worst_of(&errs);
    assert_eq!(
        grads.len(),
        params.len(),
        "every asr_model parameter trained"
    );
    println!(
        "worst gradient relative error {:.2e} ({})",
        worst.0, worst.1
    );
}

/// Each parameter's gradient against SpeechBrain's (`grads.npy`, laid out as `expected.json`'s
/// `params` say): `(key, relative L2 error)`. A bias right before a train-mode BatchNorm has a
/// gradient of exactly zero in exact arithmetic (the batch mean cancels it): both sides hold
/// float noise there (~1e-6 of the total norm), so those are checked against a floor instead
/// and left out.
fn grad_errors(
    e: &serde_json::Value,
    grads: &[(String, Option<candle_core::Tensor>)],
    want_grads: &[f32],
) -> Vec<(String, f64)> {
    let floor = 1e-6 * e["grad_norm_f64"].as_f64().unwrap();
    let mut errs = Vec::new();
    for p in e["params"].as_array().unwrap() {
        let key = p["key"].as_str().unwrap();
        let (off, n) = (
            p["offset"].as_u64().unwrap() as usize,
            p["numel"].as_u64().unwrap() as usize,
        );
        let g = grads
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, g)| g.clone())
            .unwrap_or_else(|| panic!("no gradient for {key}"));
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        let w = &want_grads[off..off + n];
        let num: f64 = g.iter().zip(w).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let den: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum();
        let ours: f64 = g.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
        if den.sqrt() < floor {
            assert!(
                ours < floor,
                "{key}: SpeechBrain's gradient is zero, ours {ours:e}"
            );
            continue;
        }
        let r = (num / den).sqrt();
        if std::env::var_os("VOXBRAIN_DEBUG").is_some() {
            println!("  {key}: |g| {ours:.4e} SB {:.4e} rel {r:.2e}", den.sqrt());
        }
        errs.push((key.to_string(), r));
    }
    errs
}

/// The largest error of [`grad_errors`] and its parameter.
fn worst_of(errs: &[(String, f64)]) -> (f64, String) {
    errs.iter().fold((0f64, String::new()), |w, (k, r)| {
        if *r > w.0 {
            (*r, k.clone())
        } else {
            w
        }
    })
}
