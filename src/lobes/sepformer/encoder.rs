//! `speechbrain.lobes.models.dual_path.Encoder` (Conv1d + ReLU) and `Decoder`
//! (ConvTranspose1d), on voxbrain's channel-last layout `[B, frames, channels]`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nnet::{linear, param};

/// The convolutional encoder: `conv1d.weight` `[N, 1, kernel]`, stride `kernel / 2`, no bias,
/// then ReLU.
#[derive(Debug, Clone)]
pub struct Encoder {
    weight: Tensor,
    kernel: usize,
    stride: usize,
    out_channels: usize,
}

impl Encoder {
    /// Builds the encoder under `vb` (the `encoder` module: parameter `conv1d.weight`).
    pub fn new(kernel_size: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        if kernel_size < 2 {
            candle_core::bail!("Encoder: kernel_size must be >= 2 (got {kernel_size})");
        }
        let weight = vb
            .pp("conv1d")
            .get((out_channels, 1, kernel_size), "weight")?;
        Ok(Self {
            weight,
            kernel: kernel_size,
            stride: kernel_size / 2,
            out_channels,
        })
    }

    /// Kernel size (samples).
    pub fn kernel(&self) -> usize {
        self.kernel
    }

    /// Stride (samples per frame).
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Number of filters.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Frames produced for `samples` input samples (`samples >= kernel`).
    pub fn num_frames(&self, samples: usize) -> usize {
        (samples - self.kernel) / self.stride + 1
    }

    /// `x` `[B, T]` (T >= kernel) -> `[B, L, N]` (SB's `[B, N, L]`, transposed).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let weight = param(&self.weight, train);
        let (b, t) = x.dims2()?;
        if t < self.kernel {
            candle_core::bail!(
                "Encoder: input of {t} samples is shorter than the kernel ({})",
                self.kernel
            );
        }
        let l = self.num_frames(t);
        let y = if self.kernel.is_multiple_of(self.stride) {
            // Frames as `kernel / stride` shifted reshapes of the signal, then one GEMM.
            let r = self.kernel / self.stride;
            let parts = (0..r)
                .map(|j| {
                    x.narrow(1, j * self.stride, l * self.stride)?
                        .reshape((b, l, self.stride))
                })
                .collect::<Result<Vec<_>>>()?;
            let frames = Tensor::cat(&parts, 2)?; // [B, L, kernel]
            let w = weight.reshape((self.out_channels, self.kernel))?;
            linear(&frames, &w, None)?
        } else {
            x.unsqueeze(1)?
                .conv1d(&weight, 0, self.stride, 1, 1)?
                .transpose(1, 2)?
                .contiguous()?
        };
        crate::nnet::train_ops::relu(&y)
    }
}

/// The decoder: `ConvTranspose1d(in_channels, 1, kernel_size, stride, bias)`; parameters
/// `weight` `[N, 1, kernel]` and, with `bias: true`, `bias` `[1]`.
#[derive(Debug, Clone)]
pub struct Decoder {
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: usize,
    stride: usize,
    in_channels: usize,
}

impl Decoder {
    /// Builds the decoder under `vb` (the `decoder` module).
    pub fn new(
        in_channels: usize,
        kernel_size: usize,
        stride: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        if stride == 0 || kernel_size == 0 {
            candle_core::bail!("Decoder: kernel_size and stride must be positive");
        }
        Ok(Self {
            weight: vb.get((in_channels, 1, kernel_size), "weight")?,
            bias: if bias { Some(vb.get(1, "bias")?) } else { None },
            kernel: kernel_size,
            stride,
            in_channels,
        })
    }

    /// `h` `[B, L, N]` -> `[B, (L - 1) * stride + kernel]`.
    ///
    /// One GEMM to per-frame kernels, then an overlap-add of `ceil(kernel / stride)` shifted
    /// parts: all differentiable candle ops, so training gets ConvTranspose1d's backward
    /// (candle's own `conv_transpose1d` has none). A kernel that is not a multiple of the stride
    /// is padded with zero taps and the output cut back to torch's length.
    pub fn forward(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let (b, l, _) = h.dims3()?;
        if l == 0 {
            candle_core::bail!("Decoder: the input has no frames");
        }
        let weight = param(&self.weight, train);
        let (k, st) = (self.kernel, self.stride);
        let r = k.div_ceil(st);
        let w = weight
            .reshape((self.in_channels, k))?
            .pad_with_zeros(1, 0, r * st - k)?;
        let frames = linear(h, &w.t()?, None)?; // [B, L, r * stride]
        let mut out: Option<Tensor> = None;
        for j in 0..r {
            let part = frames
                .narrow(2, j * st, st)?
                .contiguous()?
                .reshape((b, l * st))?
                .pad_with_zeros(1, j * st, (r - 1 - j) * st)?;
            out = Some(match out {
                None => part,
                Some(o) => (o + part)?,
            });
        }
        // kernel > 0 means r >= 1: the loop ran.
        let y = out.expect("r >= 1");
        let y = if r * st == k {
            y
        } else {
            y.narrow(1, 0, (l - 1) * st + k)?
        };
        match &self.bias {
            Some(bias) => y.broadcast_add(&param(bias, train)),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    fn decoder(n: usize, k: usize, s: usize) -> (Decoder, VarMap) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu);
        let dec = Decoder::new(n, k, s, true, vb).unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            let t = Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap();
            var.set(&t).unwrap();
            assert!(name == "weight" || name == "bias");
        }
        (dec, vm)
    }

    /// Forward and gradients equal the transposed convolution's own formulas, written as
    /// loops: kernels that are, and are not, multiples of the stride, and a stride above the
    /// kernel. (candle 0.11's `conv_transpose1d`, which the decoder used for kernels that are
    /// not multiples of the stride, is not the reference: here it disagreed with this loop by
    /// 5.8 to 7.3 (max abs) for inputs of more than one frame, and agreed for a single frame.)
    #[test]
    fn decoder_forward_and_gradients_equal_conv_transpose1d() -> Result<()> {
        let dev = Device::Cpu;
        for (n, k, s, l) in [(6, 16, 8, 7), (5, 5, 2, 9), (4, 3, 4, 5), (3, 7, 3, 1)] {
            let (dec, vm) = decoder(n, k, s);
            let h = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, l, n), &dev)?)?;
            // ConvTranspose1d written as its definition: y[b, l*s + k] += sum_n h[b, l, n] w[n, k].
            let t = (l - 1) * s + k;
            let (hv, wv) = (
                h.as_tensor().to_vec3::<f32>()?,
                dec.weight.reshape((n, k))?.to_vec2::<f32>()?,
            );
            let bias = dec.bias.as_ref().unwrap().to_vec1::<f32>()?[0];
            let mut want = vec![bias; 2 * t];
            for b in 0..2 {
                for li in 0..l {
                    for ki in 0..k {
                        want[b * t + li * s + ki] +=
                            (0..n).map(|ni| hv[b][li][ni] * wv[ni][ki]).sum::<f32>();
                    }
                }
            }
            let want = Tensor::from_vec(want, (2, t), &dev)?;
            let y = dec.forward(h.as_tensor(), true)?;
            assert_eq!(y.dims(), &[2, t]);
            let diff = (&y - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 1e-5,
                "kernel {k} stride {s}: forward differs by {diff}"
            );
            let eval = dec.forward(h.as_tensor(), false)?;
            assert!((&eval - &y)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);

            let c = Tensor::randn(0f32, 1.0, (2, t), &dev)?;
            let grads = (&y * &c)?.sum_all()?.backward()?;
            let cv = c.to_vec2::<f32>()?;
            let (mut gw, mut gh) = (vec![vec![0f32; k]; n], vec![vec![vec![0f32; n]; l]; 2]);
            for b in 0..2 {
                for (li, row) in hv[b].iter().enumerate() {
                    for ni in 0..n {
                        for ki in 0..k {
                            gw[ni][ki] += row[ni] * cv[b][li * s + ki];
                            gh[b][li][ni] += wv[ni][ki] * cv[b][li * s + ki];
                        }
                    }
                }
            }
            let vars = vm.data().lock().unwrap();
            let got_w = grads.get(vars["weight"].as_tensor()).unwrap();
            let got_w = got_w.reshape((n, k))?.to_vec2::<f32>()?;
            let got_h = grads.get(h.as_tensor()).unwrap().to_vec3::<f32>()?;
            let got_b = grads
                .get(vars["bias"].as_tensor())
                .unwrap()
                .to_vec1::<f32>()?;
            let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
            assert!(gw
                .iter()
                .flatten()
                .zip(got_w.iter().flatten())
                .all(|(a, b)| close(*b, *a)));
            let flat =
                |x: &Vec<Vec<Vec<f32>>>| x.iter().flatten().flatten().copied().collect::<Vec<_>>();
            assert!(
                flat(&gh)
                    .iter()
                    .zip(flat(&got_h))
                    .all(|(a, b)| close(b, *a)),
                "kernel {k}"
            );
            let sum_c: f32 = cv.iter().flatten().sum();
            assert!(close(got_b[0], sum_c));
        }
        let (dec, _) = decoder(3, 4, 2);
        assert!(dec
            .forward(
                &Tensor::zeros((1, 0, 3), candle_core::DType::F32, &dev)?,
                false
            )
            .is_err());
        Ok(())
    }
}
