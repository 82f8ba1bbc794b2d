//! Decoding audio files with symphonia (wav, flac, ogg/vorbis, mp3).
//!
//! Samples come out as `f32` in `[-1, 1]`, scaled the way libsndfile/torchaudio scale them
//! (`int16 / 32768`, `int24 / 2^23`, `int32 / 2^31`, `(uint8 - 128) / 128`), which is what
//! SpeechBrain's `read_audio` returns.

use std::fs::File;
use std::path::Path;

use symphonia::core::codecs::audio::well_known::CODEC_ID_FLAC;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::error::{AudioError, Result};
use super::Waveform;

/// What a file's header says, read without decoding the audio (fast: used to compute
/// `length` columns of big manifests).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// Number of channels.
    pub channels: usize,
    /// Number of frames (samples per channel), when the container states it.
    pub num_frames: Option<u64>,
}

impl AudioInfo {
    /// Duration in seconds, when the number of frames is known.
    pub fn duration(&self) -> Option<f64> {
        self.num_frames
            .map(|n| n as f64 / self.sample_rate.max(1) as f64)
    }
}

fn open_format(path: &Path) -> Result<Box<dyn FormatReader>> {
    let meta = std::fs::metadata(path).map_err(|source| AudioError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(AudioError::IsDirectory {
            path: path.to_path_buf(),
        });
    }
    if meta.len() == 0 {
        return Err(AudioError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let file = File::open(path).map_err(|source| AudioError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| AudioError::UnsupportedFormat {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

struct TrackParams {
    id: u32,
    info: AudioInfo,
    params: symphonia::core::codecs::audio::AudioCodecParameters,
}

fn audio_track(format: &dyn FormatReader, path: &Path) -> Result<TrackParams> {
    let no_track = |reason: &str| AudioError::NoAudioTrack {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| no_track("no audio track"))?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| no_track("the audio track has no codec parameters"))?
        .clone();
    let sample_rate = params
        .sample_rate
        .ok_or_else(|| no_track("the audio track does not state its sample rate"))?;
    let channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(1);
    Ok(TrackParams {
        id: track.id,
        info: AudioInfo {
            sample_rate,
            channels,
            num_frames: track.num_frames,
        },
        params,
    })
}

/// Reads the header of an audio file: sample rate, channels and (when stated) length,
/// without decoding. Errors name the path.
///
/// ```no_run
/// let info = voxbrain::audio::audio_info("example.flac").unwrap();
/// println!("{} Hz, {:?} s", info.sample_rate, info.duration());
/// ```
pub fn audio_info(path: impl AsRef<Path>) -> Result<AudioInfo> {
    let path = path.as_ref();
    let format = open_format(path)?;
    Ok(audio_track(format.as_ref(), path)?.info)
}

/// Decodes a whole audio file into planar `f32` channels.
///
/// ```no_run
/// let wav = voxbrain::audio::read_waveform("example.wav").unwrap();
/// println!("{} channels, {} frames at {} Hz", wav.num_channels(), wav.num_frames(), wav.sample_rate);
/// ```
pub fn read_waveform(path: impl AsRef<Path>) -> Result<Waveform> {
    let path = path.as_ref();
    let mut format = open_format(path)?;
    let track = audio_track(format.as_ref(), path)?;
    let decode_err = |reason: String| AudioError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&track.params, &AudioDecoderOptions::default())
        .map_err(|e| AudioError::UnsupportedFormat {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;

    let n_ch = track.info.channels.max(1);
    // Reserve what the header promises, but never more frames than the file has bytes: a
    // damaged or hostile header must not make a small file allocate gigabytes up front.
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let cap = track
        .info
        .num_frames
        .unwrap_or(0)
        .min(file_len)
        .min(1 << 28) as usize;
    let mut channels: Vec<Vec<f32>> = (0..n_ch).map(|_| Vec::with_capacity(cap)).collect();
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut skipped_packets = 0usize;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(decode_err(format!("file is truncated ({e})")));
            }
            Err(e) => return Err(decode_err(e.to_string())),
        };
        if packet.track_id != track.id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                buf.copy_to_vecs_planar::<f32>(&mut planes);
                for (dst, src) in channels.iter_mut().zip(planes.iter()) {
                    dst.extend_from_slice(src);
                }
            }
            // Lossy streams (mp3) can hold a damaged frame; like ffmpeg, skip it and go on.
            Err(SymError::DecodeError(msg)) if track.params.codec != CODEC_ID_FLAC => {
                skipped_packets += 1;
                tracing::warn!(path = %path.display(), "skipping undecodable packet: {msg}");
            }
            Err(e) => return Err(decode_err(e.to_string())),
        }
    }
    let decoded = channels[0].len() as u64;
    if let Some(expected) = track.info.num_frames {
        // A lossless file that decodes short was cut off: refuse it rather than train on half a file.
        if decoded < expected && track.params.codec == CODEC_ID_FLAC {
            return Err(decode_err(format!(
                "file is truncated: header says {expected} frames, only {decoded} could be decoded"
            )));
        }
        if decoded < expected && skipped_packets == 0 {
            tracing::warn!(path = %path.display(), expected, decoded, "audio shorter than its header says");
        }
    }
    if decoded == 0 {
        return Err(AudioError::NoSamples {
            path: path.to_path_buf(),
        });
    }
    Ok(Waveform::new(channels, track.info.sample_rate))
}
