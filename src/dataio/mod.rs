//! Data input/output (`speechbrain.dataio`).

pub mod encoder;
