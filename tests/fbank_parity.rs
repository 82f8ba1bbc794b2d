//! Fbank, Deltas/ContextWindow and InputNormalization parity with SpeechBrain 1.1.2.

mod common;

use candle_core::{Device, Tensor};
use common::{assert_close, fixture, npy};
use voxbrain::features::{Fbank, FbankConfig, InputNormalization, NormType};

fn fbank(n_mels: usize) -> Fbank {
    Fbank::new(FbankConfig {
        n_mels,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn fbank_matches_speechbrain_on_speech() {
    for n_mels in [40, 80] {
        let fb = fbank(n_mels);
        for i in 0..3 {
            let wav = npy(&format!("foundation/speech_{i}_16k.npy")).data;
            let want = npy(&format!("foundation/fbank{n_mels}_speech_{i}.npy"));
            let got = fb.compute(&wav);
            assert_eq!(want.shape, vec![fb.num_frames(wav.len()), n_mels]);
            // dB units; the bounds are 2e-3 max, 1e-4 mean.
            assert_close(
                &format!("fbank n_mels={n_mels} speech_{i}"),
                &got,
                &want.data,
                2e-3,
                1e-4,
            );
        }
    }
}

#[test]
fn fbank_single_thread_equals_multi_thread() {
    let wav = npy("foundation/speech_0_16k.npy").data;
    let a = fbank(80).with_threads(1).compute(&wav);
    let b = fbank(80).with_threads(4).compute(&wav);
    assert_eq!(a, b);
}

#[test]
fn fbank_deltas_and_context_match_speechbrain() {
    let wav = npy("foundation/speech_0_16k.npy").data;
    let fb = Fbank::new(FbankConfig {
        deltas: true,
        context: true,
        ..Default::default()
    })
    .unwrap();
    let want = npy("foundation/fbank_deltas_context.npy");
    let got = fb.compute(&wav[..8000]);
    assert_eq!(want.shape, vec![51, 40 * 3 * 11]);
    assert_eq!(fb.n_features(), 40 * 3 * 11);
    assert_close("fbank deltas+context", &got, &want.data, 2e-3, 1e-4);
}

#[test]
fn fbank_custom_8k_config_matches_speechbrain() {
    let wav = npy("foundation/speech_2_8k.npy").data;
    let fb = Fbank::new(FbankConfig {
        sample_rate: 8000,
        n_fft: 256,
        n_mels: 24,
        f_min: 20.0,
        f_max: Some(3800.0),
        win_length: 32.0,
        hop_length: 8.0,
        ..Default::default()
    })
    .unwrap();
    let want = npy("foundation/fbank_custom_8k.npy");
    let got = fb.compute(&wav);
    assert_eq!(want.shape, vec![fb.num_frames(wav.len()), 24]);
    assert_close("fbank custom 8k", &got, &want.data, 2e-3, 1e-4);
}

/// The padded batch the harness built from speech_0 and speech_1.
fn padded_batch() -> (Tensor, Tensor) {
    let a = npy("foundation/speech_0_16k.npy").data;
    let b = npy("foundation/speech_1_16k.npy").data;
    let n = a.len().max(b.len());
    let mut flat = vec![0.0f32; 2 * n];
    flat[..a.len()].copy_from_slice(&a);
    flat[n..n + b.len()].copy_from_slice(&b);
    let lens = npy("foundation/batch_lens.npy").data;
    (
        Tensor::from_vec(flat, (2, n), &Device::Cpu).unwrap(),
        Tensor::from_vec(lens, 2, &Device::Cpu).unwrap(),
    )
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn fbank_forward_on_padded_batch_matches_speechbrain() {
    let (wavs, _) = padded_batch();
    let feats = fbank(40).forward(&wavs).unwrap();
    let want = npy("foundation/fbank40_batch.npy");
    assert_eq!(feats.dims(), want.shape.as_slice());
    assert_close("fbank padded batch", &flat(&feats), &want.data, 2e-3, 1e-4);
    // [time] input gives [frames, n_mels].
    let one = fbank(40).forward(&wavs.get(0).unwrap()).unwrap();
    assert_eq!(one.rank(), 2);
}

fn sb_feats() -> (Tensor, Tensor) {
    let want = npy("foundation/fbank40_batch.npy");
    let lens = npy("foundation/norm_lens.npy");
    (
        Tensor::from_vec(want.data, want.shape, &Device::Cpu).unwrap(),
        Tensor::from_vec(lens.data, 2, &Device::Cpu).unwrap(),
    )
}

#[test]
fn sentence_and_batch_normalization_match_speechbrain() {
    // Same input as SpeechBrain (its own Fbank output) so only the normalization is compared.
    let (feats, lens) = sb_feats();
    let mut sent = InputNormalization::new(NormType::Sentence);
    let got = sent.forward(&feats, Some(&lens), None).unwrap();
    assert_close(
        "sentence norm",
        &flat(&got),
        &npy("foundation/norm_sentence.npy").data,
        1e-4,
        1e-5,
    );
    let mut batch = InputNormalization::new(NormType::Batch);
    let got = batch.forward(&feats, Some(&lens), None).unwrap();
    assert_close(
        "batch norm",
        &flat(&got),
        &npy("foundation/norm_batch.npy").data,
        1e-4,
        1e-5,
    );
}

#[test]
fn global_normalization_running_stats_match_speechbrain() {
    let (feats, lens) = sb_feats();
    let f2 = npy("foundation/fbank40_speech_2_batch1.npy");
    let feats2 = Tensor::from_vec(f2.data, f2.shape, &Device::Cpu).unwrap();
    let lens2 = Tensor::from_vec(vec![0.9f32], 1, &Device::Cpu).unwrap();

    let mut glob = InputNormalization::new(NormType::Global);
    assert!(
        glob.forward(&feats, Some(&lens), None).is_err(),
        "eval without statistics is an error"
    );
    glob.train(true);
    let g1 = glob.forward(&feats, Some(&lens), Some(0)).unwrap();
    let g2 = glob.forward(&feats2, Some(&lens2), Some(0)).unwrap();
    glob.train(false);
    let g3 = glob.forward(&feats, Some(&lens), None).unwrap();
    let n = npy;
    assert_close(
        "global train 1",
        &flat(&g1),
        &n("foundation/norm_global_train1.npy").data,
        1e-4,
        1e-5,
    );
    assert_close(
        "global train 2",
        &flat(&g2),
        &n("foundation/norm_global_train2.npy").data,
        1e-4,
        1e-5,
    );
    assert_close(
        "global eval",
        &flat(&g3),
        &n("foundation/norm_global_eval.npy").data,
        1e-4,
        1e-5,
    );
    let (count, mean, std) = glob.statistics();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("foundation/manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(count, manifest["norm"]["global_count"].as_u64().unwrap());
    assert_close(
        "glob_mean",
        &flat(mean.unwrap()),
        &n("foundation/norm_global_mean.npy").data,
        1e-4,
        1e-5,
    );
    assert_close(
        "glob_std",
        &flat(std.unwrap()),
        &n("foundation/norm_global_std.npy").data,
        1e-4,
        1e-5,
    );

    // Epoch >= update_until_epoch freezes the statistics even in training mode.
    glob.train(true);
    glob.forward(&feats2, Some(&lens2), Some(2)).unwrap();
    assert_eq!(glob.statistics().0, count);
}

#[test]
fn normalizer_ckpt_written_by_speechbrain_loads() {
    let mut norm = InputNormalization::new(NormType::Global);
    norm.load_statistics(fixture("foundation/normalizer.ckpt"))
        .unwrap();
    let (feats, lens) = sb_feats();
    let got = norm.forward(&feats, Some(&lens), None).unwrap();
    assert_close(
        "global eval from ckpt",
        &flat(&got),
        &npy("foundation/norm_global_eval.npy").data,
        1e-4,
        1e-5,
    );
}

#[test]
fn official_asr_normalizer_ckpt_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference-models/asr-crdnn-rnnlm-librispeech/normalizer.ckpt");
    if !path.exists() {
        eprintln!("skipping: {} not present", path.display());
        return;
    }
    let mut norm = InputNormalization::new(NormType::Global);
    norm.load_statistics(&path).unwrap();
    let (count, mean, std) = norm.statistics();
    assert_eq!(count, 532411);
    assert_eq!(mean.unwrap().dims(), &[40]);
    assert_eq!(std.unwrap().dims(), &[40]);
    let s = flat(std.unwrap());
    assert!(s.iter().all(|v| *v > 0.0 && v.is_finite()));
}

#[test]
fn bad_normalizer_ckpt_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("normalizer.ckpt");
    std::fs::write(&p, b"PK\x03\x04 definitely not a zip").unwrap();
    let mut norm = InputNormalization::new(NormType::Global);
    let err = norm.load_statistics(&p).unwrap_err().to_string();
    assert!(err.contains("normalizer.ckpt"), "{err}");
}

#[test]
fn packed_fft_path_equals_one_frame_at_a_time_on_70db_jumps() {
    // Fbank transforms two adjacent frames with one complex FFT. Check it against the plain
    // real-FFT path on a signal that jumps between loud and -70 dB noise every 15 ms.
    let mut state = 12345u64;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    let sig: Vec<f32> = (0..48_000)
        .map(|i| {
            let loud = (i / 240) % 2 == 0;
            noise() * if loud { 0.8 } else { 0.8e-3 * 0.32 }
        })
        .collect();
    for n_mels in [40, 80] {
        let fb = fbank(n_mels);
        let reference = fb.filterbank().forward(&fb.stft().power(&sig)).unwrap();
        let got = fb.compute(&sig);
        assert_close(
            &format!("packed vs plain n_mels={n_mels}"),
            &got,
            &reference,
            2e-4,
            1e-5,
        );
    }
}
