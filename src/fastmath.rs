//! Branch-free `f32` math that compilers vectorise, for the CPU hot loops: `log10` (Fbank),
//! `exp` and `tanh` (fused inference kernels), blocked reductions, and [`simd_dispatch`] to
//! compile a loop for AVX-512 / AVX2 with a run-time check. libm's scalar `log10f`, `expf` and
//! `tanhf`, which candle calls element by element, do not vectorise.
//!
//! Accuracy: `log10` max absolute error 1.4e-6 (1.4e-5 dB) over 1e-10..1e10; `exp` within
//! ~2 ulp; `tanh` within ~2.5e-7 absolute (see the tests), close to torch's SLEEF functions.

/// Defines `fn $name(args) -> ret` that runs `$generic` (an `#[inline(always)]` function
/// written so that the compiler vectorises it) compiled for AVX-512 (with the `avx512` feature)
/// or AVX2+FMA when the CPU has them (checked at run time), else for the baseline target.
macro_rules! simd_dispatch {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $generic:path) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[cfg(feature = "avx512")]
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[cfg(feature = "avx512")]
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked above).
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA (checked above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

/// The SIMD path this build takes on this CPU, for its own loops and the `gemm` crate's
/// kernels alike: `"avx512"` (the `avx512` feature on a CPU with AVX-512F), `"avx2"` (AVX2 and
/// FMA), or `"baseline"`.
///
/// ```
/// let path = voxbrain::fastmath::simd_path();
/// assert!(["avx512", "avx2", "baseline"].contains(&path));
/// ```
pub fn simd_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        #[cfg(feature = "avx512")]
        if is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return "avx2";
        }
    }
    "baseline"
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two (Cody-Waite) so that `x - k ln2` is exact for the k that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// The polynomial with coefficients `c` (highest degree first) at `x`, by Horner's rule.
#[inline(always)]
fn horner<const N: usize>(x: f32, c: &[f32; N]) -> f32 {
    c[1..].iter().fold(c[0], |p, &k| p * x + k)
}

/// `e^x` (saturating at `x = 88`, 0 below `x = -87.3`).
///
/// ```
/// let y = voxbrain::fastmath::exp(1.0);
/// assert!((y - std::f32::consts::E).abs() < 1e-6);
/// ```
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x0 = x;
    // NaN stays NaN.
    let x = x.clamp(-87.3, 88.0);
    // Round x / ln2 to an integer by adding 1.5 * 2^23 (the FPU rounds to nearest); the
    // integer is then also in the low mantissa bits. No float-to-int cast: Rust's saturating
    // `as` (with its NaN check) would keep the loop from vectorising.
    const MAGIC: f32 = 12_582_912.0;
    let kf = x * LOG2E + MAGIC;
    let k = kf - MAGIC;
    // |r| <= ln2 / 2.
    let r = x - k * LN2_HI - k * LN2_LO;
    // Taylor series of e^r to r^7 (truncation error < 6e-9 relative on |r| <= 0.35).
    let p = horner(
        r,
        &[
            1.0 / 5040.0,
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ],
    );
    let ki = (kf.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let y = p * f32::from_bits((ki.wrapping_add(127) << 23) as u32);
    // Below the clamp (e.g. -inf from a mask) the result is 0, as a softmax needs.
    if x0 < -87.3 {
        0.0
    } else {
        y
    }
}

/// The logistic sigmoid `1 / (1 + e^-x)` with [`exp`] (the RNN cells' gates).
///
/// ```
/// assert_eq!(voxbrain::fastmath::sigmoid(0.0), 0.5);
/// assert!((voxbrain::fastmath::sigmoid(2.0) - 0.880_797).abs() < 1e-6);
/// ```
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x)`: the odd Taylor series up to x^15 for |x| < 0.5 (no cancellation near 0), else
/// `1 - 2 / (e^{2|x|} + 1)` with the sign of `x`.
///
/// ```
/// let y = voxbrain::fastmath::tanh(0.3);
/// assert!((y - 0.3f32.tanh()).abs() < 1e-7);
/// ```
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let big = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let s = a * a;
    let p = horner(
        s,
        &[
            6_404_582.0 / 10_854_718_875.0,
            -929_569.0 / 638_512_875.0,
            21_844.0 / 6_081_075.0,
            -1_382.0 / 155_925.0,
            62.0 / 2_835.0,
            -17.0 / 315.0,
            2.0 / 15.0,
            -1.0 / 3.0,
        ],
    );
    let small = a + a * s * p;
    let y = if a < 0.5 { small } else { big };
    y.copysign(x)
}

/// `log10(x)` for finite `x > 0` (callers clamp to `amin` first).
#[inline(always)]
pub fn log10(x: f32) -> f32 {
    const LN2: f32 = std::f32::consts::LN_2;
    const INV_LN10: f32 = std::f32::consts::LOG10_E;
    let bits = x.to_bits();
    // Split x = m * 2^e with m in [sqrt(1/2), sqrt(2)).
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln(m) = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716: odd series to s^11.
    let s = (m - 1.0) / (m + 1.0);
    let p = horner(
        s * s,
        &[1.0 / 11.0, 1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0],
    );
    let ln_m = 2.0 * s * p;
    (ln_m + e as f32 * LN2) * INV_LN10
}

/// Lanes of the blocked reductions (16 f32 = one AVX-512 register).
pub(crate) const L: usize = 16;

/// `sum_t f(a[t], b[t])` in 16 independent lanes over fixed-size blocks, so that the loop
/// vectorises (no bounds checks or ordered float sum inside).
#[inline(always)]
pub(crate) fn lanes_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let tail: f32 = (ac.remainder().iter().zip(bc.remainder()))
        .map(|(&x, &y)| f(x, y))
        .sum();
    for (x, y) in ac.zip(bc) {
        // chunks_exact(L) yields slices of exactly L values: the conversions cannot fail.
        let (x, y): (&[f32; L], &[f32; L]) = (x.try_into().unwrap(), y.try_into().unwrap());
        for l in 0..L {
            acc[l] += f(x[l], y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The maximum of `x` (-inf when empty) in 16 independent lanes, so that the loop vectorises.
#[inline(always)]
pub(crate) fn lanes_max(x: &[f32]) -> f32 {
    let mut lane = [f32::NEG_INFINITY; L];
    let chunks = x.chunks_exact(L);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        // chunks_exact(L) yields slices of exactly L values: the conversion cannot fail.
        let c: &[f32; L] = c.try_into().unwrap();
        for l in 0..L {
            lane[l] = lane[l].max(c[l]);
        }
    }
    // A tree over the lanes: 4 dependent steps, not 16 (rows of 100 make this a fifth of a
    // softmax).
    let mut w = L / 2;
    while w > 0 {
        for l in 0..w {
            lane[l] = lane[l].max(lane[l + w]);
        }
        w /= 2;
    }
    lane[0].max(tail)
}

/// The minimum and maximum of `x` (`(inf, -inf)` when empty; NaN is skipped) in 16
/// independent lanes, so that the loop vectorises. Selects, not `f32::min`/`max`, whose NaN
/// rules keep the compiler from using plain vector min/max.
#[inline(always)]
pub(crate) fn lanes_min_max(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L]);
    let chunks = x.chunks_exact(L);
    for &v in chunks.remainder() {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
    }
    for c in chunks {
        // chunks_exact(L) yields slices of exactly L values: the conversion cannot fail.
        let c: &[f32; L] = c.try_into().unwrap();
        for l in 0..L {
            lo[l] = if c[l] < lo[l] { c[l] } else { lo[l] };
            hi[l] = if c[l] > hi[l] { c[l] } else { hi[l] };
        }
    }
    (
        lo.iter().fold(f32::INFINITY, |a, &b| a.min(b)),
        hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn lanes_max_of_every_length() {
        for n in 0..70 {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
            let want = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert_eq!(super::lanes_max(&x), want, "n = {n}");
            // The maximum in each position, lanes and tail alike.
            for at in 0..n {
                let mut y = x.clone();
                y[at] = 100.0;
                assert_eq!(super::lanes_max(&y), 100.0, "n = {n}, at {at}");
            }
        }
    }

    #[test]
    fn lanes_min_max_skips_nan() {
        let mut x: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0) * 0.5).collect();
        x[3] = f32::NAN;
        assert_eq!(super::lanes_min_max(&x), (-10.0, 8.0));
        assert_eq!(
            super::lanes_min_max(&[]),
            (f32::INFINITY, f32::NEG_INFINITY)
        );
    }

    #[test]
    fn close_to_f64_log10() {
        let mut worst = 0.0f64;
        let mut x = 1e-10f32;
        while x < 1e10 {
            let got = super::log10(x) as f64;
            let want = (x as f64).log10();
            let err = (got - want).abs();
            worst = worst.max(err);
            x *= 1.000_37;
        }
        // Absolute error in log10 units; x10 gives dB.
        assert!(worst < 2e-6, "worst abs error {worst:e}");
    }

    #[test]
    fn exp_and_tanh_match_f64() {
        let mut max_exp_rel = 0f64;
        let mut max_tanh_abs = 0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 5e-5; // [-10, 10]
            let e = super::exp(x) as f64;
            let want = (x as f64).exp();
            max_exp_rel = max_exp_rel.max(((e - want) / want).abs());
            let t = super::tanh(x) as f64;
            max_tanh_abs = max_tanh_abs.max((t - (x as f64).tanh()).abs());
        }
        assert!(max_exp_rel < 3e-7, "exp relative error {max_exp_rel}");
        assert!(max_tanh_abs < 2.5e-7, "tanh absolute error {max_tanh_abs}");
        assert_eq!(super::tanh(100.0), 1.0);
        assert_eq!(super::tanh(-100.0), -1.0);
        assert_eq!(super::tanh(0.0), 0.0);
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert!(super::exp(f32::NAN).is_nan() && super::tanh(f32::NAN).is_nan());
    }
}
