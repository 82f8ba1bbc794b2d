//! voxbrain's bundled ASR model (`models/asr-crdnn-voxbrain-synth`, trained by `recipes/asr`):
//! it transcribes held-out utterances (voices and sentences the recipe never trained on) and the
//! bundled real recordings as SpeechBrain 1.1.2 transcribes them with the same folder (same
//! tokens from beam search with the RNNLM; encoder outputs equal within float rounding), and the
//! held-out synthetic ones mostly right.
//!
//! Fixtures: `data-tools/reference/make_fixtures.py asr_trained` (SpeechBrain's outputs).

mod common;

use voxbrain::audio::{load_audio, ChannelMix};
use voxbrain::demo;
use voxbrain::inference::EncoderDecoderASR;
use voxbrain::metrics::{count_ops, op_table};
use voxbrain::pretrained::FromHparamsOptions;

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asr_trained")
}

/// The model as the tour gets it offline: written out of the binary by `demo`.
fn bundled() -> (EncoderDecoderASR, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let folder = demo::trained_model(dir.path(), "asr")
        .unwrap()
        .expect("a trained ASR model is bundled");
    let opts = FromHparamsOptions {
        savedir: Some(dir.path().join("save")),
        ..Default::default()
    };
    let model = EncoderDecoderASR::from_hparams(folder.to_str().unwrap(), &opts).unwrap();
    (model, dir)
}

fn wer(reference: &str, hyp: &str) -> (usize, usize) {
    let r: Vec<&str> = reference.split_whitespace().collect();
    let h: Vec<&str> = hyp.split_whitespace().collect();
    (count_ops(&op_table(&r, &h)).total(), r.len())
}

#[test]
fn bundled_model_matches_speechbrain_and_transcribes_held_out_voices() {
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let (model, _dir) = bundled();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("speechbrain.json")).unwrap(),
    )
    .unwrap();
    let utts = meta["utterances"].as_array().unwrap();
    assert!(utts.len() >= 3, "{meta}");
    let (mut errors, mut words) = (0, 0);
    for u in utts {
        let id = u["id"].as_str().unwrap();
        let path = fixture_dir().join(u["wav"].as_str().unwrap());
        let wav = load_audio(&path, 16000, ChannelMix::AvgToMono).unwrap();
        let (hyp, tokens) = model.transcribe_signal_with_tokens(&wav).unwrap();
        let want: Vec<u32> = u["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        println!(
            "{id}: {hyp:?} (SpeechBrain {:?}; spoken {:?})",
            u["hyp"], u["words"]
        );
        assert_eq!(tokens, want, "{id}: tokens differ from SpeechBrain's");
        assert_eq!(hyp, u["hyp"].as_str().unwrap(), "{id}");
        if let Some(enc) = u["enc"].as_str() {
            let x = wav.unsqueeze(0).unwrap();
            let got = model.encode_batch(&x, None).unwrap();
            let dims = got.dims().to_vec();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = common::npy(&format!("asr_trained/{enc}"));
            assert_eq!(dims, want.shape, "{id}: encoder output shape");
            let parity = voxbrain::metrics::separation::snr(&got, &want.data);
            println!("  encoder output: SNR {parity:.1} dB against SpeechBrain's");
            assert!(parity > 60.0, "{id}: encoder SNR {parity:.1} dB");
            let (e, n) = wer(u["words"].as_str().unwrap(), &hyp);
            errors += e;
            words += n;
        }
    }
    let held_out = 100.0 * errors as f64 / words.max(1) as f64;
    println!("WER on the held-out synthetic utterances: {held_out:.1}%");
    assert!(held_out <= 25.0, "held-out WER {held_out:.1}%");
}
