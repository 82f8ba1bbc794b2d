//! Writing checkpoints: torch's zip + pickle format (what `torch.save(state_dict)` writes, so
//! `torch.load` and SpeechBrain read it) and safetensors.

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};

use super::CkptError;

fn werr(path: &Path, reason: impl std::fmt::Display) -> CkptError {
    CkptError::Write {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// torch's storage class for a dtype.
fn storage_class(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "FloatStorage",
        DType::F64 => "DoubleStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::U8 => "ByteStorage",
        DType::U32 => return None,
        _ => return None,
    })
}

/// A minimal pickle (protocol 2) writer for a torch state_dict.
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend_from_slice(module.as_bytes());
        self.0.push(b'\n');
        self.0.extend_from_slice(name.as_bytes());
        self.0.push(b'\n');
    }
    fn string(&mut self, s: &str) {
        self.0.push(b'X'); // BINUNICODE
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        if v <= i32::MAX as usize {
            self.0.push(b'J'); // BININT
            self.0.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            self.0.push(0x8a); // LONG1
            self.0.push(8);
            self.0.extend_from_slice(&(v as i64).to_le_bytes());
        }
    }
    fn tuple_of_ints(&mut self, v: &[usize]) {
        if v.is_empty() {
            self.0.push(b')');
            return;
        }
        self.0.push(b'(');
        for &x in v {
            self.int(x);
        }
        self.0.push(b't');
    }
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.push(b')');
        self.0.push(b'R');
    }
}

/// Writes `tensors` as a torch checkpoint (`torch.save(OrderedDict(...))` layout), atomically.
///
/// ```no_run
/// use candle_core::{Device, Tensor};
/// let w = Tensor::ones((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
/// voxbrain::pretrained::ckpt::save_ckpt("model.ckpt", &[("linear.w".to_string(), w)]).unwrap();
/// ```
pub fn save_ckpt(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<(), CkptError> {
    save_ckpt_with_ints(path, tensors, &[])
}

/// As [`save_ckpt`], with plain integer entries beside the tensors (a normalizer's `count`,
/// which SpeechBrain saves as a Python int).
pub fn save_ckpt_with_ints(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
    ints: &[(String, usize)],
) -> Result<(), CkptError> {
    let path = path.as_ref();
    let archive = "archive";
    let mut pkl = Pickle(vec![0x80, 2]); // PROTO 2
    pkl.empty_ordered_dict();
    pkl.0.push(b'(');
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (i, (name, t)) in tensors.iter().enumerate() {
        let t = t
            .to_device(&candle_core::Device::Cpu)
            .map_err(|e| werr(path, e))?;
        let class = storage_class(t.dtype()).ok_or_else(|| {
            werr(
                path,
                format!("{name}: dtype {:?} has no torch storage", t.dtype()),
            )
        })?;
        let dims = t.dims().to_vec();
        let numel: usize = dims.iter().product();
        let mut stride = vec![1usize; dims.len()];
        for d in (0..dims.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * dims[d + 1];
        }
        let bytes = tensor_bytes(&t).map_err(|e| werr(path, e))?;
        let key = i.to_string();
        pkl.string(name);
        pkl.global("torch._utils", "_rebuild_tensor_v2");
        pkl.0.push(b'(');
        pkl.0.push(b'(');
        pkl.string("storage");
        pkl.global("torch", class);
        pkl.string(&key);
        pkl.string("cpu");
        pkl.int(numel);
        pkl.0.push(b't');
        pkl.0.push(b'Q'); // BINPERSID
        pkl.int(0); // storage offset
        pkl.tuple_of_ints(&dims);
        pkl.tuple_of_ints(&stride);
        pkl.0.push(0x89); // NEWFALSE: requires_grad
        pkl.empty_ordered_dict(); // backward hooks
        pkl.0.push(b't');
        pkl.0.push(b'R');
        blobs.push((key, bytes));
    }
    for (name, v) in ints {
        pkl.string(name);
        pkl.int(*v);
    }
    pkl.0.push(b'u'); // SETITEMS
    pkl.0.push(b'.'); // STOP

    crate::fsutil::write_atomic_with(path, |f| {
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(f));
        // torch aligns records to 64 bytes so they can be memory-mapped.
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true)
            .with_alignment(64);
        let mut add = |name: String, data: &[u8]| -> std::io::Result<()> {
            zip.start_file(name, opts).map_err(std::io::Error::other)?;
            zip.write_all(data)
        };
        let written = (|| {
            add(format!("{archive}/data.pkl"), &pkl.0)?;
            add(format!("{archive}/byteorder"), b"little")?;
            for (key, bytes) in &blobs {
                add(format!("{archive}/data/{key}"), bytes)?;
            }
            add(format!("{archive}/version"), b"3\n")
        })();
        if let Err(e) = written {
            // The temporary file is discarded; dropping the writer would try to finish the
            // archive on the failing file and print a second error.
            std::mem::forget(zip);
            return Err(e);
        }
        zip.finish().map_err(std::io::Error::other)?.flush()
    })
    .map_err(|e| werr(path, e))
}

fn tensor_bytes(t: &Tensor) -> candle_core::Result<Vec<u8>> {
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I64 => flat
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U8 => flat.to_vec1::<u8>()?,
        DType::F16 => flat
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        other => candle_core::bail!("cannot serialise dtype {other:?}"),
    })
}

/// Writes `tensors` as a safetensors file, atomically.
pub fn save_safetensors(
    path: impl AsRef<Path>,
    tensors: &[(String, Tensor)],
) -> Result<(), CkptError> {
    let path = path.as_ref();
    let map: std::collections::HashMap<String, Tensor> = tensors.iter().cloned().collect();
    crate::fsutil::write_atomic_via_path(path, ".safetensors.part", |tmp| {
        candle_core::safetensors::save(&map, tmp).map_err(std::io::Error::other)
    })
    .map_err(|e| werr(path, e))
}
