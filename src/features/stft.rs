//! Short-time Fourier transform as `speechbrain.processing.features.STFT` computes it
//! (`torch.stft` with a periodic Hamming window, `center=True`, constant zero padding).

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use rustfft::{Fft, FftPlanner};

use super::{FeatureError, Result};

/// Window functions available for the STFT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowFn {
    /// `torch.hamming_window(N)` (periodic), SpeechBrain's default.
    #[default]
    Hamming,
    /// `torch.hann_window(N)` (periodic).
    Hann,
}

impl WindowFn {
    /// The periodic window of `len` samples, computed in float32 as ATen does
    /// (`alpha - beta * cos(n * (2*pi/len))`).
    pub fn periodic(self, len: usize) -> Vec<f32> {
        let (alpha, beta) = match self {
            WindowFn::Hamming => (0.54f32, 0.46f32),
            WindowFn::Hann => (0.5f32, 0.5f32),
        };
        if len == 1 {
            return vec![1.0];
        }
        let step = (std::f64::consts::PI * 2.0 / len as f64) as f32;
        (0..len)
            .map(|n| alpha - beta * (n as f32 * step).cos())
            .collect()
    }
}

/// STFT settings, with SpeechBrain's defaults (`win_length=25` ms, `hop_length=10` ms,
/// `n_fft=400`, Hamming, `center=True`).
#[derive(Clone)]
pub struct Stft {
    /// Sampling rate in Hz (used to turn milliseconds into samples).
    pub sample_rate: u32,
    /// Window length in samples (`round(sample_rate / 1000 * win_length_ms)`).
    pub win_length: usize,
    /// Hop length in samples.
    pub hop_length: usize,
    /// FFT size.
    pub n_fft: usize,
    /// Pad `n_fft / 2` zeros on both sides so frame `t` is centred on sample `t * hop`.
    pub center: bool,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
    /// Complex FFT of size n_fft, used to transform two real frames at once.
    cfft: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for Stft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stft")
            .field("sample_rate", &self.sample_rate)
            .field("win_length", &self.win_length)
            .field("hop_length", &self.hop_length)
            .field("n_fft", &self.n_fft)
            .field("center", &self.center)
            .finish()
    }
}

impl Stft {
    /// Builds an STFT from SpeechBrain's arguments (window and hop in milliseconds).
    ///
    /// ```
    /// use voxbrain::features::{Stft, WindowFn};
    /// let stft = Stft::new(16_000, 25.0, 10.0, 400, WindowFn::Hamming, true).unwrap();
    /// assert_eq!((stft.win_length, stft.hop_length), (400, 160));
    /// assert_eq!(stft.num_frames(16_000), 101);
    /// ```
    pub fn new(
        sample_rate: u32,
        win_length_ms: f64,
        hop_length_ms: f64,
        n_fft: usize,
        window_fn: WindowFn,
        center: bool,
    ) -> Result<Self> {
        let win_length = ms_to_samples(sample_rate, win_length_ms);
        let hop_length = ms_to_samples(sample_rate, hop_length_ms);
        if n_fft == 0 || hop_length == 0 || win_length == 0 {
            return Err(FeatureError::Config(format!(
                "STFT needs n_fft, win_length and hop_length > 0 (got n_fft={n_fft}, \
                 win_length={win_length}, hop_length={hop_length} samples)"
            )));
        }
        if win_length > n_fft {
            return Err(FeatureError::Config(format!(
                "win_length ({win_length} samples) must be <= n_fft ({n_fft})"
            )));
        }
        // torch.stft centres a shorter window inside the n_fft frame.
        let mut window = vec![0.0f32; n_fft];
        let left = (n_fft - win_length) / 2;
        window[left..left + win_length].copy_from_slice(&window_fn.periodic(win_length));
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
        let cfft = FftPlanner::<f32>::new().plan_fft_forward(n_fft);
        Ok(Self {
            sample_rate,
            win_length,
            hop_length,
            n_fft,
            center,
            window,
            fft,
            cfft,
        })
    }

    /// Number of frequency bins (`n_fft / 2 + 1`).
    pub fn n_bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Number of frames for a signal of `len` samples.
    pub fn num_frames(&self, len: usize) -> usize {
        let padded = if self.center {
            len + 2 * (self.n_fft / 2)
        } else {
            len
        };
        if padded < self.n_fft {
            0
        } else {
            1 + (padded - self.n_fft) / self.hop_length
        }
    }

    /// Calls `f(frame_index, spectrum)` for frames `first..last` of `signal`, with the complex
    /// one-sided spectrum of each windowed frame.
    pub(crate) fn for_each_frame(
        &self,
        signal: &[f32],
        first: usize,
        last: usize,
        mut f: impl FnMut(usize, &[realfft::num_complex::Complex<f32>]),
    ) {
        let pad = if self.center { self.n_fft / 2 } else { 0 };
        let mut frame = self.fft.make_input_vec();
        let mut spec = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let len = signal.len() as isize;
        for t in first..last {
            let start = (t * self.hop_length) as isize - pad as isize;
            if start >= 0 && start + self.n_fft as isize <= len {
                let s = &signal[start as usize..start as usize + self.n_fft];
                for ((o, x), w) in frame.iter_mut().zip(s).zip(&self.window) {
                    *o = x * w;
                }
            } else {
                for (k, o) in frame.iter_mut().enumerate() {
                    let i = start + k as isize;
                    *o = if i >= 0 && i < len {
                        signal[i as usize] * self.window[k]
                    } else {
                        0.0
                    };
                }
            }
            // Lengths are fixed by the plan, so this cannot fail.
            self.fft
                .process_with_scratch(&mut frame, &mut spec, &mut scratch)
                .expect("FFT buffer sizes come from the plan");
            f(t, &spec);
        }
    }

    /// Writes the windowed frame `t` of `signal` into `out` (zero outside the signal).
    #[inline]
    fn frame_into(&self, signal: &[f32], t: usize, out: &mut [f32]) {
        let pad = if self.center { self.n_fft / 2 } else { 0 };
        let len = signal.len() as isize;
        let start = (t * self.hop_length) as isize - pad as isize;
        if start >= 0 && start + self.n_fft as isize <= len {
            let s = &signal[start as usize..start as usize + self.n_fft];
            for ((o, x), w) in out.iter_mut().zip(s).zip(&self.window) {
                *o = x * w;
            }
        } else {
            for (k, o) in out.iter_mut().enumerate() {
                let i = start + k as isize;
                *o = if i >= 0 && i < len {
                    signal[i as usize] * self.window[k]
                } else {
                    0.0
                };
            }
        }
    }

    /// Calls `f(frame_index, power)` with the power spectrum `|X|^2` (`n_bins` values) of
    /// frames `first..last`.
    ///
    /// Two real frames go through one complex FFT (frame `t` as the real part, `t + 1` as the
    /// imaginary part) and are separated with the conjugate symmetry of real signals: about
    /// twice as fast as two real FFTs. Adjacent frames overlap by most of their samples, so
    /// their energies are similar and the separation adds no error worth noting (tested
    /// against the one-frame-at-a-time path on signals with 70 dB jumps).
    pub fn for_each_power_frame(
        &self,
        signal: &[f32],
        first: usize,
        last: usize,
        mut f: impl FnMut(usize, &[f32]),
    ) {
        let n = self.n_fft;
        let nb = self.n_bins();
        let mut buf = vec![Complex::new(0.0f32, 0.0); n];
        let mut scratch = vec![Complex::new(0.0f32, 0.0); self.cfft.get_inplace_scratch_len()];
        let (mut pa, mut pb) = (vec![0.0f32; nb], vec![0.0f32; nb]);
        let (mut fa, mut fb) = (vec![0.0f32; n], vec![0.0f32; n]);
        let pad = if self.center { n / 2 } else { 0 };
        let mut t = first;
        while t + 1 < last {
            let start = (t * self.hop_length) as isize - pad as isize;
            let end_b = start + (self.hop_length + n) as isize;
            if start >= 0 && end_b <= signal.len() as isize {
                // Interior: window both frames straight into the complex buffer.
                let sa = &signal[start as usize..start as usize + n];
                let sb =
                    &signal[start as usize + self.hop_length..start as usize + self.hop_length + n];
                for (((z, &a), &b), &w) in buf.iter_mut().zip(sa).zip(sb).zip(&self.window) {
                    *z = Complex::new(a * w, b * w);
                }
            } else {
                self.frame_into(signal, t, &mut fa);
                self.frame_into(signal, t + 1, &mut fb);
                for ((z, &a), &b) in buf.iter_mut().zip(&fa).zip(&fb) {
                    *z = Complex::new(a, b);
                }
            }
            self.cfft.process_with_scratch(&mut buf, &mut scratch);
            // A[k] = (Z[k] + conj(Z[n-k])) / 2,  B[k] = (Z[k] - conj(Z[n-k])) / 2i.
            let z0 = buf[0];
            pa[0] = z0.re * z0.re;
            pb[0] = z0.im * z0.im;
            for k in 1..nb {
                let (z, w) = (buf[k], buf[n - k]);
                let (ar, ai) = (z.re + w.re, z.im - w.im);
                let (br, bi) = (z.re - w.re, z.im + w.im);
                pa[k] = 0.25 * (ar * ar + ai * ai);
                pb[k] = 0.25 * (br * br + bi * bi);
            }
            f(t, &pa);
            f(t + 1, &pb);
            t += 2;
        }
        if t < last {
            self.for_each_frame(signal, t, last, |i, spec| {
                for (p, c) in pa.iter_mut().zip(spec) {
                    *p = c.re * c.re + c.im * c.im;
                }
                f(i, &pa);
            });
        }
    }

    /// Complex STFT of one signal: `[frames][bins]` as `(re, im)` pairs, like SpeechBrain's
    /// `STFT` output `[batch, frames, bins, 2]` for one batch item.
    pub fn complex(&self, signal: &[f32]) -> Vec<[f32; 2]> {
        let n_frames = self.num_frames(signal.len());
        let mut out = Vec::with_capacity(n_frames * self.n_bins());
        self.for_each_frame(signal, 0, n_frames, |_, spec| {
            out.extend(spec.iter().map(|c| [c.re, c.im]));
        });
        out
    }

    /// Power spectrogram `|X|^2` of one signal, `[frames][bins]` row-major
    /// (SpeechBrain's `spectral_magnitude(stft, power=1)`).
    pub fn power(&self, signal: &[f32]) -> Vec<f32> {
        let n_frames = self.num_frames(signal.len());
        let mut out = Vec::with_capacity(n_frames * self.n_bins());
        self.for_each_frame(signal, 0, n_frames, |_, spec| {
            out.extend(spec.iter().map(|c| c.re * c.re + c.im * c.im));
        });
        out
    }
}

/// SpeechBrain's `int(round(sample_rate / 1000 * ms))` (Python rounds half to even).
pub(crate) fn ms_to_samples(sample_rate: u32, ms: f64) -> usize {
    let x = sample_rate as f64 / 1000.0 * ms;
    let r = x.round();
    // Python's round() is banker's rounding.
    let r = if (x - x.trunc()).abs() == 0.5 && (r as i64) % 2 != 0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as usize
}
