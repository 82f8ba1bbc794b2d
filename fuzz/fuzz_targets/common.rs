//! Writes a fuzz input to a per-process file, for readers that take a path (as users call
//! them): the file's extension is the one the reader dispatches on.

pub fn input_file(data: &[u8], ext: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("voxbrain-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(format!("input.{ext}"));
    std::fs::write(&p, data).expect("writing the fuzz input");
    p
}
