//! Time derivatives and context windows (`speechbrain.processing.features.Deltas`,
//! `ContextWindow`) on `[frames][dim]` row-major features.

/// Delta coefficients with SpeechBrain's regression kernel over `window_length` frames
/// (edges replicated): `d[t] = sum_k k * x[t+k] / (n(n+1)(2n+1)/3)`.
///
/// ```
/// let x = vec![0.0, 1.0, 2.0, 3.0, 4.0]; // 5 frames, 1 feature
/// let d = voxbrain::features::deltas(&x, 5, 1, 5);
/// assert!((d[2] - 1.0).abs() < 1e-6);
/// ```
pub fn deltas(x: &[f32], frames: usize, dim: usize, window_length: usize) -> Vec<f32> {
    let n = (window_length.max(1) - 1) / 2;
    let denom = (n * (n + 1) * (2 * n + 1)) as f32 / 3.0;
    let mut out = vec![0.0f32; frames * dim];
    if frames == 0 || n == 0 {
        return out;
    }
    for t in 0..frames {
        for f in 0..dim {
            let mut acc = 0.0f32;
            for k in 1..=n {
                let fwd = (t + k).min(frames - 1);
                let back = t.saturating_sub(k);
                acc += k as f32 * (x[fwd * dim + f] - x[back * dim + f]);
            }
            out[t * dim + f] = acc / denom;
        }
    }
    out
}

/// Stacks each frame with `left` past and `right` future frames (zero outside the signal),
/// giving `[frames][dim * (left + right + 1)]` ordered as SpeechBrain's `ContextWindow`:
/// feature `c`, offset `j` lands at column `c * (left + right + 1) + j`.
///
/// ```
/// let x = vec![1.0, 2.0, 3.0]; // 3 frames, 1 feature
/// let y = voxbrain::features::context_window(&x, 3, 1, 1, 1);
/// assert_eq!(&y[3..6], &[1.0, 2.0, 3.0]);
/// ```
pub fn context_window(x: &[f32], frames: usize, dim: usize, left: usize, right: usize) -> Vec<f32> {
    let cl = left + right + 1;
    let mut out = vec![0.0f32; frames * dim * cl];
    for t in 0..frames {
        for c in 0..dim {
            for j in 0..cl {
                let src = t as isize - left as isize + j as isize;
                if src >= 0 && (src as usize) < frames {
                    out[t * dim * cl + c * cl + j] = x[src as usize * dim + c];
                }
            }
        }
    }
    out
}
