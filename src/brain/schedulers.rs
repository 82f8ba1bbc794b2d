//! Learning-rate schedulers (`speechbrain.nnet.schedulers`): [`NewBobScheduler`] (anneal when
//! the validation metric stops improving), [`LinearScheduler`] (a straight line over the
//! epochs) and [`LinearWarmupScheduler`] (linear warm-up, then linear decay). The stateful ones
//! are checkpointed as small JSON files; [`LinearScheduler`] needs nothing but the epoch.

use std::path::Path;

use serde_json::json;

use super::checkpoints::{CheckpointError, Recoverable};
use super::optim::Optimizer;

/// Sets the optimizer's learning rate (`speechbrain.nnet.schedulers.update_learning_rate`).
pub fn update_learning_rate(optimizer: &mut dyn Optimizer, lr: f64) {
    optimizer.set_lr(lr);
}

/// SpeechBrain's `NewBobScheduler`: when `(previous - current) / previous` falls below
/// `improvement_threshold`, the value is multiplied by `annealing_factor` (after `patient`
/// such epochs).
///
/// ```
/// use voxbrain::brain::NewBobScheduler;
/// let mut s = NewBobScheduler::new(1.0);
/// assert_eq!(s.step(10.0), (1.0, 1.0));
/// assert_eq!(s.step(2.0), (1.0, 1.0));
/// assert_eq!(s.step(2.5), (1.0, 0.5));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NewBobScheduler {
    /// The current value.
    pub hyperparam_value: f64,
    /// Multiplier applied when annealing.
    pub annealing_factor: f64,
    /// Relative improvement below which the value is annealed.
    pub improvement_threshold: f64,
    /// Epochs without improvement tolerated before annealing.
    pub patient: usize,
    /// Every metric seen.
    pub metric_values: Vec<f64>,
    current_patient: usize,
}

impl NewBobScheduler {
    /// SpeechBrain's defaults: factor 0.5, threshold 0.0025, patient 0.
    pub fn new(initial_value: f64) -> Self {
        Self {
            hyperparam_value: initial_value,
            annealing_factor: 0.5,
            improvement_threshold: 0.0025,
            patient: 0,
            metric_values: Vec::new(),
            current_patient: 0,
        }
    }

    /// Feeds one epoch's metric; returns `(old value, new value)` (SpeechBrain's `__call__`).
    pub fn step(&mut self, metric_value: f64) -> (f64, f64) {
        let old = self.hyperparam_value;
        let mut new = old;
        if let Some(&prev) = self.metric_values.last() {
            let improvement = if prev == 0.0 {
                0.0
            } else {
                (prev - metric_value) / prev
            };
            if improvement < self.improvement_threshold {
                if self.current_patient == 0 {
                    new *= self.annealing_factor;
                    self.current_patient = self.patient;
                } else {
                    self.current_patient -= 1;
                }
            }
        }
        self.metric_values.push(metric_value);
        self.hyperparam_value = new;
        (old, new)
    }
}

impl Recoverable for NewBobScheduler {
    fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let v = json!({
            "hyperparam_value": self.hyperparam_value,
            "metric_values": self.metric_values,
            "current_patient": self.current_patient,
        });
        super::checkpoints::write_json(path, &v)
    }
    fn load(&mut self, path: &Path, _end_of_epoch: bool) -> Result<(), CheckpointError> {
        let v = super::checkpoints::read_json(path)?;
        let bad = |k: &str| CheckpointError::Format(path.to_path_buf(), format!("missing `{k}`"));
        self.hyperparam_value = v["hyperparam_value"]
            .as_f64()
            .ok_or_else(|| bad("hyperparam_value"))?;
        self.metric_values = v["metric_values"]
            .as_array()
            .ok_or_else(|| bad("metric_values"))?
            .iter()
            .filter_map(|x| x.as_f64())
            .collect();
        self.current_patient = v["current_patient"]
            .as_u64()
            .ok_or_else(|| bad("current_patient"))? as usize;
        Ok(())
    }
}

/// SpeechBrain's `LinearScheduler`: `epoch_count` values evenly spaced from `initial_value` to
/// `final_value`, one per epoch. Called at the end of epoch `e` (1-based) it returns the value
/// of epoch `e` and the one for epoch `e + 1` (the last value once past the end).
///
/// ```
/// use voxbrain::brain::LinearScheduler;
/// let s = LinearScheduler::new(1.0, 0.25, 4);
/// assert_eq!(s.value_at_epoch, vec![1.0, 0.75, 0.5, 0.25]);
/// assert_eq!(s.step(1), (1.0, 0.75));
/// assert_eq!(s.step(4), (0.25, 0.25));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LinearScheduler {
    /// The value of each epoch, first to last.
    pub value_at_epoch: Vec<f64>,
}

impl LinearScheduler {
    /// `torch.linspace(initial_value, final_value, epoch_count).tolist()`: in f32 (torch's
    /// default dtype) and torch's arithmetic (from the start for the first half, from the end
    /// for the second), so the learning rates are SpeechBrain's to the bit.
    pub fn new(initial_value: f64, final_value: f64, epoch_count: usize) -> Self {
        let n = epoch_count.max(1);
        let (a, b) = (initial_value as f32, final_value as f32);
        let step = if n > 1 { (b - a) / (n - 1) as f32 } else { 0.0 };
        let value_at_epoch = (0..n)
            .map(|i| {
                let v = if n == 1 || i < n / 2 {
                    a + step * i as f32
                } else {
                    b - step * (n - 1 - i) as f32
                };
                f64::from(v)
            })
            .collect();
        Self { value_at_epoch }
    }

    /// `initial_value` for the first `epoch_count - decay_epochs` epochs, then a straight line
    /// down to `final_value` over the last `decay_epochs` (the line's own first point, equal to
    /// `initial_value`, is left out, so every one of those epochs is below it). A short decay at
    /// the end of a fixed budget: the recipes' `lr_decay_epochs`. `decay_epochs >= epoch_count`
    /// gives the line over all epochs ([`LinearScheduler::new`]).
    ///
    /// ```
    /// use voxbrain::brain::LinearScheduler;
    /// let s = LinearScheduler::hold_then_decay(1.0, 0.25, 5, 3);
    /// assert_eq!(s.value_at_epoch, vec![1.0, 1.0, 0.75, 0.5, 0.25]);
    /// ```
    pub fn hold_then_decay(
        initial_value: f64,
        final_value: f64,
        epoch_count: usize,
        decay_epochs: usize,
    ) -> Self {
        if decay_epochs >= epoch_count {
            return Self::new(initial_value, final_value, epoch_count);
        }
        let line = Self::new(initial_value, final_value, decay_epochs + 1).value_at_epoch;
        let mut value_at_epoch = vec![initial_value; epoch_count - decay_epochs];
        value_at_epoch.extend_from_slice(&line[1..]);
        Self { value_at_epoch }
    }

    /// The recipes' optional schedule from their yaml: with `lr_final`, the line from `lr` to
    /// it over the last `lr_decay_epochs` epochs (all of them by default); without, `None`.
    pub(crate) fn from_recipe(
        kw: &crate::pretrained::hparams::Kwargs,
        lr: f64,
        epochs: usize,
    ) -> Result<Option<Self>, String> {
        let decay_epochs = kw.usize("lr_decay_epochs", epochs)?;
        Ok(kw
            .opt_f64("lr_final")?
            .map(|f| Self::hold_then_decay(lr, f, epochs, decay_epochs)))
    }

    /// `(value of epoch current_epoch, value of the next)` (SpeechBrain's `__call__`).
    pub fn step(&self, current_epoch: usize) -> (f64, f64) {
        let last = self.value_at_epoch.len() - 1;
        let at = |i: usize| self.value_at_epoch[i.min(last)];
        (at(current_epoch.saturating_sub(1)), at(current_epoch))
    }
}

/// SpeechBrain's `LinearWarmupScheduler`: from 0 to `lr0` over `num_warmup_steps`, then down
/// to 0 at `num_training_steps`.
///
/// ```
/// use voxbrain::brain::LinearWarmupScheduler;
/// let s = LinearWarmupScheduler::new(1.0, 2, 4);
/// let lrs: Vec<f64> = (0..5).map(|i| s.calculate_lr(i)).collect();
/// assert_eq!(lrs, vec![0.0, 0.5, 1.0, 0.5, 0.0]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWarmupScheduler {
    /// Peak value.
    pub lr0: f64,
    /// Steps of warm-up.
    pub num_warmup_steps: u64,
    /// Step at which the value reaches 0.
    pub num_training_steps: u64,
    /// Steps taken.
    pub current_step: u64,
}

impl LinearWarmupScheduler {
    /// A scheduler at step 0.
    pub fn new(lr0: f64, num_warmup_steps: u64, num_training_steps: u64) -> Self {
        Self {
            lr0,
            num_warmup_steps,
            num_training_steps,
            current_step: 0,
        }
    }

    /// The value at `step`.
    pub fn calculate_lr(&self, step: u64) -> f64 {
        if step < self.num_warmup_steps {
            return step as f64 / self.num_warmup_steps.max(1) as f64 * self.lr0;
        }
        let left = self.num_training_steps.saturating_sub(step) as f64;
        let span = self
            .num_training_steps
            .saturating_sub(self.num_warmup_steps)
            .max(1) as f64;
        self.lr0 * (left / span).max(0.0)
    }

    /// Returns `(old, new)` and advances one step (SpeechBrain's `get_next_value`).
    pub fn step(&mut self) -> (f64, f64) {
        let old = self.calculate_lr(self.current_step);
        self.current_step += 1;
        (old, self.calculate_lr(self.current_step))
    }
}

impl Recoverable for LinearWarmupScheduler {
    fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let v = json!({"lr0": self.lr0, "num_warmup_steps": self.num_warmup_steps,
            "num_training_steps": self.num_training_steps, "current_step": self.current_step});
        super::checkpoints::write_json(path, &v)
    }
    fn load(&mut self, path: &Path, _end_of_epoch: bool) -> Result<(), CheckpointError> {
        let v = super::checkpoints::read_json(path)?;
        self.current_step = v["current_step"].as_u64().ok_or_else(|| {
            CheckpointError::Format(path.to_path_buf(), "missing `current_step`".into())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::LinearScheduler;

    #[test]
    fn linear_scheduler_gives_speechbrains_values_to_the_bit() {
        // SpeechBrain 1.1.2 (torch 2.8.0): LinearScheduler(1e-3, 1e-4, 12).value_at_epoch.
        let sb = [
            0.0010000000474974513,
            0.0009181818459182978,
            0.0008363636443391442,
            0.0007545455009676516,
            0.0006727272993884981,
            0.0005909090978093445,
            0.0005090909544378519,
            0.00042727275285869837,
            0.00034545455127954483,
            0.00026363637880422175,
            0.0001818181772250682,
            9.999999747378752e-05,
        ];
        let s = LinearScheduler::new(1e-3, 1e-4, 12);
        assert_eq!(s.value_at_epoch, sb);
        assert_eq!(s.step(1), (sb[0], sb[1]));
        assert_eq!(s.step(12), (sb[11], sb[11]));
        assert_eq!(LinearScheduler::new(0.5, 0.1, 1).value_at_epoch, vec![0.5]);
    }

    #[test]
    fn recipes_read_lr_final_and_lr_decay_epochs() {
        use crate::pretrained::hparams::{Hparams, Kwargs};
        let schedule = |yaml: &str| {
            let hp = Hparams::from_str(yaml, "t.yaml", None).unwrap();
            LinearScheduler::from_recipe(&Kwargs::top_level(&hp), 1.0, 5).unwrap()
        };
        assert_eq!(schedule("lr: 1.0\n"), None);
        assert_eq!(
            schedule("lr_final: 0.25\n"),
            Some(LinearScheduler::new(1.0, 0.25, 5))
        );
        assert_eq!(
            schedule("lr_final: 0.25\nlr_decay_epochs: 3\n")
                .unwrap()
                .value_at_epoch,
            vec![1.0, 1.0, 0.75, 0.5, 0.25]
        );
        let hp =
            Hparams::from_str("lr_final: 0.25\nlr_decay_epochs: two\n", "t.yaml", None).unwrap();
        assert!(LinearScheduler::from_recipe(&Kwargs::top_level(&hp), 1.0, 5).is_err());
    }

    #[test]
    fn hold_then_decay_keeps_the_rate_then_falls_to_the_final_value() {
        let s = LinearScheduler::hold_then_decay(2e-3, 1e-4, 16, 4);
        assert_eq!(s.value_at_epoch.len(), 16);
        assert!(s.value_at_epoch[..12].iter().all(|&v| v == 2e-3));
        let tail = &s.value_at_epoch[12..];
        assert!(tail.windows(2).all(|w| w[1] < w[0]) && tail[0] < 2e-3);
        assert_eq!(tail[3], f64::from(1e-4f32));
        // The tail is the line from lr to lr_final over 5 points, less its first.
        assert_eq!(
            tail,
            &LinearScheduler::new(2e-3, 1e-4, 5).value_at_epoch[1..]
        );
        assert_eq!(s.step(12), (2e-3, tail[0]));
        assert_eq!(
            LinearScheduler::hold_then_decay(1e-3, 1e-4, 12, 12),
            LinearScheduler::new(1e-3, 1e-4, 12)
        );
    }
}
