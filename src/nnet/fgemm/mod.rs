//! f32 `x w^T` (+ bias, + residual, ReLU) for row-major activations on the AVX2 path: the
//! weight packed per call into 16-column panels, a 6 x 16 micro-tile, the epilogue fused into
//! the tile's store, and rows split into blocks that are one rayon task each. Also `w x` for a
//! convolution ([`par_wx_into`]), and a whole self-attention layer per sequence
//! ([`self_attention`], [`attention_head`] in `attention.rs`). Nothing is cached between calls,
//! so a fine-tuned weight is always the one used.
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

/// Runs `f` with the AVX2 product kernels (transformer layers, `nnet::linear`, `Conv1d`'s eval
/// product; the default on the AVX2 path) turned on or off on this thread, whatever the SIMD
/// path: so that tests and benchmarks can run both paths' products on one machine. "On" needs
/// AVX2 and FMA (without them the `gemm` crate runs, as it does by default on AVX-512 builds
/// and other CPUs). Outputs agree within float rounding either way. The choice is read on the
/// calling thread when a layer starts, so it holds for the work that layer spreads over rayon.
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
                for (k, d) in dst.chunks_exact_mut(NR).enumerate() {
                    let src = &w.data[p * NR + k * w.cs..];
                    if cols == NR {
                        // A fixed length: inline vector moves, not a `memmove` call per step
                        // (chunks_exact_mut(NR) yields exactly NR values: this cannot fail).
                        let d: &mut [f32; NR] = d.try_into().unwrap();
                        d.copy_from_slice(&src[..NR]);
                    } else {
                        d[..cols].copy_from_slice(&src[..cols]);
                        d[cols..].fill(0.0);
                    }
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
    rows_into_uninit(as_uninit(y), x, ldx, rows, w, ep)
}

/// An initialised buffer seen as one the kernels may write to.
fn as_uninit(y: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the kernels write only f32 values
    // through it (never an uninitialised one), so `y` stays initialised.
    unsafe { &mut *(y as *mut [f32] as *mut [MaybeUninit<f32>]) }
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
    par_into(as_uninit(y), w, rows, &packed, Epilogue::default())
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

mod attention;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use attention::{
    attention_head, per_sequence, self_attention, sequence_context, HeadScratch,
};

#[cfg(test)]
mod tests;
