//! Data: the project store, dataset formats (import/export), robust image decoding, the procedural demo
//! data, and the loader that feeds the trainer.
pub mod augment;
pub mod decode;
pub mod export;
pub mod formats;
pub mod import;
pub mod demo;
pub mod loader;
pub mod project;
pub mod readiness;
pub mod subset;

pub use project::{BBox, ClassInfo, ImageEntry, ImageSource, Project, Split, Task};
