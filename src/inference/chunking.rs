//! Splitting long recordings at quiet points, so that each piece can be transcribed on its
//! own in bounded memory.

use super::asr::ChunkOptions;

/// `[start, end)` sample ranges covering `samples`: one range when the signal is at most
/// `max_seconds` long; otherwise pieces of about `chunk_seconds`, each cut at the 25 ms
/// window of least energy within `search_seconds` of the nominal boundary. No piece is shorter
/// than half a chunk (a short tail joins the previous piece).
///
/// ```
/// use voxbrain::inference::{chunk_bounds, ChunkOptions};
/// let sr = 100.0;
/// let x = vec![0.5f32; 100 * 70]; // 70 s at 100 Hz
/// let b = chunk_bounds(&x, sr, &ChunkOptions::default());
/// assert_eq!(b.first().unwrap().0, 0);
/// assert_eq!(b.last().unwrap().1, x.len());
/// assert!(b.len() >= 3);
/// ```
pub fn chunk_bounds(samples: &[f32], sample_rate: f32, opts: &ChunkOptions) -> Vec<(usize, usize)> {
    let n = samples.len();
    let max = (opts.max_seconds.max(0.0) * sample_rate) as usize;
    let chunk = ((opts.chunk_seconds * sample_rate) as usize).max(1);
    if n <= max.max(chunk) {
        return vec![(0, n)];
    }
    let search = (opts.search_seconds.max(0.0) * sample_rate) as usize;
    let win = ((0.025 * sample_rate) as usize).max(1);
    let mut bounds = Vec::new();
    let mut start = 0usize;
    while n - start > chunk + chunk / 2 {
        let nominal = start + chunk;
        let lo = nominal.saturating_sub(search).max(start + chunk / 2);
        let hi = (nominal + search).min(n - chunk / 2);
        let cut = quietest(samples, lo, hi.max(lo + 1), win);
        bounds.push((start, cut));
        start = cut;
    }
    bounds.push((start, n));
    bounds
}

/// Centre of the least-energy window of `win` samples whose start lies in `[lo, hi)`.
fn quietest(x: &[f32], lo: usize, hi: usize, win: usize) -> usize {
    let hi = hi.min(x.len().saturating_sub(win)).max(lo);
    let energy = |s: usize| -> f64 {
        x[s..(s + win).min(x.len())]
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum()
    };
    let mut best = lo;
    let mut best_e = f64::INFINITY;
    let step = (win / 2).max(1);
    let mut s = lo;
    while s <= hi {
        let e = energy(s);
        if e < best_e {
            best_e = e;
            best = s;
        }
        s += step;
    }
    (best + win / 2).min(x.len())
}
