//! Matrix products on borrowed host slices, for the eval-mode one-step kernels
//! ([`super::rnn_step`], the beam search's decoder and language-model steps).
//!
//! The CPU GEMM (the `gemm` crate, which candle's matmul calls) runs near the machine's peak
//! when the batch axis has stride 1 in both the activations and the result, and at a third of
//! that when the result is row-major `[batch, features]` (it then re-packs the weight on every
//! call). The step kernels therefore keep activations feature-major, `[features, batch]`: a
//! weight `[O, K]` times `x^T` `[K, B]` gives `y^T` `[O, B]`, and concatenating features is
//! concatenating buffers. Weights are read in place through [`HostF32`], never copied.

use std::sync::{Mutex, MutexGuard};

use candle_core::{CpuStorage, Result, Storage, StorageRef, Tensor};

/// The values of a contiguous f32 CPU storage (what custom ops' `cpu_fwd` receive); `what`
/// names the op in the error otherwise.
pub(crate) fn storage_f32<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: contiguous f32 input expected"),
    }
}

/// [`storage_f32`], mutable (what in-place ops' `cpu_fwd` receive as their destination).
pub(crate) fn storage_f32_mut<'a>(
    s: &'a mut candle_core::CpuStorage,
    l: &candle_core::Layout,
    what: &str,
) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (candle_core::CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{what}: contiguous f32 input expected"),
    }
}

/// A CPU f32 tensor's values, borrowed (the storage's read lock is held while this lives).
pub(crate) struct HostF32<'a> {
    guard: StorageRef<'a>,
    start: usize,
    len: usize,
}

impl<'a> HostF32<'a> {
    /// Borrows `t`, which must be a contiguous CPU f32 tensor; `what` names it in errors.
    pub fn new(t: &'a Tensor, what: &str) -> Result<Self> {
        if !t.is_contiguous() {
            candle_core::bail!("{what}: expected a contiguous tensor");
        }
        let (guard, layout) = t.storage_and_layout();
        if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
            candle_core::bail!("{what}: expected a CPU f32 tensor");
        }
        let start = layout.start_offset();
        Ok(Self {
            guard,
            start,
            len: t.elem_count(),
        })
    }

    /// The values in row-major order.
    pub fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.start + self.len],
            _ => &[],
        }
    }
}

/// A tensor's values on the host: borrowed when it is a contiguous CPU f32 tensor, else
/// copied.
pub(crate) enum HostData<'a> {
    Borrowed(HostF32<'a>),
    Owned(Vec<f32>),
}

impl<'a> HostData<'a> {
    pub fn new(t: &'a Tensor) -> Result<Self> {
        if t.is_contiguous() && t.device().is_cpu() && t.dtype() == candle_core::DType::F32 {
            return Ok(Self::Borrowed(HostF32::new(t, "tensor")?));
        }
        Ok(Self::Owned(
            t.to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        ))
    }

    pub fn slice(&self) -> &[f32] {
        match self {
            Self::Borrowed(h) => h.slice(),
            Self::Owned(v) => v,
        }
    }
}

/// A strided matrix over a slice: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix whose rows are `ld` apart.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: ld,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element is inside `data`.
    pub fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a b` (or `dst += a b` with `accumulate`), `dst` row-major `[a.rows, b.cols]` with rows
/// `ldd` apart. Multi-threaded as candle's matmul is.
pub(crate) fn matmul_into(
    dst: &mut [f32],
    ldd: usize,
    a: View,
    b: View,
    accumulate: bool,
) -> Result<()> {
    let threads = candle_core::utils::get_num_threads();
    matmul_into_with(dst, ldd, a, b, accumulate, threads)
}

/// [`matmul_into`] on at most `threads` threads.
pub(crate) fn matmul_into_with(
    dst: &mut [f32],
    ldd: usize,
    a: View,
    b: View,
    accumulate: bool,
    threads: usize,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let dst_fits = m == 0 || n == 0 || (m - 1) * ldd + n <= dst.len();
    if b.rows != k || !a.fits() || !b.fits() || !dst_fits || ldd < n {
        candle_core::bail!(
            "matmul_into: [{m}, {k}] x [{}, {n}] does not fit its buffers",
            b.rows
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(ldd).take(m).for_each(|r| r[..n].fill(0.0));
        }
        return Ok(());
    }
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the product touches was bounds-checked above (`fits`, `dst_fits`);
    // `dst` is exclusively borrowed and does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ldd as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// Whether every tensor is a CPU f32 tensor: where the host training ops apply (elsewhere
/// their callers fall back to candle's ops).
pub(crate) fn all_host_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

/// The state a custom op shares between its forward and backward passes, locked; `what` names
/// the op in the error when a panic elsewhere poisoned it.
pub(crate) fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> Result<MutexGuard<'a, T>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg(format!("{what}: poisoned state")))
}

/// Whether `x [rows, in] @ w^T` is better run feature-major, as `(w x^T)^T`: with few rows
/// against a large weight, the `gemm` crate re-packs a transposed weight on every call and runs
/// at a third of its speed, while `w` in its stored layout needs no packing.
pub(crate) fn few_rows_big_weight(rows: usize, weight_len: usize) -> bool {
    rows <= 128 && weight_len >= 1 << 20
}

/// The transpose of a row-major `[rows, cols]` matrix, in tiles that stay in cache.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut dst = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
    dst
}

/// `y^T = w x^T` for a weight `w` `[o, k]` (rows `ldw` apart, so a column block of a larger
/// weight works too) and feature-major `xt` `[k, b]`: returns `[o, b]`.
pub(crate) fn wxt(
    w: &[f32],
    ldw: usize,
    o: usize,
    xt: &[f32],
    k: usize,
    b: usize,
) -> Result<Vec<f32>> {
    let mut y = vec![0f32; o * b];
    matmul_into(
        &mut y,
        b,
        View::rows(w, o, k, ldw),
        View::rows(xt, k, b, b),
        false,
    )?;
    Ok(y)
}

/// A dense layer `y = W x + b` on borrowed weights, feature-major (`[in, B]` -> `[out, B]`).
pub(crate) struct HostLinear<'a> {
    w: HostF32<'a>,
    b: Option<Vec<f32>>,
    pub inp: usize,
    pub out: usize,
}

impl<'a> HostLinear<'a> {
    /// Borrows `weight` `[out, in]`; copies `bias` `[out]`.
    pub fn new(weight: &'a Tensor, bias: Option<&Tensor>, what: &str) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        let b = bias.map(super::fused::f32_vec).transpose()?;
        if b.as_ref().is_some_and(|b| b.len() != out) {
            candle_core::bail!("{what}: bias does not have {out} values");
        }
        Ok(Self {
            w: HostF32::new(weight, what)?,
            b,
            inp,
            out,
        })
    }

    /// `[out, B]` for `xt` `[in, B]`.
    pub fn forward(&self, xt: &[f32], b: usize) -> Result<Vec<f32>> {
        let mut y = wxt(self.w.slice(), self.inp, self.out, xt, self.inp, b)?;
        if let Some(bias) = &self.b {
            for (row, &v) in y.chunks_mut(b.max(1)).zip(bias) {
                row.iter_mut().for_each(|y| *y += v);
            }
        }
        Ok(y)
    }
}

/// Rows `ids` of an embedding table `[N, dim]`, feature-major `[dim, ids.len()]`.
pub(crate) fn embed_fm(table: &[f32], dim: usize, ids: &[u32]) -> Result<Vec<f32>> {
    let n = table.len() / dim.max(1);
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= n) {
        candle_core::bail!("Embedding: token id {bad} out of range (vocabulary of {n})");
    }
    let mut out = vec![0f32; dim * ids.len()];
    for (j, &i) in ids.iter().enumerate() {
        let row = &table[i as usize * dim..(i as usize + 1) * dim];
        for (f, &v) in row.iter().enumerate() {
            out[f * ids.len() + j] = v;
        }
    }
    Ok(out)
}

/// The columns `idx` of a row-major `[rows, cols]` matrix: `[rows, idx.len()]`.
pub(crate) fn gather_cols(src: &[f32], cols: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(src.len() / cols.max(1) * idx.len());
    for row in src.chunks(cols) {
        out.extend(idx.iter().map(|&i| row[i]));
    }
    out
}

/// Which earlier hypotheses the current ones continue: `parent[j]` for each of them, the
/// distinct parents in order (`unique`) and each one's position there (`slot`). Siblings share
/// their parent's recurrent state, so products with that state run once per distinct parent.
#[derive(Debug, Clone)]
pub(crate) struct Parents {
    pub parent: Vec<usize>,
    pub unique: Vec<usize>,
    pub slot: Vec<usize>,
}

impl Parents {
    /// From each hypothesis's parent.
    pub fn new(parent: Vec<usize>) -> Self {
        let mut unique = parent.clone();
        unique.sort_unstable();
        unique.dedup();
        let slot = parent
            .iter()
            .map(|p| unique.binary_search(p).unwrap_or(0))
            .collect();
        Self {
            parent,
            unique,
            slot,
        }
    }

    /// Each hypothesis its own parent.
    pub fn identity(n: usize) -> Self {
        Self::new((0..n).collect())
    }

    /// An error unless these are `b` hypotheses continuing some of the `n_prev` before.
    pub fn check(&self, b: usize, n_prev: usize) -> Result<()> {
        if self.parent.len() != b || self.parent.iter().any(|&i| i >= n_prev) {
            candle_core::bail!("search step: {b} hypotheses do not follow the {n_prev} before");
        }
        Ok(())
    }
}

/// The largest absolute difference of two equally long slices (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View, b: View) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols)
                    .map(|k| a.data[i * a.rs + k * a.cs] * b.data[k * b.rs + j * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_equal_the_naive_sums() -> Result<()> {
        let w: Vec<f32> = (0..37 * 20).map(|i| ((i * 13) % 17) as f32 - 8.0).collect();
        let x: Vec<f32> = (0..20 * 5).map(|i| ((i * 7) % 11) as f32 * 0.5).collect();
        // A column block of w (cols 3..15 of 20) times x's rows 3..15, and a transposed view.
        let a = View {
            data: &w[3..],
            ..View::rows(&w, 37, 12, 20)
        };
        let b = View::rows(&x[15..], 12, 5, 5);
        let mut y = vec![1f32; 37 * 5];
        matmul_into(&mut y, 5, a, b, true)?;
        let want = naive(a, b);
        assert!(y.iter().zip(&want).all(|(g, w)| (g - 1.0 - w).abs() < 1e-3));
        let y2 = wxt(&w, 20, 37, &x, 20, 5)?;
        assert_eq!(
            y2,
            naive(View::rows(&w, 37, 20, 20), View::rows(&x, 20, 5, 5))
        );
        // A transposed view as the left factor: w^T [20, 37] times w's first 5 columns.
        let at = View::rows(&w, 37, 20, 20).t();
        let mut z = vec![0f32; 20 * 5];
        matmul_into(&mut z, 5, at, View::rows(&w, 37, 5, 20), false)?;
        assert_eq!(z, naive(at, View::rows(&w, 37, 5, 20)));
        // Out-of-bounds views are errors, not reads past the end.
        assert!(matmul_into(&mut z, 5, View::rows(&w, 38, 20, 20), b, false).is_err());
        Ok(())
    }

    #[test]
    fn parents_map_siblings_to_one_slot() {
        let p = Parents::new(vec![4, 1, 4, 4, 0]);
        assert_eq!(p.unique, vec![0, 1, 4]);
        assert_eq!(p.slot, vec![2, 1, 2, 2, 0]);
        let m = [1f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]; // [2, 5]
        assert_eq!(
            gather_cols(&m, 5, &p.unique),
            vec![1.0, 2.0, 5.0, 6.0, 7.0, 10.0]
        );
    }
}
