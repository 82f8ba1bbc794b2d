//! `DataLoader`: batches of [`PaddedBatch`]es from a dataset, optionally shuffled with a seed,
//! with worker threads that compute (decode audio for) upcoming batches in parallel.
//!
//! Batches are built from the sampler's order exactly as torch's `BatchSampler` (consecutive
//! `batch_size` indices, the last partial batch dropped with `drop_last`), so an unshuffled
//! loader over a `filtered_sorted` view gives SpeechBrain's batches id for id.
//!
//! Shuffling uses ChaCha8 seeded with `seed + epoch` (a fixed, portable algorithm): the same
//! seed gives the same order on every machine and run, but not torch's order (SpeechBrain
//! shuffles with torch's generator, which cannot be reproduced bit for bit).

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batch::{PaddedBatch, PaddingConfig};
use super::dataset::DynamicItemDataset;
use super::error::{DataIoError, Result};

/// Loader settings (the `train_loader_kwargs` of SpeechBrain's `Brain.fit`).
#[derive(Debug, Clone)]
pub struct DataLoaderOptions {
    /// Examples per batch (ignored when `max_batch_length` is set).
    pub batch_size: usize,
    /// Shuffle the order every epoch.
    pub shuffle: bool,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Drop the last batch if it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Worker threads computing batches ahead (0: compute in the calling thread).
    pub num_workers: usize,
    /// Batches each worker may hold ready.
    pub prefetch_factor: usize,
    /// Dynamic batching: close a batch before its padded size, `count * max(length)` of the
    /// static `length_key` column, would exceed this.
    pub max_batch_length: Option<f64>,
    /// Static column giving each example's length for dynamic batching.
    pub length_key: String,
    /// Padding values.
    pub padding: PaddingConfig,
}

impl Default for DataLoaderOptions {
    fn default() -> Self {
        Self {
            batch_size: 1,
            shuffle: false,
            seed: 0,
            drop_last: false,
            num_workers: 0,
            prefetch_factor: 2,
            max_batch_length: None,
            length_key: "length".into(),
            padding: PaddingConfig::default(),
        }
    }
}

impl DataLoaderOptions {
    /// Options with the given batch size.
    pub fn batch_size(batch_size: usize) -> Self {
        Self {
            batch_size,
            ..Self::default()
        }
    }
}

/// Iterates a dataset in [`PaddedBatch`]es (SpeechBrain's `make_dataloader` with `PaddedBatch`
/// collation).
///
/// ```
/// use polars::prelude::*;
/// use voxbrain::dataio::{DataLoader, DataLoaderOptions, DynamicItemDataset};
/// let df = DataFrame::new_infer_height(vec![
///     Column::new("id".into(), ["a", "b", "c"]),
/// ]).unwrap();
/// let mut ds = DynamicItemDataset::from_polars(df).unwrap();
/// ds.set_output_keys(&["id"]);
/// let loader = DataLoader::new(ds, DataLoaderOptions { batch_size: 2, ..Default::default() }).unwrap();
/// let ids: Vec<Vec<String>> = loader.iter(0).map(|b| b.unwrap().ids().to_vec()).collect();
/// assert_eq!(ids, [vec!["a", "b"], vec!["c"]]);
/// ```
#[derive(Debug, Clone)]
pub struct DataLoader {
    dataset: Arc<DynamicItemDataset>,
    opts: DataLoaderOptions,
}

impl DataLoader {
    /// A loader over `dataset` (its output keys are what batches hold).
    pub fn new(dataset: DynamicItemDataset, opts: DataLoaderOptions) -> Result<Self> {
        if opts.batch_size == 0 && opts.max_batch_length.is_none() {
            return Err(DataIoError::Invalid("batch_size must be at least 1".into()));
        }
        if opts.max_batch_length.is_some() && dataset.data().column(&opts.length_key).is_err() {
            return Err(DataIoError::Invalid(format!(
                "dynamic batching needs the static column '{}'",
                opts.length_key
            )));
        }
        Ok(Self {
            dataset: Arc::new(dataset),
            opts,
        })
    }

    /// The dataset.
    pub fn dataset(&self) -> &DynamicItemDataset {
        &self.dataset
    }

    /// The example order of `epoch` (identity unless shuffling).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.opts.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.opts.seed.wrapping_add(epoch));
            order.shuffle(&mut rng);
        }
        order
    }

    /// The batches of `epoch` as lists of dataset positions.
    pub fn batches(&self, epoch: u64) -> Result<Vec<Vec<usize>>> {
        let order = self.order(epoch);
        let mut batches: Vec<Vec<usize>> = Vec::new();
        match self.opts.max_batch_length {
            None => {
                for chunk in order.chunks(self.opts.batch_size) {
                    if chunk.len() < self.opts.batch_size && self.opts.drop_last {
                        break;
                    }
                    batches.push(chunk.to_vec());
                }
            }
            Some(max_total) => {
                let col = self
                    .dataset
                    .data()
                    .column(&self.opts.length_key)?
                    .cast(&polars::prelude::DataType::Float64)?;
                let lens = col.f64()?;
                let rows = self.dataset.rows();
                let mut cur: Vec<usize> = Vec::new();
                let mut cur_max = 0.0f64;
                for p in order {
                    let l = lens
                        .get(rows[p] as usize)
                        .ok_or_else(|| DataIoError::MissingKey {
                            id: self.dataset.id(p).unwrap_or("?").to_string(),
                            key: self.opts.length_key.clone(),
                        })?;
                    let new_max = cur_max.max(l);
                    if !cur.is_empty() && new_max * (cur.len() + 1) as f64 > max_total {
                        batches.push(std::mem::take(&mut cur));
                        cur_max = l;
                    } else {
                        cur_max = new_max;
                    }
                    cur.push(p);
                }
                if !cur.is_empty() {
                    batches.push(cur);
                }
            }
        }
        Ok(batches)
    }

    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        self.batches(0).map(|b| b.len()).unwrap_or(0)
    }

    /// True when an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batches of `epoch`, in order. A batch that fails (e.g. an audio file missing) yields
    /// an error naming the data point; iteration may go on with the next batch.
    pub fn iter(&self, epoch: u64) -> BatchIter {
        self.iter_from(epoch, 0)
    }

    /// As [`iter`](Self::iter), skipping the first `skip` batches without loading them: how a
    /// run recovered from an intra-epoch checkpoint goes on where it stopped (SpeechBrain's
    /// `SaveableDataLoader`).
    pub fn iter_from(&self, epoch: u64, skip: usize) -> BatchIter {
        let batches = match self.batches(epoch) {
            Ok(mut b) => {
                b.drain(..skip.min(b.len()));
                b
            }
            Err(e) => {
                return BatchIter {
                    inner: Inner::Failed(Some(e)),
                }
            }
        };
        let workers = self.opts.num_workers;
        if workers == 0 {
            return BatchIter {
                inner: Inner::Sync {
                    ds: self.dataset.clone(),
                    padding: self.opts.padding.clone(),
                    batches: batches.into_iter(),
                },
            };
        }
        // Worker w computes batches w, w+W, w+2W...; reading the workers' channels in turn
        // gives the batches in order, each channel bounding how far its worker runs ahead.
        let batches = Arc::new(batches);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.opts.prefetch_factor.max(1));
            let ds = self.dataset.clone();
            let batches = batches.clone();
            let padding = self.opts.padding.clone();
            handles.push(std::thread::spawn(move || {
                for b in (w..batches.len()).step_by(workers) {
                    let out = collate_positions(&ds, &batches[b], &padding);
                    if tx.send(out).is_err() {
                        return; // The iterator was dropped.
                    }
                }
            }));
            receivers.push(rx);
        }
        BatchIter {
            inner: Inner::Threaded {
                receivers,
                handles,
                next: 0,
                total: batches.len(),
            },
        }
    }
}

fn collate_positions(
    ds: &DynamicItemDataset,
    positions: &[usize],
    padding: &PaddingConfig,
) -> Result<PaddedBatch> {
    let points = positions
        .iter()
        .map(|&p| ds.get(p))
        .collect::<Result<Vec<_>>>()?;
    PaddedBatch::with_padding(points, padding)
}

enum Inner {
    Failed(Option<DataIoError>),
    Sync {
        ds: Arc<DynamicItemDataset>,
        padding: PaddingConfig,
        batches: std::vec::IntoIter<Vec<usize>>,
    },
    Threaded {
        receivers: Vec<Receiver<Result<PaddedBatch>>>,
        handles: Vec<JoinHandle<()>>,
        next: usize,
        total: usize,
    },
}

/// Iterator over an epoch's batches (see [`DataLoader::iter`]).
pub struct BatchIter {
    inner: Inner,
}

impl Iterator for BatchIter {
    type Item = Result<PaddedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Failed(e) => e.take().map(Err),
            Inner::Sync {
                ds,
                padding,
                batches,
            } => batches.next().map(|b| collate_positions(ds, &b, padding)),
            Inner::Threaded {
                receivers,
                next,
                total,
                ..
            } => {
                if *next >= *total {
                    return None;
                }
                let w = *next % receivers.len();
                *next += 1;
                Some(receivers[w].recv().unwrap_or_else(|_| {
                    Err(DataIoError::Invalid("a loader worker thread died".into()))
                }))
            }
        }
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        if let Inner::Threaded {
            receivers, handles, ..
        } = &mut self.inner
        {
            // Dropping the receivers makes the workers' next send fail, so they stop.
            receivers.clear();
            for h in handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}
