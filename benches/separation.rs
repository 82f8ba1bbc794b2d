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

/// One full-size SepFormer transformer layer (d_model 256, 8 heads, d_ffn 1024, pre-norm) on an
/// intra-chunk batch of 5 s (41 chunks of 250 frames), with the `gemm` crate's products and
/// with the AVX2 tiles (`with_avx2_tiles`; where the CPU has AVX2), whatever the build's path.
fn bench_transformer_layer(c: &mut Criterion) {
    use candle_core::DType;
    use candle_nn::{VarBuilder, VarMap};
    use voxbrain::nnet::transformer::{TransformerConfig, TransformerEncoderLayer};
    use voxbrain::nnet::{with_avx2_tiles, Activation};
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = TransformerConfig {
        num_layers: 1,
        d_model: 256,
        nhead: 8,
        d_ffn: 1024,
        dropout: 0.0,
        activation: Activation::Relu,
        normalize_before: true,
    };
    let layer = TransformerEncoderLayer::new(&cfg, vb).unwrap();
    for var in vm.all_vars() {
        let w = Tensor::randn(0f32, 0.05, var.shape(), &Device::Cpu).unwrap();
        var.set(&w).unwrap();
    }
    let x = Tensor::randn(0f32, 1.0, (41, 250, 256), &Device::Cpu).unwrap();
    #[cfg(target_arch = "x86_64")]
    let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    for (name, tiles) in [("gemm", false), ("avx2_tiles", true)] {
        if tiles && !avx2 {
            continue;
        }
        c.bench_function(&format!("sepformer_transformer_layer/{name}"), |b| {
            b.iter(|| with_avx2_tiles(tiles, || layer.forward(&x, false)).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench_sepformer, bench_transformer_layer
}
criterion_main!(benches);
