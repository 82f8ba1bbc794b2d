//! ECAPA-TDNN embedding speed (small fixture model; the full-size comparison with SpeechBrain
//! is `data-tools/reference/full_size_ecapa.sh`, which times both in the same run), and the
//! product that dominates the full-size model, a 1x1 convolution 1024 -> 1024 over 1000 frames,
//! in f32 and with the opt-in int8 path (`quantize_dynamic`).

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

    let vm = candle_nn::VarMap::new();
    let init = candle_nn::Init::Randn {
        mean: 0.0,
        stdev: 0.03,
    };
    vm.get(
        (1024, 1024, 1),
        "conv.weight",
        init,
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let vb = candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
    let mut conv = voxbrain::nnet::cnn::Conv1d::new(1024, 1024, 1, 1, 1, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, 1024, 1000), &Device::Cpu).unwrap();
    c.bench_function("conv1x1_1024x1000_f32", |b| {
        b.iter(|| conv.forward_mode(&x, false).unwrap())
    });
    conv.quantize_dynamic().unwrap();
    c.bench_function(
        &format!(
            "conv1x1_1024x1000_int8_{}",
            voxbrain::nnet::qgemm::int8_path()
        ),
        |b| b.iter(|| conv.forward_mode(&x, false).unwrap()),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
