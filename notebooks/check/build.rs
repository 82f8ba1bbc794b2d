//! Converts every `notebooks/*.ipynb` into `$OUT_DIR/notebooks.rs`: one module per notebook
//! with `pub fn run() -> anyhow::Result<()>`. A notebook that does not compile fails the
//! build (and so `cargo test`), naming the notebook.

#[path = "src/convert.rs"]
mod convert;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
    )
    .expect("reading Cargo.toml");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("reading notebooks/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ipynb"))
        .collect();
    names.sort();
    let mut out = String::new();
    let mut list = Vec::new();
    for path in &names {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).expect("reading a notebook");
        let c = convert::convert(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for d in &c.deps {
            let key = format!("\n{d} = ");
            let key2 = format!("\n{d}.workspace");
            assert!(
                manifest.contains(&key) || manifest.contains(&key2),
                "{}: `:dep {d}` is not a dependency of notebooks/check/Cargo.toml: add it there",
                path.display()
            );
        }
        let module = format!("nb_{}", stem.replace(|c: char| !c.is_alphanumeric(), "_"));
        // One file per notebook, named after it, so a compile error's path names the notebook.
        let file = format!("{stem}.ipynb.rs");
        std::fs::write(
            std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join(&file),
            format!("{{\n{}\n}}\n", c.body),
        )
        .expect("writing a converted notebook");
        out += &format!(
            "/// `{stem}.ipynb`, {} code cells.\n#[allow(unused, clippy::all)]\npub mod {module} {{\n    pub fn run() -> anyhow::Result<()> {{\n        include!(concat!(env!(\"OUT_DIR\"), \"/{file}\"));\n        Ok(())\n    }}\n}}\n",
            c.cells
        );
        list.push(format!("(\"{stem}\", {module}::run as crate::NotebookFn)"));
    }
    out += &format!(
        "/// Every notebook, in file-name order.\npub const NOTEBOOKS: &[(&str, crate::NotebookFn)] = &[{}];\n",
        list.join(", ")
    );
    println!("cargo:rerun-if-changed={}", dir.display());
    let dst = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("notebooks.rs");
    std::fs::write(dst, out).expect("writing notebooks.rs");
}
