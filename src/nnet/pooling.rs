//! `speechbrain.nnet.pooling.Pooling1d(pool_type="max")` along one axis, with torch's
//! backward: the gradient of each window goes to its first maximum only. (candle's `max`
//! backward gives it to every tied element; CRDNN pools the constant frames of batch padding,
//! where every element of a window ties.)

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

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

fn argmax_first(
    src: &[f32],
    o: usize,
    w: usize,
    i: usize,
    dims: (usize, usize, usize),
    k: usize,
) -> usize {
    let (_, nk, inner) = dims;
    let base = o * nk * inner + w * k * inner + i;
    let mut best = base;
    for j in 1..k {
        let idx = base + j * inner;
        // torch: a later element wins only when strictly greater (or NaN).
        if src[idx] > src[best] || src[idx].is_nan() {
            best = idx;
        }
    }
    best
}

impl CustomOp1 for MaxPoolFirst {
    fn name(&self) -> &'static str {
        "max-pool-first"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = layout.shape().dims3()?;
        let (outer, nk, inner) = dims;
        let k = self.kernel;
        let src = super::gemm::storage_f32(storage, layout, "max-pool-first")?;
        let n = nk / k;
        let mut out = Vec::with_capacity(outer * n * inner);
        for o in 0..outer {
            for w in 0..n {
                for i in 0..inner {
                    out.push(src[argmax_first(src, o, w, i, dims, k)]);
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((outer, n, inner))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims3()?;
        let (outer, nk, inner) = dims;
        let k = self.kernel;
        let n = nk / k;
        let src = arg.flatten_all()?.to_vec1::<f32>()?;
        let g = grad_res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut grad = vec![0f32; src.len()];
        let mut gi = 0;
        for o in 0..outer {
            for w in 0..n {
                for i in 0..inner {
                    grad[argmax_first(&src, o, w, i, dims, k)] += g[gi];
                    gi += 1;
                }
            }
        }
        Ok(Some(Tensor::from_vec(grad, dims, arg.device())?))
    }
}
