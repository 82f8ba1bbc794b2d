//! Building SpeechBrain's feature modules from their hyperparameter objects.

use crate::features::{Fbank, FbankConfig, InputNormalization, NormType};
use crate::pretrained::hparams::{Hparams, Object};
use crate::pretrained::PretrainedError;

fn bad(hp: &Hparams, key: &str, msg: String) -> PretrainedError {
    PretrainedError::Load(format!("{}: `{key}`: {msg}", hp.origin()))
}

/// `!new:speechbrain.lobes.features.Fbank` -> [`Fbank`].
pub(crate) fn fbank(hp: &Hparams, key: &str) -> Result<Fbank, PretrainedError> {
    let o: &Object = hp.object(key, "features.Fbank")?;
    let mut c = FbankConfig::default();
    for (k, v) in &o.kwargs {
        let int = || {
            v.as_i64()
                .map(|i| i as usize)
                .ok_or_else(|| bad(hp, key, format!("`{k}` must be an integer")))
        };
        let num = || {
            v.as_f64()
                .ok_or_else(|| bad(hp, key, format!("`{k}` must be a number")))
        };
        let flag = || {
            v.as_bool()
                .ok_or_else(|| bad(hp, key, format!("`{k}` must be a bool")))
        };
        match k.as_str() {
            "n_mels" => c.n_mels = int()?,
            "n_fft" => c.n_fft = int()?,
            "sample_rate" => c.sample_rate = int()? as u32,
            "f_min" => c.f_min = num()?,
            "f_max" => {
                c.f_max = if v.as_f64().is_some() {
                    Some(num()?)
                } else {
                    None
                }
            }
            "win_length" => c.win_length = num()?,
            "hop_length" => c.hop_length = num()?,
            "deltas" => c.deltas = flag()?,
            "context" => c.context = flag()?,
            "left_frames" => c.left_frames = int()?,
            "right_frames" => c.right_frames = int()?,
            "filter_shape" => {
                c.filter_shape = v
                    .as_str()
                    .ok_or_else(|| bad(hp, key, "`filter_shape` must be a string".into()))?
                    .parse()
                    .map_err(|e| bad(hp, key, format!("{e}")))?
            }
            "requires_grad" | "param_change_factor" | "param_rand_factor" => {}
            other => return Err(bad(hp, key, format!("unknown Fbank argument `{other}`"))),
        }
    }
    Fbank::new(c).map_err(|e| bad(hp, key, e.to_string()))
}

/// `!new:speechbrain.processing.features.InputNormalization` -> [`InputNormalization`].
pub(crate) fn input_normalization(
    hp: &Hparams,
    key: &str,
) -> Result<InputNormalization, PretrainedError> {
    let o: &Object = hp.object(key, "InputNormalization")?;
    let mut n = InputNormalization::new(NormType::Global);
    for (k, v) in &o.kwargs {
        match k.as_str() {
            "norm_type" => {
                n.norm_type = v
                    .as_str()
                    .ok_or_else(|| bad(hp, key, "`norm_type` must be a string".into()))?
                    .parse()
                    .map_err(|e| bad(hp, key, format!("{e}")))?
            }
            "std_norm" => {
                n.std_norm = v
                    .as_bool()
                    .ok_or_else(|| bad(hp, key, "`std_norm` must be a bool".into()))?
            }
            "mean_norm" if v.as_bool() == Some(false) => {
                return Err(bad(
                    hp,
                    key,
                    "mean_norm: False is deprecated in SpeechBrain and not supported".into(),
                ))
            }
            "avoid_padding_norm" => n.avoid_padding_norm = v.as_bool().unwrap_or(false),
            "epsilon" => n.epsilon = v.as_f64().unwrap_or(1e-10),
            "update_until_epoch" => n.update_until_epoch = v.as_i64().map(|e| e as usize),
            "mean_norm" | "length_dim" | "device" => {}
            other => {
                return Err(bad(
                    hp,
                    key,
                    format!("unknown InputNormalization argument `{other}`"),
                ))
            }
        }
    }
    Ok(n)
}

/// The `!new:` object that a `!ref` inside a list or keyword points to, with the key it was
/// defined under (its id).
fn obj_id(v: &crate::pretrained::hparams::Value) -> Option<(&Object, &str)> {
    let o = v.as_new()?;
    Some((o, o.id.as_deref()?))
}

/// The position of each element of a `torch.nn.ModuleList` (`asr_model`), by defining key.
pub(crate) fn module_list(
    hp: &Hparams,
    key: &str,
) -> Result<Vec<(String, Object)>, PretrainedError> {
    let o = hp.object(key, "ModuleList")?;
    let items = o
        .args
        .first()
        .and_then(|v| v.as_list())
        .ok_or_else(|| bad(hp, key, "ModuleList needs a list of modules".into()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            obj_id(v)
                .map(|(o, id)| (id.to_string(), o.clone()))
                .ok_or_else(|| bad(hp, key, format!("element {i} is not a `!ref` to a module")))
        })
        .collect()
}

/// The key a keyword argument of `obj` refers to (`embedding: !ref <emb>` -> `emb`).
pub(crate) fn ref_id(obj: &Object, kwarg: &str) -> Option<String> {
    obj.kwarg(kwarg)
        .and_then(obj_id)
        .map(|(_, id)| id.to_string())
}

/// `!new:speechbrain.decoders.S2SRNNBeamSearcher` -> [`BeamSearchConfig`].
pub(crate) fn beam_search(
    hp: &Hparams,
    key: &str,
) -> Result<crate::decoders::BeamSearchConfig, PretrainedError> {
    use crate::decoders::{BeamSearchConfig, ScorerConfig};
    use crate::pretrained::hparams::Kwargs;
    let o = hp.object(key, "BeamSearcher")?;
    let kw = Kwargs::new(o);
    let e = |m: String| bad(hp, key, m);
    kw.check_known(&[
        "embedding",
        "decoder",
        "linear",
        "bos_index",
        "eos_index",
        "min_decode_ratio",
        "max_decode_ratio",
        "beam_size",
        "scorer",
        "return_topk",
        "topk",
        "using_eos_threshold",
        "eos_threshold",
        "length_normalization",
        "using_max_attn_shift",
        "max_attn_shift",
        "minus_inf",
        "temperature",
    ])
    .map_err(e)?;
    let d = BeamSearchConfig::default();
    let mut cfg = BeamSearchConfig {
        bos_index: kw.usize("bos_index", 0).map_err(e)? as u32,
        eos_index: kw.usize("eos_index", 0).map_err(e)? as u32,
        min_decode_ratio: kw.f64("min_decode_ratio", 0.0).map_err(e)?,
        max_decode_ratio: kw.f64("max_decode_ratio", 1.0).map_err(e)?,
        beam_size: kw.usize("beam_size", 1).map_err(e)?,
        using_eos_threshold: kw.bool("using_eos_threshold", true).map_err(e)?,
        eos_threshold: kw.f64("eos_threshold", 1.5).map_err(e)? as f32,
        length_normalization: kw.bool("length_normalization", true).map_err(e)?,
        using_max_attn_shift: kw.bool("using_max_attn_shift", false).map_err(e)?,
        max_attn_shift: kw.usize("max_attn_shift", d.max_attn_shift).map_err(e)?,
        temperature: kw.f64("temperature", 1.0).map_err(e)? as f32,
        minus_inf: kw.f64("minus_inf", -1e20).map_err(e)? as f32,
        scorer: ScorerConfig::default(),
    };
    if cfg.beam_size == 0 {
        return Err(e("`beam_size` must be at least 1".into()));
    }
    if let Some(s) = o.kwarg("scorer").and_then(|v| v.as_new()) {
        let skw = Kwargs::new(s);
        let weights = s.kwarg("weights").and_then(|v| v.as_map());
        let weight = |name: &str| -> f32 {
            weights
                .and_then(|w| w.get(name))
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0) as f32
        };
        cfg.scorer.scorer_beam_scale = skw.f64("scorer_beam_scale", 2.0).map_err(e)?;
        for sc in skw
            .get("partial_scorers")
            .and_then(|v| v.as_list())
            .unwrap_or(&[])
        {
            let so = sc
                .as_new()
                .ok_or_else(|| e("partial_scorers must hold scorer objects".into()))?;
            if so.short_name() != "CTCScorer" {
                return Err(e(format!(
                    "partial scorer `{}` is not supported yet (CTCScorer)",
                    so.short_name()
                )));
            }
            let w = weights
                .and_then(|w| w.get("ctc"))
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            cfg.scorer.ctc = ctc_scorer(so, w, &cfg).map_err(e)?;
        }
        for sc in skw
            .get("full_scorers")
            .and_then(|v| v.as_list())
            .unwrap_or(&[])
        {
            let so = sc
                .as_new()
                .ok_or_else(|| e("full_scorers must hold scorer objects".into()))?;
            let k = Kwargs::new(so);
            match so.short_name() {
                "RNNLMScorer" => {
                    let t = k.f64("temperature", 1.0).map_err(e)? as f32;
                    cfg.scorer.rnnlm = Some((weight("rnnlm"), t));
                }
                "CoverageScorer" => {
                    let t = k.f64("threshold", 0.5).map_err(e)? as f32;
                    cfg.scorer.coverage = Some((weight("coverage"), t));
                }
                other => {
                    return Err(e(format!(
                        "scorer `{other}` is not supported yet (RNNLMScorer, CoverageScorer)"
                    )))
                }
            }
        }
        if let Some(w) = weights {
            for (name, v) in w {
                let used = matches!(name.as_str(), "rnnlm" | "coverage" | "ctc");
                if !used && v.as_f64().unwrap_or(0.0) != 0.0 {
                    return Err(e(format!("scorer weight `{name}` is not supported yet")));
                }
            }
        }
    }
    Ok(cfg)
}

/// A `CTCScorer` partial scorer with its `weights: {ctc: w}`, checked as SpeechBrain checks
/// it; `None` when the weight is 0 (the scores would be added times 0).
fn ctc_scorer(
    so: &Object,
    weight: f64,
    cfg: &crate::decoders::BeamSearchConfig,
) -> Result<Option<crate::decoders::CtcScorerConfig>, String> {
    use crate::pretrained::hparams::Kwargs;
    let k = Kwargs::new(so);
    k.check_known(&["ctc_fc", "blank_index", "eos_index", "ctc_window_size"])?;
    if k.usize("ctc_window_size", 0)? != 0 {
        return Err("CTCScorer's ctc_window_size is not supported yet (0 only)".into());
    }
    if ref_id(so, "ctc_fc").as_deref() != Some("ctc_lin") {
        return Err("CTCScorer's ctc_fc must be `!ref <ctc_lin>`, the model's CTC layer".into());
    }
    if !(0.0..=1.0).contains(&weight) {
        return Err(format!("ctc weight {weight} is outside [0, 1]"));
    }
    if weight == 1.0 {
        return Err(
            "a ctc weight of 1.0 (CTC-only decoding, a full scorer) is not supported yet".into(),
        );
    }
    if weight == 0.0 {
        return Ok(None);
    }
    let blank = k.usize("blank_index", 0)? as u32;
    let eos = k.usize("eos_index", 0)? as u32;
    if blank == cfg.bos_index || blank == cfg.eos_index || cfg.bos_index == cfg.eos_index {
        return Err("joint attention + CTC decoding needs blank, bos and eos at different indices (SpeechBrain refuses it too)".into());
    }
    Ok(Some(crate::decoders::CtcScorerConfig {
        weight,
        blank_index: blank,
        eos_index: eos,
    }))
}
