//! Pretrainer and from_hparams on a SpeechBrain-layout model directory; `voxbrain inspect`.

mod common;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use common::fixture;
use voxbrain::features::{InputNormalization, NormType};
use voxbrain::pretrained::{
    from_hparams, FromHparamsOptions, GenericModel, Loadable, Params, PretrainedError, Pretrainer,
};

fn model_dir() -> String {
    fixture("pretrained/model_dir")
        .to_str()
        .unwrap()
        .to_string()
}

/// The yaml's pretrainer paths point at a hub repo that does not exist; with the hub
/// unreachable and offline mode on, a local source must still load without any network.
fn offline_env() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
}

#[test]
fn local_source_wins_over_hub_paths_in_the_yaml() {
    offline_env();
    let save = tempfile::tempdir().unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(save.path().to_path_buf()),
        ..Default::default()
    };
    let model: GenericModel = from_hparams(&model_dir(), &opts).unwrap();
    assert_eq!(
        model.params.keys().collect::<Vec<_>>(),
        ["model", "normalizer"]
    );
    assert!(model
        .shapes("model")
        .contains(&("0.weight".to_string(), vec![6, 4, 3])));
    assert!(save.path().join("model.ckpt").is_file());
    assert!(save.path().join("normalizer.ckpt").is_file());
    assert!(!save.path().join("model.ckpt").is_symlink());
    // Trainable Vars were created from the checkpoint.
    let vm = &model.params["model"];
    assert_eq!(vm.all_vars().len(), 10);
}

#[test]
fn tutorial_style_pretrainer_loads_params_and_statistics() {
    let save = tempfile::tempdir().unwrap();
    let dir = model_dir();
    let mut pretrainer = Pretrainer::new(
        save.path(),
        ["model", "normalizer"],
        [
            ("model", format!("{dir}/model.ckpt")),
            ("normalizer", format!("{dir}/normalizer.ckpt")),
        ],
    );
    let collected = pretrainer.collect_files(None).unwrap().clone();
    assert_eq!(collected["model"], save.path().join("model.ckpt"));

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu).pp("model");
    let _ = vb.get((6, 4, 3), "0.weight").unwrap();
    let _ = vb.get(6, "0.bias").unwrap();
    for p in ["1.weight", "1.bias", "1.running_mean", "1.running_var"] {
        let _ = vb.get(6, p).unwrap();
    }
    let _ = vb.get((3, 5), "2.weight").unwrap();
    let _ = vb.get(3, "2.bias").unwrap();
    let _ = vb.get((7, 2), "3.weight").unwrap();
    let mut params = Params {
        varmap: &varmap,
        prefix: "model.".into(),
    };
    let mut norm = InputNormalization::new(NormType::Global);
    pretrainer
        .load_collected(&mut [
            ("model", &mut params as &mut dyn Loadable),
            ("normalizer", &mut norm),
        ])
        .unwrap();
    assert!(norm.statistics().1.is_some());
    let w = varmap.data().lock().unwrap()["model.3.weight"]
        .as_tensor()
        .clone();
    let want = voxbrain::pretrained::ckpt::read_ckpt(fixture("pretrained/sequential.ckpt"))
        .unwrap()
        .tensor("3.weight")
        .unwrap()
        .clone();
    assert_eq!(
        w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // Asking for a loadable that was not collected is an error naming it.
    let mut other = InputNormalization::new(NormType::Global);
    let err = pretrainer
        .load_collected(&mut [("tokenizer", &mut other as &mut dyn Loadable)])
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer"), "{err}");
}

#[test]
fn missing_files_are_named() {
    let save = tempfile::tempdir().unwrap();
    let dir = model_dir();
    let mut p = Pretrainer::new(
        save.path(),
        ["model"],
        [("model", format!("{dir}/absent.ckpt"))],
    );
    let err = p.collect_files(None).unwrap_err();
    assert!(matches!(err, PretrainedError::Fetch(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("absent.ckpt") && msg.contains("model_dir"),
        "{msg}"
    );
    let mut p = Pretrainer::new(save.path(), ["model"], Vec::<(&str, &str)>::new());
    let msg = p.collect_files(None).unwrap_err().to_string();
    assert!(
        msg.contains("model") && msg.contains("no default source"),
        "{msg}"
    );
    // from_hparams on a directory without hyperparams.yaml.
    let empty = tempfile::tempdir().unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(save.path().join("x")),
        ..Default::default()
    };
    let msg = from_hparams::<GenericModel>(empty.path().to_str().unwrap(), &opts)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("hyperparams.yaml"), "{msg}");
}

#[test]
fn inspect_prints_hparams_and_checkpoint_shapes() {
    let save = tempfile::tempdir().unwrap();
    let out = common::run_ok(
        common::voxbrain()
            .args(["inspect", "--source", &model_dir(), "--savedir"])
            .arg(save.path()),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hparams"]["model"], "torch.nn.Sequential");
    assert_eq!(
        v["hparams"]["pretrained_path"],
        "speechbrain/does-not-exist"
    );
    assert_eq!(
        v["checkpoints"]["model.ckpt"]["0.weight"],
        serde_json::json!([6, 4, 3])
    );
    assert_eq!(
        v["checkpoints"]["normalizer.ckpt"]["glob_mean"],
        serde_json::json!([40])
    );
}
