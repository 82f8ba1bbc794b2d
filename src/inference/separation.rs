//! `speechbrain.inference.separation.SepformerSeparation`: load a SepFormer with
//! `from_hparams`, separate batches and files, write the sources as wav.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::audio::{read_waveform, write_wav, AudioError, WavFormat, Waveform};
use crate::lobes::sepformer::{Sepformer, SepformerConfig};
use crate::pretrained::hparams::Hparams;
use crate::pretrained::{
    from_hparams, FromHparamsOptions, Loadable, Pretrained, PretrainedError, Pretrainer,
};

/// Errors of the separation interface; each names the file or the offending input.
#[derive(Debug, thiserror::Error)]
pub enum SeparationError {
    /// Loading the model failed.
    #[error(transparent)]
    Pretrained(#[from] PretrainedError),
    /// Reading or writing audio failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The input cannot be separated.
    #[error("{0}")]
    BadInput(String),
    /// An I/O error on a named path.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Tensor error.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// A pretrained SepFormer (SpeechBrain's `SepformerSeparation`).
///
/// ```no_run
/// use voxbrain::inference::separation::SepformerSeparation;
/// use voxbrain::pretrained::FromHparamsOptions;
/// let model = SepformerSeparation::from_hparams("speechbrain/sepformer-wsj02mix",
///     &FromHparamsOptions { savedir: Some("pretrained_models/sepformer-wsj02mix".into()), ..Default::default() }).unwrap();
/// let est = model.separate_file("mixture.wav").unwrap(); // [1, time, 2]
/// ```
#[derive(Debug, Clone)]
pub struct SepformerSeparation {
    model: Sepformer,
    hparams: Hparams,
    device: Device,
}

impl Pretrained for SepformerSeparation {
    fn build(hparams: &Hparams, device: &Device) -> Result<Self, PretrainedError> {
        let config = SepformerConfig::from_hparams(hparams)?;
        let model = Sepformer::new(config, device)?;
        Ok(Self {
            model,
            hparams: hparams.clone(),
            device: device.clone(),
        })
    }

    fn load(&mut self, pretrainer: &Pretrainer) -> Result<(), PretrainedError> {
        let mut enc = self.model.params("encoder");
        let mut mask = self.model.params("masknet");
        let mut dec = self.model.params("decoder");
        pretrainer.load_collected(&mut [
            ("encoder", &mut enc as &mut dyn Loadable),
            ("masknet", &mut mask),
            ("decoder", &mut dec),
        ])
    }
}

impl SepformerSeparation {
    /// SpeechBrain's `SepformerSeparation.from_hparams(source, savedir=...)`: a local
    /// directory, URL prefix or HuggingFace repo id holding `hyperparams.yaml` and
    /// `encoder.ckpt`, `masknet.ckpt`, `decoder.ckpt`.
    pub fn from_hparams(source: &str, opts: &FromHparamsOptions) -> Result<Self, SeparationError> {
        Ok(from_hparams::<Self>(source, opts)?)
    }

    /// Wraps an already built model.
    pub fn from_model(model: Sepformer, hparams: Hparams, device: Device) -> Self {
        Self {
            model,
            hparams,
            device,
        }
    }

    /// The model's sample rate (`hparams.sample_rate`).
    pub fn sample_rate(&self) -> u32 {
        self.model.config.sample_rate
    }

    /// Number of sources (`hparams.num_spks`).
    pub fn num_spks(&self) -> usize {
        self.model.config.masknet.num_spks
    }

    /// The resolved hyperparameters.
    pub fn hparams(&self) -> &Hparams {
        &self.hparams
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model.
    pub fn model(&self) -> &Sepformer {
        &self.model
    }

    /// Mutable access to the model (e.g. to switch training mode).
    pub fn model_mut(&mut self) -> &mut Sepformer {
        &mut self.model
    }

    /// Opt-in dynamic int8 quantization, as torch's `quantize_dynamic` does to `nn.Linear`:
    /// the transformers' products run in int8 on the CPU, with outputs a little off
    /// SpeechBrain's f32 ones. With AVX-512 it gains about 10%; on AVX2-only CPUs it is now
    /// slower than f32 (3.7 s against 3.5 s for 5 s of audio on a Xeon), whose fused AVX2
    /// transformer kernels it does not use (the README measures both). The int8 copies are taken
    /// at this call: quantize after any fine-tuning. Without this call nothing changes.
    ///
    /// ```no_run
    /// use voxbrain::inference::separation::SepformerSeparation;
    /// use voxbrain::pretrained::FromHparamsOptions;
    /// let mut model = SepformerSeparation::from_hparams("speechbrain/sepformer-wsj02mix",
    ///     &FromHparamsOptions::default()).unwrap();
    /// model.quantize_dynamic().unwrap();
    /// let sources = model.separate_file("mixture.wav").unwrap();
    /// ```
    pub fn quantize_dynamic(&mut self) -> Result<(), SeparationError> {
        Ok(self.model.quantize_dynamic()?)
    }

    /// `separate_batch(mix)`: `mix` `[batch, time]` (or `[time]`) at the model's rate ->
    /// estimated sources `[batch, time, num_spks]` (SpeechBrain's shape), unnormalized.
    pub fn separate_batch(&self, mix: &Tensor) -> Result<Tensor, SeparationError> {
        let mix = match mix.rank() {
            1 => mix.unsqueeze(0)?,
            2 => mix.clone(),
            r => {
                return Err(SeparationError::BadInput(format!(
                    "separate_batch expects [batch, time] or [time], got a rank-{r} tensor {:?}",
                    mix.dims()
                )))
            }
        };
        if mix.dim(1)? == 0 || mix.dim(0)? == 0 {
            return Err(SeparationError::BadInput(
                "separate_batch: empty input".into(),
            ));
        }
        let mix = mix
            .to_dtype(candle_core::DType::F32)?
            .to_device(&self.device)?;
        Ok(self.model.forward(&mix)?)
    }

    /// Separates one mono signal at the model's rate; returns one `Vec` per source.
    pub fn separate_samples(&self, samples: &[f32]) -> Result<Vec<Vec<f32>>, SeparationError> {
        if samples.is_empty() {
            return Err(SeparationError::BadInput("empty signal".into()));
        }
        let x = Tensor::from_slice(samples, (1, samples.len()), &self.device)?;
        let est = self.separate_batch(&x)?.squeeze(0)?; // [T, spk]
        Ok(est.t()?.contiguous()?.to_vec2::<f32>()?)
    }

    /// Reads a file as SpeechBrain's `separate_file` does: channels averaged to mono, then
    /// resampled to the model's rate with a warning (torchaudio's kernel). Returns the mono
    /// signal at the model rate.
    pub fn load_mixture(&self, path: impl AsRef<Path>) -> Result<Vec<f32>, SeparationError> {
        let path = path.as_ref();
        let w = read_waveform(path)?;
        if w.num_frames() == 0 {
            return Err(SeparationError::BadInput(format!(
                "{}: no samples",
                path.display()
            )));
        }
        if w.num_channels() > 1 {
            tracing::info!(path = %path.display(), channels = w.num_channels(), "averaging channels to mono");
        }
        let mono = Waveform::mono(w.to_mono(), w.sample_rate);
        let fs = self.sample_rate();
        if w.sample_rate != fs {
            tracing::warn!(
                path = %path.display(),
                "Resampling the audio from {} Hz to {fs} Hz (the model's rate)",
                w.sample_rate
            );
        }
        Ok(mono.resampled(fs)?.into_channels().remove(0))
    }

    /// `separate_file(path)`: loads (see [`Self::load_mixture`]), separates and scales each
    /// source to a peak of 1 as SpeechBrain does (a silent source stays zero instead of NaN).
    /// Returns `[1, time, num_spks]` at the model's rate.
    pub fn separate_file(&self, path: impl AsRef<Path>) -> Result<Tensor, SeparationError> {
        let mix = self.load_mixture(path)?;
        let x = Tensor::from_slice(&mix, (1, mix.len()), &self.device)?;
        let est = self.separate_batch(&x)?;
        Ok(peak_normalize(&est)?)
    }

    /// Separates a long signal in bounded memory: windows of `chunk` samples overlapping by
    /// `overlap` samples are separated independently; each window's sources are matched to
    /// the previous window's by correlation over the overlap (the model's output order is
    /// arbitrary per window), then cross-faded linearly. Memory is that of one window (plus
    /// the output). With `chunk >= samples.len()` this is [`Self::separate_samples`].
    pub fn separate_long(
        &self,
        samples: &[f32],
        chunk: usize,
        overlap: usize,
    ) -> Result<Vec<Vec<f32>>, SeparationError> {
        if samples.is_empty() {
            return Err(SeparationError::BadInput("empty signal".into()));
        }
        if overlap >= chunk {
            return Err(SeparationError::BadInput(format!(
                "overlap ({overlap}) must be smaller than the chunk ({chunk})"
            )));
        }
        if chunk >= samples.len() {
            return self.separate_samples(samples);
        }
        let n_src = self.num_spks();
        let total = samples.len();
        let hop = chunk - overlap;
        let mut out = vec![vec![0f32; total]; n_src];
        let mut start = 0usize;
        let mut written = 0usize; // out[..written] holds the previous windows
        loop {
            let end = (start + chunk).min(total);
            let est = self.separate_samples(&samples[start..end])?;
            let ov = written.saturating_sub(start);
            let order: Vec<usize> = if ov == 0 {
                (0..n_src).collect()
            } else {
                best_order(&out, &est, start, ov)
            };
            for (dst, &src) in order.iter().enumerate() {
                let window = &mut out[dst][start..end];
                for (i, (o, &e)) in window.iter_mut().zip(&est[src]).enumerate() {
                    if i < ov {
                        let w = (i as f32 + 0.5) / ov as f32;
                        *o = *o * (1.0 - w) + e * w;
                    } else {
                        *o = e;
                    }
                }
            }
            written = end;
            if end == total {
                break;
            }
            start += hop;
        }
        Ok(out)
    }

    /// Writes sources `[time, num_spks]` (or `[1, time, num_spks]`) as
    /// `<out_dir>/<stem>_source<i>.wav` (1-based) at the model's rate, 32-bit float.
    pub fn save_sources(
        &self,
        est: &Tensor,
        out_dir: impl AsRef<Path>,
        stem: &str,
    ) -> Result<Vec<PathBuf>, SeparationError> {
        let est = if est.rank() == 3 {
            est.squeeze(0)?
        } else {
            est.clone()
        };
        let sources = est.t()?.contiguous()?.to_vec2::<f32>()?;
        write_sources(&sources, self.sample_rate(), out_dir, stem)
    }
}

/// `(mixture, source1, source2)` of [`make_mixture`].
pub type Mixture = (Vec<f32>, Vec<f32>, Vec<f32>);

/// The tutorial's artificial mixture: two files loaded as SpeechBrain's `read_audio` +
/// resampling (channels averaged, torchaudio's kernel) at `sample_rate`, cropped to the
/// shorter, and added. Returns `(mixture, source1, source2)`, all the same length.
///
/// ```no_run
/// let (mix, s1, s2) = voxbrain::inference::separation::make_mixture("a.flac", "b.flac", 8000).unwrap();
/// ```
pub fn make_mixture(
    path1: impl AsRef<Path>,
    path2: impl AsRef<Path>,
    sample_rate: u32,
) -> Result<Mixture, SeparationError> {
    let load = |p: &Path| -> Result<Vec<f32>, SeparationError> {
        let w = read_waveform(p)?;
        Ok(Waveform::mono(w.to_mono(), w.sample_rate)
            .resampled(sample_rate)?
            .into_channels()
            .remove(0))
    };
    let mut s1 = load(path1.as_ref())?;
    let mut s2 = load(path2.as_ref())?;
    let n = s1.len().min(s2.len());
    if n == 0 {
        return Err(SeparationError::BadInput(
            "make_mixture: an input has no samples".into(),
        ));
    }
    s1.truncate(n);
    s2.truncate(n);
    let mix = s1.iter().zip(&s2).map(|(a, b)| a + b).collect();
    Ok((mix, s1, s2))
}

/// Divides each source by its peak absolute value over time (`est / est.abs().max(dim=1)`),
/// leaving all-zero sources at zero. `est`: `[batch, time, num_spks]`.
pub fn peak_normalize(est: &Tensor) -> candle_core::Result<Tensor> {
    let peak = est.abs()?.max_keepdim(1)?;
    let ones = peak.ones_like()?;
    let safe = peak.gt(0.0)?.where_cond(&peak, &ones)?;
    est.broadcast_div(&safe)
}

/// Writes one wav per source (`<stem>_source<i>.wav`, 1-based, float32) into `out_dir`
/// (created if needed); returns the paths.
pub fn write_sources(
    sources: &[Vec<f32>],
    sample_rate: u32,
    out_dir: impl AsRef<Path>,
    stem: &str,
) -> Result<Vec<PathBuf>, SeparationError> {
    let out_dir = out_dir.as_ref();
    std::fs::create_dir_all(out_dir).map_err(|source| SeparationError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut paths = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        let path = out_dir.join(format!("{stem}_source{}.wav", i + 1));
        write_wav(
            &path,
            &Waveform::mono(s.clone(), sample_rate),
            WavFormat::Float32,
        )?;
        paths.push(path);
    }
    Ok(paths)
}

/// The permutation of `est` (sources of the window starting at `start`) that best matches
/// `prev` over the `ov` overlapping samples (highest total correlation).
fn best_order(prev: &[Vec<f32>], est: &[Vec<f32>], start: usize, ov: usize) -> Vec<usize> {
    let n = prev.len();
    let corr = |a: usize, b: usize| -> f64 {
        let p = &prev[a][start..start + ov];
        let e = &est[b][..ov];
        let dot: f64 = p.iter().zip(e).map(|(x, y)| *x as f64 * *y as f64).sum();
        let np: f64 = p.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let ne: f64 = e.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        dot / (np * ne + 1e-12)
    };
    let mut best: (f64, Vec<usize>) = (f64::NEG_INFINITY, (0..n).collect());
    let mut perm: Vec<usize> = (0..n).collect();
    permute(&mut perm, 0, &mut |p| {
        let score: f64 = (0..n).map(|i| corr(i, p[i])).sum();
        if score > best.0 {
            best = (score, p.to_vec());
        }
    });
    best.1
}

fn permute(v: &mut Vec<usize>, k: usize, f: &mut impl FnMut(&[usize])) {
    if k == v.len() {
        f(v);
        return;
    }
    for i in k..v.len() {
        v.swap(k, i);
        permute(v, k + 1, f);
        v.swap(k, i);
    }
}
