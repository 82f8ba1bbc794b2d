//! Dynamic int8 quantization of the eval GEMMs, as torch's `quantize_dynamic`: weights are
//! quantized once (symmetric int8, one scale per output row), activations on every call
//! (affine 7-bit, one scale and zero point per column, i.e. per frame or token), the product is
//! accumulated in int32 and scaled back to f32.
//!
//! Why 7-bit activations: AVX2 has no int8 dot product that accumulates into int32; its
//! `vpmaddubsw` (u8 x i8, pairs summed into a *saturating* i16) followed by `vpmaddwd` is the
//! fast route (fbgemm's too). With activations in `0..=127` and weights in `-127..=127` a pair
//! sum stays within `2 * 127 * 127 = 32258 < 32767`, so nothing saturates and every path (AVX2,
//! AVX-VNNI's `vpdpbusd`, the scalar fallback) computes the same integers: the kernels agree
//! exactly, and only the quantization itself differs from the f32 product. torch's fbgemm
//! backend makes the same choice (`reduce_range`).

use candle_core::Result;
use rayon::prelude::*;

use super::gemm::View;

/// Rows of the weight per micro-kernel call.
const MR: usize = 4;
/// Columns of the activations per micro-kernel call (two 8-lane vectors).
const NR: usize = 16;
// `interleave4` and the tiles handle exactly two 8-lane vectors of columns.
const _: () = assert!(NR == 16);

/// A weight matrix `[rows, cols]` quantized to int8 with one scale per row, packed for the
/// micro-kernels: blocks of rows (`MR` of them, broadcast one by one, for `w x` with column
/// activations; or `NR`, loaded as vectors, for `x w^T` with row activations, see
/// [`QWeight::quantize_for_rows`]), the columns in groups of 4.
#[derive(Debug, Clone)]
pub struct QWeight {
    rows: usize,
    cols: usize,
    /// Rows per block: `MR` or `NR`.
    block: usize,
    /// `[rows / block][cols / 4][block][4]` int8 bit patterns, zero-padded.
    packed: Vec<u8>,
    /// Per row, padded to whole blocks.
    scale: Vec<f32>,
    /// Sum of each row's quantized values (removes the activations' zero point).
    sum: Vec<i32>,
}

impl QWeight {
    /// Quantizes the row-major `[rows, cols]` matrix `w` for `w x` ([`qmatmul_into`]).
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        Self::quantize_blocks(w, rows, cols, MR)
    }

    /// Quantizes the row-major `[out, in]` matrix `w` for `x w^T` with row-major activations
    /// `x` `[n, in]` (a `Linear`; [`qlinear_rows`]).
    pub fn quantize_for_rows(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        Self::quantize_blocks(w, rows, cols, NR)
    }

    fn quantize_blocks(w: &[f32], rows: usize, cols: usize, block: usize) -> Result<Self> {
        if w.len() != rows * cols {
            candle_core::bail!("int8 weight: {} values for [{rows}, {cols}]", w.len());
        }
        let groups = cols.div_ceil(4);
        let padded = rows.div_ceil(block) * block;
        let mut packed = vec![0u8; padded * groups * 4];
        let mut scale = vec![1f32; padded];
        let mut sum = vec![0i32; padded];
        for (r, row) in w.chunks(cols.max(1)).take(rows).enumerate() {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax > 0.0 && amax.is_finite() {
                scale[r] = amax / 127.0;
            }
            let inv = 1.0 / scale[r];
            let base = (r / block) * groups * block * 4 + (r % block) * 4;
            for (k, &v) in row.iter().enumerate() {
                let q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
                packed[base + (k / 4) * block * 4 + k % 4] = q as u8;
                sum[r] += q as i32;
            }
        }
        Ok(Self {
            rows,
            cols,
            block,
            packed,
            scale,
            sum,
        })
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The dequantized weight, row-major (for measuring what quantization changed).
    pub fn dequantize(&self) -> Vec<f32> {
        let (groups, block) = (self.cols.div_ceil(4), self.block);
        let mut w = vec![0f32; self.rows * self.cols];
        for (r, row) in w.chunks_mut(self.cols.max(1)).take(self.rows).enumerate() {
            let base = (r / block) * groups * block * 4 + (r % block) * 4;
            for (k, v) in row.iter_mut().enumerate() {
                let q = self.packed[base + (k / 4) * block * 4 + k % 4] as i8;
                *v = q as f32 * self.scale[r];
            }
        }
        w
    }
}

/// A 2-d weight tensor `[out, in]` (any device or dtype; read to the host), quantized.
pub(crate) fn quantize_tensor(w: &candle_core::Tensor) -> Result<QWeight> {
    let (rows, cols) = w.dims2()?;
    QWeight::quantize(&host_values(w)?, rows, cols)
}

/// [`quantize_tensor`] for [`qlinear_rows`] (a `Linear` weight `[out, in]`).
pub(crate) fn quantize_linear(w: &candle_core::Tensor) -> Result<QWeight> {
    let (rows, cols) = w.dims2()?;
    QWeight::quantize_for_rows(&host_values(w)?, rows, cols)
}

fn host_values(w: &candle_core::Tensor) -> Result<Vec<f32>> {
    w.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()
}

/// Activations `[k, n]` quantized per column and packed in panels of `NR` columns:
/// `[n / NR][k / 4][NR][4]` bytes.
struct QActs {
    packed: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    groups: usize,
}

/// Quantizes the columns of `x` (affine, `0..=127`, the range always holding 0 so that zero
/// padding stays exact).
fn quantize_acts(x: View) -> QActs {
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
fn affine(lo: f32, hi: f32) -> (f32, i32) {
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
fn quantize(v: f32, inv: f32, zero: f32) -> u8 {
    // max/min (not clamp) send NaN to 0; through i32, as a float-to-u8 cast does not vectorise.
    let v = ((v * inv).round_ties_even() + zero).max(0.0).min(127.0);
    // SAFETY: `v` is finite and within 0..=127.
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

#[inline(always)]
fn min_max_generic(v: &[f32]) -> (f32, f32) {
    // Lane-wise accumulators so that the loop vectorises (0 is always in the range).
    let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for j in 0..16 {
            // Selects (not f32::min/max, whose NaN rules do not vectorise); NaN is skipped.
            lo[j] = if c[j] < lo[j] { c[j] } else { lo[j] };
            hi[j] = if c[j] > hi[j] { c[j] } else { hi[j] };
        }
    }
    for &x in chunks.remainder() {
        lo[0] = lo[0].min(x);
        hi[0] = hi[0].max(x);
    }
    (
        lo.iter().fold(0f32, |a, &b| a.min(b)),
        hi.iter().fold(0f32, |a, &b| a.max(b)),
    )
}
crate::fastmath::simd_dispatch!(fn min_max(v: &[f32]) -> (f32, f32) => min_max_generic);

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
crate::fastmath::simd_dispatch!(fn quantize_col(col: &[f32], inv: f32, zero: f32, out: &mut [u8])
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

/// What turns a tile's integer sums into f32: `y[r][c] = (rs[r] * cs[c]) *
/// (acc[r][c] - zr[r] * zc[c])`, in this order in every kernel (so they agree exactly). For
/// `w x`: row scales and sums are the weight's, column scales and zero points the activations';
/// for `x w^T` the other way round.
struct Epilogue<'a> {
    rs: &'a [f32; MR],
    zr: &'a [i32; MR],
    cs: &'a [f32; NR],
    zc: &'a [i32; NR],
}

/// One `MR x NR` tile: `y = epilogue(sum_k a[r][k] * b[k][c])`, `a` broadcast row by row
/// and `b` read as vectors; `a` is int8 and `b` uint8, or the other way round with `SWAP`
/// (integer sums; no saturation can occur for the value ranges above, so this equals the SIMD
/// kernels exactly).
fn tile_scalar<const SWAP: bool>(
    groups: usize,
    a: &[u8],
    b: &[u8],
    ep: &Epilogue,
    y: &mut [[f32; NR]; MR],
) {
    let (sa, sb) = if SWAP { (false, true) } else { (true, false) };
    let val = |v: u8, signed: bool| if signed { v as i8 as i32 } else { v as i32 };
    let mut acc = [[0i32; NR]; MR];
    for g in 0..groups {
        let (a, b) = (&a[g * MR * 4..][..MR * 4], &b[g * NR * 4..][..NR * 4]);
        for (r, acc) in acc.iter_mut().enumerate() {
            for (c, acc) in acc.iter_mut().enumerate() {
                for j in 0..4 {
                    *acc += val(a[r * 4 + j], sa) * val(b[c * 4 + j], sb);
                }
            }
        }
    }
    for (r, (y, acc)) in y.iter_mut().zip(&acc).enumerate() {
        for (c, (y, &acc)) in y.iter_mut().zip(acc).enumerate() {
            *y = (ep.rs[r] * ep.cs[c]) * (acc - ep.zr[r] * ep.zc[c]) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Epilogue, MR, NR};
    use std::arch::x86_64::*;

    /// The epilogue on two 8-lane accumulators per row.
    #[inline(always)]
    unsafe fn finish(acc: [[__m256i; 2]; MR], ep: &Epilogue, y: &mut [[f32; NR]; MR]) {
        let z = [0, 8].map(|o| _mm256_loadu_si256(ep.zc.as_ptr().add(o) as *const __m256i));
        let xs = [0, 8].map(|o| _mm256_loadu_ps(ep.cs.as_ptr().add(o)));
        for (r, (y, acc)) in y.iter_mut().zip(acc).enumerate() {
            let (ws, wsum) = (_mm256_set1_ps(ep.rs[r]), _mm256_set1_epi32(ep.zr[r]));
            for h in 0..2 {
                let v =
                    _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[h], _mm256_mullo_epi32(z[h], wsum)));
                _mm256_storeu_ps(
                    y.as_mut_ptr().add(8 * h),
                    _mm256_mul_ps(_mm256_mul_ps(ws, xs[h]), v),
                );
            }
        }
    }

    /// The AVX2 tile: `vpmaddubsw` (u8 x i8 -> pairwise i16) then `vpmaddwd` with ones (-> i32).
    ///
    /// # Safety
    /// The CPU must have AVX2; `a` holds `groups * MR * 4` and `b` `groups * NR * 4` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2<const SWAP: bool>(
        groups: usize,
        a: &[u8],
        b: &[u8],
        ep: &Epilogue,
        y: &mut [[f32; NR]; MR],
    ) {
        debug_assert!(a.len() >= groups * MR * 4 && b.len() >= groups * NR * 4);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 2]; MR];
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        for g in 0..groups {
            let b0 = _mm256_loadu_si256(pb.add(g * NR * 4) as *const __m256i);
            let b1 = _mm256_loadu_si256(pb.add(g * NR * 4 + 32) as *const __m256i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let w =
                    _mm256_set1_epi32((pa.add(g * MR * 4 + r * 4) as *const i32).read_unaligned());
                // The unsigned operand first.
                let (p0, p1) = if SWAP {
                    (_mm256_maddubs_epi16(w, b0), _mm256_maddubs_epi16(w, b1))
                } else {
                    (_mm256_maddubs_epi16(b0, w), _mm256_maddubs_epi16(b1, w))
                };
                let (p0, p1) = (_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones));
                acc[0] = _mm256_add_epi32(acc[0], p0);
                acc[1] = _mm256_add_epi32(acc[1], p1);
            }
        }
        finish(acc, ep, y);
    }

    /// The AVX-512 VNNI tile (256-bit, EVEX): `vpdpbusd` does the four products and the sum
    /// in one instruction.
    ///
    /// # Safety
    /// The CPU must have AVX512-VNNI and AVX512-VL; buffers as for [`tile_avx2`].
    #[cfg(feature = "avx512")]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub(super) unsafe fn tile_vnni<const SWAP: bool>(
        groups: usize,
        a: &[u8],
        b: &[u8],
        ep: &Epilogue,
        y: &mut [[f32; NR]; MR],
    ) {
        debug_assert!(a.len() >= groups * MR * 4 && b.len() >= groups * NR * 4);
        let mut acc = [[_mm256_setzero_si256(); 2]; MR];
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        for g in 0..groups {
            let b0 = _mm256_loadu_si256(pb.add(g * NR * 4) as *const __m256i);
            let b1 = _mm256_loadu_si256(pb.add(g * NR * 4 + 32) as *const __m256i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let w =
                    _mm256_set1_epi32((pa.add(g * MR * 4 + r * 4) as *const i32).read_unaligned());
                if SWAP {
                    acc[0] = _mm256_dpbusd_epi32(acc[0], w, b0);
                    acc[1] = _mm256_dpbusd_epi32(acc[1], w, b1);
                } else {
                    acc[0] = _mm256_dpbusd_epi32(acc[0], b0, w);
                    acc[1] = _mm256_dpbusd_epi32(acc[1], b1, w);
                }
            }
        }
        finish(acc, ep, y);
    }
}

/// Which integer tile kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tile {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    Vnni,
}

fn best_tile() -> Tile {
    #[cfg(target_arch = "x86_64")]
    {
        // The VNNI tile is part of the `avx512` build; the AVX2 build stands for AVX2-only
        // CPUs (Zen 2/3 and the like), which have no VNNI.
        #[cfg(feature = "avx512")]
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            return Tile::Vnni;
        }
        if is_x86_feature_detected!("avx2") {
            return Tile::Avx2;
        }
    }
    Tile::Scalar
}

/// The name of the int8 kernel this build runs on this CPU: `"avx512-vnni"` (the `avx512`
/// feature on a CPU with AVX512-VNNI), `"avx2"` or `"scalar"`.
///
/// ```
/// assert!(["avx512-vnni", "avx2", "scalar"].contains(&voxbrain::nnet::qgemm::int8_path()));
/// ```
pub fn int8_path() -> &'static str {
    match best_tile() {
        Tile::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Tile::Avx2 => "avx2",
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Tile::Vnni => "avx512-vnni",
    }
}

fn run_tile<const SWAP: bool>(
    tile: Tile,
    groups: usize,
    a: &[u8],
    b: &[u8],
    ep: &Epilogue,
    y: &mut [[f32; NR]; MR],
) {
    match tile {
        Tile::Scalar => tile_scalar::<SWAP>(groups, a, b, ep, y),
        // SAFETY: `best_tile` chose these only on CPUs with the features; the packing gives
        // each block and panel exactly `groups` groups.
        #[cfg(target_arch = "x86_64")]
        Tile::Avx2 => unsafe { x86::tile_avx2::<SWAP>(groups, a, b, ep, y) },
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Tile::Vnni => unsafe { x86::tile_vnni::<SWAP>(groups, a, b, ep, y) },
    }
}

/// `dst = w x` with `w` quantized (`[m, k]`) and `x` (`[k, n]`, any strides) quantized here;
/// `dst` row-major `[m, n]` with rows `ldd` apart. Multi-threaded over row blocks.
pub(crate) fn qmatmul_into(dst: &mut [f32], ldd: usize, w: &QWeight, x: View) -> Result<()> {
    qmatmul_with(dst, ldd, w, x, best_tile())
}

/// `dst = x w^T + bias + residual` for row-major activations `x` `[n, in]` and a weight
/// quantized by [`QWeight::quantize_for_rows`] (`[out, in]`); `dst` and `residual` row-major
/// `[n, out]`, `bias` `[out]`, both optional. Each row of `x` is quantized (per row) right
/// before its products, while in cache, and each tile written once with the additions;
/// multi-threaded over rows.
pub(crate) fn qlinear_rows(
    dst: &mut [f32],
    add: (Option<&[f32]>, Option<&[f32]>),
    w: &QWeight,
    x: &[f32],
    n: usize,
) -> Result<()> {
    qlinear_rows_with(dst, add, w, x, n, best_tile())
}

fn qlinear_rows_with(
    dst: &mut [f32],
    (bias, residual): (Option<&[f32]>, Option<&[f32]>),
    w: &QWeight,
    x: &[f32],
    n: usize,
    tile: Tile,
) -> Result<()> {
    let (out, k) = (w.rows, w.cols);
    if w.block != NR
        || x.len() != n * k
        || dst.len() != n * out
        || bias.is_some_and(|b| b.len() != out)
        || residual.is_some_and(|r| r.len() != n * out)
    {
        candle_core::bail!("int8 linear: [{n}, {k}] x [{out}, {k}]^T does not fit its buffers");
    }
    if n == 0 || out == 0 {
        return Ok(());
    }
    let groups = k.div_ceil(4);
    let blocks = n.div_ceil(MR);
    let threads = candle_core::utils::get_num_threads().max(1);
    let blocks_per_task = blocks.div_ceil(threads * 8).max(1);
    let task = |(t, dst): (usize, &mut [f32])| {
        let mut qa = vec![0u8; groups * MR * 4];
        let mut q = vec![0u8; groups * 4];
        let mut y = [[0f32; NR]; MR];
        let (mut xs, mut zero) = ([1f32; MR], [0i32; MR]);
        for (bi, dst) in dst.chunks_mut(MR * out).enumerate() {
            let r0 = (t * blocks_per_task + bi) * MR;
            let valid = MR.min(n - r0);
            qa.fill(0);
            for r in 0..MR {
                (xs[r], zero[r]) = (1.0, 0);
                if r < valid {
                    let row = &x[(r0 + r) * k..][..k];
                    let (lo, hi) = min_max(row);
                    (xs[r], zero[r]) = affine(lo, hi);
                    quantize_col(row, 1.0 / xs[r], zero[r] as f32, &mut q[..k]);
                    for (g, v) in q.chunks_exact(4).enumerate() {
                        qa[g * MR * 4 + r * 4..][..4].copy_from_slice(v);
                    }
                }
            }
            for (p, panel) in w.packed.chunks(groups * NR * 4).enumerate() {
                let c0 = p * NR;
                let width = NR.min(out - c0);
                let ep = Epilogue {
                    rs: &xs,
                    zr: &zero,
                    cs: w.scale[c0..c0 + NR].try_into().expect("padded"),
                    zc: w.sum[c0..c0 + NR].try_into().expect("padded"),
                };
                run_tile::<true>(tile, groups, &qa, panel, &ep, &mut y);
                let bias = bias.map(|b| &b[c0..c0 + width]);
                for (r, (y, d)) in y.iter().zip(dst.chunks_mut(out)).enumerate() {
                    let d = &mut d[c0..c0 + width];
                    d.copy_from_slice(&y[..width]);
                    // The order of torch's `residual + (x w^T + b)`.
                    if let Some(b) = bias {
                        d.iter_mut().zip(b).for_each(|(d, b)| *d += b);
                    }
                    if let Some(res) = residual {
                        let res = &res[(r0 + r) * out + c0..][..width];
                        d.iter_mut().zip(res).for_each(|(d, v)| *d += v);
                    }
                }
            }
        }
    };
    let chunks = dst.chunks_mut(blocks_per_task * MR * out).enumerate();
    if threads > 1 && blocks > blocks_per_task {
        chunks.par_bridge().for_each(task);
    } else {
        chunks.for_each(task);
    }
    Ok(())
}

fn qmatmul_with(dst: &mut [f32], ldd: usize, w: &QWeight, x: View, tile: Tile) -> Result<()> {
    let (m, k, n) = (w.rows, w.cols, x.cols);
    let x_fits = k == 0 || n == 0 || (k - 1) * x.rs + (n - 1) * x.cs < x.data.len();
    let dst_fits = m == 0 || n == 0 || (m - 1) * ldd + n <= dst.len();
    if w.block != MR {
        candle_core::bail!("int8 matmul: the weight was packed for qlinear_rows");
    }
    if x.rows != k || !x_fits || !dst_fits || ldd < n {
        candle_core::bail!(
            "int8 matmul: [{m}, {k}] x [{}, {n}] does not fit its buffers",
            x.rows
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let acts = quantize_acts(x);
    let groups = acts.groups;
    let panel_len = groups * NR * 4;
    let block_len = groups * MR * 4;
    let threads = candle_core::utils::get_num_threads().max(1);
    let blocks = m.div_ceil(MR);
    // A few tasks per thread balance the load; each owns whole rows of `dst`.
    let blocks_per_task = blocks.div_ceil(threads * 4).max(1);
    let rows_per_task = blocks_per_task * MR;
    let task = |(t, out): (usize, &mut [f32])| {
        let mut y = [[0f32; NR]; MR];
        let row0 = t * rows_per_task;
        let row_end = (row0 + rows_per_task).min(m);
        for (p, panel) in acts.packed.chunks(panel_len).enumerate() {
            let c0 = p * NR;
            let width = NR.min(n - c0);
            for b0 in (row0..row_end).step_by(MR) {
                let block = &w.packed[(b0 / MR) * block_len..][..block_len];
                let ep = Epilogue {
                    rs: w.scale[b0..b0 + MR].try_into().expect("padded"),
                    zr: w.sum[b0..b0 + MR].try_into().expect("padded"),
                    cs: acts.scale[c0..c0 + NR].try_into().expect("padded"),
                    zc: acts.zero[c0..c0 + NR].try_into().expect("padded"),
                };
                run_tile::<false>(tile, groups, block, panel, &ep, &mut y);
                for (r, y) in y.iter().enumerate().take(row_end - b0) {
                    out[(b0 + r - row0) * ldd + c0..][..width].copy_from_slice(&y[..width]);
                }
            }
        }
    };
    let used = (m - 1) * ldd + n;
    let chunks = dst[..used].chunks_mut(rows_per_task * ldd).enumerate();
    if threads > 1 && blocks > blocks_per_task {
        chunks.par_bridge().for_each(task);
    } else {
        chunks.for_each(task);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every tile kernel this CPU can run.
    fn available_tiles() -> Vec<Tile> {
        #[allow(unused_mut)]
        let mut tiles = vec![Tile::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                tiles.push(Tile::Avx2);
            }
            #[cfg(feature = "avx512")]
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                tiles.push(Tile::Vnni);
            }
        }
        tiles
    }

    fn f32_product(w: &[f32], x: View, m: usize) -> Vec<f32> {
        let (k, n) = (x.rows, x.cols);
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|r| w[i * k + r] as f64 * x.data[r * x.rs + j * x.cs] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn kernels_agree_exactly_and_stay_close_to_f32() -> Result<()> {
        // Ragged in every dimension, both layouts of the activations.
        for (m, k, n, transposed) in [
            (7, 13, 21, false),
            (33, 130, 40, true),
            (4, 4, 16, false),
            (1, 1, 1, false),
            (70, 515, 37, false),
        ] {
            let w = lcg(1 + m as u64, m * k);
            let xs = lcg(2 + n as u64, k * n)
                .iter()
                .map(|v| v + 0.3)
                .collect::<Vec<_>>();
            let x = if transposed {
                View::rows(&xs, n, k, k).t()
            } else {
                View::rows(&xs, k, n, n)
            };
            let q = QWeight::quantize(&w, m, k)?;
            let mut want = vec![0f32; m * n];
            qmatmul_with(&mut want, n, &q, x, Tile::Scalar)?;
            for tile in available_tiles() {
                let mut got = vec![0f32; m * n];
                qmatmul_with(&mut got, n, &q, x, tile)?;
                assert_eq!(got, want, "{tile:?} vs scalar at {m}x{k}x{n}");
            }
            let mut got = vec![0f32; m * n];
            qmatmul_into(&mut got, n, &q, x)?;
            assert_eq!(got, want, "{} vs scalar at {m}x{k}x{n}", int8_path());
            let exact = f32_product(&w, x, m);
            let err: f32 = exact
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                .sqrt();
            let norm: f32 = exact.iter().map(|a| a * a).sum::<f32>().sqrt();
            assert!(
                err <= 0.02 * norm,
                "{m}x{k}x{n}: relative error {}",
                err / norm
            );
        }
        Ok(())
    }

    #[test]
    fn row_activations_agree_exactly_and_stay_close_to_f32() -> Result<()> {
        for (n, k, out) in [(1, 3, 1), (9, 13, 17), (37, 130, 48), (64, 256, 40)] {
            let w = lcg(7 + out as u64, out * k);
            let x: Vec<f32> = lcg(8 + n as u64, n * k)
                .iter()
                .map(|v| v * 3.0 - 0.5)
                .collect();
            let q = QWeight::quantize_for_rows(&w, out, k)?;
            let init: Vec<f32> = (0..n * out).map(|i| (i % 7) as f32).collect();
            let bias: Vec<f32> = (0..out).map(|i| i as f32 * 0.5).collect();
            let mut want = vec![0f32; n * out];
            qlinear_rows_with(
                &mut want,
                (Some(&bias), Some(&init)),
                &q,
                &x,
                n,
                Tile::Scalar,
            )?;
            for tile in available_tiles() {
                let mut got = vec![0f32; n * out];
                qlinear_rows_with(&mut got, (Some(&bias), Some(&init)), &q, &x, n, tile)?;
                assert_eq!(got, want, "{tile:?} vs scalar at {n}x{k}x{out}");
            }
            let mut got = vec![0f32; n * out];
            qlinear_rows(&mut got, (None, None), &q, &x, n)?;
            // y = x w^T through the f32 reference (which computes w x for x [k, n]).
            let xt = View::rows(&x, n, k, k).t();
            let exact = f32_product(&w, xt, out); // [out, n]
            let (mut err, mut norm) = (0f32, 0f32);
            for i in 0..n {
                for o in 0..out {
                    let (a, b) = (exact[o * n + i], got[i * out + o]);
                    let added = want[i * out + o] - init[i * out + o] - bias[o];
                    assert!((added - b).abs() <= 1e-4 * b.abs().max(1.0) * 10.0);
                    err += (a - b).powi(2);
                    norm += a * a;
                }
            }
            // (A 3-term dot product is too short to average the rounding out.)
            if k >= 8 {
                let rel = (err / norm).sqrt();
                assert!(rel <= 0.02, "{n}x{k}x{out}: relative error {rel}");
            }
        }
        // A weight packed for the other product is refused by each.
        let w = lcg(1, 8 * 8);
        let mut y = vec![0f32; 64];
        let for_rows = QWeight::quantize_for_rows(&w, 8, 8)?;
        assert!(qmatmul_into(&mut y, 8, &for_rows, View::rows(&w, 8, 8, 8)).is_err());
        assert!(qlinear_rows(&mut y, (None, None), &QWeight::quantize(&w, 8, 8)?, &w, 8).is_err());
        Ok(())
    }

    #[test]
    fn weight_roundtrip_is_within_half_a_step() -> Result<()> {
        let w = lcg(9, 6 * 10);
        let q = QWeight::quantize(&w, 6, 10)?;
        for (r, (a, b)) in w.chunks(10).zip(q.dequantize().chunks(10)).enumerate() {
            let step = a.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for (a, b) in a.iter().zip(b) {
                assert!((a - b).abs() <= step * 0.5 + 1e-7, "row {r}: {a} vs {b}");
            }
        }
        assert!(QWeight::quantize(&w, 7, 10).is_err());
        Ok(())
    }

    #[test]
    fn padding_to_a_wider_dst_keeps_the_rest() -> Result<()> {
        let (m, k, n, ldd) = (5, 8, 3, 7);
        let (w, xs) = (lcg(3, m * k), lcg(4, k * n));
        let q = QWeight::quantize(&w, m, k)?;
        let mut dst = vec![f32::NAN; (m - 1) * ldd + n];
        qmatmul_into(&mut dst, ldd, &q, View::rows(&xs, k, n, n))?;
        for (i, v) in dst.iter().enumerate() {
            assert_eq!(v.is_nan(), i % ldd >= n, "element {i}");
        }
        let mut short = vec![0f32; 4];
        assert!(qmatmul_into(&mut short, n, &q, View::rows(&xs, k, n, n)).is_err());
        Ok(())
    }
}
