//! SpeechBrain's separation recipe Brain (`recipes/WSJ0Mix/separation/train.py`, class
//! `Separation`) over a [`SepformerSeparation`]: the mixture through encoder, masknet and
//! decoder, the estimates cut or padded to the mixture length, and the PIT SI-SNR loss
//! ([`get_si_snr_with_pitwrapper`]), with the recipe's `threshold_byloss` (utterances already
//! separated better than the threshold leave the batch mean). Exports the trained model in
//! SpeechBrain's layout (`encoder.ckpt`, `masknet.ckpt`, `decoder.ckpt`, `hyperparams.yaml`),
//! which `SepformerSeparation.from_hparams` loads in either library.

use std::path::Path;

use candle_core::Tensor;

use super::{Brain, BrainCore, BrainError, LinearScheduler, Modules, Stage};
use crate::dataio::{self, DynamicItemDataset, PaddedBatch};
use crate::inference::separation::SepformerSeparation;
use crate::nnet::losses::get_si_snr_with_pitwrapper;

/// The recipe's `Separation(sb.Brain)`, for two-source mixtures.
///
/// Batches carry `mix_sig`, `s1_sig`, `s2_sig` (see [`separation_dataset`]). Modules:
/// `encoder`, `masknet`, `decoder` (parameters named as in their `.ckpt` files).
pub struct Separation {
    core: BrainCore,
    /// The model being trained.
    pub model: SepformerSeparation,
    /// SpeechBrain's `threshold_byloss` / `threshold` (the recipes: -30 dB of loss, i.e. an
    /// SI-SNR of 30 dB): in training, only utterances whose loss is above it count. When none
    /// is left, SpeechBrain skips the batch's update; here the batch then counts whole (the
    /// trainer has no way to skip from the loss; only a batch separated better than 30 dB
    /// throughout gets there).
    pub threshold_byloss: Option<f64>,
    /// `(epoch, train SI-SNR dB, valid SI-SNR dB)` of each finished epoch (SI-SNR = -loss).
    pub epoch_stats: Vec<(usize, f64, Option<f64>)>,
    /// Sets each epoch's learning rate from a straight line when set (applied at the end of
    /// each training stage, for the next epoch; the recipe's `lr_final`).
    pub lr_linear: Option<LinearScheduler>,
}

impl Separation {
    /// The recipe's modules over `model`, and a core with `opt_class`.
    pub fn new(
        model: SepformerSeparation,
        opt_class: Option<super::OptClass>,
        opts: super::BrainOptions,
    ) -> Self {
        let mut modules = Modules::new();
        for name in ["encoder", "masknet", "decoder"] {
            modules.add_from_varmap(name, model.model().varmap(), &format!("{name}."));
        }
        Self {
            core: BrainCore::new(modules, opt_class, opts),
            model,
            threshold_byloss: Some(-30.0),
            epoch_stats: Vec::new(),
            lr_linear: None,
        }
    }

    /// Writes the model in SpeechBrain's layout into `dir` (one `.ckpt` per module, keys as
    /// SpeechBrain's state_dicts, positional-encoding buffers included) with `hyperparams_yaml`
    /// (the text the model was built from) as its `hyperparams.yaml`. Written beside its final
    /// place and renamed: a crash leaves no half model.
    pub fn export(&self, hyperparams_yaml: &str, dir: &Path) -> Result<(), BrainError> {
        let io = |p: &Path, e: std::io::Error| BrainError::Io(p.to_path_buf(), e);
        let tmp = crate::fsutil::temp_dir_beside(dir).map_err(|e| io(dir, e))?;
        for name in ["encoder", "masknet", "decoder"] {
            crate::pretrained::ckpt::save_state_dict(
                self.model.model().varmap(),
                Some(&format!("{name}.")),
                tmp.path().join(format!("{name}.ckpt")),
            )
            .map_err(|e| BrainError::Config(e.to_string()))?;
        }
        let dst = tmp.path().join("hyperparams.yaml");
        crate::fsutil::write_atomic(&dst, hyperparams_yaml.as_bytes()).map_err(|e| io(&dst, e))?;
        crate::fsutil::publish_dir(tmp, dir).map_err(|e| io(dir, e))
    }
}

/// What `compute_forward` hands to `compute_objectives`: estimates and targets, both
/// `[B, T, 2]`.
pub struct SeparationPredictions {
    /// Estimated sources, cut or padded to the mixture length.
    pub estimates: Tensor,
    /// The true sources.
    pub targets: Tensor,
}

impl Brain for Separation {
    type Predictions = SeparationPredictions;

    fn core(&self) -> &BrainCore {
        &self.core
    }
    fn core_mut(&mut self) -> &mut BrainCore {
        &mut self.core
    }

    fn compute_forward(
        &mut self,
        batch: &PaddedBatch,
        _stage: Stage,
    ) -> Result<Self::Predictions, BrainError> {
        let dev = self.model.device().clone();
        let (mix, _) = batch.padded("mix_sig")?.pair();
        let (s1, _) = batch.padded("s1_sig")?.pair();
        let (s2, _) = batch.padded("s2_sig")?.pair();
        let targets = Tensor::stack(&[s1, s2], 2)?.to_device(&dev)?; // [B, T, 2]
        let train = self.core.modules.training("masknet");
        self.model.model_mut().set_train(train);
        let estimates = self.model.model().forward(&mix.to_device(&dev)?)?;
        if targets.dims() != estimates.dims() {
            return Err(BrainError::Config(format!(
                "batch {:?}: sources {:?} do not match the mixture's estimates {:?} (the \
                 sources and the mixture must have the same length)",
                batch.ids(),
                targets.dims(),
                estimates.dims()
            )));
        }
        Ok(SeparationPredictions { estimates, targets })
    }

    fn compute_objectives(
        &mut self,
        predictions: Self::Predictions,
        _batch: &PaddedBatch,
        stage: Stage,
    ) -> Result<Tensor, BrainError> {
        let loss = get_si_snr_with_pitwrapper(&predictions.targets, &predictions.estimates)?;
        if let (Stage::Train, Some(th)) = (stage, self.threshold_byloss) {
            // SpeechBrain: `loss = loss[loss > th]`, the mean of what is left.
            let host = loss.to_vec1::<f32>()?;
            let keep: Vec<u32> = (0..host.len() as u32)
                .filter(|&i| host[i as usize] as f64 > th)
                .collect();
            if !keep.is_empty() && keep.len() < host.len() {
                let idx = Tensor::new(keep.as_slice(), loss.device())?;
                return Ok(loss.index_select(&idx, 0)?.mean_all()?);
            }
        }
        Ok(loss.mean_all()?)
    }

    fn on_stage_end(
        &mut self,
        stage: Stage,
        loss: f64,
        epoch: Option<usize>,
    ) -> Result<(), BrainError> {
        let epoch = epoch.unwrap_or(0);
        match stage {
            Stage::Train => {
                self.epoch_stats.push((epoch, -loss, None));
                if let (Some(s), Some(opt)) = (&self.lr_linear, self.core.optimizer.as_deref_mut())
                {
                    super::schedulers::update_learning_rate(opt, s.step(epoch).1);
                }
            }
            Stage::Valid | Stage::Test => {
                if let Some(last) = self.epoch_stats.last_mut().filter(|s| s.0 == epoch) {
                    last.2 = Some(-loss);
                }
            }
        }
        tracing::info!("epoch {epoch}, {stage:?}: SI-SNR {:.2} dB", -loss);
        Ok(())
    }
}

/// The recipe's data pipeline over a manifest with `mix_wav`, `s1_wav`, `s2_wav` columns
/// (SpeechBrain's WSJ0-2mix CSV layout; `.csv` by extension, else the tutorial's JSON):
/// each file read as `mix_sig`, `s1_sig`, `s2_sig`. `{data_root}` in paths is the manifest's
/// folder (`voxbrain-data mix` writes its manifests that way).
///
/// ```no_run
/// let ds = voxbrain::brain::separation::separation_dataset("train.csv".as_ref())?;
/// # Ok::<(), voxbrain::brain::BrainError>(())
/// ```
pub fn separation_dataset(manifest: &Path) -> Result<DynamicItemDataset, BrainError> {
    let root = manifest.parent().unwrap_or(Path::new("."));
    let repl = [("data_root".to_string(), root.display().to_string())].into();
    let mut ds = if manifest.extension().is_some_and(|e| e == "csv") {
        DynamicItemDataset::from_csv(manifest, &repl)?
    } else {
        DynamicItemDataset::from_json(manifest, &repl)?
    };
    for (file, sig) in [
        ("mix_wav", "mix_sig"),
        ("s1_wav", "s1_sig"),
        ("s2_wav", "s2_sig"),
    ] {
        ds.add_dynamic_item(&[file], &[sig], dataio::read_audio_item)?;
    }
    ds.set_output_keys(&["id", "mix_sig", "s1_sig", "s2_sig"]);
    Ok(ds)
}
