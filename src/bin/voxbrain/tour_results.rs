//! The tour's model steps on real recorded speech (a LibriVox reader, J. F. Kennedy and a CMU
//! Sphinx test speaker, built into the binary): speaker verification and the PCA figure, ASR against the
//! oracle transcripts, separation of a mixture of the two with SI-SNRi, and a short
//! fine-tuning run. Each step adds its figures to `summary.json`, and only when its model is
//! real: a seeded model's output is shown as a pipeline check, never as a result.

use std::path::Path;

use serde_json::{json, Map, Value};
use voxbrain::audio::{write_wav, WavFormat, Waveform};
use voxbrain::brain::recipe::{fine_tune, FineTuneConfig};
use voxbrain::brain::{BrainOptions, OptimizerKind};
use voxbrain::inference::separation::make_mixture;
use voxbrain::inference::SpeakerRecognition;
use voxbrain::metrics::separation::pit_si_snri;
use voxbrain::metrics::wer::ErrorRateStats;
use voxbrain::pretrained::FromHparamsOptions;

use voxbrain::demo::{self, ModelSource as Source, Utterance as Utt};

/// SpeechBrain's default verification threshold.
const THRESHOLD: f32 = 0.25;

/// Speaker verification with every pair of real utterances, and the PCA figure.
pub fn speaker(
    out_dir: &Path,
    utts: &[Utt],
    offline: bool,
    s: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    println!("== Step 6: speaker verification (SpeakerRecognition.verify_files) on real speech");
    let (spk, src) = demo::speaker_model(out_dir, offline)?;
    println!("  model: {src}");
    record_model(s, "speaker", &src);
    let mut embs = Vec::new();
    for u in utts {
        let wav = spk.encoder.load_audio(&u.path)?;
        embs.push(spk.encoder.encode_batch(&wav, None, false)?.flatten_all()?);
    }
    if !src.is_real() {
        println!(
            "  pipeline ran on {} utterances (seeded weights: scores not shown)",
            utts.len()
        );
        return Ok(());
    }
    // The tutorial's two calls, as written there.
    let (a, b, c) = (&utts[0], &utts[1], &utts[utts.len() - 1]);
    for (x, y) in [(a, b), (a, c)] {
        let (score, same) = spk.verify_files(&x.path, &y.path)?;
        println!(
            "  verify_files({}, {}) = score {score:.4}, prediction {same}",
            x.id, y.id
        );
    }
    let mut pairs = Vec::new();
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for i in 0..utts.len() {
        for j in i + 1..utts.len() {
            let score = SpeakerRecognition::similarity(&embs[i], &embs[j])?.to_scalar::<f32>()?;
            let is_same = utts[i].speaker == utts[j].speaker;
            if is_same {
                same.push(score)
            } else {
                diff.push(score)
            }
            pairs.push(json!({"a": utts[i].id, "b": utts[j].id, "score": score,
                "prediction": score > THRESHOLD, "same_speaker": is_same}));
        }
    }
    let range = |v: &[f32]| {
        v.iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
    };
    let ((s_lo, s_hi), (d_lo, d_hi)) = (range(&same), range(&diff));
    let accepted = same.iter().filter(|&&x| x > THRESHOLD).count();
    let rejected = diff.iter().filter(|&&x| x <= THRESHOLD).count();
    println!("  {} same-speaker pairs: scores {s_lo:.3} to {s_hi:.3}, {accepted} above SpeechBrain's threshold {THRESHOLD}", same.len());
    println!(
        "  {} different-speaker pairs: scores {d_lo:.3} to {d_hi:.3}, {rejected} below it",
        diff.len()
    );
    let (eer, thr) = voxbrain::metrics::verification::eer(&same, &diff);
    println!("  EER {:.1}% (at threshold {thr:.3}); every same-speaker score above every different-speaker one: {}", eer * 100.0, s_lo > d_hi);
    s.insert("verification".into(), Value::Array(pairs));

    let rows: Vec<Vec<f32>> = embs
        .iter()
        .map(|e| e.to_vec1::<f32>())
        .collect::<Result<_, _>>()?;
    let pca = voxbrain::viz::Pca::fit(&rows, 2).map_err(anyhow::Error::msg)?;
    let points: Vec<(f64, f64)> = pca.transform(&rows).iter().map(|p| (p[0], p[1])).collect();
    let labels: Vec<String> = utts.iter().map(|u| u.speaker.clone()).collect();
    let fig = out_dir.join("speaker_pca.png");
    voxbrain::viz::scatter_plot(
        &points,
        &labels,
        "ECAPA embeddings of real speech (PCA)",
        &fig,
    )
    .map_err(anyhow::Error::msg)?;
    println!("  PCA of the embeddings: {}", fig.display());
    Ok(())
}

/// ASR of every real utterance against its oracle transcript.
pub fn asr(
    out_dir: &Path,
    utts: &[Utt],
    offline: bool,
    s: &mut Map<String, Value>,
) -> anyhow::Result<Source> {
    println!("== Step 5: speech recognition (EncoderDecoderASR.transcribe_file) on real speech");
    let (asr, src) = demo::asr_model(out_dir, offline)?;
    println!("  model: {src}");
    record_model(s, "asr", &src);
    if let Some(tok) = &asr.tokenizer {
        // The tutorial's text_pipeline: asr_model.tokenizer.encode_as_ids(words).
        let words = &utts[0].words;
        println!(
            "  tokenizer.encode_as_ids({words:?}) = {:?}",
            tok.encode_as_ids(words)?
        );
    }
    if !src.is_real() {
        let t0 = std::time::Instant::now();
        let text = asr.transcribe_file(&utts[0].path)?;
        println!(
            "  pipeline ran on {} ({} characters in {:.2} s; seeded weights: transcript not shown)",
            utts[0].id,
            text.len(),
            t0.elapsed().as_secs_f64()
        );
        return Ok(src);
    }
    // SpeechBrain's ErrorRateStats, one utterance at a time, as the tutorial scores them.
    let mut stats = ErrorRateStats::<String>::new();
    let mut rows = Vec::new();
    for u in utts {
        let t0 = std::time::Instant::now();
        let hyp = asr.transcribe_file(&u.path)?;
        let words = |t: &str| t.split_whitespace().map(String::from).collect::<Vec<_>>();
        stats.append(&[&u.id], &[words(&hyp)], &[words(&u.words)]);
        let w = stats.scores().last().map_or(f64::NAN, |d| d.wer);
        println!(
            "  {}: {hyp:?}\n    oracle {:?}: WER {w:.1}% ({:.2} s)",
            u.id,
            u.words,
            t0.elapsed().as_secs_f64()
        );
        rows.push(json!({"file": u.path.display().to_string(), "reference": u.words, "hypothesis": hyp, "wer": w}));
    }
    println!(
        "  WER over {} utterances: {:.2}%",
        utts.len(),
        stats.summarize().wer
    );
    s.insert("asr".into(), Value::Array(rows));
    if src.kind == demo::ModelKind::Trained {
        // A model trained on synthetic speech, also shown on what it learned: utterances of
        // the recipe's held-out voices and sentences.
        let mut stats = ErrorRateStats::<String>::new();
        for (i, (path, reference)) in demo::heldout_synthetic_utterances(out_dir)?
            .iter()
            .enumerate()
        {
            let hyp = asr.transcribe_file(path)?;
            let words = |t: &str| t.split_whitespace().map(String::from).collect::<Vec<_>>();
            stats.append(
                &[&format!("heldout_{i}")],
                &[words(&hyp)],
                &[words(reference)],
            );
            println!(
                "  held-out synthetic {}: {hyp:?}\n    oracle {reference:?}",
                path.display()
            );
        }
        let wer = stats.summarize().wer;
        println!("  WER over the held-out synthetic utterances: {wer:.2}%");
        s.insert("asr_synthetic".into(), json!({"wer": wer}));
    }
    Ok(src)
}

/// Separation of a mixture of two real speakers, with SI-SNRi.
pub fn separation(
    out_dir: &Path,
    utts: &[Utt],
    offline: bool,
    s: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    println!("== Step 7: source separation (SepformerSeparation.separate_file) on a real two-speaker mixture");
    let (sep, src) = demo::separation_model(out_dir, offline)?;
    println!("  model: {src}");
    record_model(s, "separation", &src);
    let sr = sep.sample_rate();
    let first = |spk: &str| utts.iter().find(|u| u.speaker == spk).or(utts.first());
    let (a, b) = (first("librivox_austen"), first("jfk_inaugural"));
    let (Some(a), Some(b)) = (a, b) else {
        return Ok(());
    };
    // The tutorial's mixture: both resampled, cropped to the shorter, added.
    let (mix, s1, s2) = make_mixture(&a.path, &b.path, sr)?;
    let n = mix.len();
    write_wav(
        out_dir.join("mixture.wav"),
        &Waveform::mono(mix.clone(), sr),
        WavFormat::Float32,
    )?;
    let x = candle_core::Tensor::from_slice(&mix, (1, n), &candle_core::Device::Cpu)?;
    let est = sep.separate_batch(&x)?; // [1, time, 2]
    sep.save_sources(&est, out_dir, "separated")?;
    let est = est.squeeze(0)?.t()?.contiguous()?;
    let sources: Vec<Vec<f32>> = (0..est.dim(0)?)
        .map(|i| est.get(i)?.to_vec1())
        .collect::<Result<_, _>>()?;
    println!(
        "  mixture of {} and {} at {sr} Hz -> {} estimated sources in {}",
        a.id,
        b.id,
        sources.len(),
        out_dir.display()
    );
    if !src.is_real() {
        println!("  (seeded weights: SI-SNRi not reported)");
        return Ok(());
    }
    if let Some(score) = si_snri(&sources, &[s1, s2], &mix) {
        println!(
            "  SI-SNRi {:.2} dB (per source {:.2?})",
            score.mean, score.per_source
        );
        s.insert("separation".into(), json!({"si_snri_db": score.mean}));
    }
    if src.kind == demo::ModelKind::Trained {
        // A model trained on synthetic speech, also shown on what it learned: a mixture of
        // the recipe's held-out voices and sentences.
        let [m, a, b] = demo::heldout_synthetic_mixture(out_dir)?;
        let load = |p: &Path| -> anyhow::Result<Vec<f32>> {
            Ok(
                voxbrain::audio::load_audio(p, sr, voxbrain::audio::ChannelMix::AvgToMono)?
                    .to_vec1::<f32>()?,
            )
        };
        let (mix, s1, s2) = (load(&m)?, load(&a)?, load(&b)?);
        let x = candle_core::Tensor::from_slice(&mix, (1, mix.len()), &candle_core::Device::Cpu)?;
        let est = sep.separate_batch(&x)?.squeeze(0)?.t()?.contiguous()?;
        let sources: Vec<Vec<f32>> = est.to_vec2()?;
        if let Some(score) = si_snri(&sources, &[s1, s2], &mix) {
            println!(
                "  held-out synthetic mixture ({}): SI-SNRi {:.2} dB (per source {:.2?})",
                m.display(),
                score.mean,
                score.per_source
            );
            s.insert(
                "separation_synthetic".into(),
                json!({"si_snri_db": score.mean}),
            );
        }
    }
    Ok(())
}

/// PIT SI-SNR improvement of `sources` over `mix`, all cut to the shortest.
fn si_snri(
    sources: &[Vec<f32>],
    targets: &[Vec<f32>],
    mix: &[f32],
) -> Option<voxbrain::metrics::separation::PitScore> {
    let len = sources
        .iter()
        .chain(targets)
        .map(Vec::len)
        .min()
        .unwrap_or(0)
        .min(mix.len());
    let trim = |v: &[Vec<f32>]| v.iter().map(|x| x[..len].to_vec()).collect::<Vec<_>>();
    pit_si_snri(&trim(sources), &trim(targets), &mix[..len])
}

/// The tutorial's fine-tuning on the real utterances (a short run, 2 epochs).
pub fn fine_tuning(
    out_dir: &Path,
    utts: &[Utt],
    asr: &Source,
    s: &mut Map<String, Value>,
) -> anyhow::Result<()> {
    println!("== Step 8: fine-tuning the ASR (EncDecFineTune + Brain.fit) on the real utterances");
    let dir = out_dir.join("finetune");
    std::fs::create_dir_all(&dir)?;
    let mut manifest = Map::new();
    for u in utts {
        manifest.insert(u.id.clone(), json!({"file_path": u.path.display().to_string(), "words": u.words, "spkID": u.speaker, "length": u.length}));
    }
    let data = dir.join("train.json");
    crate::tour::write_file(&data, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    // The tutorial's settings (SGD 1e-5, 2 epochs) for a real model; a seeded one gets Adam
    // and more epochs so that the curve shows the loop learning.
    let (optimizer, lr, epochs) = if asr.is_real() {
        (OptimizerKind::Sgd, 1e-5, 2)
    } else {
        (OptimizerKind::Adam, 1e-3, 12)
    };
    let cfg = FineTuneConfig {
        source: asr.source.clone(),
        model: FromHparamsOptions {
            savedir: Some(dir.join("pretrained")),
            ..Default::default()
        },
        train: data,
        valid: None,
        epochs,
        batch_size: 4,
        lr,
        optimizer,
        momentum: 0.0,
        label_smoothing: 0.1,
        select_n: Some(100),
        newbob: false,
        brain: BrainOptions {
            noprogressbar: !std::io::IsTerminal::is_terminal(&std::io::stderr()),
            ..Default::default()
        },
        output_dir: dir.join("run"),
    };
    // A demo run starts fresh (fine_tune would resume a finished run and train nothing).
    if cfg.output_dir.exists() {
        std::fs::remove_dir_all(&cfg.output_dir)?;
    }
    let t0 = std::time::Instant::now();
    let report = fine_tune(&cfg)?;
    let losses: Vec<f64> = report.epochs.iter().map(|e| e.1).collect();
    println!("  {optimizer:?} lr {lr}: train loss per epoch {losses:.4?} ({} steps, {:.1} s); loss curve {}, model {}",
        report.step_losses.len(), t0.elapsed().as_secs_f64(), cfg.output_dir.join("loss.png").display(), report.model_dir.display());
    if let (Some(first), Some(last)) = (losses.first(), losses.last()) {
        println!("  epoch 1 -> {epochs}: train loss {first:.3} -> {last:.3}");
    }
    s.insert(
        "fine_tuning".into(),
        json!({"losses": losses, "step_losses": report.step_losses, "model": asr.kind.as_str()}),
    );
    Ok(())
}

fn record_model(s: &mut Map<String, Value>, key: &str, src: &Source) {
    let models = s.entry("models").or_insert_with(|| json!({}));
    models[key] = json!({"source": src.source, "kind": src.kind.as_str()});
}
