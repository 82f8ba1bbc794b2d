//! Audio I/O: decoding (symphonia), writing (hound) and resampling (torchaudio's kernel).
//!
//! The functions mirror SpeechBrain's `speechbrain.dataio.dataio.read_audio` and the
//! `AudioNormalizer` used by every pretrained interface's `load_audio`.

mod error;
mod read;
mod resample;
mod write;

pub use error::{AudioError, Result};
pub use read::{audio_info, read_waveform, AudioInfo};
pub use resample::{resample, Resampler};
pub use write::{write_wav, WavFormat};

use candle_core::{Device, Tensor};
use std::path::Path;

/// Decoded audio: one `Vec<f32>` per channel (planar), all the same length.
#[derive(Debug, Clone, PartialEq)]
pub struct Waveform {
    channels: Vec<Vec<f32>>,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
}

impl Waveform {
    /// Builds a waveform from planar channels.
    ///
    /// # Panics
    /// If the channels have different lengths (a programming error, not bad input).
    pub fn new(channels: Vec<Vec<f32>>, sample_rate: u32) -> Self {
        let n = channels.first().map(|c| c.len()).unwrap_or(0);
        assert!(
            channels.iter().all(|c| c.len() == n),
            "all channels of a Waveform must have the same length"
        );
        Self {
            channels,
            sample_rate,
        }
    }

    /// A single-channel waveform.
    ///
    /// ```
    /// let w = voxbrain::audio::Waveform::mono(vec![0.0; 160], 16_000);
    /// assert_eq!(w.duration(), 0.01);
    /// ```
    pub fn mono(samples: Vec<f32>, sample_rate: u32) -> Self {
        Self::new(vec![samples], sample_rate)
    }

    /// Number of channels.
    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }

    /// Number of frames (samples per channel).
    pub fn num_frames(&self) -> usize {
        self.channels.first().map(|c| c.len()).unwrap_or(0)
    }

    /// Duration in seconds.
    pub fn duration(&self) -> f64 {
        self.num_frames() as f64 / self.sample_rate.max(1) as f64
    }

    /// The planar channels.
    pub fn channels(&self) -> &[Vec<f32>] {
        &self.channels
    }

    /// Consumes the waveform, returning its planar channels.
    pub fn into_channels(self) -> Vec<Vec<f32>> {
        self.channels
    }

    /// Averages the channels into one (SpeechBrain's `avg-to-mono`).
    pub fn to_mono(&self) -> Vec<f32> {
        match self.channels.len() {
            0 => Vec::new(),
            1 => self.channels[0].clone(),
            n => {
                let mut out = vec![0.0f32; self.num_frames()];
                for ch in &self.channels {
                    for (o, s) in out.iter_mut().zip(ch) {
                        *o += *s;
                    }
                }
                let inv = n as f32;
                out.iter_mut().for_each(|o| *o /= inv);
                out
            }
        }
    }

    /// Resamples every channel to `new_rate` with torchaudio's kernel.
    pub fn resampled(&self, new_rate: u32) -> Result<Waveform> {
        if new_rate == self.sample_rate {
            return Ok(self.clone());
        }
        let r = Resampler::new(self.sample_rate, new_rate)?;
        Ok(Waveform::new(
            self.channels.iter().map(|c| r.process(c)).collect(),
            new_rate,
        ))
    }

    /// The samples as a tensor shaped like SpeechBrain's `read_audio` output:
    /// `[time]` for mono, `[time, channels]` otherwise.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let t = self.num_frames();
        if self.channels.len() == 1 {
            return Ok(Tensor::from_slice(&self.channels[0], t, device)?);
        }
        let c = self.channels.len();
        let mut inter = Vec::with_capacity(t * c);
        for i in 0..t {
            for ch in &self.channels {
                inter.push(ch[i]);
            }
        }
        Ok(Tensor::from_vec(inter, (t, c), device)?)
    }
}

/// Reads an audio file like SpeechBrain's `read_audio`: `(signal, sample_rate)` where the signal
/// is `[time]` (mono) or `[time, channels]`, float32 in `[-1, 1]`, at the file's own rate.
///
/// ```no_run
/// let (signal, sr) = voxbrain::audio::read_audio("example.flac").unwrap();
/// println!("{:?} at {sr} Hz", signal.shape());
/// ```
pub fn read_audio(path: impl AsRef<Path>) -> Result<(Tensor, u32)> {
    let w = read_waveform(path)?;
    Ok((w.to_tensor(&Device::Cpu)?, w.sample_rate))
}

/// How [`load_audio`] treats several channels (SpeechBrain's `AudioNormalizer.mix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelMix {
    /// Average all channels into one (`"avg-to-mono"`, SpeechBrain's default).
    #[default]
    AvgToMono,
    /// Keep the channels (`"keep"`).
    Keep,
}

/// Loads a file the way every SpeechBrain pretrained interface does (`load_audio` +
/// `AudioNormalizer`): resample each channel to `sample_rate`, then average to mono.
/// Returns a `[time]` float32 tensor (or `[time, channels]` with [`ChannelMix::Keep`]).
///
/// ```no_run
/// let wav = voxbrain::audio::load_audio("example.wav", 16_000, Default::default()).unwrap();
/// ```
pub fn load_audio(path: impl AsRef<Path>, sample_rate: u32, mix: ChannelMix) -> Result<Tensor> {
    let path = path.as_ref();
    let w = read_waveform(path)?;
    if w.sample_rate != sample_rate {
        tracing::debug!(
            path = %path.display(),
            from = w.sample_rate,
            to = sample_rate,
            "resampling audio"
        );
    }
    // SpeechBrain resamples first, then mixes: keep that order for bit-level parity.
    let w = w.resampled(sample_rate)?;
    match mix {
        ChannelMix::AvgToMono => {
            let m = w.to_mono();
            let n = m.len();
            Ok(Tensor::from_vec(m, n, &Device::Cpu)?)
        }
        ChannelMix::Keep => w.to_tensor(&Device::Cpu),
    }
}
