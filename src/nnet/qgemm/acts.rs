//! Quantizing activations: per column (or row) min and max, scale and zero point, and the
//! packing the tiles read.

use rayon::prelude::*;

use super::{View, NR};

/// Activations `[k, n]` quantized per column and packed in panels of `NR` columns:
/// `[n / NR][k / 4][NR][4]` bytes.
pub(super) struct QActs {
    pub packed: Vec<u8>,
    pub scale: Vec<f32>,
    pub zero: Vec<i32>,
    pub groups: usize,
}

/// Quantizes the columns of `x` (affine, `0..=127`, the range always holding 0 so that zero
/// padding stays exact).
pub(super) fn quantize_acts(x: View) -> QActs {
    if x.rs == 1 {
        return quantize_contiguous_cols(x);
    }
    let (k, n) = (x.rows, x.cols);
    let mut lo = vec![0f32; n];
    let mut hi = vec![0f32; n];
    if x.cs == 1 {
        for r in 0..k {
            min_max_rows(&x.data[r * x.rs..][..n], &mut lo, &mut hi);
        }
    } else {
        for r in 0..k {
            for c in 0..n {
                let v = x.data[r * x.rs + c * x.cs];
                lo[c] = lo[c].min(v);
                hi[c] = hi[c].max(v);
            }
        }
    }
    // Padded to whole panels (the tiles read `NR` of each).
    let mut scale = vec![1f32; n.div_ceil(NR) * NR];
    let mut zero = vec![0i32; n.div_ceil(NR) * NR];
    for c in 0..n {
        (scale[c], zero[c]) = affine(lo[c], hi[c]);
    }
    let inv: Vec<f32> = scale.iter().map(|s| 1.0 / s).collect();
    let zf: Vec<f32> = zero.iter().map(|&z| z as f32).collect();
    let groups = k.div_ceil(4);
    let panels = n.div_ceil(NR);
    let mut packed = vec![0u8; panels * groups * NR * 4];
    // Columns past `n` stay zero; their results are dropped.
    packed
        .par_chunks_mut(groups * NR * 4)
        .enumerate()
        .for_each(|(p, panel)| {
            let c0 = p * NR;
            let width = NR.min(n - c0);
            let (inv, zf) = (&inv[c0..c0 + width], &zf[c0..c0 + width]);
            let mut q = [0u8; NR * 4];
            if x.cs == 1 && width == NR {
                let (inv, zf) = (inv.try_into().expect("NR"), zf.try_into().expect("NR"));
                for (g, dst) in panel.chunks_exact_mut(NR * 4).enumerate() {
                    let rows = std::array::from_fn(|j| {
                        let r = (4 * g + j).min(k - 1);
                        x.data[r * x.rs + c0..][..NR].try_into().expect("NR")
                    });
                    quantize_group(rows, inv, zf, &mut q);
                    // Rows past `k` (the last group's padding) must quantize to zero.
                    for j in k.saturating_sub(4 * g).min(4)..4 {
                        q.iter_mut().skip(j).step_by(4).for_each(|v| *v = 0);
                    }
                    dst.copy_from_slice(&q);
                }
            } else {
                for r in 0..k {
                    for c in 0..width {
                        let v = x.data[r * x.rs + (c0 + c) * x.cs];
                        panel[(r / 4) * NR * 4 + c * 4 + r % 4] = quantize(v, inv[c], zf[c]);
                    }
                }
            }
        });
    QActs {
        packed,
        scale,
        zero,
        groups,
    }
}

/// The scale and zero point of a column whose values span `lo..=hi` (`lo <= 0 <= hi`).
pub(super) fn affine(lo: f32, hi: f32) -> (f32, i32) {
    let range = hi - lo;
    if range > 0.0 && range.is_finite() {
        let scale = range / 127.0;
        (
            scale,
            (-lo / scale).round_ties_even().clamp(0.0, 127.0) as i32,
        )
    } else {
        (1.0, 0)
    }
}

/// [`quantize_acts`] when each column is contiguous (row-major activations `[n, k]` seen
/// transposed): each panel's columns are measured, quantized and packed while in cache.
fn quantize_contiguous_cols(x: View) -> QActs {
    let (k, n) = (x.rows, x.cols);
    let groups = k.div_ceil(4);
    let panels = n.div_ceil(NR);
    let mut packed = vec![0u8; panels * groups * NR * 4];
    let mut scale = vec![1f32; panels * NR];
    let mut zero = vec![0i32; panels * NR];
    packed
        .par_chunks_mut(groups * NR * 4)
        .zip(scale.par_chunks_mut(NR).zip(zero.par_chunks_mut(NR)))
        .enumerate()
        .for_each_init(
            || vec![0u8; groups * 4],
            |q, (p, (panel, (scale, zero)))| {
                for c in 0..NR.min(n - p * NR) {
                    let col = &x.data[(p * NR + c) * x.cs..][..k];
                    let (lo, hi) = min_max(col);
                    (scale[c], zero[c]) = affine(lo, hi);
                    quantize_col(col, 1.0 / scale[c], zero[c] as f32, &mut q[..k]);
                    for (g, v) in q.chunks_exact(4).enumerate() {
                        panel[g * NR * 4 + c * 4..][..4].copy_from_slice(v);
                    }
                }
            },
        );
    QActs {
        packed,
        scale,
        zero,
        groups,
    }
}

#[inline(always)]
#[allow(clippy::manual_clamp)] // clamp keeps NaN, which must become 0 here
fn quantize(v: f32, inv: f32, zero: f32) -> u8 {
    // max/min (not clamp) send NaN to 0; through i32, as a float-to-u8 cast does not vectorise.
    let v = ((v * inv).round_ties_even() + zero).max(0.0).min(127.0);
    // SAFETY: `v` is finite and within 0..=127.
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

/// The range of `v` widened to hold 0 (NaN skipped).
#[inline(always)]
fn min_max_generic(v: &[f32]) -> (f32, f32) {
    let (lo, hi) = crate::fastmath::lanes_min_max(v);
    (lo.min(0.0), hi.max(0.0))
}
crate::fastmath::simd_dispatch!(pub(super) fn min_max(v: &[f32]) -> (f32, f32) => min_max_generic);

#[inline(always)]
fn min_max_rows_generic(row: &[f32], lo: &mut [f32], hi: &mut [f32]) {
    for ((&v, l), h) in row.iter().zip(lo.iter_mut()).zip(hi.iter_mut()) {
        *l = if v < *l { v } else { *l };
        *h = if v > *h { v } else { *h };
    }
}
crate::fastmath::simd_dispatch!(fn min_max_rows(row: &[f32], lo: &mut [f32], hi: &mut [f32])
    => min_max_rows_generic);

#[inline(always)]
fn quantize_col_generic(col: &[f32], inv: f32, zero: f32, out: &mut [u8]) {
    for (o, &v) in out.iter_mut().zip(col) {
        *o = quantize(v, inv, zero);
    }
}
crate::fastmath::simd_dispatch!(pub(super) fn quantize_col(col: &[f32], inv: f32, zero: f32, out: &mut [u8])
    => quantize_col_generic);

/// Four rows of `NR` columns, quantized, then interleaved as the micro-kernel reads them.
#[inline(always)]
fn quantize_group_generic(
    rows: [&[f32; NR]; 4],
    inv: &[f32; NR],
    zero: &[f32; NR],
    out: &mut [u8; NR * 4],
) {
    let q: [[u8; NR]; 4] =
        std::array::from_fn(|j| std::array::from_fn(|c| quantize(rows[j][c], inv[c], zero[c])));
    interleave4(&q, out);
}
crate::fastmath::simd_dispatch!(fn quantize_group(rows: [&[f32; NR]; 4], inv: &[f32; NR],
    zero: &[f32; NR], out: &mut [u8; NR * 4]) => quantize_group_generic);

/// `out[4 c + j] = q[j][c]`: byte unpacks (SSE2, which every x86-64 has).
#[inline(always)]
fn interleave4(q: &[[u8; NR]; 4], out: &mut [u8; NR * 4]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; the loads and stores are unaligned and in bounds.
    unsafe {
        use std::arch::x86_64::*;
        let r = q.map(|row| _mm_loadu_si128(row.as_ptr() as *const __m128i));
        let (a, b) = (_mm_unpacklo_epi8(r[0], r[1]), _mm_unpackhi_epi8(r[0], r[1]));
        let (c, d) = (_mm_unpacklo_epi8(r[2], r[3]), _mm_unpackhi_epi8(r[2], r[3]));
        let o = [
            _mm_unpacklo_epi16(a, c),
            _mm_unpackhi_epi16(a, c),
            _mm_unpacklo_epi16(b, d),
            _mm_unpackhi_epi16(b, d),
        ];
        for (i, v) in o.into_iter().enumerate() {
            _mm_storeu_si128(out.as_mut_ptr().add(16 * i) as *mut __m128i, v);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for c in 0..NR {
        for j in 0..4 {
            out[4 * c + j] = q[j][c];
        }
    }
}
