//! Audio I/O parity with SpeechBrain's `read_audio` / `load_audio`, round trips and bad input.

mod common;

use common::{assert_close, fixture, npy};
use voxbrain::audio::{
    audio_info, load_audio, read_audio, read_waveform, resample, write_wav, AudioError, ChannelMix,
    WavFormat, Waveform,
};

fn read_flat(rel: &str) -> (Vec<f32>, Vec<usize>, u32) {
    let (t, sr) = read_audio(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    (
        t.flatten_all().unwrap().to_vec1().unwrap(),
        t.dims().to_vec(),
        sr,
    )
}

#[test]
fn lossless_formats_match_speechbrain_read_audio() {
    for name in [
        "pcm_u8.wav",
        "pcm_16.wav",
        "pcm_24.wav",
        "pcm_32.wav",
        "float.wav",
        "stereo_24.wav",
        "pcm_16.flac",
        "pcm_24.flac",
    ] {
        let rel = format!("foundation/formats/{name}");
        let want = npy(&format!("{rel}.npy"));
        let (got, shape, sr) = read_flat(&rel);
        assert_eq!(sr, 16000, "{name}");
        assert_eq!(shape, want.shape, "{name}: SpeechBrain's shape");
        // Same integer scaling as libsndfile: bit-exact.
        assert_close(name, &got, &want.data, 0.0, 0.0);
    }
}

#[test]
fn lossy_formats_decode_close_to_speechbrain() {
    // Vorbis decoders are float implementations of one spec: near-identical output.
    let want = npy("foundation/formats/vorbis.ogg.npy");
    let (got, shape, sr) = read_flat("foundation/formats/vorbis.ogg");
    assert_eq!((sr, shape.clone()), (16000, want.shape.clone()));
    assert_close("vorbis", &got, &want.data, 1e-3, 1e-5);

    // mp3: libmpg123 (SpeechBrain) and symphonia may trim encoder delay differently; the
    // decoded signal must still be the same audio at the same rate.
    let want = npy("foundation/formats/mp3.mp3.npy");
    let (got, _, sr) = read_flat("foundation/formats/mp3.mp3");
    assert_eq!(sr, 16000);
    assert_eq!(
        got.len(),
        want.data.len(),
        "mp3 length (encoder delay/padding trimmed alike)"
    );
    let best = snr_at_lag(&want.data, &got, 0);
    println!("mp3: SNR vs SpeechBrain {best:.1} dB");
    assert!(
        best > 60.0,
        "mp3 decode differs from SpeechBrain: {best:.1} dB"
    );
}

fn snr_at_lag(want: &[f32], got: &[f32], lag: i64) -> f64 {
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for (i, &w) in want.iter().enumerate() {
        let j = i as i64 + lag;
        if j < 0 || j as usize >= got.len() {
            continue;
        }
        sig += (w as f64).powi(2);
        err += (w as f64 - got[j as usize] as f64).powi(2);
    }
    10.0 * (sig / err.max(1e-20)).log10()
}

#[test]
fn load_audio_resamples_and_downmixes_like_speechbrain() {
    for (name, len) in [("mono_8k.wav", 8000usize), ("stereo_44k.wav", 8000)] {
        let rel = format!("foundation/formats/{name}");
        let want = npy(&format!("{rel}.load16k.npy"));
        let got = load_audio(fixture(&rel), 16000, ChannelMix::AvgToMono).unwrap();
        let got: Vec<f32> = got.to_vec1().unwrap();
        assert_eq!(got.len(), len);
        assert_close(name, &got, &want.data, 1e-6, 1e-7);
    }
    // espeak-ng's 22.05 kHz speech, resampled to 16 kHz.
    for i in 0..3 {
        let want = npy(&format!("foundation/speech_{i}_16k.npy"));
        let got = load_audio(
            fixture(&format!("foundation/speech_{i}.wav")),
            16000,
            ChannelMix::AvgToMono,
        )
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert_close(
            &format!("speech_{i} 22.05k->16k"),
            &got,
            &want.data,
            1e-6,
            1e-7,
        );
    }
}

#[test]
fn keep_mix_keeps_channels() {
    let t = load_audio(
        fixture("foundation/formats/stereo_44k.wav"),
        16000,
        ChannelMix::Keep,
    )
    .unwrap();
    assert_eq!(t.dims(), &[8000, 2]);
}

#[test]
fn write_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let clip = npy("foundation/speech_0_16k.npy").data;
    let stereo = Waveform::new(vec![clip.clone(), clip.iter().map(|x| -x).collect()], 44100);
    for (fmt, tol) in [(WavFormat::Float32, 0.0), (WavFormat::Int16, 0.5 / 32768.0)] {
        for wav in [Waveform::mono(clip.clone(), 8000), stereo.clone()] {
            let p = dir
                .path()
                .join(format!("rt_{fmt:?}_{}.wav", wav.num_channels()));
            write_wav(&p, &wav, fmt).unwrap();
            let back = read_waveform(&p).unwrap();
            assert_eq!(back.sample_rate, wav.sample_rate);
            assert_eq!(back.num_channels(), wav.num_channels());
            for (a, b) in back.channels().iter().zip(wav.channels()) {
                assert_close(&format!("{fmt:?}"), a, b, tol, tol);
            }
            let info = audio_info(&p).unwrap();
            assert_eq!(info.num_frames, Some(clip.len() as u64));
        }
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".part"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn info_reads_header_without_decoding() {
    let info = audio_info(fixture("foundation/speech_0.wav")).unwrap();
    let wav = read_waveform(fixture("foundation/speech_0.wav")).unwrap();
    assert_eq!(info.sample_rate, 22050);
    assert_eq!(info.channels, 1);
    assert_eq!(info.num_frames, Some(wav.num_frames() as u64));
    let flac = audio_info(fixture("foundation/formats/pcm_24.flac")).unwrap();
    assert_eq!((flac.sample_rate, flac.num_frames), (16000, Some(8000)));
}

#[test]
fn resample_lengths_follow_torchaudio() {
    // ceil(new * len / orig)
    assert_eq!(resample(&vec![0.1; 1001], 16000, 8000).unwrap().len(), 501);
    assert_eq!(resample(&vec![0.1; 441], 44100, 16000).unwrap().len(), 160);
    assert_eq!(resample(&[0.1; 3], 8000, 16000).unwrap().len(), 6);
    assert!(resample(&[0.0], 0, 16000).is_err());
}

fn err_of(path: &std::path::Path) -> AudioError {
    read_waveform(path).expect_err("bad input must fail")
}

#[test]
fn bad_inputs_give_errors_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // Empty file.
    let empty = dir.path().join("empty.wav");
    std::fs::write(&empty, b"").unwrap();
    // Text file named .wav.
    let text = dir.path().join("notes.wav");
    std::fs::write(&text, "this is not audio, just some text\n".repeat(20)).unwrap();
    // Truncated flac: keep the header and part of the frames.
    let full = std::fs::read(fixture("foundation/formats/pcm_24.flac")).unwrap();
    let trunc = dir.path().join("truncated.flac");
    std::fs::write(&trunc, &full[..full.len() / 2]).unwrap();
    // Directory and missing file.
    let missing = dir.path().join("missing.flac");

    let cases: Vec<(&std::path::Path, &str)> = vec![
        (&empty, "empty"),
        (&text, "unsupported"),
        (&trunc, "truncated"),
        (dir.path(), "directory"),
        (&missing, "No such file"),
    ];
    for (path, reason) in cases {
        let err = err_of(path);
        let msg = err.to_string();
        println!("{msg}");
        assert!(
            msg.contains(&path.display().to_string()),
            "error must name the path: {msg}"
        );
        assert!(
            msg.to_lowercase().contains(&reason.to_lowercase()),
            "error must say why ({reason}): {msg}"
        );
        // The tensor-returning API fails the same way.
        assert!(read_audio(path).is_err());
        assert!(load_audio(path, 16000, ChannelMix::AvgToMono).is_err());
    }
}
