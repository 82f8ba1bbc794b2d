//! Separation metrics: scale-invariant SNR (SI-SNR), its improvement over the mixture
//! (SI-SNRi), plain SNR, and the best permutation of estimated sources (permutation-invariant
//! evaluation, as SpeechBrain's `get_si_snr_with_pitwrapper` does).
//!
//! All metrics work on `f32` slices with `f64` accumulation; every signal is made zero-mean
//! first, and an `EPS` of 1e-8 guards divisions, as in SpeechBrain's `cal_si_snr`.

/// The guard SpeechBrain uses in `cal_si_snr`.
pub const EPS: f64 = 1e-8;

fn zero_mean(x: &[f32]) -> Vec<f64> {
    let n = x.len().max(1) as f64;
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    x.iter().map(|&v| v as f64 - m).collect()
}

/// SI-SNR (dB) of `estimate` against `target` (same length; the shorter length is used
/// otherwise).
///
/// ```
/// let s: Vec<f32> = (0..800).map(|i| (i as f32 * 0.05).sin()).collect();
/// let scaled: Vec<f32> = s.iter().map(|x| 0.3 * x).collect();
/// assert!(voxbrain::metrics::si_snr(&scaled, &s) > 90.0); // scale does not matter (EPS caps it)
/// ```
pub fn si_snr(estimate: &[f32], target: &[f32]) -> f64 {
    let n = estimate.len().min(target.len());
    let e = zero_mean(&estimate[..n]);
    let t = zero_mean(&target[..n]);
    let dot: f64 = e.iter().zip(&t).map(|(a, b)| a * b).sum();
    let tt: f64 = t.iter().map(|b| b * b).sum::<f64>() + EPS;
    let alpha = dot / tt;
    let (mut s_pow, mut n_pow) = (0.0, 0.0);
    for (a, b) in e.iter().zip(&t) {
        let s = alpha * b;
        s_pow += s * s;
        n_pow += (a - s) * (a - s);
    }
    10.0 * ((s_pow + EPS) / (n_pow + EPS)).log10()
}

/// SI-SNR improvement (dB): `si_snr(estimate, target) - si_snr(mixture, target)`.
pub fn si_snr_improvement(estimate: &[f32], target: &[f32], mixture: &[f32]) -> f64 {
    si_snr(estimate, target) - si_snr(mixture, target)
}

/// Plain SNR (dB) of `estimate` against `target` (no scaling, no mean removal).
pub fn snr(estimate: &[f32], target: &[f32]) -> f64 {
    let n = estimate.len().min(target.len());
    let (mut s, mut e) = (0.0f64, 0.0f64);
    for (&a, &b) in estimate[..n].iter().zip(&target[..n]) {
        s += (b as f64).powi(2);
        e += (a as f64 - b as f64).powi(2);
    }
    10.0 * ((s + EPS) / (e + EPS)).log10()
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

/// Result of a permutation-invariant evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct PitScore {
    /// `perm[i]`: the estimate matched with target `i`.
    pub perm: Vec<usize>,
    /// Metric per target under that permutation.
    pub per_source: Vec<f64>,
    /// Mean over sources.
    pub mean: f64,
}

/// Best assignment of `estimates` to `targets` under `metric` (higher is better; all
/// permutations are tried, fine for the 2-5 sources of speech separation).
pub fn pit(
    estimates: &[Vec<f32>],
    targets: &[Vec<f32>],
    metric: impl Fn(&[f32], &[f32]) -> f64,
) -> Option<PitScore> {
    let n = targets.len();
    if n == 0 || estimates.len() != n {
        return None;
    }
    // Pairwise table, then the best permutation.
    let table: Vec<Vec<f64>> = targets
        .iter()
        .map(|t| estimates.iter().map(|e| metric(e, t)).collect())
        .collect();
    permutations(n)
        .into_iter()
        .map(|perm| {
            let per_source: Vec<f64> = (0..n).map(|i| table[i][perm[i]]).collect();
            let mean = per_source.iter().sum::<f64>() / n as f64;
            PitScore {
                perm,
                per_source,
                mean,
            }
        })
        .max_by(|a, b| a.mean.total_cmp(&b.mean))
}

/// Permutation-invariant SI-SNR (dB).
pub fn pit_si_snr(estimates: &[Vec<f32>], targets: &[Vec<f32>]) -> Option<PitScore> {
    pit(estimates, targets, si_snr)
}

/// Permutation-invariant SI-SNR improvement over `mixture` (dB), per source and mean.
pub fn pit_si_snri(
    estimates: &[Vec<f32>],
    targets: &[Vec<f32>],
    mixture: &[f32],
) -> Option<PitScore> {
    pit(estimates, targets, |e, t| si_snr_improvement(e, t, mixture))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(f: f32, n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * f).sin()).collect()
    }

    #[test]
    fn si_snr_known_values() {
        let s = tone(0.05, 1000);
        let noise = tone(0.31, 1000);
        // estimate = s + 0.1 * (orthogonal-ish) noise: about 20 dB.
        let est: Vec<f32> = s.iter().zip(&noise).map(|(a, b)| a + 0.1 * b).collect();
        let v = si_snr(&est, &s);
        assert!((v - 20.0).abs() < 0.5, "{v}");
        // Silence does not produce NaN.
        assert!(si_snr(&[0.0; 100], &[0.0; 100]).is_finite());
        assert!(snr(&[0.0; 100], &s[..100]).is_finite());
    }

    #[test]
    fn pit_finds_the_swap() {
        let a = tone(0.05, 2000);
        let b = tone(0.17, 2000);
        let mix: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let r = pit_si_snri(&[b.clone(), a.clone()], &[a.clone(), b.clone()], &mix).unwrap();
        assert_eq!(r.perm, vec![1, 0]);
        assert!(r.mean > 50.0);
        assert_eq!(permutations(3).len(), 6);
    }
}
