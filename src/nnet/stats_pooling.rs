//! Weighted mean and standard deviation over time in one pass per channel: the statistics
//! of ECAPA's attentive statistical pooling (`ECAPA_TDNN.AttentiveStatisticsPooling`), whose
//! masked softmax and two weighted sums candle would run as a dozen passes over `[B, C, L]`
//! (with libm's scalar `exp`). CPU, f32, eval only; the composed ops stay the reference.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::gemm::HostData;
use crate::fastmath::{self, lanes_max, lanes_sum, simd_dispatch};

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
    // Borrowed, not copied: `[B, C, L]` twice (ECAPA: 3072 channels x 100 frames a second).
    let xs = HostData::new(x)?;
    let xs = xs.slice();
    let gs = logits.map(HostData::new).transpose()?;
    let gs = gs.as_ref().map(|g| g.slice());
    let mut out = vec![0f32; b * 2 * c];
    out.par_chunks_mut(2 * c).enumerate().for_each(|(bi, o)| {
        let (means, stds) = o.split_at_mut(c);
        let n = valid[bi];
        (means.par_iter_mut().zip(stds.par_iter_mut()))
            .enumerate()
            .with_min_len(64)
            .for_each(|(ci, (m, s))| {
                let row = (bi * c + ci) * l;
                let g = gs.map(|g| &g[row..row + n]);
                (*m, *s) = row_stats(&xs[row..row + n], g);
            });
    });
    Tensor::from_vec(out, (b, 2 * c), x.device())
}

simd_dispatch!(fn row_stats(x: &[f32], logits: Option<&[f32]>) -> (f32, f32) => row_stats_generic);

#[inline(always)]
fn row_stats_generic(x: &[f32], logits: Option<&[f32]>) -> (f32, f32) {
    let n = x.len();
    let (mean, var) = match logits {
        Some(g) => {
            let g = &g[..n];
            let max = lanes_max(g);
            // Unnormalised softmax weights, then the sums divided by their total.
            let e: Vec<f32> = g.iter().map(|&v| fastmath::exp(v - max)).collect();
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
}
