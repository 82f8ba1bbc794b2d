//! `hyperparams.yaml` reading and resolution (references, `!new:`, `!name:`, `!ref` arithmetic,
//! `!apply:`), with the input split at the first NUL into the file and its overrides.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
