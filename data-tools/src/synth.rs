//! `voxbrain-data synth`: a LibriSpeech-shaped corpus spoken by espeak-ng.
//!
//! Layout and transcripts exactly as LibriSpeech (`<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`,
//! `<spk>-<chapter>.trans.txt` with upper-case words), so every LibriSpeech tool (and
//! `librispeech-to-json`) reads it. Speakers are espeak-ng voices and variants; each utterance
//! varies the speaker's speed and pitch a little (seeded, reproducible).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::flac::{write_atomic, write_flac};

/// Public-domain Harvard sentences (IEEE 1969), the default text.
pub const SENTENCES: &[&str] = &[
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "Large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
];

/// (voice+variant, words per minute, pitch 0-99): distinct "speakers". espeak-ng 1.51
/// ignores a variant after `en-gb` (and `en-gb-x-gbclan`): `en-gb+f3` sounds as plain `en-gb`,
/// so the British variants are spelled `en+...`.
pub const VOICES: &[(&str, u32, u32)] = &[
    ("en-us+m3", 160, 45),
    ("en+f3", 150, 60),
    ("en-us+m7", 135, 30),
    ("en-gb-scotland+f2", 170, 55),
    ("en-us+f4", 145, 70),
    ("en+m5", 155, 40),
    ("en-029+f1", 165, 65),
    ("en-gb-x-rp+m1", 140, 35),
];

/// Settings of [`synth`].
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub speakers: usize,
    pub chapters: usize,
    pub utterances: usize,
    pub sample_rate: u32,
    pub seed: u64,
    pub sentences: Vec<String>,
    /// Speakers' voices `(voice+variant, wpm, pitch)`; empty: [`VOICES`]. A recipe trains on
    /// some and tests on others, so its test speakers are voices it never heard.
    pub voices: Vec<(String, u32, u32)>,
}

/// Parses `voice[:wpm[:pitch]]` (e.g. `en-us+m1:150:40`); wpm defaults to 150, pitch to 50.
pub fn parse_voice(spec: &str) -> Result<(String, u32, u32)> {
    let mut parts = spec.trim().split(':');
    let voice = parts.next().filter(|v| !v.is_empty());
    let Some(voice) = voice else {
        bail!("empty voice in {spec:?}");
    };
    let num = |p: Option<&str>, default: u32, what: &str| -> Result<u32> {
        p.map_or(Ok(default), |x| {
            x.parse()
                .with_context(|| format!("voice {spec:?}: {what} {x:?} is not a number"))
        })
    };
    let wpm = num(parts.next(), 150, "words per minute")?;
    let pitch = num(parts.next(), 50, "pitch")?;
    if parts.next().is_some() || !(80..=450).contains(&wpm) || pitch > 99 {
        bail!("voice {spec:?}: expected voice[:wpm 80-450[:pitch 0-99]]");
    }
    Ok((voice.to_string(), wpm, pitch))
}

/// LibriSpeech's transcript style: upper case, letters, digits and apostrophes.
pub fn normalize_words(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c.to_ascii_uppercase()
            } else {
                ' '
            }
        })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// True if espeak-ng can be run.
pub fn espeak_available() -> bool {
    Command::new("espeak-ng")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn espeak(
    text: &str,
    voice: &str,
    speed: u32,
    pitch: u32,
    tmp: &Path,
) -> Result<voxbrain::audio::Waveform> {
    let status = Command::new("espeak-ng")
        .args([
            "-v",
            voice,
            "-s",
            &speed.to_string(),
            "-p",
            &pitch.to_string(),
            "-w",
        ])
        .arg(tmp)
        .arg(text)
        .output()
        .context("running espeak-ng")?;
    if !status.status.success() {
        bail!(
            "espeak-ng -v {voice} failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    Ok(voxbrain::audio::read_waveform(tmp)?)
}

/// Builds the corpus; returns the number of utterances written.
pub fn synth(opts: &SynthOptions) -> Result<usize> {
    if !espeak_available() {
        bail!("espeak-ng was not found on PATH (install it: apt-get install espeak-ng)");
    }
    if opts.sentences.is_empty() {
        bail!("no text to speak");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let total = opts.speakers * opts.chapters * opts.utterances;
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} synthesizing {pos}/{len} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tmpdir = tempfile::tempdir().context("creating a temporary directory")?;
    let tmp = tmpdir.path().join("utt.wav");
    let mut sentence = 0usize;
    let voices: Vec<(String, u32, u32)> = if opts.voices.is_empty() {
        VOICES
            .iter()
            .map(|&(v, w, p)| (v.to_string(), w, p))
            .collect()
    } else {
        opts.voices.clone()
    };
    for s in 0..opts.speakers {
        let (voice, speed, pitch) = &voices[s % voices.len()];
        let (voice, speed) = (voice.as_str(), *speed);
        // Beyond the voice list, speakers reuse a voice at another pitch.
        let pitch = (pitch + 13 * (s / voices.len()) as u32) % 100;
        let spk = 100 + s;
        for c in 0..opts.chapters {
            let chapter = 1000 + 10 * s + c;
            let dir = opts.out.join(spk.to_string()).join(chapter.to_string());
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut trans = String::new();
            for u in 0..opts.utterances {
                let text = &opts.sentences[sentence % opts.sentences.len()];
                sentence += 1;
                let sp = (speed as i64 + rng.random_range(-12..=12)).clamp(80, 400) as u32;
                let pi = (pitch as i64 + rng.random_range(-8..=8)).clamp(0, 99) as u32;
                let wav = espeak(text, voice, sp, pi, &tmp)?;
                let wav = wav.resampled(opts.sample_rate)?;
                let id = format!("{spk}-{chapter}-{u:04}");
                write_flac(
                    &dir.join(format!("{id}.flac")),
                    &wav.to_mono(),
                    opts.sample_rate,
                )?;
                trans.push_str(&format!("{id} {}\n", normalize_words(text)));
                bar.inc(1);
                tracing::debug!(id, voice, speed = sp, pitch = pi, "utterance written");
            }
            write_atomic(
                &dir.join(format!("{spk}-{chapter}.trans.txt")),
                trans.as_bytes(),
            )?;
        }
    }
    bar.finish_and_clear();
    Ok(total)
}

#[cfg(test)]
mod voice_tests {
    use super::parse_voice;

    #[test]
    fn voices_parse_with_defaults_and_reject_nonsense() {
        assert_eq!(
            parse_voice("en-us+m1:140:30").unwrap(),
            ("en-us+m1".into(), 140, 30)
        );
        assert_eq!(parse_voice("en+f5").unwrap(), ("en+f5".into(), 150, 50));
        for bad in ["", ":150", "en:fast", "en:150:120", "en:20", "en:150:40:1"] {
            let e = parse_voice(bad).unwrap_err().to_string();
            assert!(e.contains("voice"), "{bad}: {e}");
        }
    }
}
