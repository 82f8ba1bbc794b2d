//! Replays every input that once crashed a fuzz target (tests/fixtures/fuzz/<target>/), plus
//! the fuzz seeds, through the same code the targets run (fuzz/harness.rs): each must come
//! back as an `Ok` or an error, never a panic, an abort or a runaway allocation.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        root.join("tests/fixtures/fuzz").join(target),
        root.join("fuzz/seeds").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "{target}: {} panicked", p.display());
            n += 1;
        }
    }
    n
}

#[test]
fn fuzz_inputs_replay_without_panics() {
    let counts = [
        ("audio_read", replay("audio_read", harness::audio_read)),
        ("manifest", replay("manifest", harness::manifest)),
        ("hparams", replay("hparams", harness::hparams)),
        ("ckpt", replay("ckpt", harness::ckpt)),
        (
            "sentencepiece",
            replay("sentencepiece", harness::sentencepiece),
        ),
        ("npy", replay("npy", harness::npy)),
    ];
    for (t, n) in counts {
        assert!(n > 0, "no inputs found for {t}");
    }
}
