//! SpeechBrain checkpoints: reading torch `.ckpt` pickles and safetensors, filling a model's
//! `VarMap` from a state_dict (reporting every mismatch at once), and writing both formats.

mod read;
mod state_dict;
mod unpickle;
mod write;

use std::path::PathBuf;

pub use read::{read_ckpt, read_ckpt_bytes, read_shapes, Checkpoint};
pub use state_dict::{
    canonical_key, load_state_dict, load_state_dict_file, save_state_dict, state_dict, LoadOptions,
    StateDictReport,
};
pub use write::{save_ckpt, save_ckpt_with_ints, save_safetensors};

/// Errors reading, mapping or writing a checkpoint; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CkptError {
    /// The file cannot be opened.
    #[error("cannot open checkpoint {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is neither a torch zip checkpoint nor a safetensors file (e.g. a
    /// SentencePiece `tokenizer.ckpt`).
    #[error("{path} is neither a torch zip checkpoint nor a safetensors file")]
    NotCheckpoint { path: PathBuf },
    /// The file is not a readable checkpoint (or cannot be written).
    #[error("{path} is not a readable torch checkpoint: {reason}")]
    Format { path: PathBuf, reason: String },
    /// The checkpoint cannot be written.
    #[error("cannot write checkpoint {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    /// The checkpoint's keys or shapes do not match the model.
    #[error("{0}")]
    StateDict(Box<StateDictReport>),
}
