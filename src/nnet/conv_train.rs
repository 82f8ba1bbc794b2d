//! SpeechBrain's Conv2d ("same" reflect padding, stride 1) as one training op on the CPU,
//! channels last: the forward builds each chunk of frames' windows (reflect padding written
//! in) and multiplies by the kernel, as the eval kernel does; the backward rebuilds the
//! windows chunk by chunk for the kernel gradient and scatters the window gradients back
//! through the reflect padding (col2im) for the input gradient. Nothing of window size is kept
//! between the passes, where window matrices of candle ops cost ~9x the activations, twice.
//!
//! Each chunk of frames is one task on one thread (windows, products and scatter while the
//! chunk's window matrix is in cache; the kernel gradient summed per chunk, then over chunks
//! in f64): one multi-threaded product over all frames had `Co` = 16 output rows for the
//! kernel gradient, which the `gemm` crate ran on one thread at ~50 GFLOP/s.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul_into_with, storage_f32, HostF32, View};
use crate::fastmath::simd_dispatch;

/// `x` `[B, T, F, Ci]` with the kernel `[Co, Ci, kf, kt]` and the bias `[Co]` ->
/// `[B, T, F, Co]` (the bias added in the same pass: a separate broadcast add kept one more
/// full-size tensor and cost two more passes over it in the backward).
pub(crate) struct Conv2dSame {
    /// Frames per task (0: chosen for the cache, [`chunk_rows`]).
    pub(crate) block_rows: usize,
}

impl Conv2dSame {
    fn chunk(&self, g: &Geom, rows: usize) -> usize {
        match self.block_rows {
            0 => chunk_rows(g, rows),
            n => n,
        }
    }
}

fn reflect(p: isize, n: usize) -> usize {
    if p < 0 {
        (-p) as usize
    } else if p as usize >= n {
        2 * (n - 1) - p as usize
    } else {
        p as usize
    }
}

struct Geom {
    b: usize,
    t: usize,
    f: usize,
    ci: usize,
    co: usize,
    kf: usize,
    kt: usize,
}

impl Geom {
    fn kk(&self) -> usize {
        self.kt * self.kf * self.ci
    }
    /// For each output bin `fi` and kernel row `i`, the source bin (reflect padding).
    fn freq_sources(&self) -> Vec<usize> {
        let h = (self.kf / 2) as isize;
        (0..self.f)
            .flat_map(|fi| (0..self.kf).map(move |i| reflect(fi as isize + i as isize - h, self.f)))
            .collect()
    }

    /// The source frame (global row `b * T + t`) of window row `j` for output frame `row`.
    fn time_source(&self, row: usize, j: usize) -> usize {
        let (bi, ti) = (row / self.t, row % self.t);
        bi * self.t + reflect(ti as isize + j as isize - (self.kt / 2) as isize, self.t)
    }

    /// Whether the `kf` bins of output bin `fi`'s window are contiguous in the source (no
    /// reflection).
    fn inside(&self, fi: usize) -> bool {
        fi >= self.kf / 2 && fi + self.kf / 2 < self.f
    }

    /// The windows of frames `start..start + n` into `cols` `[n * F, kk]` (one thread).
    fn im2col(&self, x: &[f32], fsrc: &[usize], start: usize, n: usize, cols: &mut [f32]) {
        let (kk, ci, kf, f) = (self.kk(), self.ci, self.kf, self.f);
        for r in 0..n {
            for j in 0..self.kt {
                let base = self.time_source(start + r, j) * f * ci;
                for fi in 0..f {
                    let dst = &mut cols[(r * f + fi) * kk + j * kf * ci..][..kf * ci];
                    if self.inside(fi) {
                        let s = base + (fi - kf / 2) * ci;
                        dst.copy_from_slice(&x[s..s + kf * ci]);
                    } else {
                        for (i, d) in dst.chunks_exact_mut(ci).enumerate() {
                            let s = base + fsrc[fi * kf + i] * ci;
                            d.copy_from_slice(&x[s..s + ci]);
                        }
                    }
                }
            }
        }
    }
}

simd_dispatch!(fn col2im(g: &Geom, fsrc: &[usize], cols: &[f32], s: usize, mine: &mut [f32],
    side: &mut [f32]) => col2im_generic);

/// Adds the window gradients `cols` of the frames `s..s + n` owned by one task (`mine`, their
/// rows of the input gradient) at their sources (col2im). What lands on the `kt / 2` frames
/// either side (windows reach no further, and neither does reflection) goes to `side`: first
/// the frames before `s`, then those after the chunk.
#[inline(always)]
fn col2im_generic(
    g: &Geom,
    fsrc: &[usize],
    cols: &[f32],
    s: usize,
    mine: &mut [f32],
    side: &mut [f32],
) {
    let (kk, ci, kf, f) = (g.kk(), g.ci, g.kf, g.f);
    let rs = f * ci;
    let n = mine.len() / rs;
    let (e, lo) = (s + n, s.saturating_sub(g.kt / 2));
    let add = |dst: &mut [f32], src: &[f32]| dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
    for r in s..e {
        for j in 0..g.kt {
            let row = g.time_source(r, j);
            let dst_row = if (s..e).contains(&row) {
                &mut mine[(row - s) * rs..][..rs]
            } else if row < s {
                &mut side[(row - lo) * rs..][..rs]
            } else {
                &mut side[(s - lo + row - e) * rs..][..rs]
            };
            for fi in 0..f {
                let src = &cols[((r - s) * f + fi) * kk + j * kf * ci..][..kf * ci];
                if g.inside(fi) {
                    add(&mut dst_row[(fi - kf / 2) * ci..][..kf * ci], src);
                } else {
                    for (i, sc) in src.chunks_exact(ci).enumerate() {
                        add(&mut dst_row[fsrc[fi * kf + i] * ci..][..ci], sc);
                    }
                }
            }
        }
    }
}

/// Frames per task: the chunk's window matrix within ~1 MB (L2), at least 4 tasks a thread.
fn chunk_rows(g: &Geom, rows: usize) -> usize {
    let by_cache = ((1 << 18) / (g.f * g.kk()).max(1)).max(1);
    let threads = rayon::current_num_threads().max(1);
    by_cache.min(rows.div_ceil(4 * threads)).max(1)
}

fn geom(x: &Layout, w: &Layout) -> Result<Geom> {
    let (b, t, f, ci) = x.shape().dims4()?;
    let (co, wci, kf, kt) = w.shape().dims4()?;
    if wci != ci {
        candle_core::bail!("conv2d-train: kernel for {wci} channels, input has {ci}");
    }
    if kf / 2 >= f || kt / 2 >= t {
        candle_core::bail!(
            "conv2d-train: input of {t} frames x {f} bins too short for reflect padding"
        );
    }
    Ok(Geom {
        b,
        t,
        f,
        ci,
        co,
        kf,
        kt,
    })
}

/// The kernel `[co, ci, kf, kt]` reordered to the window order `[co, kt, kf, ci]`, or back
/// (`inverse`).
fn reorder(w: &[f32], g: &Geom, inverse: bool) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for o in 0..g.co {
        for c in 0..g.ci {
            for i in 0..g.kf {
                for j in 0..g.kt {
                    let kernel = ((o * g.ci + c) * g.kf + i) * g.kt + j;
                    let window = ((o * g.kt + j) * g.kf + i) * g.ci + c;
                    if inverse {
                        out[kernel] = w[window];
                    } else {
                        out[window] = w[kernel];
                    }
                }
            }
        }
    }
    out
}

impl CustomOp3 for Conv2dSame {
    fn name(&self) -> &'static str {
        "conv2d-same-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geom(l1, l2)?;
        let x = storage_f32(s1, l1, "conv2d-train")?;
        let w = reorder(storage_f32(s2, l2, "conv2d-train")?, &g, false);
        let bias = storage_f32(s3, l3, "conv2d-train bias")?;
        if bias.len() != g.co {
            candle_core::bail!(
                "conv2d-train: {} bias values for {} channels",
                bias.len(),
                g.co
            );
        }
        let (rows, kk) = (g.b * g.t, g.kk());
        let chunk = self.chunk(&g, rows);
        let fsrc = g.freq_sources();
        let mut y = vec![0f32; rows * g.f * g.co];
        if !y.is_empty() {
            y.par_chunks_mut(chunk * g.f * g.co)
                .enumerate()
                .try_for_each_init(
                    || vec![0f32; chunk * g.f * kk],
                    |cols, (c, out)| {
                        let n = out.len() / (g.f * g.co);
                        let cols = &mut cols[..n * g.f * kk];
                        g.im2col(x, &fsrc, c * chunk, n, cols);
                        let a = View::rows(cols, n * g.f, kk, kk);
                        let wt = View::rows(&w, g.co, kk, kk).t();
                        matmul_into_with(out, g.co, a, wt, false, 1)?;
                        for px in out.chunks_mut(g.co) {
                            px.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                        }
                        Ok::<_, candle_core::Error>(())
                    },
                )?;
        }
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.t, g.f, g.co))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = geom(x.layout(), w.layout())?;
        let wr = reorder(&w.contiguous()?.flatten_all()?.to_vec1::<f32>()?, &g, false);
        // The input and the output gradient are read where they are, not copied.
        let (x, grad) = (x.contiguous()?, grad.contiguous()?);
        let (x_h, gy_h) = (
            HostF32::new(&x, "conv2d-train backward")?,
            HostF32::new(&grad, "conv2d-train backward")?,
        );
        let (xs, gy) = (x_h.slice(), gy_h.slice());
        let (rows, kk) = (g.b * g.t, g.kk());
        let chunk = self.chunk(&g, rows);
        let fsrc = g.freq_sources();
        let (rs, half) = (g.f * g.ci, g.kt / 2);
        let mut dx = vec![0f32; xs.len()];
        // Per chunk: its kernel gradient (window order) and what it adds to the frames beside it.
        type Part = (Vec<f32>, usize, usize, usize, Vec<f32>);
        let parts: Vec<Part> = if dx.is_empty() {
            Vec::new()
        } else {
            dx.par_chunks_mut(chunk * rs)
                .enumerate()
                .map_init(
                    || vec![0f32; chunk * g.f * kk],
                    |cols, (c, mine)| {
                        let (s, n) = (c * chunk, mine.len() / rs);
                        let cols = &mut cols[..n * g.f * kk];
                        let gyb = &gy[s * g.f * g.co..(s + n) * g.f * g.co];
                        let gv = View::rows(gyb, n * g.f, g.co, g.co);
                        // dW = gy^T windows
                        g.im2col(xs, &fsrc, s, n, cols);
                        let mut dw = vec![0f32; g.co * kk];
                        let a = View::rows(cols, n * g.f, kk, kk);
                        matmul_into_with(&mut dw, kk, gv.t(), a, false, 1)?;
                        // d windows = gy W, then scattered back through the padding.
                        let wv = View::rows(&wr, g.co, kk, kk);
                        matmul_into_with(cols, kk, gv, wv, false, 1)?;
                        let lo = s.saturating_sub(half);
                        let mut side = vec![0f32; (s - lo + half) * rs];
                        col2im(&g, &fsrc, cols, s, mine, &mut side);
                        Ok::<_, candle_core::Error>((dw, lo, s, s + n, side))
                    },
                )
                .collect::<Result<_>>()?
        };
        let mut dw64 = vec![0f64; g.co * kk];
        for (dw, lo, s, e, side) in parts {
            dw64.iter_mut()
                .zip(&dw)
                .for_each(|(a, &b)| *a += f64::from(b));
            let targets = (lo..s).chain(e..(e + half).min(rows));
            for (k, row) in targets.enumerate() {
                dx[row * rs..(row + 1) * rs]
                    .iter_mut()
                    .zip(&side[k * rs..(k + 1) * rs])
                    .for_each(|(a, b)| *a += b);
            }
        }
        let dw: Vec<f32> = dw64.into_iter().map(|v| v as f32).collect();
        let dwk = reorder(&dw, &g, true);
        // The bias gradient: the output gradient summed over every position (f64 partials).
        let db = gy
            .par_chunks(g.co * g.f)
            .fold(
                || vec![0f64; g.co],
                |mut acc, row| {
                    for px in row.chunks(g.co) {
                        acc.iter_mut().zip(px).for_each(|(a, &v)| *a += v as f64);
                    }
                    acc
                },
            )
            .reduce(
                || vec![0f64; g.co],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let db: Vec<f32> = db.into_iter().map(|v| v as f32).collect();
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dwk, w.shape(), dev)?),
            Some(Tensor::from_vec(db, bias.shape(), dev)?),
        ))
    }
}
