//! Evaluation of a trained model on a project split: batched predictions, then the metrics of
//! [`super::metrics`] gathered into an [`EvalReport`].
//!
//! The work is written against [`BatchPredictor`] (implemented by [`Predictor`]) so that the whole pipeline
//! can be tested with a scripted predictor, independent of any trained model.

use anyhow::Context;
use image::DynamicImage;
use rayon::prelude::*;

use super::metrics::{self, ImageDetections};
use super::{ClassStats, ClassificationReport, DetectionReport, EvalReport};
use crate::data::decode::load_image;
use crate::data::loader::SkippedImage;
use crate::data::project::{Project, Split, Task};
use crate::model::predictor::{Detection, PredictOptions, Prediction, Predictor};

/// Score threshold used when collecting detections for AP: low, as COCO evaluators do, so the whole
/// precision–recall curve is seen. Precision and recall are then reported at the caller's threshold.
pub const AP_SCORE_FLOOR: f32 = 0.001;

/// Images predicted per call.
pub const DEFAULT_EVAL_BATCH: usize = 16;

/// What evaluation needs from a model.
pub trait BatchPredictor {
    fn task(&self) -> Task;
    fn class_names(&self) -> Vec<String>;
    fn predict_batch(&self, images: &[DynamicImage], opts: &PredictOptions) -> anyhow::Result<Vec<Prediction>>;
}

impl BatchPredictor for Predictor {
    fn task(&self) -> Task {
        Predictor::task(self)
    }
    fn class_names(&self) -> Vec<String> {
        Predictor::class_names(self).to_vec()
    }
    fn predict_batch(&self, images: &[DynamicImage], opts: &PredictOptions) -> anyhow::Result<Vec<Prediction>> {
        Predictor::predict_batch(self, images, opts)
    }
}

/// A report plus what was left out.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: EvalReport,
    /// Number of images evaluated.
    pub evaluated: usize,
    /// Images that could not be decoded (they are not in the report).
    pub skipped: Vec<SkippedImage>,
    /// Model classes that the project does not have (their predictions count as wrong).
    pub unknown_classes: Vec<String>,
}

/// Evaluates `predictor` on the labelled images of `split`.
pub fn evaluate(predictor: &Predictor, project: &Project, split: Split, opts: &PredictOptions) -> anyhow::Result<EvalReport> {
    Ok(evaluate_with(predictor, project, split, opts, DEFAULT_EVAL_BATCH, &mut |_, _| {})?.report)
}

/// [`evaluate`] with a batch size, a progress callback `(images done, images total)`, and the skipped
/// images in the result.
pub fn evaluate_with(
    predictor: &dyn BatchPredictor,
    project: &Project,
    split: Split,
    opts: &PredictOptions,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<Evaluation> {
    let task = predictor.task();
    let model_classes = predictor.class_names();
    // Model class index -> project class index, by name.
    let to_project: Vec<Option<usize>> = model_classes.iter().map(|n| project.class_index(n)).collect();
    if !model_classes.is_empty() && to_project.iter().all(Option::is_none) {
        anyhow::bail!(
            "the checkpoint's classes ({}) share no name with the project's ({})",
            model_classes.join(", "),
            project.class_names().join(", ")
        );
    }
    let unknown_classes: Vec<String> =
        model_classes.iter().zip(&to_project).filter(|(_, p)| p.is_none()).map(|(n, _)| n.clone()).collect();

    let indices: Vec<usize> = project
        .indices_in(split)
        .into_iter()
        .filter(|&i| {
            let im = &project.images[i];
            match task {
                Task::Classify => im.class.is_some(),
                Task::Detect => im.has_box_labels(),
            }
        })
        .collect();
    if indices.is_empty() {
        let counts: Vec<String> =
            Split::ALL.iter().map(|s| format!("{} {}", s.as_str(), project.indices_in(*s).len())).collect();
        anyhow::bail!(
            "the {} split has no images labelled for {} (images per split: {})",
            split.as_str(),
            task.as_str(),
            counts.join(", ")
        );
    }

    let predict_opts = match task {
        Task::Detect => PredictOptions { threshold: opts.threshold.min(AP_SCORE_FLOOR), ..opts.clone() },
        Task::Classify => opts.clone(),
    };
    let mut evaluated: Vec<(usize, Prediction)> = Vec::with_capacity(indices.len());
    let mut skipped = Vec::new();
    progress(0, indices.len());
    let mut done = 0;
    for chunk in indices.chunks(batch_size.max(1)) {
        let decoded: Vec<(usize, Result<DynamicImage, String>)> = chunk
            .par_iter()
            .map(|&i| (i, load_image(&project.source_of(i)).map_err(|e| e.to_string())))
            .collect();
        let mut images = Vec::with_capacity(chunk.len());
        let mut ok_indices = Vec::with_capacity(chunk.len());
        for (i, r) in decoded {
            match r {
                Ok(img) => {
                    images.push(img);
                    ok_indices.push(i);
                }
                Err(reason) => {
                    let name = project.images[i].source.display_name();
                    log::warn!("eval: skipping {name}: {reason}");
                    skipped.push(SkippedImage { index: i, name, reason });
                }
            }
        }
        if !images.is_empty() {
            let predictions = predictor.predict_batch(&images, &predict_opts).context("predicting")?;
            anyhow::ensure!(
                predictions.len() == images.len(),
                "the model returned {} predictions for {} images",
                predictions.len(),
                images.len()
            );
            evaluated.extend(ok_indices.into_iter().zip(predictions));
        }
        done += chunk.len();
        progress(done, indices.len());
    }
    anyhow::ensure!(!evaluated.is_empty(), "none of the {} images of the {} split could be read", indices.len(), split.as_str());

    let report = match task {
        Task::Classify => EvalReport::Classification(classification_report(project, &evaluated, &to_project)?),
        Task::Detect => EvalReport::Detection(detection_report(project, &evaluated, &to_project, opts.threshold)),
    };
    Ok(Evaluation { report, evaluated: evaluated.len(), skipped, unknown_classes })
}

fn classification_report(
    project: &Project,
    evaluated: &[(usize, Prediction)],
    to_project: &[Option<usize>],
) -> anyhow::Result<ClassificationReport> {
    let n = project.classes.len();
    let mut pairs = Vec::with_capacity(evaluated.len());
    let mut items = Vec::with_capacity(evaluated.len());
    let mut correct = 0;
    for (i, p) in evaluated {
        let truth = project.images[*i].class.expect("filtered to labelled images");
        let (best, prob) = p.top_k(1).first().copied().with_context(|| {
            format!("{}: the model returned no class probabilities", project.images[*i].source.display_name())
        })?;
        // A class the project does not know is a wrong answer; it is outside the confusion matrix.
        let predicted = to_project.get(best).copied().flatten().unwrap_or(usize::MAX);
        if predicted == truth {
            correct += 1;
        }
        pairs.push((truth, predicted));
        // `items` index the project's classes (the UI looks names up with them), so an answer outside them is
        // left out there; it still counts against the accuracy and is named in `Evaluation::unknown_classes`.
        if predicted < n {
            items.push((*i, truth, predicted, prob));
        }
    }
    let confusion = metrics::confusion_matrix(&pairs, n);
    let per_class = metrics::per_class_precision_recall(&confusion)
        .into_iter()
        .zip(project.class_names())
        .map(|((precision, recall, support), name)| ClassStats { name, support, precision, recall, ap50: None, ap50_95: None })
        .collect();
    Ok(ClassificationReport { accuracy: correct as f32 / evaluated.len() as f32, per_class, confusion, items })
}

fn detection_report(
    project: &Project,
    evaluated: &[(usize, Prediction)],
    to_project: &[Option<usize>],
    threshold: f32,
) -> DetectionReport {
    let n = project.classes.len();
    let images: Vec<ImageDetections> = evaluated
        .iter()
        .map(|(i, p)| ImageDetections {
            truth: project.images[*i].boxes.clone(),
            predictions: p
                .detections
                .iter()
                .map(|d| {
                    // Unknown model classes map past the project's classes: ignored by the metrics.
                    let class = to_project.get(d.bbox.class).copied().flatten().unwrap_or(n);
                    Detection { bbox: crate::data::BBox { class, ..d.bbox }, score: d.score }
                })
                .collect(),
        })
        .collect();
    let m = metrics::detection_metrics(&images, n, threshold);
    let per_class = project
        .class_names()
        .into_iter()
        .enumerate()
        .map(|(c, name)| ClassStats {
            name,
            support: m.support[c],
            precision: m.precision[c],
            recall: m.recall[c],
            ap50: m.ap50[c],
            ap50_95: m.ap50_95[c],
        })
        .collect();
    DetectionReport {
        map50: m.map50,
        map50_95: m.map50_95,
        per_class,
        precision: m.precision_all,
        recall: m.recall_all,
        threshold,
        pr_curves: m.pr_curves,
        items: evaluated.iter().map(|(i, _)| *i).zip(m.image_errors).collect(),
    }
}
