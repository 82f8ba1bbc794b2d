//! The training loop (`speechbrain.core.Brain`): a user's type implements [`Brain`] (what
//! `compute_forward` and `compute_objectives` are, plus optional hooks); the provided methods
//! run epochs, stages, gradient steps, clipping, accumulation, non-finite handling, progress,
//! checkpoints and recovery, with the state kept in a [`BrainCore`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Tensor;
use serde_json::{json, Value as Json};

use super::checkpoints::{CheckpointError, Checkpointer, Recoverable};
use super::modules::Modules;
use super::optim::{NamedParam, Optimizer};
use super::{BrainError, EpochCounter, Stage};
use crate::dataio::{DataLoader, DataLoaderOptions, DynamicItemDataset, PaddedBatch};

/// SpeechBrain's `opt_class`: builds the optimizer from all module parameters.
pub type OptClass = Box<dyn Fn(Vec<NamedParam>) -> Box<dyn Optimizer>>;

/// The `run_opts` of SpeechBrain's `Brain` that the loop itself uses.
#[derive(Debug, Clone)]
pub struct BrainOptions {
    /// Gradients are clipped to this total L2 norm (0: no clipping). SpeechBrain: 5.0.
    pub max_grad_norm: f64,
    /// Batches whose gradients are summed before one optimizer step.
    pub grad_accumulation_factor: usize,
    /// Non-finite losses tolerated per epoch before training stops with an error.
    pub nonfinite_patience: usize,
    /// Save an intra-epoch checkpoint after this many minutes (0: never).
    pub ckpt_interval_minutes: f64,
    /// ... or after this many batches (0: never).
    pub ckpt_interval_steps: usize,
    /// Hide the progress bars.
    pub noprogressbar: bool,
    /// Append one JSON line per optimizer step here (`epoch, step, loss, grad_norm, lr`).
    pub steps_log: Option<PathBuf>,
}

impl Default for BrainOptions {
    fn default() -> Self {
        Self {
            max_grad_norm: 5.0,
            grad_accumulation_factor: 1,
            nonfinite_patience: 3,
            ckpt_interval_minutes: 0.0,
            ckpt_interval_steps: 0,
            noprogressbar: false,
            steps_log: None,
        }
    }
}

/// One optimizer step as logged in `steps.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Epoch (from 1).
    pub epoch: usize,
    /// Optimizer steps so far, this one included.
    pub step: usize,
    /// The batch loss (mean over the accumulated batches).
    pub loss: f64,
    /// Total L2 norm of the trainable gradients before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
}

/// The loop's state (SpeechBrain keeps it on `self`): modules, optimizer, checkpointer,
/// counters and the per-step history.
pub struct BrainCore {
    /// The modules map.
    pub modules: Modules,
    /// Loop options.
    pub opts: BrainOptions,
    opt_class: Option<OptClass>,
    /// The optimizer (built by `on_fit_start` from `opt_class`).
    pub optimizer: Option<Box<dyn Optimizer>>,
    /// Saves and recovers checkpoints when set.
    pub checkpointer: Option<Checkpointer>,
    /// Epochs done / to do (recoverable as `counter`).
    pub epoch_counter: EpochCounter,
    /// Batches seen in the current stage.
    pub step: usize,
    /// Optimizer steps taken since the start of training (recovered from checkpoints).
    pub optimizer_step: usize,
    /// Running mean of the training loss in the current epoch.
    pub avg_train_loss: f64,
    /// Non-finite losses seen this epoch.
    pub nonfinite_count: usize,
    /// Every optimizer step of this process.
    pub history: Vec<StepRecord>,
    /// Per-epoch stage losses `(stage, epoch, loss)`.
    pub stage_losses: Vec<(Stage, Option<usize>, f64)>,
    /// Whether the running `fit` has a validation set.
    pub has_valid: bool,
    accum: Vec<Option<Tensor>>,
    accum_batches: usize,
    accum_loss: f64,
    skip_batches: usize,
    /// The running train loss of the epoch an intra-epoch checkpoint was saved in (restored
    /// with it, as SpeechBrain restores `avg_train_loss`).
    resume_avg_train_loss: f64,
}

impl BrainCore {
    /// A core over `modules` with `opt_class` (None: evaluation only).
    pub fn new(modules: Modules, opt_class: Option<OptClass>, opts: BrainOptions) -> Self {
        Self {
            modules,
            opts,
            opt_class,
            optimizer: None,
            checkpointer: None,
            epoch_counter: EpochCounter::new(0),
            step: 0,
            optimizer_step: 0,
            avg_train_loss: 0.0,
            nonfinite_count: 0,
            history: Vec::new(),
            stage_losses: Vec::new(),
            has_valid: false,
            accum: Vec::new(),
            accum_batches: 0,
            accum_loss: 0.0,
            skip_batches: 0,
            resume_avg_train_loss: 0.0,
        }
    }

    /// With a checkpointer (checkpoints at each epoch's end and by the intervals).
    pub fn with_checkpointer(mut self, checkpointer: Checkpointer) -> Self {
        self.checkpointer = Some(checkpointer);
        self
    }

    /// The current learning rate (0 before the optimizer exists).
    pub fn lr(&self) -> f64 {
        self.optimizer.as_ref().map_or(0.0, |o| o.lr())
    }

    /// SpeechBrain's `init_optimizers`: the optimizer over every module parameter.
    pub fn init_optimizers(&mut self) {
        if let Some(f) = &self.opt_class {
            let opt = f(self.modules.parameters());
            self.accum = vec![None; opt.params().len()];
            self.optimizer = Some(opt);
        }
    }

    /// `running mean` update of SpeechBrain's `update_average` (non-finite losses skipped).
    pub fn update_average(&self, loss: f64, avg: f64) -> f64 {
        if loss.is_finite() && self.step > 0 {
            avg - avg / self.step as f64 + loss / self.step as f64
        } else {
            avg
        }
    }

    /// SpeechBrain's `check_loss_isfinite`: counts non-finite losses, errors past the patience.
    pub fn check_loss_isfinite(&mut self, loss: f64) -> Result<bool, BrainError> {
        if loss.is_finite() {
            return Ok(true);
        }
        self.nonfinite_count += 1;
        if self.nonfinite_count > self.opts.nonfinite_patience {
            return Err(BrainError::NonFinite(self.nonfinite_count));
        }
        tracing::warn!(
            "loss is not finite ({loss}); skipping this batch (patience not yet exhausted: {} of {})",
            self.nonfinite_count,
            self.opts.nonfinite_patience
        );
        Ok(false)
    }

    /// Backpropagates `loss` and adds the trainable gradients to the accumulator.
    pub fn backward(&mut self, loss: &Tensor) -> Result<(), BrainError> {
        let Some(opt) = &self.optimizer else {
            return Err(BrainError::Config("no optimizer: pass an opt_class".into()));
        };
        let mut grads = loss.backward()?;
        let scale = 1.0 / self.opts.grad_accumulation_factor.max(1) as f64;
        for (i, p) in opt.params().iter().enumerate() {
            if !self.modules.is_trainable(&p.name) {
                continue;
            }
            // Taken out of the store, and not copied when there is nothing to scale: a copy of
            // every gradient (119 M values for the official ASR) was the backward's peak.
            if let Some(g) = grads.remove(p.var.as_tensor()) {
                let g = if scale == 1.0 {
                    g.detach()
                } else {
                    (g.detach() * scale)?
                };
                self.accum[i] = Some(match self.accum[i].take() {
                    Some(a) => (a + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// The accumulated gradients of the optimizer's parameters (before clipping), by key;
    /// `None` where a parameter got none (frozen or unused).
    pub fn gradients(&self) -> Vec<(String, Option<Tensor>)> {
        let Some(opt) = &self.optimizer else {
            return Vec::new();
        };
        opt.params()
            .iter()
            .zip(&self.accum)
            .map(|(p, g)| (p.name.clone(), g.clone()))
            .collect()
    }

    /// SpeechBrain's `optimizers_step`: clip to `max_grad_norm`, step, zero the gradients.
    /// Returns the total gradient norm before clipping (a non-finite norm skips the step).
    pub fn optimizers_step(&mut self) -> Result<f64, BrainError> {
        let grads = std::mem::take(&mut self.accum);
        let Some(opt) = &mut self.optimizer else {
            return Err(BrainError::Config("no optimizer: pass an opt_class".into()));
        };
        self.accum = vec![None; grads.len()];
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += sum_of_squares(g)?;
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            tracing::warn!("gradient norm is not finite; the step is skipped");
            return Ok(norm);
        }
        let coef = self.opts.max_grad_norm / (norm + 1e-6);
        let scale = if self.opts.max_grad_norm > 0.0 && coef < 1.0 {
            coef
        } else {
            1.0
        };
        opt.step_scaled(&grads, scale)?;
        self.optimizer_step += 1;
        Ok(norm)
    }

    /// After a recovery: drops `steps.jsonl` lines of steps the checkpoint does not hold
    /// (they will be run again), so the log stays one line per step.
    fn truncate_steps_log(&self) -> Result<(), BrainError> {
        let Some(path) = &self.opts.steps_log else {
            return Ok(());
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<Json>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s as usize <= self.optimizer_step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        super::checkpoints::write_text(path, &kept)?;
        Ok(())
    }

    fn log_step(&mut self, rec: StepRecord) -> Result<(), BrainError> {
        if let Some(path) = &self.opts.steps_log {
            let line = json!({"epoch": rec.epoch, "step": rec.step, "loss": rec.loss,
                "grad_norm": rec.grad_norm, "lr": rec.lr});
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| BrainError::Io(path.clone(), e))?;
            // One `write` per line: `writeln!` formats the JSON in pieces, each its own write
            // to the unbuffered file, so a reader (a progress monitor, a test) could see half a
            // line. A line cut by a kill is dropped at recovery (`truncate_steps_log`).
            f.write_all(format!("{line}\n").as_bytes())
                .map_err(|e| BrainError::Io(path.clone(), e))?;
        }
        self.history.push(rec);
        Ok(())
    }
}

/// Optimizer state as a recoverable (`optimizer.ckpt`: named tensors, step count).
struct OptimizerState<'a>(&'a dyn Optimizer);

impl Recoverable for OptimizerState<'_> {
    fn save(&self, path: &std::path::Path) -> Result<(), CheckpointError> {
        let fmt = |e: String| CheckpointError::Format(path.to_path_buf(), e);
        let t = self.0.state_tensors().map_err(|e| fmt(e.to_string()))?;
        let mut t = t;
        t.push((
            "lr".into(),
            Tensor::new(&[self.0.lr()], &candle_core::Device::Cpu)
                .map_err(|e| fmt(e.to_string()))?,
        ));
        crate::pretrained::ckpt::save_ckpt(path, &t).map_err(|e| fmt(e.to_string()))
    }
    fn load(&mut self, path: &std::path::Path, _: bool) -> Result<(), CheckpointError> {
        // Read-only view: recovery goes through `load_optimizer` with the optimizer itself.
        Err(CheckpointError::Format(
            path.to_path_buf(),
            "optimizer view is save-only".into(),
        ))
    }
}

fn load_optimizer(opt: &mut dyn Optimizer, path: &std::path::Path) -> Result<(), CheckpointError> {
    let fmt = |e: String| CheckpointError::Format(path.to_path_buf(), e);
    let ckpt = crate::pretrained::ckpt::read_ckpt(path).map_err(|e| fmt(e.to_string()))?;
    let state: std::collections::HashMap<String, Tensor> = ckpt.tensors.into_iter().collect();
    if let Some(lr) = state.get("lr") {
        let lr = lr
            .flatten_all()
            .and_then(|t| t.to_dtype(candle_core::DType::F64));
        let lr = lr
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(|e| fmt(e.to_string()))?;
        if let Some(&lr) = lr.first() {
            opt.set_lr(lr);
        }
    }
    opt.load_state(&state).map_err(|e| fmt(e.to_string()))
}

/// The position inside an epoch (`dataloader.ckpt`: the batch count, as SpeechBrain's
/// `SaveableDataLoader` writes it).
struct LoaderPosition(usize);

impl Recoverable for LoaderPosition {
    fn save(&self, path: &std::path::Path) -> Result<(), CheckpointError> {
        super::checkpoints::write_text(path, &self.0.to_string())
    }
    fn load(&mut self, path: &std::path::Path, _: bool) -> Result<(), CheckpointError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CheckpointError::Io(path.to_path_buf(), e))?;
        self.0 = text.trim().parse().map_err(|_| {
            CheckpointError::Format(path.to_path_buf(), format!("not a batch count: {text:?}"))
        })?;
        Ok(())
    }
}

/// SpeechBrain's `Brain`: implement `core`/`core_mut`, `compute_forward` and
/// `compute_objectives`; `fit` and `evaluate` do the rest. See `examples/fine_tune_asr.rs`.
pub trait Brain {
    /// What `compute_forward` returns.
    type Predictions;

    /// The loop state.
    fn core(&self) -> &BrainCore;
    /// The loop state, mutably.
    fn core_mut(&mut self) -> &mut BrainCore;

    /// From a batch to predictions.
    fn compute_forward(
        &mut self,
        batch: &PaddedBatch,
        stage: Stage,
    ) -> Result<Self::Predictions, BrainError>;

    /// From predictions to the loss (a scalar tensor).
    fn compute_objectives(
        &mut self,
        predictions: Self::Predictions,
        batch: &PaddedBatch,
        stage: Stage,
    ) -> Result<Tensor, BrainError>;

    /// Called once before training (after the optimizer is built).
    fn on_fit_start(&mut self) -> Result<(), BrainError> {
        Ok(())
    }
    /// Called at the start of each stage (after the modules' mode is set).
    fn on_stage_start(&mut self, _stage: Stage, _epoch: Option<usize>) -> Result<(), BrainError> {
        Ok(())
    }
    /// Called at the end of each stage with its average loss (logging, schedulers). `fit`
    /// itself saves the end-of-epoch checkpoint after the epoch's last stage.
    fn on_stage_end(
        &mut self,
        _stage: Stage,
        _stage_loss: f64,
        _epoch: Option<usize>,
    ) -> Result<(), BrainError> {
        Ok(())
    }
    /// Extra state saved in checkpoints beside the modules, optimizer, counter and position
    /// (e.g. a normalizer's statistics, a scheduler).
    fn recoverables(&self) -> Vec<(&'static str, &dyn Recoverable)> {
        Vec::new()
    }
    /// Mutable access to [`recoverables`](Self::recoverables), same names and order.
    fn recoverables_mut(&mut self) -> Vec<(&'static str, &mut dyn Recoverable)> {
        Vec::new()
    }

    /// One training batch: forward, loss, backward, and a step every
    /// `grad_accumulation_factor` batches. Returns the loss.
    fn fit_batch(&mut self, batch: &PaddedBatch) -> Result<f64, BrainError> {
        let out = self.compute_forward(batch, Stage::Train)?;
        let loss = self.compute_objectives(out, batch, Stage::Train)?;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let core = self.core_mut();
        if !core.check_loss_isfinite(value)? {
            return Ok(value);
        }
        core.backward(&loss)?;
        core.accum_batches += 1;
        core.accum_loss += value;
        if core.accum_batches >= core.opts.grad_accumulation_factor.max(1) {
            let lr = core.lr();
            let grad_norm = core.optimizers_step()?;
            let rec = StepRecord {
                epoch: core.epoch_counter.current,
                step: core.optimizer_step,
                loss: core.accum_loss / core.accum_batches as f64,
                grad_norm,
                lr,
            };
            core.accum_batches = 0;
            core.accum_loss = 0.0;
            core.log_step(rec)?;
        }
        Ok(value)
    }

    /// One evaluation batch (no gradients). Returns the loss.
    fn evaluate_batch(&mut self, batch: &PaddedBatch, stage: Stage) -> Result<f64, BrainError> {
        let out = self.compute_forward(batch, stage)?;
        let loss = self.compute_objectives(out, batch, stage)?;
        Ok(loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?)
    }

    /// Saves a checkpoint of everything recoverable (`meta` goes into `CKPT.yaml`); keeps the
    /// newest `num_to_keep` checkpoints of the same kind (end-of-epoch or intra-epoch).
    fn save_checkpoint(
        &self,
        meta: BTreeMap<String, Json>,
        end_of_epoch: bool,
        num_to_keep: usize,
    ) -> Result<(), BrainError> {
        let core = self.core();
        let Some(ck) = &core.checkpointer else {
            return Ok(());
        };
        let pos = LoaderPosition(if end_of_epoch { 0 } else { core.step });
        let mut items: Vec<(&str, &dyn Recoverable)> = vec![
            ("model", &core.modules),
            ("counter", &core.epoch_counter),
            ("dataloader", &pos),
        ];
        let opt = core.optimizer.as_deref().map(OptimizerState);
        if let Some(o) = &opt {
            items.push(("optimizer", o));
        }
        items.extend(self.recoverables());
        let mut meta = meta;
        meta.insert("optimizer_step".into(), Json::from(core.optimizer_step));
        if !end_of_epoch {
            meta.insert("avg_train_loss".into(), Json::from(core.avg_train_loss));
        }
        // An intra-epoch save replaces the previous intra-epoch one; an end-of-epoch save
        // supersedes every older checkpoint (as SpeechBrain recipes' save_and_keep_only).
        let intra = |c: &super::Checkpoint| !c.end_of_epoch();
        let pred: Option<&dyn Fn(&super::Checkpoint) -> bool> =
            if end_of_epoch { None } else { Some(&intra) };
        ck.save_and_keep_only(&items, &meta, end_of_epoch, num_to_keep, &[], pred)?;
        Ok(())
    }

    /// SpeechBrain's `recover_if_possible` for the whole brain: loads the newest complete
    /// checkpoint, if any, and sets where the next epoch / batch starts.
    fn recover_if_possible(&mut self) -> Result<bool, BrainError> {
        let Some(ck) = self.core().checkpointer.clone() else {
            return Ok(false);
        };
        let Some(c) = ck.find_checkpoint(&super::checkpoints::Importance::Recency, None)? else {
            return Ok(false);
        };
        tracing::info!("recovering from {}", c.path.display());
        let eoe = c.end_of_epoch();
        let need = |name: &str| -> Result<PathBuf, BrainError> {
            let f = c.paramfile(name);
            if f.is_file() {
                Ok(f)
            } else {
                Err(CheckpointError::Recoverable(
                    c.path.clone(),
                    name.into(),
                    "missing file".into(),
                )
                .into())
            }
        };
        let (model, counter, loader) = (need("model")?, need("counter")?, need("dataloader")?);
        let core = self.core_mut();
        core.modules.load(&model, eoe)?;
        core.epoch_counter.load(&counter, eoe)?;
        let mut pos = LoaderPosition(0);
        pos.load(&loader, eoe)?;
        core.skip_batches = if eoe { 0 } else { pos.0 };
        core.resume_avg_train_loss = match eoe {
            true => 0.0,
            false => c.metric("avg_train_loss").unwrap_or(0.0),
        };
        core.optimizer_step = c.metric("optimizer_step").unwrap_or(0.0) as usize;
        core.truncate_steps_log()?;
        if let Some(opt) = core.optimizer.as_deref_mut() {
            load_optimizer(opt, &need("optimizer")?)?;
        }
        let names: Vec<&'static str> = self.recoverables().iter().map(|(n, _)| *n).collect();
        let files = names
            .iter()
            .map(|n| need(n))
            .collect::<Result<Vec<_>, _>>()?;
        for ((_, obj), f) in self.recoverables_mut().into_iter().zip(files) {
            obj.load(&f, eoe)?;
        }
        Ok(true)
    }

    /// SpeechBrain's `fit`: for each epoch of `epoch_counter`, a training stage over
    /// `train_set` and, when given, a validation stage over `valid_set`.
    fn fit(
        &mut self,
        epoch_counter: EpochCounter,
        train_set: &DynamicItemDataset,
        valid_set: Option<&DynamicItemDataset>,
        train_loader_options: DataLoaderOptions,
        valid_loader_options: DataLoaderOptions,
    ) -> Result<(), BrainError> {
        let train = DataLoader::new(train_set.clone(), train_loader_options)?;
        let valid = valid_set
            .map(|v| DataLoader::new(v.clone(), valid_loader_options))
            .transpose()?;
        self.core_mut().epoch_counter = epoch_counter;
        self.core_mut().has_valid = valid.is_some();
        self.core_mut().init_optimizers();
        self.on_fit_start()?;
        self.recover_if_possible()?;
        while let Some(epoch) = self.core_mut().epoch_counter.next_epoch() {
            self.fit_train(&train, epoch)?;
            if let Some(v) = &valid {
                let loss = self.run_eval(v, Stage::Valid, Some(epoch))?;
                self.on_stage_end(Stage::Valid, loss, Some(epoch))?;
            }
            let meta = BTreeMap::from([("epoch".to_string(), Json::from(epoch))]);
            self.save_checkpoint(meta, true, 1)?;
        }
        Ok(())
    }

    /// The training stage of one epoch (SpeechBrain's `_fit_train`).
    fn fit_train(&mut self, train: &DataLoader, epoch: usize) -> Result<(), BrainError> {
        self.core_mut().modules.train(true);
        self.on_stage_start(Stage::Train, Some(epoch))?;
        let core = self.core_mut();
        core.nonfinite_count = 0;
        let skip = std::mem::take(&mut core.skip_batches);
        core.step = skip;
        // Resumed inside the epoch: the running mean goes on from the checkpoint's.
        core.avg_train_loss = std::mem::take(&mut core.resume_avg_train_loss);
        let bar = crate::progress::items_bar(
            train.len() as u64,
            &format!("epoch {epoch}"),
            !core.opts.noprogressbar,
        );
        bar.set_position(skip as u64);
        let mut last_ckpt = Instant::now();
        let mut since_ckpt = 0usize;
        for batch in train.iter_from((epoch - 1) as u64, skip) {
            let batch = batch?;
            self.core_mut().step += 1;
            since_ckpt += 1;
            // Dropout's masks keyed by the step: a resumed run draws what this one would.
            crate::nnet::dropout::dropout_step(epoch as u64, self.core().step as u64);
            let loss = self.fit_batch(&batch)?;
            let core = self.core_mut();
            core.avg_train_loss = core.update_average(loss, core.avg_train_loss);
            bar.set_message(format!(
                "epoch {epoch} train_loss={:.4}",
                core.avg_train_loss
            ));
            bar.inc(1);
            let o = &core.opts;
            let by_time = o.ckpt_interval_minutes > 0.0
                && last_ckpt.elapsed().as_secs_f64() / 60.0 > o.ckpt_interval_minutes;
            let by_steps = o.ckpt_interval_steps > 0 && since_ckpt >= o.ckpt_interval_steps;
            if (by_time || by_steps) && core.checkpointer.is_some() {
                let meta =
                    BTreeMap::from([("brain_intra_epoch_ckpt".to_string(), Json::Bool(true))]);
                self.save_checkpoint(meta, false, 1)?;
                last_ckpt = Instant::now();
                since_ckpt = 0;
            }
        }
        bar.finish_and_clear();
        // Gradients of a last, incomplete accumulation are dropped (SpeechBrain's zero_grad).
        let core = self.core_mut();
        core.accum.iter_mut().for_each(|g| *g = None);
        (core.accum_batches, core.accum_loss) = (0, 0.0);
        let avg = self.core().avg_train_loss;
        self.core_mut()
            .stage_losses
            .push((Stage::Train, Some(epoch), avg));
        self.on_stage_end(Stage::Train, avg, Some(epoch))?;
        let core = self.core_mut();
        core.step = 0;
        core.avg_train_loss = 0.0;
        Ok(())
    }

    /// An evaluation stage over `loader` in eval mode; returns the average loss.
    fn run_eval(
        &mut self,
        loader: &DataLoader,
        stage: Stage,
        epoch: Option<usize>,
    ) -> Result<f64, BrainError> {
        self.core_mut().modules.train(false);
        self.on_stage_start(stage, epoch)?;
        self.core_mut().step = 0;
        let mut avg = 0.0;
        let bar = crate::progress::items_bar(
            loader.len() as u64,
            stage.as_str(),
            !self.core().opts.noprogressbar,
        );
        for batch in loader.iter(0) {
            let batch = batch?;
            self.core_mut().step += 1;
            let loss = self.evaluate_batch(&batch, stage)?;
            avg = self.core().update_average(loss, avg);
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.core_mut().step = 0;
        self.core_mut().stage_losses.push((stage, epoch, avg));
        Ok(avg)
    }

    /// SpeechBrain's `evaluate`: a test stage over `test_set`; returns the average loss.
    fn evaluate(
        &mut self,
        test_set: &DynamicItemDataset,
        loader_options: DataLoaderOptions,
    ) -> Result<f64, BrainError> {
        let loader = DataLoader::new(test_set.clone(), loader_options)?;
        let loss = self.run_eval(&loader, Stage::Test, None)?;
        self.on_stage_end(Stage::Test, loss, None)?;
        Ok(loss)
    }
}

/// The sum of a gradient's squared values, accumulated in f64 (on the host without a squared
/// copy of the tensor).
fn sum_of_squares(g: &Tensor) -> candle_core::Result<f64> {
    if g.device().is_cpu() && g.dtype() == candle_core::DType::F32 && g.is_contiguous() {
        use rayon::prelude::*;
        let h = crate::nnet::gemm::HostF32::new(g, "gradient")?;
        let s = h.slice();
        return Ok(s
            .par_chunks(1 << 16)
            .map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
            .sum());
    }
    g.to_dtype(candle_core::DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()
}
