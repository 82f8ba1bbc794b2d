//! `voxbrain train-separation`: a SepFormer trained from scratch, as SpeechBrain's separation
//! recipes do, from one `hyperparams.yaml` that is both the recipe's and the trained model's
//! (an inference yaml like `speechbrain/sepformer-wsj02mix`'s, plus the training keys below),
//! so `OUT/model` loads in `SepformerSeparation.from_hparams` of either library.
//!
//! Training keys (SpeechBrain's names): `seed`, `number_of_epochs`, `batch_size`, `lr` (Adam),
//! `lr_final` (optional: a straight line from `lr` in the first epoch to `lr_final` in the
//! last, SpeechBrain's `LinearScheduler`), `lr_decay_epochs` (voxbrain's, with `lr_final`: `lr`
//! held, then the line over only the last this many epochs), `clip_grad_norm`, `threshold_byloss`, `threshold`, `ckpt_interval_minutes`. Checkpoints go to
//! `OUT/save` (a killed run resumes there); `OUT/steps.jsonl` and `OUT/results.json` (the test
//! set's SI-SNR improvement per mixture and its mean) are written beside `OUT/model`.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::json;

use super::separation::{separation_dataset, Separation};
use super::{
    Brain, BrainError, BrainOptions, Checkpointer, EpochCounter, LinearScheduler, OptimizerKind,
};
use crate::dataio::{DataLoaderOptions, DynamicItemDataset};
use crate::inference::separation::SepformerSeparation;
use crate::pretrained::hparams::{Hparams, Kwargs};
use crate::pretrained::Pretrained;

/// Settings of [`train_separation`].
#[derive(Debug, Clone)]
pub struct SeparationRecipe {
    /// The recipe's `hyperparams.yaml`.
    pub hparams: PathBuf,
    /// YAML overrides (e.g. `number_of_epochs: 2`).
    pub overrides: Option<String>,
    /// Manifests with `mix_wav`, `s1_wav`, `s2_wav` (`voxbrain-data mix` writes them).
    pub train: PathBuf,
    /// Validation manifest.
    pub valid: Option<PathBuf>,
    /// Test manifest: SI-SNRi of the trained model on it goes to `results.json`.
    pub test: Option<PathBuf>,
    /// Output folder.
    pub output_dir: PathBuf,
    /// Hide the progress bars.
    pub noprogressbar: bool,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct SeparationReport {
    /// `(epoch, train SI-SNR, valid SI-SNR)` of the epochs run in this process.
    pub epochs: Vec<(usize, f64, Option<f64>)>,
    /// Mean SI-SNR improvement (dB) on the test set, when one was given.
    pub test_si_snri: Option<f64>,
    /// The exported model folder.
    pub model_dir: PathBuf,
}

/// Trains, exports and evaluates the recipe `cfg` (resuming from `OUT/save` if a checkpoint
/// is there).
pub fn train_separation(cfg: &SeparationRecipe) -> Result<SeparationReport, BrainError> {
    let out = &cfg.output_dir;
    let (_lock, hp, model_yaml) = open_recipe(
        out,
        &cfg.hparams,
        cfg.overrides.as_deref(),
        "a separation training run",
    )?;
    let kw = Kwargs::top_level(&hp);
    let bad = |e: String| BrainError::Config(format!("{}: {e}", cfg.hparams.display()));
    let seed = kw.usize("seed", 1234).map_err(bad)? as u64;
    let epochs = kw.usize("number_of_epochs", 10).map_err(bad)?;
    let batch_size = kw.usize("batch_size", 1).map_err(bad)?.max(1);
    let lr = kw.f64("lr", 1.5e-4).map_err(bad)?;
    // `lr_final` / `lr_decay_epochs`: SpeechBrain's LinearScheduler, over the last epochs.
    let lr_linear = LinearScheduler::from_recipe(&kw, lr, epochs).map_err(bad)?;
    let clip = kw.f64("clip_grad_norm", 5.0).map_err(bad)?;
    let by_loss = kw.bool("threshold_byloss", true).map_err(bad)?;
    let threshold = kw.f64("threshold", -30.0).map_err(bad)?;
    let ckpt_minutes = kw.f64("ckpt_interval_minutes", 5.0).map_err(bad)?;

    crate::runtime::tune_allocator();
    let mut model = SepformerSeparation::build(&hp, &Device::Cpu)
        .map_err(|e| BrainError::Config(format!("{}: {e}", cfg.hparams.display())))?;
    model.model_mut().init_like_torch(seed)?;
    crate::nnet::dropout::seed_dropout(seed);
    let train = separation_dataset(&cfg.train)?;
    let valid = cfg.valid.as_deref().map(separation_dataset).transpose()?;
    tracing::info!(
        "training a SepFormer on {} mixtures{} for {epochs} epochs",
        train.len(),
        valid
            .as_ref()
            .map(|v| format!(", validating on {}", v.len()))
            .unwrap_or_default()
    );
    let opts = BrainOptions {
        max_grad_norm: clip,
        ckpt_interval_minutes: ckpt_minutes,
        noprogressbar: cfg.noprogressbar,
        steps_log: Some(out.join("steps.jsonl")),
        ..Default::default()
    };
    let opt_class: super::OptClass = Box::new(move |p| OptimizerKind::Adam.build(p, lr, 0.0));
    let mut brain = Separation::new(model, Some(opt_class), opts);
    brain.threshold_byloss = by_loss.then_some(threshold);
    brain.lr_linear = lr_linear;
    brain.core_mut().checkpointer = Some(Checkpointer::new(out.join("save")));
    let loader = DataLoaderOptions::batch_size(batch_size);
    brain.fit(
        EpochCounter::new(epochs),
        &train,
        valid.as_ref(),
        loader.clone(),
        loader,
    )?;
    let model_dir = out.join("model");
    brain.export(&model_yaml, &model_dir)?;
    brain.model.model_mut().set_train(false);
    let test_si_snri = match &cfg.test {
        Some(t) => Some(evaluate(
            &brain.model,
            &separation_dataset(t)?,
            &out.join("results.json"),
        )?),
        None => None,
    };
    Ok(SeparationReport {
        epochs: brain.epoch_stats.clone(),
        test_si_snri,
        model_dir,
    })
}

/// A recipe run's start: `out` created and locked against a second run, the recipe's yaml
/// read and resolved with `overrides`, and the yaml the trained model is exported with (the
/// recipe's, overrides written in: it must be the one the model was built from).
pub(crate) fn open_recipe(
    out: &Path,
    hparams: &Path,
    overrides: Option<&str>,
    what: &str,
) -> Result<(crate::fsutil::DirLock, Hparams, String), BrainError> {
    let io = |p: &Path, e: std::io::Error| BrainError::Io(p.to_path_buf(), e);
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let lock = crate::fsutil::DirLock::acquire(out, what).map_err(|e| io(out, e))?;
    let text = std::fs::read_to_string(hparams).map_err(|e| io(hparams, e))?;
    let origin = hparams.display().to_string();
    let hp = Hparams::from_str(&text, &origin, overrides)
        .map_err(|e| BrainError::Config(e.to_string()))?;
    let model_yaml = with_overrides(&text, overrides)
        .map_err(|e| BrainError::Config(format!("--overrides: {e}")))?;
    Ok((lock, hp, model_yaml))
}

/// `text` with each top-level `key: value` of `overrides` written in place of the file's own
/// line for that key (or appended): the yaml a trained model is exported with. Nested
/// overrides cannot be written back this way and are refused (they would leave a yaml that
/// does not describe the checkpoints).
pub(crate) fn with_overrides(text: &str, overrides: Option<&str>) -> Result<String, String> {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    for o in overrides.unwrap_or("").lines() {
        if o.trim().is_empty() || o.trim_start().starts_with('#') {
            continue;
        }
        // `key: value` at column 0 (a leading space or a dot fails the character check).
        let (key, value) = o.split_once(':').unwrap_or((o, ""));
        let plain = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !value.trim().is_empty();
        if !plain {
            return Err(format!(
                "only top-level `key: value` overrides are supported, not {o:?}"
            ));
        }
        let prefix = format!("{key}:");
        match lines.iter_mut().find(|l| l.starts_with(&prefix)) {
            Some(l) => *l = o.to_string(),
            None => lines.push(o.to_string()),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// SI-SNR improvement (dB, best permutation) of every mixture of `ds`, written to `path`;
/// returns the mean.
pub fn evaluate(
    model: &SepformerSeparation,
    ds: &DynamicItemDataset,
    path: &Path,
) -> Result<f64, BrainError> {
    let mut rows = Vec::new();
    for i in 0..ds.len() {
        let item = ds.get(i)?;
        let id = item.str("id")?.to_string();
        let sig =
            |k: &str| -> Result<Vec<f32>, BrainError> { Ok(item.tensor(k)?.to_vec1::<f32>()?) };
        let (mix, s1, s2) = (sig("mix_sig")?, sig("s1_sig")?, sig("s2_sig")?);
        let x = candle_core::Tensor::from_slice(&mix, (1, mix.len()), &Device::Cpu)?;
        let est = model
            .separate_batch(&x)
            .map_err(|e| BrainError::Config(format!("{id}: {e}")))?
            .squeeze(0)?
            .t()?
            .contiguous()?
            .to_vec2::<f32>()?;
        let score = crate::metrics::separation::pit_si_snri(&est, &[s1, s2], &mix)
            .ok_or_else(|| BrainError::Config(format!("{id}: no sources to score")))?;
        rows.push(json!({"id": id, "si_snri_db": score.per_source, "mean_db": score.mean}));
    }
    let mean = rows
        .iter()
        .map(|r| r["mean_db"].as_f64().unwrap_or(f64::NAN))
        .sum::<f64>()
        / rows.len().max(1) as f64;
    let text = serde_json::to_string_pretty(&json!({"mixtures": rows, "si_snri_db": mean}))
        .map_err(|e| BrainError::Config(e.to_string()))?;
    crate::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| BrainError::Io(path.to_path_buf(), e))?;
    tracing::info!("test SI-SNRi {mean:.2} dB over {} mixtures", rows.len());
    Ok(mean)
}

#[cfg(test)]
mod tests {
    use super::with_overrides;

    #[test]
    fn overrides_are_written_into_the_exported_yaml() {
        let yaml = "# c\nseed: 1\nnumber_of_epochs: 30\nEnc: !new:a.B\n  n: 3\n";
        let got = with_overrides(yaml, Some("number_of_epochs: 2\nlr: 0.01")).unwrap();
        assert_eq!(
            got,
            "# c\nseed: 1\nnumber_of_epochs: 2\nEnc: !new:a.B\n  n: 3\nlr: 0.01\n"
        );
        assert_eq!(with_overrides(yaml, None).unwrap(), yaml);
        for bad in ["Enc:\n  n: 4", "  n: 4", "Enc:", "a.b: 1"] {
            assert!(with_overrides(yaml, Some(bad)).is_err(), "{bad}");
        }
    }
}
