//! `speechbrain.nnet.pooling.Pooling1d(pool_type="max")` along one axis, with torch's
//! backward: the gradient of each window goes to its first maximum only. (candle's `max`
//! backward gives it to every tied element; CRDNN pools the constant frames of batch padding,
//! where every element of a window ties.)

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::HostF32;
use crate::fastmath::simd_dispatch;

/// Max pooling of `kernel` steps along `axis` (stride `kernel`, no padding, floor mode: a
/// trailing partial window is dropped).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[1f32, 3.0, 2.0, 2.0, 5.0]], &Device::Cpu).unwrap();
/// let y = voxbrain::nnet::pooling::max_pool_axis(&x, 1, 2).unwrap();
/// assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![3.0, 2.0]]);
/// ```
pub fn max_pool_axis(x: &Tensor, axis: usize, kernel: usize) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let n = dims[axis] / kernel.max(1);
    if n == 0 {
        candle_core::bail!(
            "max pooling of {kernel} needs at least {kernel} steps on axis {axis}, got {}",
            dims[axis]
        );
    }
    let x = x.narrow(axis, 0, n * kernel)?;
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out_dims = dims.clone();
    out_dims[axis] = n;
    if !x.track_op() || !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        let mut split = dims[..axis].to_vec();
        split.push(n);
        split.push(kernel);
        split.extend_from_slice(&dims[axis + 1..]);
        return x.contiguous()?.reshape(split)?.max(axis + 1);
    }
    let x3 = x.contiguous()?.reshape((outer, n * kernel, inner))?;
    x3.apply_op1(MaxPoolFirst { kernel })?.reshape(out_dims)
}

/// `[outer, n * k, inner] -> [outer, n, inner]`, backward to the first maximum of a window.
struct MaxPoolFirst {
    kernel: usize,
}

simd_dispatch!(fn pool_rows(src: &[f32], out: &mut [f32], k: usize, inner: usize)
    => pool_rows_generic);

/// Each window's maximum (the first one: torch's rule) over whole `[n * k, inner]` rows of
/// `src` into `[n, inner]` rows of `out`; vectorised along `inner`.
#[inline(always)]
fn pool_rows_generic(src: &[f32], out: &mut [f32], k: usize, inner: usize) {
    for (w, dst) in out.chunks_mut(inner).enumerate() {
        let rows = &src[w * k * inner..(w + 1) * k * inner];
        dst.copy_from_slice(&rows[..inner]);
        for row in rows.chunks(inner).skip(1) {
            // torch: a later element wins only when strictly greater (or NaN).
            for (best, &v) in dst.iter_mut().zip(row) {
                *best = if v > *best || v.is_nan() { v } else { *best };
            }
        }
    }
}

simd_dispatch!(fn unpool_rows(src: &[f32], g: &[f32], grad: &mut [f32], k: usize, inner: usize,
    scratch: &mut (Vec<f32>, Vec<u32>)) => unpool_rows_generic);

/// The backward pass over whole rows: each window's gradient to the window's first maximum
/// (found again as the forward pass finds it), zero elsewhere. Windows do not overlap, so
/// every input position gets at most one value.
#[inline(always)]
fn unpool_rows_generic(
    src: &[f32],
    g: &[f32],
    grad: &mut [f32],
    k: usize,
    inner: usize,
    scratch: &mut (Vec<f32>, Vec<u32>),
) {
    let (best, at) = (&mut scratch.0[..inner], &mut scratch.1[..inner]);
    for (w, gw) in g.chunks(inner).enumerate() {
        let rows = &src[w * k * inner..(w + 1) * k * inner];
        let dst = &mut grad[w * k * inner..(w + 1) * k * inner];
        best.copy_from_slice(&rows[..inner]);
        at.fill(0);
        for (j, row) in rows.chunks(inner).enumerate().skip(1) {
            for ((b, a), &v) in best.iter_mut().zip(at.iter_mut()).zip(row) {
                let win = v > *b || v.is_nan();
                *b = if win { v } else { *b };
                *a = if win { j as u32 } else { *a };
            }
        }
        for (j, drow) in dst.chunks_mut(inner).enumerate() {
            for ((d, &a), &gv) in drow.iter_mut().zip(at.iter()).zip(gw) {
                *d = if a == j as u32 { gv } else { 0.0 };
            }
        }
    }
}

impl CustomOp1 for MaxPoolFirst {
    fn name(&self) -> &'static str {
        "max-pool-first"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (outer, nk, inner) = layout.shape().dims3()?;
        let k = self.kernel;
        let src = super::gemm::storage_f32(storage, layout, "max-pool-first")?;
        let n = nk / k;
        let mut out = vec![0f32; outer * n * inner];
        if n * inner > 0 {
            out.par_chunks_mut(n * inner)
                .zip(src.par_chunks(nk * inner))
                .with_min_len(16)
                .for_each(|(o, s)| pool_rows(s, o, k, inner));
        }
        Ok((CpuStorage::F32(out), Shape::from((outer, n, inner))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims3()?;
        let (_, nk, inner) = dims;
        let k = self.kernel;
        let n = nk / k;
        let arg = arg.contiguous()?;
        let g = grad_res.contiguous()?;
        let (src_h, g_h) = (
            HostF32::new(&arg, "max-pool backward")?,
            HostF32::new(&g, "max-pool backward")?,
        );
        let mut grad = vec![0f32; src_h.slice().len()];
        if n * inner > 0 {
            grad.par_chunks_mut(nk * inner)
                .zip(src_h.slice().par_chunks(nk * inner))
                .zip(g_h.slice().par_chunks(n * inner))
                .with_min_len(16)
                .for_each_init(
                    || (vec![0f32; inner], vec![0u32; inner]),
                    |scratch, ((d, s), gr)| unpool_rows(s, gr, d, k, inner, scratch),
                );
        }
        Ok(Some(Tensor::from_vec(grad, dims, arg.device())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// torch's rule written out: per window, a later element wins only when strictly greater
    /// or NaN; the gradient goes to the winner.
    fn reference(
        x: &[f32],
        g: &[f32],
        dims: (usize, usize, usize),
        k: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let (outer, nk, inner) = dims;
        let n = nk / k;
        let (mut y, mut dx) = (Vec::new(), vec![0f32; x.len()]);
        for o in 0..outer {
            for w in 0..n {
                for i in 0..inner {
                    let at = |j: usize| (o * nk + w * k + j) * inner + i;
                    let mut best = at(0);
                    for j in 1..k {
                        if x[at(j)] > x[best] || x[at(j)].is_nan() {
                            best = at(j);
                        }
                    }
                    y.push(x[best]);
                    dx[best] += g[(o * n + w) * inner + i];
                }
            }
        }
        (y, dx)
    }

    #[test]
    fn max_pool_and_its_gradient_follow_torchs_first_maximum_rule() -> Result<()> {
        let dev = Device::Cpu;
        // Values on a coarse grid so that windows tie, a few NaNs, a trailing partial window
        // (7 steps, kernel 2 and 3), and an inner width off the vector lanes (19).
        let (outer, steps, inner) = (5, 7, 19);
        let mut x: Vec<f32> = (0..outer * steps * inner)
            .map(|i| ((i * 7919 % 13) as f32 - 6.0).abs().min(3.0))
            .collect();
        for i in [3, 40, 41, 300, 301, 302] {
            x[i] = f32::NAN;
        }
        for k in [2, 3] {
            let n = steps / k;
            let xv = Var::from_tensor(&Tensor::from_vec(x.clone(), (outer, steps, inner), &dev)?)?;
            let y = max_pool_axis(xv.as_tensor(), 1, k)?;
            assert_eq!(y.dims(), &[outer, n, inner]);
            let g: Vec<f32> = (0..outer * n * inner).map(|i| 1.0 + i as f32).collect();
            let gt = Tensor::from_vec(g.clone(), (outer, n, inner), &dev)?;
            let grads = (y.clone() * &gt)?.sum_all()?.backward()?;
            let dx = grads
                .get(xv.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            let xs: Vec<f32> = x
                .chunks(steps * inner)
                .flat_map(|c| c[..n * k * inner].to_vec())
                .collect();
            let (want_y, want_dx) = reference(&xs, &g, (outer, n * k, inner), k);
            let got_y = y.flatten_all()?.to_vec1::<f32>()?;
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got_y), bits(&want_y), "kernel {k}");
            for (o, chunk) in dx.chunks(steps * inner).enumerate() {
                let want = &want_dx[o * n * k * inner..(o + 1) * n * k * inner];
                assert_eq!(&chunk[..n * k * inner], want, "kernel {k}, row {o}");
                assert!(chunk[n * k * inner..].iter().all(|&v| v == 0.0));
            }
            // Without gradients the composed candle path gives the same values (no NaN there:
            // candle's max does not follow torch's NaN rule).
            let clean: Vec<f32> = x
                .iter()
                .map(|v| if v.is_nan() { 0.5 } else { *v })
                .collect();
            let c = Tensor::from_vec(clean.clone(), (outer, steps, inner), &dev)?;
            let cv = Var::from_tensor(&c)?;
            assert_eq!(
                max_pool_axis(&c, 1, k)?.flatten_all()?.to_vec1::<f32>()?,
                max_pool_axis(cv.as_tensor(), 1, k)?
                    .flatten_all()?
                    .to_vec1::<f32>()?
            );
        }
        Ok(())
    }
}
