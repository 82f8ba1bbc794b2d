//! The int8 kernels against the scalar one (exactly) and against the f32 product.

use super::tiles::Tile;
use super::*;

/// Deterministic values in about [-1, 1) (also the fgemm tests').
pub(crate) fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Every tile kernel this CPU can run.
fn available_tiles() -> Vec<Tile> {
    #[allow(unused_mut)]
    let mut tiles = vec![Tile::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            tiles.push(Tile::Avx2);
        }
        #[cfg(feature = "avx512")]
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            tiles.push(Tile::Vnni);
        }
    }
    tiles
}

fn f32_product(w: &[f32], x: View, m: usize) -> Vec<f32> {
    let (k, n) = (x.rows, x.cols);
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|r| w[i * k + r] as f64 * x.data[r * x.rs + j * x.cs] as f64)
                .sum::<f64>() as f32;
        }
    }
    y
}

#[test]
fn kernels_agree_exactly_and_stay_close_to_f32() -> Result<()> {
    // Ragged in every dimension, both layouts of the activations.
    for (m, k, n, transposed) in [
        (7, 13, 21, false),
        (33, 130, 40, true),
        (4, 4, 16, false),
        (1, 1, 1, false),
        (70, 515, 37, false),
    ] {
        let w = lcg(1 + m as u64, m * k);
        let xs = lcg(2 + n as u64, k * n)
            .iter()
            .map(|v| v + 0.3)
            .collect::<Vec<_>>();
        let x = if transposed {
            View::rows(&xs, n, k, k).t()
        } else {
            View::rows(&xs, k, n, n)
        };
        let q = QWeight::quantize(&w, m, k)?;
        let mut want = vec![0f32; m * n];
        qmatmul_with(&mut want, n, &q, x, Tile::Scalar)?;
        for tile in available_tiles() {
            let mut got = vec![0f32; m * n];
            qmatmul_with(&mut got, n, &q, x, tile)?;
            assert_eq!(got, want, "{tile:?} vs scalar at {m}x{k}x{n}");
        }
        let mut got = vec![0f32; m * n];
        qmatmul_into(&mut got, n, &q, x)?;
        assert_eq!(got, want, "{} vs scalar at {m}x{k}x{n}", int8_path());
        let exact = f32_product(&w, x, m);
        let err: f32 = exact
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            .sqrt();
        let norm: f32 = exact.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!(
            err <= 0.02 * norm,
            "{m}x{k}x{n}: relative error {}",
            err / norm
        );
    }
    Ok(())
}

#[test]
fn row_activations_agree_exactly_and_stay_close_to_f32() -> Result<()> {
    for (n, k, out) in [(1, 3, 1), (9, 13, 17), (37, 130, 48), (64, 256, 40)] {
        let w = lcg(7 + out as u64, out * k);
        let x: Vec<f32> = lcg(8 + n as u64, n * k)
            .iter()
            .map(|v| v * 3.0 - 0.5)
            .collect();
        let q = QWeight::quantize_for_rows(&w, out, k)?;
        let init: Vec<f32> = (0..n * out).map(|i| (i % 7) as f32).collect();
        let bias: Vec<f32> = (0..out).map(|i| i as f32 * 0.5).collect();
        let mut want = vec![0f32; n * out];
        qlinear_rows_with(
            &mut want,
            (Some(&bias), Some(&init)),
            &q,
            &x,
            n,
            Tile::Scalar,
        )?;
        for tile in available_tiles() {
            let mut got = vec![0f32; n * out];
            qlinear_rows_with(&mut got, (Some(&bias), Some(&init)), &q, &x, n, tile)?;
            assert_eq!(got, want, "{tile:?} vs scalar at {n}x{k}x{out}");
        }
        let mut got = vec![0f32; n * out];
        qlinear_rows(&mut got, (None, None), &q, &x, n)?;
        // y = x w^T through the f32 reference (which computes w x for x [k, n]).
        let xt = View::rows(&x, n, k, k).t();
        let exact = f32_product(&w, xt, out); // [out, n]
        let (mut err, mut norm) = (0f32, 0f32);
        for i in 0..n {
            for o in 0..out {
                let (a, b) = (exact[o * n + i], got[i * out + o]);
                let added = want[i * out + o] - init[i * out + o] - bias[o];
                assert!((added - b).abs() <= 1e-4 * b.abs().max(1.0) * 10.0);
                err += (a - b).powi(2);
                norm += a * a;
            }
        }
        // (A 3-term dot product is too short to average the rounding out.)
        if k >= 8 {
            let rel = (err / norm).sqrt();
            assert!(rel <= 0.02, "{n}x{k}x{out}: relative error {rel}");
        }
    }
    // A weight packed for the other product is refused by each.
    let w = lcg(1, 8 * 8);
    let mut y = vec![0f32; 64];
    let for_rows = QWeight::quantize_for_rows(&w, 8, 8)?;
    assert!(qmatmul_into(&mut y, 8, &for_rows, View::rows(&w, 8, 8, 8)).is_err());
    assert!(qlinear_rows(&mut y, (None, None), &QWeight::quantize(&w, 8, 8)?, &w, 8).is_err());
    Ok(())
}

#[test]
fn non_finite_activations_stay_in_their_own_column() -> Result<()> {
    // Columns are quantized apart: a NaN or an infinity in one leaves the others as they
    // were, and nothing panics.
    let (m, k, n) = (6, 9, 20);
    let (w, clean) = (lcg(11, m * k), lcg(12, k * n));
    let q = QWeight::quantize(&w, m, k)?;
    let mut want = vec![0f32; m * n];
    qmatmul_into(&mut want, n, &q, View::rows(&clean, k, n, n))?;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut xs = clean.clone();
        xs[3 * n + 5] = bad; // row 3, column 5
        let mut got = vec![0f32; m * n];
        qmatmul_into(&mut got, n, &q, View::rows(&xs, k, n, n))?;
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if i % n != 5 {
                assert_eq!(a, b, "{bad}: element {i}");
            }
        }
    }
    Ok(())
}

#[test]
fn weight_roundtrip_is_within_half_a_step() -> Result<()> {
    let w = lcg(9, 6 * 10);
    let q = QWeight::quantize(&w, 6, 10)?;
    for (r, (a, b)) in w.chunks(10).zip(q.dequantize().chunks(10)).enumerate() {
        let step = a.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for (a, b) in a.iter().zip(b) {
            assert!((a - b).abs() <= step * 0.5 + 1e-7, "row {r}: {a} vs {b}");
        }
    }
    assert!(QWeight::quantize(&w, 7, 10).is_err());
    Ok(())
}

#[test]
fn padding_to_a_wider_dst_keeps_the_rest() -> Result<()> {
    let (m, k, n, ldd) = (5, 8, 3, 7);
    let (w, xs) = (lcg(3, m * k), lcg(4, k * n));
    let q = QWeight::quantize(&w, m, k)?;
    let mut dst = vec![f32::NAN; (m - 1) * ldd + n];
    qmatmul_into(&mut dst, ldd, &q, View::rows(&xs, k, n, n))?;
    for (i, v) in dst.iter().enumerate() {
        assert_eq!(v.is_nan(), i % ldd >= n, "element {i}");
    }
    let mut short = vec![0f32; 4];
    assert!(qmatmul_into(&mut short, n, &q, View::rows(&xs, k, n, n)).is_err());
    Ok(())
}
