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
/// micro-kernel: blocks of `MR` rows, the columns in groups of 4 (one 32-bit broadcast per row
/// and group).
#[derive(Debug, Clone)]
pub struct QWeight {
    rows: usize,
    cols: usize,
    /// `[rows / MR][cols / 4][MR][4]`, zero-padded.
    packed: Vec<i8>,
    scale: Vec<f32>,
    /// Sum of each row's quantized values (removes the activations' zero point).
    sum: Vec<i32>,
}

impl QWeight {
    /// Quantizes the row-major `[rows, cols]` matrix `w`.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        if w.len() != rows * cols {
            candle_core::bail!("int8 weight: {} values for [{rows}, {cols}]", w.len());
        }
        let groups = cols.div_ceil(4);
        let mut packed = vec![0i8; rows.div_ceil(MR) * groups * MR * 4];
        // Padded to whole blocks (the tiles read `MR` of each).
        let mut scale = vec![1f32; rows.div_ceil(MR) * MR];
        let mut sum = vec![0i32; rows.div_ceil(MR) * MR];
        for (r, row) in w.chunks(cols.max(1)).take(rows).enumerate() {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax > 0.0 && amax.is_finite() {
                scale[r] = amax / 127.0;
            }
            let inv = 1.0 / scale[r];
            let base = (r / MR) * groups * MR * 4 + (r % MR) * 4;
            for (k, &v) in row.iter().enumerate() {
                let q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
                packed[base + (k / 4) * MR * 4 + k % 4] = q;
                sum[r] += q as i32;
            }
        }
        Ok(Self {
            rows,
            cols,
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
        let groups = self.cols.div_ceil(4);
        let mut w = vec![0f32; self.rows * self.cols];
        for (r, row) in w.chunks_mut(self.cols.max(1)).take(self.rows).enumerate() {
            let base = (r / MR) * groups * MR * 4 + (r % MR) * 4;
            for (k, v) in row.iter_mut().enumerate() {
                *v = self.packed[base + (k / 4) * MR * 4 + k % 4] as f32 * self.scale[r];
            }
        }
        w
    }
}

/// A 2-d weight tensor `[out, in]` (any device or dtype; read to the host), quantized.
pub(crate) fn quantize_tensor(w: &candle_core::Tensor) -> Result<QWeight> {
    let (rows, cols) = w.dims2()?;
    let v = w
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    QWeight::quantize(&v, rows, cols)
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
    let (k, n) = (x.rows, x.cols);
    let mut lo = vec![0f32; n];
    let mut hi = vec![0f32; n];
    if x.rs == 1 {
        // Each column is contiguous (row-major activations `[n, k]` seen transposed).
        for c in 0..n {
            (lo[c], hi[c]) = min_max(&x.data[c * x.cs..][..k]);
        }
    } else if x.cs == 1 {
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
        let range = hi[c] - lo[c];
        if range > 0.0 && range.is_finite() {
            scale[c] = range / 127.0;
            zero[c] = (-lo[c] / scale[c]).round_ties_even().clamp(0.0, 127.0) as i32;
        }
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
            if x.rs == 1 {
                let mut col = vec![0u8; groups * 4];
                for c in 0..width {
                    quantize_col(
                        &x.data[(c0 + c) * x.cs..][..k],
                        inv[c],
                        zf[c],
                        &mut col[..k],
                    );
                    for (g, v) in col.chunks_exact(4).enumerate() {
                        panel[g * NR * 4 + c * 4..][..4].copy_from_slice(v);
                    }
                }
            } else if x.cs == 1 && width == NR {
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
            lo[j] = lo[j].min(c[j]);
            hi[j] = hi[j].max(c[j]);
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
    for ((v, l), h) in row.iter().zip(lo.iter_mut()).zip(hi.iter_mut()) {
        *l = l.min(*v);
        *h = h.max(*v);
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

/// What turns a tile's integer sums into f32: `y[r][c] = (wscale[r] * xscale[c]) *
/// (acc[r][c] - zero[c] * wsum[r])`, in this order in every kernel (so they agree exactly).
struct Epilogue<'a> {
    wscale: &'a [f32; MR],
    wsum: &'a [i32; MR],
    xscale: &'a [f32; NR],
    zero: &'a [i32; NR],
}

/// One `MR x NR` tile: `y = epilogue(sum_k a[r][k] * b[k][c])` (integer sums; no saturation
/// can occur for the value ranges above, so this equals the SIMD kernels exactly).
fn tile_scalar(groups: usize, a: &[i8], b: &[u8], ep: &Epilogue, y: &mut [[f32; NR]; MR]) {
    let mut acc = [[0i32; NR]; MR];
    for g in 0..groups {
        let (a, b) = (&a[g * MR * 4..][..MR * 4], &b[g * NR * 4..][..NR * 4]);
        for (r, acc) in acc.iter_mut().enumerate() {
            for (c, acc) in acc.iter_mut().enumerate() {
                for j in 0..4 {
                    *acc += a[r * 4 + j] as i32 * b[c * 4 + j] as i32;
                }
            }
        }
    }
    for (r, (y, acc)) in y.iter_mut().zip(&acc).enumerate() {
        for (c, (y, &acc)) in y.iter_mut().zip(acc).enumerate() {
            *y = (ep.wscale[r] * ep.xscale[c]) * (acc - ep.zero[c] * ep.wsum[r]) as f32;
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
        let z = [0, 8].map(|o| _mm256_loadu_si256(ep.zero.as_ptr().add(o) as *const __m256i));
        let xs = [0, 8].map(|o| _mm256_loadu_ps(ep.xscale.as_ptr().add(o)));
        for (r, (y, acc)) in y.iter_mut().zip(acc).enumerate() {
            let (ws, wsum) = (_mm256_set1_ps(ep.wscale[r]), _mm256_set1_epi32(ep.wsum[r]));
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
    pub(super) unsafe fn tile_avx2(
        groups: usize,
        a: &[i8],
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
                let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(b0, w), ones);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(b1, w), ones);
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
    pub(super) unsafe fn tile_vnni(
        groups: usize,
        a: &[i8],
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
                acc[0] = _mm256_dpbusd_epi32(acc[0], b0, w);
                acc[1] = _mm256_dpbusd_epi32(acc[1], b1, w);
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

fn run_tile(tile: Tile, groups: usize, a: &[i8], b: &[u8], ep: &Epilogue, y: &mut [[f32; NR]; MR]) {
    match tile {
        Tile::Scalar => tile_scalar(groups, a, b, ep, y),
        // SAFETY: `best_tile` chose these only on CPUs with the features; the packing gives
        // each block and panel exactly `groups` groups.
        #[cfg(target_arch = "x86_64")]
        Tile::Avx2 => unsafe { x86::tile_avx2(groups, a, b, ep, y) },
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Tile::Vnni => unsafe { x86::tile_vnni(groups, a, b, ep, y) },
    }
}

/// `dst = w x` with `w` quantized (`[m, k]`) and `x` (`[k, n]`, any strides) quantized here;
/// `dst` row-major `[m, n]` with rows `ldd` apart. Multi-threaded over row blocks.
pub(crate) fn qmatmul_into(dst: &mut [f32], ldd: usize, w: &QWeight, x: View) -> Result<()> {
    qmatmul_with(dst, (ldd, 1), false, w, x, best_tile())
}

/// `dst (+)= w x` as [`qmatmul_into`], element `(i, j)` of the result at
/// `dst[i * strides.0 + j * strides.1]` (e.g. `(1, m)` writes the transpose, a row-major
/// `[n, m]`); with `accumulate` the product is added to what `dst` holds.
pub(crate) fn qmatmul_strided(
    dst: &mut [f32],
    strides: (usize, usize),
    accumulate: bool,
    w: &QWeight,
    x: View,
) -> Result<()> {
    qmatmul_with(dst, strides, accumulate, w, x, best_tile())
}

/// The output pointer shared by the tasks; each writes only its own rows of the result.
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements (distinct rows of the result, and the strides were
// checked to map distinct `(i, j)` to distinct elements).
unsafe impl Sync for SharedOut {}

fn qmatmul_with(
    dst: &mut [f32],
    (ros, cos): (usize, usize),
    accumulate: bool,
    w: &QWeight,
    x: View,
    tile: Tile,
) -> Result<()> {
    let (m, k, n) = (w.rows, w.cols, x.cols);
    let x_fits = k == 0 || n == 0 || (k - 1) * x.rs + (n - 1) * x.cs < x.data.len();
    let dst_fits = m == 0 || n == 0 || (m - 1) * ros + (n - 1) * cos < dst.len();
    // Distinct (i, j) must land on distinct elements: one axis strides over the whole other.
    let disjoint = m <= 1 || n <= 1 || ros >= n * cos || cos >= m * ros;
    if x.rows != k || !x_fits || !dst_fits || !disjoint {
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
    // A few tasks per thread balance the load; each owns whole rows of the result.
    let blocks_per_task = blocks.div_ceil(threads * 4).max(1);
    let rows_per_task = blocks_per_task * MR;
    let out = SharedOut(dst.as_mut_ptr());
    let task = |t: usize| {
        let out = &out;
        let mut y = [[0f32; NR]; MR];
        let row0 = t * rows_per_task;
        let row_end = (row0 + rows_per_task).min(m);
        for (p, panel) in acts.packed.chunks(panel_len).enumerate() {
            let c0 = p * NR;
            let width = NR.min(n - c0);
            for b0 in (row0..row_end).step_by(MR) {
                let block = &w.packed[(b0 / MR) * block_len..][..block_len];
                let ep = Epilogue {
                    wscale: w.scale[b0..b0 + MR].try_into().expect("padded"),
                    wsum: w.sum[b0..b0 + MR].try_into().expect("padded"),
                    xscale: acts.scale[c0..c0 + NR].try_into().expect("padded"),
                    zero: acts.zero[c0..c0 + NR].try_into().expect("padded"),
                };
                run_tile(tile, groups, block, panel, &ep, &mut y);
                for (r, y) in y.iter().enumerate().take(row_end - b0) {
                    let i = b0 + r;
                    if cos == 1 {
                        // SAFETY: in bounds (`dst_fits`); only this task writes row `i`.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(out.0.add(i * ros + c0), width)
                        };
                        if accumulate {
                            row.iter_mut().zip(y).for_each(|(d, v)| *d += v);
                        } else {
                            row.copy_from_slice(&y[..width]);
                        }
                        continue;
                    }
                    for (c, &v) in y.iter().enumerate().take(width) {
                        // SAFETY: as above.
                        unsafe {
                            let d = out.0.add(i * ros + (c0 + c) * cos);
                            *d = if accumulate { *d + v } else { v };
                        }
                    }
                }
            }
        }
    };
    let tasks = m.div_ceil(rows_per_task);
    if threads > 1 && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
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
            qmatmul_with(&mut want, (n, 1), false, &q, x, Tile::Scalar)?;
            for tile in available_tiles() {
                let mut got = vec![0f32; m * n];
                qmatmul_with(&mut got, (n, 1), false, &q, x, tile)?;
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
    fn transposed_output_accumulates() -> Result<()> {
        // y [n, m] row-major += (w x)^T, x given as row-major [n, k] (SepFormer's layout).
        let (m, k, n) = (9, 20, 18);
        let (w, xs) = (lcg(5, m * k), lcg(6, n * k));
        let q = QWeight::quantize(&w, m, k)?;
        let x = View::rows(&xs, n, k, k).t();
        let mut plain = vec![0f32; m * n];
        qmatmul_into(&mut plain, n, &q, x)?;
        let mut y: Vec<f32> = (0..n * m).map(|i| i as f32).collect();
        qmatmul_strided(&mut y, (1, m), true, &q, x)?;
        for i in 0..m {
            for j in 0..n {
                assert_eq!(
                    y[j * m + i],
                    (j * m + i) as f32 + plain[i * n + j],
                    "({i}, {j})"
                );
            }
        }
        // Overlapping strides are refused.
        assert!(qmatmul_strided(&mut y, (1, 1), false, &q, x).is_err());
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
