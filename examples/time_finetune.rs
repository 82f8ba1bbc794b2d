//! Times one fine-tuning step of the tutorial's `EncDecFineTune` (forward + backward + clipped
//! SGD step, `fit_batch`) on one batch of every utterance of a manifest; the Rust side of
//! `data-tools/reference/compare_finetune_speed.sh` (SpeechBrain: `bench_finetune.py`).
//!
//! ```text
//! cargo run --release --example time_finetune -- <model_dir> <manifest.json> [--rounds N]
//! ```
//! Prints one JSON line {impl, what: "finetune_step", batch, step_ms, median_ms, peak_rss_mb}.

#[path = "common/timing.rs"]
mod timing;

use std::time::Instant;

use timing::{median, peak_rss_mb};
use voxbrain::brain::asr_finetune::{asr_dataset, EncDecFineTune};
use voxbrain::brain::{Brain, BrainOptions, OptClass, Sgd, Stage};
use voxbrain::dataio::{DataLoader, DataLoaderOptions};
use voxbrain::inference::EncoderDecoderASR;
use voxbrain::pretrained::FromHparamsOptions;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: time_finetune <model_dir> <manifest> [--rounds N]"
    );
    let rounds: usize = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args[i + 1].parse()?,
        None => 5,
    };
    if std::env::var_os("HF_HUB_OFFLINE").is_none() {
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let save = tempfile::tempdir()?;
    let asr = EncoderDecoderASR::from_hparams(
        &args[1],
        &FromHparamsOptions {
            savedir: Some(save.path().to_path_buf()),
            overrides: Some("dropout: 0.0".into()),
            ..Default::default()
        },
    )?;
    let ds = asr_dataset(std::path::Path::new(&args[2]), &asr, None)?;
    let n = ds.len();
    let batch = DataLoader::new(ds, DataLoaderOptions::batch_size(n))?
        .iter(0)
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty manifest"))??;
    let opt: OptClass = Box::new(|p| Box::new(Sgd::new(p, 1e-5)));
    let opts = BrainOptions {
        noprogressbar: true,
        ..Default::default()
    };
    let mut brain = EncDecFineTune::new(asr, Some(opt), opts)?;
    brain.core_mut().init_optimizers();
    brain.core_mut().modules.train(true);
    brain.on_stage_start(Stage::Train, Some(1))?;
    // One step = fit_batch: forward, loss, backward, clipping, SGD; timed by phase.
    let step = |brain: &mut EncDecFineTune| -> anyhow::Result<[f64; 3]> {
        let t0 = Instant::now();
        let out = brain.compute_forward(&batch, Stage::Train)?;
        let loss = brain.compute_objectives(out, &batch, Stage::Train)?;
        let t1 = Instant::now();
        brain.core_mut().backward(&loss)?;
        let t2 = Instant::now();
        brain.core_mut().optimizers_step()?;
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
        Ok([ms(t0, t1), ms(t1, t2), ms(t2, Instant::now())])
    };
    let warm = step(&mut brain)?;
    eprintln!(
        "warm-up: forward {:.0} ms, backward {:.0} ms, step {:.0} ms",
        warm[0], warm[1], warm[2]
    );
    let mut ms = Vec::with_capacity(rounds);
    let mut phases = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let p = step(&mut brain)?;
        ms.push(p.iter().sum::<f64>());
        phases.push(p);
    }
    let line = serde_json::json!({"impl": "voxbrain", "simd": voxbrain::fastmath::simd_path(), "what": "finetune_step", "batch": n,
        "step_ms": ms, "median_ms": median(ms.clone()), "phases_ms": phases,
        "peak_rss_mb": peak_rss_mb()});
    println!("{line}");
    Ok(())
}
