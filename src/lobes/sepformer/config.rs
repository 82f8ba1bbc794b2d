//! Reading a SepFormer configuration from SpeechBrain hyperparameters.

use crate::nnet::transformer::TransformerConfig;
use crate::nnet::Activation;
use crate::pretrained::hparams::{Hparams, HparamsError, Object, Value};
use crate::pretrained::PretrainedError;

use super::dual_path::{DualPathConfig, NormKind};

/// Everything needed to build a [`super::Sepformer`].
#[derive(Debug, Clone)]
pub struct SepformerConfig {
    /// `sample_rate` of the model (8000 for wsj02mix).
    pub sample_rate: u32,
    /// Encoder kernel size (stride is half of it).
    pub kernel_size: usize,
    /// Encoder filters.
    pub n_filters: usize,
    /// The masking network.
    pub masknet: DualPathConfig,
    /// Decoder kernel size.
    pub decoder_kernel_size: usize,
    /// Decoder stride.
    pub decoder_stride: usize,
    /// Decoder bias (ConvTranspose1d's default is true).
    pub decoder_bias: bool,
}

struct Reader<'a> {
    origin: &'a str,
    key: String,
    obj: &'a Object,
}

impl<'a> Reader<'a> {
    fn err(&self, message: String) -> PretrainedError {
        PretrainedError::Hparams(HparamsError::Missing {
            origin: self.origin.to_string(),
            message: format!("`{}` ({}): {message}", self.key, self.obj.class),
        })
    }
    fn value(&self, name: &str) -> Option<&'a Value> {
        self.obj.kwarg(name).filter(|v| !matches!(v, Value::Null))
    }
    fn usize(&self, name: &str, default: Option<usize>) -> Result<usize, PretrainedError> {
        match self.value(name) {
            Some(v) => v
                .as_i64()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| {
                    self.err(format!(
                        "`{name}` is not a non-negative integer: {}",
                        v.python_str()
                    ))
                }),
            None => default.ok_or_else(|| self.err(format!("missing `{name}`"))),
        }
    }
    fn bool(&self, name: &str, default: bool) -> Result<bool, PretrainedError> {
        match self.value(name) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{name}` is not a boolean: {}", v.python_str()))),
            None => Ok(default),
        }
    }
    fn f32(&self, name: &str, default: f32) -> Result<f32, PretrainedError> {
        match self.value(name) {
            Some(v) => v
                .as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| self.err(format!("`{name}` is not a number: {}", v.python_str()))),
            None => Ok(default),
        }
    }
    fn str(&self, name: &str, default: &'a str) -> Result<&'a str, PretrainedError> {
        match self.value(name) {
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(format!("`{name}` is not a string: {}", v.python_str()))),
            None => Ok(default),
        }
    }
}

fn object<'a>(hp: &'a Hparams, key: &str, class: &str) -> Result<Reader<'a>, PretrainedError> {
    let v = hp.require(key)?;
    let obj = v.as_new().ok_or_else(|| {
        PretrainedError::Hparams(HparamsError::Missing {
            origin: hp.origin().to_string(),
            message: format!("`{key}` is not a !new: object"),
        })
    })?;
    nested(hp.origin(), key, obj, class)
}

fn nested<'a>(
    origin: &'a str,
    key: &str,
    obj: &'a Object,
    class: &str,
) -> Result<Reader<'a>, PretrainedError> {
    if obj.short_name() != class {
        return Err(PretrainedError::UnsupportedClass {
            origin: origin.to_string(),
            key: key.to_string(),
            class: obj.class.clone(),
        });
    }
    Ok(Reader {
        origin,
        key: key.to_string(),
        obj,
    })
}

fn transformer(r: &Reader<'_>, name: &str) -> Result<(TransformerConfig, bool), PretrainedError> {
    let v = r
        .value(name)
        .ok_or_else(|| r.err(format!("missing `{name}`")))?;
    let obj = v
        .as_new()
        .ok_or_else(|| r.err(format!("`{name}` is not a !new: object")))?;
    let key = format!("{}[{name}]", r.key);
    let t = nested(r.origin, &key, obj, "SBTransformerBlock")?;
    let attention = t.str("attention_type", "regularMHA")?;
    if attention != "regularMHA" {
        return Err(t.err(format!(
            "attention_type `{attention}` is not supported (only regularMHA)"
        )));
    }
    for unsupported in ["kdim", "vdim", "input_shape"] {
        if t.value(unsupported).is_some() {
            return Err(t.err(format!("`{unsupported}` is not supported")));
        }
    }
    let activation = match t.str("activation", "relu")? {
        "relu" => Activation::Relu,
        "gelu" => Activation::Gelu,
        other => return Err(t.err(format!("unknown activation `{other}`"))),
    };
    let cfg = TransformerConfig {
        num_layers: t.usize("num_layers", None)?,
        d_model: t.usize("d_model", None)?,
        nhead: t.usize("nhead", None)?,
        d_ffn: t.usize("d_ffn", Some(2048))?,
        dropout: t.f32("dropout", 0.1)?,
        activation,
        normalize_before: t.bool("norm_before", false)?,
    };
    if cfg.nhead == 0 || !cfg.d_model.is_multiple_of(cfg.nhead) {
        return Err(t.err(format!(
            "d_model {} is not divisible by nhead {}",
            cfg.d_model, cfg.nhead
        )));
    }
    Ok((cfg, t.bool("use_positional_encoding", false)?))
}

impl SepformerConfig {
    /// Reads `sample_rate`, `num_spks` and `modules[encoder|masknet|decoder]` (SpeechBrain's
    /// `SepformerSeparation` uses the `modules` dict). Errors name the file and key.
    pub fn from_hparams(hp: &Hparams) -> Result<Self, PretrainedError> {
        let sample_rate = hp
            .require("sample_rate")?
            .as_i64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                PretrainedError::Hparams(HparamsError::Missing {
                    origin: hp.origin().to_string(),
                    message: "`sample_rate` is not a positive integer".into(),
                })
            })?;
        let enc = object(hp, "modules[encoder]", "Encoder")?;
        let kernel_size = enc.usize("kernel_size", Some(2))?;
        let n_filters = enc.usize("out_channels", Some(64))?;
        if enc.usize("in_channels", Some(1))? != 1 {
            return Err(enc.err("only in_channels = 1 is supported".into()));
        }
        let m = object(hp, "modules[masknet]", "Dual_Path_Model")?;
        let norm_name = m.str("norm", "ln")?;
        let norm = NormKind::parse(norm_name).ok_or_else(|| {
            m.err(format!(
                "norm `{norm_name}` is not supported (ln, gln, cln)"
            ))
        })?;
        if m.bool("use_global_pos_enc", false)? {
            return Err(m.err("use_global_pos_enc is not supported".into()));
        }
        let num_spks_default = hp
            .get("num_spks")
            .and_then(|v| v.as_i64())
            .map(|v| v as usize);
        let masknet = DualPathConfig {
            in_channels: m.usize("in_channels", None)?,
            out_channels: m.usize("out_channels", None)?,
            num_layers: m.usize("num_layers", Some(1))?,
            norm,
            k: m.usize("K", Some(200))?,
            num_spks: m.usize("num_spks", num_spks_default.or(Some(2)))?,
            skip_around_intra: m.bool("skip_around_intra", true)?,
            linear_layer_after_inter_intra: m.bool("linear_layer_after_inter_intra", true)?,
            intra: transformer(&m, "intra_model")?,
            inter: transformer(&m, "inter_model")?,
        };
        if masknet.in_channels != n_filters {
            return Err(m.err(format!(
                "in_channels {} differs from the encoder's out_channels {n_filters}",
                masknet.in_channels
            )));
        }
        for (name, t) in [
            ("intra_model", &masknet.intra.0),
            ("inter_model", &masknet.inter.0),
        ] {
            if t.d_model != masknet.out_channels {
                return Err(m.err(format!(
                    "{name} d_model {} differs from out_channels {}",
                    t.d_model, masknet.out_channels
                )));
            }
        }
        if masknet.k < 2 || masknet.num_spks == 0 {
            return Err(m.err("K must be >= 2 and num_spks >= 1".into()));
        }
        let dec = object(hp, "modules[decoder]", "Decoder")?;
        let d_in = dec.usize("in_channels", None)?;
        if d_in != n_filters || dec.usize("out_channels", None)? != 1 {
            return Err(dec.err(format!(
                "expected in_channels = {n_filters} and out_channels = 1"
            )));
        }
        for (name, supported) in [("padding", 0), ("output_padding", 0), ("dilation", 1)] {
            if dec.value(name).is_some() && dec.usize(name, None)? != supported {
                return Err(dec.err(format!("`{name}` other than {supported} is not supported")));
            }
        }
        if dec.usize("groups", Some(1))? != 1 {
            return Err(dec.err("`groups` is not supported".into()));
        }
        Ok(Self {
            sample_rate,
            kernel_size,
            n_filters,
            masknet,
            decoder_kernel_size: dec.usize("kernel_size", None)?,
            decoder_stride: dec.usize("stride", Some(1))?,
            decoder_bias: dec.bool("bias", true)?,
        })
    }
}
