//! `voxbrain train-asr`: a CRDNN + attentional GRU decoder ASR model and its RNN language model,
//! trained from scratch as SpeechBrain's LibriSpeech recipes train them (joint CTC + attention
//! loss; the LM with `nll_loss` on text), from one `hyperparams.yaml` that is both the recipe's
//! and the trained model's (an inference yaml like `speechbrain/asr-crdnn-rnnlm-librispeech`'s
//! with the training keys below), so `OUT/model` loads in `EncoderDecoderASR.from_hparams` of
//! either library.
//!
//! Training keys (SpeechBrain's names): `seed`, `number_of_epochs`, `batch_size`, `lr` (Adam),
//! `lr_final` (optional: the learning rate falls in a straight line from `lr` in the first
//! epoch to `lr_final` in the last, SpeechBrain's `LinearScheduler`), `lr_decay_epochs`
//! (voxbrain's, with `lr_final`: `lr` held, then the line over only the last this many
//! epochs), `ctc_weight`, `label_smoothing`, `clip_grad_norm`, `ckpt_interval_minutes`, and for the LM
//! `lm_number_of_epochs`, `lm_batch_size`, `lm_lr`; `lm_weight_grid` and
//! `ctc_weight_decode_grid` (voxbrain's: LM and CTC decoding weights tried together on the
//! validation set after training, the best pair written to the exported yaml's `lm_weight` and
//! `ctc_weight_decode`; `OUT/tuning/`). The LM is trained first (`OUT/lm.ckpt`,
//! checkpoints in `OUT/save_lm`), then the ASR model (`OUT/save`); a killed run resumes where
//! it was. `OUT/model` gets `hyperparams.yaml`, `asr.ckpt`, `normalizer.ckpt`, `lm.ckpt`,
//! `tokenizer.ckpt`; `OUT/results.json` the word error rate of each test set, decoded as a user
//! would (the exported folder loaded with `from_hparams`, beam search with the LM).

use std::path::{Path, PathBuf};

use candle_core::Device;
use rayon::prelude::*;
use serde_json::json;

use super::asr_finetune::{asr_dataset, EncDecFineTune};
use super::lm_train::{text_dataset, LmTrain};
use super::separation_recipe::open_recipe;
use super::{
    Brain, BrainError, BrainOptions, Checkpointer, EpochCounter, LinearScheduler, OptimizerKind,
};
use crate::dataio::{DataLoaderOptions, DynamicItemDataset};
use crate::inference::EncoderDecoderASR;
use crate::metrics::{count_ops, op_table};
use crate::nnet::init::{init_varmap, Init};
use crate::pretrained::hparams::Kwargs;
use crate::pretrained::{FromHparamsOptions, Pretrained};
use crate::tokenizers::SentencePiece;

/// Settings of [`train_asr`].
#[derive(Debug, Clone)]
pub struct AsrRecipe {
    /// The recipe's `hyperparams.yaml`.
    pub hparams: PathBuf,
    /// YAML overrides (top-level `key: value` lines).
    pub overrides: Option<String>,
    /// SentencePiece model trained on the recipe's text (`output_neurons` pieces, id 0 =
    /// `<unk>` = blank; `<s>`/`</s>` at the yaml's `bos_index`/`eos_index` when those differ
    /// from 0); becomes `tokenizer.ckpt`.
    pub tokenizer: PathBuf,
    /// Training manifest (`{id: {file_path, words, spkID, length}}`, as
    /// `voxbrain-data librispeech-to-json` writes it).
    pub train: PathBuf,
    /// Validation manifest.
    pub valid: Option<PathBuf>,
    /// Text for the LM, one sentence per line (none: the training transcripts).
    pub lm_text: Option<PathBuf>,
    /// Test sets `(name, manifest)`: the WER of each goes to `results.json`.
    pub tests: Vec<(String, PathBuf)>,
    /// Output folder.
    pub output_dir: PathBuf,
    /// Hide the progress bars.
    pub noprogressbar: bool,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct AsrReport {
    /// `(epoch, train loss, valid loss)` of the ASR epochs run in this process.
    pub epochs: Vec<(usize, f64, Option<f64>)>,
    /// `(set, WER %)` of each test set.
    pub wer: Vec<(String, f64)>,
    /// The exported model folder.
    pub model_dir: PathBuf,
    /// Each decoding setting of `lm_weight_grid` x `ctc_weight_decode_grid` tried on the
    /// validation set, when any were.
    pub search_tuning: Vec<SearchTry>,
    /// The setting chosen from them (written into the exported yaml).
    pub search: Option<SearchTry>,
}

/// One decoding setting the recipe tried on the validation set (beam search as a user
/// decodes), with its word error rate.
///
/// ```
/// let t = voxbrain::brain::asr_recipe::SearchTry { lm_weight: Some(0.3), ctc_weight: None, valid_wer: 7.6 };
/// assert_eq!(t.overrides(), "lm_weight: 0.3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchTry {
    /// `lm_weight` (`None`: the yaml's, when `lm_weight_grid` is not set).
    pub lm_weight: Option<f64>,
    /// `ctc_weight_decode` (`None`: the yaml's, when `ctc_weight_decode_grid` is not set).
    pub ctc_weight: Option<f64>,
    /// Validation WER %.
    pub valid_wer: f64,
}

impl SearchTry {
    /// The setting as top-level yaml overrides, one `key: value` line each.
    pub fn overrides(&self) -> String {
        let lm = self.lm_weight.map(|w| format!("lm_weight: {w}"));
        let ctc = self.ctc_weight.map(|w| format!("ctc_weight_decode: {w}"));
        lm.into_iter().chain(ctc).collect::<Vec<_>>().join("\n")
    }

    fn json(&self) -> serde_json::Value {
        let mut v = json!({"valid_wer": self.valid_wer});
        if let Some(w) = self.lm_weight {
            v["lm_weight"] = json!(w);
        }
        if let Some(w) = self.ctc_weight {
            v["ctc_weight_decode"] = json!(w);
        }
        v
    }
}

/// Fresh parameters for a CRDNN ASR model or RNNLM as PyTorch and SpeechBrain initialise them:
/// torch's Conv/Linear rule, norms at 1 and 0 (running variance 1), embeddings N(0, 1),
/// recurrent `weight_hh` orthogonal (SpeechBrain's `rnn_init`, `re_init: True`) and the other
/// recurrent tensors uniform in `±1/sqrt(hidden)` (torch's RNN rule).
pub fn init_asr_like_torch(varmap: &candle_nn::VarMap, seed: u64) -> candle_core::Result<()> {
    let hidden: std::collections::HashMap<String, usize> = varmap
        .data()
        .lock()
        .expect("VarMap lock poisoned")
        .iter()
        .filter(|(k, _)| k.contains("weight_hh"))
        .map(|(k, v)| (k.replacen("weight_hh", "", 1), v.dims()[1]))
        .collect();
    init_varmap(varmap, seed, |name, _| {
        if name.contains("norm") {
            let one = name.ends_with("weight") || name.ends_with("running_var");
            Init::Constant(if one { 1.0 } else { 0.0 })
        } else if name.contains("weight_hh") {
            Init::Orthogonal
        } else if let Some(h) = ["weight_ih", "bias_ih", "bias_hh"]
            .iter()
            .find_map(|p| hidden.get(&name.replacen(p, "", 1)))
        {
            Init::Uniform(1.0 / (*h as f64).sqrt())
        } else if name.ends_with("Embedding.weight") {
            Init::Normal(1.0)
        } else {
            Init::Default
        }
    })
}

/// Trains, exports and evaluates the recipe `cfg` (resuming from `OUT` if a run was there).
pub fn train_asr(cfg: &AsrRecipe) -> Result<AsrReport, BrainError> {
    let out = &cfg.output_dir;
    let io = |p: &Path, e: std::io::Error| BrainError::Io(p.to_path_buf(), e);
    let (_lock, hp, model_yaml) = open_recipe(
        out,
        &cfg.hparams,
        cfg.overrides.as_deref(),
        "an ASR training run",
    )?;
    let kw = Kwargs::top_level(&hp);
    let bad = |e: String| BrainError::Config(format!("{}: {e}", cfg.hparams.display()));
    let seed = kw.usize("seed", 1234).map_err(bad)? as u64;
    let epochs = kw.usize("number_of_epochs", 10).map_err(bad)?;
    let batch_size = kw.usize("batch_size", 8).map_err(bad)?.max(1);
    let lr = kw.f64("lr", 1e-3).map_err(bad)?;
    // `lr_final` / `lr_decay_epochs`: SpeechBrain's LinearScheduler, over the last epochs.
    let lr_linear = LinearScheduler::from_recipe(&kw, lr, epochs).map_err(bad)?;
    let ctc_weight = kw.f64("ctc_weight", 0.5).map_err(bad)?;
    let label_smoothing = kw.f64("label_smoothing", 0.1).map_err(bad)?;
    let clip = kw.f64("clip_grad_norm", 5.0).map_err(bad)?;
    let ckpt_minutes = kw.f64("ckpt_interval_minutes", 5.0).map_err(bad)?;
    let lm_epochs = kw.usize("lm_number_of_epochs", 5).map_err(bad)?;
    let lm_batch = kw.usize("lm_batch_size", 64).map_err(bad)?.max(1);
    let lm_lr = kw.f64("lm_lr", 1e-3).map_err(bad)?;
    let lm_grid = kw.f64_list("lm_weight_grid", &[]).map_err(bad)?;
    let ctc_grid = kw.f64_list("ctc_weight_decode_grid", &[]).map_err(bad)?;
    if !ctc_grid.is_empty() && kw.get("ctc_weight_decode").is_none() {
        return Err(bad(
            "ctc_weight_decode_grid is set, but there is no `ctc_weight_decode` \
             key (the CTCScorer's weight in the scorer's `weights`) to tune"
                .into(),
        ));
    }

    // The model's own files first: the exported folder copies them.
    let src = out.join("model_files");
    std::fs::create_dir_all(&src).map_err(|e| io(&src, e))?;
    let tok_bytes = std::fs::read(&cfg.tokenizer).map_err(|e| io(&cfg.tokenizer, e))?;
    for (name, bytes) in [
        ("hyperparams.yaml", model_yaml.as_bytes()),
        ("tokenizer.ckpt", tok_bytes.as_slice()),
    ] {
        let p = src.join(name);
        crate::fsutil::write_atomic(&p, bytes).map_err(|e| io(&p, e))?;
    }

    crate::runtime::tune_allocator();
    let mut asr = EncoderDecoderASR::build(&hp, &Device::Cpu)
        .map_err(|e| BrainError::Config(format!("{}: {e}", cfg.hparams.display())))?;
    init_asr_like_torch(&asr.asr_varmap, seed)?;
    init_asr_like_torch(&asr.lm_varmap, seed + 1)?;
    crate::nnet::dropout::seed_dropout(seed);
    let tok = SentencePiece::open(src.join("tokenizer.ckpt"))
        .map_err(|e| BrainError::Config(e.to_string()))?;
    if tok.vocab_size() != asr.emb.num_embeddings() {
        return Err(BrainError::Config(format!(
            "{}: {} pieces, but the model has output_neurons {}",
            cfg.tokenizer.display(),
            tok.vocab_size(),
            asr.emb.num_embeddings()
        )));
    }
    asr.tokenizer = Some(tok);

    let valid_text = cfg.valid.as_deref().map(manifest_words).transpose()?;
    train_lm(
        cfg,
        &mut asr,
        valid_text.as_deref(),
        (lm_epochs, lm_batch, lm_lr),
    )?;

    let train = asr_dataset(&cfg.train, &asr, None)?;
    let valid = cfg
        .valid
        .as_deref()
        .map(|v| asr_dataset(v, &asr, None))
        .transpose()?;
    tracing::info!(
        "training the ASR model on {} utterances{} for {epochs} epochs",
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
    let mut brain = EncDecFineTune::new(asr, Some(opt_class), opts)?.with_ctc_weight(ctc_weight)?;
    brain.label_smoothing = label_smoothing;
    brain.lr_linear = lr_linear;
    brain.valid_wer = true;
    brain.train_logger = Some(super::FileTrainLogger::new(out.join("train_log.txt")));
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
    brain.export(&src, &model_dir)?;
    let epochs_run = brain.epoch_stats.iter().map(|s| (s.0, s.1, s.2)).collect();
    drop(brain);

    let tune = !lm_grid.is_empty() || !ctc_grid.is_empty();
    let (search_tuning, search) = match &cfg.valid {
        Some(valid) if tune => {
            let (tried, best) = tune_search(&model_dir, valid, (&lm_grid, &ctc_grid), out)?;
            (tried, Some(best))
        }
        None if tune => {
            tracing::warn!(
                "lm_weight_grid / ctc_weight_decode_grid are set but there is no --valid set: \
                 the yaml's weights kept"
            );
            (Vec::new(), None)
        }
        _ => (Vec::new(), None),
    };
    let wer = evaluate(&model_dir, &cfg.tests, &out.join("results.json"))?;
    Ok(AsrReport {
        epochs: epochs_run,
        wer,
        model_dir,
        search_tuning,
        search,
    })
}

/// Decodes `valid` with each pair of `lm_weight_grid` x `ctc_weight_decode_grid` (beam search,
/// as a user decodes; an empty grid keeps the yaml's weight) and writes the best (lowest WER;
/// the first of equals) into `model_dir/hyperparams.yaml`. Each try's transcripts go to
/// `OUT/tuning/search_<lm>_<ctc>.json`, the summary to `OUT/tuning/search.json`; returns every
/// try and the one chosen.
fn tune_search(
    model_dir: &Path,
    valid: &Path,
    (lm_grid, ctc_grid): (&[f64], &[f64]),
    out: &Path,
) -> Result<(Vec<SearchTry>, SearchTry), BrainError> {
    let io = |p: &Path, e: std::io::Error| BrainError::Io(p.to_path_buf(), e);
    let dir = out.join("tuning");
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let sets = [("valid".to_string(), valid.to_path_buf())];
    let axis = |g: &[f64]| -> Vec<Option<f64>> {
        if g.is_empty() {
            vec![None]
        } else {
            g.iter().copied().map(Some).collect()
        }
    };
    let mut tried: Vec<SearchTry> = axis(lm_grid)
        .into_iter()
        .flat_map(|lm_weight| {
            axis(ctc_grid).into_iter().map(move |ctc_weight| SearchTry {
                lm_weight,
                ctc_weight,
                valid_wer: f64::NAN,
            })
        })
        .collect();
    // One utterance's beam search keeps about one core busy: the tries run side by side on
    // rayon's pool (a failed try stops the tries not yet started).
    let wers: Vec<f64> = tried
        .par_iter()
        .map(|t| {
            let opts = EvalOptions {
                overrides: Some(t.overrides()),
                greedy: false,
            };
            let name = |w: Option<f64>| w.map_or("yaml".into(), |w| w.to_string());
            let file = format!("search_{}_{}.json", name(t.lm_weight), name(t.ctc_weight));
            let wer = evaluate_with(model_dir, &sets, &dir.join(file), &opts)?[0].1;
            let setting = t.overrides().replace('\n', ", ");
            tracing::info!("{setting}: valid WER {wer:.2}%");
            Ok(wer)
        })
        .collect::<Result<_, BrainError>>()?;
    for (t, w) in tried.iter_mut().zip(wers) {
        t.valid_wer = w;
    }
    let best = tried.iter().fold(
        tried[0],
        |b, &t| if t.valid_wer < b.valid_wer { t } else { b },
    );
    let chosen = best.overrides();
    tracing::info!(
        "chosen: {} (valid WER {:.2}%)",
        chosen.replace('\n', ", "),
        best.valid_wer
    );
    let yaml = model_dir.join("hyperparams.yaml");
    let text = std::fs::read_to_string(&yaml).map_err(|e| io(&yaml, e))?;
    let text = super::separation_recipe::with_overrides(&text, Some(&chosen))
        .map_err(BrainError::Config)?;
    crate::fsutil::write_atomic(&yaml, text.as_bytes()).map_err(|e| io(&yaml, e))?;
    let summary = json!({"chosen": best.json(),
        "tried": tried.iter().map(SearchTry::json).collect::<Vec<_>>()});
    let path = dir.join("search.json");
    crate::fsutil::write_atomic(&path, summary.to_string().as_bytes()).map_err(|e| io(&path, e))?;
    Ok((tried, best))
}

/// The LM stage: trains `asr`'s `lm_model` on the recipe's text, or loads `OUT/lm.ckpt` when
/// an earlier run finished it.
fn train_lm(
    cfg: &AsrRecipe,
    asr: &mut EncoderDecoderASR,
    valid_text: Option<&[String]>,
    (epochs, batch_size, lr): (usize, usize, f64),
) -> Result<(), BrainError> {
    let out = &cfg.output_dir;
    let done = out.join("lm.ckpt");
    let Some(lm) = asr.lm_model.take() else {
        return Ok(());
    };
    if done.exists() {
        let strict = crate::pretrained::ckpt::LoadOptions::strict();
        crate::pretrained::ckpt::load_state_dict_file(&asr.lm_varmap, &done, &strict)
            .map_err(|e| BrainError::Config(e.to_string()))?;
        tracing::info!("the LM was trained before: {}", done.display());
        asr.lm_model = Some(lm);
        return Ok(());
    }
    let lines = match &cfg.lm_text {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| BrainError::Io(p.clone(), e))?
            .lines()
            .map(String::from)
            .collect(),
        None => manifest_words(&cfg.train)?,
    };
    let train = text_dataset(&lines, asr)?;
    let valid = valid_text.map(|v| text_dataset(v, asr)).transpose()?;
    tracing::info!(
        "training the LM on {} sentences for {epochs} epochs",
        train.len()
    );
    let opts = BrainOptions {
        ckpt_interval_minutes: 5.0,
        noprogressbar: cfg.noprogressbar,
        steps_log: Some(out.join("lm_steps.jsonl")),
        ..Default::default()
    };
    let opt_class: super::OptClass = Box::new(move |p| OptimizerKind::Adam.build(p, lr, 0.0));
    let mut brain = LmTrain::new(lm, &asr.lm_varmap, Some(opt_class), opts);
    brain.core_mut().checkpointer = Some(Checkpointer::new(out.join("save_lm")));
    let loader = DataLoaderOptions::batch_size(batch_size);
    brain.fit(
        EpochCounter::new(epochs),
        &train,
        valid.as_ref(),
        loader.clone(),
        loader,
    )?;
    crate::pretrained::ckpt::save_state_dict(&asr.lm_varmap, None, &done)
        .map_err(|e| BrainError::Config(e.to_string()))?;
    asr.lm_model = Some(brain.lm);
    Ok(())
}

/// The `words` of every utterance of a manifest.
fn manifest_words(manifest: &Path) -> Result<Vec<String>, BrainError> {
    let ds = DynamicItemDataset::from_json(manifest, &Default::default())?;
    (0..ds.len())
        .map(|i| Ok(ds.compute(i, &["words"])?.str("words")?.to_string()))
        .collect()
}

/// Loads `model_dir` as a user would and transcribes every utterance of each test set one at
/// a time (beam search with the LM, as the yaml says); writes each set's WER and its first
/// transcripts to `path` and returns `(set, WER %)`.
pub fn evaluate(
    model_dir: &Path,
    tests: &[(String, PathBuf)],
    path: &Path,
) -> Result<Vec<(String, f64)>, BrainError> {
    evaluate_with(model_dir, tests, path, &EvalOptions::default())
}

/// How [`evaluate_with`] decodes: yaml overrides (e.g. `"lm_weight: 0.8"`, to tune the
/// search on a validation set) and greedy decoding instead of the yaml's beam search.
///
/// ```
/// let o = voxbrain::brain::asr_recipe::EvalOptions {
///     overrides: Some("{lm_weight: 0.8, beam_size: 8}".into()),
///     ..Default::default()
/// };
/// assert!(!o.greedy);
/// ```
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// YAML overrides applied to the model's hyperparams.yaml before it is resolved.
    pub overrides: Option<String>,
    /// Greedy decoding without the LM.
    pub greedy: bool,
}

/// [`evaluate`] with decoding options.
pub fn evaluate_with(
    model_dir: &Path,
    tests: &[(String, PathBuf)],
    path: &Path,
    eval: &EvalOptions,
) -> Result<Vec<(String, f64)>, BrainError> {
    let src = model_dir.display().to_string();
    // A fresh savedir of its own beside the results: files found in a savedir are reused, so
    // a default or earlier one could hold another model's (or an earlier export's) files.
    let savedir = path.with_extension("savedir");
    if savedir.exists() {
        std::fs::remove_dir_all(&savedir).map_err(|e| BrainError::Io(savedir.clone(), e))?;
    }
    let opts = FromHparamsOptions {
        savedir: Some(savedir),
        overrides: eval.overrides.clone(),
        ..Default::default()
    };
    let mut asr = EncoderDecoderASR::from_hparams(&src, &opts)
        .map_err(|e| BrainError::Config(e.to_string()))?;
    if eval.greedy {
        asr.decoding = crate::inference::DecodingMethod::Greedy;
    }
    let mut sets = serde_json::Map::new();
    let mut wers = Vec::new();
    for (name, manifest) in tests {
        let ds = DynamicItemDataset::from_json(manifest, &Default::default())?;
        let (mut errors, mut words) = (0usize, 0usize);
        let mut examples = Vec::new();
        for i in 0..ds.len() {
            let item = ds.compute(i, &["id", "file_path", "words"])?;
            let (id, file) = (item.str("id")?, item.str("file_path")?);
            let hyp = asr
                .transcribe_file(file)
                .map_err(|e| BrainError::Config(format!("{name} {id}: {e}")))?;
            let reference = item.str("words")?;
            let r: Vec<&str> = reference.split_whitespace().collect();
            let h: Vec<&str> = hyp.split_whitespace().collect();
            let e = count_ops(&op_table(&r, &h)).total();
            errors += e;
            words += r.len();
            if examples.len() < 10 {
                examples.push(json!({"id": id, "ref": reference, "hyp": hyp, "errors": e}));
            }
        }
        let wer = 100.0 * errors as f64 / words.max(1) as f64;
        tracing::info!("{name}: WER {wer:.2}% ({errors} errors / {words} words)");
        sets.insert(
            name.clone(),
            json!({"wer": wer, "errors": errors, "words": words, "utterances": ds.len(),
                   "examples": examples}),
        );
        wers.push((name.clone(), wer));
    }
    let text = serde_json::to_string_pretty(&json!({ "sets": sets }))
        .map_err(|e| BrainError::Config(e.to_string()))?;
    crate::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| BrainError::Io(path.into(), e))?;
    Ok(wers)
}
