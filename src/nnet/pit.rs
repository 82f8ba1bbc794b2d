//! The separation training loss of SpeechBrain's SepFormer recipes:
//! `speechbrain.nnet.losses.get_si_snr_with_pitwrapper`, the negative scale-invariant SNR
//! (`cal_si_snr`) under the best permutation of the estimated sources (`PitWrapper`).
//!
//! Made of candle ops, so the gradient comes from candle's autograd; only the choice of the
//! permutation (no gradient in SpeechBrain either) runs on the host. Inputs are channel-last,
//! as SpeechBrain's: `[batch, time, sources]`. The evaluation metrics in f64 are
//! [`crate::metrics::separation`].

use candle_core::{bail, Result, Tensor};

/// The guard SpeechBrain's `cal_si_snr` adds to energies and before the log.
pub const EPS: f64 = 1e-8;

/// Every pairing's loss: `[B, C, C]` with entry `[b, i, j]` = `-SI-SNR(target = source j,
/// estimate i)` in dB, computed as SpeechBrain's `cal_si_snr` does (zero mean over time, the
/// estimate projected on the target, `10 log10(|proj|² / (|noise|² + EPS) + EPS)`).
///
/// `source`, `estimate`: `[B, T, C]`, same shape.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let s = Tensor::arange(0f32, 600., &Device::Cpu)?.reshape((3, 100, 2))?;
/// let m = voxbrain::nnet::losses::si_snr_loss_matrix(&s, &s)?; // [3, 2, 2]
/// let m = m.to_vec3::<f32>()?;
/// assert!(m[0][0][0] < -70.0 && m[0][0][1] < -70.0); // the two sources are both ramps
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn si_snr_loss_matrix(source: &Tensor, estimate: &Tensor) -> Result<Tensor> {
    let (_, t, _) = source.dims3()?;
    if source.dims() != estimate.dims() {
        bail!(
            "si_snr: source {:?} and estimate {:?} must have the same [batch, time, sources] shape",
            source.dims(),
            estimate.dims()
        );
    }
    if t == 0 {
        bail!("si_snr: the signals have no samples");
    }
    let n = t as f64;
    let zero_mean = |x: &Tensor| x.broadcast_sub(&(x.sum_keepdim(1)? / n)?);
    let e = zero_mean(estimate)?.unsqueeze(3)?; // [B, T, C(i), 1]
    let s = zero_mean(source)?.unsqueeze(2)?; // [B, T, 1, C(j)]
    let dot = e.broadcast_mul(&s)?.sum_keepdim(1)?; // [B, 1, C, C]
    let energy = (s.sqr()?.sum_keepdim(1)? + EPS)?; // [B, 1, 1, C]
    let proj = dot.broadcast_mul(&s)?.broadcast_div(&energy)?; // [B, T, C, C]
    let noise = e.broadcast_sub(&proj)?;
    let ratio = (proj.sqr()?.sum(1)? / (noise.sqr()?.sum(1)? + EPS)?)?; // [B, C, C]
    (ratio + EPS)?.log()? * (-10.0 / std::f64::consts::LN_10)
}

/// All permutations of `0..n` in lexicographic order (Python's `itertools.permutations`),
/// so that ties resolve to the same permutation as SpeechBrain's `PitWrapper`.
fn lexicographic_permutations(n: usize) -> Vec<Vec<usize>> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut out = vec![p.clone()];
    loop {
        // Next permutation: the longest non-increasing suffix, swap its pivot, reverse it.
        let Some(i) = (1..n).rev().find(|&i| p[i - 1] < p[i]) else {
            return out;
        };
        let j = (i..n)
            .rev()
            .find(|&j| p[j] > p[i - 1])
            .expect("p[i] > p[i-1]");
        p.swap(i - 1, j);
        p[i..].reverse();
        out.push(p.clone());
    }
}

/// The PIT loss per utterance (`[B]`) and the permutation chosen for each: `perm[i]` is the
/// source matched with estimate `i` (SpeechBrain's `PitWrapper` convention). The gradient flows
/// through the chosen pairings only, as in SpeechBrain.
///
/// ```
/// use candle_core::{Device, Tensor};
/// // SpeechBrain's docstring example: the estimates are the sources, swapped.
/// let x = Tensor::arange(0f32, 600., &Device::Cpu)?.reshape((3, 100, 2))?;
/// let swapped = Tensor::cat(&[x.narrow(2, 1, 1)?, x.narrow(2, 0, 1)?], 2)?;
/// let (loss, perms) = voxbrain::nnet::losses::pit_si_snr_loss(&x, &swapped)?;
/// assert_eq!(loss.dims(), &[3]);
/// assert_eq!(perms.len(), 3);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn pit_si_snr_loss(source: &Tensor, estimate: &Tensor) -> Result<(Tensor, Vec<Vec<usize>>)> {
    let table = si_snr_loss_matrix(source, estimate)?; // [B, C, C]
    let (b, c, _) = table.dims3()?;
    let host = table.to_vec3::<f32>()?;
    let candidates = lexicographic_permutations(c);
    let mut perms = Vec::with_capacity(b);
    let mut select = vec![0f32; b * c * c];
    for (k, m) in host.iter().enumerate() {
        let mut best: Option<(f32, &Vec<usize>)> = None;
        for p in &candidates {
            let loss = p.iter().enumerate().map(|(i, &j)| m[i][j]).sum::<f32>() / c as f32;
            // Strictly smaller replaces: the first minimum wins, as in PitWrapper._fast_pit.
            if best.is_none_or(|(l, _)| l > loss) {
                best = Some((loss, p));
            }
        }
        let (_, p) = best.expect("at least one permutation");
        for (i, &j) in p.iter().enumerate() {
            select[k * c * c + i * c + j] = 1.0;
        }
        perms.push(p.clone());
    }
    let select = Tensor::from_vec(select, (b, c, c), table.device())?.to_dtype(table.dtype())?;
    let loss = ((table * select)?.sum((1, 2))? / c as f64)?;
    Ok((loss, perms))
}

/// `speechbrain.nnet.losses.get_si_snr_with_pitwrapper(source, estimate_source)`: the negative
/// SI-SNR (dB) of each utterance under its best permutation, `[B]`. The SepFormer recipes
/// minimise its mean.
///
/// `source`, `estimate`: `[B, T, C]`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::arange(0f32, 600., &Device::Cpu)?.reshape((3, 100, 2))?;
/// let swapped = Tensor::cat(&[x.narrow(2, 1, 1)?, x.narrow(2, 0, 1)?], 2)?;
/// let loss = voxbrain::nnet::losses::get_si_snr_with_pitwrapper(&x, &swapped)?;
/// // SpeechBrain's docstring prints -loss = 135.2284 for each utterance (EPS-bound).
/// assert!(loss.to_vec1::<f32>()?.iter().all(|l| (l + 135.2284).abs() < 0.05));
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn get_si_snr_with_pitwrapper(source: &Tensor, estimate: &Tensor) -> Result<Tensor> {
    Ok(pit_si_snr_loss(source, estimate)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_lexicographic() {
        assert_eq!(
            lexicographic_permutations(3),
            vec![
                vec![0, 1, 2],
                vec![0, 2, 1],
                vec![1, 0, 2],
                vec![1, 2, 0],
                vec![2, 0, 1],
                vec![2, 1, 0]
            ]
        );
        assert_eq!(lexicographic_permutations(4).len(), 24);
        assert_eq!(lexicographic_permutations(1), vec![vec![0]]);
    }
}
