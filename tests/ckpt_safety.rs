//! Checkpoint safety: hostile `.ckpt` files are refused with an error that names what was
//! refused, before anything runs or any large buffer is allocated; odd but legal files
//! (strided views, i8/bool storages, nested optimizer dicts) read correctly.

use std::io::Write;

use voxbrain::pretrained::ckpt::{read_ckpt, read_ckpt_bytes, read_shapes, save_ckpt};

/// A pickle assembled opcode by opcode (protocol 2, as torch writes).
#[derive(Default)]
struct Pk(Vec<u8>);

impl Pk {
    fn op(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn s(self, s: &str) -> Self {
        let mut b = vec![b'X'];
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
        self.op(&b)
    }
    fn int(self, v: i32) -> Self {
        let mut b = vec![b'J'];
        b.extend_from_slice(&v.to_le_bytes());
        self.op(&b)
    }
    fn ints(self, v: &[i32]) -> Self {
        v.iter().fold(self.op(b"("), |p, &x| p.int(x)).op(b"t")
    }
    /// `_rebuild_tensor_v2(storage('key', class, numel), offset, shape, stride, False, {})`.
    fn tensor(
        self,
        class: &str,
        key: &str,
        numel: i32,
        off: i32,
        shape: &[i32],
        stride: &[i32],
    ) -> Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"(")
            .op(b"(")
            .s("storage")
            .global("torch", class)
            .s(key)
            .s("cpu")
            .int(numel)
            .op(b"tQ")
            .int(off)
            .ints(shape)
            .ints(stride)
            .op(b"\x89}tR")
    }
    /// `{name: <what the closure pushes>}` then STOP.
    fn dict_of(name: &str, value: impl FnOnce(Pk) -> Pk) -> Vec<u8> {
        let p = Pk::default().op(b"\x80\x02}").s(name);
        value(p).op(b"s.").0
    }
}

/// A torch zip archive from a pickle and raw storages (stored, as torch writes).
fn torch_zip(pkl: &[u8], storages: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let method = if deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(pkl).unwrap();
        for (k, b) in storages {
            z.start_file(format!("archive/data/{k}"), opts).unwrap();
            z.write_all(b).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn refused(bytes: &[u8]) -> String {
    match read_ckpt_bytes(bytes, "hostile.ckpt") {
        Ok(c) => panic!("a hostile checkpoint was accepted: {:?}", c.tensors.keys()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_pickle_that_names_os_system_or_eval_is_refused_by_name() {
    for (module, name) in [("os", "system"), ("builtins", "eval"), ("posix", "system")] {
        let pkl = Pk::dict_of("w", |p| {
            p.global(module, name).s("touch /tmp/pwned").op(b"\x85R")
        });
        let err = refused(&torch_zip(&pkl, &[], false));
        assert!(err.contains(&format!("`{module}.{name}`")), "{err}");
        assert!(err.contains("hostile.ckpt"), "{err}");
    }
    // The same through a file, and through what `voxbrain inspect` lists: an error, never
    // an empty checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("embedding_model.ckpt");
    let pkl = Pk::dict_of("w", |p| p.global("os", "system").s("id").op(b"\x85R"));
    std::fs::write(&p, torch_zip(&pkl, &[], false)).unwrap();
    let err = read_shapes(&p).unwrap_err().to_string();
    assert!(
        err.contains("os.system") && err.contains("embedding_model.ckpt"),
        "{err}"
    );
}

#[test]
fn a_tensor_larger_than_its_stored_bytes_is_refused_before_allocating() {
    // Shape [100000, 100000] (40 GB as f32) over a storage of 4 values.
    let pkl = Pk::dict_of("w", |p| {
        p.tensor("FloatStorage", "0", 4, 0, &[100000, 100000], &[100000, 1])
    });
    let bytes = torch_zip(&pkl, &[("0", f32_bytes(&[1.0, 2.0, 3.0, 4.0]))], false);
    assert!(bytes.len() < 2048);
    let err = refused(&bytes);
    assert!(
        err.contains("tensor `w`") && err.contains("[100000, 100000]"),
        "{err}"
    );

    // A storage that claims 10^10 elements over 16 stored bytes.
    let pkl = Pk::dict_of("w", |p| {
        p.tensor("FloatStorage", "0", i32::MAX, 0, &[4], &[1])
    });
    let err = refused(&torch_zip(&pkl, &[("0", f32_bytes(&[1.0; 4]))], false));
    assert!(err.contains("holds 16 bytes"), "{err}");

    // An offset past the end, and a missing storage.
    let pkl = Pk::dict_of("w", |p| p.tensor("FloatStorage", "0", 4, 3, &[2], &[1]));
    assert!(
        refused(&torch_zip(&pkl, &[("0", f32_bytes(&[1.0; 4]))], false))
            .contains("reaches element 4")
    );
    let pkl = Pk::dict_of("w", |p| p.tensor("FloatStorage", "7", 4, 0, &[4], &[1]));
    assert!(refused(&torch_zip(&pkl, &[("0", f32_bytes(&[1.0; 4]))], false)).contains("missing"));
}

#[test]
fn a_zip_bomb_is_refused() {
    // 64 MB of zeros deflate to ~64 KB: no checkpoint needs that, and a nested or lying
    // archive would otherwise inflate to gigabytes.
    let n = 16 << 20;
    let pkl = Pk::dict_of("w", |p| p.tensor("FloatStorage", "0", n, 0, &[n], &[1]));
    let bytes = torch_zip(&pkl, &[("0", vec![0u8; 4 * n as usize])], true);
    assert!(bytes.len() < 1 << 20, "{}", bytes.len());
    let err = refused(&bytes);
    assert!(err.contains("zip bomb"), "{err}");
}

#[test]
fn pickle_bombs_and_deep_nesting_are_refused() {
    // Billion laughs: each level is a tuple of ten copies of the previous one.
    let mut p = Pk::default().op(b"\x80\x02]q\x00");
    for _ in 0..12 {
        p = p.op(b"(").op(&b"h\x00".repeat(10)).op(b"tq\x00");
    }
    let err = refused(&torch_zip(&p.op(b".").0, &[], false));
    assert!(err.contains("pickle bomb"), "{err}");

    // 100 000 nested lists in 300 KB: refused before dropping them could overflow the stack.
    let mut p = Pk::default().op(b"\x80\x02").op(&b"]".repeat(100_000));
    p = p.op(&b"a".repeat(99_999)).op(b".");
    let err = refused(&torch_zip(&p.0, &[], false));
    assert!(err.contains("nested deeper"), "{err}");
}

#[test]
fn malformed_pickles_are_errors_that_say_where() {
    let cases: [(&[u8], &str); 5] = [
        (b"\x80\x02}X\xff\xff\xff\x7fab", "truncated"),
        (b"\x80\x02}(Xa", "truncated"),
        (b"\x80\x02}ccollections\nOrderedDict", "unterminated"),
        (b"\x80\x02}i__main__\nEvil\n.", "opcode 0x69 at byte 3"),
        (b"\x80\x02s.", "underflow"),
    ];
    for (pkl, want) in cases {
        let err = refused(&torch_zip(pkl, &[], false));
        assert!(err.contains(want), "{want}: {err}");
    }
    // Not a zip at all, and a zip without data.pkl.
    assert!(read_ckpt_bytes(b"PK\x03\x04garbage", "x.ckpt").is_err());
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    z.start_file("a.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.finish().unwrap();
    assert!(refused(buf.get_ref()).contains("no data.pkl"));
}

#[test]
fn strided_views_small_dtypes_and_nested_dicts_read_correctly() {
    // `w` is a transposed [2, 3] view of a [3, 2] storage; `b` an i8 storage; `m` a bool
    // storage inside a nested dict (as optimizer states nest), `n` a plain int beside them.
    let pkl = Pk::default()
        .op(b"\x80\x02}")
        .s("w")
        .tensor("FloatStorage", "0", 6, 0, &[2, 3], &[1, 2])
        .op(b"s")
        .s("b")
        .tensor("CharStorage", "1", 3, 1, &[2], &[1])
        .op(b"s")
        .s("state")
        .op(b"}")
        .int(0)
        .op(b"}")
        .s("m")
        .tensor("BoolStorage", "2", 2, 0, &[2], &[1])
        .op(b"sss")
        .s("n")
        .int(-7)
        .op(b"s.")
        .0;
    let storages = [
        ("0", f32_bytes(&[1., 2., 3., 4., 5., 6.])),
        ("1", vec![5u8, 0xff, 0x80]),
        ("2", vec![1u8, 0]),
    ];
    let c = read_ckpt_bytes(&torch_zip(&pkl, &storages, false), "ok.ckpt").unwrap();
    let w = c.tensor("w").unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(w, vec![vec![1., 3., 5.], vec![2., 4., 6.]]);
    let b = c.tensor("b").unwrap().to_vec1::<i16>().unwrap();
    assert_eq!(b, vec![-1, -128]);
    let m = c.tensor("state.0.m").unwrap().to_vec1::<u8>().unwrap();
    assert_eq!(m, vec![1, 0]);
    assert_eq!(c.int("n"), Some(-7));
}

#[test]
fn what_voxbrain_writes_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.ckpt");
    let t = candle_core::Tensor::arange(0f32, 12., &candle_core::Device::Cpu)
        .unwrap()
        .reshape((3, 4))
        .unwrap();
    save_ckpt(&p, &[("layer.weight".to_string(), t.clone())]).unwrap();
    let c = read_ckpt(&p).unwrap();
    let back = c.tensor("layer.weight").unwrap();
    assert_eq!(back.to_vec2::<f32>().unwrap(), t.to_vec2::<f32>().unwrap());
    assert_eq!(
        read_shapes(&p).unwrap(),
        vec![("layer.weight".to_string(), vec![3, 4])]
    );
}

#[test]
fn inspect_reports_a_hostile_checkpoint_instead_of_listing_it_empty() {
    // The small speaker model with its embedding checkpoint swapped for one calling
    // `os.system`: `voxbrain inspect` must fail and say why, not list no tensors.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("model");
    std::fs::create_dir(&src).unwrap();
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speaker/model_small");
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
    }
    let pkl = Pk::dict_of("w", |p| p.global("os", "system").s("id").op(b"\x85R"));
    std::fs::write(
        src.join("embedding_model.ckpt"),
        torch_zip(&pkl, &[], false),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voxbrain"))
        .env("HF_HUB_OFFLINE", "1")
        .args(["inspect", "--source", src.to_str().unwrap()])
        .args(["--savedir", dir.path().join("s").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("os.system") && err.contains("embedding_model.ckpt"),
        "{err}"
    );
}
