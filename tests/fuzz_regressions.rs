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

/// The crashes fuzzing found, each now a specific error (a panic, an out-of-memory and an
/// out-of-bounds read in the C++ SentencePiece library, in that order).
#[test]
fn the_crashes_fuzzing_found_are_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let one = |target: &str| {
        let d = dir.join(target);
        let p = std::fs::read_dir(&d)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        (std::fs::read(&p).unwrap(), p)
    };
    // `!ref` arithmetic next to a multi-byte character sliced a string mid-character.
    let (yaml, _) = one("hparams");
    let text = String::from_utf8_lossy(&yaml).into_owned();
    let (y, o) = text
        .split_once('\0')
        .map_or((text.as_str(), None), |(y, o)| (y, Some(o)));
    let _ = voxbrain::pretrained::hparams::Hparams::from_str(y, "fuzz.yaml", o);
    // A 136-byte .npy declaring a 2 GB header, and one whose nested brackets sent the
    // header parser into exponential backtracking.
    let npy_dir = dir.join("npy");
    let e = voxbrain::npy::read_npy(npy_dir.join("oom-791e51144ba86b0762cc870e47c6dd20d15d86ef"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("header declares"), "{e}");
    let t = std::time::Instant::now();
    let e =
        voxbrain::npy::read_npy(npy_dir.join("timeout-78a9f4a770319962f2cb96cb546e7df3c2b39cc5"))
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("nests brackets") && t.elapsed().as_secs() < 5,
        "{e}"
    );
    // A tokenizer whose normalization trie points outside itself.
    let (model, _) = one("sentencepiece");
    let e = voxbrain::tokenizers::SentencePiece::from_bytes(&model, "bad.model").unwrap_err();
    assert!(e.to_string().contains("normalization map"), "{e}");
}
