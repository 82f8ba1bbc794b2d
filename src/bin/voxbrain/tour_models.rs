//! The tour's pretrained-model steps: the tutorial's ASR, speaker verification and source
//! separation. Each first tries the official HuggingFace model; without a network (or with
//! `--offline`) it runs the small SpeechBrain-layout models bundled with the tests, whose
//! weights are seeded random numbers: the whole pipeline runs, but the outputs are noise.

use std::path::{Path, PathBuf};

use voxbrain::inference::{EncoderDecoderASR, SepformerSeparation, SpeakerRecognition};
use voxbrain::pretrained::FromHparamsOptions;

fn bundled(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Loads `official` unless offline, else (or on failure) the bundled model.
fn load<M>(
    what: &str,
    official: &str,
    local: &str,
    out_dir: &Path,
    offline: bool,
    from: impl Fn(&str, &FromHparamsOptions) -> anyhow::Result<M>,
) -> anyhow::Result<M> {
    if !offline {
        let opts = FromHparamsOptions {
            savedir: Some(out_dir.join("pretrained_models").join(what)),
            ..Default::default()
        };
        match from(official, &opts) {
            Ok(m) => {
                println!("  loaded {official}");
                return Ok(m);
            }
            Err(e) => println!("  {official} not reachable ({e:#}); using the bundled test model"),
        }
    }
    let dir = bundled(local);
    println!(
        "  bundled model {} (seeded random weights: outputs are not meaningful)",
        dir.display()
    );
    // The bundled yaml's pretrainer names hub paths; the local directory must win offline.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let opts = FromHparamsOptions {
        savedir: Some(
            out_dir
                .join("pretrained_models")
                .join(format!("{what}_bundled")),
        ),
        ..Default::default()
    };
    from(&dir.to_string_lossy(), &opts)
}

pub fn run(out_dir: &Path, inputs: &[PathBuf], offline: bool) -> anyhow::Result<()> {
    println!("== Step 5: speech recognition (EncoderDecoderASR.from_hparams + transcribe_file)");
    let asr = load(
        "asr-crdnn-rnnlm-librispeech",
        "speechbrain/asr-crdnn-rnnlm-librispeech",
        "asr/model",
        out_dir,
        offline,
        |s, o| Ok(EncoderDecoderASR::from_hparams(s, o)?),
    )?;
    for p in inputs {
        let t0 = std::time::Instant::now();
        let text = asr.transcribe_file(p)?;
        println!(
            "  {}: {:?} ({:.2} s)",
            p.display(),
            text,
            t0.elapsed().as_secs_f64()
        );
    }

    if let Some(tok) = &asr.tokenizer {
        // The tutorial's text_pipeline: asr_model.tokenizer.encode_as_ids(words).
        let words = "THE BIRCH CANOE SLID ON THE SMOOTH PLANKS";
        println!(
            "  tokenizer.encode_as_ids({words:?}) = {:?}",
            tok.encode_as_ids(words)?
        );
    }

    println!("== Step 6: speaker verification (SpeakerRecognition.verify_files)");
    let spk = load(
        "spkrec-ecapa-voxceleb",
        "speechbrain/spkrec-ecapa-voxceleb",
        "speaker/model_small",
        out_dir,
        offline,
        |s, o| Ok(SpeakerRecognition::from_hparams(s, o)?),
    )?;
    if inputs.len() >= 2 {
        for (a, b) in [(0, 0), (0, 1)] {
            let (score, same) = spk.verify_files(&inputs[a], &inputs[b])?;
            println!(
                "  {} vs {}: score {score:.4}, same speaker: {same}",
                inputs[a].display(),
                inputs[b].display()
            );
        }
    }

    println!("== Step 7: source separation (SepformerSeparation.separate_file)");
    let sep = load(
        "sepformer-wsj02mix",
        "speechbrain/sepformer-wsj02mix",
        "separation/model_small",
        out_dir,
        offline,
        |s, o| Ok(SepformerSeparation::from_hparams(s, o)?),
    )?;
    let mix = bundled("separation/mix_16k.wav");
    let est = sep.separate_file(&mix)?;
    println!("  {}: estimated sources {:?}", mix.display(), est.dims());
    Ok(())
}
