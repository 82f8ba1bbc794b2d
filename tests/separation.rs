//! SepFormer parity with SpeechBrain (fixtures from `make_fixtures.py separation`): a small
//! model in the official yaml's shape with seeded random weights, loaded through
//! `from_hparams`, on real-speech mixtures whose lengths are not multiples of the stride or
//! of the chunk size; plus the bad-input cases.

mod common;

use candle_core::{Device, Tensor};
use common::{fixture, npy};
use voxbrain::inference::separation::SepformerSeparation;
use voxbrain::pretrained::FromHparamsOptions;

fn offline_env() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
}

fn load() -> (SepformerSeparation, tempfile::TempDir) {
    offline_env();
    let save = tempfile::tempdir().unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(save.path().to_path_buf()),
        ..Default::default()
    };
    let dir = fixture("separation/model_small");
    let model = SepformerSeparation::from_hparams(dir.to_str().unwrap(), &opts).unwrap();
    (model, save)
}

/// SNR (dB) of `got` against the reference `want`.
fn snr_db(got: &[f32], want: &[f32]) -> f64 {
    let sig: f64 = want.iter().map(|&x| (x as f64).powi(2)).sum();
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (sig / err.max(1e-30)).log10()
}

fn check(model: &SepformerSeparation, name: &str) {
    let mix = npy(&format!("separation/{name}.npy"));
    let want = npy(&format!("separation/{name}_sources.npy"));
    let x = Tensor::from_slice(&mix.data, (1, mix.data.len()), &Device::Cpu).unwrap();
    let est = model.separate_batch(&x).unwrap();
    assert_eq!(
        est.dims(),
        &[1, want.shape[0], want.shape[1]],
        "{name}: shape"
    );
    let got = est.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let snr = snr_db(&got, &want.data);
    let (max, mean) = common::diff(&got, &want.data);
    println!("{name}: SNR vs SpeechBrain {snr:.1} dB, max abs err {max:.2e}, mean {mean:.2e}");
    assert!(snr >= 60.0, "{name}: SNR {snr:.1} dB < 60 dB");
}

#[test]
fn parity_with_speechbrain_on_speech_mixtures() {
    let (model, _save) = load();
    assert_eq!(model.sample_rate(), 8000);
    assert_eq!(model.num_spks(), 2);
    // 9003 and 4001 samples: not multiples of the stride (8) nor of K=10 frames.
    check(&model, "mix_a");
    check(&model, "mix_b");
    // 77 samples: 8 encoder frames, shorter than one chunk.
    check(&model, "mix_short");
}

#[test]
fn separate_file_resamples_16k_and_matches_speechbrain() {
    let (model, _save) = load();
    let est = model
        .separate_file(fixture("separation/mix_16k.wav"))
        .unwrap();
    let want = npy("separation/mix_16k_separate_file.npy");
    assert_eq!(est.dims(), &[1, want.shape[0], want.shape[1]]);
    let got = est.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let snr = snr_db(&got, &want.data);
    println!("separate_file (16 kHz input): SNR vs SpeechBrain {snr:.1} dB");
    assert!(snr >= 60.0, "SNR {snr:.1} dB");
}

#[test]
fn silence_gives_zeros_not_nan() {
    let (model, _save) = load();
    let x = Tensor::zeros((1, 5000), candle_core::DType::F32, &Device::Cpu).unwrap();
    let est = model.separate_batch(&x).unwrap();
    let v = est.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    // separate_file's peak normalization must not divide by zero either.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silence.wav");
    voxbrain::audio::write_wav(
        &path,
        &voxbrain::audio::Waveform::mono(vec![0.0; 4000], 8000),
        voxbrain::audio::WavFormat::Float32,
    )
    .unwrap();
    let est = model.separate_file(&path).unwrap();
    let v = est.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn tiny_and_empty_inputs() {
    let (model, _save) = load();
    // Shorter than the encoder kernel (16 samples): padded, output keeps the input length.
    let x = Tensor::from_slice(&[0.1f32, -0.2, 0.3, 0.05, 0.0], (1, 5), &Device::Cpu).unwrap();
    let est = model.separate_batch(&x).unwrap();
    assert_eq!(est.dims(), &[1, 5, 2]);
    // A rank-1 input is one utterance.
    let x = Tensor::from_slice(&[0.1f32; 100], 100, &Device::Cpu).unwrap();
    assert_eq!(model.separate_batch(&x).unwrap().dims(), &[1, 100, 2]);
    // Empty input is an error, not a panic.
    let x = Tensor::zeros((1, 0), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(model.separate_batch(&x).is_err());
    assert!(model.separate_samples(&[]).is_err());
}

#[test]
fn stereo_file_is_downmixed() {
    let (model, _save) = load();
    let mix = npy("separation/mix_b.npy").data;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stereo.wav");
    // Both channels hold the mixture at half amplitude and 1.5x: the mean is the mixture.
    let w = voxbrain::audio::Waveform::new(
        vec![
            mix.iter().map(|x| 0.5 * x).collect(),
            mix.iter().map(|x| 1.5 * x).collect(),
        ],
        8000,
    );
    voxbrain::audio::write_wav(&path, &w, voxbrain::audio::WavFormat::Float32).unwrap();
    let est = model.separate_file(&path).unwrap();
    assert_eq!(est.dims(), &[1, mix.len(), 2]);
    let x = Tensor::from_slice(&mix, (1, mix.len()), &Device::Cpu).unwrap();
    let want = voxbrain::inference::separation::peak_normalize(&model.separate_batch(&x).unwrap())
        .unwrap();
    let (max, _) = common::diff(
        &est.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert!(max < 1e-4, "stereo downmix differs: {max}");
}

#[test]
fn sources_are_written_as_wav() {
    let (model, _save) = load();
    let mix = npy("separation/mix_b.npy").data;
    let x = Tensor::from_slice(&mix, (1, mix.len()), &Device::Cpu).unwrap();
    let est = model.separate_batch(&x).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let paths = model.save_sources(&est, dir.path(), "mix_b").unwrap();
    assert_eq!(paths.len(), 2);
    assert!(paths[0].ends_with("mix_b_source1.wav"));
    let back = voxbrain::audio::read_waveform(&paths[1]).unwrap();
    assert_eq!(back.sample_rate, 8000);
    assert_eq!(back.num_frames(), mix.len());
    let want: Vec<f32> = est
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|r| r[1])
        .collect();
    common::assert_close(
        "source2 wav round trip",
        &back.channels()[0],
        &want,
        1e-7,
        1e-8,
    );
}

#[test]
fn bad_model_directory_errors_name_the_problem() {
    offline_env();
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(fixture("separation/model_small/hyperparams.yaml")).unwrap();
    std::fs::write(
        dir.path().join("hyperparams.yaml"),
        yaml.replace("norm: ln", "norm: batchnorm"),
    )
    .unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(dir.path().join("save")),
        ..Default::default()
    };
    let err = SepformerSeparation::from_hparams(dir.path().to_str().unwrap(), &opts).unwrap_err();
    assert!(err.to_string().contains("batchnorm"), "{err}");
    // A checkpoint of the wrong size: the report names the file and keys.
    let dir2 = tempfile::tempdir().unwrap();
    for f in ["encoder.ckpt", "masknet.ckpt", "decoder.ckpt"] {
        std::fs::copy(
            fixture("separation/model_small").join(f),
            dir2.path().join(f),
        )
        .unwrap();
    }
    std::fs::write(
        dir2.path().join("hyperparams.yaml"),
        yaml.replace(
            "kernel_size: 16\n  out_channels: 32",
            "kernel_size: 8\n  out_channels: 32",
        ),
    )
    .unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(dir2.path().join("save")),
        ..Default::default()
    };
    let err = SepformerSeparation::from_hparams(dir2.path().to_str().unwrap(), &opts).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("encoder.ckpt") && msg.contains("conv1d.weight"),
        "{msg}"
    );
}
