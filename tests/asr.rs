//! EncoderDecoderASR (CRDNN + attentional GRU decoder + RNNLM + SentencePiece): parity with
//! SpeechBrain 1.1.2 on an SB-layout directory with the official yaml's shape (small sizes,
//! seeded weights), the official yaml's full-size shapes, and bad inputs.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use common::{fixture, npy};
use serde_json::Value;
use voxbrain::decoders::{greedy_search, GreedySearchConfig, S2SRNNBeamSearcher};
use voxbrain::inference::{DecodingMethod, EncoderDecoderASR, PaddingMode};
use voxbrain::pretrained::hparams::Hparams;
use voxbrain::pretrained::{FromHparamsOptions, Pretrained};

fn expected() -> Value {
    let s = std::fs::read_to_string(fixture("asr/expected.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn model() -> EncoderDecoderASR {
    // The yaml's pretrainer paths name a hub repo; the local source must win, offline.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let save = tempfile::tempdir().unwrap().keep();
    let opts = FromHparamsOptions {
        savedir: Some(save),
        ..Default::default()
    };
    EncoderDecoderASR::from_hparams(fixture("asr/model").to_str().unwrap(), &opts)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn wav(m: &EncoderDecoderASR, i: usize) -> Tensor {
    m.load_audio(fixture(&format!("asr/utt_{i}.wav")))
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

#[test]
fn features_and_encoder_match_speechbrain() {
    let m = model();
    for i in 0..3 {
        let w = wav(&m, i);
        let feats = m.compute_normalized_features(&w, &[1.0]).unwrap();
        let want = npy(&format!("asr/feats_{i}.npy"));
        assert_eq!(feats.dims(), want.shape.as_slice());
        let f = vec(&feats);
        common::assert_close(
            &format!("feats {i}"),
            &f,
            &want.data,
            2e-3 * max_abs(&want.data),
            1e-4,
        );
        let enc = m.encode_batch(&w, None).unwrap();
        let want = npy(&format!("asr/enc_{i}.npy"));
        assert_eq!(enc.dims(), want.shape.as_slice());
        // The bound: within 1e-4 of the largest value.
        let tol = 1e-4 * max_abs(&want.data);
        common::assert_close(&format!("encoder {i}"), &vec(&enc), &want.data, tol, tol);
    }
}

#[test]
fn greedy_and_beam_search_match_speechbrain() {
    let exp = expected();
    let mut m = model();
    for (i, u) in exp["utterances"].as_array().unwrap().iter().enumerate() {
        // Decoding runs on SpeechBrain's own encoder output, so that search is tested alone.
        let enc_np = npy(&format!("asr/enc_{i}.npy"));
        let enc =
            Tensor::from_vec(enc_np.data.clone(), enc_np.shape.as_slice(), &Device::Cpu).unwrap();
        let t = enc.dim(1).unwrap();
        let greedy = greedy_search(
            &m.seq2seq_modules(),
            &enc,
            &[t],
            &GreedySearchConfig::default(),
        )
        .unwrap();
        assert_eq!(
            greedy[0],
            ids(&u["greedy"]),
            "greedy tokens of utterance {i}"
        );

        let mut searcher = S2SRNNBeamSearcher {
            modules: m.seq2seq_modules(),
            lm: m.lm_model.clone(),
            ctc_lin: m.ctc_lin.clone(),
            config: m.beam.clone(),
        };
        let hyp = searcher.search(&enc, &[t]).unwrap();
        assert_eq!(
            hyp[0].tokens,
            ids(&u["beam"]),
            "beam (LM + coverage) tokens of utterance {i}"
        );
        searcher.config.scorer = Default::default();
        searcher.lm = None;
        let hyp = searcher.search(&enc, &[t]).unwrap();
        assert_eq!(
            hyp[0].tokens,
            ids(&u["beam_nolm"]),
            "beam (no scorer) tokens of utterance {i}"
        );

        // End to end through the public API, from the wav file.
        m.decoding = DecodingMethod::BeamSearch;
        let (texts, tokens) = m.transcribe_batch(&wav(&m, i), None).unwrap();
        assert_eq!(
            tokens[0],
            ids(&u["beam"]),
            "transcribe_batch tokens of utterance {i}"
        );
        assert_eq!(texts[0], u["beam_text"].as_str().unwrap());
        let text = m
            .transcribe_file(fixture(&format!("asr/utt_{i}.wav")))
            .unwrap();
        assert_eq!(
            text,
            u["beam_text"].as_str().unwrap(),
            "transcribe_file {i}"
        );
    }
}

fn padded(m: &EncoderDecoderASR, a: usize, b: usize) -> (Tensor, Vec<f32>) {
    let (wa, wb) = (wav(m, a), wav(m, b));
    let (la, lb) = (wa.dim(1).unwrap(), wb.dim(1).unwrap());
    let n = la.max(lb);
    let pad = |w: &Tensor, l: usize| w.pad_with_zeros(1, 0, n - l).unwrap();
    let x = Tensor::cat(&[pad(&wa, la), pad(&wb, lb)], 0).unwrap();
    (x, vec![la as f32 / n as f32, lb as f32 / n as f32])
}

#[test]
fn batches_equal_singles_and_speechbrain_mode_reproduces_its_padding() {
    let exp = expected();
    let mut m = model();
    let (x, lens) = padded(&m, 0, 1);
    let want: Vec<f32> = exp["batch01"]["wav_lens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert!(
        (lens[0] - want[0]).abs() < 1e-4,
        "relative lengths {lens:?} vs {want:?}"
    );
    // voxbrain's default: each utterance alone, so batched == single == SpeechBrain single.
    let (_, tokens) = m.transcribe_batch(&x, Some(&lens)).unwrap();
    for (k, i) in [0usize, 1].iter().enumerate() {
        assert_eq!(
            tokens[k],
            ids(&exp["utterances"][*i]["beam"]),
            "batched utterance {i}"
        );
    }
    // SpeechBrain's padded computation, which changes the shorter utterance's transcript.
    m.padding = PaddingMode::SpeechBrain;
    let (_, tokens) = m.transcribe_batch(&x, Some(&lens)).unwrap();
    for k in 0..2 {
        assert_eq!(
            tokens[k],
            ids(&exp["batch01"]["tokens"][k]),
            "SB-mode batch row {k}"
        );
    }
}

#[test]
fn rnnlm_and_tokenizer_match_speechbrain() {
    let exp = expected();
    let m = model();
    let toks: Vec<u32> = ids(&exp["lm"]["tokens"][0]);
    let t = Tensor::new(toks.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let (logits, _) = m
        .lm_model
        .as_ref()
        .unwrap()
        .forward(&t, None, false)
        .unwrap();
    let want = npy("asr/lm_logits.npy");
    assert_eq!(logits.dims(), want.shape.as_slice());
    common::assert_close(
        "RNNLM logits",
        &vec(&logits),
        &want.data,
        1e-5 * max_abs(&want.data).max(1.0),
        1e-6,
    );

    let tok = m.tokenizer.as_ref().expect("tokenizer loaded");
    assert_eq!(
        tok.vocab_size() as u64,
        exp["tokenizer"]["vocab_size"].as_u64().unwrap()
    );
    for case in exp["tokenizer"]["encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode_as_ids(text).unwrap(),
            ids(&case["ids"]),
            "ids of {text:?}"
        );
        let pieces: Vec<String> = case["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            tok.encode_as_pieces(text).unwrap(),
            pieces,
            "pieces of {text:?}"
        );
    }
    for case in exp["tokenizer"]["decode"].as_array().unwrap() {
        assert_eq!(
            tok.decode_ids(&ids(&case["ids"])).unwrap(),
            case["text"].as_str().unwrap()
        );
    }
    // Characters outside the vocabulary become <unk> (id 0), never an error.
    let unk = tok.encode_as_ids("ÜBER #1 ©").unwrap();
    assert!(unk.contains(&tok.unk_id()), "{unk:?}");
    // An id outside the vocabulary is a clear error naming the file.
    let e = tok.decode_ids(&[5000]).unwrap_err().to_string();
    assert!(e.contains("5000") && e.contains("tokenizer.ckpt"), "{e}");
}

fn count(vm: &candle_nn::VarMap) -> (usize, BTreeMap<String, Vec<usize>>) {
    let data = vm.data().lock().unwrap();
    let shapes: BTreeMap<String, Vec<usize>> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    // torch's parameters() excludes BatchNorm buffers.
    let n = data
        .iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(_, v)| v.elem_count())
        .sum();
    (n, shapes)
}

#[test]
fn official_yaml_builds_the_full_size_model_with_speechbrains_shapes() {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference-models/asr-crdnn-rnnlm-librispeech/hyperparams.yaml");
    if !p.exists() {
        eprintln!("skipped: {} not present", p.display());
        return;
    }
    let hp = Hparams::from_file(&p, None).unwrap();
    let asr = EncoderDecoderASR::build(&hp, &Device::Cpu).unwrap();
    let s = std::fs::read_to_string(fixture("asr/official_shapes.json")).unwrap();
    let want: Value = serde_json::from_str(&s).unwrap();
    for (vm, key, params) in [
        (&asr.asr_varmap, "asr", "asr_params"),
        (&asr.lm_varmap, "lm", "lm_params"),
    ] {
        let (n, shapes) = count(vm);
        println!("official {key}: {n} parameters");
        assert_eq!(
            n as u64,
            want[params].as_u64().unwrap(),
            "{key} parameter count"
        );
        let want_shapes: BTreeMap<String, Vec<usize>> = want[key]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect(),
                )
            })
            .collect();
        assert_eq!(shapes, want_shapes, "{key} state_dict keys and shapes");
    }
    assert_eq!(asr.beam.beam_size, 80);
    assert_eq!(asr.beam.scorer.rnnlm, Some((0.5, 1.25)));
    assert_eq!(asr.beam.scorer.coverage, Some((1.5, 0.5)));
}

#[test]
fn long_recordings_are_chunked_and_bad_inputs_are_clear_errors() {
    let mut m = model();
    m.decoding = DecodingMethod::Greedy;
    // 70 s: three chunks cut at quiet points; each chunk is transcribed on its own.
    let sr = m.sample_rate() as usize;
    let parts: Vec<Vec<f32>> = (0..3).map(|i| vec(&wav(&m, i))).collect();
    let mut long = Vec::with_capacity(70 * sr);
    let mut k = 0;
    while long.len() < 70 * sr {
        long.extend_from_slice(&parts[k % 3]);
        long.extend(std::iter::repeat_n(0.0f32, sr / 2));
        k += 1;
    }
    let bounds = voxbrain::inference::chunk_bounds(&long, sr as f32, &m.chunking);
    assert!(bounds.len() >= 3, "{bounds:?}");
    assert_eq!(bounds[0].0, 0);
    assert_eq!(bounds.last().unwrap().1, long.len());
    for w in bounds.windows(2) {
        assert_eq!(w[0].1, w[1].0, "chunks must tile the signal");
        // Cut in the silence between utterances (energy of the cut window ~0).
        let c = w[0].1;
        let e: f32 = long[c.saturating_sub(100)..(c + 100).min(long.len())]
            .iter()
            .map(|x| x * x)
            .sum();
        assert!(e < 1e-6, "cut at {c} is not quiet ({e})");
    }
    let x = Tensor::from_vec(long.clone(), long.len(), &Device::Cpu).unwrap();
    let (text, tokens) = m.transcribe_signal_with_tokens(&x).unwrap();
    let mut want = Vec::new();
    for (a, b) in &bounds {
        let w = Tensor::from_slice(&long[*a..*b], (1, b - a), &Device::Cpu).unwrap();
        want.extend(
            m.transcribe_batch(&w, None)
                .unwrap()
                .1
                .into_iter()
                .flatten(),
        );
    }
    assert_eq!(tokens, want);
    assert!(!text.is_empty());

    let empty = Tensor::zeros(0, candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = m.transcribe_signal(&empty).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let short = Tensor::zeros((1, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = m.transcribe_batch(&short, None).unwrap_err().to_string();
    assert!(e.contains("too short"), "{e}");
    let e = m
        .transcribe_file(fixture("asr/missing.wav"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.wav"), "{e}");
    let (x, _) = padded(&m, 0, 1);
    let e = m
        .transcribe_batch(&x, Some(&[0.5]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("relative lengths"), "{e}");
}

#[test]
fn transcribe_command_prints_json_lines() {
    let save = tempfile::tempdir().unwrap();
    let transcribe = |files: &[&str]| {
        let mut cmd = common::voxbrain();
        cmd.args(["transcribe", "--source"])
            .arg(fixture("asr/model"))
            .arg("--savedir")
            .arg(save.path());
        for f in files {
            cmd.arg(fixture(f));
        }
        cmd
    };
    let out = common::run_ok(&mut transcribe(&["asr/utt_0.wav", "asr/utt_1.wav"]));
    let exp = expected();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, l) in lines.iter().enumerate() {
        assert!(l["file"]
            .as_str()
            .unwrap()
            .ends_with(&format!("utt_{i}.wav")));
        assert_eq!(l["text"], exp["utterances"][i]["beam_text"]);
        assert_eq!(ids(&l["tokens"]), ids(&exp["utterances"][i]["beam"]));
    }
    let bad = transcribe(&["asr/nope.wav"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope.wav"));
}
