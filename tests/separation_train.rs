//! Training a SepFormer with the recipe's Brain (`brain::separation::Separation`): the small
//! seeded model of the parity fixtures learns to separate two synthetic voices (the PIT SI-SNR
//! rises by several dB), a run stopped after its second epoch and restarted from its checkpoint
//! ends with the parameters of an uninterrupted run, and the exported folder (SpeechBrain's
//! layout) loads back through `from_hparams` and separates exactly as the trained model does.
//! (`tests/separation_loss.rs` checks one training step against SpeechBrain's own numbers.)

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use voxbrain::audio::{write_wav, WavFormat, Waveform};
use voxbrain::brain::separation::{separation_dataset, Separation};
use voxbrain::brain::{Brain, BrainOptions, Checkpointer, EpochCounter, OptimizerKind};
use voxbrain::dataio::DataLoaderOptions;
use voxbrain::inference::separation::SepformerSeparation;
use voxbrain::pretrained::FromHparamsOptions;

const SR: f32 = 8000.0;
const LEN: usize = 2403; // not a multiple of the stride (8) nor of a chunk (K = 10 frames)

/// A "voice": harmonics of `f0` with a syllable-rate envelope.
fn voice(f0: f32, rate: f32, phase: f32) -> Vec<f32> {
    (0..LEN)
        .map(|i| {
            let t = i as f32 / SR;
            let env = 0.55 + 0.45 * (2.0 * std::f32::consts::PI * rate * t + phase).sin();
            let h: f32 = (1..=4)
                .map(|k| (2.0 * std::f32::consts::PI * f0 * k as f32 * t).sin() / k as f32)
                .sum();
            0.3 * env * h
        })
        .collect()
}

/// Four mixtures of a low and a high voice, as SpeechBrain's CSV columns in a JSON manifest.
fn corpus(dir: &Path) -> PathBuf {
    let mut m = serde_json::Map::new();
    for i in 0..4 {
        let a = voice(110.0 + 9.0 * i as f32, 3.0 + i as f32 * 0.4, 0.3 * i as f32);
        let b = voice(
            290.0 + 13.0 * i as f32,
            4.5 - i as f32 * 0.3,
            1.1 + i as f32,
        );
        let mix: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let mut entry = serde_json::Map::new();
        for (key, sig) in [("mix_wav", mix), ("s1_wav", a), ("s2_wav", b)] {
            let p = dir.join(format!("{i}_{key}.wav"));
            write_wav(&p, &Waveform::mono(sig, 8000), WavFormat::Float32).unwrap();
            entry.insert(key.into(), p.display().to_string().into());
        }
        m.insert(format!("mix{i}"), entry.into());
    }
    let path = dir.join("train.json");
    std::fs::write(&path, serde_json::Value::Object(m).to_string()).unwrap();
    path
}

fn model(save: &Path) -> SepformerSeparation {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let opts = FromHparamsOptions {
        savedir: Some(save.to_path_buf()),
        ..Default::default()
    };
    let dir = fixture("separation/model_small");
    SepformerSeparation::from_hparams(dir.to_str().unwrap(), &opts).unwrap()
}

/// Trains `epochs` (resuming from `ckpt` when it holds a checkpoint); returns the brain.
fn train(manifest: &Path, save: &Path, ckpt: &Path, epochs: usize) -> Separation {
    let opt: voxbrain::brain::OptClass =
        Box::new(|params| OptimizerKind::Adam.build(params, 2e-3, 0.0));
    let opts = BrainOptions {
        noprogressbar: true,
        ..Default::default()
    };
    let mut brain = Separation::new(model(save), Some(opt), opts);
    brain.core_mut().checkpointer = Some(Checkpointer::new(ckpt));
    let ds = separation_dataset(manifest).unwrap();
    let loader = DataLoaderOptions::batch_size(2);
    brain
        .fit(EpochCounter::new(epochs), &ds, None, loader.clone(), loader)
        .unwrap();
    brain
}

fn params(b: &Separation) -> Vec<(String, Vec<f32>)> {
    let vars = b.model.model().varmap().data().lock().unwrap();
    let mut v: Vec<(String, Vec<f32>)> = vars
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn sepformer_learns_resumes_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = corpus(dir.path());
    let save = dir.path().join("savedir");

    let full = train(&manifest, &save, &dir.path().join("ckpt_full"), 8);
    let stats: Vec<f64> = full.epoch_stats.iter().map(|s| s.1).collect();
    println!("train SI-SNR per epoch (dB): {stats:.2?}");
    assert_eq!(stats.len(), 8);
    assert!(
        stats[7] > stats[0] + 3.0,
        "SI-SNR should rise by > 3 dB in 8 epochs: {stats:?}"
    );

    // Stopped after two epochs, then restarted to eight: recovers the epoch-2 checkpoint.
    let ckpt = dir.path().join("ckpt_resumed");
    let first = train(&manifest, &save, &ckpt, 2);
    assert_eq!(first.epoch_stats.len(), 2);
    drop(first);
    let resumed = train(&manifest, &save, &ckpt, 8);
    let epochs: Vec<usize> = resumed.epoch_stats.iter().map(|s| s.0).collect();
    assert_eq!(epochs, (3..=8).collect::<Vec<_>>(), "resumed at epoch 3");
    let mut worst = 0f32;
    for ((ka, a), (kb, b)) in params(&full).iter().zip(params(&resumed)) {
        assert_eq!(ka, &kb);
        for (x, y) in a.iter().zip(&b) {
            worst = worst.max((x - y).abs());
        }
    }
    println!("resumed vs uninterrupted: max parameter difference {worst:e}");
    assert!(worst <= 1e-6, "resumed run differs by {worst}");

    // Export in SpeechBrain's layout, load it back, separate the same mixture.
    let out = dir.path().join("model");
    let yaml = fixture("separation/model_small/hyperparams.yaml");
    full.export(&std::fs::read_to_string(&yaml).unwrap(), &out)
        .unwrap();
    for f in [
        "hyperparams.yaml",
        "encoder.ckpt",
        "masknet.ckpt",
        "decoder.ckpt",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let opts = FromHparamsOptions {
        savedir: Some(dir.path().join("savedir2")),
        ..Default::default()
    };
    let back = SepformerSeparation::from_hparams(out.to_str().unwrap(), &opts).unwrap();
    let mix = voxbrain::audio::read_audio(dir.path().join("0_mix_wav.wav"))
        .unwrap()
        .0;
    let mix = mix.unsqueeze(0).unwrap();
    let mut trained = full;
    trained.model.model_mut().set_train(false);
    let a = trained.model.separate_batch(&mix).unwrap();
    let b = back.separate_batch(&mix).unwrap();
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(
        flat(&a),
        flat(&b),
        "the exported model separates differently"
    );

    // For the harness (`check_separation_export.py DIR`): SpeechBrain loads the folder and
    // separates the same mixture.
    if let Ok(keep) = std::env::var("VOXBRAIN_KEEP_SEPARATION_EXPORT") {
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(keep.join("model")).unwrap();
        for f in std::fs::read_dir(&out).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, keep.join("model").join(f.file_name().unwrap())).unwrap();
        }
        let m = mix.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        voxbrain::npy::write_npy(keep.join("mix.npy"), &[m.len()], &m).unwrap();
        let e = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        voxbrain::npy::write_npy(keep.join("voxbrain_sources.npy"), a.dims(), &e).unwrap();
    }
}

/// `voxbrain train-separation` with the recipe's own hyperparams.yaml (a fresh, torch-style
/// initialised model; two epochs): the model folder loads through `from_hparams`, the test
/// mixtures are scored, every optimizer step is logged, and a second run with the same folder
/// resumes instead of starting over.
#[test]
fn train_separation_cli_trains_exports_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = corpus(dir.path());
    let out = dir.path().join("run");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/separation/hyperparams.yaml");
    let run = |epochs: usize| {
        common::run_ok(
            common::voxbrain()
                .arg("train-separation")
                .arg("--hparams")
                .arg(&recipe)
                .arg("--overrides")
                .arg(format!(
                    "number_of_epochs: {epochs}\nbatch_size: 2\nlr: 0.002\nlr_final: 0.0005"
                ))
                .arg("--train")
                .arg(&manifest)
                .arg("--test")
                .arg(&manifest)
                .arg("--output-dir")
                .arg(&out),
        )
    };
    let first = run(2);
    let stdout = String::from_utf8_lossy(&first.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[1]["train_si_snr"].as_f64().unwrap().is_finite());
    let si_snri = lines[2]["test_si_snri_db"].as_f64().unwrap();
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["mixtures"].as_array().unwrap().len(), 4);
    assert!((results["si_snri_db"].as_f64().unwrap() - si_snri).abs() < 1e-9);
    let steps = std::fs::read_to_string(out.join("steps.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 4, "2 epochs of 2 batches");
    // lr_final: SpeechBrain's LinearScheduler(0.002, 0.0005, 2). As in SpeechBrain, the first
    // epoch runs at the optimizer's own `lr`, later ones at the scheduler's (torch's f32).
    let lrs = |steps: &str| -> Vec<f64> {
        steps
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["lr"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    let (first_lr, last_lr) = (0.002, f64::from(0.0005f32));
    assert_eq!(lrs(&steps), vec![first_lr, first_lr, last_lr, last_lr]);
    let opts = FromHparamsOptions {
        savedir: Some(dir.path().join("savedir")),
        ..Default::default()
    };
    let model =
        SepformerSeparation::from_hparams(out.join("model").to_str().unwrap(), &opts).unwrap();
    assert_eq!(model.num_spks(), 2);
    // The exported yaml is the one the model was trained with, overrides included.
    let yaml = std::fs::read_to_string(out.join("model/hyperparams.yaml")).unwrap();
    assert!(yaml.contains("\nnumber_of_epochs: 2\n") && yaml.contains("\nbatch_size: 2\n"));
    assert!(yaml.contains("\nlr: 0.002\n"));
    assert!(!yaml.contains("number_of_epochs: 30"));

    // Same folder, four epochs: resumes after epoch 2 (only epochs 3 and 4 are run).
    let second = run(4);
    let stdout = String::from_utf8_lossy(&second.stdout);
    let epochs: Vec<u64> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["epoch"].as_u64())
        .collect();
    assert_eq!(epochs, vec![3, 4], "{stdout}");
    let steps = std::fs::read_to_string(out.join("steps.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 8);
    // The resumed run starts from the checkpoint's learning rate, not from `lr` again.
    assert_eq!(lrs(&steps)[4..], [last_lr; 4]);
}
