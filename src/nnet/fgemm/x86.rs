//! The AVX2 + FMA micro-kernel (a 6 x 16 tile of FMAs), its drivers and the attention
//! kernel.

use super::{Epilogue, HeadScratch, PackedW, View, KC, MR, NR};
use std::arch::x86_64::*;
use std::cell::RefCell;

thread_local! {
    /// The packed activations of one pass (reused: no allocation per call).
    static XPACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// All rows of `y` (room for `rows * out` values; see `rows_into`), pass by pass over the
/// depth: the pass's activations are packed once as `[rows / MR][kc][MR]` (zero rows pad the
/// last tile), then each weight panel sweeps all row tiles while it is in L1.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn block(
    y: *mut f32,
    x: &[f32],
    ldx: usize,
    rows: usize,
    w: &PackedW,
    ep: &Epilogue,
) {
    let (out, inp) = w.dims();
    let panels = out.div_ceil(NR);
    let tiles = rows.div_ceil(MR);
    // The bias padded to whole panels (padding columns are never stored).
    let mut bias = [0f32; NR];
    XPACK.with_borrow_mut(|xp| {
        xp.resize(tiles * MR * KC.min(inp).max(1), 0.0);
        let mut k0 = 0;
        loop {
            let kc = KC.min(inp - k0);
            pack_rows(xp, x, ldx, rows, k0, kc);
            let pass = Pass {
                kc,
                first: k0 == 0,
                last: k0 + kc == inp,
                relu: ep.relu,
            };
            for p in 0..panels {
                let (c0, cols) = (p * NR, NR.min(out - p * NR));
                if let Some(b) = ep.bias {
                    bias[..cols].copy_from_slice(&b[c0..c0 + cols]);
                }
                let wp = w.data.as_ptr().add((p * inp + k0) * NR);
                for ti in 0..tiles {
                    let r = ti * MR;
                    let t = Tile {
                        x: xp.as_ptr().add(ti * MR * kc),
                        w: wp,
                        y: y.add(r * out + c0),
                        ldy: out,
                        rows: MR.min(rows - r),
                        cols,
                        bias: bias.as_ptr(),
                        has_bias: ep.bias.is_some(),
                        residual: ep.residual.map(|res| res.as_ptr().add(r * out + c0)),
                    };
                    tile(&t, &pass);
                }
            }
            k0 += kc;
            if k0 >= inp {
                break;
            }
        }
    });
}

/// See `attention_head`: `s.k` and `s.v` are packed, the buffers sized.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn attention(
    out: &mut [f32],
    ldo: usize,
    q: View,
    scale: f32,
    s: &mut HeadScratch,
) {
    let (t, hd) = (q.rows, q.cols);
    let zero = [0f32; NR];
    let plain = |kc| Pass {
        kc,
        first: true,
        last: true,
        relu: false,
    };
    let tile_at = |x: *const f32, w: *const f32, y: *mut f32, rows: usize| Tile {
        x,
        w,
        y,
        ldy: NR,
        rows,
        cols: NR,
        bias: zero.as_ptr(),
        has_bias: false,
        residual: None,
    };
    for q0 in (0..t).step_by(NR) {
        let nq = NR.min(t - q0);
        // The block's queries, scaled (torch scales q before the product), `[hd][NR]`.
        for k in 0..hd {
            for c in 0..NR {
                s.q[k * NR + c] = if c < nq {
                    q.data[(q0 + c) * q.rs + k * q.cs] * scale
                } else {
                    0.0
                };
            }
        }
        // Scores transposed, `[t][NR]`: key tiles against the query panel.
        for ti in 0..t.div_ceil(MR) {
            let x = s.k.as_ptr().add(ti * MR * hd);
            let y = s.p.as_mut_ptr().add(ti * MR * NR);
            tile(
                &tile_at(x, s.q.as_ptr(), y, MR.min(t - ti * MR)),
                &plain(hd),
            );
        }
        super::attention::softmax_columns(&mut s.p[..t * NR]);
        // Context transposed, `[hd][NR]`: value-dimension tiles against the
        // probabilities.
        for ti in 0..hd.div_ceil(MR) {
            let x = s.v.as_ptr().add(ti * MR * t);
            let y = s.ctx.as_mut_ptr().add(ti * MR * NR);
            tile(&tile_at(x, s.p.as_ptr(), y, MR), &plain(t));
        }
        for c in 0..nq {
            let row = &mut out[(q0 + c) * ldo..][..hd];
            for (d, o) in row.iter_mut().enumerate() {
                *o = s.ctx[d * NR + c];
            }
        }
    }
}

/// Packs columns `k0..k0 + kc` of `x`'s rows as `[tiles][kc][MR]`, zero rows after the
/// last.
#[inline(always)]
fn pack_rows(xp: &mut [f32], x: &[f32], ldx: usize, rows: usize, k0: usize, kc: usize) {
    for (ti, dst) in xp
        .chunks_mut(MR * kc.max(1))
        .take(rows.div_ceil(MR))
        .enumerate()
    {
        for i in 0..MR {
            let r = ti * MR + i;
            if r < rows {
                let src = &x[r * ldx + k0..][..kc];
                for (k, &v) in src.iter().enumerate() {
                    dst[k * MR + i] = v;
                }
            } else {
                (0..kc).for_each(|k| dst[k * MR + i] = 0.0);
            }
        }
    }
}

/// Where one tile reads and writes (row `r`, panel `c0`).
struct Tile {
    /// Packed activations `[kc][MR]`.
    x: *const f32,
    /// The panel's slice `[kc][NR]`.
    w: *const f32,
    y: *mut f32,
    ldy: usize,
    /// Valid rows (`MR` but in the last tile) and columns (`NR` but in the last panel).
    rows: usize,
    cols: usize,
    /// `[NR]`, added when `has_bias` (no bias adds nothing, not zero: -0 stays -0).
    bias: *const f32,
    has_bias: bool,
    residual: Option<*const f32>,
}

/// One pass over the depth.
struct Pass {
    kc: usize,
    first: bool,
    last: bool,
    relu: bool,
}

/// `NR` values at `p`, of which the first `cols` are read (the rest zero).
#[inline(always)]
unsafe fn load(p: *const f32, cols: usize) -> [__m256; 2] {
    if cols == NR {
        return [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))];
    }
    let mut buf = [0f32; NR];
    std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), cols);
    [
        _mm256_loadu_ps(buf.as_ptr()),
        _mm256_loadu_ps(buf.as_ptr().add(8)),
    ]
}

/// Stores the first `cols` of `v` at `p`.
#[inline(always)]
unsafe fn store(p: *mut f32, v: [__m256; 2], cols: usize) {
    if cols == NR {
        _mm256_storeu_ps(p, v[0]);
        _mm256_storeu_ps(p.add(8), v[1]);
        return;
    }
    let mut buf = [0f32; NR];
    _mm256_storeu_ps(buf.as_mut_ptr(), v[0]);
    _mm256_storeu_ps(buf.as_mut_ptr().add(8), v[1]);
    std::ptr::copy_nonoverlapping(buf.as_ptr(), p, cols);
}

/// Depth step `k` of a tile: two weight vectors times `MR` broadcast activations.
#[inline(always)]
unsafe fn step(acc: &mut [[__m256; 2]; MR], t: &Tile, k: usize) {
    let b0 = _mm256_loadu_ps(t.w.add(k * NR));
    let b1 = _mm256_loadu_ps(t.w.add(k * NR + 8));
    for (i, a) in acc.iter_mut().enumerate() {
        let v = _mm256_broadcast_ss(&*t.x.add(k * MR + i));
        a[0] = _mm256_fmadd_ps(v, b0, a[0]);
        a[1] = _mm256_fmadd_ps(v, b1, a[1]);
    }
}

/// One `MR x NR` tile of one pass: accumulate from zero (first pass) or from what the last
/// pass stored, apply the epilogue on the last pass, store the valid rows and columns.
#[inline(always)]
unsafe fn tile(t: &Tile, pass: &Pass) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    if !pass.first {
        for (i, a) in acc.iter_mut().enumerate().take(t.rows) {
            *a = load(t.y.add(i * t.ldy), t.cols);
        }
    }
    // Unrolled by 4 (a function, not a closure: closures do not inherit the target
    // features, and the intrinsics would not inline).
    let mut k = 0;
    while k + 4 <= pass.kc {
        step(&mut acc, t, k);
        step(&mut acc, t, k + 1);
        step(&mut acc, t, k + 2);
        step(&mut acc, t, k + 3);
        k += 4;
    }
    while k < pass.kc {
        step(&mut acc, t, k);
        k += 1;
    }
    if pass.last {
        let bias = if t.has_bias {
            [_mm256_loadu_ps(t.bias), _mm256_loadu_ps(t.bias.add(8))]
        } else {
            [_mm256_setzero_ps(); 2]
        };
        let zero = _mm256_setzero_ps();
        for (i, a) in acc.iter_mut().enumerate().take(t.rows) {
            if t.has_bias {
                for h in 0..2 {
                    a[h] = _mm256_add_ps(a[h], bias[h]);
                }
            }
            if let Some(res) = t.residual {
                let r = load(res.add(i * t.ldy), t.cols);
                for h in 0..2 {
                    a[h] = _mm256_add_ps(r[h], a[h]);
                }
            }
            if pass.relu {
                // max(0, v) returns v when v is NaN: NaN stays NaN, as in torch.
                for v in a.iter_mut() {
                    *v = _mm256_max_ps(zero, *v);
                }
            }
        }
    }
    for (i, a) in acc.into_iter().enumerate().take(t.rows) {
        store(t.y.add(i * t.ldy), a, t.cols);
    }
}
