//! Checkpoints: reading torch.save output, filling a VarMap, reporting mismatches, writing.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::fixture;
use voxbrain::pretrained::ckpt::{
    load_state_dict, read_ckpt, read_shapes, save_ckpt, save_safetensors, save_state_dict,
    CkptError, LoadOptions,
};

fn reference_values() -> (serde_json::Value, Vec<f64>) {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("pretrained/sequential_index.json")).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(fixture("pretrained/sequential_values.npy")).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    (index, npy.into_vec::<f64>().unwrap())
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn torch_saved_state_dict_loads_tensor_by_tensor() {
    let ckpt = read_ckpt(fixture("pretrained/sequential.ckpt")).unwrap();
    let (index, values) = reference_values();
    for (key, info) in index.as_object().unwrap() {
        let t = ckpt.tensor(key).unwrap_or_else(|| panic!("missing {key}"));
        let shape: Vec<usize> = info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.dims(), shape.as_slice(), "{key}");
        let off = info["offset"].as_u64().unwrap() as usize;
        let n: usize = shape.iter().product();
        assert_eq!(as_f64(t), values[off..off + n].to_vec(), "{key} values");
        if info["dtype"] == "int64" {
            assert_eq!(t.dtype(), DType::I64, "{key}");
        }
    }
    assert_eq!(ckpt.tensors.len(), index.as_object().unwrap().len());
    let shapes = read_shapes(fixture("pretrained/sequential.ckpt")).unwrap();
    assert!(shapes.contains(&("0.weight".to_string(), vec![6, 4, 3])));
}

/// Builds parameters named like the torch Sequential (Conv1d, BatchNorm1d, Linear, Embedding).
fn build(varmap: &VarMap, conv_out: usize, with_linear_bias: bool) {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
    let _ = vb.get((conv_out, 4, 3), "0.weight").unwrap();
    let _ = vb.get(conv_out, "0.bias").unwrap();
    for p in ["1.weight", "1.bias", "1.running_mean", "1.running_var"] {
        let _ = vb.get(6, p).unwrap();
    }
    let _ = vb.get((3, 5), "2.weight").unwrap();
    if with_linear_bias {
        let _ = vb.get(3, "2.bias").unwrap();
    }
    let _ = vb.get((7, 2), "3.weight").unwrap();
}

#[test]
fn state_dict_fills_a_varmap() {
    let ckpt = read_ckpt(fixture("pretrained/sequential.ckpt")).unwrap();
    let varmap = VarMap::new();
    build(&varmap, 6, true);
    let report =
        load_state_dict(&varmap, &ckpt, "sequential.ckpt", &LoadOptions::strict()).unwrap();
    assert!(report.is_clean(), "{report}");
    let data = varmap.data().lock().unwrap();
    assert_eq!(
        as_f64(data["1.running_var"].as_tensor()),
        as_f64(ckpt.tensor("1.running_var").unwrap())
    );
}

#[test]
fn mismatches_are_reported_all_at_once_and_nothing_changes() {
    let ckpt = read_ckpt(fixture("pretrained/sequential.ckpt")).unwrap();
    let varmap = VarMap::new();
    build(&varmap, 8, false); // wrong conv shape, no linear bias
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let _ = vb.get(2, "extra.weight").unwrap();
    let before = as_f64(varmap.data().lock().unwrap()["1.weight"].as_tensor());
    let err =
        load_state_dict(&varmap, &ckpt, "sequential.ckpt", &LoadOptions::strict()).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    let CkptError::StateDict(report) = err else {
        panic!("{msg}")
    };
    assert_eq!(report.missing, vec!["extra.weight".to_string()]);
    assert_eq!(report.unexpected, vec!["2.bias".to_string()]);
    assert_eq!(report.mismatched.len(), 2);
    assert!(msg.contains("0.weight") && msg.contains("[8, 4, 3]") && msg.contains("[6, 4, 3]"));
    assert!(msg.contains("sequential.ckpt"));
    assert_eq!(
        as_f64(varmap.data().lock().unwrap()["1.weight"].as_tensor()),
        before
    );
}

#[test]
fn prefix_selects_a_module() {
    let ckpt = read_ckpt(fixture("pretrained/sequential.ckpt")).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let _ = vb.get((7, 2), "emb.3.weight").unwrap();
    let _ = vb.get(3, "other.bias").unwrap();
    let opts = LoadOptions {
        prefix: Some("emb.".into()),
        strict: false,
    };
    let report = load_state_dict(&varmap, &ckpt, "x", &opts).unwrap();
    assert!(report.missing.is_empty());
    assert!(report.unexpected.contains(&"0.weight".to_string()));
}

#[test]
fn written_checkpoints_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = read_ckpt(fixture("pretrained/sequential.ckpt")).unwrap();
    let tensors: Vec<(String, Tensor)> = ckpt
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for name in ["rt.ckpt", "rt.safetensors"] {
        let p = dir.path().join(name);
        if name.ends_with("ckpt") {
            save_ckpt(&p, &tensors).unwrap();
        } else {
            save_safetensors(&p, &tensors).unwrap();
        }
        let back = read_ckpt(&p).unwrap();
        assert_eq!(back.tensors.len(), tensors.len(), "{name}");
        for (k, t) in &tensors {
            let b = back.tensor(k).unwrap();
            assert_eq!(b.dims(), t.dims(), "{name} {k}");
            assert_eq!(b.dtype(), t.dtype(), "{name} {k}");
            assert_eq!(as_f64(b), as_f64(t), "{name} {k}");
        }
    }
    // A VarMap saved in SpeechBrain's layout loads into a fresh VarMap.
    let varmap = VarMap::new();
    build(&varmap, 6, true);
    load_state_dict(&varmap, &ckpt, "x", &LoadOptions::strict()).unwrap();
    let p = dir.path().join("model.ckpt");
    save_state_dict(&varmap, None, &p).unwrap();
    let again = VarMap::new();
    build(&again, 6, true);
    let back = read_ckpt(&p).unwrap();
    let report = load_state_dict(&again, &back, &p, &LoadOptions::strict()).unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn corrupt_and_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("corrupt.ckpt");
    let mut bytes = std::fs::read(fixture("pretrained/sequential.ckpt")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&bad, &bytes).unwrap();
    let msg = read_ckpt(&bad).unwrap_err().to_string();
    assert!(msg.contains("corrupt.ckpt"), "{msg}");
    let text = dir.path().join("notes.ckpt");
    std::fs::write(&text, "hello").unwrap();
    let msg = read_ckpt(&text).unwrap_err().to_string();
    assert!(msg.contains("notes.ckpt"), "{msg}");
    let msg = read_ckpt(dir.path().join("nope.ckpt"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope.ckpt"), "{msg}");
}
