//! `voxbrain tour`: runs the tutorial steps that voxbrain supports so far, on bundled speech
//! (or on the user's files), and writes what each step produces.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Args;
use voxbrain::audio::{load_audio, read_waveform, write_wav, ChannelMix, WavFormat};
use voxbrain::features::{Fbank, FbankConfig, InputNormalization, NormType};
use voxbrain::npy::write_npy;

/// Three short espeak-ng utterances (22.05 kHz), so the tour runs offline.
const BUNDLED: [(&str, &[u8]); 3] = [
    (
        "speech_0.wav",
        include_bytes!("../../../tests/fixtures/foundation/speech_0.wav"),
    ),
    (
        "speech_1.wav",
        include_bytes!("../../../tests/fixtures/foundation/speech_1.wav"),
    ),
    (
        "speech_2.wav",
        include_bytes!("../../../tests/fixtures/foundation/speech_2.wav"),
    ),
];

#[derive(Args, Debug)]
pub struct TourArgs {
    /// Where the tour writes its outputs (created if missing).
    #[arg(long, default_value = "voxbrain_tour")]
    pub out_dir: PathBuf,
    /// Audio files to use instead of the bundled utterances.
    #[arg(long, num_args = 1..)]
    pub audio: Vec<PathBuf>,
}

pub fn run(a: TourArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    let inputs: Vec<PathBuf> = if a.audio.is_empty() {
        let dir = a.out_dir.join("inputs");
        std::fs::create_dir_all(&dir)?;
        BUNDLED
            .iter()
            .map(|(name, bytes)| {
                let p = dir.join(name);
                std::fs::write(&p, bytes).map(|_| p)
            })
            .collect::<Result<_, _>>()?
    } else {
        a.audio.clone()
    };

    println!("== Step 1: reading audio (speechbrain.dataio.dataio.read_audio)");
    for p in &inputs {
        let w = read_waveform(p)?;
        println!(
            "  {}: {} Hz, {} channel(s), {:.2} s",
            p.display(),
            w.sample_rate,
            w.num_channels(),
            w.duration()
        );
    }

    println!("== Step 2: load_audio -> 16 kHz mono, Fbank (speechbrain.lobes.features.Fbank)");
    let fbank = Fbank::new(FbankConfig::default())?;
    let mut feats_all = Vec::new();
    for p in &inputs {
        let wav: Vec<f32> = load_audio(p, 16000, ChannelMix::AvgToMono)?.to_vec1()?;
        let stem = p.file_stem().unwrap_or_default().to_string_lossy();
        let wav16 = a.out_dir.join(format!("{stem}_16k.wav"));
        write_wav(
            &wav16,
            &voxbrain::audio::Waveform::mono(wav.clone(), 16000),
            WavFormat::Int16,
        )?;
        let t0 = std::time::Instant::now();
        let feats = fbank.compute(&wav);
        let frames = fbank.num_frames(wav.len());
        let out = a.out_dir.join(format!("{stem}_fbank.npy"));
        write_npy(&out, &[frames, fbank.n_features()], &feats)?;
        println!(
            "  {stem}: {frames} frames x {} mels in {:.2} ms -> {}",
            fbank.n_features(),
            t0.elapsed().as_secs_f64() * 1e3,
            out.display()
        );
        feats_all.push((frames, feats));
    }

    println!("== Step 3: InputNormalization (sentence) over a padded batch with relative lengths");
    let max_frames = feats_all.iter().map(|(f, _)| *f).max().unwrap_or(0);
    let n_mels = fbank.n_features();
    let mut padded = vec![0.0f32; feats_all.len() * max_frames * n_mels];
    let mut lens = Vec::new();
    for (i, (frames, f)) in feats_all.iter().enumerate() {
        padded[i * max_frames * n_mels..i * max_frames * n_mels + f.len()].copy_from_slice(f);
        lens.push(*frames as f32 / max_frames as f32);
    }
    let x = Tensor::from_vec(padded, (feats_all.len(), max_frames, n_mels), &Device::Cpu)?;
    let lens_t = Tensor::from_vec(lens.clone(), lens.len(), &Device::Cpu)?;
    let y = InputNormalization::new(NormType::Sentence).forward(&x, Some(&lens_t), None)?;
    println!(
        "  batch {:?}, wav_lens {:?}, normalised mean {:.2e}",
        y.dims(),
        lens,
        y.get(0)?
            .narrow(0, 0, feats_all[0].0)?
            .mean_all()?
            .to_scalar::<f32>()?
    );

    println!("== Next tutorial steps (ASR, speaker verification, separation, data pipeline,");
    println!("   fine-tuning, Pretrainer) arrive with the model issues; see README.md.");
    println!("Outputs are in {}", a.out_dir.display());
    Ok(())
}
