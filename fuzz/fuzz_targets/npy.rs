//! The `.npy` reader (fixtures and embeddings).
#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let p = common::input_file(data, "npy");
    let _ = voxbrain::npy::read_npy(&p);
});
