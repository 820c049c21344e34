//! The model: a decoder-only transformer over image patches, its objectives and decoding.
pub mod predictor;
pub mod predictor_impl;

pub use predictor::{Detection, PredictOptions, Prediction, Predictor};
pub mod config;
pub mod fused_attention;
pub mod ops;
pub mod params;
pub mod transformer;
pub mod vocab;
pub mod objectives;
