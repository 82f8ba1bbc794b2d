//! Reading SpeechBrain `.ckpt` files (torch zip archives holding a pickled dict: a
//! `state_dict`, or for normalizers statistics with plain integers beside tensors) and
//! safetensors files.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;

use candle_core::pickle::{Object, PthTensors, Stack};
use candle_core::Tensor;

use super::CkptError;

/// The contents of a `.ckpt`: tensors by key, plus the integer and float scalars beside them.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Tensors by state_dict key.
    pub tensors: BTreeMap<String, Tensor>,
    /// Integer entries (e.g. a normalizer's `count`).
    pub ints: BTreeMap<String, i64>,
    /// Float entries.
    pub floats: BTreeMap<String, f64>,
}

impl Checkpoint {
    /// A tensor by key.
    pub fn tensor(&self, key: &str) -> Option<&Tensor> {
        self.tensors.get(key)
    }
    /// An integer entry by key.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.ints.get(key).copied()
    }
}

fn format_err(path: &Path, reason: impl std::fmt::Display) -> CkptError {
    CkptError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads a SpeechBrain/torch `.ckpt` file (tensors are loaded on the CPU, whatever device
/// they were saved from).
///
/// ```no_run
/// let ckpt = voxbrain::pretrained::ckpt::read_ckpt("normalizer.ckpt").unwrap();
/// println!("{:?}", ckpt.tensors.keys().collect::<Vec<_>>());
/// ```
pub fn read_ckpt(path: impl AsRef<Path>) -> Result<Checkpoint, CkptError> {
    let path = path.as_ref();
    let mut magic = [0u8; 2];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|source| CkptError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = f.read(&mut magic);
    }
    if &magic != b"PK" {
        // Not a zip: try safetensors, the other format voxbrain writes.
        return match candle_core::safetensors::load(path, &candle_core::Device::Cpu) {
            Ok(t) => Ok(Checkpoint {
                tensors: t.into_iter().collect(),
                ..Default::default()
            }),
            Err(_) => Err(format_err(
                path,
                "neither a torch zip checkpoint nor a safetensors file",
            )),
        };
    }
    let file = std::fs::File::open(path).map_err(|source| CkptError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| format_err(path, e))?;
    let pkl = (0..zip.len())
        .filter_map(|i| {
            zip.name_for_index(i)
                .and_then(|r| r.ok())
                .map(|s| s.to_string())
        })
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| format_err(path, "no data.pkl inside the archive"))?;
    let mut ckpt = Checkpoint::default();
    {
        let reader = zip.by_name(&pkl).map_err(|e| format_err(path, e))?;
        let mut reader = BufReader::new(reader);
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut reader)
            .map_err(|e| format_err(path, e))?;
        if let Ok(Object::Dict(items)) = stack.finalize() {
            for (k, v) in items {
                if let Object::Unicode(k) = k {
                    match v {
                        Object::Int(i) => {
                            ckpt.ints.insert(k, i as i64);
                        }
                        Object::Long(i) => {
                            ckpt.ints.insert(k, i);
                        }
                        Object::Float(f) => {
                            ckpt.floats.insert(k, f);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let pth = PthTensors::new(path, None).map_err(|e| format_err(path, e))?;
    let names: Vec<String> = pth.tensor_infos().keys().cloned().collect();
    for name in names {
        if let Some(t) = pth.get(&name).map_err(|e| format_err(path, e))? {
            ckpt.tensors.insert(name, t);
        }
    }
    Ok(ckpt)
}

/// Names and shapes of the tensors in a checkpoint, without loading their data.
pub fn read_shapes(path: impl AsRef<Path>) -> Result<Vec<(String, Vec<usize>)>, CkptError> {
    let path = path.as_ref();
    if let Ok(infos) = candle_core::pickle::read_pth_tensor_info(path, false, None) {
        if !infos.is_empty() {
            let mut v: Vec<_> = infos
                .into_iter()
                .map(|i| (i.name, i.layout.shape().dims().to_vec()))
                .collect();
            v.sort();
            return Ok(v);
        }
    }
    let ckpt = read_ckpt(path)?;
    Ok(ckpt
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect())
}
