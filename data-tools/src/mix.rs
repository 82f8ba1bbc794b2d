//! `voxbrain-data mix`: two-speaker mixtures (WSJ0-2mix / Libri2Mix style) for separation.
//!
//! Each mixture takes two utterances of different speakers, resamples both to the target
//! rate, cuts them to the shorter one ("min" mode), scales the second so that the first is
//! `snr` dB above it, and sums them. If anything would clip, all three signals are scaled by
//! the same factor. Writes `mix/`, `s1/`, `s2/` 16-bit wavs and a manifest
//! (`mixtures.json`, SpeechBrain's shape, paths as `{data_root}/...`, plus `mixtures.csv` with
//! `$data_root/...`, the placeholder SpeechBrain's CSV loader replaces).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use voxbrain::audio::{load_audio, write_wav, ChannelMix, WavFormat, Waveform};
use voxbrain::dataio::librispeech::{parse_librispeech, ParseOptions};
use voxbrain::dataio::{write_manifest, ManifestFormat};

/// Settings of [`mix`].
#[derive(Debug, Clone)]
pub struct MixOptions {
    pub corpus: PathBuf,
    pub out: PathBuf,
    pub count: usize,
    pub sample_rate: u32,
    pub snr: f64,
    pub seed: u64,
}

/// One manifest row.
struct MixRow {
    id: String,
    /// mix, s1, s2 paths relative to the output folder.
    wavs: [String; 3],
    seconds: f64,
    spk1: String,
    spk2: String,
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len().max(1) as f64
}

fn load(path: &str, rate: u32) -> Result<Vec<f32>> {
    let t = load_audio(path, rate, ChannelMix::AvgToMono)?;
    Ok(t.to_vec1::<f32>()?)
}

/// Mixes `s1` and `s2` (cut to the shorter) with `s1` `snr` dB above `s2`.
/// Returns (mix, s1, s2 scaled), peak-normalized to 0.9 if needed.
pub fn mix_pair(s1: &[f32], s2: &[f32], snr: f64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = s1.len().min(s2.len());
    let (a, b) = (&s1[..n], &s2[..n]);
    let (p1, p2) = (power(a), power(b));
    let gain = if p2 > 0.0 {
        (p1 / (p2 * 10f64.powf(snr / 10.0))).sqrt() as f32
    } else {
        1.0
    };
    let mut s1o = a.to_vec();
    let mut s2o: Vec<f32> = b.iter().map(|v| v * gain).collect();
    let mut m: Vec<f32> = s1o.iter().zip(&s2o).map(|(x, y)| x + y).collect();
    let peak = m
        .iter()
        .chain(&s1o)
        .chain(&s2o)
        .fold(0.0f32, |acc, v| acc.max(v.abs()));
    if peak > 0.9 {
        let k = 0.9 / peak;
        for v in m.iter_mut().chain(s1o.iter_mut()).chain(s2o.iter_mut()) {
            *v *= k;
        }
    }
    (m, s1o, s2o)
}

/// Builds the mixtures; returns how many were written.
pub fn mix(opts: &MixOptions) -> Result<usize> {
    let (df, _) = parse_librispeech(&opts.corpus, &ParseOptions::default())?;
    let ids: Vec<String> = df
        .column("id")?
        .str()?
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect();
    let paths: Vec<String> = df
        .column("file_path")?
        .str()?
        .iter()
        .map(|s| s.unwrap_or("").to_string())
        .collect();
    let spk: Vec<&str> = ids
        .iter()
        .map(|i| i.split('-').next().unwrap_or(""))
        .collect();
    if spk.iter().all(|s| *s == spk[0]) {
        bail!(
            "{}: mixing needs at least two speakers",
            opts.corpus.display()
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut rows: Vec<MixRow> = Vec::new();
    let mut used = std::collections::HashSet::new();
    let mut attempts = 0usize;
    while rows.len() < opts.count {
        attempts += 1;
        if attempts > 50 * opts.count + 100 {
            tracing::warn!(
                made = rows.len(),
                "not enough distinct speaker pairs for more mixtures"
            );
            break;
        }
        let i = rng.random_range(0..ids.len());
        let j = rng.random_range(0..ids.len());
        if spk[j] == spk[i] || !used.insert((i, j)) {
            continue;
        }
        let (m, a, b) = mix_pair(
            &load(&paths[i], opts.sample_rate)?,
            &load(&paths[j], opts.sample_rate)?,
            opts.snr,
        );
        let id = format!("{}_{}", ids[i], ids[j]);
        let mut rel = Vec::new();
        for (dir, sig) in [("mix", m), ("s1", a), ("s2", b)] {
            let path = opts.out.join(dir).join(format!("{id}.wav"));
            std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
                .with_context(|| format!("creating {}", opts.out.join(dir).display()))?;
            let n = sig.len();
            write_wav(
                &path,
                &Waveform::mono(sig, opts.sample_rate),
                WavFormat::Int16,
            )?;
            rel.push((format!("{dir}/{id}.wav"), n));
        }
        let secs = rel[0].1 as f64 / opts.sample_rate as f64;
        rows.push(MixRow {
            id,
            wavs: [rel[0].0.clone(), rel[1].0.clone(), rel[2].0.clone()],
            seconds: secs,
            spk1: format!("speaker_{}", spk[i]),
            spk2: format!("speaker_{}", spk[j]),
        });
    }
    // JSON manifests use `{data_root}` (str.format_map), CSV ones `$data_root` (load_data_csv).
    write_manifest(
        &frame(&rows, opts.snr, "{data_root}")?,
        opts.out.join("mixtures.json"),
        ManifestFormat::Json,
    )?;
    write_manifest(
        &frame(&rows, opts.snr, "$data_root")?,
        opts.out.join("mixtures.csv"),
        ManifestFormat::Csv,
    )?;
    Ok(rows.len())
}

/// The manifest of `rows`, paths under `root` (the data-root placeholder).
fn frame(rows: &[MixRow], snr: f64, root: &str) -> Result<DataFrame> {
    let strings = |name: &str, f: fn(&MixRow) -> &str| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<_>>())
    };
    let path = |name: &str, i: usize| {
        let v: Vec<String> = rows
            .iter()
            .map(|r| format!("{root}/{}", r.wavs[i]))
            .collect();
        Column::new(name.into(), v)
    };
    Ok(DataFrame::new_infer_height(vec![
        strings("id", |r| &r.id),
        path("mix_wav", 0),
        path("s1_wav", 1),
        path("s2_wav", 2),
        Column::new(
            "length".into(),
            rows.iter().map(|r| r.seconds).collect::<Vec<_>>(),
        ),
        Column::new("snr".into(), vec![snr; rows.len()]),
        strings("spk1", |r| &r.spk1),
        strings("spk2", |r| &r.spk2),
    ])?)
}
