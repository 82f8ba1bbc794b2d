//! `Fbank`: SpeechBrain's default acoustic features (`speechbrain.lobes.features.Fbank`).

use candle_core::{Device, Tensor};

use super::deltas::{context_window, deltas};
use super::filterbank::{FilterShape, Filterbank, FilterbankConfig};
use super::stft::{Stft, WindowFn};
use super::{FeatureError, Result};

/// Arguments of SpeechBrain's `Fbank`, with the same names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FbankConfig {
    /// Append first and second time derivatives (default false).
    pub deltas: bool,
    /// Stack `left_frames` + `right_frames` neighbours (default false).
    pub context: bool,
    /// Sampling rate of the input (default 16000).
    pub sample_rate: u32,
    /// Lowest filter frequency (default 0 Hz).
    pub f_min: f64,
    /// Highest filter frequency; `None` means `sample_rate / 2`.
    pub f_max: Option<f64>,
    /// FFT size (default 400).
    pub n_fft: usize,
    /// Number of mel filters (default 40).
    pub n_mels: usize,
    /// Filter shape (default triangular).
    pub filter_shape: FilterShape,
    /// Context frames on the left (default 5).
    pub left_frames: usize,
    /// Context frames on the right (default 5).
    pub right_frames: usize,
    /// Window length in ms (default 25).
    pub win_length: f64,
    /// Hop length in ms (default 10).
    pub hop_length: f64,
}

impl Default for FbankConfig {
    fn default() -> Self {
        Self {
            deltas: false,
            context: false,
            sample_rate: 16000,
            f_min: 0.0,
            f_max: None,
            n_fft: 400,
            n_mels: 40,
            filter_shape: FilterShape::Triangular,
            left_frames: 5,
            right_frames: 5,
            win_length: 25.0,
            hop_length: 10.0,
        }
    }
}

/// Log mel filterbank features, numerically matching SpeechBrain's `Fbank`.
///
/// ```
/// use voxbrain::features::{Fbank, FbankConfig};
/// let fbank = Fbank::new(FbankConfig { n_mels: 80, ..Default::default() }).unwrap();
/// let wav: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.1).sin()).collect();
/// let feats = fbank.compute(&wav);
/// assert_eq!(feats.len(), 101 * 80); // 101 frames of 80 mels
/// ```
#[derive(Debug, Clone)]
pub struct Fbank {
    cfg: FbankConfig,
    stft: Stft,
    filterbank: Filterbank,
    threads: usize,
}

/// Below this many frames per thread, splitting an utterance across threads costs more than
/// it saves.
const MIN_FRAMES_PER_THREAD: usize = 200;

impl Fbank {
    /// Builds the STFT and filterbank.
    pub fn new(cfg: FbankConfig) -> Result<Self> {
        let stft = Stft::new(
            cfg.sample_rate,
            cfg.win_length,
            cfg.hop_length,
            cfg.n_fft,
            WindowFn::Hamming,
            true,
        )?;
        let filterbank = Filterbank::new(FilterbankConfig {
            n_mels: cfg.n_mels,
            filter_shape: cfg.filter_shape,
            f_min: cfg.f_min,
            f_max: cfg.f_max.unwrap_or((cfg.sample_rate / 2) as f64),
            n_fft: cfg.n_fft,
            sample_rate: cfg.sample_rate,
            ..Default::default()
        })?;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Ok(Self {
            cfg,
            stft,
            filterbank,
            threads,
        })
    }

    /// Limits the worker threads used for one utterance (default: all cores).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &FbankConfig {
        &self.cfg
    }

    /// The STFT stage.
    pub fn stft(&self) -> &Stft {
        &self.stft
    }

    /// The filterbank stage.
    pub fn filterbank(&self) -> &Filterbank {
        &self.filterbank
    }

    /// Features per frame: `n_mels`, times 3 with deltas, times the context size with context.
    pub fn n_features(&self) -> usize {
        let mut n = self.cfg.n_mels;
        if self.cfg.deltas {
            n *= 3;
        }
        if self.cfg.context {
            n *= self.cfg.left_frames + self.cfg.right_frames + 1;
        }
        n
    }

    /// Number of frames for `len` samples.
    pub fn num_frames(&self, len: usize) -> usize {
        self.stft.num_frames(len)
    }

    fn mel_energies(&self, signal: &[f32], first: usize, last: usize, out: &mut [f32]) {
        let n_mels = self.cfg.n_mels;
        self.stft
            .for_each_power_frame(signal, first, last, |t, power| {
                let row = t - first;
                self.filterbank
                    .apply_frame(power, &mut out[row * n_mels..(row + 1) * n_mels]);
            });
    }

    /// Mel energies (in dB when `log_mel`) of frames `first..last`; returns the chunk maximum.
    fn chunk(&self, signal: &[f32], first: usize, last: usize, out: &mut [f32]) -> f32 {
        self.mel_energies(signal, first, last, out);
        if self.filterbank.config().log_mel {
            self.filterbank.to_db(out);
        }
        out.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    /// Features of one utterance: `[frames][n_features]` row-major.
    pub fn compute(&self, signal: &[f32]) -> Vec<f32> {
        let frames = self.stft.num_frames(signal.len());
        let n_mels = self.cfg.n_mels;
        let mut mels = vec![0.0f32; frames * n_mels];
        let threads = self.threads.min(frames / MIN_FRAMES_PER_THREAD).max(1);
        let max = if threads == 1 {
            self.chunk(signal, 0, frames, &mut mels)
        } else {
            // rayon's pool is already running (candle uses it too): no thread start-up cost,
            // which matters when a whole utterance takes well under a millisecond.
            use rayon::prelude::*;
            let per = frames.div_ceil(threads);
            mels.par_chunks_mut(per * n_mels)
                .enumerate()
                .map(|(i, chunk)| {
                    let first = i * per;
                    self.chunk(signal, first, first + chunk.len() / n_mels, chunk)
                })
                .reduce(|| f32::NEG_INFINITY, f32::max)
        };
        if self.filterbank.config().log_mel {
            self.filterbank.apply_floor(&mut mels, max);
        }
        self.post_process(mels, frames)
    }

    fn post_process(&self, mut feats: Vec<f32>, frames: usize) -> Vec<f32> {
        let mut dim = self.cfg.n_mels;
        if self.cfg.deltas {
            let d1 = deltas(&feats, frames, dim, 5);
            let d2 = deltas(&d1, frames, dim, 5);
            let mut cat = Vec::with_capacity(frames * dim * 3);
            for t in 0..frames {
                cat.extend_from_slice(&feats[t * dim..(t + 1) * dim]);
                cat.extend_from_slice(&d1[t * dim..(t + 1) * dim]);
                cat.extend_from_slice(&d2[t * dim..(t + 1) * dim]);
            }
            feats = cat;
            dim *= 3;
        }
        if self.cfg.context {
            feats = context_window(
                &feats,
                frames,
                dim,
                self.cfg.left_frames,
                self.cfg.right_frames,
            );
        }
        feats
    }

    /// SpeechBrain's `Fbank.forward`: `wavs` is `[batch, time]` (or `[time]`), the result is
    /// `[batch, frames, n_features]` (or `[frames, n_features]`), on the input's device.
    ///
    /// As in SpeechBrain, padded samples are part of the signal (the `top_db` floor is taken
    /// over the padded utterance), so this equals SpeechBrain's output on the same padded batch.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use voxbrain::features::{Fbank, FbankConfig};
    /// let fbank = Fbank::new(FbankConfig::default()).unwrap();
    /// let wavs = Tensor::zeros((2, 8000), candle_core::DType::F32, &Device::Cpu).unwrap();
    /// assert_eq!(fbank.forward(&wavs).unwrap().dims(), &[2, 51, 40]);
    /// ```
    pub fn forward(&self, wavs: &Tensor) -> Result<Tensor> {
        let device = wavs.device().clone();
        let wavs = wavs
            .to_dtype(candle_core::DType::F32)?
            .to_device(&Device::Cpu)?;
        let (single, rows) = match wavs.rank() {
            1 => (true, vec![wavs.to_vec1::<f32>()?]),
            2 => (false, wavs.to_vec2::<f32>()?),
            r => {
                return Err(FeatureError::Shape(format!(
                    "Fbank expects [batch, time] or [time], got rank {r} {:?}",
                    wavs.dims()
                )))
            }
        };
        let t = rows.first().map(|r| r.len()).unwrap_or(0);
        let frames = self.num_frames(t);
        let nf = self.n_features();
        let feats = self.compute_batch(&rows);
        let flat: Vec<f32> = feats.into_iter().flatten().collect();
        let out = if single {
            Tensor::from_vec(flat, (frames, nf), &Device::Cpu)?
        } else {
            Tensor::from_vec(flat, (rows.len(), frames, nf), &Device::Cpu)?
        };
        Ok(out.to_device(&device)?)
    }

    /// Features of several utterances (each on its own, no padding), computed in parallel.
    pub fn compute_batch<S: AsRef<[f32]> + Sync>(&self, signals: &[S]) -> Vec<Vec<f32>> {
        if signals.len() <= 1 || self.threads == 1 {
            return signals.iter().map(|s| self.compute(s.as_ref())).collect();
        }
        use rayon::prelude::*;
        let single = self.clone().with_threads(1);
        let out: Vec<Vec<f32>> = signals
            .par_iter()
            .map(|x| single.compute(x.as_ref()))
            .collect();
        out
    }
}
