//! Writes that fail midway leave the previous file intact and no temporary file behind.
//!
//! The failure is real: the process's file-size limit (RLIMIT_FSIZE, as `ulimit -f`) is set
//! below what each writer needs, so the kernel refuses its writes partway through (EFBIG),
//! like a disk filling up. Permissions cannot be used: tests often run as root. The limit is
//! per process, so this file holds a single test.

#![cfg(target_os = "linux")]

use std::path::Path;

use candle_core::{Device, Tensor};
use voxbrain::audio::{write_wav, WavFormat, Waveform};
use voxbrain::pretrained::ckpt::{read_ckpt, save_ckpt, save_safetensors};

/// Sets the file-size limit (bytes); SIGXFSZ is ignored so writes fail with EFBIG instead
/// of killing the process.
fn limit_file_size(bytes: u64) {
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: bytes as libc::rlim_t,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn no_temporaries(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        left.is_empty(),
        "temporary files left in {}: {left:?}",
        dir.display()
    );
}

#[test]
fn writes_that_fail_midway_keep_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cpu = Device::Cpu;
    let small = Tensor::arange(0f32, 16., &cpu).unwrap();
    let big = Tensor::zeros(1 << 20, candle_core::DType::F32, &cpu).unwrap(); // 4 MB

    // The previous versions, written without a limit.
    let ckpt = d.join("model.ckpt");
    save_ckpt(&ckpt, &[("w".into(), small.clone())]).unwrap();
    let st = d.join("model.safetensors");
    save_safetensors(&st, &[("w".into(), small.clone())]).unwrap();
    let wav = d.join("a.wav");
    write_wav(
        &wav,
        &Waveform::mono(vec![0.25; 100], 16000),
        WavFormat::Float32,
    )
    .unwrap();
    let npy = d.join("e.npy");
    voxbrain::npy::write_npy(&npy, &[2], &[1.0, 2.0]).unwrap();
    let json = d.join("train.json");
    let df = polars::prelude::DataFrame::new_infer_height(vec![polars::prelude::Column::new(
        "id".into(),
        ["a"],
    )])
    .unwrap();
    voxbrain::dataio::write_manifest(&df, &json, voxbrain::dataio::ManifestFormat::Json).unwrap();
    let txt = d.join("notes.txt");
    voxbrain::fsutil::write_atomic(&txt, b"old").unwrap();
    let before: Vec<Vec<u8>> = [&ckpt, &st, &wav, &npy, &json, &txt]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();

    limit_file_size(64 * 1024);
    let e = save_ckpt(&ckpt, &[("w".into(), big.clone())]).unwrap_err();
    assert!(e.to_string().contains("model.ckpt"), "{e}");
    assert!(save_safetensors(&st, &[("w".into(), big)]).is_err());
    let long = Waveform::mono(vec![0.5; 200_000], 16000);
    let e = write_wav(&wav, &long, WavFormat::Float32).unwrap_err();
    assert!(e.to_string().contains("a.wav"), "{e}");
    assert!(voxbrain::npy::write_npy(&npy, &[100_000], &vec![1.0; 100_000]).is_err());
    let ids: Vec<String> = (0..20_000).map(|i| format!("utterance-{i}")).collect();
    let big_df = polars::prelude::DataFrame::new_infer_height(vec![polars::prelude::Column::new(
        "id".into(),
        ids,
    )])
    .unwrap();
    let e =
        voxbrain::dataio::write_manifest(&big_df, &json, voxbrain::dataio::ManifestFormat::Json)
            .unwrap_err();
    assert!(e.to_string().contains("train.json"), "{e}");
    assert!(voxbrain::fsutil::write_atomic(&txt, &vec![b'x'; 100_000]).is_err());
    limit_file_size(u64::MAX);

    let after: Vec<Vec<u8>> = [&ckpt, &st, &wav, &npy, &json, &txt]
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(before == after, "a failed write changed a previous file");
    assert_eq!(read_ckpt(&ckpt).unwrap().tensors["w"].dims(), &[16]);
    no_temporaries(d);
}
