//! Manifest loading: SpeechBrain's JSON (`{id: {key: value}}`) and CSV (`ID` column) with
//! `{data_root}` replacement; the first byte picks the format.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let opts: voxbrain::dataio::Replacements = [("data_root".to_string(), "/data".to_string())]
        .into_iter()
        .collect();
    if sel % 2 == 0 {
        let p = common::input_file(body, "json");
        let _ = voxbrain::dataio::read_json_manifest(&p, &opts);
    } else {
        let p = common::input_file(body, "csv");
        let _ = voxbrain::dataio::read_csv_manifest(&p, &opts);
    }
});
