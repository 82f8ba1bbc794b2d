//! Neural network layers with SpeechBrain's semantics and parameter names
//! (`speechbrain.nnet`). Each constructor takes a `VarBuilder` whose path mirrors the PyTorch
//! module path, so a state_dict loads into the `VarMap` unchanged.

pub mod cnn;
pub mod normalization;
