//! Audio decoding (wav, flac, ogg/vorbis, mp3 through symphonia): the first byte picks the
//! extension, the rest is the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ext = ["wav", "flac", "ogg", "mp3"][sel as usize % 4];
    let p = common::input_file(body, ext);
    let _ = voxbrain::audio::audio_info(&p);
    let _ = voxbrain::audio::read_waveform(&p);
});
