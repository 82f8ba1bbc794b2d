//! Times one SepFormer training step (forward, PIT SI-SNR loss, backward) of the model a
//! separation recipe yaml describes, freshly initialised as the recipe does, on a batch of
//! synthetic two-voice mixtures.
//!
//! ```text
//! cargo run --release --example time_separation_train -- recipes/separation/hyperparams.yaml [--batch 4] [--seconds 2.5] [--rounds 5]
//! ```
//! Prints one JSON line {impl, what: "separation_train_step", batch, seconds, forward_ms,
//! backward_ms, median_ms, loss, peak_rss_mb}.

#[path = "common/timing.rs"]
mod timing;

use std::time::Instant;

use candle_core::{Device, Tensor};
use timing::{median, peak_rss_mb};
use voxbrain::inference::separation::SepformerSeparation;
use voxbrain::nnet::losses::get_si_snr_with_pitwrapper;
use voxbrain::pretrained::hparams::Hparams;
use voxbrain::pretrained::Pretrained;

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A voiced source: harmonics of a gliding pitch, amplitude-modulated like syllables.
fn voice(n: usize, fs: f32, f0: f32, rate: f32) -> Vec<f32> {
    let mut phase = 0f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / fs;
            phase += 2.0 * std::f32::consts::PI * f0 * (1.0 + 0.05 * (t * 1.3).sin()) / fs;
            let env = (0.5 + 0.5 * (t * rate * 2.0 * std::f32::consts::PI).sin()).powi(2);
            env * (1..6)
                .map(|h| (phase * h as f32).sin() / h as f32)
                .sum::<f32>()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 2,
        "usage: time_separation_train <hyperparams.yaml> [--batch N] [--seconds S] [--rounds N]"
    );
    let (batch, seconds, rounds) = (
        arg(&args, "--batch", 4usize),
        arg(&args, "--seconds", 2.5f64),
        arg(&args, "--rounds", 5usize),
    );
    voxbrain::runtime::tune_allocator();
    let text = std::fs::read_to_string(&args[1])?;
    let hp = Hparams::from_str(&text, &args[1], None)?;
    let mut model = SepformerSeparation::build(&hp, &Device::Cpu)?;
    model.model_mut().init_like_torch(1234)?;
    model.model_mut().set_train(true);
    let fs = model.sample_rate() as f32;
    let n = (seconds * fs as f64) as usize;
    let (mut mix, mut src) = (Vec::new(), Vec::new());
    for b in 0..batch {
        let s1 = voice(n, fs, 110.0 + 10.0 * b as f32, 3.0);
        let s2 = voice(n, fs, 210.0 + 15.0 * b as f32, 4.1);
        mix.extend(s1.iter().zip(&s2).map(|(a, b)| a + b));
        src.extend(s1.iter().zip(&s2).flat_map(|(a, b)| [*a, *b]));
    }
    let mix = Tensor::from_vec(mix, (batch, n), &Device::Cpu)?;
    let targets = Tensor::from_vec(src, (batch, n, 2), &Device::Cpu)?;
    let (mut fwd, mut bwd, mut total, mut loss_v) = (vec![], vec![], vec![], 0f32);
    for round in 0..=rounds {
        let t0 = Instant::now();
        let est = model.model().forward(&mix)?;
        let loss = get_si_snr_with_pitwrapper(&targets, &est)?.mean_all()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        drop(grads);
        loss_v = loss.to_scalar::<f32>()?;
        if round > 0 {
            // Round 0 warms the allocator and the thread pool.
            fwd.push((t1 - t0).as_secs_f64() * 1e3);
            bwd.push((t2 - t1).as_secs_f64() * 1e3);
            total.push((t2 - t0).as_secs_f64() * 1e3);
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "impl": "voxbrain", "what": "separation_train_step", "batch": batch,
            "seconds": seconds, "forward_ms": median(fwd), "backward_ms": median(bwd),
            "median_ms": median(total), "loss": loss_v, "peak_rss_mb": peak_rss_mb(),
            "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}
