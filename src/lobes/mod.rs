//! Model architectures (`speechbrain.lobes.models`).

pub mod sepformer;
