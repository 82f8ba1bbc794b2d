//! Weighted mean and standard deviation over time in one pass per channel: the statistics
//! of ECAPA's attentive statistical pooling (`ECAPA_TDNN.AttentiveStatisticsPooling`), whose
//! masked softmax and two weighted sums candle would run as a dozen passes over `[B, C, L]`
//! (with libm's scalar `exp`). CPU, f32, eval only; the composed ops stay the reference.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use super::fastmath::{self, simd_dispatch};
use super::fused::f32_vec;

/// SpeechBrain's clamp of the variance before the square root.
const EPS: f32 = 1e-12;

/// `[B, 2C]`: per channel, the mean and std of `x` `[B, C, L]` over the first `valid[b]` frames,
/// weighted by `softmax(logits)` over those frames (`logits` `[B, C, L]`), or uniformly when
/// `logits` is `None`. `std = sqrt(max(sum w (x - mean)^2, 1e-12))`, as SpeechBrain.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use voxbrain::nnet::stats_pooling::weighted_mean_std;
/// let x = Tensor::new(&[[[1f32, 3.0, 100.0]]], &Device::Cpu).unwrap(); // B = C = 1, L = 3
/// let s = weighted_mean_std(&x, None, &[2]).unwrap(); // the padded 100 is ignored
/// assert_eq!(s.to_vec2::<f32>().unwrap(), vec![vec![2.0, 1.0]]);
/// ```
pub fn weighted_mean_std(x: &Tensor, logits: Option<&Tensor>, valid: &[usize]) -> Result<Tensor> {
    let (b, c, l) = x.dims3()?;
    if valid.len() != b || valid.iter().any(|&n| n == 0 || n > l) {
        candle_core::bail!("weighted_mean_std: valid frames {valid:?} for {b} sequences of {l}");
    }
    if let Some(g) = logits {
        if g.dims() != x.dims() {
            candle_core::bail!(
                "weighted_mean_std: logits {:?} vs x {:?}",
                g.dims(),
                x.dims()
            );
        }
    }
    let xs = f32_vec(x)?;
    let gs = logits.map(f32_vec).transpose()?;
    let mut out = vec![0f32; b * 2 * c];
    out.par_chunks_mut(2 * c).enumerate().for_each(|(bi, o)| {
        let (means, stds) = o.split_at_mut(c);
        let n = valid[bi];
        (means.par_iter_mut().zip(stds.par_iter_mut()))
            .enumerate()
            .with_min_len(64)
            .for_each(|(ci, (m, s))| {
                let row = (bi * c + ci) * l;
                let g = gs.as_ref().map(|g| &g[row..row + n]);
                (*m, *s) = row_stats(&xs[row..row + n], g);
            });
    });
    Tensor::from_vec(out, (b, 2 * c), x.device())
}

/// `softmax` over the last axis with a vectorised `exp` (candle's CPU softmax calls libm's
/// scalar `expf`; ~8% of a SepFormer's time). CPU f32 without autograd; elsewhere candle's.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[0f32, 0.0], [1.0, 1.0]], &Device::Cpu).unwrap();
/// let p = voxbrain::nnet::stats_pooling::softmax_last_dim(&x).unwrap();
/// assert_eq!(p.to_vec2::<f32>().unwrap(), vec![vec![0.5, 0.5], vec![0.5, 0.5]]);
/// ```
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.track_op() || x.rank() == 0 {
        return candle_nn::ops::softmax_last_dim(x);
    }
    let n = x.dim(candle_core::D::Minus1)?;
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    if n > 0 {
        v.par_chunks_mut(n).with_min_len(8).for_each(softmax_row);
    }
    Tensor::from_vec(v, x.shape(), x.device())
}

simd_dispatch!(fn softmax_row(row: &mut [f32]) => softmax_row_generic);

#[inline(always)]
fn softmax_row_generic(row: &mut [f32]) {
    let mut lane_max = [f32::NEG_INFINITY; L];
    let chunks = row.chunks_exact(L);
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        let c: &[f32; L] = c.try_into().unwrap();
        for l in 0..L {
            lane_max[l] = lane_max[l].max(c[l]);
        }
    }
    max = lane_max.iter().fold(max, |m, &v| m.max(v));
    for v in row.iter_mut() {
        *v = fastmath::exp(*v - max);
    }
    let inv = 1.0 / lanes_sum(row, row, |w, _| w);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

simd_dispatch!(fn row_stats(x: &[f32], logits: Option<&[f32]>) -> (f32, f32) => row_stats_generic);

const L: usize = 16;

/// `sum_t f(a[t], b[t])` in 16 independent lanes over fixed-size blocks, so that the loop
/// vectorises (no bounds checks or ordered float sum inside).
#[inline(always)]
fn lanes_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = (ac.remainder().iter().zip(bc.remainder()))
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (x, y) in ac.zip(bc) {
        let (x, y): (&[f32; L], &[f32; L]) = (x.try_into().unwrap(), y.try_into().unwrap());
        for l in 0..L {
            acc[l] += f(x[l], y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn row_stats_generic(x: &[f32], logits: Option<&[f32]>) -> (f32, f32) {
    let n = x.len();
    let (mean, var) = match logits {
        Some(g) => {
            let g = &g[..n];
            let mut lane_max = [f32::NEG_INFINITY; L];
            let gc = g.chunks_exact(L);
            let mut max = gc
                .remainder()
                .iter()
                .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            for c in gc {
                let c: &[f32; L] = c.try_into().unwrap();
                for l in 0..L {
                    lane_max[l] = lane_max[l].max(c[l]);
                }
            }
            max = lane_max.iter().fold(max, |m, &v| m.max(v));
            // Unnormalised softmax weights, then the sums divided by their total.
            let mut e = vec![0f32; n];
            let (ec, gc) = (e.chunks_exact_mut(L), g.chunks_exact(L));
            for (o, v) in ec.zip(gc) {
                let v: &[f32; L] = v.try_into().unwrap();
                for l in 0..L {
                    o[l] = fastmath::exp(v[l] - max);
                }
            }
            for t in n / L * L..n {
                e[t] = fastmath::exp(g[t] - max);
            }
            let inv = 1.0 / lanes_sum(&e, &e, |w, _| w);
            let mean = lanes_sum(&e, x, |w, v| w * v) * inv;
            let var = lanes_sum(&e, x, |w, v| w * (v - mean) * (v - mean)) * inv;
            (mean, var)
        }
        None => {
            let inv = 1.0 / n as f32;
            let mean = lanes_sum(x, x, |v, _| v) * inv;
            (mean, lanes_sum(x, x, |v, _| (v - mean) * (v - mean)) * inv)
        }
    };
    (mean, var.max(EPS).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn masked_softmax_statistics_match_f64() -> Result<()> {
        let (b, c, l) = (2usize, 5usize, 37usize);
        let x = Tensor::randn(0f32, 1.0, (b, c, l), &Device::Cpu)?;
        let g = (Tensor::randn(0f32, 1.0, (b, c, l), &Device::Cpu)? * 4.0)?;
        let valid = [l, l - 20];
        let (xs, gs) = (x.to_vec3::<f32>()?, g.to_vec3::<f32>()?);
        for logits in [Some(&g), None] {
            let got = weighted_mean_std(&x, logits, &valid)?.to_vec2::<f32>()?;
            for bi in 0..b {
                for ci in 0..c {
                    let n = valid[bi];
                    let xr: Vec<f64> = xs[bi][ci][..n].iter().map(|&v| v as f64).collect();
                    let w: Vec<f64> = match logits {
                        Some(_) => {
                            let gr = &gs[bi][ci][..n];
                            let m = gr.iter().fold(f32::MIN, |a, &v| a.max(v)) as f64;
                            let e: Vec<f64> = gr.iter().map(|&v| (v as f64 - m).exp()).collect();
                            let s: f64 = e.iter().sum();
                            e.iter().map(|v| v / s).collect()
                        }
                        None => vec![1.0 / n as f64; n],
                    };
                    let mean: f64 = w.iter().zip(&xr).map(|(w, x)| w * x).sum();
                    let var: f64 = w.iter().zip(&xr).map(|(w, x)| w * (x - mean).powi(2)).sum();
                    assert!((got[bi][ci] as f64 - mean).abs() < 1e-5);
                    assert!((got[bi][c + ci] as f64 - var.sqrt()).abs() < 1e-5);
                }
            }
        }
        assert!(weighted_mean_std(&x, None, &[l, 0]).is_err());
        Ok(())
    }

    #[test]
    fn softmax_matches_candle_and_masks_to_zero() -> Result<()> {
        let x = (Tensor::randn(0f32, 1.0, (3, 4, 37), &Device::Cpu)? * 5.0)?;
        let got = softmax_last_dim(&x)?;
        let want = candle_nn::ops::softmax_last_dim(&x)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        let m = Tensor::new(&[[1f32, f32::NEG_INFINITY, 1.0]], &Device::Cpu)?;
        assert_eq!(
            softmax_last_dim(&m)?.to_vec2::<f32>()?,
            vec![vec![0.5, 0.0, 0.5]]
        );
        Ok(())
    }
}
