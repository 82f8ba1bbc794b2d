//! Reading and writing NumPy `.npy` arrays (features for the CLI, fixtures for parity tests).

use std::io::BufWriter;

use npyz::WriterBuilder;
use std::path::Path;

/// Errors reading or writing `.npy` files; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a float32/float64 array we can read, or the shape is inconsistent.
    #[error("{path}: {reason}")]
    Format {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// An `f32` array read from `.npy` (any float or int dtype is converted).
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major data.
    pub data: Vec<f32>,
}

/// Reads a `.npy` file as `f32`.
///
/// ```no_run
/// let a = voxbrain::npy::read_npy("feats.npy").unwrap();
/// println!("{:?}", a.shape);
/// ```
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray, NpyError> {
    let path = path.as_ref();
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    let fmt = |reason: String| NpyError::Format {
        path: path.to_path_buf(),
        reason,
    };
    // npyz allocates the header length the file declares before reading it: check it
    // against the file first, so 136 bytes cannot ask for 2 GB.
    let (header_start, header_end) = match bytes.get(..12) {
        Some(b) if &b[..6] == b"\x93NUMPY" && b[6] == 1 => {
            (10, 10 + u16::from_le_bytes([b[8], b[9]]) as usize)
        }
        Some(b) if &b[..6] == b"\x93NUMPY" => (
            12,
            12 + u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize,
        ),
        _ => return Err(fmt("not a .npy file (no \\x93NUMPY magic)".into())),
    };
    if header_end > bytes.len() {
        return Err(fmt(format!(
            "the header declares {header_end} bytes but the file has {}",
            bytes.len()
        )));
    }
    // npyz parses the header with a backtracking parser that takes exponential time on
    // nested brackets (a 150-byte file ran for minutes: found by fuzzing). Real headers are
    // one flat dict with a shape tuple: a few hundred bytes, brackets two deep.
    let header = &bytes[header_start..header_end];
    let mut depth = 0usize;
    for &c in header {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 3 {
            return Err(fmt(
                "header nests brackets deeper than a .npy header does".into()
            ));
        }
    }
    if header.len() > 16 << 10 {
        return Err(fmt(format!(
            "header of {} bytes (real ones are < 1 KB)",
            header.len()
        )));
    }
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(io)?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    // Likewise the data: the shape must fit in what the file holds.
    let item = npy.dtype().num_bytes().unwrap_or(1).max(1);
    let need = shape
        .iter()
        .try_fold(item, |n, &d| n.checked_mul(d))
        .ok_or_else(|| fmt(format!("shape {shape:?} overflows")))?;
    if need > bytes.len() - header_end {
        return Err(fmt(format!(
            "shape {shape:?} needs {need} bytes of data but the file holds {}",
            bytes.len() - header_end
        )));
    }
    let fortran = npy.order() == npyz::Order::Fortran;
    let dtype = npy.dtype();
    let descr = dtype.descr();
    let data: Vec<f32> = match descr.trim_matches('\'') {
        "<f4" => npy.into_vec::<f32>().map_err(io)?,
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(io)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        "<i8" => npy
            .into_vec::<i64>()
            .map_err(io)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        "<i4" => npy
            .into_vec::<i32>()
            .map_err(io)?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        other => return Err(fmt(format!("unsupported dtype {other}"))),
    };
    // numpy saves a transposed (Fortran-ordered) array as it is, with `fortran_order: True`.
    let data = if fortran {
        fortran_to_c(&data, &shape)
    } else {
        data
    };
    Ok(NpyArray { shape, data })
}

/// `data` laid out in Fortran order (first index fastest) re-laid in C order.
fn fortran_to_c(data: &[f32], shape: &[usize]) -> Vec<f32> {
    let n = data.len();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        // Offset of the C-order index `idx` in Fortran order.
        let (mut off, mut stride) = (0, 1);
        for (i, &d) in idx.iter().zip(shape) {
            off += i * stride;
            stride *= d;
        }
        out.push(data[off]);
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// Writes `data` with `shape` as a float32 `.npy` file, atomically (temp file + rename).
///
/// ```no_run
/// voxbrain::npy::write_npy("x.npy", &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
/// ```
pub fn write_npy(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> Result<(), NpyError> {
    let path = path.as_ref();
    let io = |source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(NpyError::Format {
            path: path.to_path_buf(),
            reason: format!("shape {shape:?} holds {n} values, got {}", data.len()),
        });
    }
    crate::fsutil::write_atomic_with(path, |f| {
        let mut w = BufWriter::new(f);
        let shape64: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape64)
            .writer(&mut w)
            .begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()?;
        std::io::Write::flush(&mut w)
    })
    .map_err(io)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fortran_order_is_relaid_in_c_order() {
        // [[0, 1, 2], [10, 11, 12]] stored column by column.
        let f = [0.0, 10.0, 1.0, 11.0, 2.0, 12.0];
        assert_eq!(
            super::fortran_to_c(&f, &[2, 3]),
            vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
        );
        let f3: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let c = super::fortran_to_c(&f3, &[2, 3, 4]);
        // C index (i, j, k) holds the Fortran offset i + 2 j + 6 k.
        assert_eq!(c[(3 + 2) * 4 + 3], (1 + 2 * 2 + 6 * 3) as f32);
    }
}
