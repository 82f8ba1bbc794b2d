//! Times SepFormer separation and (optionally) compares with SpeechBrain's output.
//!
//!     cargo run --release --example time_sepformer -- <model_dir> <mix.npy|seconds> [reference.npy|-] [repeats] [int8]
//!
//! `<mix.npy>`: a float32 mixture at the model rate; or a number of seconds of a synthetic
//! mixture. Prints one JSON line: median time, peak RSS, SNR/max error against the reference.
//! `int8`: the opt-in dynamic int8 quantization.

#[path = "common/timing.rs"]
mod timing;

use std::time::Instant;

use candle_core::{Device, Tensor};
use timing::peak_rss_mb;
use voxbrain::inference::separation::SepformerSeparation;
use voxbrain::pretrained::FromHparamsOptions;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: time_sepformer <model_dir> <mix.npy|seconds> [reference.npy] [repeats]"
    );
    let save = tempfile::tempdir()?;
    let opts = FromHparamsOptions {
        savedir: Some(save.path().to_path_buf()),
        ..Default::default()
    };
    let mut model = SepformerSeparation::from_hparams(&args[0], &opts)?;
    let int8 = args.get(4).is_some_and(|a| a == "int8");
    if int8 {
        model.quantize_dynamic()?;
    }
    let fs = model.sample_rate() as usize;
    let mix: Vec<f32> = match args[1].parse::<f64>() {
        Ok(secs) => (0..(secs * fs as f64) as usize)
            .map(|i| {
                let t = i as f32 / fs as f32;
                0.3 * (t * 2.0 * std::f32::consts::PI * 220.0 * (1.0 + 0.1 * (t * 3.0).sin())).sin()
                    + 0.2 * (t * 2.0 * std::f32::consts::PI * 330.0).sin() * (t * 1.7).cos()
            })
            .collect(),
        Err(_) => voxbrain::npy::read_npy(&args[1])?.data,
    };
    let repeats: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let x = Tensor::from_slice(&mix, (1, mix.len()), &Device::Cpu)?;
    // repeats = 0: one timed run without warm-up (long inputs).
    let t0 = Instant::now();
    let mut est = model.separate_batch(&x)?;
    let mut times = vec![t0.elapsed().as_secs_f64() * 1e3];
    if repeats > 0 {
        times.clear();
    }
    for _ in 0..repeats {
        let t = Instant::now();
        est = model.separate_batch(&x)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let got = est.flatten_all()?.to_vec1::<f32>()?;
    let mut report = serde_json::json!({
        "impl": "voxbrain", "simd": voxbrain::fastmath::simd_path(),
        "int8": int8.then(voxbrain::nnet::qgemm::int8_path),
        "seconds": mix.len() as f64 / fs as f64,
        "median_ms": times[times.len() / 2],
        "peak_rss_mb": peak_rss_mb(),
        "threads": rayon::current_num_threads(),
    });
    if let Some(reference) = args.get(2).filter(|s| s.as_str() != "-") {
        let want = voxbrain::npy::read_npy(reference)?.data;
        anyhow::ensure!(
            want.len() == got.len(),
            "reference has {} values, output {}",
            want.len(),
            got.len()
        );
        let snr = voxbrain::metrics::snr(&got, &want);
        let max = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        report["snr_vs_reference_db"] = serde_json::json!(snr);
        report["max_abs_err"] = serde_json::json!(max);
    }
    println!("{report}");
    Ok(())
}
