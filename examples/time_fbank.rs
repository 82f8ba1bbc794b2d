//! Times `Fbank` on one audio file and prints JSON; used by
//! `data-tools/reference/compare_speed.sh` to compare with SpeechBrain in the same run.
//!
//! `cargo run --release --example time_fbank -- <wav> [n_mels] [repeats]`

use std::time::Instant;

use voxbrain::audio::{load_audio, ChannelMix};
use voxbrain::features::{Fbank, FbankConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: time_fbank <wav> [n_mels] [repeats]");
    let n_mels: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(80);
    let repeats: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let wav: Vec<f32> = load_audio(path, 16000, ChannelMix::AvgToMono)?.to_vec1()?;
    let fb = Fbank::new(FbankConfig {
        n_mels,
        ..Default::default()
    })?;
    for _ in 0..10 {
        std::hint::black_box(fb.compute(&wav));
    }
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        std::hint::black_box(fb.compute(&wav));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{{\"impl\": \"voxbrain\", \"simd\": \"{}\", \"what\": \"fbank\", \"n_mels\": {n_mels}, \"seconds\": {:.2}, \"median_ms\": {:.4}}}",
        voxbrain::fastmath::simd_path(),
        wav.len() as f64 / 16000.0,
        times[times.len() / 2]
    );
    Ok(())
}
