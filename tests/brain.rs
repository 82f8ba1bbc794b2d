//! The Brain machinery without a model: optimizers against torch's update rules written out
//! by hand, the checkpointer's layout, keep/recover logic and crash safety, the epoch counter
//! and SpeechBrain's train_log.txt format.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use voxbrain::brain::checkpoints::{CheckpointError, Importance};
use voxbrain::brain::{Adam, Checkpointer, EpochCounter, NamedParam, Optimizer, Recoverable, Sgd};

fn param(v: &[f32]) -> (Var, Vec<NamedParam>) {
    let var = Var::new(v, &Device::Cpu).unwrap();
    (
        var.clone(),
        vec![NamedParam {
            name: "w".into(),
            var,
        }],
    )
}

fn t(v: &[f32]) -> Option<Tensor> {
    Some(Tensor::new(v, &Device::Cpu).unwrap())
}

#[test]
fn sgd_momentum_follows_torch() {
    // torch: buf = g (first step), then buf = m * buf + g; p -= lr * buf.
    let (w, p) = param(&[1.0, -2.0]);
    let mut sgd = Sgd::new(p, 0.1).with_momentum(0.9);
    sgd.step(&[t(&[1.0, 2.0])]).unwrap();
    sgd.step(&[t(&[0.5, -1.0])]).unwrap();
    let buf2 = [0.9 * 1.0 + 0.5, 0.9 * 2.0 - 1.0];
    let want = [
        1.0 - 0.1 * 1.0 - 0.1 * buf2[0],
        -2.0 - 0.1 * 2.0 - 0.1 * buf2[1],
    ];
    let got = w.to_vec1::<f32>().unwrap();
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
    // A parameter without a gradient is not touched (torch skips grad=None).
    sgd.step(&[None]).unwrap();
    assert_eq!(w.to_vec1::<f32>().unwrap(), got);
}

/// torch's Adam / AdamW update (weight decay 0.1, lr 0.01), written out in f64: `x` after
/// the steps with gradients `grads` (each multiplied by `scale`, as gradient clipping does),
/// and the first moment.
fn adam_reference(
    x0: &[f32],
    grads: &[Vec<f32>],
    scale: f64,
    decoupled: bool,
) -> (Vec<f64>, Vec<f64>) {
    let n = x0.len();
    let mut x: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
    let (mut m, mut v) = (vec![0f64; n], vec![0f64; n]);
    for (step, gs) in grads.iter().enumerate() {
        let k = step as i32 + 1;
        for i in 0..n {
            let mut gi = gs[i] as f64 * scale;
            if decoupled {
                x[i] *= 1.0 - 0.01 * 0.1;
            } else {
                gi += 0.1 * x[i];
            }
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.999 * v[i] + 0.001 * gi * gi;
            let denom = (v[i] / (1.0 - 0.999f64.powi(k))).sqrt() + 1e-8;
            x[i] -= 0.01 / (1.0 - 0.9f64.powi(k)) * m[i] / denom;
        }
    }
    (x, m)
}

/// Adam (or AdamW) with weight decay 0.1 at lr 0.01 over `x0`, stepped with `grads`.
fn run_adam(x0: &[f32], grads: &[Vec<f32>], scale: f64, decoupled: bool) -> (Var, Adam) {
    let (w, p) = param(x0);
    let mut opt = if decoupled {
        Adam::adamw(p, 0.01)
    } else {
        Adam::new(p, 0.01)
    };
    opt.weight_decay = 0.1;
    for gs in grads {
        opt.step_scaled(&[t(gs)], scale).unwrap();
    }
    (w, opt)
}

fn worst_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn adam_and_adamw_follow_torch() {
    let g = vec![vec![0.3f32, -1.2], vec![0.1, 0.4], vec![-0.5, 0.2]];
    for decoupled in [false, true] {
        let (w, opt) = run_adam(&[0.5, -0.25], &g, 1.0, decoupled);
        let (x, _) = adam_reference(&[0.5, -0.25], &g, 1.0, decoupled);
        let got = w.to_vec1::<f32>().unwrap();
        assert!(
            worst_diff(&got, &x) < 1e-6,
            "decoupled={decoupled}: {got:?} vs {x:?}"
        );
        // The state survives a save/load round trip.
        let state: std::collections::HashMap<String, Tensor> =
            opt.state_tensors().unwrap().into_iter().collect();
        let (_, p2) = param(&[0.0, 0.0]);
        let mut again = Adam::new(p2, 0.01);
        again.load_state(&state).unwrap();
        assert_eq!(again.state_tensors().unwrap().len(), state.len());
    }
}

/// torch 2.8.0's `torch.optim.Adam(lr=0.1, betas=(beta1, 0.999))` on CPU, three steps, its
/// state and weights printed as f64 (exact f32 values): the in-place update gives the same
/// values to a few ulps (torch's compiled kernels may fuse a product and a sum), for
/// beta1 = 0.9 and for 0.3 (where torch's `lerp_` takes its other form, `g - (g - m)(1 - w)`).
#[test]
fn adam_matches_torch_values() {
    let x0 = [1.0f32, -0.3, 0.77, 123.4, -5e-3];
    let grads = [
        [2.0f32, 0.1, -0.37, 0.5, 1e-3],
        [0.3, -1.7, 0.011, -7.1, 2e-2],
        [1.1, 0.25, -0.9, 3.3, -4e-4],
    ];
    let torch_v = [
        0.005291914567351341f64,
        0.002959590405225754,
        0.0009467472555115819,
        0.06149908900260925,
        4.0075801166494784e-07,
    ];
    #[allow(clippy::type_complexity)]
    let cases: [(f64, [f64; 5], [f64; 5]); 2] = [
        (
            0.3,
            [
                0.9589999914169312,
                -0.17570002377033234,
                -0.6509999632835388,
                0.8504998683929443,
                0.003983000293374062,
            ],
            [
                0.7774040102958679,
                -0.2751736640930176,
                1.018436312675476,
                123.38690948486328,
                -0.2506508231163025,
            ],
        ),
        (
            0.9,
            [
                0.29899999499320984,
                -0.11989999562501907,
                -0.11898000538349152,
                -0.26850003004074097,
                0.001841000048443675,
            ],
            [
                0.7396615743637085,
                -0.28512507677078247,
                1.012878179550171,
                123.39140319824219,
                -0.24141140282154083,
            ],
        ),
    ];
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    for (beta1, torch_m, torch_w) in cases {
        let (w, p) = param(&x0);
        let mut opt = Adam::new(p, 0.1);
        opt.betas = (beta1, 0.999);
        for g in &grads {
            opt.step(&[t(g)]).unwrap();
        }
        let state: std::collections::HashMap<String, Tensor> =
            opt.state_tensors().unwrap().into_iter().collect();
        let get = |k: &str| state[k].to_vec1::<f32>().unwrap();
        let close = |got: Vec<f32>, want: &[f64], what: &str| {
            for (a, b) in got.iter().zip(f32s(want)) {
                // A few f32 ulps (the moments cancel: -0.1757 = 0.3 (-1.169) + 0.7 (0.25)).
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs(),
                    "beta1 {beta1}, {what}: {got:?} vs {want:?}"
                );
            }
        };
        close(get("exp_avg.w"), &torch_m, "exp_avg");
        close(get("exp_avg_sq.w"), &torch_v, "exp_avg_sq");
        close(w.to_vec1::<f32>().unwrap(), &torch_w, "weights");
    }
}

/// The in-place host update over more values than one parallel chunk (2^15), with clipping.
#[test]
fn adam_in_place_follows_torch_over_many_values() {
    let n = 70_001;
    let val = |i: usize, k: f64| ((i as f64 * 0.618 + k).sin() * 2.0) as f32;
    let x0: Vec<f32> = (0..n).map(|i| val(i, 0.0)).collect();
    let g: Vec<Vec<f32>> = (1..=3)
        .map(|k| (0..n).map(|i| val(i, k as f64)).collect())
        .collect();
    for decoupled in [false, true] {
        let (w, opt) = run_adam(&x0, &g, 0.5, decoupled);
        let (x, m) = adam_reference(&x0, &g, 0.5, decoupled);
        let worst = worst_diff(&w.to_vec1::<f32>().unwrap(), &x);
        assert!(worst < 2e-6, "decoupled={decoupled}: worst {worst}");
        // The moments are kept for the checkpoint.
        let state = opt.state_tensors().unwrap();
        let avg = &state.iter().find(|(k, _)| k == "exp_avg.w").unwrap().1;
        assert!(worst_diff(&avg.to_vec1::<f32>().unwrap(), &m) < 1e-6);
    }
}

/// A recoverable holding one number, optionally failing after writing half a file.
struct Num(i64, bool);

impl Recoverable for Num {
    fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        if self.1 {
            std::fs::write(path, "12").unwrap();
            return Err(CheckpointError::Format(
                path.into(),
                "disk full (simulated)".into(),
            ));
        }
        std::fs::write(path, self.0.to_string()).map_err(|e| CheckpointError::Io(path.into(), e))
    }
    fn load(&mut self, path: &Path, _: bool) -> Result<(), CheckpointError> {
        self.0 = std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Ok(())
    }
}

fn meta(k: &str, v: f64) -> BTreeMap<String, serde_json::Value> {
    BTreeMap::from([(k.to_string(), serde_json::json!(v))])
}

#[test]
fn checkpointer_layout_keep_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let ck = Checkpointer::new(dir.path().join("save"));
    let mut saved = Vec::new();
    for (i, wer) in [(1, 30.0), (2, 10.0), (3, 20.0)] {
        let n = Num(i, false);
        let c = ck
            .save_and_keep_only(
                &[("n", &n)],
                &meta("WER", wer),
                true,
                1,
                &[Importance::Min("WER".into())],
                None,
            )
            .unwrap();
        saved.push(c);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SpeechBrain's layout: CKPT+<date>+<time>+NN with CKPT.yaml and one file per recoverable.
    let name = saved[2]
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        name.starts_with("CKPT+") && name.matches('+').count() == 3,
        "{name}"
    );
    let yaml = std::fs::read_to_string(saved[2].path.join("CKPT.yaml")).unwrap();
    assert!(
        yaml.contains("end-of-epoch: true")
            && yaml.contains("unixtime:")
            && yaml.contains("WER: 20"),
        "{yaml}"
    );
    // Kept: the newest (3) and the best WER (2); 1 deleted.
    let left: Vec<i64> = ck
        .find_checkpoints(None)
        .unwrap()
        .iter()
        .map(|c| {
            std::fs::read_to_string(c.paramfile("n"))
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(left, vec![3, 2]);
    let mut n = Num(0, false);
    let c = ck
        .recover_if_possible(&mut [("n", &mut n)], &Importance::Recency, None)
        .unwrap();
    assert_eq!((n.0, c.is_some()), (3, true));
    ck.recover_if_possible(&mut [("n", &mut n)], &Importance::Min("WER".into()), None)
        .unwrap();
    assert_eq!(n.0, 2);

    // A save that fails midway leaves no checkpoint and no temporary folder behind, and the
    // previous checkpoint is still the one recovered.
    let bad = Num(99, true);
    let e = ck
        .save_checkpoint(&[("n", &bad)], &BTreeMap::new(), true)
        .unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
    let entries: Vec<String> = std::fs::read_dir(dir.path().join("save"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries.len(), 2, "{entries:?}");
    ck.recover_if_possible(&mut [("n", &mut n)], &Importance::Recency, None)
        .unwrap();
    assert_eq!(n.0, 3);

    // A folder without CKPT.yaml (a save killed before its end) is not a checkpoint.
    std::fs::create_dir_all(dir.path().join("save/CKPT+2099-01-01+00-00-00+00")).unwrap();
    assert_eq!(ck.find_checkpoints(None).unwrap().len(), 2);
    // A recoverable whose file is missing is an error naming it.
    let mut other = Num(0, false);
    let e = ck
        .recover_if_possible(&mut [("other", &mut other)], &Importance::Recency, None)
        .unwrap_err();
    assert!(e.to_string().contains("`other`"), "{e}");
}

#[test]
fn epoch_counter_resumes_inside_an_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("counter.ckpt");
    let mut c = EpochCounter::new(3);
    c.next_epoch();
    c.next_epoch();
    c.save(&f).unwrap();
    let mut r = EpochCounter::new(3);
    r.load(&f, true).unwrap();
    assert_eq!(r.next_epoch(), Some(3));
    let mut r = EpochCounter::new(3);
    r.load(&f, false).unwrap();
    assert_eq!(
        r.next_epoch(),
        Some(2),
        "an intra-epoch checkpoint re-enters its epoch"
    );
}
