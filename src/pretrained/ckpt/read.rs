//! Reading SpeechBrain `.ckpt` files (torch zip archives holding a pickled dict: a
//! `state_dict`, or for normalizers statistics with plain integers beside tensors) and
//! safetensors files.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;

use candle_core::Tensor;

use super::unpickle::{unpickle, StorageRef, StorageType, TensorRef, Value};
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
/// The pickle inside is read by a restricted unpickler that never calls anything: a file
/// naming any class a state_dict does not need (`os.system`, `builtins.eval`) is an error
/// naming it. Every tensor's declared size is checked against its stored bytes before
/// anything is allocated, and zip entries that claim to inflate beyond what their
/// compressed bytes can hold are refused.
///
/// ```no_run
/// let ckpt = voxbrain::pretrained::ckpt::read_ckpt("normalizer.ckpt").unwrap();
/// println!("{:?}", ckpt.tensors.keys().collect::<Vec<_>>());
/// ```
pub fn read_ckpt(path: impl AsRef<Path>) -> Result<Checkpoint, CkptError> {
    let path = path.as_ref();
    let Some(mut archive) = TorchArchive::open(path)? else {
        // Not a zip: try safetensors, the other format voxbrain writes.
        return match candle_core::safetensors::load(path, &candle_core::Device::Cpu) {
            Ok(t) => Ok(Checkpoint {
                tensors: t.into_iter().collect(),
                ..Default::default()
            }),
            Err(_) => Err(CkptError::NotCheckpoint {
                path: path.to_path_buf(),
            }),
        };
    };
    load_archive(&mut archive)
}

/// Reads a torch zip checkpoint held in memory, with the same checks as [`read_ckpt`];
/// `name` stands for the file in errors.
///
/// ```
/// let err = voxbrain::pretrained::ckpt::read_ckpt_bytes(b"PK\x03\x04 not a zip", "x.ckpt");
/// assert!(err.is_err());
/// ```
pub fn read_ckpt_bytes(bytes: &[u8], name: &str) -> Result<Checkpoint, CkptError> {
    let mut archive = TorchArchive::new(Path::new(name), std::io::Cursor::new(bytes))?;
    load_archive(&mut archive)
}

fn load_archive<R: std::io::Read + std::io::Seek>(
    archive: &mut TorchArchive<R>,
) -> Result<Checkpoint, CkptError> {
    let path = archive.path.clone();
    let path = path.as_path();
    let mut ckpt = Checkpoint::default();
    let mut storages: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, entry) in archive.entries()? {
        match entry {
            Value::Int(i) => {
                ckpt.ints.insert(name, i);
            }
            Value::Bool(b) => {
                ckpt.ints.insert(name, b as i64);
            }
            Value::Float(f) => {
                ckpt.floats.insert(name, f);
            }
            Value::Tensor(t) => {
                if !storages.contains_key(&t.storage.key) {
                    let bytes = archive.storage(&t.storage)?;
                    storages.insert(t.storage.key.clone(), bytes);
                }
                let tensor = tensor_from_storage(&storages[&t.storage.key], &t)
                    .map_err(|e| format_err(path, format!("tensor `{name}`: {e}")))?;
                ckpt.tensors.insert(name, tensor);
            }
            _ => {}
        }
    }
    Ok(ckpt)
}

/// Names and shapes of the tensors in a checkpoint, without loading their data (sizes are
/// still checked against the stored bytes).
pub fn read_shapes(path: impl AsRef<Path>) -> Result<Vec<(String, Vec<usize>)>, CkptError> {
    let path = path.as_ref();
    let Some(mut archive) = TorchArchive::open(path)? else {
        let ckpt = read_ckpt(path)?;
        return Ok(ckpt
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect());
    };
    let mut out = Vec::new();
    for (name, entry) in archive.entries()? {
        if let Value::Tensor(t) = entry {
            out.push((name, t.shape));
        }
    }
    out.sort();
    Ok(out)
}

/// Largest `data.pkl` accepted (a state_dict's pickle is KBs to a few MBs).
const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// A compressed entry may not claim to inflate more than this many times its stored size
/// (torch never compresses; real weights deflate by ~1.1x), unless it is small.
const MAX_INFLATE_RATIO: u64 = 100;
const SMALL_ENTRY: u64 = 1 << 20;

/// A torch zip checkpoint: the archive, its folder prefix, and the file's name for errors.
struct TorchArchive<R> {
    path: std::path::PathBuf,
    zip: zip::ZipArchive<R>,
    prefix: String,
}

impl TorchArchive<BufReader<std::fs::File>> {
    /// Opens `path` as a torch zip, or `None` when it is not a zip at all.
    fn open(path: &Path) -> Result<Option<Self>, CkptError> {
        use std::io::Read;
        let open_err = |source| CkptError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(open_err)?;
        let mut magic = [0u8; 2];
        let n = file.read(&mut magic).map_err(open_err)?;
        if n < 2 || &magic != b"PK" {
            return Ok(None);
        }
        // The same handle, back at the start: no second open of the file.
        std::io::Seek::rewind(&mut file).map_err(open_err)?;
        Self::new(path, BufReader::new(file)).map(Some)
    }
}

impl<R: std::io::Read + std::io::Seek> TorchArchive<R> {
    fn new(path: &Path, reader: R) -> Result<Self, CkptError> {
        let zip = zip::ZipArchive::new(reader).map_err(|e| format_err(path, e))?;
        let pkl = zip
            .file_names()
            .filter_map(|n| n.ok())
            .find(|n| n.ends_with("data.pkl"))
            .map(|n| n.to_string())
            .ok_or_else(|| format_err(path, "no data.pkl inside the archive"))?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        let mut archive = Self {
            path: path.to_path_buf(),
            zip,
            prefix,
        };
        let byteorder = format!("{}byteorder", archive.prefix);
        if archive.zip.index_for_name(&byteorder).is_some() {
            let b = archive.read_entry(&byteorder, 16)?;
            if b.trim_ascii() != b"little" {
                return Err(format_err(
                    path,
                    "tensors stored big-endian are not supported",
                ));
            }
        }
        Ok(archive)
    }

    /// Reads one entry whole, refusing sizes beyond `limit` and inflation bombs before
    /// reading, and entries whose bytes do not match their declared size.
    fn read_entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>, CkptError> {
        use std::io::Read;
        let path = self.path.clone();
        let mut f = self
            .zip
            .by_name(name)
            .map_err(|e| format_err(&path, format!("{name}: {e}")))?;
        let size = f.size();
        if size > limit {
            return Err(format_err(
                &path,
                format!("{name} declares {size} bytes, more than the {limit} it may hold"),
            ));
        }
        if f.compression() != zip::CompressionMethod::Stored
            && size > SMALL_ENTRY
            && size / MAX_INFLATE_RATIO > f.compressed_size()
        {
            return Err(format_err(
                &path,
                format!(
                    "{name} would inflate {} bytes to {size} (a zip bomb?)",
                    f.compressed_size()
                ),
            ));
        }
        let mut buf = Vec::with_capacity(size as usize);
        (&mut f)
            .take(size + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format_err(&path, format!("{name}: {e}")))?;
        if buf.len() as u64 != size {
            return Err(format_err(
                &path,
                format!(
                    "{name} holds {} bytes, not the {size} it declares",
                    buf.len()
                ),
            ));
        }
        Ok(buf)
    }

    /// The checkpoint's values, flattened to dotted names, with every tensor's extent checked
    /// against its storage and the storage against its entry in the archive.
    fn entries(&mut self) -> Result<Vec<(String, Value)>, CkptError> {
        let name = format!("{}data.pkl", self.prefix);
        let pkl = self.read_entry(&name, MAX_PICKLE_BYTES)?;
        let root = unpickle(&pkl).map_err(|e| format_err(&self.path, e))?;
        let Value::Dict(items) = root else {
            return Err(format_err(&self.path, "the pickle is not a dict"));
        };
        let mut out = Vec::new();
        flatten(String::new(), items, &mut out);
        for (name, v) in &out {
            if let Value::Tensor(t) = v {
                self.check_tensor(name, t)?;
            }
        }
        Ok(out)
    }

    fn storage_name(&self, s: &StorageRef) -> String {
        format!("{}data/{}", self.prefix, s.key)
    }

    fn check_tensor(&mut self, name: &str, t: &TensorRef) -> Result<(), CkptError> {
        let err = |reason: String| format_err(&self.path, format!("tensor `{name}`: {reason}"));
        let es = t.storage.dtype.size() as u64;
        let need = t
            .storage
            .numel
            .checked_mul(es)
            .ok_or_else(|| err("its storage size overflows".into()))?;
        let entry = self.storage_name(&t.storage);
        let stored = self
            .zip
            .by_name(&entry)
            .map(|f| f.size())
            .map_err(|_| err(format!("its storage {entry} is missing")))?;
        if stored < need {
            return Err(err(format!(
                "its storage declares {} elements ({need} bytes) but {entry} holds {stored} bytes",
                t.storage.numel
            )));
        }
        // The last element the view reaches must lie inside the storage.
        let mut last = t.offset;
        for (&d, &s) in t.shape.iter().zip(&t.stride) {
            if d == 0 {
                return Ok(());
            }
            last = (d as u64 - 1)
                .checked_mul(s as u64)
                .and_then(|x| x.checked_add(last))
                .ok_or_else(|| err("its shape and strides overflow".into()))?;
        }
        if last >= t.storage.numel {
            return Err(err(format!(
                "shape {:?} (strides {:?}, offset {}) reaches element {last} of a storage of {}",
                t.shape, t.stride, t.offset, t.storage.numel
            )));
        }
        Ok(())
    }

    fn storage(&mut self, s: &StorageRef) -> Result<Vec<u8>, CkptError> {
        let name = self.storage_name(s);
        let need = s.numel * s.dtype.size() as u64; // checked by check_tensor
        let mut bytes = self.read_entry(&name, need)?;
        bytes.truncate(need as usize);
        Ok(bytes)
    }
}

/// Flattens nested dicts into dotted names (`state.0.momentum_buffer`), as SpeechBrain's
/// optimizer checkpoints nest them.
fn flatten(prefix: String, items: Vec<(Value, Value)>, out: &mut Vec<(String, Value)>) {
    for (k, v) in items {
        let key = match k {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            _ => continue,
        };
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            Value::Dict(inner) => flatten(name, inner, out),
            v => out.push((name, v)),
        }
    }
}

/// Builds a CPU tensor from a storage's bytes and a (checked) strided view of it.
fn tensor_from_storage(bytes: &[u8], t: &TensorRef) -> candle_core::Result<Tensor> {
    use candle_core::{DType, Device};
    let es = t.storage.dtype.size();
    let numel: usize = t.shape.iter().product();
    let contiguous = {
        let mut expect = 1;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if d > 1 && s != expect {
                ok = false;
            }
            expect *= d;
        }
        ok
    };
    let data: std::borrow::Cow<[u8]> = if contiguous {
        let start = t.offset as usize * es;
        std::borrow::Cow::Borrowed(&bytes[start..start + numel * es])
    } else {
        // A strided view (a transposed weight saved as is): gather element by element.
        let mut out = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let off =
                t.offset as usize + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&bytes[off * es..(off + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        std::borrow::Cow::Owned(out)
    };
    let cpu = Device::Cpu;
    match t.storage.dtype {
        StorageType::F64 => Tensor::from_raw_buffer(&data, DType::F64, &t.shape, &cpu),
        StorageType::F32 => Tensor::from_raw_buffer(&data, DType::F32, &t.shape, &cpu),
        StorageType::F16 => Tensor::from_raw_buffer(&data, DType::F16, &t.shape, &cpu),
        StorageType::BF16 => Tensor::from_raw_buffer(&data, DType::BF16, &t.shape, &cpu),
        StorageType::I64 => Tensor::from_raw_buffer(&data, DType::I64, &t.shape, &cpu),
        StorageType::I32 => Tensor::from_raw_buffer(&data, DType::I32, &t.shape, &cpu),
        StorageType::I16 => Tensor::from_raw_buffer(&data, DType::I16, &t.shape, &cpu),
        // candle has no i8 or bool: widen i8 to i16, keep bools as 0/1 bytes.
        StorageType::I8 => {
            let v: Vec<i16> = data.iter().map(|&b| b as i8 as i16).collect();
            Tensor::from_vec(v, t.shape.as_slice(), &cpu)
        }
        StorageType::U8 | StorageType::Bool => {
            Tensor::from_raw_buffer(&data, DType::U8, &t.shape, &cpu)
        }
    }
}
