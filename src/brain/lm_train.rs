//! SpeechBrain's RNNLM recipe Brain (`recipes/LibriSpeech/LM/train.py`, class `LM`): the
//! tokens with BOS through the [`Rnnlm`], `log_softmax`, and `nll_loss` on the tokens with
//! EOS. The language model here is the one inside an [`EncoderDecoderASR`] (`lm_model`,
//! parameters keyed as in `lm.ckpt`), so the trained model goes straight into the ASR folder.

use candle_core::{Tensor, D};
use polars::prelude::{Column, DataFrame};

use super::asr_finetune::add_text_pipeline;
use super::{Brain, BrainCore, BrainError, Modules, Stage};
use crate::dataio::{DynamicItemDataset, FilterSort, PaddedBatch};
use crate::inference::EncoderDecoderASR;
use crate::lobes::rnnlm::Rnnlm;
use crate::nnet::losses::{nll_loss, Reduction};

/// The `LM(sb.Brain)` of SpeechBrain's LM recipes, over a model's language model.
pub struct LmTrain {
    core: BrainCore,
    /// The language model being trained (its `Var`s are in `lm_varmap`).
    pub lm: Rnnlm,
    /// `(epoch, train loss, valid loss)` of each finished epoch.
    pub epoch_stats: Vec<(usize, f64, Option<f64>)>,
}

impl LmTrain {
    /// A Brain over `lm` whose parameters are `lm_varmap` (module `lm_model`).
    pub fn new(
        lm: Rnnlm,
        lm_varmap: &candle_nn::VarMap,
        opt_class: Option<super::OptClass>,
        opts: super::BrainOptions,
    ) -> Self {
        let mut modules = Modules::new();
        modules.add_from_varmap("lm_model", lm_varmap, "");
        Self {
            core: BrainCore::new(modules, opt_class, opts),
            lm,
            epoch_stats: Vec::new(),
        }
    }
}

impl Brain for LmTrain {
    type Predictions = Tensor;

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
    ) -> Result<Tensor, BrainError> {
        let (tokens_bos, _) = batch.padded("tokens_bos")?.pair();
        let train = self.core.modules.training("lm_model");
        let (logits, _) = self.lm.forward(tokens_bos, None, train)?;
        Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?)
    }

    fn compute_objectives(
        &mut self,
        p_seq: Tensor,
        batch: &PaddedBatch,
        _stage: Stage,
    ) -> Result<Tensor, BrainError> {
        let (tokens_eos, lens) = batch.padded("tokens_eos")?.pair();
        Ok(nll_loss(
            &p_seq,
            tokens_eos,
            Some(lens),
            0.0,
            Reduction::Mean,
        )?)
    }

    fn on_stage_end(
        &mut self,
        stage: Stage,
        loss: f64,
        epoch: Option<usize>,
    ) -> Result<(), BrainError> {
        let epoch = epoch.unwrap_or(0);
        match stage {
            Stage::Train => self.epoch_stats.push((epoch, loss, None)),
            Stage::Valid | Stage::Test => {
                if let Some(last) = self.epoch_stats.last_mut().filter(|s| s.0 == epoch) {
                    last.2 = Some(loss);
                }
            }
        }
        tracing::info!(
            "LM epoch {epoch}, {stage:?}: loss {loss:.3} (perplexity {:.1})",
            loss.exp()
        );
        Ok(())
    }
}

/// A text dataset for the LM (and the ASR's tokenizer) from sentences: ids `line-N`, `words`
/// upper-cased as LibriSpeech transcripts, sorted by length (as SpeechBrain's recipes sort),
/// and `asr`'s text pipeline (`tokens_bos`, `tokens_eos`, ...).
///
/// ```no_run
/// # fn f(asr: &voxbrain::inference::EncoderDecoderASR) -> Result<(), voxbrain::brain::BrainError> {
/// let ds = voxbrain::brain::lm_train::text_dataset(&["a short line".into()], asr)?;
/// assert_eq!(ds.len(), 1);
/// # Ok(()) }
/// ```
pub fn text_dataset(
    sentences: &[String],
    asr: &EncoderDecoderASR,
) -> Result<DynamicItemDataset, BrainError> {
    let lines: Vec<String> = sentences
        .iter()
        .map(|s| s.trim().to_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    if lines.is_empty() {
        return Err(BrainError::Config("no text to train the LM on".into()));
    }
    let ids: Vec<String> = (0..lines.len()).map(|i| format!("line-{i}")).collect();
    let length: Vec<i64> = lines
        .iter()
        .map(|l| l.split_whitespace().count() as i64)
        .collect();
    let df = DataFrame::new_infer_height(vec![
        Column::new("id".into(), ids),
        Column::new("words".into(), lines),
        Column::new("length".into(), length),
    ])
    .map_err(|e| BrainError::Config(e.to_string()))?;
    let ds = DynamicItemDataset::from_polars(df)?;
    let mut ds = ds.filtered_sorted(&FilterSort::new().sort_key("length"))?;
    add_text_pipeline(&mut ds, asr)?;
    ds.set_output_keys(&["id", "tokens_bos", "tokens_eos"]);
    Ok(ds)
}
