//! The tutorial's data pipeline ("Setting up the data pipeline") end to end on the committed
//! mini corpus (tests/fixtures/dataio/corpus, made by `voxbrain-data synth`), plus parity of
//! the LibriSpeech parse and of PaddedBatch values with SpeechBrain.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::DType;
use common::{fixture, npy};
use serde_json::Value as Json;
use voxbrain::dataio::librispeech::{parse_librispeech, parse_to_json, LengthUnit, ParseOptions};
use voxbrain::dataio::{
    self, DataLoader, DataLoaderOptions, DynamicItemDataset, FilterSort, PaddedBatch, Value,
};

/// STUB tokenizer, only until the SentencePiece wrapper exists (issue #7): one id per
/// character (a-z -> 1..26, space -> 27, anything else -> 28). Not a real tokenizer.
struct StubTokenizer;
impl StubTokenizer {
    fn encode_as_ids(&self, words: &str) -> Vec<i64> {
        words
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ 'a'..='z' => (c as i64) - ('a' as i64) + 1,
                ' ' => 27,
                _ => 28,
            })
            .collect()
    }
}

const BOS: i64 = 0;
const EOS: i64 = 0;

fn corpus() -> std::path::PathBuf {
    fixture("dataio/corpus")
}

#[test]
fn tutorial_pipeline_runs() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("data.json");
    // parse_to_json("./LibriSpeech/dev-clean-2")
    let summary = parse_to_json(corpus(), &json, &ParseOptions::default()).unwrap();
    println!("parse_to_json: {summary}");
    assert!(
        summary.utterances >= 8 && summary.speakers >= 3,
        "{summary}"
    );

    // dataset = DynamicItemDataset.from_json("data.json")
    let dataset = DynamicItemDataset::from_json(&json, &Default::default()).unwrap();
    // dataset = dataset.filtered_sorted(sort_key="length", select_n=100)
    let mut dataset = dataset
        .filtered_sorted(&FilterSort::new().sort_key("length").select_n(100))
        .unwrap();
    assert_eq!(dataset.len(), summary.utterances);

    // dataset.add_dynamic_item(sb.dataio.dataio.read_audio, takes="file_path", provides="signal")
    let reads = Arc::new(AtomicUsize::new(0));
    let r = reads.clone();
    dataset
        .add_dynamic_item(&["file_path"], &["signal"], move |a| {
            r.fetch_add(1, Ordering::SeqCst);
            dataio::read_audio_item(a)
        })
        .unwrap();

    // text_pipeline: takes words, provides words, tokens_list, tokens_bos, tokens_eos, tokens
    let tokenizer = Arc::new(StubTokenizer);
    dataset
        .add_dynamic_item(
            &["words"],
            &["words", "tokens_list", "tokens_bos", "tokens_eos", "tokens"],
            move |a| {
                let words = a.str(0)?;
                let tokens_list = tokenizer.encode_as_ids(words);
                let bos: Vec<i64> = std::iter::once(BOS)
                    .chain(tokens_list.iter().copied())
                    .collect();
                let eos: Vec<i64> = tokens_list
                    .iter()
                    .copied()
                    .chain(std::iter::once(EOS))
                    .collect();
                Ok(vec![
                    Value::from(words),
                    Value::from(tokens_list.clone()),
                    dataio::long_tensor(bos)?,
                    dataio::long_tensor(eos)?,
                    dataio::long_tensor(tokens_list)?,
                ])
            },
        )
        .unwrap();

    // Lazy: with only text keys requested, no audio is read.
    dataset.set_output_keys(&["id", "tokens"]);
    dataset.get(0).unwrap();
    assert_eq!(
        reads.load(Ordering::SeqCst),
        0,
        "audio read although not requested"
    );

    dataset.set_output_keys(&[
        "id",
        "signal",
        "words",
        "tokens_list",
        "tokens_bos",
        "tokens_eos",
        "tokens",
    ]);
    let p = dataset.get(0).unwrap();
    println!("dataset[0]: {:?}", p.keys().collect::<Vec<_>>());
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    let signal = p.tensor("signal").unwrap();
    assert_eq!(signal.dtype(), DType::F32);
    assert_eq!(signal.rank(), 1);
    let words = p.str("words").unwrap();
    let tokens_list = p.int_list("tokens_list").unwrap();
    assert_eq!(tokens_list.len(), words.chars().count());
    let bos = p.tensor("tokens_bos").unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(bos[0], BOS);
    assert_eq!(&bos[1..], tokens_list);
    let eos = p.tensor("tokens_eos").unwrap().to_vec1::<i64>().unwrap();
    assert_eq!(*eos.last().unwrap(), EOS);
    // Sorted by length: the first point is the shortest.
    let len0 = signal.dim(0).unwrap();
    let last = dataset.get(dataset.len() - 1).unwrap();
    assert!(last.tensor("signal").unwrap().dim(0).unwrap() >= len0);

    // brain.fit(..., train_loader_kwargs={"batch_size": 8, "drop_last": True, "shuffle": False})
    let loader = DataLoader::new(
        dataset.clone(),
        DataLoaderOptions {
            batch_size: 8,
            drop_last: true,
            num_workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let batches: Vec<PaddedBatch> = loader.iter(0).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), summary.utterances / 8);
    let batch = batches[0].clone().to(&candle_core::Device::Cpu).unwrap();
    let (wavs, wav_lens) = batch.padded("signal").unwrap().pair();
    assert_eq!(wavs.dims()[0], 8);
    let lens = wav_lens.to_vec1::<f32>().unwrap();
    let max = wavs.dim(1).unwrap();
    for (i, l) in lens.iter().enumerate() {
        let n = dataset
            .get(i)
            .unwrap()
            .tensor("signal")
            .unwrap()
            .dim(0)
            .unwrap();
        assert_eq!(
            *l,
            (n as f64 / max as f64) as f32,
            "relative length of example {i}"
        );
    }
    assert_eq!(
        *lens.last().unwrap(),
        1.0,
        "sorted ascending: the last is the longest"
    );
    let (tokens_bos, _) = batch.padded("tokens_bos").unwrap().pair();
    assert_eq!(tokens_bos.dtype(), DType::I64);
    assert_eq!(batch.strings("words").unwrap().len(), 8);
    assert_eq!(batch.list("tokens_list").unwrap().len(), 8);
    println!("batch: wavs {:?}, wav_lens {lens:?}", wavs.dims());
}

#[test]
fn librispeech_parse_matches_tutorial_script() {
    let sb: Json =
        serde_json::from_str(&std::fs::read_to_string(fixture("dataio/sb_corpus.json")).unwrap())
            .unwrap();
    let opts = ParseOptions {
        length_unit: LengthUnit::Samples,
        data_root_placeholder: true,
        ..Default::default()
    };
    let (df, summary) = parse_librispeech(corpus(), &opts).unwrap();
    let sb = sb.as_object().unwrap();
    assert_eq!(df.height(), sb.len());
    let ds = DynamicItemDataset::from_polars(df).unwrap();
    let mut ids = ds.ids().unwrap();
    let mut sb_ids: Vec<String> = sb.keys().cloned().collect();
    ids.sort();
    sb_ids.sort();
    assert_eq!(ids, sb_ids);
    let mut ds = ds;
    ds.set_output_keys(&["file_path", "words", "spkID", "length"]);
    for i in 0..ds.len() {
        let p = ds.get(i).unwrap();
        let want = &sb[p.id()];
        for key in ["file_path", "words", "spkID"] {
            assert_eq!(
                p.str(key).unwrap(),
                want[key].as_str().unwrap(),
                "{} {key}",
                p.id()
            );
        }
        assert_eq!(p.i64("length").unwrap(), want["length"].as_i64().unwrap());
    }
    println!("librispeech parse == tutorial parse_to_json on {summary}");
}

#[test]
fn padded_batch_matches_speechbrain() {
    let sb: Json = serde_json::from_str(
        &std::fs::read_to_string(fixture("dataio/sb_padded_ids.json")).unwrap(),
    )
    .unwrap();
    let root = corpus().to_string_lossy().into_owned();
    let repl = [("data_root".to_string(), root)].into_iter().collect();
    let ds = DynamicItemDataset::from_json(fixture("dataio/sb_corpus.json"), &repl).unwrap();
    let mut ds = ds
        .filtered_sorted(&FilterSort::new().sort_key("length"))
        .unwrap();
    ds.add_dynamic_item(&["file_path"], &["signal"], dataio::read_audio_item)
        .unwrap();
    ds.add_dynamic_item(&["words"], &["words", "tokens"], |a| {
        let w = a.str(0)?;
        let t: Vec<i64> = w.chars().take(40).map(|c| (c as i64) % 50).collect();
        Ok(vec![Value::from(w), dataio::long_tensor(t)?])
    })
    .unwrap();
    ds.set_output_keys(&["id", "signal", "words", "tokens"]);
    let batch = PaddedBatch::new((0..3).map(|i| ds.get(i).unwrap()).collect()).unwrap();
    let want_ids: Vec<&str> = sb["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(batch.strings("id").unwrap(), want_ids);
    let want_words: Vec<&str> = sb["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(batch.strings("words").unwrap(), want_words);

    let (sig, lens) = batch.padded("signal").unwrap().pair();
    let want_lens = npy("dataio/padded_signal_lens.npy");
    assert_eq!(
        lens.to_vec1::<f32>().unwrap(),
        want_lens.data,
        "signal relative lengths"
    );
    // The fixture keeps every 97th sample of the padded batch (full audio would weigh 100s of kB).
    let want = npy("dataio/padded_signal_strided.npy");
    let rows = sig.to_vec2::<f32>().unwrap();
    let got: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.iter().step_by(97).copied())
        .collect();
    assert_eq!(want.shape, vec![3, rows[0].len().div_ceil(97)]);
    assert_eq!(got, want.data, "padded signal samples");

    let (tok, tok_lens) = batch.padded("tokens").unwrap().pair();
    let want_tok = npy("dataio/padded_tokens.npy");
    let got_tok: Vec<f32> = tok
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(got_tok, want_tok.data, "padded tokens");
    assert_eq!(
        tok_lens.to_vec1::<f32>().unwrap(),
        npy("dataio/padded_tokens_lens.npy").data
    );
    println!(
        "PaddedBatch: signal {:?} and tokens {:?} identical to SpeechBrain's",
        sig.dims(),
        tok.dims()
    );
}
