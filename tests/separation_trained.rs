//! voxbrain's bundled separation model (`models/sepformer-voxbrain-synth`, trained by
//! `recipes/separation`): it separates held-out mixtures (voices and sentences the recipe never
//! trained on) as SpeechBrain 1.1.2 separates them with the same folder, and well.
//!
//! Fixtures: `data-tools/reference/make_fixtures.py separation_trained` (SpeechBrain's outputs).

mod common;

use candle_core::{Device, Tensor};
use voxbrain::audio::{load_audio, ChannelMix};
use voxbrain::demo;
use voxbrain::inference::separation::SepformerSeparation;
use voxbrain::metrics::separation::{pit_si_snri, snr};
use voxbrain::pretrained::FromHparamsOptions;

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/separation_trained")
}

fn wav(name: &str) -> Vec<f32> {
    let t = load_audio(fixture_dir().join(name), 8000, ChannelMix::AvgToMono).unwrap();
    t.to_vec1::<f32>().unwrap()
}

/// The model as the tour gets it offline: written out of the binary by `demo`.
fn bundled() -> (SepformerSeparation, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let folder = demo::trained_model(dir.path(), "separation")
        .unwrap()
        .expect("a trained separation model is bundled");
    let opts = FromHparamsOptions {
        savedir: Some(dir.path().join("save")),
        ..Default::default()
    };
    let model = SepformerSeparation::from_hparams(folder.to_str().unwrap(), &opts).unwrap();
    (model, dir)
}

/// One held-out mixture separated: the SNR of the output against SpeechBrain's, and the
/// SI-SNR improvement over the mixture.
fn separate(model: &SepformerSeparation, stem: &str) -> (f64, f64) {
    let mix = wav(&format!("{stem}_mix.wav"));
    let x = Tensor::from_slice(&mix, (1, mix.len()), &Device::Cpu).unwrap();
    let est = model.separate_batch(&x).unwrap().squeeze(0).unwrap(); // [T, 2]
    let want = common::npy(&format!("separation_trained/{stem}_speechbrain.npy"));
    let got = est.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let parity = snr(&got, &want.data);
    let est = est
        .t()
        .unwrap()
        .contiguous()
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let sources = [
        wav(&format!("{stem}_s1.wav")),
        wav(&format!("{stem}_s2.wav")),
    ];
    (parity, pit_si_snri(&est, &sources, &mix).unwrap().mean)
}

#[test]
fn bundled_model_matches_speechbrain_and_separates_held_out_voices() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let (model, _dir) = bundled();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("speechbrain.json")).unwrap(),
    )
    .unwrap();
    let stems: Vec<&String> = meta.as_object().unwrap().keys().collect();
    assert!(stems.len() >= 3, "{meta}");
    let mut improvements = Vec::new();
    for stem in stems {
        let (parity, score) = separate(&model, stem);
        assert!(
            parity > 60.0,
            "{stem}: SNR against SpeechBrain {parity:.1} dB"
        );
        let sb = meta[stem]["si_snri_db"].as_f64().unwrap();
        println!("{stem}: SI-SNRi {score:.2} dB (SpeechBrain {sb:.2}), parity SNR {parity:.1} dB");
        assert!((score - sb).abs() < 0.01, "{stem}: {score} vs {sb}");
        improvements.push(score);
    }
    let mean = improvements.iter().sum::<f64>() / improvements.len() as f64;
    // The model card's figure is over the recipe's 40 held-out mixtures (9.41 dB); these three
    // give 12.53, 11.91 and 2.54 dB (8.99 dB together; the model before it, 7.45). The issue's
    // target, 10 dB, is not reached yet: this guards the bundled model against regressions,
    // not the target.
    assert!(
        mean >= 8.5,
        "mean SI-SNRi {mean:.2} dB on held-out mixtures"
    );
}

/// The opt-in int8 path on the same held-out mixtures: what it costs. Its SI-SNRi stays within
/// a fraction of a dB of SpeechBrain's f32 figure on each mixture.
#[test]
fn int8_separation_stays_close_on_held_out_voices() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let (mut model, _dir) = bundled();
    model.quantize_dynamic().unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("speechbrain.json")).unwrap(),
    )
    .unwrap();
    let mut worst = 0f64;
    for stem in meta.as_object().unwrap().keys() {
        let (closeness, score) = separate(&model, stem);
        let sb = meta[stem]["si_snri_db"].as_f64().unwrap();
        println!(
            "{stem}: int8 SI-SNRi {score:.2} dB (SpeechBrain f32 {sb:.2}); SNR against SpeechBrain's output {closeness:.1} dB"
        );
        assert!(
            closeness < 100.0,
            "{stem}: int8 changed nothing ({closeness:.1} dB)"
        );
        worst = worst.max((score - sb).abs());
    }
    assert!(worst < 0.1, "int8 moved an SI-SNRi by {worst:.2} dB");
}
