//! Fresh parameters as PyTorch initialises them, for training from scratch (candle's
//! `VarBuilder` starts every variable at zero). The default rule is torch's for Conv/Linear:
//! weights uniform in `±1/sqrt(fan_in)` (`kaiming_uniform_(a=sqrt(5))`) and each bias uniform
//! with its weight's bound; 1-D tensors without a weight are zero. A model family overrides
//! the rule for its own parameters (norms, RNNs, embeddings, attention) through a closure.
//! Seeded: the same seed gives the same values, whatever the `VarMap`'s order.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How one parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Leave it as it is (e.g. a fixed positional table).
    Keep,
    /// Every value the same.
    Constant(f32),
    /// Uniform in `±bound`.
    Uniform(f64),
    /// Normal with mean 0 and this standard deviation (`nn.Embedding`'s default: 1).
    Normal(f64),
    /// `nn.init.orthogonal_` (SpeechBrain's `rnn_init` for recurrent weights): the first
    /// `min(rows, cols)` orthonormal vectors of a Gaussian matrix's QR, signs fixed by `R`'s
    /// diagonal.
    Orthogonal,
    /// torch's Conv/Linear rule (see the module docs).
    Default,
}

/// torch's `fan_in` of a weight: every dimension after the first (input channels times the
/// kernel; for ConvTranspose1d's `[in, out, k]` that is `out * k`, as torch computes it).
pub fn fan_in(shape: &[usize]) -> usize {
    shape[1..].iter().product::<usize>().max(1)
}

/// Re-initialises every variable of `varmap` by `rule(name, shape)`, drawing from `seed`.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::{VarBuilder, VarMap};
/// use voxbrain::nnet::init::{init_varmap, Init};
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let lin = voxbrain::nnet::linear::Linear::new(16, 4, true, vb.pp("lin"))?;
/// init_varmap(&vm, 0, |_, _| Init::Default)?;
/// # let _ = lin;
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn init_varmap(
    varmap: &VarMap,
    seed: u64,
    rule: impl Fn(&str, &[usize]) -> Init,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Poisoned only if another thread panicked holding it: then panicking is right.
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort(); // HashMap order is random: sort for a reproducible draw order
    for name in names {
        let var = &data[name];
        let shape = var.dims().to_vec();
        let n: usize = shape.iter().product();
        let mut init = rule(name, &shape);
        if init == Init::Default {
            init = if shape.len() >= 2 {
                Init::Uniform(1.0 / (fan_in(&shape) as f64).sqrt())
            } else {
                // A bias: torch's bound comes from its layer's weight.
                let weight = name
                    .strip_suffix("bias")
                    .map(|p| format!("{p}weight"))
                    .and_then(|w| data.get(&w).map(|v| v.dims().to_vec()));
                match weight {
                    Some(w) if w.len() >= 2 => Init::Uniform(1.0 / (fan_in(&w) as f64).sqrt()),
                    _ => Init::Constant(0.0),
                }
            };
        }
        let values: Vec<f32> = match init {
            Init::Keep => continue,
            Init::Default => unreachable!("resolved above"),
            Init::Constant(v) => vec![v; n],
            Init::Uniform(bound) => (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect(),
            Init::Normal(std) => (0..n).map(|_| (gaussian(&mut rng) * std) as f32).collect(),
            Init::Orthogonal => orthogonal(&shape, &mut rng),
        };
        var.set(&Tensor::from_vec(values, shape.as_slice(), var.device())?)?;
    }
    Ok(())
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; 1 - u keeps the logarithm finite.
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// torch's `orthogonal_` on a `[rows, rest...]` tensor, flattened to `rows x cols`.
fn orthogonal(shape: &[usize], rng: &mut ChaCha8Rng) -> Vec<f32> {
    let rows = shape.first().copied().unwrap_or(1);
    let cols: usize = shape.iter().skip(1).product::<usize>().max(1);
    // QR of the tall orientation; transpose back when rows < cols.
    let (r, c) = if rows < cols {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let g = nalgebra::DMatrix::<f64>::from_fn(r, c, |_, _| gaussian(rng));
    let qr = g.qr();
    let (mut q, rr) = (qr.q(), qr.r());
    for j in 0..c {
        if rr[(j, j)] < 0.0 {
            q.column_mut(j).neg_mut();
        }
    }
    let q = if rows < cols { q.transpose() } else { q };
    // Row-major `rows x cols`.
    (0..rows)
        .flat_map(|i| (0..cols).map(move |j| (i, j)))
        .map(|(i, j)| q[(i, j)] as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    #[test]
    fn rules_apply_and_are_seeded() -> Result<()> {
        let make = || -> Result<VarMap> {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            vb.get((8, 25), "lin.weight")?;
            vb.get(8, "lin.bias")?;
            vb.get((12, 4), "rnn.weight_hh")?;
            vb.get((3, 2), "emb.weight")?;
            vb.get(5, "norm.weight")?;
            Ok(vm)
        };
        let rule = |name: &str, _: &[usize]| match name {
            "rnn.weight_hh" => Init::Orthogonal,
            "emb.weight" => Init::Normal(1.0),
            "norm.weight" => Init::Constant(1.0),
            _ => Init::Default,
        };
        let (a, b) = (make()?, make()?);
        init_varmap(&a, 3, rule)?;
        init_varmap(&b, 3, rule)?;
        let get = |vm: &VarMap, k: &str| -> Result<Vec<f32>> {
            vm.data().lock().unwrap()[k]
                .as_tensor()
                .flatten_all()?
                .to_vec1()
        };
        for k in ["lin.weight", "lin.bias", "rnn.weight_hh", "emb.weight"] {
            assert_eq!(get(&a, k)?, get(&b, k)?, "{k}: seeded");
        }
        let w = get(&a, "lin.weight")?;
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= 0.2 && max > 0.15, "fan_in 25: bound 0.2, got {max}");
        let bias = get(&a, "lin.bias")?;
        assert!(bias.iter().all(|v| v.abs() <= 0.2) && bias.iter().any(|&v| v != 0.0));
        assert_eq!(get(&a, "norm.weight")?, vec![1.0; 5]);
        // Orthogonal [12, 4]: the 4 columns are orthonormal.
        let q = get(&a, "rnn.weight_hh")?;
        for i in 0..4 {
            for j in 0..4 {
                let dot: f32 = (0..12).map(|r| q[r * 4 + i] * q[r * 4 + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-5, "columns {i},{j}: {dot}");
            }
        }
        let e = get(&a, "emb.weight")?;
        assert!(e.iter().any(|v| v.abs() > 0.3), "normal draws: {e:?}");
        Ok(())
    }
}
