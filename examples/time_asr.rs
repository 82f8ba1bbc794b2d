//! Times EncoderDecoderASR on one file and writes its encoder output and beam-search tokens;
//! used by `data-tools/reference/full_size_asr.sh` beside SpeechBrain
//! (`bench_speechbrain.py asr`).
//!
//! ```text
//! cargo run --release --example time_asr -- <model_dir> <wav> <out.json> [repeats]
//! cargo run --release --example time_asr -- <model_dir> --long <wav> [--decoding greedy|beam]
//!     [--out tokens.json]
//! ```
//!
//! The first form writes `out.json` ({"tokens", "text", "enc_shape"}) and the encoder states
//! `[1, T', D]` beside it (`out.npy`), times `encode_batch` and `transcribe_batch` (the yaml's
//! decoding: beam search with its scorers; median of `repeats`, after one warm-up run) and
//! prints one JSON line {impl, what: "asr", seconds, encode_ms, transcribe_ms, tokens,
//! peak_rss_mb}.
//!
//! The second form transcribes a long recording as `transcribe_file` does (split into chunks
//! at quiet points, one chunk at a time) and prints {impl, what: "asr_long", seconds,
//! decoding, chunks, load_s, wall_s, tokens (count), chars, peak_rss_mb}; `--out` also writes
//! {"tokens", "text"}.

#[path = "common/timing.rs"]
mod timing;

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use timing::{median, peak_rss_mb};
use voxbrain::inference::{DecodingMethod, EncoderDecoderASR};
use voxbrain::pretrained::FromHparamsOptions;

fn load(dir: &str, save: &Path) -> anyhow::Result<EncoderDecoderASR> {
    // SB-layout dirs whose yaml pretrainer names hub paths: the local files must win, offline.
    if std::env::var_os("HF_HUB_OFFLINE").is_none() {
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    EncoderDecoderASR::from_hparams(
        dir,
        &FromHparamsOptions {
            savedir: Some(save.to_path_buf()),
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {dir}"))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!(
            "usage: time_asr <model_dir> <wav> <out.json> [repeats]\n       \
             time_asr <model_dir> --long <wav> [--decoding greedy|beam] [--out tokens.json]"
        );
    }
    if args[2] == "--long" {
        return long(&args[1], &args[3], &args[4..]);
    }
    let (dir, wav_path, out) = (&args[1], &args[2], Path::new(&args[3]));
    let repeats: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let save = tempfile::tempdir()?;
    let m = load(dir, save.path())?;
    let wav = m.load_audio(wav_path)?;
    let seconds = wav.dim(0)? as f64 / m.sample_rate() as f64;
    let wavs = wav.unsqueeze(0)?;

    let enc = m.encode_batch(&wavs, None)?;
    let v: Vec<f32> = enc.flatten_all()?.to_vec1()?;
    voxbrain::npy::write_npy(out.with_extension("npy"), enc.dims(), &v)?;
    let (texts, tokens) = m.transcribe_batch(&wavs, None)?;
    voxbrain::fsutil::write_atomic(
        out,
        serde_json::json!({"tokens": tokens[0], "text": texts[0], "enc_shape": enc.dims()})
            .to_string()
            .as_bytes(),
    )?;

    let (mut te, mut tt) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let t = Instant::now();
        m.encode_batch(&wavs, None)?;
        te.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let (_, again) = m.transcribe_batch(&wavs, None)?;
        tt.push(t.elapsed().as_secs_f64() * 1e3);
        if again != tokens {
            bail!("transcribe_batch is not deterministic: {again:?} vs {tokens:?}");
        }
    }
    let line = serde_json::json!({
        "impl": "voxbrain", "simd": voxbrain::fastmath::simd_path(), "what": "asr",
        "seconds": (seconds * 100.0).round() / 100.0,
        "encode_ms": (median(te) * 10.0).round() / 10.0,
        "transcribe_ms": (median(tt) * 10.0).round() / 10.0,
        "tokens": tokens[0],
        "peak_rss_mb": peak_rss_mb().round(),
    });
    println!("{line}");
    Ok(())
}

/// A long recording, transcribed chunk by chunk (`transcribe_file`'s path, with the tokens).
fn long(dir: &str, wav_path: &str, rest: &[String]) -> anyhow::Result<()> {
    let (mut decoding, mut out) = (DecodingMethod::BeamSearch, None);
    for pair in rest.chunks(2) {
        match pair {
            [flag, d] if flag == "--decoding" => {
                decoding = match d.as_str() {
                    "beam" => DecodingMethod::BeamSearch,
                    "greedy" => DecodingMethod::Greedy,
                    _ => bail!("--decoding: beam or greedy, not {d}"),
                }
            }
            [flag, p] if flag == "--out" => out = Some(p.clone()),
            _ => bail!("unexpected arguments {rest:?}"),
        }
    }
    let save = tempfile::tempdir()?;
    let t = Instant::now();
    let mut m = load(dir, save.path())?;
    let load_s = t.elapsed().as_secs_f64();
    m.decoding = decoding;

    let t = Instant::now();
    let wav = m.load_audio(wav_path)?;
    let samples: Vec<f32> = wav.to_vec1()?;
    let sr = m.sample_rate() as f32;
    let chunks = voxbrain::inference::chunk_bounds(&samples, sr, &m.chunking).len();
    drop(samples);
    let (text, tokens) = m.transcribe_signal_with_tokens(&wav)?;
    let wall_s = t.elapsed().as_secs_f64();
    if let Some(out) = out {
        voxbrain::fsutil::write_atomic(
            out.as_ref(),
            serde_json::json!({"tokens": tokens, "text": text})
                .to_string()
                .as_bytes(),
        )?;
    }
    let line = serde_json::json!({
        "impl": "voxbrain", "simd": voxbrain::fastmath::simd_path(), "what": "asr_long",
        "seconds": (wav.dim(0)? as f64 / sr as f64 * 100.0).round() / 100.0,
        "decoding": if decoding == DecodingMethod::Greedy { "greedy" } else { "beam" },
        "chunks": chunks,
        "load_s": (load_s * 100.0).round() / 100.0,
        "wall_s": (wall_s * 100.0).round() / 100.0,
        "tokens": tokens.len(),
        "chars": text.chars().count(),
        "peak_rss_mb": peak_rss_mb().round(),
    });
    println!("{line}");
    Ok(())
}
