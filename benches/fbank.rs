//! Fbank and resampling speed on 10 s of speech (compare with
//! `data-tools/reference/compare_speed.sh`, which times SpeechBrain on the same input).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use voxbrain::audio::Resampler;
use voxbrain::features::{Fbank, FbankConfig};

fn ten_seconds() -> Vec<f32> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/foundation");
    let mut speech = Vec::new();
    for i in 0..3 {
        let a = voxbrain::npy::read_npy(format!("{dir}/speech_{i}_16k.npy")).unwrap();
        speech.extend(a.data);
    }
    speech.iter().cycle().take(160_000).copied().collect()
}

fn bench_fbank(c: &mut Criterion) {
    let wav = ten_seconds();
    let mut g = c.benchmark_group("fbank_10s");
    for n_mels in [40usize, 80] {
        for threads in [1usize, 2] {
            let fb = Fbank::new(FbankConfig {
                n_mels,
                ..Default::default()
            })
            .unwrap()
            .with_threads(threads);
            g.bench_with_input(
                BenchmarkId::new(format!("n_mels{n_mels}"), format!("{threads}thr")),
                &wav,
                |b, w| b.iter(|| fb.compute(w)),
            );
        }
    }
    g.finish();
}

fn bench_resample(c: &mut Criterion) {
    let wav = ten_seconds();
    let r = Resampler::new(16_000, 8_000).unwrap();
    c.bench_function("resample_10s_16k_to_8k", |b| b.iter(|| r.process(&wav)));
    let r = Resampler::new(22_050, 16_000).unwrap();
    c.bench_function("resample_10s_22k05_to_16k", |b| b.iter(|| r.process(&wav)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_fbank, bench_resample
}
criterion_main!(benches);
