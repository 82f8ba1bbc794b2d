//! Data pipeline speed (issue #3 targets, on the 2-core machine):
//! - a 281,241-utterance manifest (LibriSpeech 960 h size, synthetic) loads from JSON,
//!   filters and sorts in < 2 s;
//! - `librispeech-to-json` over a synthetic tree of 20,000 tiny flac files runs at > 5k files/s
//!   (the files are hard links of one small committed flac: headers are what is read);
//! - the loader with 2 workers decodes flac batches at > 200x real time.
//!
//! `cargo bench --bench dataio`; each group also prints its derived figure once.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use polars::prelude::*;
use voxbrain::dataio::librispeech::{parse_to_json, ParseOptions};
use voxbrain::dataio::{
    self, write_manifest, DataLoader, DataLoaderOptions, DynamicItemDataset, FilterSort,
    ManifestFormat,
};

const ROWS: usize = 281_241;
const FILES: usize = 20_000;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// A LibriSpeech-960h-sized manifest: ids, paths, words, speakers, lengths 1-35 s.
fn big_manifest(path: &Path) {
    let ids: Vec<String> = (0..ROWS)
        .map(|i| format!("{}-{}-{:04}", 100 + i % 2338, 1000 + i % 5466, i % 10000))
        .enumerate()
        .map(|(i, s)| format!("{s}-{i}"))
        .collect();
    let paths: Vec<String> = ids
        .iter()
        .map(|i| format!("{{data_root}}/train/{i}.flac"))
        .collect();
    let words: Vec<String> = (0..ROWS)
        .map(|i| {
            format!(
                "CHAPTER {} THE WORDS OF UTTERANCE NUMBER {i} ARE HERE",
                i % 97
            )
        })
        .collect();
    let spk: Vec<String> = (0..ROWS)
        .map(|i| format!("speaker_{}", 100 + i % 2338))
        .collect();
    let length: Vec<f64> = (0..ROWS)
        .map(|i| 1.0 + ((i * 7919) % 34_000) as f64 / 1000.0)
        .collect();
    let df = DataFrame::new_infer_height(vec![
        Column::new("id".into(), ids),
        Column::new("file_path".into(), paths),
        Column::new("words".into(), words),
        Column::new("spkID".into(), spk),
        Column::new("length".into(), length),
    ])
    .unwrap();
    write_manifest(&df, path, ManifestFormat::Json).unwrap();
}

fn load_filter_sort(path: &Path) -> usize {
    let repl = [("data_root".to_string(), "/data/LibriSpeech".to_string())]
        .into_iter()
        .collect();
    let ds = DynamicItemDataset::from_json(path, &repl).unwrap();
    let ds = ds
        .filtered_sorted(
            &FilterSort::new()
                .sort_key("length")
                .key_max_value("length", 30.0),
        )
        .unwrap();
    ds.len()
}

fn bench_manifest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train960.json");
    big_manifest(&path);
    let mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    let t = Instant::now();
    let kept = load_filter_sort(&path);
    println!(
        "manifest {ROWS} rows ({mb:.0} MB JSON): load + filter + sort {:.3} s, {kept} kept (target < 2 s)",
        t.elapsed().as_secs_f64()
    );
    let mut g = c.benchmark_group("manifest_281k");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("from_json+filtered_sorted", |b| {
        b.iter(|| load_filter_sort(&path))
    });
    let repl = [("data_root".to_string(), "/data/LibriSpeech".to_string())]
        .into_iter()
        .collect();
    let ds = DynamicItemDataset::from_json(&path, &repl).unwrap();
    g.bench_function("filtered_sorted_only", |b| {
        b.iter(|| {
            ds.filtered_sorted(
                &FilterSort::new()
                    .sort_key("length")
                    .key_max_value("length", 30.0),
            )
            .unwrap()
            .len()
        })
    });
    g.finish();
}

/// 250 speakers x 4 chapters x 20 utterances, each a hard link of one small flac.
fn synthetic_tree(root: &Path) {
    let src = fixtures().join("foundation/formats/pcm_16.flac");
    let mut n = 0;
    for s in 0..250 {
        for c in 0..4 {
            let (spk, chap) = (1000 + s, 100 + c);
            let dir = root.join(spk.to_string()).join(chap.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let mut trans = String::new();
            for u in 0..20 {
                let id = format!("{spk}-{chap}-{u:04}");
                std::fs::hard_link(&src, dir.join(format!("{id}.flac")))
                    .or_else(|_| std::fs::copy(&src, dir.join(format!("{id}.flac"))).map(|_| ()))
                    .unwrap();
                trans.push_str(&format!("{id} SOME WORDS FOR UTTERANCE {u}\n"));
                n += 1;
            }
            std::fs::write(dir.join(format!("{spk}-{chap}.trans.txt")), trans).unwrap();
        }
    }
    assert_eq!(n, FILES);
}

fn bench_librispeech(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    synthetic_tree(&root);
    let out = dir.path().join("data.json");
    let opts = ParseOptions::default();
    let t = Instant::now();
    let s = parse_to_json(&root, &out, &opts).unwrap();
    let el = t.elapsed().as_secs_f64();
    println!(
        "librispeech-to-json: {} files in {el:.3} s = {:.0} files/s (target > 5000)",
        s.utterances,
        s.utterances as f64 / el
    );
    let mut g = c.benchmark_group("librispeech_to_json_20k");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(FILES as u64));
    g.bench_function("parse_to_json", |b| {
        b.iter(|| parse_to_json(&root, &out, &opts).unwrap())
    });
    g.finish();
}

fn loader_dataset() -> (DynamicItemDataset, f64) {
    // The committed mini corpus, repeated to 96 utterances.
    let corpus = fixtures().join("dataio/corpus");
    let (df, _) =
        dataio::librispeech::parse_librispeech(&corpus, &ParseOptions::default()).unwrap();
    let reps = 96usize.div_ceil(df.height());
    let mut ids = Vec::new();
    let mut paths = Vec::new();
    let mut lens = Vec::new();
    for r in 0..reps {
        for i in 0..df.height() {
            ids.push(format!(
                "{}-r{r}",
                df.column("id").unwrap().str().unwrap().get(i).unwrap()
            ));
            paths.push(
                df.column("file_path")
                    .unwrap()
                    .str()
                    .unwrap()
                    .get(i)
                    .unwrap()
                    .to_string(),
            );
            lens.push(df.column("length").unwrap().f64().unwrap().get(i).unwrap());
        }
    }
    let secs: f64 = lens.iter().sum();
    let df = DataFrame::new_infer_height(vec![
        Column::new("id".into(), ids),
        Column::new("file_path".into(), paths),
        Column::new("length".into(), lens),
    ])
    .unwrap();
    let mut ds = DynamicItemDataset::from_polars(df).unwrap();
    ds = ds
        .filtered_sorted(&FilterSort::new().sort_key("length"))
        .unwrap();
    ds.add_dynamic_item(&["file_path"], &["signal"], dataio::read_audio_item)
        .unwrap();
    ds.set_output_keys(&["id", "signal"]);
    (ds, secs)
}

fn run_epoch(loader: &DataLoader) -> usize {
    loader.iter(0).map(|b| b.unwrap().len()).sum()
}

fn bench_loader(c: &mut Criterion) {
    let (ds, secs) = loader_dataset();
    let mut g = c.benchmark_group("loader_flac");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for workers in [0usize, 2] {
        let loader = DataLoader::new(
            ds.clone(),
            DataLoaderOptions {
                batch_size: 8,
                num_workers: workers,
                ..Default::default()
            },
        )
        .unwrap();
        let t = Instant::now();
        let n = run_epoch(&loader);
        let el = t.elapsed().as_secs_f64();
        println!(
            "loader, {workers} workers: {n} utterances, {secs:.1} s of audio in {el:.3} s = {:.0}x real time (target > 200x with 2 workers)",
            secs / el
        );
        g.bench_function(format!("{workers}_workers_epoch_{secs:.0}s_audio"), |b| {
            b.iter(|| run_epoch(&loader))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_manifest, bench_librispeech, bench_loader);
criterion_main!(benches);
