//! Fused inference epilogues. candle runs each elementwise op as its own pass over memory
//! (and its own allocation); on the CPU the ops after a convolution (bias, ReLU, eval-mode
//! BatchNorm) cost several passes over a `[B, C, T]` tensor where one suffices. These kernels
//! are for eval mode only (no autograd); other devices and dtypes use the composed ops.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `max(x + bias[c], 0) * scale[c] + shift[c]` over `[B, C, T]` (per channel `c`): a
/// convolution's bias, ReLU, then eval-mode BatchNorm (SpeechBrain's TDNN block order), in one
/// pass on the CPU. `bias` may be absent.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use voxbrain::nnet::fused::bias_relu_affine;
/// let x = Tensor::new(&[[[-1f32, 2.0], [3.0, -4.0]]], &Device::Cpu).unwrap(); // [1, 2, 2]
/// let scale = Tensor::new(&[2f32, 10.0], &Device::Cpu).unwrap();
/// let shift = Tensor::new(&[1f32, 0.0], &Device::Cpu).unwrap();
/// let y = bias_relu_affine(&x, None, &scale, &shift).unwrap();
/// assert_eq!(y.to_vec3::<f32>().unwrap(), vec![vec![vec![1.0, 5.0], vec![30.0, 0.0]]]);
/// ```
pub fn bias_relu_affine(
    x: &Tensor,
    bias: Option<&Tensor>,
    scale: &Tensor,
    shift: &Tensor,
) -> Result<Tensor> {
    let (_, c, _) = x.dims3()?;
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        let vec = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let op = BiasReluAffine {
            bias: bias.map(vec).transpose()?,
            scale: vec(scale)?,
            shift: vec(shift)?,
        };
        if op.scale.len() != c
            || op.shift.len() != c
            || op.bias.as_ref().is_some_and(|b| b.len() != c)
        {
            candle_core::bail!("bias_relu_affine: per-channel vectors must have {c} entries");
        }
        return x.contiguous()?.apply_op1_no_bwd(&op);
    }
    let per_channel = |t: &Tensor| t.reshape((1, c, 1));
    let y = match bias {
        Some(b) => x.broadcast_add(&per_channel(b)?)?,
        None => x.clone(),
    };
    y.relu()?
        .broadcast_mul(&per_channel(scale)?)?
        .broadcast_add(&per_channel(shift)?)
}

struct BiasReluAffine {
    bias: Option<Vec<f32>>,
    scale: Vec<f32>,
    shift: Vec<f32>,
}

impl CustomOp1 for BiasReluAffine {
    fn name(&self) -> &'static str {
        "bias-relu-affine"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, t) = layout.shape().dims3()?;
        let src = match storage {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("bias-relu-affine: f32 only"),
        };
        let src = match layout.contiguous_offsets() {
            Some((start, end)) => &src[start..end],
            None => candle_core::bail!("bias-relu-affine: input must be contiguous"),
        };
        let mut out = vec![0f32; b * c * t];
        if t == 0 {
            return Ok((CpuStorage::F32(out), layout.shape().clone()));
        }
        out.par_chunks_mut(t)
            .zip(src.par_chunks(t))
            .enumerate()
            .for_each(|(row, (o, x))| {
                let ch = row % c;
                let bias = self.bias.as_ref().map_or(0.0, |v| v[ch]);
                let (s, h) = (self.scale[ch], self.shift[ch]);
                for (o, x) in o.iter_mut().zip(x) {
                    *o = (x + bias).max(0.0) * s + h;
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_equals_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (3, 5, 7), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let scale = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let shift = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let per = |t: &Tensor| t.reshape((1, 5, 1));
        let want = x
            .broadcast_add(&per(&bias)?)?
            .relu()?
            .broadcast_mul(&per(&scale)?)?
            .broadcast_add(&per(&shift)?)?;
        // A non-contiguous input is made contiguous first.
        let xt = x.transpose(1, 2)?.contiguous()?.transpose(1, 2)?;
        let got = bias_relu_affine(&xt, Some(&bias), &scale, &shift)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "max difference {diff}");
        let err = bias_relu_affine(&x, None, &scale.narrow(0, 0, 4)?, &shift);
        assert!(err.unwrap_err().to_string().contains("5 entries"));
        Ok(())
    }
}
