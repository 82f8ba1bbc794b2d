//! Fused inference epilogues. candle runs each elementwise op as its own pass over memory
//! (and its own allocation); on the CPU the ops after a convolution (bias, ReLU, eval-mode
//! BatchNorm) cost several passes over a `[B, C, T]` tensor where one suffices. These kernels
//! are for eval mode only (no autograd); other devices and dtypes use the composed ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::HostData;
use crate::fastmath::{self, lanes_max, simd_dispatch};

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
        let op = BiasReluAffine {
            bias: bias.map(f32_vec).transpose()?,
            scale: f32_vec(scale)?,
            shift: f32_vec(shift)?,
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
        let mut out = src.to_vec();
        debug_assert_eq!(out.len(), b * c * t);
        bias_relu_affine_rows(&mut out, t, self.bias.as_deref(), &self.scale, &self.shift);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// [`bias_relu_affine`] in place on host rows of `t` frames (row `r` is channel
/// `r % scale.len()`).
pub(crate) fn bias_relu_affine_rows(
    y: &mut [f32],
    t: usize,
    bias: Option<&[f32]>,
    scale: &[f32],
    shift: &[f32],
) {
    let c = scale.len();
    if t == 0 || c == 0 {
        return;
    }
    y.par_chunks_mut(t).enumerate().for_each(|(row, o)| {
        let ch = row % c;
        let bias = bias.map_or(0.0, |v| v[ch]);
        let (s, h) = (scale[ch], shift[ch]);
        for o in o.iter_mut() {
            *o = (*o + bias).max(0.0) * s + h;
        }
    });
}

/// `x * scale[b, c] + residual` over `[B, C, T]` in one pass on the CPU (a squeeze-excitation
/// gate followed by a residual connection); `scale` is `[B, C]` or `[B, C, 1]`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let x = Tensor::new(&[[[1f32, 2.0], [3.0, 4.0]]], &dev).unwrap();
/// let s = Tensor::new(&[[2f32, 0.5]], &dev).unwrap();
/// let y = voxbrain::nnet::fused::scale_add(&x, &s, &x).unwrap();
/// assert_eq!(y.to_vec3::<f32>().unwrap(), vec![vec![vec![3.0, 6.0], vec![4.5, 6.0]]]);
/// ```
pub fn scale_add(x: &Tensor, scale: &Tensor, residual: &Tensor) -> Result<Tensor> {
    let (b, c, _) = x.dims3()?;
    if scale.elem_count() != b * c || residual.dims() != x.dims() {
        candle_core::bail!(
            "scale_add: x {:?}, scale {:?}, residual {:?}",
            x.dims(),
            scale.dims(),
            residual.dims()
        );
    }
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        let op = ScaleAdd(f32_vec(scale)?);
        return x
            .contiguous()?
            .apply_op2_no_bwd(&residual.contiguous()?, &op);
    }
    x.broadcast_mul(&scale.reshape((b, c, 1))?)? + residual
}

struct ScaleAdd(Vec<f32>);

impl CustomOp2 for ScaleAdd {
    fn name(&self) -> &'static str {
        "scale-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, r) = match (s1, s2, l1.contiguous_offsets(), l2.contiguous_offsets()) {
            (CpuStorage::F32(x), CpuStorage::F32(r), Some((a0, a1)), Some((b0, b1))) => {
                (&x[a0..a1], &r[b0..b1])
            }
            _ => candle_core::bail!("scale-add: contiguous f32 inputs expected"),
        };
        let (_, _, t) = l1.shape().dims3()?;
        let mut out = vec![0f32; x.len()];
        if t > 0 {
            out.par_chunks_mut(t)
                .zip(x.par_chunks(t).zip(r.par_chunks(t)))
                .enumerate()
                .for_each(|(row, (o, (x, r)))| {
                    let s = self.0[row];
                    for ((o, x), r) in o.iter_mut().zip(x).zip(r) {
                        *o = x * s + r;
                    }
                });
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// The energies of SpeechBrain's `LocationAwareAttention` in one pass:
/// `e[b, t] = v . tanh(enc_h[b, t] + dec_bias[b] + w_loc conv[b, :, t])`, i.e.
/// `mlp_attn(tanh(enc_h + mlp_dec(dec) + mlp_loc(conv_loc(prev_attn))))` with `dec_bias`
/// holding `mlp_dec(dec) + mlp_loc.bias`. The `[B, T, attn_dim]` sums and their `tanh` are never
/// stored (candle would make four passes over them, with libm's scalar `tanh`), which is most of
/// a beam-search step's time. CPU, f32, eval only.
///
/// Shapes: `enc_h` `[B or 1, T, A]`, `dec_bias` `[B, A]`, `conv` `[B, C, T]`, `w_loc` `[A, C]`,
/// `v` `[1, A]`; returns `[B, T]`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let enc_h = Tensor::new(&[[[0.5f32, -1.0], [0.0, 2.0]]], &dev).unwrap(); // [1, T=2, A=2]
/// let dec_bias = Tensor::new(&[[0.1f32, 0.2]], &dev).unwrap(); // [1, 2]
/// let conv = Tensor::new(&[[[1f32, 0.0]]], &dev).unwrap(); // [1, C=1, 2]
/// let w_loc = Tensor::new(&[[1f32], [0.0]], &dev).unwrap(); // [2, 1]
/// let v = Tensor::new(&[[1f32, 1.0]], &dev).unwrap();
/// let e = voxbrain::nnet::fused::location_energies(&enc_h, &dec_bias, &conv, &w_loc, &v).unwrap();
/// let want = [1.6f32.tanh() + (-0.8f32).tanh(), 0.1f32.tanh() + 2.2f32.tanh()];
/// for (g, w) in e.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().zip(want) {
///     assert!((g - w).abs() < 1e-6);
/// }
/// ```
pub fn location_energies(
    enc_h: &Tensor,
    dec_bias: &Tensor,
    conv: &Tensor,
    w_loc: &Tensor,
    v: &Tensor,
) -> Result<Tensor> {
    let (be, t, a) = enc_h.dims3()?;
    let (b, c, tc) = conv.dims3()?;
    if dec_bias.dims() != [b, a] || tc != t || w_loc.dims() != [a, c] || v.elem_count() != a {
        candle_core::bail!(
            "location_energies: shapes enc_h {:?}, dec_bias {:?}, conv {:?}, w_loc {:?}, v {:?} \
             do not fit",
            enc_h.dims(),
            dec_bias.dims(),
            conv.dims(),
            w_loc.dims(),
            v.dims()
        );
    }
    if be != b && be != 1 {
        candle_core::bail!("location_energies: enc_h has {be} sequences, expected {b} or 1");
    }
    // Borrowed, not copied: it is the largest input (`[beams, T, A]`, every step).
    let enc = HostData::new(enc_h)?;
    let enc = enc.slice();
    let dec = f32_vec(dec_bias)?;
    let conv = f32_vec(&conv.transpose(1, 2)?)?; // [B, T, C]
    let wt = f32_vec(&w_loc.t()?)?; // [C, A]
    let v = f32_vec(v)?;
    let group = if be == 1 { b } else { 1 };
    let out = location_energies_host(enc, group, (t, a, c), &dec, &conv, &wt, &v);
    Tensor::from_vec(out, (b, t), enc_h.device())
}

/// [`location_energies`] on host slices: `enc` `[N, T, A]` where sequence `i` attends
/// `enc[i / group]` (beams of one utterance share it), `dec` `[B, A]`, `conv` `[B, T, C]`,
/// `wt` (the location weight transposed) `[C, A]`, `v` `[A]`; returns `[B, T]`.
pub(crate) fn location_energies_host(
    enc: &[f32],
    group: usize,
    (t, a, c): (usize, usize, usize),
    dec: &[f32],
    conv: &[f32],
    wt: &[f32],
    v: &[f32],
) -> Vec<f32> {
    let b = dec.len() / a.max(1);
    let k = Kernel { a, c, wt, v };
    let mut out = vec![0f32; b * t];
    const ROWS: usize = 8;
    out.par_chunks_mut(ROWS).enumerate().for_each(|(i, o)| {
        let r0 = i * ROWS;
        let rows: Vec<EnergyRow> = (r0..r0 + o.len())
            .map(|r| {
                let (bi, ti) = (r / t, r % t);
                let e = (bi / group.max(1)) * t + ti;
                (
                    &enc[e * a..(e + 1) * a],
                    &dec[bi * a..(bi + 1) * a],
                    &conv[r * c..(r + 1) * c],
                )
            })
            .collect();
        energy_rows(&k, &rows, o);
    });
    out
}

/// PyTorch's LSTM cell update from pre-activation gates (order `i, f, g, o`) in one pass:
/// `c = sigmoid(f) * c0 + sigmoid(i) * tanh(g)`, `h = sigmoid(o) * tanh(c)`, with vectorised
/// `exp`/`tanh` (candle would take ~15 ops, each a pass with libm's scalar functions). Gates are
/// `[B, 4H]` with `c0` `[B, H]`, or, with `transposed`, `[4H, B]` with `c0` `[H, B]`; returns
/// `(h, c)` in `c0`'s layout. CPU, f32, eval only.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let dev = Device::Cpu;
/// let gates = Tensor::new(&[[0.5f32, -1.0, 2.0, 0.3]], &dev).unwrap(); // B = 1, H = 1
/// let c0 = Tensor::new(&[[0.7f32]], &dev).unwrap();
/// let (h, c) = voxbrain::nnet::fused::lstm_pointwise(&gates, &c0, false).unwrap();
/// let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
/// let want_c = sig(-1.0) * 0.7 + sig(0.5) * 2f32.tanh();
/// let c = c.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
/// let h = h.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
/// assert!((c - want_c).abs() < 1e-6 && (h - sig(0.3) * want_c.tanh()).abs() < 1e-6);
/// ```
pub fn lstm_pointwise(gates: &Tensor, c0: &Tensor, transposed: bool) -> Result<(Tensor, Tensor)> {
    let (r, q) = c0.dims2()?;
    let want = if transposed { [4 * r, q] } else { [r, 4 * q] };
    if gates.dims() != want {
        candle_core::bail!(
            "lstm_pointwise: gates {:?} do not fit c0 {:?} (transposed: {transposed})",
            gates.dims(),
            c0.dims()
        );
    }
    let g = HostData::new(gates)?;
    let g = g.slice();
    let c0v = HostData::new(c0)?;
    let c0v = c0v.slice();
    let n = r * q;
    let mut out = vec![0f32; 2 * n];
    let (hs, cs) = out.split_at_mut(n);
    if transposed {
        lstm_update_fm(g, c0v, hs, cs);
    } else {
        // Each row of `[B, 4H]` holds one sequence's four gates.
        let rows = g.chunks(4 * q).zip(c0v.chunks(q));
        let outs = hs.chunks_mut(q).zip(cs.chunks_mut(q));
        for ((g, c0), (h, c)) in rows.zip(outs) {
            lstm_cell_rows(
                [&g[..q], &g[q..2 * q], &g[2 * q..3 * q], &g[3 * q..]],
                c0,
                h,
                c,
            );
        }
    }
    let both = Tensor::from_vec(out, (2, r, q), c0.device())?;
    Ok((both.get(0)?, both.get(1)?))
}

/// The LSTM update on feature-major gates `[4H, B]` (gate `k` is the block `k*n..(k+1)*n`,
/// `n = H * B`) and state `[H, B]`: `h`, `c` get the new state. Chunks run in parallel.
pub(crate) fn lstm_update_fm(g: &[f32], c0: &[f32], h: &mut [f32], c: &mut [f32]) {
    let n = h.len();
    const CHUNK: usize = 4096;
    let task = |ti: usize, h: &mut [f32], c: &mut [f32]| {
        let s0 = ti * CHUNK;
        let gs = |k: usize| &g[k * n + s0..k * n + s0 + h.len()];
        lstm_cell_rows([gs(0), gs(1), gs(2), gs(3)], &c0[s0..s0 + h.len()], h, c);
    };
    if n <= CHUNK {
        task(0, h, c);
    } else {
        h.par_chunks_mut(CHUNK)
            .zip(c.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(ti, (h, c))| task(ti, h, c));
    }
}

/// PyTorch's GRU update on feature-major gates (blocks `r, z, n`, each `n = H * B` long):
/// `gi` = input part with `b_ih`, `gh` = recurrent part with `b_hh`, `h0` the previous state;
/// `h = n + z (h0 - n)` with `n = tanh(gi_n + r gh_n)`. Chunks run in parallel.
pub(crate) fn gru_update_fm(gi: &[f32], gh: &[f32], h0: &[f32], h: &mut [f32]) {
    let n = h.len();
    const CHUNK: usize = 4096;
    let task = |ti: usize, h: &mut [f32]| {
        let (s0, len) = (ti * CHUNK, h.len());
        let r = |k: usize| k * n + s0..k * n + s0 + len;
        let gi = [&gi[r(0)], &gi[r(1)], &gi[r(2)]];
        let gh = [&gh[r(0)], &gh[r(1)], &gh[r(2)]];
        gru_cell_rows(gi, gh, &h0[s0..s0 + len], h);
    };
    if n <= CHUNK {
        task(0, h);
    } else {
        h.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(ti, h)| task(ti, h));
    }
}

simd_dispatch!(pub(crate) fn gru_cell_rows(gi: [&[f32]; 3], gh: [&[f32]; 3], h0: &[f32], h: &mut [f32])
    => gru_cell_rows_generic);

#[inline(always)]
fn gru_cell_rows_generic(gi: [&[f32]; 3], gh: [&[f32]; 3], h0: &[f32], h: &mut [f32]) {
    let sig = fastmath::sigmoid;
    let n = h.len();
    let (ir, iz, inn) = (&gi[0][..n], &gi[1][..n], &gi[2][..n]);
    let (hr, hz, hn, h0) = (&gh[0][..n], &gh[1][..n], &gh[2][..n], &h0[..n]);
    for j in 0..n {
        let r = sig(ir[j] + hr[j]);
        let z = sig(iz[j] + hz[j]);
        let nn = fastmath::tanh(inn[j] + r * hn[j]);
        h[j] = nn + z * (h0[j] - nn);
    }
}

simd_dispatch!(fn lstm_cell_rows(g: [&[f32]; 4], c0: &[f32], h: &mut [f32], c: &mut [f32])
    => lstm_cell_rows_generic);

#[inline(always)]
fn lstm_cell_rows_generic(g: [&[f32]; 4], c0: &[f32], h: &mut [f32], c: &mut [f32]) {
    let sig = fastmath::sigmoid;
    let n = h.len();
    let (gi, gf, gg, go, c0) = (&g[0][..n], &g[1][..n], &g[2][..n], &g[3][..n], &c0[..n]);
    let c = &mut c[..n];
    for j in 0..n {
        let cj = sig(gf[j]) * c0[j] + sig(gi[j]) * fastmath::tanh(gg[j]);
        c[j] = cj;
        h[j] = sig(go[j]) * fastmath::tanh(cj);
    }
}

/// `softmax` over the last axis with a vectorised `exp` (candle's CPU softmax calls libm's
/// scalar `expf`; ~8% of a SepFormer's time). CPU f32 without autograd; elsewhere candle's.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::new(&[[0f32, 0.0], [1.0, 1.0]], &Device::Cpu).unwrap();
/// let p = voxbrain::nnet::fused::softmax_last_dim(&x).unwrap();
/// assert_eq!(p.to_vec2::<f32>().unwrap(), vec![vec![0.5, 0.5], vec![0.5, 0.5]]);
/// ```
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        // candle's fused softmax has no backward pass: the composed ops do.
        return candle_nn::ops::softmax(x, candle_core::D::Minus1);
    }
    if !x.device().is_cpu() || x.dtype() != DType::F32 || x.rank() == 0 {
        return candle_nn::ops::softmax_last_dim(x);
    }
    let n = x.dim(candle_core::D::Minus1)?;
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    if n > 0 {
        v.par_chunks_mut(n).with_min_len(8).for_each(softmax_row);
    }
    Tensor::from_vec(v, x.shape(), x.device())
}

simd_dispatch!(pub(crate) fn softmax_row(row: &mut [f32]) => softmax_row_generic);

#[inline(always)]
fn softmax_row_generic(row: &mut [f32]) {
    let max = lanes_max(row);
    // exp and its sum in one pass, summed in the lanes (and order) of `lanes_sum`.
    const L: usize = fastmath::L;
    let mut acc = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        // chunks_exact_mut(L) yields slices of exactly L values: the conversion cannot fail.
        let c: &mut [f32; L] = c.try_into().unwrap();
        for l in 0..L {
            c[l] = fastmath::exp(c[l] - max);
            acc[l] += c[l];
        }
    }
    // The tail as one more vector of lanes, padded with -inf (whose exp is exactly 0): a
    // scalar tail cost as much as the whole vector part for rows of 100 (attention chunks).
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut lanes = [f32::NEG_INFINITY; L];
        lanes[..tail.len()].copy_from_slice(tail);
        for l in 0..L {
            lanes[l] = fastmath::exp(lanes[l] - max);
            acc[l] += lanes[l];
        }
        tail.copy_from_slice(&lanes[..tail.len()]);
    }
    let inv = 1.0 / acc.iter().sum::<f32>();
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// A tensor's values as one contiguous f32 vector (a copy).
pub(crate) fn f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

type EnergyRow<'a> = (&'a [f32], &'a [f32], &'a [f32]);

simd_dispatch!(fn energy_rows(k: &Kernel, rows: &[EnergyRow], out: &mut [f32])
    => energy_rows_generic);

#[inline(always)]
fn energy_rows_generic(k: &Kernel, rows: &[EnergyRow], out: &mut [f32]) {
    for ((enc, dec, conv), o) in rows.iter().zip(out.iter_mut()) {
        *o = k.row(enc, dec, conv);
    }
}

struct Kernel<'a> {
    a: usize,
    c: usize,
    wt: &'a [f32],
    v: &'a [f32],
}

impl Kernel<'_> {
    #[inline(always)]
    fn row(&self, enc: &[f32], dec: &[f32], conv: &[f32]) -> f32 {
        const L: usize = 16;
        let (a, c) = (self.a, self.c);
        let mut acc = [0f32; L];
        let full = a / L * L;
        // Fixed-size blocks (no bounds checks inside) so that each block is a few vector ops.
        let block = |s: &[f32], j0: usize| -> [f32; L] {
            // The range is exactly L long, so the conversion cannot fail.
            s[j0..j0 + L].try_into().expect("a block of L values")
        };
        for j0 in (0..full).step_by(L) {
            let (e, d, v) = (block(enc, j0), block(dec, j0), block(self.v, j0));
            let mut pre = [0f32; L];
            for l in 0..L {
                pre[l] = e[l] + d[l];
            }
            for (ci, &cv) in conv.iter().enumerate().take(c) {
                let w = block(self.wt, ci * a + j0);
                for l in 0..L {
                    pre[l] += cv * w[l];
                }
            }
            for l in 0..L {
                acc[l] += fastmath::tanh(pre[l]) * v[l];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for j in full..a {
            let mut p = enc[j] + dec[j];
            for (ci, &cv) in conv.iter().enumerate().take(c) {
                p += cv * self.wt[ci * a + j];
            }
            sum += fastmath::tanh(p) * self.v[j];
        }
        sum
    }
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Largest absolute difference of two same-shaped tensors (also used by other nnet tests).
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn lstm_pointwise_equals_composed_ops_in_both_layouts() -> Result<()> {
        let dev = Device::Cpu;
        // 3 x 2000 = 6000 states: more than one parallel chunk.
        for (b, h) in [(3usize, 2000usize), (2, 7)] {
            let gates = (Tensor::randn(0f32, 1.0, (b, 4 * h), &dev)? * 3.0)?;
            let c0 = Tensor::randn(0f32, 1.0, (b, h), &dev)?;
            let sig = |t: Tensor| candle_nn::ops::sigmoid(&t);
            let i = sig(gates.narrow(1, 0, h)?)?;
            let f = sig(gates.narrow(1, h, h)?)?;
            let g = gates.narrow(1, 2 * h, h)?.tanh()?;
            let o = sig(gates.narrow(1, 3 * h, h)?)?;
            let c = ((f * &c0)? + (i * g)?)?;
            let hh = (o * c.tanh()?)?;
            let (h1, c1) = lstm_pointwise(&gates, &c0, false)?;
            assert!(max_diff(&h1, &hh) < 1e-6 && max_diff(&c1, &c) < 1e-6);
            // The transposed layout: gates [4H, B], state [H, B].
            let (h2, c2) = lstm_pointwise(&gates.t()?.contiguous()?, &c0.t()?.contiguous()?, true)?;
            assert!(max_diff(&h2.t()?, &hh) < 1e-6 && max_diff(&c2.t()?, &c) < 1e-6);
        }
        assert!(lstm_pointwise(
            &Tensor::zeros((2, 8), DType::F32, &dev)?,
            &Tensor::zeros((2, 3), DType::F32, &dev)?,
            false
        )
        .is_err());
        Ok(())
    }

    #[test]
    fn location_energies_equal_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        // A = 37: two 16-wide blocks and a scalar tail.
        let (b, t, a, c) = (4usize, 9usize, 37usize, 3usize);
        for be in [b, 1] {
            let enc_h = Tensor::randn(0f32, 1.0, (be, t, a), &dev)?;
            let dec_bias = Tensor::randn(0f32, 1.0, (b, a), &dev)?;
            let conv = Tensor::randn(0f32, 1.0, (b, c, t), &dev)?;
            let w_loc = Tensor::randn(0f32, 1.0, (a, c), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (1, a), &dev)?;
            let loc = conv.transpose(1, 2)?.broadcast_matmul(&w_loc.t()?)?; // [B, T, A]
            let e = enc_h
                .broadcast_add(&dec_bias.unsqueeze(1)?)?
                .broadcast_add(&loc)?
                .tanh()?;
            let want = e.broadcast_matmul(&v.t()?)?.squeeze(2)?;
            let got = location_energies(&enc_h, &dec_bias, &conv, &w_loc, &v)?;
            assert!(max_diff(&got, &want) < 2e-5, "{}", max_diff(&got, &want));
        }
        Ok(())
    }

    #[test]
    fn softmax_matches_candle_and_masks_to_zero() -> Result<()> {
        // Rows shorter than, equal to and longer than the 16 lanes, with and without a tail
        // (100: the separation recipe's attention chunks).
        for width in [1, 5, 16, 17, 37, 100] {
            let x = (Tensor::randn(0f32, 1.0, (3, 4, width), &Device::Cpu)? * 5.0)?;
            let got = softmax_last_dim(&x)?;
            let want = candle_nn::ops::softmax_last_dim(&x)?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "width {width}: {diff}");
        }
        let m = Tensor::new(&[[1f32, f32::NEG_INFINITY, 1.0]], &Device::Cpu)?;
        assert_eq!(
            softmax_last_dim(&m)?.to_vec2::<f32>()?,
            vec![vec![0.5, 0.0, 0.5]]
        );
        Ok(())
    }
}
