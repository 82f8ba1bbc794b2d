//! Reads a checkpoint and writes it back with voxbrain's writers (`.ckpt` and
//! `.safetensors`); `data-tools/reference/check_voxbrain_ckpt.py` then loads the result with
//! torch to prove the files are readable by PyTorch/SpeechBrain.
//!
//! `cargo run --example rewrite_ckpt -- <in.ckpt> <out_dir>`

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (src, out) = (&args[1], std::path::Path::new(&args[2]));
    std::fs::create_dir_all(out)?;
    let ckpt = voxbrain::pretrained::ckpt::read_ckpt(src)?;
    let tensors: Vec<_> = ckpt.tensors.into_iter().collect();
    voxbrain::pretrained::ckpt::save_ckpt(out.join("voxbrain.ckpt"), &tensors)?;
    voxbrain::pretrained::ckpt::save_safetensors(out.join("voxbrain.safetensors"), &tensors)?;
    println!("wrote {} tensors to {}", tensors.len(), out.display());
    Ok(())
}
