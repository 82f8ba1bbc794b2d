//! Inline display in evcxr Jupyter notebooks (the `EVCXR_BEGIN_CONTENT` protocol).

use std::path::Path;

use base64::Engine;

/// Shows a PNG or SVG file inline in an evcxr notebook (prints the evcxr display block).
pub fn show_image(path: impl AsRef<Path>) -> std::io::Result<()> {
    let path = path.as_ref();
    let bytes = std::fs::read(path)?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
    {
        println!(
            "EVCXR_BEGIN_CONTENT image/svg+xml\n{}\nEVCXR_END_CONTENT",
            String::from_utf8_lossy(&bytes)
        );
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        println!("EVCXR_BEGIN_CONTENT image/png\n{b64}\nEVCXR_END_CONTENT");
    }
    Ok(())
}

/// An HTML `<audio>` player holding `samples` as a 16-bit WAV data URI (the notebook
/// equivalent of `IPython.display.Audio`).
///
/// ```
/// let html = voxbrain::viz::audio_html(&[0.0f32; 800], 8000).unwrap();
/// assert!(html.starts_with("<audio controls"));
/// ```
pub fn audio_html(samples: &[f32], sample_rate: u32) -> std::io::Result<String> {
    let mut wav = Vec::new();
    {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(std::io::Cursor::new(&mut wav), spec)
            .map_err(std::io::Error::other)?;
        for &s in samples {
            w.write_sample((s * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
                .map_err(std::io::Error::other)?;
        }
        w.finalize().map_err(std::io::Error::other)?;
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(&wav);
    Ok(format!(
        "<audio controls src=\"data:audio/wav;base64,{b64}\"></audio>"
    ))
}

/// Shows an audio player inline in an evcxr notebook.
pub fn show_audio(samples: &[f32], sample_rate: u32) -> std::io::Result<()> {
    println!(
        "EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
        audio_html(samples, sample_rate)?
    );
    Ok(())
}

/// Shows HTML (a table, say) inline in an evcxr notebook.
///
/// ```
/// voxbrain::viz::show_html("<table><tr><td>1</td></tr></table>");
/// ```
pub fn show_html(html: &str) {
    println!("EVCXR_BEGIN_CONTENT text/html\n{html}\nEVCXR_END_CONTENT");
}
