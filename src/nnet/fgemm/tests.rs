use super::*;

/// Deterministic values in about [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    crate::nnet::qgemm::tests::lcg(seed, n)
}

/// The f64 reference of `epilogue(x w^T)` and, per output, `sum |x||w|` (the error scale).
fn reference(
    x: &[f32],
    ldx: usize,
    rows: usize,
    w: &[f32],
    (out, inp): (usize, usize),
    ep: &Epilogue,
) -> (Vec<f64>, Vec<f64>) {
    let (mut y, mut mag) = (vec![0f64; rows * out], vec![0f64; rows * out]);
    for r in 0..rows {
        for o in 0..out {
            let (mut s, mut m) = (0f64, 0f64);
            for k in 0..inp {
                let p = x[r * ldx + k] as f64 * w[o * inp + k] as f64;
                s += p;
                m += p.abs();
            }
            s += ep.bias.map_or(0.0, |b| b[o] as f64);
            s += ep.residual.map_or(0.0, |res| res[r * out + o] as f64);
            if ep.relu && s < 0.0 {
                s = 0.0;
            }
            y[r * out + o] = s;
            mag[r * out + o] = m + 1.0;
        }
    }
    (y, mag)
}

#[test]
fn products_match_f64_on_ragged_shapes_with_every_epilogue() -> Result<()> {
    if !supported() {
        eprintln!("skipped: no AVX2/FMA");
        return Ok(());
    }
    // Ragged rows (tails of 1..5), ragged panels, several depth passes (> KC), no depth.
    let shapes = [
        (1, 1, 1),
        (7, 3, 17),
        (13, 300, 33),
        (100, 513, 40),
        (6, 0, 5),
        (5, 64, 16),
    ];
    for (i, &(rows, inp, out)) in shapes.iter().enumerate() {
        let ldx = inp + 3;
        let x = values(rows * ldx, i as u64);
        let w = values(out * inp, 100 + i as u64);
        let b = values(out, 200 + i as u64);
        let res = values(rows * out, 300 + i as u64);
        let packed = PackedW::new(View::rows(&w, out, inp, inp));
        for mask in 0..8 {
            let ep = Epilogue {
                bias: (mask & 1 != 0).then_some(&b[..]),
                residual: (mask & 2 != 0).then_some(&res[..]),
                relu: mask & 4 != 0,
            };
            let mut y = vec![f32::NAN; rows * out];
            rows_into(&mut y, &x, ldx, rows, &packed, ep)?;
            let (want, mag) = reference(&x, ldx, rows, &w, (out, inp), &ep);
            for (j, (&got, (&want, &mag))) in y.iter().zip(want.iter().zip(&mag)).enumerate() {
                let err = (got as f64 - want).abs();
                assert!(
                    err <= 1e-6 * mag,
                    "shape {rows}x{inp}x{out} mask {mask} output {j}: {got} vs {want}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn transposed_weights_pack_like_row_major_ones() -> Result<()> {
    if !supported() {
        return Ok(());
    }
    let (rows, inp, out) = (9, 40, 21);
    let x = values(rows * inp, 1);
    let w = values(out * inp, 2);
    // The same weight stored as [in, out] and read through a transposed view.
    let wt: Vec<f32> = (0..inp * out)
        .map(|i| w[(i % out) * inp + i / out])
        .collect();
    let (a, b) = (
        PackedW::new(View::rows(&w, out, inp, inp)),
        PackedW::new(View::rows(&wt, inp, out, out).t()),
    );
    let (mut ya, mut yb) = (vec![0f32; rows * out], vec![0f32; rows * out]);
    rows_into(&mut ya, &x, inp, rows, &a, Epilogue::default())?;
    rows_into(&mut yb, &x, inp, rows, &b, Epilogue::default())?;
    assert_eq!(ya, yb);
    // Repacking a smaller weight into the same buffer leaves no stale columns.
    let mut c = PackedW::new(View::rows(&w, out, inp, inp));
    c.repack(View::rows(&w[..5 * inp], 5, inp, inp));
    let mut yc = vec![0f32; rows * 5];
    rows_into(&mut yc, &x, inp, rows, &c, Epilogue::default())?;
    for r in 0..rows {
        assert_eq!(&yc[r * 5..][..5], &ya[r * out..][..5]);
    }
    Ok(())
}

#[test]
fn blocks_and_the_fused_feed_forward_equal_one_call_per_layer() -> Result<()> {
    if !supported() {
        return Ok(());
    }
    // More rows than one task block, a ragged last block.
    let (rows, inp, hid, out) = (2 * MC + 7, 24, 70, 24);
    let x = values(rows * inp, 3);
    let (w1, b1) = (values(hid * inp, 4), values(hid, 5));
    let (w2, b2) = (values(out * hid, 6), values(out, 7));
    let res = values(rows * out, 8);
    let p1 = PackedW::new(View::rows(&w1, hid, inp, inp));
    let p2 = PackedW::new(View::rows(&w2, out, hid, hid));
    let mut h = vec![0f32; rows * hid];
    let relu = Epilogue {
        bias: Some(&b1),
        residual: None,
        relu: true,
    };
    rows_into(&mut h, &x, inp, rows, &p1, relu)?;
    assert!(h.contains(&0.0) && h.iter().any(|&v| v > 0.0));
    let second = Epilogue {
        bias: Some(&b2),
        residual: Some(&res),
        relu: false,
    };
    let mut want = vec![0f32; rows * out];
    rows_into(&mut want, &h, hid, rows, &p2, second)?;
    assert_eq!(par_rows(&x, rows, &p1, relu)?, h);
    let got = feed_forward(&x, rows, (&p1, &b1), (&p2, &b2), Some(&res))?;
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn nan_stays_in_its_row_and_bad_shapes_are_errors() -> Result<()> {
    if !supported() {
        return Ok(());
    }
    let (rows, inp, out) = (8, 10, 20);
    let mut x = values(rows * inp, 9);
    x[3 * inp + 4] = f32::NAN;
    let w = values(out * inp, 10);
    let p = PackedW::new(View::rows(&w, out, inp, inp));
    let ep = Epilogue {
        relu: true,
        ..Default::default()
    };
    let y = par_rows(&x, rows, &p, ep)?;
    for (r, row) in y.chunks(out).enumerate() {
        assert_eq!(row.iter().all(|v| v.is_nan()), r == 3, "row {r}");
        assert_eq!(row.iter().any(|v| v.is_nan()), r == 3, "row {r}");
    }
    let mut short = vec![0f32; rows * out - 1];
    assert!(rows_into(&mut short, &x, inp, rows, &p, ep).is_err());
    assert!(par_rows(&x[1..], rows - 1, &p, ep).is_err());
    let small_bias = [0f32; 3];
    let ep = Epilogue {
        bias: Some(&small_bias),
        ..Default::default()
    };
    assert!(par_rows(&x, rows, &p, ep).is_err());
    Ok(())
}

#[test]
fn attention_head_matches_f64_softmax_attention() -> Result<()> {
    if !supported() {
        return Ok(());
    }
    // Ragged query blocks (t not a multiple of 16), ragged value tiles (hd not of 6), q, k,
    // v read in place from a packed projection (rows 3 d apart), output rows `ldo` apart.
    for (t, hd) in [(1, 4), (19, 6), (37, 40)] {
        let (d, ldo) = (hd * 2, hd + 5);
        let qkv = values(t * 3 * d, (t * hd) as u64);
        let view = |o: usize| View::rows(&qkv[o..], t, hd, 3 * d);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![f32::NAN; t * ldo];
        let mut s = HeadScratch::default();
        attention_head(
            &mut out,
            (view(hd), view(d + hd), view(2 * d + hd)),
            scale,
            ldo,
            &mut s,
        )?;
        let at = |o: usize, r: usize, c: usize| qkv[r * 3 * d + o + c] as f64;
        for i in 0..t {
            let scores: Vec<f64> = (0..t)
                .map(|j| {
                    (0..hd)
                        .map(|c| at(hd, i, c) * scale as f64 * at(d + hd, j, c))
                        .sum()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..hd {
                let want: f64 = (0..t).map(|j| e[j] / z * at(2 * d + hd, j, c)).sum();
                let got = out[i * ldo + c] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "t {t} hd {hd} ({i}, {c}): {got} vs {want}"
                );
            }
            // Columns between rows are not written.
            assert!(out[i * ldo + hd..(i + 1) * ldo].iter().all(|v| v.is_nan()));
        }
    }
    let qkv = values(12, 1);
    let bad = View::rows(&qkv, 3, 4, 4);
    let mut out = vec![0f32; 11];
    let err = attention_head(
        &mut out,
        (bad, bad, bad),
        1.0,
        4,
        &mut HeadScratch::default(),
    );
    assert!(err.is_err());
    Ok(())
}

#[test]
fn fused_self_attention_rejects_operands_that_do_not_fit() -> Result<()> {
    let (b, t, d) = (2, 3, 4);
    let x = values(b * t * d, 1);
    let w_in = values(3 * d * d, 2);
    let w_out = values(d * d, 3);
    let (p_in, p_out) = (
        PackedW::new(View::rows(&w_in, 3 * d, d, d)),
        PackedW::new(View::rows(&w_out, d, d, d)),
    );
    let (b_in, b_out) = (vec![0f32; 3 * d], vec![0f32; d]);
    // 3 heads do not divide d = 4; a short input; output and input projections swapped.
    let attempts = [
        self_attention(&x, (b, t, d, 3), (&p_in, &b_in), (&p_out, &b_out), None),
        self_attention(
            &x[1..],
            (b, t, d, 2),
            (&p_in, &b_in),
            (&p_out, &b_out),
            None,
        ),
        self_attention(&x, (b, t, d, 2), (&p_out, &b_out), (&p_in, &b_in), None),
    ];
    assert!(attempts.iter().all(|r| r.is_err()));
    if supported() {
        let y = self_attention(&x, (b, t, d, 2), (&p_in, &b_in), (&p_out, &b_out), Some(&x))?;
        assert_eq!(y.len(), b * t * d);
    }
    Ok(())
}
