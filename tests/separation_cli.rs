//! `voxbrain separate`, the long-audio path and the tutorial mixture helper.

mod common;

use common::{fixture, npy};
use voxbrain::inference::separation::{make_mixture, SepformerSeparation};
use voxbrain::metrics::pit_si_snr;
use voxbrain::pretrained::FromHparamsOptions;

fn model_dir() -> String {
    fixture("separation/model_small")
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn separate_command_writes_wavs_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_ok(
        common::voxbrain()
            .args(["separate", "--source", &model_dir(), "--savedir"])
            .arg(dir.path().join("save"))
            .arg(fixture("separation/mix_16k.wav"))
            .arg("--out-dir")
            .arg(dir.path().join("out"))
            .arg("--out-npy")
            .arg(dir.path().join("est.npy")),
    );
    // 16 kHz input to the 8 kHz model: resampled, with a warning.
    assert!(String::from_utf8_lossy(&out.stderr).contains("Resampling"));
    for i in 1..=2 {
        let p = dir.path().join(format!("out/mix_16k_source{i}.wav"));
        let w = voxbrain::audio::read_waveform(&p).unwrap();
        assert_eq!(w.sample_rate, 8000);
    }
    // The .npy equals SpeechBrain's separate_file output (peak-normalized).
    let got = voxbrain::npy::read_npy(dir.path().join("est.npy")).unwrap();
    let want = npy("separation/mix_16k_separate_file.npy");
    assert_eq!(got.shape, want.shape);
    common::assert_close("separate --out-npy", &got.data, &want.data, 1e-4, 1e-6);
}

#[test]
fn separate_command_reports_missing_files() {
    let out = common::voxbrain()
        .args([
            "separate",
            "--source",
            &model_dir(),
            "/nonexistent/mix.wav",
            "--out-dir",
            "/tmp/x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/mix.wav"));
}

#[test]
fn long_audio_in_windows() {
    let save = tempfile::tempdir().unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(save.path().to_path_buf()),
        ..Default::default()
    };
    let model = SepformerSeparation::from_hparams(&model_dir(), &opts).unwrap();
    let a = npy("separation/mix_a.npy").data;
    let b = npy("separation/mix_b.npy").data;
    // 6 s of speech mixtures.
    let mix: Vec<f32> = a.iter().chain(&b).cycle().take(48_000).copied().collect();
    let whole = model.separate_samples(&mix).unwrap();
    // A window covering everything is the whole-file result.
    assert_eq!(model.separate_long(&mix, 48_000, 100).unwrap(), whole);
    let chunked = model.separate_long(&mix, 16_000, 4_000).unwrap();
    assert_eq!(chunked.len(), 2);
    assert!(chunked
        .iter()
        .all(|s| s.len() == mix.len() && s.iter().all(|x| x.is_finite())));
    let score = pit_si_snr(&chunked, &whole).unwrap();
    println!(
        "chunked (2 s windows, 0.5 s overlap) vs whole, small random model: SI-SNR {:.1} dB",
        score.mean
    );
    assert!(model.separate_long(&mix, 1000, 1000).is_err());
}

#[test]
fn tutorial_mixture_crops_to_the_shorter() {
    let (mix, s1, s2) = make_mixture(
        fixture("foundation/speech_0.wav"),
        fixture("foundation/speech_1.wav"),
        8000,
    )
    .unwrap();
    assert_eq!(mix.len(), s1.len());
    assert_eq!(mix.len(), s2.len());
    assert!((mix[1000] - (s1[1000] + s2[1000])).abs() < 1e-7);
    // speech_2_8k.npy is SpeechBrain's 8 kHz version of speech_2.wav.
    let (_, s, _) = make_mixture(
        fixture("foundation/speech_2.wav"),
        fixture("foundation/speech_2.wav"),
        8000,
    )
    .unwrap();
    let want = npy("foundation/speech_2_8k.npy").data;
    common::assert_close("8 kHz resampling", &s, &want[..s.len()], 1e-5, 1e-6);
}
