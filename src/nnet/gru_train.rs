//! A GRU cell's gates, `h' = n + z (h - n)` from its two projections, as one autograd op for
//! training on the CPU (the attentional decoder's cell, once per output token).
//!
//! candle composes the step from ~12 ops on `[B, H]` tensors (three `narrow`s each side,
//! sums, two sigmoids, a product, a tanh, the blend), and its backward pass allocates and
//! zero-fills a gradient per node: at the recipe's batch of 16 and H = 256 each op is a few
//! microseconds of work and more of dispatch. Here the forward pass keeps nothing; the
//! backward pass recomputes `r`, `z`, `n` from the inputs. The values are the eval kernel's
//! (`fused::gru_cell_rows`: the same `exp` and `tanh`), so training and inference agree.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fused::gru_cell_rows;
use super::gemm::{storage_f32 as host, HostF32};
use crate::fastmath::{self, simd_dispatch};

/// `gi`, `gh` `[B, 3H]` (gates r, z, n, as torch's `GRUCell` orders them) and `h` `[B, H]` ->
/// `h'` `[B, H]`, with `r = sig(gi_r + gh_r)`, `z = sig(gi_z + gh_z)`,
/// `n = tanh(gi_n + r gh_n)`.
pub(crate) fn gru_gates(gi: &Tensor, gh: &Tensor, h: &Tensor) -> Result<Tensor> {
    let (b, h3) = gi.dims2()?;
    if gh.dims2()? != (b, h3) || h.dims2()? != (b, h3 / 3) || h3 % 3 != 0 {
        candle_core::bail!(
            "gru-gates: gi {:?}, gh {:?} and h {:?} do not fit",
            gi.shape(),
            gh.shape(),
            h.shape()
        );
    }
    gi.contiguous()?
        .apply_op3(&gh.contiguous()?, &h.contiguous()?, GruGates)
}

struct GruGates;

/// Rows per task: one task per few rows keeps each task's work above rayon's overhead.
const ROWS: usize = 4;

simd_dispatch!(fn backward_rows(ins: [&[f32]; 4], dgi: &mut [f32], dgh: &mut [f32],
    dh: &mut [f32], w: usize) => backward_rows_generic);

/// The gradients of whole rows (`ins`: `gi`, `gh`, `h`, the output's gradient): `r`, `z`,
/// `n` recomputed as the forward pass computed them, then `h' = (1 - z) n + z h`
/// differentiated back to the pre-activations.
#[inline(always)]
fn backward_rows_generic(
    ins: [&[f32]; 4],
    dgi: &mut [f32],
    dgh: &mut [f32],
    dh: &mut [f32],
    w: usize,
) {
    let [gi, gh, h0, dy] = ins;
    let ins = gi
        .chunks(3 * w)
        .zip(gh.chunks(3 * w))
        .zip(h0.chunks(w).zip(dy.chunks(w)));
    let outs = dgi
        .chunks_mut(3 * w)
        .zip(dgh.chunks_mut(3 * w))
        .zip(dh.chunks_mut(w));
    for (((gi, gh), (h0, dy)), ((dgi, dgh), dh)) in ins.zip(outs) {
        let (ir, iz, inn) = (&gi[..w], &gi[w..2 * w], &gi[2 * w..3 * w]);
        let (hr, hz, hn) = (&gh[..w], &gh[w..2 * w], &gh[2 * w..3 * w]);
        let (h0, dy, dh) = (&h0[..w], &dy[..w], &mut dh[..w]);
        let (dir, rest) = dgi.split_at_mut(w);
        let (diz, din) = rest.split_at_mut(w);
        let (dhr, rest) = dgh.split_at_mut(w);
        let (dhz, dhn) = rest.split_at_mut(w);
        let (din, dhn) = (&mut din[..w], &mut dhn[..w]);
        for j in 0..w {
            let r = fastmath::sigmoid(ir[j] + hr[j]);
            let z = fastmath::sigmoid(iz[j] + hz[j]);
            let nn = fastmath::tanh(inn[j] + r * hn[j]);
            let g = dy[j];
            // Through the blend, then each nonlinearity.
            let da = g * (1.0 - z) * (1.0 - nn * nn);
            let dz = g * (h0[j] - nn) * z * (1.0 - z);
            let dr = da * hn[j] * r * (1.0 - r);
            (dir[j], diz[j], din[j]) = (dr, dz, da);
            (dhr[j], dhz[j], dhn[j]) = (dr, dz, da * r);
            dh[j] = g * z;
        }
    }
}

impl CustomOp3 for GruGates {
    fn name(&self) -> &'static str {
        "gru-gates"
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
        let (gi, gh, h0) = (
            host(s1, l1, "gru-gates")?,
            host(s2, l2, "gru-gates")?,
            host(s3, l3, "gru-gates")?,
        );
        let shape = l3.shape().clone();
        let w = shape.dims2()?.1;
        let mut out = vec![0f32; h0.len()];
        if w > 0 {
            out.par_chunks_mut(ROWS * w)
                .zip(gi.par_chunks(ROWS * 3 * w).zip(gh.par_chunks(ROWS * 3 * w)))
                .zip(h0.par_chunks(ROWS * w))
                .for_each(|((o, (gi, gh)), h0)| {
                    let rows = gi.chunks(3 * w).zip(gh.chunks(3 * w));
                    for ((gi, gh), (h0, out)) in rows.zip(h0.chunks(w).zip(o.chunks_mut(w))) {
                        let gi = [&gi[..w], &gi[w..2 * w], &gi[2 * w..3 * w]];
                        let gh = [&gh[..w], &gh[w..2 * w], &gh[2 * w..3 * w]];
                        // The eval kernel's step: training and inference compute it alike.
                        gru_cell_rows(gi, gh, h0, out);
                    }
                });
        }
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        gi: &Tensor,
        gh: &Tensor,
        h0: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let w = h0.dims2()?.1;
        let grad = grad.contiguous()?;
        let (gi_h, gh_h, h0_h, dy_h) = (
            HostF32::new(gi, "gru-gates backward")?,
            HostF32::new(gh, "gru-gates backward")?,
            HostF32::new(h0, "gru-gates backward")?,
            HostF32::new(&grad, "gru-gates backward")?,
        );
        let (mut dgi, mut dgh, mut dh) = (
            vec![0f32; gi.elem_count()],
            vec![0f32; gh.elem_count()],
            vec![0f32; h0.elem_count()],
        );
        if w > 0 {
            let ins = gi_h
                .slice()
                .par_chunks(ROWS * 3 * w)
                .zip(gh_h.slice().par_chunks(ROWS * 3 * w))
                .zip(
                    h0_h.slice()
                        .par_chunks(ROWS * w)
                        .zip(dy_h.slice().par_chunks(ROWS * w)),
                );
            let outs = dgi
                .par_chunks_mut(ROWS * 3 * w)
                .zip(dgh.par_chunks_mut(ROWS * 3 * w))
                .zip(dh.par_chunks_mut(ROWS * w));
            ins.zip(outs)
                .for_each(|(((gi, gh), (h0, dy)), ((dgi, dgh), dh))| {
                    backward_rows([gi, gh, h0, dy], dgi, dgh, dh, w)
                });
        }
        let dev = gi.device();
        Ok((
            Some(Tensor::from_vec(dgi, gi.shape(), dev)?),
            Some(Tensor::from_vec(dgh, gh.shape(), dev)?),
            Some(Tensor::from_vec(dh, h0.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// candle's composition of the same step (`GruCell::gates` before this op).
    fn composed(gi: &Tensor, gh: &Tensor, h: &Tensor) -> Result<Tensor> {
        let hs = h.dim(1)?;
        let sig = candle_nn::ops::sigmoid;
        let r = sig(&(gi.narrow(1, 0, hs)? + gh.narrow(1, 0, hs)?)?)?;
        let z = sig(&(gi.narrow(1, hs, hs)? + gh.narrow(1, hs, hs)?)?)?;
        let n = (gi.narrow(1, 2 * hs, hs)? + (r * gh.narrow(1, 2 * hs, hs)?)?)?.tanh()?;
        n.clone() + (z * (h - &n)?)?
    }

    /// Outputs and all three gradients equal candle's composition, for batches that leave a
    /// ragged last task and widths off the vector lanes.
    #[test]
    fn gru_gates_equal_candle_composition() -> Result<()> {
        let dev = Device::Cpu;
        for (b, w) in [(1, 5), (7, 19), (16, 256)] {
            let gi = Var::from_tensor(&Tensor::randn(0f32, 1.5, (b, 3 * w), &dev)?)?;
            let gh = Var::from_tensor(&Tensor::randn(0f32, 1.5, (b, 3 * w), &dev)?)?;
            let h = Var::from_tensor(&Tensor::randn(0f32, 0.8, (b, w), &dev)?)?;
            let r = Tensor::randn(0f32, 1.0, (b, w), &dev)?;
            let run =
                |f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>| -> Result<Vec<Vec<f32>>> {
                    let y = f(gi.as_tensor(), gh.as_tensor(), h.as_tensor())?;
                    let g = (&y * &r)?.sum_all()?.backward()?;
                    let mut out = vec![y.flatten_all()?.to_vec1::<f32>()?];
                    for v in [&gi, &gh, &h] {
                        out.push(
                            g.get(v.as_tensor())
                                .unwrap()
                                .flatten_all()?
                                .to_vec1::<f32>()?,
                        );
                    }
                    Ok(out)
                };
            let (ours, want) = (run(&gru_gates)?, run(&composed)?);
            for (k, (a, e)) in ours.iter().zip(&want).enumerate() {
                for (p, q) in a.iter().zip(e) {
                    assert!(
                        (p - q).abs() <= 2e-6 * (1.0 + q.abs()),
                        "b {b}, w {w}, output {k}: {p} vs {q}"
                    );
                }
            }
        }
        Ok(())
    }
}
