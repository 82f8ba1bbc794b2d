//! Writing WAV files with hound, atomically (temp file + rename) so a crash never leaves a
//! half-written file under the final name.

use std::path::Path;

use super::error::{AudioError, Result};
use super::Waveform;

/// Sample encoding of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// 16-bit signed PCM (what most tools expect). Values are clipped to `[-1, 1)`.
    #[default]
    Int16,
    /// 32-bit IEEE float: lossless for `f32` samples.
    Float32,
}

/// Writes `wav` to `path` as a WAV file in the given format.
///
/// The file is written to a temporary file in the same directory and renamed into place.
///
/// ```no_run
/// use voxbrain::audio::{write_wav, Waveform, WavFormat};
/// let tone: Vec<f32> = (0..16000).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
/// write_wav("tone.wav", &Waveform::mono(tone, 16000), WavFormat::Int16).unwrap();
/// ```
pub fn write_wav(path: impl AsRef<Path>, wav: &Waveform, format: WavFormat) -> Result<()> {
    let path = path.as_ref();
    let werr = |reason: String| AudioError::Write {
        path: path.to_path_buf(),
        reason,
    };
    if wav.sample_rate == 0 {
        return Err(werr("sample rate is 0".into()));
    }
    let n_ch = wav.num_channels();
    if n_ch == 0 || n_ch > u16::MAX as usize {
        return Err(werr(format!("cannot write {n_ch} channels")));
    }
    let spec = hound::WavSpec {
        channels: n_ch as u16,
        sample_rate: wav.sample_rate,
        bits_per_sample: match format {
            WavFormat::Int16 => 16,
            WavFormat::Float32 => 32,
        },
        sample_format: match format {
            WavFormat::Int16 => hound::SampleFormat::Int,
            WavFormat::Float32 => hound::SampleFormat::Float,
        },
    };
    crate::fsutil::write_atomic_with(path, |f| {
        let hound_err = |e: hound::Error| match e {
            hound::Error::IoError(e) => e,
            e => std::io::Error::other(e),
        };
        let mut writer =
            hound::WavWriter::new(std::io::BufWriter::new(f), spec).map_err(hound_err)?;
        for i in 0..wav.num_frames() {
            for ch in wav.channels() {
                let s = ch[i];
                match format {
                    WavFormat::Int16 => {
                        // Same scaling as libsndfile: round(x * 32768), clipped to the int16 range.
                        let v = (s * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
                        writer.write_sample(v)
                    }
                    WavFormat::Float32 => writer.write_sample(s),
                }
                .map_err(hound_err)?;
            }
        }
        writer.finalize().map_err(hound_err)
    })
    .map_err(|e| werr(e.to_string()))
}
