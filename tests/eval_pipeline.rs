//! The evaluation pipeline on generated demo data with scripted predictors (no trained model needed):
//! an oracle must score perfectly, known mistakes must show up in the numbers, and bad input is reported.
use std::collections::HashMap;
use std::path::Path;

use image::DynamicImage;
use tessera::data::demo::{write_demo, DemoOptions};
use tessera::data::{BBox, ImageSource, Project, Split, Task};
use tessera::eval::evaluate::{evaluate_with, BatchPredictor};
use tessera::eval::EvalReport;
use tessera::model::predictor::{Detection, PredictOptions, Prediction};

/// Answers from the ground truth of the image it recognises (by pixel content), after `tweak`.
struct Scripted<'a> {
    task: Task,
    classes: Vec<String>,
    by_pixels: HashMap<Vec<u8>, usize>,
    project: &'a Project,
    tweak: fn(usize, &Project) -> Prediction,
}

impl<'a> Scripted<'a> {
    fn new(project: &'a Project, task: Task, tweak: fn(usize, &Project) -> Prediction) -> Self {
        let by_pixels = (0..project.images.len())
            .filter_map(|i| {
                let img = tessera::data::decode::load_image(&project.source_of(i)).ok()?;
                Some((img.to_rgb8().into_raw(), i))
            })
            .collect();
        Scripted { task, classes: project.class_names(), by_pixels, project, tweak }
    }
}

impl BatchPredictor for Scripted<'_> {
    fn task(&self) -> Task {
        self.task
    }
    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }
    fn predict_batch(&self, images: &[DynamicImage], _opts: &PredictOptions) -> anyhow::Result<Vec<Prediction>> {
        Ok(images.iter().map(|im| (self.tweak)(self.by_pixels[&im.to_rgb8().into_raw()], self.project)).collect())
    }
}

fn oracle_boxes(i: usize, p: &Project) -> Prediction {
    Prediction { probs: vec![], detections: p.images[i].boxes.iter().map(|b| Detection { bbox: *b, score: 0.9 }).collect() }
}

fn one_hot(class: usize, n: usize) -> Vec<f32> {
    (0..n).map(|c| if c == class { 1.0 } else { 0.0 }).collect()
}

fn demo(dir: &Path) -> Project {
    write_demo(dir, &DemoOptions { count: 100, ..DemoOptions::default() }).unwrap()
}

fn detection(e: &EvalReport) -> &tessera::eval::DetectionReport {
    match e {
        EvalReport::Detection(d) => d,
        _ => panic!("expected a detection report"),
    }
}

fn classification(e: &EvalReport) -> &tessera::eval::ClassificationReport {
    match e {
        EvalReport::Classification(c) => c,
        _ => panic!("expected a classification report"),
    }
}

#[test]
fn oracle_detector_scores_perfectly() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path());
    let model = Scripted::new(&project, Task::Detect, oracle_boxes);
    let mut calls = vec![];
    let e = evaluate_with(&model, &project, Split::Test, &PredictOptions::default(), 4, &mut |d, t| calls.push((d, t))).unwrap();
    assert_eq!(e.evaluated, 10);
    assert_eq!(calls.first(), Some(&(0, 10)));
    assert_eq!(calls.last(), Some(&(10, 10)));
    let r = detection(&e.report);
    assert!((r.map50 - 1.0).abs() < 1e-6 && (r.map50_95 - 1.0).abs() < 1e-6, "{} {}", r.map50, r.map50_95);
    assert_eq!((r.precision, r.recall), (1.0, 1.0));
    assert!(r.items.iter().all(|&(_, errors)| errors == 0));
    assert_eq!(r.per_class.len(), 5);
    let json = tessera::cli::eval_cmds::to_json(&e, Split::Test).unwrap();
    for key in ["map50", "map50_95", "per_class", "precision", "recall", "task", "split", "skipped"] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
}

#[test]
fn known_detection_mistakes_show_in_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path());
    // Every box found, plus one confident false positive of class 0 per image (a 1x1 box in a corner);
    // boxes of the square class (1) shrunk to IoU 0.64 (80% of each side): TP at 0.5..0.60, FP from 0.65.
    fn tweaked(i: usize, p: &Project) -> Prediction {
        let mut out = oracle_boxes(i, p);
        for d in &mut out.detections {
            if d.bbox.class == 1 {
                d.bbox.xmax = d.bbox.xmin + 0.8 * d.bbox.width();
                d.bbox.ymax = d.bbox.ymin + 0.8 * d.bbox.height();
            }
        }
        out.detections.push(Detection { bbox: BBox { xmin: 0.0, ymin: 0.0, xmax: 1.0, ymax: 1.0, class: 0 }, score: 0.95 });
        out
    }
    let model = Scripted::new(&project, Task::Detect, tweaked);
    let e = evaluate_with(&model, &project, Split::Test, &PredictOptions::default(), 16, &mut |_, _| {}).unwrap();
    let r = detection(&e.report);
    let test = project.indices_in(Split::Test);
    let truth: usize = test.iter().map(|&i| project.images[i].boxes.len()).sum();
    // Precision at 0.3 = truth / (truth + one false positive per image); recall 1.
    assert!((r.precision - truth as f32 / (truth + test.len()) as f32).abs() < 1e-6, "{}", r.precision);
    assert_eq!(r.recall, 1.0);
    assert!(r.items.iter().all(|&(_, errors)| errors == 1));
    let square = &r.per_class[1];
    if square.support > 0 {
        assert_eq!(square.ap50, Some(1.0));
        // IoU 0.64: thresholds 0.50, 0.55, 0.60 of ten -> 0.3.
        assert!((square.ap50_95.unwrap() - 0.3).abs() < 1e-5, "{:?}", square.ap50_95);
    }
    let circle = &r.per_class[0];
    if circle.support > 0 {
        // The false positives outrank every true circle: AP < 1.
        assert!(circle.ap50.unwrap() < 1.0);
    }
}

#[test]
fn classification_reports_accuracy_and_confusion() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path());
    // Right except that every triangle (2) is called a star (3).
    fn mostly_right(i: usize, p: &Project) -> Prediction {
        let c = p.images[i].class.unwrap_or(0);
        Prediction { probs: one_hot(if c == 2 { 3 } else { c }, 5), detections: vec![] }
    }
    let model = Scripted::new(&project, Task::Classify, mostly_right);
    let e = evaluate_with(&model, &project, Split::Train, &PredictOptions::default(), 8, &mut |_, _| {}).unwrap();
    let r = classification(&e.report);
    let labelled: Vec<usize> =
        project.indices_in(Split::Train).into_iter().filter(|&i| project.images[i].class.is_some()).collect();
    let triangles = labelled.iter().filter(|&&i| project.images[i].class == Some(2)).count();
    assert!(triangles > 0);
    assert_eq!(e.evaluated, labelled.len());
    assert!((r.accuracy - (labelled.len() - triangles) as f32 / labelled.len() as f32).abs() < 1e-6);
    assert_eq!(r.confusion[2][3], triangles);
    assert_eq!(r.confusion[2][2], 0);
    assert_eq!(r.per_class[2].recall, 0.0);
    assert_eq!(r.per_class[0].recall, 1.0);
    let json = tessera::cli::eval_cmds::to_json(&e, Split::Train).unwrap();
    for key in ["accuracy", "per_class", "confusion"] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
}

#[test]
fn classes_are_matched_by_name_not_position() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path());
    // The model knows the classes in reverse order plus one the project lacks.
    fn reversed(i: usize, p: &Project) -> Prediction {
        let c = p.images[i].class.unwrap_or(0);
        Prediction { probs: one_hot(4 - c, 6), detections: vec![] }
    }
    let mut model = Scripted::new(&project, Task::Classify, reversed);
    model.classes.reverse();
    model.classes.push("hexagon".into());
    let e = evaluate_with(&model, &project, Split::Train, &PredictOptions::default(), 8, &mut |_, _| {}).unwrap();
    assert_eq!(classification(&e.report).accuracy, 1.0);
    assert_eq!(e.unknown_classes, vec!["hexagon".to_string()]);

    // Answers in the class the project lacks count as wrong and stay out of the per-image items.
    fn always_hexagon(_: usize, _: &Project) -> Prediction {
        Prediction { probs: one_hot(5, 6), detections: vec![] }
    }
    model.tweak = always_hexagon;
    let e = evaluate_with(&model, &project, Split::Train, &PredictOptions::default(), 8, &mut |_, _| {}).unwrap();
    let r = classification(&e.report);
    assert_eq!(r.accuracy, 0.0);
    assert!(r.items.is_empty());
    assert_eq!(r.confusion.iter().flatten().sum::<usize>(), 0);

    model.classes = vec!["cat".into(), "dog".into()];
    let err = evaluate_with(&model, &project, Split::Train, &PredictOptions::default(), 8, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("share no name"), "{err}");
}

#[test]
fn unreadable_images_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path());
    let model = Scripted::new(&project, Task::Detect, oracle_boxes);
    let victim = project.indices_in(Split::Test)[3];
    let ImageSource::File(rel) = &project.images[victim].source else { unreachable!() };
    std::fs::write(dir.path().join(rel), b"not a png").unwrap();
    let e = evaluate_with(&model, &project, Split::Test, &PredictOptions::default(), 4, &mut |_, _| {}).unwrap();
    assert_eq!(e.evaluated, 9);
    assert_eq!(e.skipped.len(), 1);
    assert_eq!(e.skipped[0].index, victim);
    assert!(!detection(&e.report).items.iter().any(|&(i, _)| i == victim));
}

#[test]
fn a_split_without_labelled_images_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut project = demo(dir.path());
    for im in &mut project.images {
        if im.split == Split::Val {
            im.split = Split::Train;
        }
    }
    let model = Scripted::new(&project, Task::Detect, oracle_boxes);
    let err = evaluate_with(&model, &project, Split::Val, &PredictOptions::default(), 4, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("val split has no images"), "{err}");
}
