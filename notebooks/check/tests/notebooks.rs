//! Runs every notebook's code cells, in order, in a fresh working folder (as the kernel would
//! in notebooks/, with `demo_data/` and figures written there), offline from the hub.

use std::sync::atomic::Ordering;

use voxbrain_notebook_check::{convert::convert, CELL, NOTEBOOKS};

#[test]
fn every_notebook_runs() {
    // Hub lookups would only time out here; the demo models fall back to the official mirror
    // (speaker) or the built-in seeded models.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    assert_eq!(NOTEBOOKS.len(), 5, "one notebook per tutorial section");
    let work = tempfile::tempdir().unwrap();
    std::env::set_current_dir(work.path()).unwrap();
    for (name, run) in NOTEBOOKS {
        let t = std::time::Instant::now();
        CELL.store(0, Ordering::SeqCst);
        let res = std::panic::catch_unwind(run);
        let cell = CELL.load(Ordering::SeqCst);
        match res {
            Ok(Ok(())) => println!("{name}: ok ({:.1} s)", t.elapsed().as_secs_f64()),
            Ok(Err(e)) => panic!("{name}.ipynb, code cell {cell}: {e:#}"),
            Err(_) => panic!("{name}.ipynb, code cell {cell} panicked"),
        }
    }
    for f in ["speaker_pca.png", "loss.png", "steps.jsonl"] {
        assert!(work.path().join(f).is_file(), "{f} not written");
    }
}

#[test]
fn converter_keeps_cells_in_order_and_drops_evcxr_commands() {
    let nb = serde_json::json!({"cells": [
        {"cell_type": "markdown", "source": ["# title"]},
        {"cell_type": "code", "source": [":dep voxbrain = { path = \"..\" }\n", ":cache 1024\n", "let x = 2;\n"]},
        {"cell_type": "code", "source": "let y = x + 1;\ny * 2"},
        {"cell_type": "code", "source": ["for i in 0..2 {\n", "    println!(\"{i}\");\n", "}"]}
    ]});
    let c = convert(&nb.to_string()).unwrap();
    assert_eq!(c.deps, vec!["voxbrain".to_string()]);
    assert_eq!(c.cells, 3);
    assert!(!c.body.contains(":cache") && !c.body.contains(":dep"));
    let (x, y) = (
        c.body.find("let x = 2;").unwrap(),
        c.body.find("let y").unwrap(),
    );
    assert!(x < y);
    // The displayed trailing expression is printed; a block's closing brace is not touched.
    assert!(c.body.contains("println!(\"{:?}\", y * 2);"), "{}", c.body);
    assert!(c.body.trim_end().ends_with('}'));
    assert!(convert("{\"cells\": 3}").unwrap_err().contains("cells"));
}
