//! Band-limited resampling with torchaudio's windowed-sinc kernel.
//!
//! SpeechBrain resamples in `load_audio` with `torchaudio.transforms.Resample` (Hann-windowed
//! sinc, 6 zero crossings, roll-off 0.99). Parity with SpeechBrain's embeddings and transcripts
//! of non-16 kHz files needs that exact kernel, so it is rebuilt here rather than using a
//! general-purpose resampler: the kernel is computed in `f64` and stored as `f32`, the signal is
//! zero-padded by `width` on the left and `width + orig` on the right, and the output is cut to
//! `ceil(new * len / orig)` samples, exactly as torchaudio does.

use super::error::{AudioError, Result};

/// A cached resampler between two integer rates (like `torchaudio.transforms.Resample`).
///
/// ```
/// use voxbrain::audio::Resampler;
/// let r = Resampler::new(44_100, 16_000).unwrap();
/// let out = r.process(&vec![0.0f32; 44_100]);
/// assert_eq!(out.len(), 16_000);
/// ```
#[derive(Debug, Clone)]
pub struct Resampler {
    orig: usize,
    new: usize,
    width: usize,
    /// One filter per output phase, trimmed to its non-negligible support:
    /// (offset into the padded input window, taps).
    phases: Vec<(usize, Vec<f32>)>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Resampler {
    /// Builds the kernel for `orig_freq -> new_freq` with torchaudio's defaults
    /// (`lowpass_filter_width=6`, `rolloff=0.99`, `sinc_interp_hann`).
    pub fn new(orig_freq: u32, new_freq: u32) -> Result<Self> {
        Self::with_params(orig_freq, new_freq, 6, 0.99)
    }

    /// Same as [`Resampler::new`] with explicit filter width (zero crossings) and roll-off.
    pub fn with_params(
        orig_freq: u32,
        new_freq: u32,
        lowpass_filter_width: usize,
        rolloff: f64,
    ) -> Result<Self> {
        if orig_freq == 0 || new_freq == 0 {
            return Err(AudioError::Invalid(format!(
                "cannot resample {orig_freq} Hz -> {new_freq} Hz: rates must be positive"
            )));
        }
        if lowpass_filter_width == 0 {
            return Err(AudioError::Invalid(
                "lowpass filter width must be positive".into(),
            ));
        }
        let g = gcd(orig_freq as usize, new_freq as usize);
        let orig = orig_freq as usize / g;
        let new = new_freq as usize / g;
        let lw = lowpass_filter_width as f64;
        let base_freq = orig.min(new) as f64 * rolloff;
        let width = (lw * orig as f64 / base_freq).ceil() as usize;
        let klen = 2 * width + orig;
        let scale = base_freq / orig as f64;
        let mut phases = Vec::with_capacity(new);
        for j in 0..new {
            // torchaudio computes this term as int64 / int -> float32, then promotes to float64.
            let tj = (-(j as f32) / new as f32) as f64;
            let mut taps = Vec::with_capacity(klen);
            let (mut first, mut last) = (usize::MAX, 0usize);
            for k in 0..klen {
                let idx = (k as f64 - width as f64) / orig as f64;
                let t_raw = (tj + idx) * base_freq;
                let t = t_raw.clamp(-lw, lw);
                let window = (t * std::f64::consts::PI / lw / 2.0).cos().powi(2);
                let tp = t * std::f64::consts::PI;
                let sinc = if tp == 0.0 { 1.0 } else { tp.sin() / tp };
                taps.push((sinc * window * scale) as f32);
                // Outside the clamp the tap is ~1e-34: it cannot change an f32 sum, so skip it.
                if t_raw.abs() < lw {
                    first = first.min(k);
                    last = k;
                }
            }
            if first == usize::MAX {
                phases.push((0, Vec::new()));
            } else {
                phases.push((first, taps[first..=last].to_vec()));
            }
        }
        Ok(Self {
            orig,
            new,
            width,
            phases,
        })
    }

    /// Number of output samples for `len` input samples: `ceil(new * len / orig)`.
    pub fn output_len(&self, len: usize) -> usize {
        ((self.new as f64 * len as f64) / self.orig as f64).ceil() as usize
    }

    /// Resamples one channel.
    pub fn process(&self, input: &[f32]) -> Vec<f32> {
        let len = input.len();
        let target = self.output_len(len);
        let mut out = Vec::with_capacity(target);
        let w = self.width as isize;
        // Input frames i = 0..=len/orig; frame i starts at padded index i*orig, i.e. at
        // input index i*orig - width.
        'outer: for i in 0..=(len / self.orig) {
            let start = (i * self.orig) as isize - w;
            for (off, taps) in &self.phases {
                if out.len() == target {
                    break 'outer;
                }
                let s0 = start + *off as isize;
                let mut acc = 0.0f32;
                if s0 >= 0 && (s0 as usize + taps.len()) <= len {
                    let seg = &input[s0 as usize..s0 as usize + taps.len()];
                    acc = dot(seg, taps);
                } else {
                    for (k, &tap) in taps.iter().enumerate() {
                        let idx = s0 + k as isize;
                        if idx >= 0 && (idx as usize) < len {
                            acc += tap * input[idx as usize];
                        }
                    }
                }
                out.push(acc);
            }
        }
        out
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the loop.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for k in chunks * 8..a.len() {
        s += a[k] * b[k];
    }
    s
}

/// Resamples one channel from `orig_freq` to `new_freq` (returns a copy when they are equal).
///
/// ```
/// let y = voxbrain::audio::resample(&[0.0f32; 800], 8_000, 16_000).unwrap();
/// assert_eq!(y.len(), 1_600);
/// ```
pub fn resample(input: &[f32], orig_freq: u32, new_freq: u32) -> Result<Vec<f32>> {
    if orig_freq == new_freq {
        return Ok(input.to_vec());
    }
    Ok(Resampler::new(orig_freq, new_freq)?.process(input))
}
