//! `.ckpt` reading: torch zip archives and their pickles (the restricted unpickler), with
//! every tensor's data; also the shape listing `voxbrain inspect` shows.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = voxbrain::pretrained::ckpt::read_ckpt_bytes(data, "fuzz.ckpt");
});
