//! `voxbrain embed` and `voxbrain verify`: the tutorial's speaker-recognition steps.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use voxbrain::inference::SpeakerRecognition;
use voxbrain::npy::write_npy;
use voxbrain::pretrained::FromHparamsOptions;

/// Where the model comes from (shared by the model subcommands).
#[derive(Args, Debug, Clone)]
pub struct ModelSource {
    /// A local model directory, an http(s) URL prefix, or a HuggingFace repo id such as
    /// speechbrain/spkrec-ecapa-voxceleb (HF_ENDPOINT, HF_HOME, HF_TOKEN, HF_HUB_OFFLINE apply).
    #[arg(long)]
    pub source: String,
    /// Where the model's files are collected (default: pretrained_models/<name>-<hash of the source>).
    #[arg(long)]
    pub savedir: Option<PathBuf>,
    /// The hyperparameter file inside the source.
    #[arg(long, default_value = "hyperparams.yaml")]
    pub hparams_file: String,
    /// YAML overrides applied before resolution, e.g. "n_mels: 40".
    #[arg(long)]
    pub overrides: Option<String>,
}

impl ModelSource {
    pub fn options(&self) -> FromHparamsOptions {
        FromHparamsOptions {
            savedir: self.savedir.clone(),
            hparams_file: self.hparams_file.clone(),
            overrides: self.overrides.clone(),
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelSource,
    /// Audio files; each is resampled to the model rate and averaged to mono.
    #[arg(required = true)]
    pub audio: Vec<PathBuf>,
    /// Output .npy: a float32 [n_files, lin_neurons] array, one row per file, in order.
    #[arg(short, long)]
    pub out: PathBuf,
    /// Apply the model's embedding normalization (mean_var_norm_emb), as encode_batch(normalize=True).
    #[arg(long)]
    pub normalize: bool,
    /// Dynamic int8 quantization (as torch's quantize_dynamic): faster on the CPU, embeddings
    /// a little off SpeechBrain's f32 ones.
    #[arg(long)]
    pub int8: bool,
}

/// Loads the model, quantized when asked.
fn load(model: &ModelSource, int8: bool) -> anyhow::Result<SpeakerRecognition> {
    let mut m = SpeakerRecognition::from_hparams(&model.source, &model.options())?;
    if int8 {
        m.quantize_dynamic()?;
        tracing::info!(
            "int8 dynamic quantization on ({} kernel)",
            voxbrain::nnet::qgemm::int8_path()
        );
    }
    Ok(m)
}

pub fn embed(a: EmbedArgs) -> anyhow::Result<()> {
    let model = load(&a.model, a.int8)?;
    let bar = voxbrain::progress::items_bar(a.audio.len() as u64, "embedding", a.audio.len() > 1);
    let mut rows = Vec::new();
    let mut dim = 0;
    for p in &a.audio {
        let wav = model
            .load_audio(p)
            .with_context(|| format!("reading {}", p.display()))?;
        let e = model
            .encode_batch(&wav, None, a.normalize)
            .with_context(|| format!("embedding {}", p.display()))?;
        let v: Vec<f32> = e.flatten_all()?.to_vec1()?;
        dim = v.len();
        rows.extend(v);
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_npy(&a.out, &[a.audio.len(), dim], &rows)?;
    tracing::info!(
        "{} embeddings of size {dim} -> {}",
        a.audio.len(),
        a.out.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub model: ModelSource,
    /// First audio file.
    pub a: PathBuf,
    /// Second audio file.
    pub b: PathBuf,
    /// Decision threshold on the cosine score (SpeechBrain's default 0.25).
    #[arg(long, default_value_t = 0.25)]
    pub threshold: f32,
    /// Dynamic int8 quantization (see `embed --int8`).
    #[arg(long)]
    pub int8: bool,
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let model = load(&a.model, a.int8)?;
    let x = model.load_audio(&a.a)?.unsqueeze(0)?;
    let y = model.load_audio(&a.b)?.unsqueeze(0)?;
    let (score, decision) = model.verify_batch(&x, &y, None, None, a.threshold)?;
    let score = score.flatten_all()?.to_vec1::<f32>()?[0];
    println!(
        "{}",
        serde_json::json!({"score": score, "prediction": decision[0]})
    );
    Ok(())
}
