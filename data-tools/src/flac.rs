//! Writing 16-bit FLAC files with flacenc (pure Rust), atomically (temp file + rename).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use flacenc::component::BitRepr;
use flacenc::error::Verify;

/// Writes mono `samples` (float in [-1, 1]) as 16-bit FLAC at `sample_rate`.
/// Samples are scaled like libsndfile (`round(x * 32768)`, clipped).
pub fn write_flac(path: &Path, samples: &[f32], sample_rate: u32) -> Result<()> {
    let ints: Vec<i32> = samples
        .iter()
        .map(|s| (s * 32768.0).round().clamp(-32768.0, 32767.0) as i32)
        .collect();
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|e| anyhow!("flac encoder config: {e:?}"))?;
    let source = flacenc::source::MemSource::from_samples(&ints, 1, 16, sample_rate as usize);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|e| anyhow!("encoding {}: {e:?}", path.display()))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream
        .write(&mut sink)
        .map_err(|e| anyhow!("encoding {}: {e:?}", path.display()))?;
    let mut bytes = sink.as_slice().to_vec();
    // STREAMINFO (bytes 8..12): flacenc counts the short last frame in the minimum block
    // size; the FLAC spec excludes it, and decoders such as symphonia reject the stream
    // otherwise. With a fixed block size the minimum is the maximum.
    if bytes.len() > 12 && &bytes[..4] == b"fLaC" {
        let (min, max) = (bytes[8..10].to_vec(), bytes[10..12].to_vec());
        if min != max {
            bytes.copy_within(10..12, 8);
        }
    }
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = voxbrain::fsutil::parent_dir(path);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    voxbrain::fsutil::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
