//! SpeechBrain's Conv2d ("same" reflect padding, stride 1) as one training op on the CPU,
//! channels last: the forward builds each block of frames' windows (reflect padding written
//! in) and multiplies by the kernel, as the eval kernel does; the backward rebuilds the
//! windows block by block for the kernel gradient and scatters the window gradients back
//! through the reflect padding (col2im) for the input gradient. Nothing of window size is kept
//! between the passes, where window matrices of candle ops cost ~9x the activations, twice.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul_into, storage_f32, View};

/// `x` `[B, T, F, Ci]` with the kernel `[Co, Ci, kf, kt]` and the bias `[Co]` ->
/// `[B, T, F, Co]` (the bias added in the same pass: a separate broadcast add kept one more
/// full-size tensor and cost two more passes over it in the backward).
pub(crate) struct Conv2dSame {
    /// Frames per block of windows.
    pub(crate) block_rows: usize,
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
    /// Source offset in `x` of window element `(j, i)` of output position `(row, fi)`, where
    /// `row = b * T + t`.
    fn src(&self, row: usize, fi: usize, j: usize, i: usize) -> usize {
        let (bi, ti) = (row / self.t, row % self.t);
        let ts = reflect(ti as isize + j as isize - (self.kt / 2) as isize, self.t);
        let fs = reflect(fi as isize + i as isize - (self.kf / 2) as isize, self.f);
        ((bi * self.t + ts) * self.f + fs) * self.ci
    }
    /// The windows of frames `start..start + n` into `cols` `[n * F, kk]`.
    fn im2col(&self, x: &[f32], start: usize, n: usize, cols: &mut [f32]) {
        let (kk, ci) = (self.kk(), self.ci);
        cols[..n * self.f * kk]
            .par_chunks_mut(self.f * kk)
            .enumerate()
            .for_each(|(r, rows)| {
                for (fi, dst) in rows.chunks_mut(kk).enumerate() {
                    for j in 0..self.kt {
                        for i in 0..self.kf {
                            let s = self.src(start + r, fi, j, i);
                            let d = (j * self.kf + i) * ci;
                            dst[d..d + ci].copy_from_slice(&x[s..s + ci]);
                        }
                    }
                }
            });
    }

    /// Adds the window gradients `cols` of frames `start..start + n` to `dx` at their sources
    /// (col2im). Chunks of frames run in parallel: each adds in place to the frames it owns
    /// and keeps what lands on the `kt / 2` frames either side (windows reach no further, and
    /// neither does reflection) for a sequential pass after.
    fn col2im(&self, cols: &[f32], start: usize, n: usize, dx: &mut [f32]) {
        let (kk, ci, rs, half) = (self.kk(), self.ci, self.f * self.ci, self.kt / 2);
        let threads = rayon::current_num_threads().max(1);
        let chunk = n.div_ceil(4 * threads).max(1);
        let edges: Vec<(usize, usize, usize, Vec<f32>)> = dx[start * rs..(start + n) * rs]
            .par_chunks_mut(chunk * rs)
            .enumerate()
            .map(|(c, mine)| {
                let s = start + c * chunk;
                let e = s + mine.len() / rs;
                let lo = s.saturating_sub(half);
                let mut side = vec![0f32; (s - lo + half) * rs];
                for r in s..e {
                    for fi in 0..self.f {
                        let at = ((r - start) * self.f + fi) * kk;
                        let src = &cols[at..at + kk];
                        for j in 0..self.kt {
                            for i in 0..self.kf {
                                let off = self.src(r, fi, j, i);
                                let (row, col) = (off / rs, off % rs);
                                let dst = if (s..e).contains(&row) {
                                    &mut mine[(row - s) * rs + col..][..ci]
                                } else if row < s {
                                    &mut side[(row - lo) * rs + col..][..ci]
                                } else {
                                    &mut side[(s - lo + row - e) * rs + col..][..ci]
                                };
                                let d = (j * self.kf + i) * ci;
                                dst.iter_mut()
                                    .zip(&src[d..d + ci])
                                    .for_each(|(a, b)| *a += b);
                            }
                        }
                    }
                }
                (lo, s, e, side)
            })
            .collect();
        let rows = dx.len() / rs;
        for (lo, s, e, side) in edges {
            let targets = (lo..s).chain(e..(e + half).min(rows));
            for (k, row) in targets.enumerate() {
                dx[row * rs..(row + 1) * rs]
                    .iter_mut()
                    .zip(&side[k * rs..(k + 1) * rs])
                    .for_each(|(a, b)| *a += b);
            }
        }
    }
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
        let block = self.block_rows.max(1);
        let mut y = vec![0f32; rows * g.f * g.co];
        let mut cols = vec![0f32; block.min(rows) * g.f * kk];
        let mut start = 0;
        while start < rows {
            let n = block.min(rows - start);
            g.im2col(x, start, n, &mut cols);
            let out = &mut y[start * g.f * g.co..(start + n) * g.f * g.co];
            let a = View::rows(&cols, n * g.f, kk, kk);
            matmul_into(out, g.co, a, View::rows(&w, g.co, kk, kk).t(), false)?;
            out.par_chunks_mut(g.co * g.f).for_each(|row| {
                for px in row.chunks_mut(g.co) {
                    px.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                }
            });
            start += n;
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
        let xs = x.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let wr = reorder(&w.contiguous()?.flatten_all()?.to_vec1::<f32>()?, &g, false);
        let gy = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let (rows, kk) = (g.b * g.t, g.kk());
        let block = self.block_rows.max(1);
        let mut dw = vec![0f32; g.co * kk]; // window order
        let mut dx = vec![0f32; xs.len()];
        let mut cols = vec![0f32; block.min(rows) * g.f * kk];
        let mut start = 0;
        while start < rows {
            let n = block.min(rows - start);
            let gyb = &gy[start * g.f * g.co..(start + n) * g.f * g.co];
            let gv = View::rows(gyb, n * g.f, g.co, g.co);
            // dW += gy^T windows
            g.im2col(&xs, start, n, &mut cols);
            let a = View::rows(&cols, n * g.f, kk, kk);
            matmul_into(&mut dw, kk, gv.t(), a, true)?;
            // d windows = gy W, then scattered back through the padding.
            matmul_into(&mut cols, kk, gv, View::rows(&wr, g.co, kk, kk), false)?;
            g.col2im(&cols, start, n, &mut dx);
            start += n;
        }
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
