//! Times ECAPA-TDNN embeddings of one file (batch 1 and batch 8) and writes the batch-1
//! embedding; used by `data-tools/reference/compare_speed.sh ecapa` beside SpeechBrain.
//!
//! `cargo run --release --example time_ecapa -- <model_dir> <wav> <out.npy> [repeats] [int8]`
//! (`int8`: the opt-in dynamic int8 quantization).

#[path = "common/timing.rs"]
mod timing;

use std::time::Instant;

use candle_core::Tensor;
use timing::{median, peak_rss_mb};
use voxbrain::inference::SpeakerRecognition;
use voxbrain::pretrained::FromHparamsOptions;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, wav_path, out) = (&args[1], &args[2], &args[3]);
    let repeats: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let save = tempfile::tempdir()?;
    let int8 = args.get(5).is_some_and(|a| a == "int8");
    let mut m = SpeakerRecognition::from_hparams(
        dir,
        &FromHparamsOptions {
            savedir: Some(save.path().to_path_buf()),
            ..Default::default()
        },
    )?;
    if int8 {
        m.quantize_dynamic()?;
    }
    let wav = m.load_audio(wav_path)?;
    let e = m.encode_batch(&wav, None, false)?;
    let v: Vec<f32> = e.flatten_all()?.to_vec1()?;
    voxbrain::npy::write_npy(out, &[v.len()], &v)?;
    let batch8 = Tensor::stack(&vec![wav.clone(); 8], 0)?;
    let mut t1 = Vec::new();
    let mut t8 = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        m.encode_batch(&wav, None, false)?;
        t1.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        m.encode_batch(&batch8, None, false)?;
        t8.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{{\"impl\": \"voxbrain\", \"simd\": \"{}\", \"int8\": {}, \"what\": \"ecapa\", \"seconds\": {:.2}, \"batch1_ms\": {:.1}, \"batch8_ms\": {:.1}, \"peak_rss_mb\": {:.0}}}",
        voxbrain::fastmath::simd_path(),
        if int8 {
            format!("\"{}\"", voxbrain::nnet::qgemm::int8_path())
        } else {
            "null".into()
        },
        wav.dim(0)? as f64 / m.sample_rate() as f64,
        median(t1),
        median(t8),
        peak_rss_mb()
    );
    Ok(())
}
