//! Data pipelines (SpeechBrain's `speechbrain.dataio`): [`DynamicItemDataset`] over a polars
//! `DataFrame`, dynamic items, [`filtered_sorted`](DynamicItemDataset::filtered_sorted),
//! [`PaddedBatch`], [`DataLoader`] and LibriSpeech manifests ([`librispeech`]).
//!
//! The tutorial's pipeline ("Setting up the data pipeline"):
//!
//! ```no_run
//! use voxbrain::dataio::{self, DataLoader, DataLoaderOptions, DynamicItemDataset, FilterSort, Value};
//! # fn encode_as_ids(_: &str) -> Vec<i64> { vec![] }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! dataio::librispeech::parse_to_json("LibriSpeech/dev-clean-2", "data.json", &Default::default())?;
//! let dataset = DynamicItemDataset::from_json("data.json", &Default::default())?;
//! let mut dataset = dataset.filtered_sorted(&FilterSort::new().sort_key("length").select_n(100))?;
//! dataset.add_dynamic_item(&["file_path"], &["signal"], dataio::read_audio_item)?;
//! let (bos, eos) = (0i64, 0i64);
//! dataset.add_dynamic_item(
//!     &["words"],
//!     &["words", "tokens_list", "tokens_bos", "tokens_eos", "tokens"],
//!     move |a| {
//!         let words = a.str(0)?;
//!         let tokens_list = encode_as_ids(words);
//!         let bos_seq: Vec<i64> = std::iter::once(bos).chain(tokens_list.iter().copied()).collect();
//!         let eos_seq: Vec<i64> = tokens_list.iter().copied().chain(std::iter::once(eos)).collect();
//!         Ok(vec![
//!             Value::from(words),
//!             Value::from(tokens_list.clone()),
//!             dataio::long_tensor(bos_seq)?,
//!             dataio::long_tensor(eos_seq)?,
//!             dataio::long_tensor(tokens_list)?,
//!         ])
//!     },
//! )?;
//! dataset.set_output_keys(&["id", "signal", "words", "tokens_list", "tokens_bos", "tokens_eos", "tokens"]);
//! println!("{:?}", dataset.get(0)?);
//! let loader = DataLoader::new(dataset, DataLoaderOptions { batch_size: 8, drop_last: true, ..Default::default() })?;
//! for batch in loader.iter(0) {
//!     let batch = batch?;
//!     let (wavs, wav_lens) = batch.padded("signal")?.pair();
//! }
//! # Ok(()) }
//! ```

mod batch;
mod dataset;
mod display;
pub mod encoder;
mod error;
mod filter;
mod item;
pub mod librispeech;
mod loader;
mod manifest;
mod pipeline;
mod value;

pub use batch::{pad_right, BatchValue, PaddedBatch, PaddedData, PaddingConfig};
pub use dataset::DynamicItemDataset;
pub use display::{evcxr_html, html_table};
pub use error::{BoxError, DataIoError, Result};
pub use filter::{FilterSort, KeyTest};
pub use item::{Args, DataPoint};
pub use loader::{BatchIter, DataLoader, DataLoaderOptions};
pub use manifest::{
    read_csv_manifest, read_json_manifest, read_parquet_manifest, write_manifest, ManifestFormat,
    Replacements,
};
pub use pipeline::{DataPipeline, DynamicItem, ItemFn};
pub use value::Value;

use candle_core::{Device, Tensor};

/// The dynamic item of `sb.dataio.dataio.read_audio`: takes a path, provides the signal
/// (`[time]` float32, or `[time, channels]`), at the file's own sample rate.
///
/// ```no_run
/// # let mut dataset: voxbrain::dataio::DynamicItemDataset = unimplemented!();
/// dataset.add_dynamic_item(&["file_path"], &["signal"], voxbrain::dataio::read_audio_item).unwrap();
/// ```
pub fn read_audio_item(args: Args<'_>) -> std::result::Result<Vec<Value>, BoxError> {
    let path = args.str(0)?;
    let (signal, _sr) = crate::audio::read_audio(path)?;
    Ok(vec![Value::Tensor(signal)])
}

/// A 1-D i64 tensor (`torch.LongTensor(list)`).
///
/// ```
/// let t = voxbrain::dataio::long_tensor(vec![1, 2, 3]).unwrap();
/// assert_eq!(t.as_tensor().unwrap().dims(), &[3]);
/// ```
pub fn long_tensor(v: Vec<i64>) -> std::result::Result<Value, BoxError> {
    let n = v.len();
    Ok(Value::Tensor(Tensor::from_vec(v, n, &Device::Cpu)?))
}
