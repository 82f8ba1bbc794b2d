//! A SentencePiece model (`tokenizer.ckpt` is a serialized SentencePiece `ModelProto`), wrapped
//! with the methods SpeechBrain's code calls on `sentencepiece.SentencePieceProcessor`:
//! `encode_as_ids`, `encode_as_pieces`, `decode_ids`.

use std::path::{Path, PathBuf};

/// Errors loading or using a tokenizer; each names the model file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file could not be read.
    #[error("{path}: cannot read the tokenizer: {source}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a SentencePiece model.
    #[error("{path}: not a SentencePiece model ({message})")]
    Invalid {
        /// The model file.
        path: PathBuf,
        /// What SentencePiece said.
        message: String,
    },
    /// An id outside the vocabulary was given to `decode_ids`.
    #[error("{path}: token id {id} is outside the vocabulary of {size}")]
    IdOutOfRange {
        /// The model file.
        path: PathBuf,
        /// The id.
        id: u32,
        /// Vocabulary size.
        size: usize,
    },
    /// Encoding or decoding failed.
    #[error("{path}: {message}")]
    Failed {
        /// The model file.
        path: PathBuf,
        /// What SentencePiece said.
        message: String,
    },
}

/// A loaded SentencePiece model.
///
/// ```no_run
/// use voxbrain::tokenizers::SentencePiece;
/// let sp = SentencePiece::open("pretrained_ASR/tokenizer.ckpt").unwrap();
/// let ids = sp.encode_as_ids("HELLO WORLD").unwrap();
/// assert_eq!(sp.decode_ids(&ids).unwrap(), "HELLO WORLD");
/// ```
pub struct SentencePiece {
    inner: ::sentencepiece::SentencePieceProcessor,
    path: PathBuf,
}

impl std::fmt::Debug for SentencePiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentencePiece")
            .field("path", &self.path)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl SentencePiece {
    /// Loads a serialized model (`tokenizer.ckpt`, `*.model`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|source| TokenizerError::Io {
            path: path.clone(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Loads a model from its serialized bytes; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: impl Into<PathBuf>) -> Result<Self, TokenizerError> {
        let path = origin.into();
        if bytes.is_empty() {
            return Err(TokenizerError::Invalid {
                path,
                message: "empty file".into(),
            });
        }
        // The C++ library trusts the model's normalization map; a damaged one must be an
        // error here, not a crash inside it.
        super::charsmap::check_model(bytes).map_err(|message| TokenizerError::Invalid {
            path: path.clone(),
            message,
        })?;
        let inner =
            ::sentencepiece::SentencePieceProcessor::from_serialized_proto(bytes).map_err(|e| {
                TokenizerError::Invalid {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        Ok(Self { inner, path })
    }

    /// Where the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of pieces (`get_piece_size()`).
    pub fn vocab_size(&self) -> usize {
        self.inner.len()
    }

    /// The id of `<unk>`.
    pub fn unk_id(&self) -> u32 {
        self.inner.unk_id()
    }

    /// The id of a piece (`piece_to_id`); `None` when it is not in the vocabulary.
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.piece_to_id(piece).ok().flatten()
    }

    fn failed(&self, e: impl std::fmt::Display) -> TokenizerError {
        TokenizerError::Failed {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Token ids of `text` (`encode_as_ids`). Characters outside the vocabulary become
    /// `<unk>` (id [`SentencePiece::unk_id`]), as in SentencePiece.
    pub fn encode_as_ids(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(self
            .inner
            .encode(text)
            .map_err(|e| self.failed(e))?
            .into_iter()
            .map(|p| p.id)
            .collect())
    }

    /// Pieces of `text` (`encode_as_pieces`), with `▁` marking word starts.
    pub fn encode_as_pieces(&self, text: &str) -> Result<Vec<String>, TokenizerError> {
        Ok(self
            .inner
            .encode(text)
            .map_err(|e| self.failed(e))?
            .into_iter()
            .map(|p| p.piece)
            .collect())
    }

    /// Text of token ids (`decode_ids`).
    pub fn decode_ids(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let size = self.vocab_size();
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= size) {
            return Err(TokenizerError::IdOutOfRange {
                path: self.path.clone(),
                id,
                size,
            });
        }
        self.inner.decode_piece_ids(ids).map_err(|e| self.failed(e))
    }

    /// Text of pieces (`decode_pieces`).
    pub fn decode_pieces(&self, pieces: &[String]) -> Result<String, TokenizerError> {
        self.inner.decode_pieces(pieces).map_err(|e| self.failed(e))
    }
}
