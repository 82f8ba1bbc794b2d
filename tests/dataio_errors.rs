//! Bad input gives clear errors naming the file, data point and key (or a skipped row with a
//! warning where SpeechBrain skips), never a panic.

mod common;

use std::path::Path;

use common::fixture;
use voxbrain::dataio::librispeech::{parse_librispeech, ParseOptions};
use voxbrain::dataio::{
    self, DataIoError, DataLoader, DataLoaderOptions, DynamicItemDataset, FilterSort, Value,
};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn malformed_json_names_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.json",
        "{\"a\": {\"words\": \"HI\", \"length\": 1.0},\n \"b\": {\"words\": ",
    );
    let e = DynamicItemDataset::from_json(&p, &Default::default()).unwrap_err();
    let msg = e.to_string();
    println!("{msg}");
    assert!(matches!(e, DataIoError::Manifest { .. }));
    assert!(msg.contains("bad.json") && msg.contains("line 2"), "{msg}");

    let p = write(dir.path(), "list.json", "[1, 2]");
    let msg = DynamicItemDataset::from_json(&p, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("list.json") && msg.contains("JSON object"),
        "{msg}"
    );

    let p = write(dir.path(), "id.json", r#"{"a": {"id": "x"}}"#);
    let msg = DynamicItemDataset::from_json(&p, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'id' is reserved"), "{msg}");

    let msg = DynamicItemDataset::from_json(dir.path().join("nope.json"), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.json"), "{msg}");
}

#[test]
fn missing_replacement_names_id_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "m.json",
        r#"{"u1": {"file_path": "{data_root}/u1.flac"}}"#,
    );
    let msg = DynamicItemDataset::from_json(&p, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("'u1'") && msg.contains("'file_path'") && msg.contains("data_root"),
        "{msg}"
    );
}

#[test]
fn row_missing_a_key_is_an_error_naming_id_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "m.json",
        r#"{"a": {"words": "HI", "length": 1.0}, "b": {"length": 2.0}, "c": {"words": "HO"}}"#,
    );
    let mut ds = DynamicItemDataset::from_json(&p, &Default::default()).unwrap();
    ds.set_output_keys(&["id", "words"]);
    assert_eq!(ds.get(0).unwrap().str("words").unwrap(), "HI");
    let e = ds.get(1).unwrap_err();
    assert!(matches!(e, DataIoError::MissingKey { .. }));
    assert_eq!(e.to_string(), "data point 'b' has no value for key 'words'");
    // Sorting by a key a row lacks names that row.
    let msg = ds
        .filtered_sorted(&FilterSort::new().sort_key("length"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'c'") && msg.contains("'length'"), "{msg}");
    let msg = ds
        .filtered_sorted(&FilterSort::new().key_min_value("length", 0.5))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'c'") && msg.contains("'length'"), "{msg}");
}

#[test]
fn wrong_types_and_unknown_keys_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "m.json",
        r#"{"a": {"words": "HI", "length": 1.0}}"#,
    );
    let mut ds = DynamicItemDataset::from_json(&p, &Default::default()).unwrap();
    ds.add_dynamic_item(&["words"], &["n"], |a| Ok(vec![Value::Int(a.i64(0)?)]))
        .unwrap();
    ds.set_output_keys(&["n"]);
    let msg = ds.get(0).unwrap_err().to_string();
    assert!(
        msg.contains("'a'") && msg.contains("key 'words': expected int, found string"),
        "{msg}"
    );

    ds.set_output_keys(&["nope"]);
    let msg = ds.get(0).unwrap_err().to_string();
    assert!(msg.contains("'nope'") && msg.contains("words"), "{msg}");

    ds.add_dynamic_item(&["y"], &["x"], |a| Ok(vec![a.value(0)?.clone()]))
        .unwrap();
    ds.add_dynamic_item(&["x"], &["y"], |a| Ok(vec![a.value(0)?.clone()]))
        .unwrap();
    ds.set_output_keys(&["x"]);
    assert!(matches!(ds.get(0).unwrap_err(), DataIoError::Cycle { .. }));

    ds.add_dynamic_item(&["words"], &["two"], |_| Ok(vec![]))
        .unwrap();
    ds.set_output_keys(&["two"]);
    assert!(ds
        .get(0)
        .unwrap_err()
        .to_string()
        .contains("returned 0 values for 1"));
    assert!(ds
        .add_dynamic_item(&["words"], &[], |_| Ok(vec![]))
        .is_err());
}

#[test]
fn missing_audio_file_mid_epoch_fails_that_batch_only() {
    let dir = tempfile::tempdir().unwrap();
    let wav = fixture("foundation/speech_0.wav");
    let wav = wav.to_string_lossy();
    let text = format!(
        r#"{{"a": {{"file_path": "{wav}"}}, "b": {{"file_path": "{wav}"}},
            "gone": {{"file_path": "{{data_root}}/gone.flac"}}, "d": {{"file_path": "{wav}"}}}}"#
    );
    let p = write(dir.path(), "m.json", &text);
    let repl = [(
        "data_root".to_string(),
        dir.path().to_string_lossy().into_owned(),
    )]
    .into_iter()
    .collect();
    let mut ds = DynamicItemDataset::from_json(&p, &repl).unwrap();
    ds.add_dynamic_item(&["file_path"], &["signal"], dataio::read_audio_item)
        .unwrap();
    ds.set_output_keys(&["id", "signal"]);
    for workers in [0, 2] {
        let loader = DataLoader::new(
            ds.clone(),
            DataLoaderOptions {
                batch_size: 1,
                num_workers: workers,
                ..Default::default()
            },
        )
        .unwrap();
        let results: Vec<_> = loader.iter(0).collect();
        assert_eq!(results.len(), 4);
        assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
        let msg = results[2].as_ref().unwrap_err().to_string();
        println!("{msg}");
        assert!(
            msg.contains("'gone'") && msg.contains("gone.flac") && msg.contains("signal"),
            "{msg}"
        );
    }
}

#[test]
fn trans_line_without_id_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let chapter = dir.path().join("19/198");
    std::fs::create_dir_all(&chapter).unwrap();
    std::fs::copy(
        fixture("foundation/formats/pcm_16.flac"),
        chapter.join("19-198-0000.flac"),
    )
    .unwrap();
    write(
        &chapter,
        "19-198.trans.txt",
        "19-198-0000 HELLO\nNO ID ON THIS LINE\n",
    );
    let e = parse_librispeech(dir.path(), &ParseOptions::default()).unwrap_err();
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        msg.contains("19-198.trans.txt") && msg.contains("line 2"),
        "{msg}"
    );

    // An audio file without a transcript line is an error; a transcript without audio is
    // skipped with a warning.
    write(
        &chapter,
        "19-198.trans.txt",
        "19-198-0000 HELLO\n19-198-0001 NO AUDIO\n\n",
    );
    let (df, summary) = parse_librispeech(dir.path(), &ParseOptions::default()).unwrap();
    assert_eq!((df.height(), summary.skipped_transcripts), (1, 1));
    write(&chapter, "19-198.trans.txt", "19-198-0001 NO AUDIO\n");
    let msg = parse_librispeech(dir.path(), &ParseOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("19-198-0000.flac") && msg.contains("no transcript"),
        "{msg}"
    );
    let msg = parse_librispeech(dir.path().join("nope"), &ParseOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn bad_csv_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "noid.csv", "wav,duration\n/a.wav,1.0\n");
    let msg = DynamicItemDataset::from_csv(&p, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("noid.csv") && msg.contains("'ID'"), "{msg}");
    let p = write(dir.path(), "dup.csv", "ID,duration\na,1.0\na,2.0\n");
    let msg = DynamicItemDataset::from_csv(&p, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("duplicate id: a"), "{msg}");
    let p = write(dir.path(), "dur.csv", "ID,duration\na,long\n");
    let msg = DynamicItemDataset::from_csv(&p, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("duration"), "{msg}");
    let p = write(dir.path(), "var.csv", "ID,wav\na,$root/a.wav\n");
    let msg = DynamicItemDataset::from_csv(&p, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'root'") && msg.contains("'a'"), "{msg}");
}
