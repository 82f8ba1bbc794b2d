//! Several processes at once: loads sharing one savedir all succeed and never read a partial
//! file; a fine-tuning run refuses an output folder another process holds.

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
fn finetune_refuses_an_output_folder_another_process_holds() {
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
    // Another process holds the folder (this test process, taking the same lock a running
    // `voxbrain finetune` takes; two real runs started together would race on who is first).
    let held = voxbrain::fsutil::DirLock::acquire(&out, "a fine-tuning run").unwrap();
    let refused = run("pre_a").wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a second run used a locked folder"
    );
    assert!(
        err.contains("in use by another process") && err.contains("run"),
        "{err}"
    );
    assert!(
        !out.join("save").exists(),
        "the refused run wrote into the folder"
    );
    drop(held);
    // Once the holder is gone, the folder is free again (the lock dies with it).
    let again = run("pre_c").wait_with_output().unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
