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
        y.relu()
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
    pub fn forward(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let (b, l, _) = h.dims3()?;
        let weight = param(&self.weight, train);
        let y = if self.kernel.is_multiple_of(self.stride) {
            // One GEMM to per-frame kernels, then overlap-add of `kernel / stride` shifted parts.
            let r = self.kernel / self.stride;
            let w = weight.reshape((self.in_channels, self.kernel))?;
            let frames = linear(h, &w.t()?, None)?; // [B, L, kernel]
            let mut out: Option<Tensor> = None;
            for j in 0..r {
                let part = frames
                    .narrow(2, j * self.stride, self.stride)?
                    .contiguous()?
                    .reshape((b, l * self.stride))?
                    .pad_with_zeros(1, j * self.stride, (r - 1 - j) * self.stride)?;
                out = Some(match out {
                    None => part,
                    Some(o) => (o + part)?,
                });
            }
            // kernel > 0 divisible by stride means r = kernel / stride >= 1: the loop ran.
            out.expect("r >= 1")
        } else {
            h.transpose(1, 2)?
                .contiguous()?
                .conv_transpose1d(&weight, 0, 0, self.stride, 1, 1)?
                .squeeze(1)?
        };
        match &self.bias {
            Some(bias) => y.broadcast_add(&param(bias, train)),
            None => Ok(y),
        }
    }
}
