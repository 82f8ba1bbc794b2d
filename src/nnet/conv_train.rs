//! SpeechBrain's Conv2d ("same" reflect padding, stride 1) as one training op on the CPU,
//! channels last: the forward builds each block of frames' windows (reflect padding written
//! in) and multiplies by the kernel, as the eval kernel does; the backward rebuilds the
//! windows block by block for the kernel gradient and scatters the window gradients back
//! through the reflect padding (col2im) for the input gradient. Nothing of window size is kept
//! between the passes, where window matrices of candle ops cost ~9x the activations, twice.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul_into, storage_f32, View};

/// `x` `[B, T, F, Ci]` with the kernel `[Co, Ci, kf, kt]` -> `[B, T, F, Co]` (no bias).
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

impl CustomOp2 for Conv2dSame {
    fn name(&self) -> &'static str {
        "conv2d-same-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = geom(l1, l2)?;
        let x = storage_f32(s1, l1, "conv2d-train")?;
        let w = reorder(storage_f32(s2, l2, "conv2d-train")?, &g, false);
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
            start += n;
        }
        Ok((CpuStorage::F32(y), Shape::from((g.b, g.t, g.f, g.co))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
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
            // d windows = gy W, then scattered back through the padding (sequentially: a
            // reflected source can be shared by windows of several rows).
            matmul_into(&mut cols, kk, gv, View::rows(&wr, g.co, kk, kk), false)?;
            for r in 0..n {
                for fi in 0..g.f {
                    let src = &cols[(r * g.f + fi) * kk..(r * g.f + fi + 1) * kk];
                    for j in 0..g.kt {
                        for i in 0..g.kf {
                            let s = g.src(start + r, fi, j, i);
                            let d = (j * g.kf + i) * g.ci;
                            dx[s..s + g.ci]
                                .iter_mut()
                                .zip(&src[d..d + g.ci])
                                .for_each(|(a, b)| *a += b);
                        }
                    }
                }
            }
            start += n;
        }
        let dwk = reorder(&dw, &g, true);
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(Tensor::from_vec(dwk, w.shape(), dev)?),
        ))
    }
}
