//! Training (`speechbrain.core.Brain` and friends): the [`Brain`] trait and its loop state
//! [`BrainCore`], the [`Modules`] map, optimizers ([`optim`]), learning-rate
//! [`schedulers`], the [`Checkpointer`] and SpeechBrain's `train_log.txt` logger.
//!
//! A user's type says what the forward pass and the loss are; `fit` owns epochs, stages,
//! gradient steps, checkpoints and logging (see `examples/fine_tune_asr.rs`, the tutorial's
//! `EncDecFineTune`).

mod adam_host;
pub mod asr_finetune;
pub mod asr_recipe;
pub mod checkpoints;
mod core;
pub mod lm_train;
mod logger;
pub mod modules;
pub mod optim;
pub mod recipe;
pub mod schedulers;
pub mod separation;
pub mod separation_recipe;

use std::path::{Path, PathBuf};

pub use self::core::{Brain, BrainCore, BrainOptions, OptClass, StepRecord};
pub use checkpoints::{Checkpoint, CheckpointError, Checkpointer, Importance, Recoverable};
pub use logger::FileTrainLogger;
pub use modules::{ModuleEntry, Modules};
pub use optim::{Adam, NamedParam, Optimizer, OptimizerKind, Sgd};
pub use schedulers::{LinearScheduler, LinearWarmupScheduler, NewBobScheduler};

/// The stage of an experiment (`sb.Stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Training (gradients, train mode).
    Train,
    /// Validation (eval mode, no gradients).
    Valid,
    /// Test.
    Test,
}

impl Stage {
    /// `train`, `valid` or `test` (the words of `train_log.txt`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Train => "train",
            Stage::Valid => "valid",
            Stage::Test => "test",
        }
    }
}

/// What can go wrong in training.
#[derive(Debug, thiserror::Error)]
pub enum BrainError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Feature extraction or normalization failed.
    #[error(transparent)]
    Features(#[from] crate::features::FeatureError),
    /// Reading the data failed (the message names the data point).
    #[error(transparent)]
    Data(#[from] crate::dataio::DataIoError),
    /// Saving or recovering a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A file could not be written.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// Too many non-finite losses (SpeechBrain's `nonfinite_patience`).
    #[error("loss is not finite and patience is exhausted ({0} non-finite losses this epoch)")]
    NonFinite(usize),
    /// A setting or call that cannot work.
    #[error("{0}")]
    Config(String),
}

/// SpeechBrain's `EpochCounter`: counts epochs up to `limit`, recoverable as `counter.ckpt`
/// (the epoch number as text).
///
/// ```
/// let mut c = voxbrain::brain::EpochCounter::new(2);
/// assert_eq!((c.next_epoch(), c.next_epoch(), c.next_epoch()), (Some(1), Some(2), None));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochCounter {
    /// The epoch in progress or last finished (0 before the first).
    pub current: usize,
    /// Epochs in all.
    pub limit: usize,
}

impl EpochCounter {
    /// A counter over `limit` epochs.
    pub fn new(limit: usize) -> Self {
        Self { current: 0, limit }
    }

    /// Moves to the next epoch (`None` when all are done).
    pub fn next_epoch(&mut self) -> Option<usize> {
        if self.current < self.limit {
            self.current += 1;
            tracing::info!("going into epoch {}", self.current);
            Some(self.current)
        } else {
            None
        }
    }
}

impl Recoverable for EpochCounter {
    fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        checkpoints::write_text(path, &self.current.to_string())
    }
    fn load(&mut self, path: &Path, end_of_epoch: bool) -> Result<(), CheckpointError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| CheckpointError::Io(path.into(), e))?;
        let saved: usize = text.trim().parse().map_err(|_| {
            CheckpointError::Format(path.into(), format!("not an epoch number: {text:?}"))
        })?;
        // An intra-epoch checkpoint re-enters its epoch.
        self.current = if end_of_epoch {
            saved
        } else {
            saved.saturating_sub(1)
        };
        Ok(())
    }
}

impl Recoverable for crate::features::InputNormalization {
    fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        self.save_statistics(path)
            .map_err(|e| CheckpointError::Format(path.into(), e.to_string()))
    }
    fn load(&mut self, path: &Path, _end_of_epoch: bool) -> Result<(), CheckpointError> {
        self.load_statistics(path)
            .map_err(|e| CheckpointError::Format(path.into(), e.to_string()))
    }
}
