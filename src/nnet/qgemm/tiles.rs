//! The micro-kernels: one `MR x NR` tile of integer dot products and its epilogue, for AVX2,
//! AVX512-VNNI and plain Rust, and the choice among them.

use super::{MR, NR};

/// What turns a tile's integer sums into f32: `y[r][c] = (rs[r] * cs[c]) *
/// (acc[r][c] - zr[r] * zc[c])`, in this order in every kernel (so they agree exactly). For
/// `w x`: row scales and sums are the weight's, column scales and zero points the activations';
/// for `x w^T` the other way round.
pub(super) struct Epilogue<'a> {
    pub rs: &'a [f32; MR],
    pub zr: &'a [i32; MR],
    pub cs: &'a [f32; NR],
    pub zc: &'a [i32; NR],
}

/// One `MR x NR` tile: `y = epilogue(sum_k a[r][k] * b[k][c])`, `a` broadcast row by row
/// and `b` read as vectors; `a` is int8 and `b` uint8, or the other way round with `SWAP`
/// (integer sums; no saturation can occur for the value ranges above, so this equals the SIMD
/// kernels exactly).
pub(super) fn tile_scalar<const SWAP: bool>(
    groups: usize,
    a: &[u8],
    b: &[u8],
    ep: &Epilogue,
    y: &mut [[f32; NR]; MR],
) {
    let (sa, sb) = if SWAP { (false, true) } else { (true, false) };
    let val = |v: u8, signed: bool| if signed { v as i8 as i32 } else { v as i32 };
    let mut acc = [[0i32; NR]; MR];
    for g in 0..groups {
        let (a, b) = (&a[g * MR * 4..][..MR * 4], &b[g * NR * 4..][..NR * 4]);
        for (r, acc) in acc.iter_mut().enumerate() {
            for (c, acc) in acc.iter_mut().enumerate() {
                for j in 0..4 {
                    *acc += val(a[r * 4 + j], sa) * val(b[c * 4 + j], sb);
                }
            }
        }
    }
    for (r, (y, acc)) in y.iter_mut().zip(&acc).enumerate() {
        for (c, (y, &acc)) in y.iter_mut().zip(acc).enumerate() {
            *y = (ep.rs[r] * ep.cs[c]) * (acc - ep.zr[r] * ep.zc[c]) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Epilogue, MR, NR};
    use std::arch::x86_64::*;

    /// The epilogue on two 8-lane accumulators per row.
    #[inline(always)]
    unsafe fn finish(acc: [[__m256i; 2]; MR], ep: &Epilogue, y: &mut [[f32; NR]; MR]) {
        let z = [0, 8].map(|o| _mm256_loadu_si256(ep.zc.as_ptr().add(o) as *const __m256i));
        let xs = [0, 8].map(|o| _mm256_loadu_ps(ep.cs.as_ptr().add(o)));
        for (r, (y, acc)) in y.iter_mut().zip(acc).enumerate() {
            let (ws, wsum) = (_mm256_set1_ps(ep.rs[r]), _mm256_set1_epi32(ep.zr[r]));
            for h in 0..2 {
                let v =
                    _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[h], _mm256_mullo_epi32(z[h], wsum)));
                _mm256_storeu_ps(
                    y.as_mut_ptr().add(8 * h),
                    _mm256_mul_ps(_mm256_mul_ps(ws, xs[h]), v),
                );
            }
        }
    }

    /// The tile's loop: `step(acc, u, s)` adds the four-byte dot products of the unsigned
    /// bytes `u` and the signed bytes `s` to each 32-bit lane of `acc`. Inlined into each
    /// kernel, so it is compiled with that kernel's instruction set.
    #[inline(always)]
    unsafe fn tile<const SWAP: bool>(
        groups: usize,
        a: &[u8],
        b: &[u8],
        ep: &Epilogue,
        y: &mut [[f32; NR]; MR],
        step: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    ) {
        debug_assert!(a.len() >= groups * MR * 4 && b.len() >= groups * NR * 4);
        let mut acc = [[_mm256_setzero_si256(); 2]; MR];
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        for g in 0..groups {
            let b0 = _mm256_loadu_si256(pb.add(g * NR * 4) as *const __m256i);
            let b1 = _mm256_loadu_si256(pb.add(g * NR * 4 + 32) as *const __m256i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let w =
                    _mm256_set1_epi32((pa.add(g * MR * 4 + r * 4) as *const i32).read_unaligned());
                // `a` (broadcast) is the signed operand, or the unsigned one with SWAP.
                let (u0, u1, s0, s1) = if SWAP { (w, w, b0, b1) } else { (b0, b1, w, w) };
                acc[0] = step(acc[0], u0, s0);
                acc[1] = step(acc[1], u1, s1);
            }
        }
        finish(acc, ep, y);
    }

    /// The AVX2 tile: `vpmaddubsw` (u8 x i8 -> pairwise i16) then `vpmaddwd` with ones (-> i32).
    ///
    /// # Safety
    /// The CPU must have AVX2; `a` holds `groups * MR * 4` and `b` `groups * NR * 4` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tile_avx2<const SWAP: bool>(
        groups: usize,
        a: &[u8],
        b: &[u8],
        ep: &Epilogue,
        y: &mut [[f32; NR]; MR],
    ) {
        let ones = _mm256_set1_epi16(1);
        tile::<SWAP>(groups, a, b, ep, y, |acc, u, s| {
            _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones))
        });
    }

    /// The AVX-512 VNNI tile (256-bit, EVEX): `vpdpbusd` does the four products and the sum
    /// in one instruction.
    ///
    /// # Safety
    /// The CPU must have AVX512-VNNI and AVX512-VL; buffers as for [`tile_avx2`].
    #[cfg(feature = "avx512")]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub(super) unsafe fn tile_vnni<const SWAP: bool>(
        groups: usize,
        a: &[u8],
        b: &[u8],
        ep: &Epilogue,
        y: &mut [[f32; NR]; MR],
    ) {
        tile::<SWAP>(groups, a, b, ep, y, |acc, u, s| {
            _mm256_dpbusd_epi32(acc, u, s)
        });
    }
}

/// Which integer tile kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tile {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    Vnni,
}

pub(super) fn best_tile() -> Tile {
    #[cfg(target_arch = "x86_64")]
    {
        // The VNNI tile is part of the `avx512` build; the AVX2 build stands for AVX2-only
        // CPUs (Zen 2/3 and the like), which have no VNNI.
        #[cfg(feature = "avx512")]
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            return Tile::Vnni;
        }
        if is_x86_feature_detected!("avx2") {
            return Tile::Avx2;
        }
    }
    Tile::Scalar
}

/// The name of the int8 kernel this build runs on this CPU: `"avx512-vnni"` (the `avx512`
/// feature on a CPU with AVX512-VNNI), `"avx2"` or `"scalar"`.
///
/// ```
/// assert!(["avx512-vnni", "avx2", "scalar"].contains(&voxbrain::nnet::qgemm::int8_path()));
/// ```
pub fn int8_path() -> &'static str {
    match best_tile() {
        Tile::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Tile::Avx2 => "avx2",
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Tile::Vnni => "avx512-vnni",
    }
}

pub(super) fn run_tile<const SWAP: bool>(
    tile: Tile,
    groups: usize,
    a: &[u8],
    b: &[u8],
    ep: &Epilogue,
    y: &mut [[f32; NR]; MR],
) {
    match tile {
        Tile::Scalar => tile_scalar::<SWAP>(groups, a, b, ep, y),
        // SAFETY: `best_tile` chose these only on CPUs with the features; the packing gives
        // each block and panel exactly `groups` groups.
        #[cfg(target_arch = "x86_64")]
        Tile::Avx2 => unsafe { x86::tile_avx2::<SWAP>(groups, a, b, ep, y) },
        #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
        Tile::Vnni => unsafe { x86::tile_vnni::<SWAP>(groups, a, b, ep, y) },
    }
}
