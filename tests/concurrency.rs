//! Several processes at once: loads sharing one savedir all succeed and never read a partial
//! file; two fine-tuning runs refuse to share one output folder.

mod common;

use std::process::{Child, Command, Stdio};

use common::{fixture, voxbrain};

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn concurrent_loads_of_one_savedir_all_succeed() {
    // The small speaker model's files, with a 48 MB checkpoint in place of the embedding
    // model's, so that copying takes long enough for another process to meet a partial file
    // if copies were not atomic.
    let src_dir = tempfile::tempdir().unwrap();
    let source = src_dir.path();
    for e in std::fs::read_dir(fixture("speaker/model_small")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), source.join(e.file_name())).unwrap();
    }
    let big =
        candle_core::Tensor::ones(12 << 20, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap();
    voxbrain::pretrained::ckpt::save_ckpt(
        source.join("embedding_model.ckpt"),
        &[("big".into(), big)],
    )
    .unwrap();
    for symlink in [false, true] {
        for round in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let savedir = dir.path().join("pretrained");
            // Six processes fetch every file into the same, empty savedir and read every
            // checkpoint in it (`inspect` lists each tensor's shape).
            let children: Vec<Child> = (0..6)
                .map(|_| {
                    let mut cmd = voxbrain();
                    cmd.args(["inspect", "--source", source.to_str().unwrap()])
                        .args(["--savedir", savedir.to_str().unwrap()]);
                    if symlink {
                        cmd.arg("--symlink");
                    }
                    spawn(&mut cmd)
                })
                .collect();
            let outs: Vec<_> = children
                .into_iter()
                .map(|c| c.wait_with_output().unwrap())
                .collect();
            for o in &outs {
                assert!(
                    o.status.success(),
                    "symlink={symlink} round {round}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                assert_eq!(o.stdout, outs[0].stdout, "processes saw different files");
            }
            let listing = String::from_utf8_lossy(&outs[0].stdout);
            assert!(listing.contains("embedding_model.ckpt"), "{listing}");
            let stray: Vec<_> = std::fs::read_dir(&savedir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect();
            assert!(stray.is_empty(), "temporary files left: {stray:?}");
        }
    }
}

#[test]
fn two_finetune_runs_refuse_to_share_an_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.json");
    voxbrain::dataio::librispeech::parse_to_json(
        fixture("dataio/corpus"),
        &train,
        &Default::default(),
    )
    .unwrap();
    let out = dir.path().join("run");
    let run = |savedir: &str| {
        let mut cmd = voxbrain();
        cmd.arg("finetune")
            .args(["--source", fixture("asr/model").to_str().unwrap()])
            .args(["--savedir", dir.path().join(savedir).to_str().unwrap()])
            .args(["--train", train.to_str().unwrap()])
            .args(["--output-dir", out.to_str().unwrap()])
            .args(["--epochs", "1", "--batch-size", "4", "--no-progress"]);
        spawn(&mut cmd)
    };
    let (a, b) = (run("pre_a"), run("pre_b"));
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let refused: Vec<String> = outs
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(ok, 1, "exactly one run may use the folder: {refused:?}");
    assert!(
        refused[0].contains("in use by another process") && refused[0].contains("run"),
        "{}",
        refused[0]
    );
    // Once the first run has ended, the folder is free again (the lock dies with it).
    let again = run("pre_c").wait_with_output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
