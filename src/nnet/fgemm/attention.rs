//! One head of self-attention on the AVX2 tiles (see [`attention_head`]).

use candle_core::Result;
use rayon::prelude::*;

use super::{rows_into, rows_into_uninit, supported, Epilogue, PackedW, MR, NR};
use crate::nnet::gemm::View;

/// Reused buffers of [`attention_head`] (one per thread).
#[derive(Default)]
pub(crate) struct HeadScratch {
    /// Keys as tile rows, `[t / MR][hd][MR]`.
    pub(super) k: Vec<f32>,
    /// Values transposed, as tile rows: `[hd / MR][t][MR]`.
    pub(super) v: Vec<f32>,
    /// `NR` scaled queries transposed: `[hd][NR]`.
    pub(super) q: Vec<f32>,
    /// Their scores, then probabilities, transposed: `[t][NR]`.
    pub(super) p: Vec<f32>,
    /// Their context transposed: `[hd / MR * MR][NR]`.
    pub(super) ctx: Vec<f32>,
}

/// One head of self-attention, `out = softmax((q * scale) k^T) v`, in torch's order of
/// operations, on this thread: `q`, `k`, `v` are `[t, hd]` views (e.g. into the packed
/// in-projection), `out` is `[t, hd]` with rows `ldo` apart.
///
/// By blocks of `NR` queries, transposed: the keys are the tile's broadcast rows and the
/// queries its vector lanes, so the scores come out as `[t][NR]`, which is both what a
/// softmax down the columns reads with full vectors and the layout the product with the
/// values reads (as its panel, with the values' dimensions as broadcast rows). Nothing is
/// transposed between the two products, and a block's scores (`t * NR` values) stay in L1.
pub(crate) fn attention_head(
    out: &mut [f32],
    (q, k, v): (View, View, View),
    scale: f32,
    ldo: usize,
    s: &mut HeadScratch,
) -> Result<()> {
    let (t, hd) = (q.rows, q.cols);
    let out_fits = t == 0 || (ldo >= hd && out.len() >= (t - 1) * ldo + hd);
    let shapes_ok = (k.rows, k.cols) == (t, hd) && (v.rows, v.cols) == (t, hd);
    if !shapes_ok || !out_fits || !q.fits() || !k.fits() || !v.fits() {
        candle_core::bail!("fgemm: attention operands are not all [{t}, {hd}]");
    }
    if !supported() {
        candle_core::bail!("fgemm: this CPU lacks AVX2 or FMA");
    }
    if t == 0 || hd == 0 {
        return Ok(());
    }
    pack_tile_rows(&mut s.k, k);
    pack_tile_rows(&mut s.v, v.t());
    s.q.resize(hd * NR, 0.0);
    s.p.resize(t * NR, 0.0);
    s.ctx.resize(hd.next_multiple_of(MR) * NR, 0.0);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 and FMA are present (`supported`); every buffer was sized above.
    unsafe {
        super::x86::attention(out, ldo, q, scale, s)
    };
    Ok(())
}

/// Packs `a` (`[rows, depth]`) as the broadcast side of the tiles: `[rows / MR][depth][MR]`,
/// zero rows after the last.
fn pack_tile_rows(dst: &mut Vec<f32>, a: View) {
    let (rows, depth) = (a.rows, a.cols);
    dst.resize(rows.div_ceil(MR) * MR * depth, 0.0);
    if depth == 0 {
        return;
    }
    for (ti, d) in dst.chunks_mut(MR * depth).enumerate() {
        if a.rs == 1 && (ti + 1) * MR <= rows {
            // A tile's rows are adjacent (e.g. values read transposed): MR values per step.
            for (k, d) in d.chunks_exact_mut(MR).enumerate() {
                d.copy_from_slice(&a.data[ti * MR + k * a.cs..][..MR]);
            }
            continue;
        }
        for i in 0..MR {
            let r = ti * MR + i;
            if r >= rows {
                (0..depth).for_each(|k| d[k * MR + i] = 0.0);
            } else if a.cs == 1 {
                let src = &a.data[r * a.rs..][..depth];
                src.iter().enumerate().for_each(|(k, &v)| d[k * MR + i] = v);
            } else {
                (0..depth).for_each(|k| d[k * MR + i] = a.data[r * a.rs + k * a.cs]);
            }
        }
    }
}

/// Softmax down each of the `NR` columns of `p` (`[rows][NR]`), as `softmax_row` does along
/// a row: the maximum subtracted, `fastmath::exp`, times the reciprocal of the sum (NaN
/// anywhere in a column makes the column NaN).
#[inline(always)]
pub(super) fn softmax_columns(p: &mut [f32]) {
    let mut max = [f32::NEG_INFINITY; NR];
    for row in p.chunks_exact(NR) {
        for c in 0..NR {
            max[c] = max[c].max(row[c]);
        }
    }
    let mut sum = [0f32; NR];
    for row in p.chunks_exact_mut(NR) {
        for c in 0..NR {
            row[c] = crate::fastmath::exp(row[c] - max[c]);
            sum[c] += row[c];
        }
    }
    let inv = sum.map(|s| 1.0 / s);
    for row in p.chunks_exact_mut(NR) {
        for c in 0..NR {
            row[c] *= inv[c];
        }
    }
}

/// The attention context of one sequence, `ctx` `[t, d]`, from its packed projection `qkv`
/// `[t, 3 d]`: each head's `softmax((q * sqrt(1 / hd)) k^T) v` ([`attention_head`]) written
/// into its columns (torch's order and scale).
pub(crate) fn sequence_context(
    ctx: &mut [f32],
    qkv: &[f32],
    (t, d, h): (usize, usize, usize),
    s: &mut HeadScratch,
) -> Result<()> {
    if h == 0 || !d.is_multiple_of(h) || qkv.len() < t * 3 * d {
        candle_core::bail!("fgemm: a projection of [{t}, 3 x {d}] with {h} heads expected");
    }
    let hd = d / h;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    for o in (0..d).step_by(hd.max(1)) {
        let view = |at: usize| View::rows(&qkv[at + o..], t, hd, 3 * d);
        attention_head(&mut ctx[o..], (view(0), view(d), view(2 * d)), scale, d, s)?;
    }
    Ok(())
}

/// Whether a batch of `b` sequences is worth one task per sequence (enough tasks for every
/// thread to stay busy to the end), rather than one per sequence-head.
pub(crate) fn per_sequence(b: usize) -> bool {
    b >= 4 * rayon::current_num_threads()
}

/// A whole self-attention layer, `residual + out_proj(attention(in_proj(x)))` (torch's
/// `nn.MultiheadAttention` without masks, plus the skip connection) for `x` `[b, t, d]`, one
/// rayon task per sequence: its projection, heads and output projection run back to back
/// while the sequence's `[t, 3 d]` projection and context are in L2, instead of as three
/// passes over the whole batch. `w_in` is `[3 d, d]`, `w_out` `[d, d]`.
pub(crate) fn self_attention(
    x: &[f32],
    (b, t, d, h): (usize, usize, usize, usize),
    (w_in, b_in): (&PackedW, &[f32]),
    (w_out, b_out): (&PackedW, &[f32]),
    residual: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let n = b * t * d;
    let ok = h > 0
        && d.is_multiple_of(h)
        && x.len() == n
        && w_in.dims() == (3 * d, d)
        && w_out.dims() == (d, d)
        && b_in.len() == 3 * d
        && b_out.len() == d
        && residual.is_none_or(|r| r.len() == n);
    if !ok {
        candle_core::bail!("fgemm: self-attention operands do not fit [{b}, {t}, {d}], {h} heads");
    }
    let mut y = Vec::with_capacity(n);
    if n == 0 {
        y.resize(n, 0.0);
        return Ok(y);
    }
    let in_ep = Epilogue {
        bias: Some(b_in),
        ..Default::default()
    };
    y.spare_capacity_mut()[..n]
        .par_chunks_mut(t * d)
        .enumerate()
        .try_for_each_init(
            || {
                (
                    vec![0f32; t * 3 * d],
                    vec![0f32; t * d],
                    HeadScratch::default(),
                )
            },
            |(qkv, ctx, s), (bi, yb)| {
                rows_into(qkv, &x[bi * t * d..][..t * d], d, t, w_in, in_ep)?;
                sequence_context(ctx, qkv, (t, d, h), s)?;
                let out_ep = Epilogue {
                    bias: Some(b_out),
                    residual: residual.map(|r| &r[bi * t * d..][..t * d]),
                    relu: false,
                };
                rows_into_uninit(yb, ctx, d, t, w_out, out_ep)
            },
        )?;
    // SAFETY: every sequence's `rows_into_uninit` returned Ok: all `n` values are written.
    unsafe { y.set_len(n) };
    Ok(y)
}
