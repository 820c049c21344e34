//! Evaluation: metrics (accuracy, confusion, COCO-style AP) and reports over a project split.
//!
//! PUBLIC API CONTRACT (the UI is written against these report types).
pub mod evaluate;
pub mod metrics;

pub use evaluate::{evaluate, evaluate_with, BatchPredictor, Evaluation};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassStats {
    pub name: String,
    /// Ground-truth count (images for classification, boxes for detection).
    pub support: usize,
    pub precision: f32,
    pub recall: f32,
    /// Detection only: AP@0.5 and AP@[.5:.95].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ap50: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ap50_95: Option<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassificationReport {
    pub accuracy: f32,
    pub per_class: Vec<ClassStats>,
    /// confusion[truth][predicted]
    pub confusion: Vec<Vec<usize>>,
    /// Per evaluated image: (image index in the project, truth, predicted, probability of predicted).
    pub items: Vec<(usize, usize, usize, f32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectionReport {
    pub map50: f32,
    pub map50_95: f32,
    pub per_class: Vec<ClassStats>,
    /// Precision and recall over all classes at `threshold` (IoU 0.5).
    pub precision: f32,
    pub recall: f32,
    pub threshold: f32,
    /// Per class: (recall, precision) points of the IoU-0.5 precision–recall curve.
    pub pr_curves: Vec<Vec<(f32, f32)>>,
    /// Per evaluated image: (image index, number of errors at threshold = false positives + misses).
    pub items: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EvalReport {
    Classification(ClassificationReport),
    Detection(DetectionReport),
}
