//! `tessera eval CKPT DATA [--split test] [--json] [--threshold T]`.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::data::import::open_project_or_dataset;
use crate::data::project::Split;
use crate::eval::evaluate::{evaluate_with, Evaluation, DEFAULT_EVAL_BATCH};
use crate::eval::{ClassificationReport, DetectionReport, EvalReport};
use crate::model::predictor::{PredictOptions, Predictor};
use crate::train::checkpoint::WeightsChoice;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint directory (or its checkpoint.json).
    pub checkpoint: PathBuf,
    /// Project folder or dataset path (imported on the fly; nothing is written).
    pub data: PathBuf,
    /// Split to evaluate: train, val or test.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Detection: score threshold for precision and recall (AP uses every score).
    #[arg(long, default_value_t = PredictOptions::default().threshold)]
    pub threshold: f32,
    /// Detection: at most this many objects per image.
    #[arg(long, default_value_t = PredictOptions::default().max_objects)]
    pub max_objects: usize,
    /// Detection: decode at least this many boxes per image (EOS not allowed before; extra boxes score low).
    #[arg(long, default_value_t = PredictOptions::default().min_objects)]
    pub min_objects: usize,
    /// Which weights: those of the run's best val evaluation, or the last step's.
    #[arg(long, value_enum, default_value = "best")]
    pub weights: WeightsChoice,
    /// Images per prediction batch.
    #[arg(long, default_value_t = DEFAULT_EVAL_BATCH)]
    pub batch_size: usize,
    /// Print the report as JSON (classification: accuracy, per_class, confusion; detection: map50, map50_95,
    /// per_class, precision, recall).
    #[arg(long)]
    pub json: bool,
    /// Test-time augmentation over flips. Classification: average the class probabilities of the image and its
    /// left-right mirror (only for a model trained with flips, on data where a mirror keeps the class). Detection:
    /// decode every flip and 90° turn the model was trained with (8 views by default, 2 with --augment hflip) and fuse
    /// the boxes (weighted boxes fusion); as many times slower.
    #[arg(long)]
    pub flip_tta: bool,
}

/// `--flip-tta` on a model trained without flips looks only at the image itself: say so rather than let the user
/// believe the figure includes TTA.
pub(crate) fn note_if_tta_changes_nothing(predictor: &Predictor, flip_tta: bool) {
    if flip_tta && predictor.tta_views() < 2 {
        eprintln!("note: --flip-tta changes nothing here: this model was trained without flips (its --augment had neither hflip nor dihedral)");
    }
}

pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..=1.0).contains(&a.threshold), "--threshold must be within 0..=1 (got {})", a.threshold);
    let predictor = Predictor::load_weights(&a.checkpoint, a.weights)?;
    note_if_tta_changes_nothing(&predictor, a.flip_tta);
    let (project, _import) = open_project_or_dataset(&a.data).with_context(|| format!("opening {}", a.data.display()))?;
    let opts = PredictOptions { threshold: a.threshold, max_objects: a.max_objects, min_objects: a.min_objects, flip_tta: a.flip_tta, ..PredictOptions::default() };

    let bar = if a.json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("evaluating {bar:30} {pos}/{len} images [{elapsed} < {eta}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    let result = evaluate_with(&predictor, &project, a.split, &opts, a.batch_size, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let evaluation = result?;

    if a.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&evaluation, a.split)?)?);
    } else {
        print_text(&evaluation, a.split);
    }
    Ok(())
}

/// The report's JSON with `task`, `split`, `images` and `skipped` added.
pub fn to_json(e: &Evaluation, split: Split) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(&e.report)?;
    if let Some(obj) = v.as_object_mut() {
        let task = match e.report {
            EvalReport::Classification(_) => "classify",
            EvalReport::Detection(_) => "detect",
        };
        obj.insert("task".into(), task.into());
        obj.insert("split".into(), split.as_str().into());
        obj.insert("images".into(), e.evaluated.into());
        obj.insert("skipped".into(), serde_json::to_value(&e.skipped)?);
        if !e.unknown_classes.is_empty() {
            obj.insert("unknown_model_classes".into(), serde_json::to_value(&e.unknown_classes)?);
        }
    }
    Ok(v)
}

fn print_text(e: &Evaluation, split: Split) {
    println!("{} images of the {} split", e.evaluated, split.as_str());
    match &e.report {
        EvalReport::Classification(r) => print_classification(r),
        EvalReport::Detection(r) => print_detection(r),
    }
    for s in &e.skipped {
        println!("skipped {}: {}", s.name, s.reason);
    }
    if !e.unknown_classes.is_empty() {
        println!("model classes not in the project (counted as wrong): {}", e.unknown_classes.join(", "));
    }
}

fn print_classification(r: &ClassificationReport) {
    println!("accuracy {:.2}%", 100.0 * r.accuracy);
    let width = r.per_class.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
    println!("{:<width$}  {:>7}  {:>9}  {:>6}", "class", "support", "precision", "recall");
    for c in &r.per_class {
        println!("{:<width$}  {:>7}  {:>9.3}  {:>6.3}", c.name, c.support, c.precision, c.recall);
    }
    println!("confusion (rows: truth, columns: predicted):");
    for (c, row) in r.confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|n| format!("{n:>5}")).collect();
        println!("{:<width$} {}", r.per_class.get(c).map_or("", |s| s.name.as_str()), cells.join(""));
    }
}

fn print_detection(r: &DetectionReport) {
    println!("mAP@0.5 {:.3}   mAP@[.5:.95] {:.3}", r.map50, r.map50_95);
    println!("at score >= {}: precision {:.3}, recall {:.3}", r.threshold, r.precision, r.recall);
    let width = r.per_class.iter().map(|c| c.name.len()).max().unwrap_or(5).max(5);
    println!("{:<width$}  {:>7}  {:>6}  {:>9}  {:>9}  {:>6}", "class", "boxes", "AP50", "AP50-95", "precision", "recall");
    let fmt = |v: Option<f32>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    for c in &r.per_class {
        println!(
            "{:<width$}  {:>7}  {:>6}  {:>9}  {:>9.3}  {:>6.3}",
            c.name,
            c.support,
            fmt(c.ap50),
            fmt(c.ap50_95),
            c.precision,
            c.recall
        );
    }
}
