//! The tutorial's "Fine-tuning the ASR model", step by step (the Rust of its Python cells):
//! load the pretrained ASR, look at its modules and hparams, build the data pipeline
//! (`filtered_sorted(sort_key="length", select_n=100)`, `read_audio`, `text_pipeline`),
//! then `EncDecFineTune` with SGD(lr=1e-5) and `fit` for 2 epochs, batch 8, drop_last, no
//! shuffle. `voxbrain finetune` runs the same `EncDecFineTune` and `fit`.
//!
//! ```text
//! cargo run --release --example fine_tune_asr -- <model dir or hub id> <data.json> [epochs] [lr]
//! ```
//! (`data.json` as written by `voxbrain-data librispeech-to-json`.)

use voxbrain::brain::asr_finetune::{asr_dataset, EncDecFineTune};
use voxbrain::brain::{Brain, BrainOptions, EpochCounter, OptClass, Sgd};
use voxbrain::dataio::DataLoaderOptions;
use voxbrain::inference::EncoderDecoderASR;
use voxbrain::pretrained::FromHparamsOptions;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: fine_tune_asr <source> <data.json> [epochs] [lr]"
    );
    let epochs: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let lr: f64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1e-5);

    // asr_model = EncoderDecoderASR.from_hparams(source=..., savedir="./pretrained_ASR")
    let asr_model = EncoderDecoderASR::from_hparams(
        &args[1],
        &FromHparamsOptions {
            savedir: Some("pretrained_ASR".into()),
            ..Default::default()
        },
    )?;
    // asr_model.mods.keys(), dir(asr_model.hparams)
    println!(
        "hparams: {:?}",
        asr_model.hparams.keys().collect::<Vec<_>>()
    );
    println!("asr_model modules at {:?}", asr_model.module_indices);

    // dataset = DynamicItemDataset.from_json("data.json").filtered_sorted(...), + pipelines
    let dataset = asr_dataset(std::path::Path::new(&args[2]), &asr_model, Some(100))?;
    println!("{:?}", dataset.get(0)?.keys().collect::<Vec<_>>());

    // brain = EncDecFineTune(modules, hparams, opt_class=lambda x: torch.optim.SGD(x, 1e-5))
    let opt_class: OptClass = Box::new(move |params| Box::new(Sgd::new(params, lr)));
    let mut brain = EncDecFineTune::new(asr_model, Some(opt_class), BrainOptions::default())?;
    brain.label_smoothing = 0.1;

    // brain.fit(range(2), train_set=dataset,
    //           train_loader_kwargs={"batch_size": 8, "drop_last": True, "shuffle": False})
    let loader = DataLoaderOptions {
        batch_size: 8,
        drop_last: true,
        shuffle: false,
        ..Default::default()
    };
    brain.fit(
        EpochCounter::new(epochs),
        &dataset,
        None,
        loader,
        DataLoaderOptions::default(),
    )?;
    for (epoch, loss, _, _) in &brain.epoch_stats {
        println!("epoch {epoch}: train loss {loss:.4}");
    }
    Ok(())
}
