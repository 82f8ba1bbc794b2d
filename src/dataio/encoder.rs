//! `CategoricalEncoder` (`speechbrain.dataio.encoder`): label <-> index, read from and written
//! to SpeechBrain's text format (`'label' => index` lines, then a `====` separator and extras
//! such as `'starting_index' => 0`), e.g. the `label_encoder.txt` of spkrec-ecapa-voxceleb.

use std::collections::HashMap;
use std::path::Path;

/// Errors reading an encoder file; they name the file and line.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// The file cannot be read.
    #[error("cannot read label encoder {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not `'label' => index`.
    #[error("{path}:{line}: expected `'label' => index`, got {text:?}")]
    Syntax {
        path: std::path::PathBuf,
        line: usize,
        text: String,
    },
}

/// Maps labels to indices and back.
///
/// ```
/// use voxbrain::dataio::encoder::CategoricalEncoder;
/// let enc = CategoricalEncoder::from_text("'spk_a' => 0\n'spk_b' => 1\n================\n'starting_index' => 0\n", "x").unwrap();
/// assert_eq!(enc.decode(1), Some("spk_b"));
/// assert_eq!(enc.encode("spk_a"), Some(0));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoricalEncoder {
    ind2lab: Vec<Option<String>>,
    lab2ind: HashMap<String, usize>,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')))
    {
        s[1..s.len() - 1].replace("\\'", "'")
    } else {
        s.to_string()
    }
}

impl CategoricalEncoder {
    /// Reads SpeechBrain's text format.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, EncoderError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| EncoderError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text, &path.display().to_string())
    }

    /// Parses SpeechBrain's text format; `origin` names it in errors.
    pub fn from_text(text: &str, origin: &str) -> Result<Self, EncoderError> {
        let mut enc = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with("====") {
                break; // extras (starting_index, ...) follow
            }
            let (lab, ind) = line
                .rsplit_once(" => ")
                .ok_or_else(|| EncoderError::Syntax {
                    path: origin.into(),
                    line: i + 1,
                    text: line.into(),
                })?;
            let ind: usize = ind.trim().parse().map_err(|_| EncoderError::Syntax {
                path: origin.into(),
                line: i + 1,
                text: line.into(),
            })?;
            let lab = unquote(lab);
            if enc.ind2lab.len() <= ind {
                enc.ind2lab.resize(ind + 1, None);
            }
            enc.ind2lab[ind] = Some(lab.clone());
            enc.lab2ind.insert(lab, ind);
        }
        Ok(enc)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.lab2ind.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.lab2ind.is_empty()
    }

    /// The label of an index.
    pub fn decode(&self, index: usize) -> Option<&str> {
        self.ind2lab.get(index).and_then(|l| l.as_deref())
    }

    /// The index of a label.
    pub fn encode(&self, label: &str) -> Option<usize> {
        self.lab2ind.get(label).copied()
    }
}

impl crate::pretrained::Loadable for CategoricalEncoder {
    fn load_from(&mut self, path: &Path) -> Result<(), crate::pretrained::PretrainedError> {
        *self = Self::load(path)
            .map_err(|e| crate::pretrained::PretrainedError::Load(e.to_string()))?;
        Ok(())
    }
}
