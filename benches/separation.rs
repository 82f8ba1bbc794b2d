//! SepFormer separation speed on 5 s at 8 kHz. Uses the small parity model by default; set
//! `VOXBRAIN_SEPFORMER_DIR` to a full-size model directory (e.g. the official files, or the
//! random-weight one `fixtures_separation.py --full` writes) for the figures in the README.
//! SpeechBrain's side: `data-tools/reference/bench_speechbrain.py sepformer <dir> --seconds 5`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use voxbrain::inference::separation::SepformerSeparation;
use voxbrain::pretrained::FromHparamsOptions;

fn bench_sepformer(c: &mut Criterion) {
    let dir = std::env::var("VOXBRAIN_SEPFORMER_DIR").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/separation/model_small"
        )
        .to_string()
    });
    let save = tempfile::tempdir().unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(save.path().to_path_buf()),
        ..Default::default()
    };
    let model = SepformerSeparation::from_hparams(&dir, &opts).unwrap();
    let mix = voxbrain::npy::read_npy(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/separation/mix_a.npy"
    ))
    .unwrap()
    .data;
    let five: Vec<f32> = mix.iter().cycle().take(40_000).copied().collect();
    let x = Tensor::from_slice(&five, (1, five.len()), &Device::Cpu).unwrap();
    c.bench_function("sepformer_separate_batch_5s_8k", |b| {
        b.iter(|| model.separate_batch(&x).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench_sepformer
}
criterion_main!(benches);
