//! The model: a decoder-only transformer over image patches, its objectives and decoding.
pub mod predictor;
pub mod predictor_impl;

pub use predictor::{Detection, PredictOptions, Prediction, Predictor};
