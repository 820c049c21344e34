//! Engine side of [`super::predictor::Predictor`]. Placeholder until the model lands.
use std::path::Path;

use image::DynamicImage;

use super::predictor::{AttentionMap, PredictOptions, Prediction};
use crate::data::project::Task;

pub struct PredictorImpl {
    classes: Vec<String>,
}

impl PredictorImpl {
    pub fn load(checkpoint: &Path) -> anyhow::Result<Self> {
        anyhow::bail!("{}: loading checkpoints is not implemented yet", checkpoint.display())
    }
    pub fn task(&self) -> Task {
        Task::Detect
    }
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }
    pub fn image_size(&self) -> usize {
        64
    }
    pub fn predict(&self, _image: &DynamicImage, _opts: &PredictOptions) -> anyhow::Result<Prediction> {
        anyhow::bail!("not implemented yet")
    }
    pub fn predict_batch(&self, images: &[DynamicImage], opts: &PredictOptions) -> anyhow::Result<Vec<Prediction>> {
        images.iter().map(|i| self.predict(i, opts)).collect()
    }
    pub fn attention(&self, _image: &DynamicImage, _object: Option<usize>) -> anyhow::Result<AttentionMap> {
        anyhow::bail!("not implemented yet")
    }
    pub fn reconstruct(&self, _image: &DynamicImage, _keep: usize) -> anyhow::Result<Option<DynamicImage>> {
        Ok(None)
    }
}
