//! Fuzz target `audio_read`: see `harness::audio_read`.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "../harness.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::audio_read(data));
