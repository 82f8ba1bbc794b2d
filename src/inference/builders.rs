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
