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

use super::fused::f32_vec;
use super::gemm::View;

mod acts;
#[cfg(test)]
pub(crate) mod tests;
mod tiles;

use acts::{affine, min_max, quantize_acts, quantize_col};
pub use tiles::int8_path;
use tiles::{best_tile, run_tile, Epilogue, Tile};

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
///
/// ```
/// use voxbrain::nnet::qgemm::QWeight;
/// let w = [0.5f32, -1.0, 0.25, 2.0, 0.0, -0.125];
/// let q = QWeight::quantize(&w, 2, 3).unwrap();
/// assert_eq!(q.dims(), (2, 3));
/// // Within half a step (max |row| / 127 / 2) of the original.
/// let back = q.dequantize();
/// assert!((back[1] + 1.0).abs() < 0.5 / 127.0 + 1e-7);
/// ```
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
    QWeight::quantize(&f32_vec(w)?, rows, cols)
}

/// [`quantize_tensor`] for [`qlinear_rows`] (a `Linear` weight `[out, in]`).
pub(crate) fn quantize_linear(w: &candle_core::Tensor) -> Result<QWeight> {
    let (rows, cols) = w.dims2()?;
    QWeight::quantize_for_rows(&f32_vec(w)?, rows, cols)
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
