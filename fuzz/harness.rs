//! What each fuzz target does with one input; shared by the targets (fuzz_targets/*.rs) and
//! by the regression test (tests/fuzz_regressions.rs), which replays every input that once
//! crashed. Each function returns normally for any input; errors are the expected outcome.

#![allow(dead_code)]

/// Writes an input to a per-process file, for readers that take a path (as users call them):
/// the file's extension is the one the reader dispatches on.
fn input_file(data: &[u8], ext: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("voxbrain-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder for fuzz inputs");
    let p = dir.join(format!("input.{ext}"));
    std::fs::write(&p, data).expect("writing the fuzz input");
    p
}

/// Audio decoding (wav, flac, ogg/vorbis, mp3 through symphonia): the first byte picks the
/// extension, the rest is the file.
pub fn audio_read(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ext = ["wav", "flac", "ogg", "mp3"][sel as usize % 4];
    let p = input_file(body, ext);
    let _ = voxbrain::audio::audio_info(&p);
    let _ = voxbrain::audio::read_waveform(&p);
}

/// Manifest loading: SpeechBrain's JSON (`{id: {key: value}}`) and CSV (`ID` column) with
/// `{data_root}` replacement; the first byte picks the format.
pub fn manifest(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let opts: voxbrain::dataio::Replacements = [("data_root".to_string(), "/data".to_string())]
        .into_iter()
        .collect();
    if sel % 2 == 0 {
        let p = input_file(body, "json");
        let _ = voxbrain::dataio::read_json_manifest(&p, &opts);
    } else {
        let p = input_file(body, "csv");
        let _ = voxbrain::dataio::read_csv_manifest(&p, &opts, &[]);
    }
}

/// `hyperparams.yaml` reading and resolution (references, `!new:`, `!name:`, `!ref`
/// arithmetic, `!apply:`), the input split at the first NUL into the file and its overrides.
pub fn hparams(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (yaml, overrides) = match text.split_once('\0') {
        Some((y, o)) => (y, Some(o)),
        None => (text, None),
    };
    if let Ok(h) = voxbrain::pretrained::hparams::Hparams::from_str(yaml, "fuzz.yaml", overrides) {
        let _ = h.to_json();
    }
}

/// `.ckpt` reading: torch zip archives and their pickles (the restricted unpickler), with
/// every tensor's data.
pub fn ckpt(data: &[u8]) {
    let _ = voxbrain::pretrained::ckpt::read_ckpt_bytes(data, "fuzz.ckpt");
}

/// SentencePiece model loading (`tokenizer.ckpt`), then a round trip through it.
pub fn sentencepiece(data: &[u8]) {
    if let Ok(sp) = voxbrain::tokenizers::SentencePiece::from_bytes(data, "fuzz.model") {
        if let Ok(ids) = sp.encode_as_ids("THE CAT SAT") {
            let _ = sp.decode_ids(&ids);
        }
    }
}

/// The `.npy` reader (fixtures and embeddings).
pub fn npy(data: &[u8]) {
    let p = input_file(data, "npy");
    let _ = voxbrain::npy::read_npy(&p);
}
