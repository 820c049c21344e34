//! Tessera: train and use a small generative pretrained transformer (GPT) over images for classification
//! and object detection.
//!
//! Architecture (the UI depends on the engine, never the reverse):
//! - [`data`]: project store, dataset formats, decoding, demo data, loader and augmentation.
//! - [`model`]: the transformer, its objectives, decoding, and the [`model::Predictor`].
//! - [`train`]: the worker thread and its message API, the training loop, optimizer, checkpoints.
//! - [`eval`]: metrics and evaluation reports.
//! - [`ui`]: the eframe/egui desktop app.
//! - [`cli`]: the headless command line (same binary).
pub mod cli;
pub mod data;
pub mod eval;
pub mod model;
pub mod train;
pub mod ui;
pub mod util;
