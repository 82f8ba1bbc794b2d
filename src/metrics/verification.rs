//! Speaker-verification metrics: equal error rate and minimum detection cost, computed like
//! SpeechBrain's `EER` / `minDCF` (thresholds at every score, interpolated EER).

use std::path::Path;

/// Equal error rate and its threshold, from target (same speaker) and non-target scores.
///
/// Sweeps every observed score as a threshold (a trial is accepted when `score > threshold`),
/// and returns the point where false-acceptance and false-rejection rates cross, linearly
/// interpolated between the two sweep points around the crossing.
///
/// ```
/// let (eer, _thr) = voxbrain::metrics::eer(&[0.9, 0.8, 0.7], &[0.1, 0.2, 0.75]);
/// assert!((eer - 1.0 / 3.0).abs() < 1e-6);
/// ```
pub fn eer(positive: &[f32], negative: &[f32]) -> (f64, f64) {
    if positive.is_empty() || negative.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut thresholds: Vec<f64> = positive.iter().chain(negative).map(|&s| s as f64).collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let rates = |t: f64| {
        let frr =
            positive.iter().filter(|&&s| (s as f64) <= t).count() as f64 / positive.len() as f64;
        let far =
            negative.iter().filter(|&&s| (s as f64) > t).count() as f64 / negative.len() as f64;
        (far, frr)
    };
    let mut prev: Option<(f64, f64, f64)> = None;
    for &t in &thresholds {
        let (far, frr) = rates(t);
        if frr >= far {
            return match prev {
                None => ((far + frr) / 2.0, t),
                Some((pt, pfar, pfrr)) => {
                    // Interpolate the crossing of FAR and FRR between the two thresholds.
                    let d_prev = pfar - pfrr;
                    let d_now = frr - far;
                    let w = d_prev / (d_prev + d_now);
                    let e = pfar + w * (far - pfar);
                    (e, pt + w * (t - pt))
                }
            };
        }
        prev = Some((t, far, frr));
    }
    // Both score lists are non-empty (checked above), so the loop set `prev`.
    let (t, far, frr) = prev.expect("non-empty");
    ((far + frr) / 2.0, t)
}

/// Minimum detection cost `min_t c_miss * P_miss(t) * p_target + c_fa * P_fa(t) * (1 - p_target)`
/// (SpeechBrain's defaults: `c_miss = c_fa = 1`, `p_target = 0.01`), and its threshold.
pub fn min_dcf(
    positive: &[f32],
    negative: &[f32],
    c_miss: f64,
    c_fa: f64,
    p_target: f64,
) -> (f64, f64) {
    let mut thresholds: Vec<f64> = positive.iter().chain(negative).map(|&s| s as f64).collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    let mut best = (f64::INFINITY, f64::NAN);
    for t in thresholds {
        let p_miss = positive.iter().filter(|&&s| (s as f64) <= t).count() as f64
            / positive.len().max(1) as f64;
        let p_fa = negative.iter().filter(|&&s| (s as f64) > t).count() as f64
            / negative.len().max(1) as f64;
        let c = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target);
        if c < best.0 {
            best = (c, t);
        }
    }
    best
}

/// One verification trial: `label` (1 = same speaker), two utterance ids or paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// True for a target (same speaker) trial.
    pub target: bool,
    /// Enrollment utterance.
    pub enrol: String,
    /// Test utterance.
    pub test: String,
}

/// Reads a VoxCeleb-style trial list: `<1|0> <enrol> <test>` per line. Errors name the line.
pub fn read_trials(path: impl AsRef<Path>) -> Result<Vec<Trial>, String> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [lab @ ("0" | "1"), a, b] => Ok(Trial {
                    target: *lab == "1",
                    enrol: a.to_string(),
                    test: b.to_string(),
                }),
                _ => Err(format!(
                    "{}:{}: expected `<1|0> <enrol> <test>`, got {l:?}",
                    path.display(),
                    i + 1
                )),
            }
        })
        .collect()
}

/// Splits trial scores into (target, non-target) lists for [`eer`] / [`min_dcf`].
pub fn score_trials(trials: &[Trial], scores: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for (t, &s) in trials.iter().zip(scores) {
        if t.target {
            pos.push(s)
        } else {
            neg.push(s)
        }
    }
    (pos, neg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_scores_do_not_panic() {
        // A NaN score (e.g. from a silent file) used to panic the threshold sort.
        let (e, _) = eer(&[0.8, f32::NAN, 0.9], &[0.1, 0.2]);
        assert!(e.is_finite());
        assert!(min_dcf(&[f32::NAN], &[0.1], 1.0, 1.0, 0.01).0.is_finite());
    }

    #[test]
    fn perfect_separation_has_zero_eer() {
        let (e, t) = eer(&[0.8, 0.9], &[0.1, 0.2]);
        assert_eq!(e, 0.0);
        assert!((0.2..0.8).contains(&t));
        assert_eq!(min_dcf(&[0.8, 0.9], &[0.1, 0.2], 1.0, 1.0, 0.01).0, 0.0);
    }

    #[test]
    fn overlapping_scores() {
        // Reversed scores: every threshold errs.
        let (e, _) = eer(&[0.1, 0.2], &[0.8, 0.9]);
        assert!(e >= 0.5 - 1e-9, "{e}");
        let pos: Vec<f32> = (0..100).map(|i| 0.5 + i as f32 / 200.0).collect();
        let neg: Vec<f32> = (0..100).map(|i| i as f32 / 200.0 + 0.25).collect();
        let (e, _) = eer(&pos, &neg);
        assert!((e - 0.25).abs() < 0.02, "{e}");
        let (c, _) = min_dcf(&pos, &neg, 1.0, 1.0, 0.01);
        assert!(c > 0.0 && c <= 0.01 + 1e-9, "{c}");
    }

    #[test]
    fn trial_lists_parse_and_report_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("trials.txt");
        std::fs::write(&p, "1 a.wav b.wav\n0 a.wav c.wav\n").unwrap();
        let t = read_trials(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].target && !t[1].target);
        std::fs::write(&p, "1 a.wav b.wav\nyes a c\n").unwrap();
        let e = read_trials(&p).unwrap_err();
        assert!(e.contains("trials.txt:2"), "{e}");
    }
}
