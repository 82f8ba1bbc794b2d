//! Ready-to-use inference interfaces (`speechbrain.inference`).

pub mod separation;
