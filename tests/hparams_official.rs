//! The three official SpeechBrain hyperparams.yaml files resolve exactly as HyperPyYAML
//! resolves them (fixture written by the harness from hyperpyyaml.resolve_references).

mod common;

use std::path::PathBuf;

use serde_json::{json, Value as Json};
use voxbrain::pretrained::hparams::{Hparams, Value};

fn reference_yaml(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference-models")
        .join(model)
        .join("hyperparams.yaml")
}

/// The same JSON form the harness writes: objects in full.
fn full_json(v: &Value) -> Json {
    match v {
        Value::New(o) | Value::Name(o) | Value::Apply(o) => {
            let kind = match v {
                Value::New(_) => "new",
                Value::Name(_) => "name",
                _ => "apply",
            };
            json!({
                kind: o.class,
                "args": o.args.iter().map(full_json).collect::<Vec<_>>(),
                "kwargs": o.kwargs.iter().map(|(k, v)| (k.clone(), full_json(v))).collect::<serde_json::Map<_, _>>(),
            })
        }
        Value::List(l) | Value::Tuple(l) => Json::Array(l.iter().map(full_json).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), full_json(v))).collect()),
        other => other.to_json(),
    }
}

fn expected() -> Json {
    serde_json::from_str(
        &std::fs::read_to_string(common::fixture("pretrained/yaml_resolution.json")).unwrap(),
    )
    .unwrap()
}

fn load(model: &str, overrides: Option<&str>) -> Option<Hparams> {
    let path = reference_yaml(model);
    if !path.exists() {
        eprintln!("skipping: {} not present", path.display());
        return None;
    }
    Some(Hparams::from_file(&path, overrides).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn official_files_resolve_like_hyperpyyaml() {
    let want = expected();
    for model in [
        "spkrec-ecapa-voxceleb",
        "asr-crdnn-rnnlm-librispeech",
        "sepformer-wsj02mix",
    ] {
        let Some(hp) = load(model, None) else { return };
        println!("{model}: keys {:?}", hp.keys().collect::<Vec<_>>());
        let got = Json::Object(
            hp.values()
                .iter()
                .map(|(k, v)| (k.clone(), full_json(v)))
                .collect(),
        );
        let want = &want[model];
        for (k, w) in want.as_object().unwrap() {
            assert_eq!(&got[k], w, "{model}: key `{k}` differs from HyperPyYAML");
        }
        assert_eq!(
            got.as_object().unwrap().len(),
            want.as_object().unwrap().len(),
            "{model}: same keys"
        );
    }
}

#[test]
fn overrides_like_from_hparams() {
    let Some(hp) = load(
        "spkrec-ecapa-voxceleb",
        Some("n_mels: 40\npretrained_path: /models/ecapa\n"),
    ) else {
        return;
    };
    let want = &expected()["spkrec-ecapa-voxceleb+overrides"];
    for (k, w) in want.as_object().unwrap() {
        assert_eq!(&full_json(hp.get(k).unwrap()), w, "key `{k}`");
    }
    assert_eq!(
        hp.get("pretrainer[paths][embedding_model]")
            .unwrap()
            .as_str(),
        Some("/models/ecapa/embedding_model.ckpt")
    );
}

#[test]
fn typed_values_of_the_official_files() {
    let Some(ecapa) = load("spkrec-ecapa-voxceleb", None) else {
        return;
    };
    let emb = ecapa
        .object("embedding_model", "ECAPA_TDNN.ECAPA_TDNN")
        .unwrap();
    let channels: Vec<i64> = emb.kwargs["channels"]
        .as_list()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(channels, [1024, 1024, 1024, 1024, 3072]);
    assert_eq!(emb.kwargs["input_size"].as_i64(), Some(80));
    assert_eq!(ecapa.get("out_n_neurons").unwrap().as_i64(), Some(7205));
    assert_eq!(
        ecapa
            .get("modules[embedding_model]")
            .unwrap()
            .as_new()
            .unwrap()
            .id
            .as_deref(),
        Some("embedding_model"),
        "modules share the object defined at `embedding_model`"
    );

    let Some(asr) = load("asr-crdnn-rnnlm-librispeech", None) else {
        return;
    };
    assert_eq!(asr.get("beam_size").unwrap().as_i64(), Some(80));
    assert_eq!(asr.get("lm_weight").unwrap().as_f64(), Some(0.5));
    assert_eq!(asr.get("temperature").unwrap().as_f64(), Some(1.25));
    assert_eq!(
        asr.get("cnn_channels"),
        Some(&Value::Tuple(vec![Value::Int(128), Value::Int(256)]))
    );
    let dec = asr.object("decoder", "S2SRNNBeamSearcher").unwrap();
    assert_eq!(dec.kwargs["beam_size"].as_i64(), Some(80));
    assert_eq!(
        asr.get("enc[rnn_class]").unwrap().class_name(),
        Some("speechbrain.nnet.RNN.LSTM")
    );

    let Some(sep) = load("sepformer-wsj02mix", None) else {
        return;
    };
    let enc = sep.object("Encoder", "dual_path.Encoder").unwrap();
    assert_eq!(enc.kwargs["kernel_size"].as_i64(), Some(16));
    assert_eq!(sep.get("MaskNet[K]").unwrap().as_i64(), Some(250));
    assert_eq!(sep.get("SBtfintra[num_layers]").unwrap().as_i64(), Some(8));
    assert_eq!(sep.get("sample_rate").unwrap().as_i64(), Some(8000));
}
