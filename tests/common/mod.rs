//! Helpers shared by the integration tests: fixture paths, numeric comparison and running
//! the `voxbrain` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use voxbrain::npy::{read_npy, NpyArray};

/// Path of a committed fixture.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Loads a fixture `.npy`.
pub fn npy(rel: &str) -> NpyArray {
    read_npy(fixture(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// Cosine similarity, accumulated in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Max and mean absolute difference.
pub fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(
        a.len(),
        b.len(),
        "length mismatch: {} vs {}",
        a.len(),
        b.len()
    );
    let mut max = 0.0f32;
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / a.len().max(1) as f64) as f32)
}

/// Asserts max/mean absolute error bounds, printing the figures.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], max_tol: f32, mean_tol: f32) {
    let (max, mean) = diff(got, want);
    println!("{what}: max abs err {max:.3e}, mean abs err {mean:.3e}");
    assert!(
        max <= max_tol && mean <= mean_tol,
        "{what}: max abs err {max:e} (tol {max_tol:e}), mean {mean:e} (tol {mean_tol:e})"
    );
}

/// The `voxbrain` binary, offline (no Hugging Face downloads are tried).
pub fn voxbrain() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxbrain"));
    cmd.env("HF_HUB_OFFLINE", "1");
    cmd
}

/// Runs `cmd`, asserts that it succeeded (its stderr in the message) and returns its output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
