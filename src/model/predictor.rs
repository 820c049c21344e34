//! Inference on a trained checkpoint: what `tessera predict`, evaluation and the app's Predict view call.
//!
//! PUBLIC API CONTRACT (the UI is written against it): may gain methods/fields; existing ones keep their meaning.

use std::path::Path;

use image::DynamicImage;

use crate::data::project::{BBox, Task};

#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Drop boxes scoring below this.
    pub threshold: f32,
    /// At most this many objects per image.
    pub max_objects: usize,
    /// Detection: keep decoding (EOS not allowed) until this many boxes; low-scoring extra boxes add recall.
    pub min_objects: usize,
    /// Nucleus sampling for detection decoding; `None` = greedy.
    pub top_p: Option<f32>,
    /// Non-maximum suppression IoU; `None` = off.
    pub nms_iou: Option<f32>,
    /// Test-time augmentation over flips. Classification: also predict the left-right mirrored image and average
    /// the two probability vectors, if the model trained with mirrored images (`hflip` or `dihedral`: data where
    /// a mirror keeps the class, e.g. clothes, not digits); otherwise it changes nothing.
    /// Detection: also decode the image under each flip and 90° turn the model was trained with (all 8 under the
    /// default augmentation, the mirror only under `hflip`), map those boxes back and fuse the views' boxes (weighted
    /// boxes fusion: a box every view found keeps its score, one view's guess gets a share of it).
    pub flip_tta: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions { threshold: 0.3, max_objects: 30, min_objects: 0, top_p: None, nms_iou: Some(0.6), flip_tta: false }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// In original image pixels.
    pub bbox: BBox,
    pub score: f32,
}

#[derive(Debug, Clone, Default)]
pub struct Prediction {
    /// Classification: probability of every class (sums to 1). Empty for detection.
    pub probs: Vec<f32>,
    /// Detection: boxes best first. Empty for classification.
    pub detections: Vec<Detection>,
}

impl Prediction {
    /// (class, probability) pairs, best first, at most `k`.
    pub fn top_k(&self, k: usize) -> Vec<(usize, f32)> {
        let mut v: Vec<(usize, f32)> = self.probs.iter().copied().enumerate().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(k);
        v
    }
}

/// Attention of the output tokens over the image patches, for the "Look inside" view.
#[derive(Debug, Clone)]
pub struct AttentionMap {
    /// Patch grid size (rows, cols).
    pub grid: (usize, usize),
    /// One map per layer, averaged over heads: `grid.0 * grid.1` weights, row-major, summing to ~1.
    pub per_layer: Vec<Vec<f32>>,
}

pub struct Predictor {
    inner: crate::model::predictor_impl::PredictorImpl,
}

impl Predictor {
    /// Loads a checkpoint directory (or its checkpoint.json). A checkpoint of the wrong kind gives a clear error.
    /// Loads a checkpoint's best weights (those of its best val evaluation; the last step's if that was the best).
    pub fn load(checkpoint: &Path) -> anyhow::Result<Predictor> {
        Self::load_weights(checkpoint, crate::train::checkpoint::WeightsChoice::Best)
    }
    pub fn load_weights(checkpoint: &Path, choice: crate::train::checkpoint::WeightsChoice) -> anyhow::Result<Predictor> {
        Ok(Predictor { inner: crate::model::predictor_impl::PredictorImpl::load(checkpoint, choice)? })
    }
    pub fn task(&self) -> Task {
        self.inner.task()
    }
    pub fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    /// Model input size in pixels.
    pub fn image_size(&self) -> usize {
        self.inner.image_size()
    }
    /// The model's hyper-parameters, as stored in its checkpoint.
    pub fn config(&self) -> &super::config::ModelConfig {
        self.inner.config()
    }
    /// How many views of each image `PredictOptions::flip_tta` predicts: the orientations the model's training
    /// augmentation showed it (1 = TTA changes nothing). A classifier: 2 (the image and its mirror) if it trained
    /// with mirrors or dihedral flips; a detector: 8, 2 or 1.
    pub fn tta_views(&self) -> usize {
        self.inner.tta_views()
    }
    pub fn predict(&self, image: &DynamicImage, opts: &PredictOptions) -> anyhow::Result<Prediction> {
        self.inner.predict(image, opts)
    }
    pub fn predict_batch(&self, images: &[DynamicImage], opts: &PredictOptions) -> anyhow::Result<Vec<Prediction>> {
        self.inner.predict_batch(images, opts)
    }
    /// Attention over the patches when the model emits the class token (classification) or the
    /// class token of detection `object` (detection).
    pub fn attention(&self, image: &DynamicImage, object: Option<usize>) -> anyhow::Result<AttentionMap> {
        self.inner.attention(image, object)
    }
    /// For a model with a pretraining head: the image with each patch after the first `keep` replaced by the
    /// model's prediction of it from the patches before it (the generative view). `None` if the checkpoint has no such head.
    pub fn reconstruct(&self, image: &DynamicImage, keep: usize) -> anyhow::Result<Option<DynamicImage>> {
        self.inner.reconstruct(image, keep)
    }
}
