//! ECAPA-TDNN embedding speed (small fixture model; the full-size comparison with SpeechBrain
//! is `data-tools/reference/full_size_ecapa.sh`, which times both in the same run).

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use voxbrain::inference::SpeakerRecognition;
use voxbrain::pretrained::FromHparamsOptions;

fn bench(c: &mut Criterion) {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let root = env!("CARGO_MANIFEST_DIR");
    let save = tempfile::tempdir().unwrap();
    let m = SpeakerRecognition::from_hparams(
        &format!("{root}/tests/fixtures/speaker/model_small"),
        &FromHparamsOptions {
            savedir: Some(save.path().to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap();
    let mut speech = Vec::new();
    for i in 0..3 {
        speech.extend(
            voxbrain::npy::read_npy(format!(
                "{root}/tests/fixtures/foundation/speech_{i}_16k.npy"
            ))
            .unwrap()
            .data,
        );
    }
    let ten: Vec<f32> = speech.iter().cycle().take(160_000).copied().collect();
    let wav = Tensor::from_vec(ten, 160_000, &Device::Cpu).unwrap();
    let batch8 = Tensor::stack(&vec![wav.clone(); 8], 0).unwrap();
    c.bench_function("ecapa_small_10s_batch1", |b| {
        b.iter(|| m.encode_batch(&wav, None, false).unwrap())
    });
    c.bench_function("ecapa_small_10s_batch8", |b| {
        b.iter(|| m.encode_batch(&batch8, None, false).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
