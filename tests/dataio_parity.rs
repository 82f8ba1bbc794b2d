//! Parity with SpeechBrain 1.1.2 on ordering: `filtered_sorted` (several argument sets, static
//! and dynamic keys, ties) and sequential `DataLoader` batches give SpeechBrain's ids in
//! SpeechBrain's order. Fixtures: `make_fixtures.py dataio` (data-tools/reference/).

mod common;

use common::fixture;
use serde_json::Value as Json;
use voxbrain::dataio::{DataLoader, DataLoaderOptions, DynamicItemDataset, FilterSort, Value};

fn sb_order() -> Json {
    let text = std::fs::read_to_string(fixture("dataio/sb_order.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn dataset() -> DynamicItemDataset {
    let repl = [("data_root".to_string(), "/data".to_string())]
        .into_iter()
        .collect();
    let mut ds = DynamicItemDataset::from_json(fixture("dataio/manifest.json"), &repl).unwrap();
    // The same dynamic item as the fixture script: number of words.
    ds.add_dynamic_item(&["words"], &["n_words"], |a| {
        Ok(vec![
            Value::Int(a.str(0)?.split_whitespace().count() as i64),
        ])
    })
    .unwrap();
    ds
}

fn json_value(v: &Json) -> Value {
    if let Some(i) = v.as_i64() {
        Value::Int(i)
    } else if let Some(f) = v.as_f64() {
        Value::Float(f)
    } else {
        Value::from(v.as_str().unwrap())
    }
}

fn filter_sort(kwargs: &Json) -> FilterSort {
    let mut fs = FilterSort::new();
    if let Some(k) = kwargs.get("sort_key").and_then(Json::as_str) {
        fs = fs.sort_key(k);
    }
    if let Some(r) = kwargs.get("reverse").and_then(Json::as_bool) {
        fs = fs.reverse(r);
    }
    if let Some(n) = kwargs.get("select_n").and_then(Json::as_u64) {
        fs = fs.select_n(n as usize);
    }
    for (field, min) in [("key_min_value", true), ("key_max_value", false)] {
        if let Some(m) = kwargs.get(field).and_then(Json::as_object) {
            for (k, v) in m {
                fs = if min {
                    fs.key_min_value(k, json_value(v))
                } else {
                    fs.key_max_value(k, json_value(v))
                };
            }
        }
    }
    fs
}

fn strings(v: &Json) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn file_order_and_replacements_match_speechbrain() {
    let sb = sb_order();
    let ds = dataset();
    assert_eq!(ds.ids().unwrap(), strings(&sb["file_order"]));
    let mut ds = ds;
    ds.set_output_keys(&["file_path", "words", "spkID", "length", "samples"]);
    let p = ds.get(0).unwrap();
    let want = &sb["first_point"];
    assert_eq!(
        p.str("file_path").unwrap(),
        want["file_path"].as_str().unwrap()
    );
    assert!(p.str("file_path").unwrap().starts_with("/data/"));
    assert_eq!(p.str("words").unwrap(), want["words"].as_str().unwrap());
    assert_eq!(p.f64("length").unwrap(), want["length"].as_f64().unwrap());
    assert_eq!(p.i64("samples").unwrap(), want["samples"].as_i64().unwrap());
}

#[test]
fn filtered_sorted_matches_speechbrain() {
    let sb = sb_order();
    let ds = dataset();
    let combos = sb["combos"].as_object().unwrap();
    assert!(combos.len() >= 10);
    for (name, c) in combos {
        let got = ds.filtered_sorted(&filter_sort(&c["kwargs"])).unwrap();
        let want = strings(&c["ids"]);
        assert_eq!(got.ids().unwrap(), want, "combo {name}");
        println!(
            "filtered_sorted {name}: {} ids, same order as SpeechBrain",
            want.len()
        );
    }
}

#[test]
fn sequential_batches_match_speechbrain() {
    let sb = sb_order();
    for (name, sort, drop_last) in [
        ("sort_length_bs8", true, false),
        ("sort_length_bs8_drop_last", true, true),
        ("file_order_bs8", false, false),
    ] {
        let mut ds = dataset();
        if sort {
            ds = ds
                .filtered_sorted(&FilterSort::new().sort_key("length"))
                .unwrap();
        }
        ds.set_output_keys(&["id"]);
        for workers in [0, 2] {
            let loader = DataLoader::new(
                ds.clone(),
                DataLoaderOptions {
                    batch_size: 8,
                    drop_last,
                    num_workers: workers,
                    ..Default::default()
                },
            )
            .unwrap();
            let got: Vec<Vec<String>> = loader
                .iter(0)
                .map(|b| {
                    b.unwrap()
                        .strings("id")
                        .unwrap()
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                })
                .collect();
            let want: Vec<Vec<String>> = sb["batches"][name]
                .as_array()
                .unwrap()
                .iter()
                .map(strings)
                .collect();
            assert_eq!(got, want, "{name} with {workers} workers");
        }
        println!("batches {name}: same as SpeechBrain's DataLoader");
    }
}
