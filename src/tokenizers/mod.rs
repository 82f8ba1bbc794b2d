//! Tokenizers (`speechbrain.tokenizers`): the SentencePiece model that SpeechBrain's ASR
//! recipes save as `tokenizer.ckpt`.

mod charsmap;
pub mod sentencepiece;

pub use self::sentencepiece::{SentencePiece, TokenizerError};
