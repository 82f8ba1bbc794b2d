//! Dropout with seeded masks.
//!
//! candle's CPU `Tensor::rand` (behind `candle_nn::ops::dropout`) draws from an unseeded
//! thread RNG, so two training runs with the same `seed` drew different masks and did not
//! repeat. SpeechBrain's `seed` seeds torch's generator, which its dropout draws from. Here
//! the masks come from one ChaCha8 stream per training step, keyed by the seed, the epoch and
//! the step: a run repeats with its seed, and a run resumed from an intra-epoch checkpoint
//! draws the masks the uninterrupted run drew at the same steps.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// The seed set by [`seed_dropout`].
static SEED: AtomicU64 = AtomicU64::new(0);
thread_local! {
    /// The stream masks are drawn from, per thread (a training loop runs its forward passes
    /// on one thread); `None` until the first mask or re-keying.
    static STREAM: RefCell<Option<ChaCha8Rng>> = const { RefCell::new(None) };
}

fn stream(seed: u64, epoch: u64, step: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Epochs and steps stay far below 2^32: each (epoch, step) gets its own stream.
    rng.set_stream((epoch << 32) | (step & 0xffff_ffff));
    rng
}

/// Seeds dropout's masks (the recipes pass their yaml's `seed`) and restarts the calling
/// thread's stream.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use voxbrain::nnet::{dropout::seed_dropout, Dropout};
/// let x = Tensor::ones((4, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
/// let drop = Dropout { p: 0.5 };
/// seed_dropout(7);
/// let a = drop.forward(&x, true).unwrap().to_vec2::<f32>().unwrap();
/// seed_dropout(7);
/// let b = drop.forward(&x, true).unwrap().to_vec2::<f32>().unwrap();
/// assert_eq!(a, b);
/// ```
pub fn seed_dropout(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
    set(stream(seed, 0, 0));
}

/// Re-keys the masks to one training step (the `Brain`'s loop calls it before each batch):
/// from here the masks depend on the seed, `epoch`, `step` and the order of the dropout
/// layers in the step only.
pub fn dropout_step(epoch: u64, step: u64) {
    set(stream(SEED.load(Ordering::Relaxed), epoch, step));
}

fn set(rng: ChaCha8Rng) {
    STREAM.with(|s| *s.borrow_mut() = Some(rng));
}

/// A dropout mask of `n` values: 0 with probability `p`, else `1 / (1 - p)` (as
/// `candle_nn::ops::dropout` and torch scale the kept values). Drawn in parallel chunks, each
/// from a copy of the stream moved to the chunk's word position: the same values as one
/// draw after the other, and the stream ends `n` words on either way.
fn mask(n: usize, p: f32) -> Vec<f32> {
    const CHUNK: usize = 1 << 14;
    let scale = 1.0 / (1.0 - p);
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        let rng = s.get_or_insert_with(|| stream(SEED.load(Ordering::Relaxed), 0, 0));
        let base = rng.get_word_pos();
        let mut out = vec![0f32; n];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(k, c)| {
            let mut r = rng.clone();
            r.set_word_pos(base + (k * CHUNK) as u128);
            // One 32-bit word per value (rand's f32 from `next_u32`).
            for v in c {
                *v = if r.random::<f32>() >= p { scale } else { 0.0 };
            }
        });
        rng.set_word_pos(base + n as u128);
        out
    })
}

/// Dropout that is the identity in eval mode (SpeechBrain's inference mode) and drops with
/// probability `p` in training mode, its masks drawn from the seeded stream of
/// this module (kept values scaled by `1 / (1 - p)`, as torch does).
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    /// Drop probability.
    pub p: f32,
}

impl Dropout {
    /// Applies dropout when `train` is true and `p > 0`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && self.p > 0.0 {
            apply(x, self.p)
        } else {
            Ok(x.clone())
        }
    }
}

/// SpeechBrain's `Dropout2d` (CRDNN's CNN blocks) on `[B, T, F, C]`: SpeechBrain moves time
/// last (`[B, F, C, T]`) and applies torch's `Dropout2d`, which zeroes whole planes of its
/// second axis, so each utterance loses whole frequency bins, at every time and channel (kept
/// values scaled by `1 / (1 - p)`). The identity in eval mode.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use voxbrain::nnet::dropout::Dropout2d;
/// let x = Tensor::ones((2, 50, 8, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
/// let y = Dropout2d { p: 0.5 }.forward(&x, true).unwrap();
/// // Each utterance's bin is all kept (2.0) or all dropped over its 50 frames and 4 channels.
/// let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
/// for plane in 0..2 * 8 {
///     let (b, f) = (plane / 8, plane % 8);
///     let first = v[(b * 50 * 8 + f) * 4];
///     assert!(first == 0.0 || first == 2.0);
///     assert!((0..50).all(|t| (0..4).all(|c| v[((b * 50 + t) * 8 + f) * 4 + c] == first)));
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Dropout2d {
    /// Drop probability.
    pub p: f32,
}

impl Dropout2d {
    /// Applies the dropout when `train` is true and `p > 0` (`x` `[B, T, F, C]`).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let (b, _, f, _) = x.dims4()?;
        masked(x, self.p, (b, 1, f, 1).into())
    }
}

/// `x` times a fresh mask (drop probability `p` in `[0, 1)`), differentiable in `x`.
pub(crate) fn apply(x: &Tensor, p: f32) -> Result<Tensor> {
    masked(x, p, x.shape().clone())
}

/// `x` times a fresh mask of `shape` (`x`'s own, or one that broadcasts to it).
fn masked(x: &Tensor, p: f32, shape: candle_core::Shape) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability has to be in [0, 1), got {p}")
    }
    let same = shape == *x.shape();
    let m =
        Tensor::from_vec(mask(shape.elem_count(), p), shape, x.device())?.to_dtype(x.dtype())?;
    if same {
        x.mul(&m)
    } else {
        x.broadcast_mul(&m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The seed is process-wide: the tests that set it are this one.
    #[test]
    fn masks_repeat_per_seed_and_step_and_drop_the_right_share() -> Result<()> {
        let x = Tensor::ones((64, 1000), DType::F32, &Device::Cpu)?;
        let draw = || -> Result<Vec<f32>> { apply(&x, 0.25)?.flatten_all()?.to_vec1::<f32>() };
        seed_dropout(1234);
        let (a1, a2) = (draw()?, draw()?);
        assert_ne!(a1, a2, "successive masks differ");
        let dropped = a1.iter().filter(|&&v| v == 0.0).count() as f64 / a1.len() as f64;
        assert!((dropped - 0.25).abs() < 0.01, "dropped share {dropped}");
        assert!(a1
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        seed_dropout(1234);
        assert_eq!(draw()?, a1, "same seed, same masks");
        seed_dropout(1235);
        assert_ne!(draw()?, a1, "another seed, other masks");
        // A step's masks do not depend on what was drawn before it (a resumed run).
        seed_dropout(1234);
        dropout_step(3, 17);
        let s1 = draw()?;
        seed_dropout(1234);
        let _ = draw()?;
        dropout_step(3, 17);
        assert_eq!(draw()?, s1);
        dropout_step(3, 18);
        assert_ne!(draw()?, s1);
        assert!(apply(&x, 1.0).is_err());
        // The chunks drawn in parallel are the serial stream's values, and the stream goes on
        // where the serial draw would have left it (a mask of 2.5 chunks, then a small one).
        dropout_step(5, 9);
        let (m1, m2) = (mask(40_000, 0.3), mask(7, 0.3));
        let mut r = stream(1234, 5, 9);
        let serial: Vec<f32> = (0..40_007)
            .map(|_| {
                if r.random::<f32>() >= 0.3 {
                    1.0 / 0.7
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!([m1, m2].concat(), serial);
        Ok(())
    }

    /// SpeechBrain's Dropout2d: whole (utterance, bin) planes, the right share, the gradient
    /// through the same mask.
    #[test]
    fn dropout2d_drops_whole_frequency_bins() -> Result<()> {
        let (b, t, f, c) = (6, 20, 40, 3);
        let x =
            candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, f, c), &Device::Cpu)?)?;
        let y = Dropout2d { p: 0.25 }.forward(x.as_tensor(), true)?;
        let (xv, yv) = (
            x.as_tensor().flatten_all()?.to_vec1::<f32>()?,
            y.flatten_all()?.to_vec1::<f32>()?,
        );
        let grad = y.sum_all()?.backward()?;
        let g = grad
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut dropped = 0;
        for bi in 0..b {
            for fi in 0..f {
                let at = |ti: usize, ci: usize| ((bi * t + ti) * f + fi) * c + ci;
                let scale = g[at(0, 0)];
                assert!(scale == 0.0 || (scale - 1.0 / 0.75).abs() < 1e-6, "{scale}");
                for ti in 0..t {
                    for ci in 0..c {
                        assert_eq!(g[at(ti, ci)], scale, "one mask value per plane");
                        assert_eq!(yv[at(ti, ci)], xv[at(ti, ci)] * scale);
                    }
                }
                dropped += usize::from(scale == 0.0);
            }
        }
        let share = dropped as f64 / (b * f) as f64;
        assert!((0.1..0.4).contains(&share), "dropped share {share}");
        let eval = Dropout2d { p: 0.25 }.forward(x.as_tensor(), false)?;
        assert_eq!(eval.flatten_all()?.to_vec1::<f32>()?, xv);
        Ok(())
    }
}
