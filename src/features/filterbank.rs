//! Mel filterbank as `speechbrain.processing.features.Filterbank` builds it: HTK mel scale,
//! triangles symmetric in Hz (no area normalisation), all computed in float32 like torch.

use super::{FeatureError, Result};

/// Shape of the filters (SpeechBrain's `filter_shape`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterShape {
    /// Triangles (the default).
    #[default]
    Triangular,
    /// Rectangles of width 2*band.
    Rectangular,
    /// Gaussians with std band/2.
    Gaussian,
}

impl std::str::FromStr for FilterShape {
    type Err = FeatureError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "triangular" => Ok(Self::Triangular),
            "rectangular" => Ok(Self::Rectangular),
            "gaussian" => Ok(Self::Gaussian),
            other => Err(FeatureError::Config(format!(
                "unknown filter_shape {other:?} (expected triangular, rectangular or gaussian)"
            ))),
        }
    }
}

/// Filterbank settings with SpeechBrain's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterbankConfig {
    /// Number of mel filters (default 40).
    pub n_mels: usize,
    /// Return `10*log10` energies (default true).
    pub log_mel: bool,
    /// Filter shape (default triangular).
    pub filter_shape: FilterShape,
    /// Lowest frequency in Hz (default 0).
    pub f_min: f64,
    /// Highest frequency in Hz (default 8000).
    pub f_max: f64,
    /// FFT size the spectrogram was computed with (default 400).
    pub n_fft: usize,
    /// Sampling rate (default 16000).
    pub sample_rate: u32,
    /// Floor before the log (default 1e-10).
    pub amin: f32,
    /// Reference value for dB (default 1.0).
    pub ref_value: f64,
    /// Dynamic range kept below each utterance's maximum, in dB (default 80).
    pub top_db: f32,
}

impl Default for FilterbankConfig {
    fn default() -> Self {
        Self {
            n_mels: 40,
            log_mel: true,
            filter_shape: FilterShape::Triangular,
            f_min: 0.0,
            f_max: 8000.0,
            n_fft: 400,
            sample_rate: 16000,
            amin: 1e-10,
            ref_value: 1.0,
            top_db: 80.0,
        }
    }
}

/// One filter stored sparsely: first bin and its non-zero weights.
#[derive(Debug, Clone)]
struct SparseFilter {
    start: usize,
    weights: Vec<f32>,
}

/// A built filterbank: applies mel filters (and optionally log compression) to power spectra.
///
/// ```
/// use voxbrain::features::{Filterbank, FilterbankConfig};
/// let fb = Filterbank::new(FilterbankConfig { n_mels: 80, ..Default::default() }).unwrap();
/// assert_eq!(fb.matrix().len(), 201 * 80);
/// ```
#[derive(Debug, Clone)]
pub struct Filterbank {
    cfg: FilterbankConfig,
    n_stft: usize,
    /// Dense `[n_stft, n_mels]` matrix, row-major (as SpeechBrain's `fbank_matrix`).
    matrix: Vec<f32>,
    filters: Vec<SparseFilter>,
    db_offset: f32,
}

fn to_mel(hz: f64) -> f64 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

/// `torch.linspace` for float32: the first half counts up from `start`, the second half
/// down from `end`, in float32 arithmetic.
pub(crate) fn linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    if steps == 0 {
        return Vec::new();
    }
    if steps == 1 {
        return vec![start as f32];
    }
    let (s, e) = (start as f32, end as f32);
    let step = (e - s) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                s + step * i as f32
            } else {
                e - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

impl Filterbank {
    /// Builds the filter matrix exactly as SpeechBrain does (float32 throughout).
    pub fn new(cfg: FilterbankConfig) -> Result<Self> {
        if cfg.f_min >= cfg.f_max {
            return Err(FeatureError::Config(format!(
                "Filterbank requires f_min ({}) < f_max ({})",
                cfg.f_min, cfg.f_max
            )));
        }
        if cfg.n_mels == 0 || cfg.n_fft == 0 {
            return Err(FeatureError::Config(
                "Filterbank requires n_mels > 0 and n_fft > 0".into(),
            ));
        }
        let n_stft = cfg.n_fft / 2 + 1;
        let mel = linspace_f32(to_mel(cfg.f_min), to_mel(cfg.f_max), cfg.n_mels + 2);
        let hz: Vec<f32> = mel
            .iter()
            .map(|&m| 700.0f32 * (10.0f32.powf(m / 2595.0f32) - 1.0))
            .collect();
        let band: Vec<f32> = hz.windows(2).map(|w| w[1] - w[0]).collect();
        let band = &band[..cfg.n_mels];
        let f_central = &hz[1..cfg.n_mels + 1];
        let all_freqs = linspace_f32(0.0, (cfg.sample_rate / 2) as f64, n_stft);

        let mut matrix = vec![0.0f32; n_stft * cfg.n_mels];
        for (m, (&fc, &bw)) in f_central.iter().zip(band).enumerate() {
            for (k, &f) in all_freqs.iter().enumerate() {
                let v = match cfg.filter_shape {
                    FilterShape::Triangular => {
                        let slope = (f - fc) / bw;
                        let left = slope + 1.0;
                        let right = -slope + 1.0;
                        0.0f32.max(left.min(right))
                    }
                    FilterShape::Rectangular => {
                        if f >= fc - bw && f <= fc + bw {
                            1.0
                        } else {
                            0.0
                        }
                    }
                    FilterShape::Gaussian => {
                        let z = (f - fc) / (bw / 2.0);
                        (-0.5 * z * z).exp()
                    }
                };
                matrix[k * cfg.n_mels + m] = v;
            }
        }
        let filters = (0..cfg.n_mels)
            .map(|m| {
                let col: Vec<f32> = (0..n_stft).map(|k| matrix[k * cfg.n_mels + m]).collect();
                let start = col.iter().position(|&v| v != 0.0).unwrap_or(0);
                let end = col.iter().rposition(|&v| v != 0.0).map_or(0, |e| e + 1);
                SparseFilter {
                    start,
                    weights: if end > start {
                        col[start..end].to_vec()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        let db_offset = 10.0 * (cfg.amin as f64).max(cfg.ref_value).log10() as f32;
        Ok(Self {
            cfg,
            n_stft,
            matrix,
            filters,
            db_offset,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FilterbankConfig {
        &self.cfg
    }

    /// Number of mel filters.
    pub fn n_mels(&self) -> usize {
        self.cfg.n_mels
    }

    /// Number of spectrum bins expected per frame.
    pub fn n_stft(&self) -> usize {
        self.n_stft
    }

    /// The dense `[n_stft, n_mels]` filter matrix (row-major), as SpeechBrain's `fbank_matrix`.
    pub fn matrix(&self) -> &[f32] {
        &self.matrix
    }

    /// Applies the filters to one power-spectrum frame, writing `n_mels` energies
    /// (before the log).
    #[inline]
    pub(crate) fn apply_frame(&self, power: &[f32], out: &mut [f32]) {
        for (o, f) in out.iter_mut().zip(&self.filters) {
            let p = &power[f.start..f.start + f.weights.len()];
            *o = dot(p, &f.weights);
        }
    }

    /// `10*log10(max(x, amin)) - 10*log10(max(amin, ref))`, in place.
    #[inline]
    pub(crate) fn to_db(&self, x: &mut [f32]) {
        let amin = self.cfg.amin;
        for v in x.iter_mut() {
            *v = 10.0 * crate::fastmath::log10(v.max(amin)) - self.db_offset;
        }
    }

    /// Floors every value at `max(x) - top_db` (the max taken over the whole utterance).
    pub(crate) fn apply_top_db(&self, x: &mut [f32]) {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.apply_floor(x, max);
    }

    /// Floors every value at `max - top_db`, given the utterance maximum.
    pub(crate) fn apply_floor(&self, x: &mut [f32], max: f32) {
        let floor = max - self.cfg.top_db;
        for v in x.iter_mut() {
            *v = v.max(floor);
        }
    }

    /// Mel energies of a power spectrogram `[frames][n_stft]` (row-major) of one utterance:
    /// returns `[frames][n_mels]`, in dB with the top_db floor when `log_mel` is set.
    pub fn forward(&self, power: &[f32]) -> Result<Vec<f32>> {
        if !power.len().is_multiple_of(self.n_stft) {
            return Err(FeatureError::Shape(format!(
                "spectrogram has {} values, not a multiple of {} bins",
                power.len(),
                self.n_stft
            )));
        }
        let frames = power.len() / self.n_stft;
        let n_mels = self.cfg.n_mels;
        let mut out = vec![0.0f32; frames * n_mels];
        for t in 0..frames {
            self.apply_frame(
                &power[t * self.n_stft..(t + 1) * self.n_stft],
                &mut out[t * n_mels..(t + 1) * n_mels],
            );
        }
        if self.cfg.log_mel {
            self.to_db(&mut out);
            self.apply_top_db(&mut out);
        }
        Ok(out)
    }
}

/// Dot product with four independent accumulators, so the loop vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
