//! The SepFormer training loss against SpeechBrain 1.1.2 / torch 2.8.0
//! (tests/fixtures/separation_train/si_snr_pit.json, from
//! `make_fixtures.py separation_train`): `get_si_snr_with_pitwrapper`'s value per utterance, the
//! permutation it picks (2 and 3 sources, in order, swapped, rotated, partial mixtures) and
//! torch's gradient of the batch mean with respect to the estimates; and one SepFormer training
//! step (the small seeded model, train mode): the loss and every parameter's gradient.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{assert_close, fixture, npy};
use voxbrain::inference::separation::SepformerSeparation;
use voxbrain::nnet::losses::{get_si_snr_with_pitwrapper, pit_si_snr_loss};
use voxbrain::pretrained::FromHparamsOptions;

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cases() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("separation_train/si_snr_pit.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn pit_si_snr_loss_and_gradient_equal_speechbrain() {
    let all = cases();
    for (k, case) in all["cases"].as_array().unwrap().iter().enumerate() {
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let src =
            Tensor::from_vec(floats(&case["source"]), shape.as_slice(), &Device::Cpu).unwrap();
        let est = Var::from_tensor(
            &Tensor::from_vec(floats(&case["estimate"]), shape.as_slice(), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let (loss, perms) = pit_si_snr_loss(&src, est.as_tensor()).unwrap();
        let want_perms: Vec<Vec<usize>> = serde_json::from_value(case["perms"].clone()).unwrap();
        assert_eq!(perms, want_perms, "case {k}: permutations");
        let got = loss.to_vec1::<f32>().unwrap();
        let want = floats(&case["loss"]);
        println!("case {k}: loss {got:?} (SpeechBrain {want:?}), perms {perms:?}");
        assert_close(&format!("case {k} loss (dB)"), &got, &want, 2e-4, 1e-4);
        let grads = loss.mean_all().unwrap().backward().unwrap();
        let g = grads.get(&est).unwrap().flatten_all().unwrap();
        let g = g.to_vec1::<f32>().unwrap();
        let want_g = floats(&case["grad_mean"]);
        let scale = want_g.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = g
            .iter()
            .zip(&want_g)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("case {k}: gradient max |diff| {worst:.2e} (largest entry {scale:.2e})");
        assert!(
            worst <= 1e-3 * scale,
            "case {k}: gradient differs by {worst} (scale {scale})"
        );
    }
    // SpeechBrain's docstring example prints -loss = 135.2284 for each utterance.
    let x = Tensor::arange(0f32, 600., &Device::Cpu)
        .unwrap()
        .reshape((3, 100, 2))
        .unwrap();
    let swapped =
        Tensor::cat(&[x.narrow(2, 1, 1).unwrap(), x.narrow(2, 0, 1).unwrap()], 2).unwrap();
    let got = get_si_snr_with_pitwrapper(&x, &swapped)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want: Vec<f32> = floats(&all["docstring_example_si_snr"])
        .iter()
        .map(|v| -v)
        .collect();
    assert_close("docstring example", &got, &want, 1e-3, 1e-3);
}

#[test]
fn loss_ignores_scale_and_offset_and_rejects_bad_shapes() {
    let t = 400;
    let s: Vec<f32> = (0..t * 2)
        .map(|i| {
            let (n, c) = ((i / 2) as f32, i % 2);
            if c == 0 {
                (n * 0.07).sin()
            } else {
                (n * 0.013).cos() * 0.5 + (n * 0.21).sin() * 0.2
            }
        })
        .collect();
    let src = Tensor::from_vec(s, (1, t, 2), &Device::Cpu).unwrap();
    let noise = Tensor::randn(0f32, 0.05, (1, t, 2), &Device::Cpu).unwrap();
    let est = (&src + &noise).unwrap();
    let base = get_si_snr_with_pitwrapper(&src, &est)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    let moved = ((&est * 4.0).unwrap() + 0.3).unwrap();
    let other = get_si_snr_with_pitwrapper(&src, &moved)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    assert!(base < -10.0, "a close estimate has a low loss: {base}");
    assert!((base - other).abs() < 1e-3, "{base} vs {other}");
    let err = get_si_snr_with_pitwrapper(&src, &est.narrow(1, 0, 10).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("same [batch, time, sources] shape"),
        "{err}"
    );
}

#[test]
fn sepformer_training_step_equals_speechbrain() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let save = tempfile::tempdir().unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(save.path().to_path_buf()),
        ..Default::default()
    };
    let dir = fixture("separation/model_small");
    let mut sep = SepformerSeparation::from_hparams(dir.to_str().unwrap(), &opts).unwrap();
    sep.model_mut().set_train(true);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("separation_train/sepformer_step.json")).unwrap(),
    )
    .unwrap();
    let mix = npy("separation_train/sepformer_step_mix.npy");
    let src = npy("separation_train/sepformer_step_sources.npy");
    let n = mix.data.len();
    let mix = Tensor::from_vec(mix.data, (1, n), &Device::Cpu).unwrap();
    let src = Tensor::from_vec(src.data, (1, n, 2), &Device::Cpu).unwrap();
    let est = sep.model().forward(&mix).unwrap(); // [1, T, 2]
    let loss = get_si_snr_with_pitwrapper(&src, &est)
        .unwrap()
        .mean_all()
        .unwrap();
    let got = loss.to_scalar::<f32>().unwrap() as f64;
    let want = meta["loss"].as_f64().unwrap();
    println!("SepFormer step loss {got:.6} (SpeechBrain {want:.6})");
    assert!(
        (got - want).abs() < 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );

    let grads = loss.backward().unwrap();
    let all = npy("separation_train/sepformer_step_grads.npy").data;
    let vars = sep.model().varmap().data().lock().unwrap();
    let (mut worst, mut worst_name) = (0f64, String::new());
    let names = meta["names"].as_array().unwrap();
    for (k, name) in names.iter().enumerate() {
        let name = name.as_str().unwrap();
        let off = meta["offsets"][k].as_u64().unwrap() as usize;
        let len: usize = meta["shapes"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .product();
        let want = &all[off..off + len];
        let var = vars
            .get(name)
            .unwrap_or_else(|| panic!("voxbrain has no parameter {name}"));
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g.len(), len, "{name}");
        // Relative to the parameter's gradient norm: entries that cancel to ~0 stay meaningful.
        let norm = want.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let err = g
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let rel = err / norm.max(1e-12);
        if rel > worst {
            (worst, worst_name) = (rel, name.to_string());
        }
    }
    println!(
        "{} parameter gradients; worst relative error {worst:.2e} ({worst_name})",
        names.len()
    );
    assert_eq!(
        names.len(),
        vars.iter()
            .filter(|(n, _)| !n.ends_with("pos_enc.pe"))
            .count()
    );
    assert!(
        worst < 1e-3,
        "{worst_name}: relative gradient error {worst}"
    );
}
