//! f32 `x w^T` (+ bias, + residual, ReLU) for row-major activations on the AVX2 path: the
//! weight packed per call into 16-column panels, a 6 x 16 micro-tile, the epilogue fused into
//! the tile's store, and rows split into blocks that are one rayon task each.
//!
//! Why not the `gemm` crate here: on the AVX2 path it ran SepFormer's transformer products
//! (~10k token rows, depth 256 or 1024) at ~150 GFLOP/s on 2 cores of a Xeon against ~200 in
//! isolation: it threads each call internally, writing the bias first means reading the output
//! back (~15% on these shapes), and ReLU, residual and every 40 MB hidden layer are separate
//! passes over memory. Here a task owns a block of rows, so a feed-forward layer's hidden block
//! stays in cache ([`feed_forward`]). The AVX-512 path keeps the `gemm` crate, whose AVX-512
//! kernels run these shapes faster than this AVX2 tile would.
//!
//! Each output is `sum_k x[r][k] w[c][k]` summed in order of `k`, then `+ bias`, then
//! `+ residual`, then ReLU: torch's `residual + relu?(linear(x))` up to the summation order.

use std::cell::Cell;
use std::mem::MaybeUninit;

use candle_core::Result;
use rayon::prelude::*;

use super::gemm::View;

/// Output columns per panel: two 8-lane vectors.
const NR: usize = 16;
/// Rows per micro-tile: 6 x 2 accumulators of the 16 vector registers.
const MR: usize = 6;
/// Depth per pass: a panel's slice is `KC * NR * 4` = 16 KB, and stays in L1.
const KC: usize = 256;
/// Rows per task: the block's activations (`MC * 1024 * 4` = 384 KB at most here) stay in L2.
const MC: usize = 96;

thread_local! {
    /// [`with_avx2_tiles`]'s choice on this thread, if any.
    static FORCE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether the eval layers take these kernels: on the AVX2 path (AVX2 + FMA, and not the
/// `avx512` build on an AVX-512 CPU), unless [`with_avx2_tiles`] says otherwise.
pub(crate) fn enabled() -> bool {
    supported()
        && FORCE
            .with(Cell::get)
            .unwrap_or_else(|| crate::fastmath::simd_path() == "avx2")
}

/// Runs `f` with the AVX2 product kernels of the transformer layers (SepFormer's) turned on
/// or off on this thread, whatever the SIMD path: so that tests and benchmarks can run both
/// paths' products on one machine. "On" needs AVX2 and FMA (without them the `gemm` crate
/// runs, as it does by default on AVX-512 builds and other CPUs). Outputs agree within float
/// rounding either way.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use voxbrain::nnet::with_avx2_tiles;
/// let w = Tensor::randn(0f32, 1.0, (8, 4), &Device::Cpu).unwrap();
/// let x = Tensor::randn(0f32, 1.0, (3, 4), &Device::Cpu).unwrap();
/// let on = with_avx2_tiles(true, || voxbrain::nnet::linear(&x, &w, None)).unwrap();
/// let off = with_avx2_tiles(false, || voxbrain::nnet::linear(&x, &w, None)).unwrap();
/// let diff = (on - off).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
/// assert!(diff < 1e-5);
/// ```
pub fn with_avx2_tiles<R>(on: bool, f: impl FnOnce() -> R) -> R {
    let before = FORCE.with(|c| c.replace(Some(on)));
    // Restored even if `f` panics.
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

/// Whether this CPU can run them at all (AVX2 + FMA): the tests run them on every such CPU.
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight `[out, in]` packed as `[out / NR][in][NR]` (zero-padded columns), the layout the
/// micro-tile reads with two vector loads per step.
#[derive(Default)]
pub(crate) struct PackedW {
    out: usize,
    inp: usize,
    data: Vec<f32>,
}

impl PackedW {
    /// Packs `w` (a `[out, in]` view: row-major, transposed or strided).
    pub fn new(w: View) -> Self {
        let mut p = Self::default();
        p.repack(w);
        p
    }

    /// Packs `w` into this buffer (no allocation when it is large enough already).
    pub fn repack(&mut self, w: View) {
        let (out, inp) = (w.rows, w.cols);
        let panels = out.div_ceil(NR);
        self.out = out;
        self.inp = inp;
        self.data.resize(panels * inp * NR, 0.0);
        if inp == 0 {
            return;
        }
        let pack = |(p, dst): (usize, &mut [f32])| {
            let cols = NR.min(out - p * NR);
            if w.cs == 1 {
                // Rows of `w` are contiguous: read each once, write it down a panel column.
                for c in 0..NR {
                    if c < cols {
                        let src = &w.data[(p * NR + c) * w.rs..][..inp];
                        src.iter()
                            .enumerate()
                            .for_each(|(k, &v)| dst[k * NR + c] = v);
                    } else {
                        (0..inp).for_each(|k| dst[k * NR + c] = 0.0);
                    }
                }
                return;
            }
            if w.rs == 1 {
                // Columns of `w` are contiguous (activations `[K, N]` read as `[N, K]`).
                for (k, d) in dst.chunks_mut(NR).enumerate() {
                    d[..cols].copy_from_slice(&w.data[p * NR + k * w.cs..][..cols]);
                    d[cols..].fill(0.0);
                }
                return;
            }
            for (k, d) in dst.chunks_mut(NR).enumerate() {
                for (c, d) in d.iter_mut().enumerate() {
                    *d = if c < cols {
                        w.data[(p * NR + c) * w.rs + k * w.cs]
                    } else {
                        0.0
                    };
                }
            }
        };
        // Large operands (a convolution's activations) are packed on all threads.
        if out * inp >= 1 << 18 {
            self.data
                .par_chunks_mut(inp * NR)
                .enumerate()
                .for_each(pack);
        } else {
            self.data.chunks_mut(inp * NR).enumerate().for_each(pack);
        }
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.out, self.inp)
    }
}

/// What is applied to each output after the product, in this order.
#[derive(Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    /// `[out]`.
    pub bias: Option<&'a [f32]>,
    /// `[rows, out]`, row-major (the output's shape).
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// `y = epilogue(x w^T)` on this thread: `x` `[rows, in]` with rows `ldx` apart, `y` `[rows,
/// out]` row-major. Only for [`supported`] CPUs (checked: an error otherwise).
pub(crate) fn rows_into(
    y: &mut [f32],
    x: &[f32],
    ldx: usize,
    rows: usize,
    w: &PackedW,
    ep: Epilogue,
) -> Result<()> {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the kernel writes only f32 values.
    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
    rows_into_uninit(y, x, ldx, rows, w, ep)
}

/// [`rows_into`] into memory that need not be initialised: the first `rows * out` values of
/// `y` are all written when it returns `Ok`.
fn rows_into_uninit(
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    ldx: usize,
    rows: usize,
    w: &PackedW,
    ep: Epilogue,
) -> Result<()> {
    let (out, inp) = w.dims();
    let x_fits = rows == 0 || (ldx >= inp && (rows - 1) * ldx + inp <= x.len());
    let fits = |v: Option<&[f32]>, n: usize| v.is_none_or(|v| v.len() >= n);
    if !x_fits || y.len() < rows * out || !fits(ep.bias, out) || !fits(ep.residual, rows * out) {
        candle_core::bail!("fgemm: [{rows}, {inp}] x [{inp}, {out}] does not fit its buffers");
    }
    if !supported() {
        candle_core::bail!("fgemm: this CPU lacks AVX2 or FMA");
    }
    if rows == 0 || out == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 and FMA are present (`supported`); the bounds were checked above.
    unsafe {
        x86::block(y.as_mut_ptr().cast(), x, ldx, rows, w, &ep)
    };
    Ok(())
}

/// Rows per task for `rows` rows: at most `MC`, a multiple of `MR`, and as many tasks of
/// about the same size as make a multiple of the thread count (so that no thread idles at the
/// end, e.g. 66 + 62 rows for 128 on 2 threads).
fn block_rows(rows: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let tasks = rows.div_ceil(MC).next_multiple_of(threads);
    rows.div_ceil(tasks).next_multiple_of(MR).clamp(MR, MC)
}

/// [`rows_into_uninit`] for a contiguous `x` `[rows, in]`, its rows split into blocks run as
/// rayon tasks.
fn par_into(
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    rows: usize,
    w: &PackedW,
    ep: Epilogue,
) -> Result<()> {
    let (out, inp) = w.dims();
    if x.len() != rows * inp
        || y.len() != rows * out
        || ep.residual.is_some_and(|r| r.len() != rows * out)
    {
        candle_core::bail!("fgemm: input, output or residual is not [{rows}, {inp} / {out}]");
    }
    if out == 0 || rows == 0 {
        return Ok(());
    }
    let mc = block_rows(rows);
    y.par_chunks_mut(mc * out)
        .enumerate()
        .try_for_each(|(i, yb)| {
            let n = yb.len() / out;
            let ep = Epilogue {
                residual: ep.residual.map(|r| &r[i * mc * out..][..n * out]),
                ..ep
            };
            rows_into_uninit(yb, &x[i * mc * inp..], inp, n, w, ep)
        })
}

/// [`rows_into`] for a contiguous `x` `[rows, in]`, its rows split into blocks run as rayon
/// tasks; returns `y` `[rows, out]`.
pub(crate) fn par_rows(x: &[f32], rows: usize, w: &PackedW, ep: Epilogue) -> Result<Vec<f32>> {
    let n = rows * w.dims().0;
    let mut y = Vec::with_capacity(n);
    // Not zeroed first: every value is written (a memset of each output cost ~5%).
    par_into(&mut y.spare_capacity_mut()[..n], x, rows, w, ep)?;
    // SAFETY: `par_into` returned Ok, so all `n` values are written.
    unsafe { y.set_len(n) };
    Ok(y)
}

/// `y = w x` for a weight `w` `[rows, K]` (row-major) and activations `x` `[K, N]` (a view,
/// frames contiguous), into `y` `[rows, N]` row-major: a convolution as one product. The
/// activations are packed as [`rows_into`]'s weight and the weight's rows are broadcast, so
/// the frames are the vector lanes.
pub(crate) fn par_wx_into(y: &mut [f32], w: &[f32], rows: usize, x: View) -> Result<()> {
    if !x.fits() || w.len() != rows * x.rows {
        candle_core::bail!(
            "fgemm: [{rows}, {}] x [{}, {}] does not fit",
            x.rows,
            x.rows,
            x.cols
        );
    }
    let packed = PackedW::new(x.t());
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the kernel writes only f32 values.
    let y = unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) };
    par_into(y, w, rows, &packed, Epilogue::default())
}

/// `residual + (relu(x w1^T + b1) w2^T + b2)` for contiguous `x` `[rows, in]`, block by block
/// of rows (each a rayon task), so that the hidden layer of each block stays in cache.
pub(crate) fn feed_forward(
    x: &[f32],
    rows: usize,
    (w1, b1): (&PackedW, &[f32]),
    (w2, b2): (&PackedW, &[f32]),
    residual: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let ((hid, inp), (out, hid2)) = (w1.dims(), w2.dims());
    if hid != hid2 {
        candle_core::bail!("fgemm: feed-forward widths {hid} and {hid2} differ");
    }
    let mut y = Vec::with_capacity(rows * out);
    if x.len() != rows * inp || residual.is_some_and(|r| r.len() != rows * out) {
        candle_core::bail!("fgemm: input or residual is not [{rows}, {inp} / {out}]");
    }
    if out == 0 {
        return Ok(y);
    }
    // Not zeroed first, as in `par_rows`.
    let blocks = y.spare_capacity_mut()[..rows * out].par_chunks_mut(MC * out);
    blocks.enumerate().try_for_each_init(
        || vec![0f32; MC * hid],
        |h, (i, yb)| {
            let n = yb.len() / out;
            let first = Epilogue {
                bias: Some(b1),
                residual: None,
                relu: true,
            };
            rows_into(h, &x[i * MC * inp..], inp, n, w1, first)?;
            let second = Epilogue {
                bias: Some(b2),
                residual: residual.map(|r| &r[i * MC * out..][..n * out]),
                relu: false,
            };
            rows_into_uninit(yb, h, hid, n, w2, second)
        },
    )?;
    // SAFETY: each block's `rows_into_uninit` returned Ok: all `rows * out` values are written.
    unsafe { y.set_len(rows * out) };
    Ok(y)
}

/// Reused buffers of [`attention_head`] (one per thread).
#[derive(Default)]
pub(crate) struct HeadScratch {
    /// Keys as tile rows, `[t / MR][hd][MR]`.
    k: Vec<f32>,
    /// Values transposed, as tile rows: `[hd / MR][t][MR]`.
    v: Vec<f32>,
    /// `NR` scaled queries transposed: `[hd][NR]`.
    q: Vec<f32>,
    /// Their scores, then probabilities, transposed: `[t][NR]`.
    p: Vec<f32>,
    /// Their context transposed: `[hd / MR * MR][NR]`.
    ctx: Vec<f32>,
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
        x86::attention(out, ldo, q, scale, s)
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
fn softmax_columns(p: &mut [f32]) {
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Epilogue, HeadScratch, PackedW, View, KC, MR, NR};
    use std::arch::x86_64::*;
    use std::cell::RefCell;

    thread_local! {
        /// The packed activations of one pass (reused: no allocation per call).
        static XPACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// All rows of `y` (room for `rows * out` values; see `rows_into`), pass by pass over the
    /// depth: the pass's activations
    /// are packed once as `[rows / MR][kc][MR]` (zero rows pad the last tile), then each
    /// weight panel sweeps all row tiles while it is in L1.
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
            super::softmax_columns(&mut s.p[..t * NR]);
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
}

#[cfg(test)]
#[path = "fgemm_tests.rs"]
mod tests;
