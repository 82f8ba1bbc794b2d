//! `nll_loss` and `ctc_loss` against SpeechBrain 1.1.2 / torch 2.8.0 values
//! (tests/fixtures/finetune/losses.json) and against independent references (brute-force CTC
//! alignment sums, finite differences).

mod common;

use candle_core::{DType, Device, Tensor, Var, D};
use common::{fixture, npy};
use voxbrain::nnet::losses::{ctc_loss, nll_loss, Reduction};

fn json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("finetune/losses.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensor(rel: &str) -> Tensor {
    let a = npy(rel);
    Tensor::from_vec(a.data, a.shape, &Device::Cpu).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().map_or(f32::INFINITY, |f| f as f32))
        .collect()
}

fn ids(v: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<u32>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let (b, s) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, s), &Device::Cpu).unwrap()
}

fn rel_err(a: f32, b: f32) -> f32 {
    (a - b).abs() / b.abs().max(1e-6)
}

#[test]
fn nll_loss_matches_speechbrain() {
    let j = &json()["nll"];
    let lp = tensor(&format!("finetune/{}", j["log_probs"].as_str().unwrap()));
    let y = ids(&j["targets"]);
    let lens = Tensor::new(floats(&j["lengths"]).as_slice(), &Device::Cpu).unwrap();
    for case in j["cases"].as_array().unwrap() {
        let ls = case["label_smoothing"].as_f64().unwrap();
        let red: Reduction = case["reduction"].as_str().unwrap().parse().unwrap();
        let got = nll_loss(&lp, &y, Some(&lens), ls, red).unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        let want = match &case["value"] {
            v if v.is_array() => floats(v),
            v => vec![v.as_f64().unwrap() as f32],
        };
        for (g, w) in got.iter().zip(&want) {
            assert!(rel_err(*g, *w) < 1e-5, "{case}: got {g}, SpeechBrain {w}");
        }
    }
    // Gradient of the label-smoothed batchmean loss w.r.t. the log-probabilities.
    let var = Var::from_tensor(&lp).unwrap();
    let loss = nll_loss(var.as_tensor(), &y, Some(&lens), 0.1, Reduction::BatchMean).unwrap();
    let g = loss.backward().unwrap();
    let g = g.get(var.as_tensor()).unwrap().flatten_all().unwrap();
    let want = npy(&format!("finetune/{}", j["grad"]["file"].as_str().unwrap()));
    common::assert_close(
        "nll grad",
        &g.to_vec1::<f32>().unwrap(),
        &want.data,
        1e-6,
        1e-7,
    );
}

#[test]
fn ctc_loss_matches_torch_with_zero_infinity() {
    let j = &json()["ctc"];
    let logits = tensor(&format!("finetune/{}", j["logits"].as_str().unwrap()));
    let y = ids(&j["targets"]);
    let tl = Tensor::new(floats(&j["target_lens"]).as_slice(), &Device::Cpu).unwrap();
    let blank = j["blank_index"].as_u64().unwrap() as usize;
    for case in j["cases"].as_array().unwrap() {
        let il = Tensor::new(floats(&case["input_lens"]).as_slice(), &Device::Cpu).unwrap();
        let var = Var::from_tensor(&logits).unwrap();
        let lp = candle_nn::ops::log_softmax(var.as_tensor(), D::Minus1).unwrap();
        let batch = ctc_loss(&lp, &y, &il, &tl, blank, Reduction::Batch).unwrap();
        let got: Vec<f32> = batch.to_vec1().unwrap();
        for (g, w) in got.iter().zip(floats(&case["batch"])) {
            assert!(
                (g - w).abs() < 1e-4 * w.abs().max(1.0),
                "{}: batch {g} vs {w}",
                case["name"]
            );
        }
        let bm = ctc_loss(&lp, &y, &il, &tl, blank, Reduction::BatchMean).unwrap();
        let want = case["batchmean"].as_f64().unwrap() as f32;
        assert!(rel_err(bm.to_scalar::<f32>().unwrap(), want) < 1e-5);
        let mean = ctc_loss(&lp, &y, &il, &tl, blank, Reduction::Mean).unwrap();
        let want = case["mean"].as_f64().unwrap() as f32;
        assert!(
            rel_err(mean.to_scalar::<f32>().unwrap(), want) < 1e-5,
            "{}",
            case["name"]
        );
        let grads = mean.backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap();
        let want = npy(&format!(
            "finetune/{}",
            case["grad_mean_wrt_logits"].as_str().unwrap()
        ));
        common::assert_close(
            "ctc grad",
            &g.to_vec1::<f32>().unwrap(),
            &want.data,
            1e-5,
            1e-6,
        );
    }
}

/// Sum over every alignment path of length T (brute force) for a tiny case.
fn brute_force_nll(lp: &[Vec<f64>], labels: &[usize], blank: usize) -> f64 {
    let (t, c) = (lp.len(), lp[0].len());
    let mut total = 0f64;
    let mut path = vec![0usize; t];
    loop {
        // Collapse repeats, drop blanks.
        let mut out = Vec::new();
        let mut prev = usize::MAX;
        for &k in &path {
            if k != prev && k != blank {
                out.push(k);
            }
            prev = k;
        }
        if out == labels {
            total += path
                .iter()
                .enumerate()
                .map(|(i, &k)| lp[i][k])
                .sum::<f64>()
                .exp();
        }
        let mut i = 0;
        loop {
            if i == t {
                return -total.ln();
            }
            path[i] += 1;
            if path[i] < c {
                break;
            }
            path[i] = 0;
            i += 1;
        }
    }
}

#[test]
fn ctc_equals_brute_force_and_finite_differences() {
    let dev = Device::Cpu;
    let (t, c) = (5usize, 3usize);
    let raw: Vec<f32> = (0..t * c)
        .map(|i| ((i * 7919 % 23) as f32 / 11.0) - 1.0)
        .collect();
    let logits = Tensor::from_vec(raw.clone(), (1, t, c), &dev).unwrap();
    let labels = [1u32, 1, 2]; // a repeat needs a blank between
    let y = Tensor::new(&[labels], &dev).unwrap();
    let one = Tensor::new(&[1f32], &dev).unwrap();
    let loss_of = |x: &Tensor| -> f64 {
        let lp = candle_nn::ops::log_softmax(x, D::Minus1).unwrap();
        ctc_loss(&lp, &y, &one, &one, 0, Reduction::None)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0] as f64
    };
    let lp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F64).unwrap(), D::Minus1).unwrap();
    let lp: Vec<Vec<f64>> = lp.squeeze(0).unwrap().to_vec2().unwrap();
    let want = brute_force_nll(&lp, &[1, 1, 2], 0);
    let got = loss_of(&logits);
    assert!((got - want).abs() < 1e-5, "ctc {got} vs brute force {want}");

    let var = Var::from_tensor(&logits).unwrap();
    let lpv = candle_nn::ops::log_softmax(var.as_tensor(), D::Minus1).unwrap();
    let loss = ctc_loss(&lpv, &y, &one, &one, 0, Reduction::Batch)
        .unwrap()
        .sum_all()
        .unwrap();
    let g: Vec<f32> = loss
        .backward()
        .unwrap()
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let eps = 1e-3f32;
    for i in 0..t * c {
        let bump = |d: f32| {
            let mut v = raw.clone();
            v[i] += d;
            loss_of(&Tensor::from_vec(v, (1, t, c), &dev).unwrap())
        };
        // Batch reduction divides by the target length (3).
        let fd = (bump(eps) - bump(-eps)) / (2.0 * eps as f64) / 3.0;
        assert!(
            (g[i] as f64 - fd).abs() < 2e-3,
            "grad[{i}] {} vs finite difference {fd}",
            g[i]
        );
    }
}

#[test]
fn impossible_alignment_is_zero_and_bad_ids_are_errors() {
    let dev = Device::Cpu;
    let lp = candle_nn::ops::log_softmax(
        &Tensor::zeros((1, 2, 4), DType::F32, &dev).unwrap(),
        D::Minus1,
    )
    .unwrap();
    let one = Tensor::new(&[1f32], &dev).unwrap();
    // Three labels (with a repeat) cannot fit in two frames: zero_infinity gives 0.
    let y = Tensor::new(&[[1u32, 1, 2]], &dev).unwrap();
    let l = ctc_loss(&lp, &y, &one, &one, 0, Reduction::None).unwrap();
    assert_eq!(l.to_vec1::<f32>().unwrap(), vec![0.0]);
    let y = Tensor::new(&[[9u32]], &dev).unwrap();
    let e = ctc_loss(&lp, &y, &one, &one, 0, Reduction::None).unwrap_err();
    assert!(e.to_string().contains("target id 9"), "{e}");
    let y = Tensor::new(&[[0u32, 9]], &dev).unwrap();
    let e = nll_loss(&lp, &y, None, 0.0, Reduction::Mean).unwrap_err();
    assert!(e.to_string().contains("target id 9"), "{e}");
}
