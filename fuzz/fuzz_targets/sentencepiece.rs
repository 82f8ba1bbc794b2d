//! SentencePiece model loading (`tokenizer.ckpt`), then a round trip through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sp) = voxbrain::tokenizers::SentencePiece::from_bytes(data, "fuzz.model") {
        if let Ok(ids) = sp.encode_as_ids("THE CAT SAT") {
            let _ = sp.decode_ids(&ids);
        }
    }
});
