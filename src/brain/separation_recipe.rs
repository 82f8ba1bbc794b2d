//! `voxbrain train-separation`: a SepFormer trained from scratch, as SpeechBrain's separation
//! recipes do, from one `hyperparams.yaml` that is both the recipe's and the trained model's
//! (an inference yaml like `speechbrain/sepformer-wsj02mix`'s, plus the training keys below),
//! so `OUT/model` loads in `SepformerSeparation.from_hparams` of either library.
//!
//! Training keys (SpeechBrain's names): `seed`, `number_of_epochs`, `batch_size`, `lr` (Adam),
//! `clip_grad_norm`, `threshold_byloss`, `threshold`, `ckpt_interval_minutes`. Checkpoints go to
//! `OUT/save` (a killed run resumes there); `OUT/steps.jsonl` and `OUT/results.json` (the test
//! set's SI-SNR improvement per mixture and its mean) are written beside `OUT/model`.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::json;

use super::separation::{separation_dataset, Separation};
use super::{Brain, BrainError, BrainOptions, Checkpointer, EpochCounter, OptimizerKind};
use crate::dataio::{DataLoaderOptions, DynamicItemDataset};
use crate::inference::separation::SepformerSeparation;
use crate::pretrained::hparams::Hparams;
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

fn key<T>(
    hp: &Hparams,
    name: &str,
    default: T,
    get: impl Fn(&crate::pretrained::hparams::Value) -> Option<T>,
) -> Result<T, BrainError> {
    match hp.get(name) {
        None => Ok(default),
        Some(v) => get(v).ok_or_else(|| {
            BrainError::Config(format!("{}: `{name}` has the wrong type", hp.origin()))
        }),
    }
}

/// Trains, exports and evaluates the recipe `cfg` (resuming from `OUT/save` if a checkpoint
/// is there).
pub fn train_separation(cfg: &SeparationRecipe) -> Result<SeparationReport, BrainError> {
    let out = &cfg.output_dir;
    std::fs::create_dir_all(out).map_err(|e| BrainError::Io(out.clone(), e))?;
    let _lock = crate::fsutil::DirLock::acquire(out, "a separation training run")
        .map_err(|e| BrainError::Io(out.clone(), e))?;
    let hp = Hparams::from_file(&cfg.hparams, cfg.overrides.as_deref())
        .map_err(|e| BrainError::Config(e.to_string()))?;
    let as_usize =
        |v: &crate::pretrained::hparams::Value| v.as_i64().and_then(|i| usize::try_from(i).ok());
    let seed = key(&hp, "seed", 1234u64, |v| v.as_i64().map(|i| i as u64))?;
    let epochs = key(&hp, "number_of_epochs", 10, as_usize)?;
    let batch_size = key(&hp, "batch_size", 1, as_usize)?.max(1);
    let lr = key(&hp, "lr", 1.5e-4, |v| v.as_f64())?;
    let clip = key(&hp, "clip_grad_norm", 5.0, |v| v.as_f64())?;
    let by_loss = key(&hp, "threshold_byloss", true, |v| v.as_bool())?;
    let threshold = key(&hp, "threshold", -30.0, |v| v.as_f64())?;
    let ckpt_minutes = key(&hp, "ckpt_interval_minutes", 5.0, |v| v.as_f64())?;

    crate::runtime::tune_allocator();
    let mut model = SepformerSeparation::build(&hp, &Device::Cpu)
        .map_err(|e| BrainError::Config(format!("{}: {e}", cfg.hparams.display())))?;
    model.model_mut().init_like_torch(seed)?;
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
    brain.export(&cfg.hparams, &model_dir)?;
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
