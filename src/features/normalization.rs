//! `InputNormalization` (`speechbrain.processing.features.InputNormalization`) as in
//! SpeechBrain 1.1: masked statistics, biased variance, running global statistics.
//!
//! SpeechBrain 1.0 differed: sentence statistics used the unbiased std (`torch.std`) over
//! `round(length * T)` frames and the global statistics were an average of per-batch means.
//! voxbrain follows 1.1 (the release the parity harness pins); `normalizer.ckpt` files of
//! both releases hold the same `count` / `glob_mean` / `glob_std` entries and load either way.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::{FeatureError, Result};

/// How statistics are computed (SpeechBrain's `norm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormType {
    /// Running statistics over everything seen in training (the default).
    #[default]
    Global,
    /// Statistics of the whole batch (no running state).
    Batch,
    /// Statistics of each utterance.
    Sentence,
}

impl std::str::FromStr for NormType {
    type Err = FeatureError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "global" => Ok(Self::Global),
            "batch" => Ok(Self::Batch),
            "sentence" => Ok(Self::Sentence),
            "speaker" => Err(FeatureError::Config(
                "norm_type 'speaker' is deprecated in SpeechBrain and not supported".into(),
            )),
            other => Err(FeatureError::Config(format!(
                "unknown norm_type {other:?} (expected global, batch or sentence)"
            ))),
        }
    }
}

/// Mean and variance normalization of `[batch, time, features]` inputs.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use voxbrain::features::{InputNormalization, NormType};
/// let x = Tensor::arange(0f32, 9., &Device::Cpu).unwrap().reshape((3, 3, 1)).unwrap();
/// let lens = Tensor::ones(3, candle_core::DType::F32, &Device::Cpu).unwrap();
/// let mut norm = InputNormalization::new(NormType::Sentence);
/// let y = norm.forward(&x, Some(&lens), None).unwrap();
/// let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
/// assert!((v[0] + 1.2247).abs() < 1e-4 && v[1].abs() < 1e-6);
/// ```
#[derive(Debug, Clone)]
pub struct InputNormalization {
    /// Normalise the variance too (default true).
    pub std_norm: bool,
    /// Statistics type.
    pub norm_type: NormType,
    /// Epoch at which global statistics stop updating (default 2; `None` = never stop).
    pub update_until_epoch: Option<usize>,
    /// Leave padded frames untouched (default false: they are normalised too).
    pub avoid_padding_norm: bool,
    /// Floor of the standard deviation (default 1e-10).
    pub epsilon: f64,
    /// Running frame count of the global statistics.
    pub count: u64,
    /// Running global mean `[features]` (None before any update or load).
    pub glob_mean: Option<Tensor>,
    /// Running global std `[features]`.
    pub glob_std: Option<Tensor>,
    training: bool,
}

impl InputNormalization {
    /// A normalizer with SpeechBrain's defaults and the given type, in eval mode.
    pub fn new(norm_type: NormType) -> Self {
        Self {
            std_norm: true,
            norm_type,
            update_until_epoch: Some(2),
            avoid_padding_norm: false,
            epsilon: 1e-10,
            count: 0,
            glob_mean: None,
            glob_std: None,
            training: false,
        }
    }

    /// Switches between training (global stats update) and evaluation (frozen stats).
    pub fn train(&mut self, mode: bool) {
        self.training = mode;
    }

    /// Whether the module is in training mode.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// Normalises `x` (`[batch, time, features]`); `lengths` are relative lengths `[batch]`
    /// (SpeechBrain's `wav_lens`) and exclude padding from the statistics.
    pub fn forward(
        &mut self,
        x: &Tensor,
        lengths: Option<&Tensor>,
        epoch: Option<usize>,
    ) -> Result<Tensor> {
        if x.rank() != 3 {
            return Err(FeatureError::Shape(format!(
                "InputNormalization expects [batch, time, features], got {:?}",
                x.dims()
            )));
        }
        let mask = padding_mask(x, lengths)?; // [B, T, 1], f32 0/1
        let (mean, std) = match self.norm_type {
            NormType::Global => {
                let still = epoch.is_none_or(|e| self.update_until_epoch.is_none_or(|u| e < u));
                if still && self.training {
                    self.update_global(x, &mask)?;
                }
                let (m, s) =
                    match (&self.glob_mean, &self.glob_std) {
                        (Some(m), Some(s)) => (m.clone(), s.clone()),
                        _ => return Err(FeatureError::State(
                            "global InputNormalization has no statistics: load a normalizer.ckpt \
                             or run it in training mode first"
                                .into(),
                        )),
                    };
                (
                    m.to_device(x.device())?.unsqueeze(0)?.unsqueeze(0)?,
                    s.to_device(x.device())?.unsqueeze(0)?.unsqueeze(0)?,
                )
            }
            NormType::Sentence => {
                let n = mask.sum_keepdim(1)?; // [B,1,1]
                let mean = x.broadcast_mul(&mask)?.sum_keepdim(1)?.broadcast_div(&n)?;
                let std = if self.std_norm {
                    x.broadcast_sub(&mean)?
                        .broadcast_mul(&mask)?
                        .sqr()?
                        .sum_keepdim(1)?
                        .broadcast_div(&n)?
                        .sqrt()?
                } else {
                    mean.ones_like()?
                };
                (mean, std)
            }
            NormType::Batch => {
                let (_, mean, var) = gaussian_statistics(x, &mask)?;
                let std = var.clamp(self.epsilon, f64::INFINITY)?.sqrt()?;
                (
                    mean.unsqueeze(0)?.unsqueeze(0)?,
                    std.unsqueeze(0)?.unsqueeze(0)?,
                )
            }
        };
        let std = if self.std_norm { std } else { std.ones_like()? };
        let (mean, std) = if self.avoid_padding_norm {
            let b = mask.broadcast_as(x.shape())?;
            let mean = mean.broadcast_as(x.shape())?.broadcast_mul(&b)?;
            let inv = b.affine(-1.0, 1.0)?;
            let std = std.broadcast_as(x.shape())?.broadcast_mul(&b)?.add(&inv)?;
            (mean, std)
        } else {
            (mean, std)
        };
        Ok(x.broadcast_sub(&mean)?
            .broadcast_div(&std.clamp(self.epsilon, f64::INFINITY)?)?)
    }

    fn update_global(&mut self, x: &Tensor, mask: &Tensor) -> Result<()> {
        let (n, mean, var) = gaussian_statistics(x, mask)?;
        let (gm, gs) = match (&self.glob_mean, &self.glob_std) {
            (Some(m), Some(s)) if self.count > 0 => {
                (m.to_device(x.device())?, s.to_device(x.device())?)
            }
            _ => {
                self.count = n;
                self.glob_mean = Some(mean);
                self.glob_std = Some(var.sqrt()?);
                return Ok(());
            }
        };
        // Chan et al.'s parallel combination of (count, mean, variance), as SpeechBrain does.
        let total = self.count + n;
        let lw = self.count as f64 / total as f64;
        let rw = n as f64 / total as f64;
        let new_mean = ((&gm * lw)? + (&mean * rw)?)?;
        let lvar = (gs.sqr()? + (&new_mean - &gm)?.sqr()?)?;
        let rvar = (var + (&new_mean - &mean)?.sqr()?)?;
        let new_var = ((lvar * lw)? + (rvar * rw)?)?;
        self.count = total;
        self.glob_mean = Some(new_mean);
        self.glob_std = Some(new_var.sqrt()?);
        Ok(())
    }

    /// Loads `count`, `glob_mean` and `glob_std` from a SpeechBrain `normalizer.ckpt`
    /// (a torch pickle), e.g. the one shipped with `asr-crdnn-rnnlm-librispeech`.
    ///
    /// ```no_run
    /// use voxbrain::features::{InputNormalization, NormType};
    /// let mut norm = InputNormalization::new(NormType::Global);
    /// norm.load_statistics("pretrained_ASR/normalizer.ckpt").unwrap();
    /// ```
    pub fn load_statistics(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let ckpt = crate::pretrained::ckpt::read_ckpt(path)
            .map_err(|e| FeatureError::State(format!("cannot load normalizer statistics: {e}")))?;
        let get = |k: &str| {
            ckpt.tensor(k).cloned().ok_or_else(|| {
                FeatureError::State(format!("{} has no `{k}` tensor", path.display()))
            })
        };
        let mean = get("glob_mean")?.to_dtype(DType::F32)?.flatten_all()?;
        let std = get("glob_std")?.to_dtype(DType::F32)?.flatten_all()?;
        self.count = ckpt.int("count").unwrap_or(0).max(0) as u64;
        self.glob_mean = Some(mean);
        self.glob_std = Some(std);
        Ok(())
    }

    /// Writes `normalizer.ckpt` as SpeechBrain does (`count` as an int, `glob_mean` and
    /// `glob_std` as tensors), atomically; what [`load_statistics`](Self::load_statistics)
    /// and SpeechBrain's `InputNormalization._load` read.
    pub fn save_statistics(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (Some(m), Some(s)) = (&self.glob_mean, &self.glob_std) else {
            return Err(FeatureError::State(format!(
                "cannot write {}: the normalizer has no statistics yet",
                path.display()
            )));
        };
        crate::pretrained::ckpt::save_ckpt_with_ints(
            path,
            &[
                ("glob_mean".into(), m.clone()),
                ("glob_std".into(), s.clone()),
            ],
            &[("count".into(), self.count as usize)],
        )
        .map_err(|e| FeatureError::State(e.to_string()))
    }

    /// The statistics SpeechBrain saves in `normalizer.ckpt`.
    pub fn statistics(&self) -> (u64, Option<&Tensor>, Option<&Tensor>) {
        (self.count, self.glob_mean.as_ref(), self.glob_std.as_ref())
    }
}

/// SpeechBrain's `make_padding_mask`: `[B, T, 1]` with 1 where `t < len * T - 1e-6`.
pub fn padding_mask(x: &Tensor, lengths: Option<&Tensor>) -> Result<Tensor> {
    let (b, t) = (x.dim(0)?, x.dim(1)?);
    let lens: Vec<f32> = match lengths {
        Some(l) => l.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
        None => vec![1.0; b],
    };
    if lens.len() != b {
        return Err(FeatureError::Shape(format!(
            "{} relative lengths for a batch of {b}",
            lens.len()
        )));
    }
    let mut m = vec![0.0f32; b * t];
    for (i, &l) in lens.iter().enumerate() {
        let abs = l * t as f32 - 1e-6;
        for j in 0..t {
            if (j as f32) < abs {
                m[i * t + j] = 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(m, (b, t, 1), &Device::Cpu)?.to_device(x.device())?)
}

/// Masked (count, mean `[F]`, biased variance `[F]`) over batch and time.
fn gaussian_statistics(x: &Tensor, mask: &Tensor) -> Result<(u64, Tensor, Tensor)> {
    let n = mask.sum_all()?.to_scalar::<f32>()?.round() as u64;
    if n == 0 {
        return Err(FeatureError::Shape(
            "all frames are padding: cannot compute statistics".into(),
        ));
    }
    let nf = n as f64;
    let mean = x.broadcast_mul(mask)?.sum((0, 1))?.affine(1.0 / nf, 0.0)?;
    let centred = x.broadcast_sub(&mean.unsqueeze(0)?.unsqueeze(0)?)?.sqr()?;
    let var = centred
        .broadcast_mul(mask)?
        .sum((0, 1))?
        .affine(1.0 / nf, 0.0)?;
    Ok((n, mean, var))
}
