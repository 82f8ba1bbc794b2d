//! Joint attention + CTC beam search (SpeechBrain's `CTCScorer` as a partial scorer): the
//! seeded small model of tests/fixtures/asr with the yaml of tests/fixtures/asr_ctc (blank 0,
//! bos 1, eos 2; RNNLM, coverage and CTC scorers) gives SpeechBrain's hypotheses and scores
//! at CTC weights 0.4 and 0.8 (`make_fixtures.py asr_ctc`).

mod common;

use common::fixture;
use serde_json::Value;
use voxbrain::decoders::S2SRNNBeamSearcher;
use voxbrain::inference::EncoderDecoderASR;
use voxbrain::pretrained::FromHparamsOptions;

/// A yaml edit.
type Edit = fn(String) -> String;

/// The fixture model's files with the CTC yaml at `weight`, edited by `edit`, loaded as a user
/// loads a folder.
fn load(weight: f64, edit: Edit) -> (Result<EncoderDecoderASR, String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("asr/model");
    for f in ["asr.ckpt", "lm.ckpt", "normalizer.ckpt", "tokenizer.ckpt"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let yaml = std::fs::read_to_string(fixture("asr_ctc/hyperparams.yaml")).unwrap();
    let yaml = yaml.replace(
        "ctc_weight_decode: 0.4",
        &format!("ctc_weight_decode: {weight}"),
    );
    std::fs::write(dir.path().join("hyperparams.yaml"), edit(yaml)).unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(dir.path().join("save")),
        ..Default::default()
    };
    let m = EncoderDecoderASR::from_hparams(dir.path().to_str().unwrap(), &opts)
        .map_err(|e| e.to_string());
    (m, dir)
}

#[test]
fn joint_ctc_beam_search_matches_speechbrain() {
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("asr_ctc/expected.json")).unwrap())
            .unwrap();
    let results = exp["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    for r in results {
        let weight = r["ctc_weight"].as_f64().unwrap();
        let (m, _dir) = load(weight, |y| y);
        let m = m.unwrap();
        assert!(m.beam.scorer.ctc.is_some(), "CTC scorer read from the yaml");
        let wav = m
            .load_audio(fixture(&format!("asr/{}", r["utt"].as_str().unwrap())))
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let enc = m.encode_batch(&wav, None).unwrap();
        let t = enc.dims()[1];
        assert_eq!(t as u64, r["frames"].as_u64().unwrap());
        let searcher = S2SRNNBeamSearcher {
            modules: m.seq2seq_modules(),
            lm: m.lm_model.clone(),
            ctc_lin: m.ctc_lin.clone(),
            config: m.beam.clone(),
        };
        let hyp = &searcher.search(&enc, &[t]).unwrap()[0];
        let want: Vec<u32> = r["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let want_score = r["score"].as_f64().unwrap() as f32;
        println!(
            "ctc {weight} {}: {} tokens, score {} (SpeechBrain {want_score})",
            r["utt"],
            hyp.tokens.len(),
            hyp.score
        );
        assert_eq!(hyp.tokens, want, "ctc {weight} {}", r["utt"]);
        assert!(
            (hyp.score - want_score).abs() <= 1e-4 * want_score.abs(),
            "score {} vs {want_score}",
            hyp.score
        );
        // The same through the user's call.
        let (_, tokens) = m.transcribe_batch(&wav, None).unwrap();
        assert_eq!(tokens[0], want);
    }
}

#[test]
fn ctc_scorer_setups_speechbrain_refuses_are_refused() {
    let cases: [(&str, Edit, &str); 3] = [
        (
            "shared indices",
            |y| y.replace("bos_index: 1", "bos_index: 0"),
            "different indices",
        ),
        (
            "CTC only",
            |y| y.replace("ctc_weight_decode: 0.4", "ctc_weight_decode: 1.0"),
            "1.0",
        ),
        (
            "window",
            |y| {
                y.replace(
                    "eos_index: !ref <eos_index>\n\nscorer",
                    "eos_index: !ref <eos_index>\n   ctc_window_size: 5\n\nscorer",
                )
            },
            "ctc_window_size",
        ),
    ];
    for (what, edit, needle) in cases {
        let (m, _dir) = load(0.4, edit);
        let err = m.err().unwrap_or_else(|| panic!("{what}: loaded"));
        assert!(err.contains(needle), "{what}: {err}");
    }
}
