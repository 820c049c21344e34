//! `tessera pretrain | train | predict`.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::data::project::{Project, Task};
use crate::data::subset::Beyond;
use crate::model::predictor::{PredictOptions, Predictor};
use crate::train::checkpoint::WeightsChoice;
use crate::train::data::Augment;
use crate::train::run::describe_mirror_check;
use crate::train::worker::{default_generative_aux, images_learned_from, start_training, Event, ModelOverrides, Objective, TrainConfig};

/// Settings shared by `pretrain` and `train`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Where to write the checkpoint (a directory).
    #[arg(long)]
    pub out: PathBuf,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Stop after this many passes over the training images.
    #[arg(long)]
    pub epochs: Option<f32>,
    /// Stop after this many minutes (the schedule adapts to the measured speed).
    #[arg(long)]
    pub minutes: Option<f32>,
    /// Model size: tiny, small, base.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per step (default: 64 for classification sets of 5000 training images or more, else 16).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate (default: 2e-3 for detection and for classification sets of 5000 training images or
    /// more, 1e-3 otherwise).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Detection: weight of the dense auxiliary loss on the image patches (each patch learns its object's class
    /// and box; the output is still tokens). 0 = plain Pix2Seq.
    #[arg(long, default_value_t = crate::train::worker::DEFAULT_DENSE_AUX)]
    pub dense_aux: f64,
    /// Detection: the order objects are listed in while training: curriculum (raster order first, then more and
    /// more random), random (Pix2Seq), raster (top to bottom, left to right), or auto (raster when the most
    /// crowded training image has more than 10 objects, else curriculum).
    #[arg(long, default_value = "auto", value_name = "ORDER")]
    pub object_order: crate::train::worker::ObjectOrder,
    /// Detection: fake boxes after the real ones: fill (up to twice the most crowded image's count, Pix2Seq),
    /// match (as many as real ones: shorter sequences), none, or auto (match when the most crowded training image
    /// has more than 10 objects, else fill).
    #[arg(long, default_value = "auto", value_name = "POLICY")]
    pub noise_boxes: String,
    /// Classification: label smoothing (e.g. 0.1).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Classification: weight of an auxiliary loss on the image patches (their class logits, averaged over the
    /// image, learn its label too; the answer is still read at the task token). 0 = off.
    /// Default: 1 on classification sets of 5000 training images or more, else 0.
    #[arg(long, value_name = "W")]
    pub class_aux: Option<f64>,
    /// Classification and detection: weight of the generative pretraining loss (next patch's pixels) on every
    /// training image, labelled or not, added while fine-tuning. 0 = off. With --labels-per-class, the images
    /// beyond N per class stay as unlabelled images for it.
    /// Default: 1 when a classifier is fine-tuned (--init) and unlabelled training images are at least as many as
    /// labelled ones (and 100 or more), else 0.
    #[arg(long, value_name = "W")]
    pub generative_aux: Option<f64>,
    /// Classification: pseudo-labels (FixMatch) on every training image, labelled or not, at this confidence
    /// (e.g. 0.95): where the model is at least this sure of a lightly augmented view's class, a strongly augmented
    /// view learns it. With --labels-per-class, the images beyond N per class are used unlabelled. Default: off.
    #[arg(long, value_name = "THRESHOLD")]
    pub pseudo_labels: Option<f64>,
    /// Layer-wise learning-rate decay, for fine-tuning with --init (e.g. 0.7: each block gets 0.7 times the rate of
    /// the one above it, so pretrained low layers change little).
    #[arg(long, value_name = "D")]
    pub layer_decay: Option<f64>,
    /// With --init: the last K transformer blocks start from a fresh init instead of the checkpoint's weights
    /// (the top of a generatively pretrained trunk predicts pixels; this tests whether that hurts a classifier).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub reinit_blocks: usize,
    /// Model shape on top of the preset (a new model only): width.
    #[arg(long)]
    pub dim: Option<usize>,
    /// Model shape: number of transformer blocks.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Model shape: attention heads (must divide --dim).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Model shape: MLP hidden width as a multiple of --dim.
    #[arg(long)]
    pub mlp_ratio: Option<usize>,
    /// Model shape: patch side in pixels (the input size is rounded to a multiple of it).
    #[arg(long)]
    pub patch_size: Option<usize>,
    /// Model shape: local mixing of neighbouring patches in every MLP (true/false; default: the preset's).
    #[arg(long, value_name = "BOOL")]
    pub local_mixing: Option<bool>,
    /// Model shape: local mixing also reads the following neighbours where the patches see each other both ways
    /// (classification, detection; true/false; default: true for classification and pretraining, else the preset's).
    #[arg(long, value_name = "BOOL")]
    pub local_mixing_full: Option<bool>,
    /// Model shape: filters of the convolutional patch stem (3×3 windows, added to the linear patch embedding;
    /// 0: none; default: 16 for classification and pretraining, none for detection).
    #[arg(long, value_name = "N")]
    pub stem_channels: Option<usize>,
    /// Model shape: residual MLP blocks in generative pretraining's pixel head before its output layer
    /// (default: the preset's, none).
    #[arg(long, value_name = "N")]
    pub pixel_head_blocks: Option<usize>,
    /// Model shape: what generative pretraining predicts for the next patch: pixels (AIM), pooled (2×2 averages)
    /// or blurred (a Gaussian of 1 px); each per-patch normalised (default: pixels).
    #[arg(long, value_name = "TARGET")]
    pub pretrain_target: Option<crate::model::config::PretrainTarget>,
    /// Model shape: generative pretraining's task: 0 predicts each next patch from those before it (AIM); a
    /// fraction such as 0.75 blanks that share of the patches and predicts them from the rest (SimMIM) (default: 0).
    #[arg(long, value_name = "RATIO")]
    pub pretrain_mask_ratio: Option<f64>,
    /// Model shape: weight of next-patch prediction's second target, the features a teacher (a moving average of
    /// the model) computes for the next patch while seeing the whole image (data2vec); 0 = pixels only (default: 0).
    #[arg(long, value_name = "W")]
    pub pretrain_feature_weight: Option<f64>,
    /// Square model input size in pixels (default: the images' typical side, at most the preset's; detection
    /// and pretraining on boxes go up to twice that, so the small objects span 12 pixels).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Accumulate gradients over this many batches per step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Keep an exponential moving average of the weights with this decay (e.g. 0.999).
    #[arg(long)]
    pub ema: Option<f64>,
    /// Stop when the val metric has not improved in this many evaluations.
    #[arg(long)]
    pub patience: Option<u32>,
    /// Evaluate on the val split every this many steps (default: about 10 times per run).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Use a CUDA GPU if this build has one.
    #[arg(long)]
    pub gpu: bool,
    /// Data augmentation: "default" (per task), "none", or a comma list of hflip, dihedral, shift=F, scale=LO-HI,
    /// erase=P, cutmix=P (e.g. "hflip,shift=0.1,scale=0.7-1.4"; dihedral = flips and 90° rotations; scale = zoom
    /// jitter; erase = random erasing with probability P; cutmix = the share of batches mixed by CutMix; these two
    /// for classification).
    #[arg(long, default_value = "default")]
    pub augment: String,
    /// Print a JSON summary at the end instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// A project folder or dataset (any images; labels are ignored).
    pub data: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A project folder or dataset.
    pub data: PathBuf,
    /// classify or detect (default: the project's task).
    #[arg(long)]
    pub task: Option<Task>,
    /// Start from these weights (e.g. a pretrained checkpoint).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Which of the --init checkpoint's weights: its best val evaluation's, or its last step's.
    #[arg(long, value_enum, default_value = "best")]
    pub init_weights: WeightsChoice,
    /// Continue this checkpoint's run where it stopped.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Label-efficiency studies: fine-tune on only N labelled training images per class, picked from --seed (the
    /// same seed gives the same images; smaller sets lie inside larger ones). Val and test are unchanged. Detection
    /// keeps images until every class present has N.
    #[arg(long, value_name = "N")]
    pub labels_per_class: Option<usize>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    pub checkpoint: PathBuf,
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Drop boxes scoring below this.
    #[arg(long, default_value_t = PredictOptions::default().threshold)]
    pub threshold: f32,
    /// Which weights: those of the run's best val evaluation, or the last step's.
    #[arg(long, value_enum, default_value = "best")]
    pub weights: WeightsChoice,
    /// Classification: how many classes to print.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Nucleus sampling for detection decoding (default greedy).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Detection: at most this many boxes per image.
    #[arg(long, default_value_t = PredictOptions::default().max_objects)]
    pub max_objects: usize,
    /// Detection: decode at least this many boxes per image (EOS not allowed before; extra boxes score low).
    #[arg(long, default_value_t = PredictOptions::default().min_objects)]
    pub min_objects: usize,
    /// Detection: non-maximum suppression IoU (0 turns it off).
    #[arg(long, default_value_t = PredictOptions::default().nms_iou.unwrap_or(0.0))]
    pub nms_iou: f32,
    /// Test-time augmentation over flips. Classification: average the class probabilities of the image and its
    /// left-right mirror (only for a model trained with flips, on data where a mirror keeps the class). Detection:
    /// decode every flip and 90° turn the model was trained with (8 views by default, 2 with --augment hflip) and fuse
    /// the boxes (weighted boxes fusion); as many times slower.
    #[arg(long)]
    pub flip_tta: bool,
}

fn open_data(path: &std::path::Path) -> anyhow::Result<Project> {
    let (project, report) = crate::data::import::open_project_or_dataset(path)?;
    let _ = report;
    Ok(project)
}

fn parse_augment(s: &str) -> anyhow::Result<Option<Augment>> {
    if s == "default" {
        return Ok(None);
    }
    let mut a = Augment::none();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "none") {
        match part.split_once('=') {
            None if part == "hflip" => a.hflip = true,
            None if part == "dihedral" => a.dihedral = true,
            Some(("shift", v)) => a.translate = v.parse().with_context(|| format!("--augment: bad shift '{v}'"))?,
            Some(("erase", v)) => {
                a.erase = v.parse().with_context(|| format!("--augment: bad erase probability '{v}'"))?;
                anyhow::ensure!((0.0..=1.0).contains(&a.erase), "--augment: erase probability {v} is not in 0..1");
            }
            Some(("cutmix", v)) => {
                a.cutmix = v.parse().with_context(|| format!("--augment: bad CutMix probability '{v}'"))?;
                anyhow::ensure!((0.0..=1.0).contains(&a.cutmix), "--augment: CutMix probability {v} is not in 0..1");
            }
            Some(("scale", v)) => {
                let bad = || format!("--augment: bad scale '{v}' (expected LO-HI, e.g. 0.7-1.4)");
                let (lo, hi) = v.split_once('-').with_context(bad)?;
                let (lo, hi): (f32, f32) = (lo.parse().with_context(bad)?, hi.parse().with_context(bad)?);
                anyhow::ensure!(0.1 <= lo && lo <= hi && hi <= 10.0, "{}", bad());
                a.scale = (lo, hi);
            }
            _ => anyhow::bail!("--augment: unknown '{part}' (expected default, none, hflip, dihedral, shift=F, scale=LO-HI, erase=P, cutmix=P)"),
        }
    }
    Ok(Some(a))
}

/// The run's settings: the arguments given, and for the rest the engine's defaults for this task and
/// `train_images` ([`TrainConfig::data_defaults`]).
fn train_config(objective: Objective, a: &RunArgs, train_images: usize, init: Option<PathBuf>, resume: Option<PathBuf>) -> anyhow::Result<TrainConfig> {
    let d = TrainConfig::default();
    let by_data = TrainConfig::data_defaults(objective, train_images);
    if let Some(t) = a.pseudo_labels {
        anyhow::ensure!((0.0..=1.0).contains(&t), "--pseudo-labels: the confidence {t} is not in 0..1");
    }
    Ok(TrainConfig {
        objective,
        preset: a.preset.clone(),
        image_size: a.image_size,
        steps: a.steps,
        epochs: a.epochs,
        minutes: a.minutes,
        batch_size: a.batch_size.unwrap_or(by_data.batch_size),
        lr: a.lr.unwrap_or(by_data.lr),
        dense_aux: a.dense_aux,
        object_order: a.object_order,
        noise_boxes: match a.noise_boxes.as_str() {
            "auto" => None,
            other => Some(other.parse().map_err(anyhow::Error::msg).context("--noise-boxes")?),
        },
        label_smoothing: a.label_smoothing,
        class_aux: a.class_aux.unwrap_or(by_data.class_aux),
        generative_aux: a.generative_aux.unwrap_or(0.0),
        pseudo_labels: a.pseudo_labels,
        layer_decay: a.layer_decay,
        reinit_blocks: a.reinit_blocks,
        model: ModelOverrides { dim: a.dim, n_layers: a.layers, n_heads: a.heads, mlp_ratio: a.mlp_ratio, patch_size: a.patch_size, local_mixing: a.local_mixing, local_mixing_full: a.local_mixing_full, stem_channels: a.stem_channels, pixel_head_blocks: a.pixel_head_blocks, pretrain_target: a.pretrain_target, pretrain_mask_ratio: a.pretrain_mask_ratio, pretrain_feature_weight: a.pretrain_feature_weight },
        grad_accum: a.grad_accum,
        ema: a.ema,
        early_stop_patience: a.patience,
        seed: a.seed,
        init,
        resume,
        out: a.out.clone(),
        eval_every: a.eval_every.unwrap_or(0),
        use_gpu: a.gpu,
        augment: parse_augment(&a.augment)?,
        ..d
    })
}

/// A line above the progress bar, or on stderr when there is no bar (not a terminal, or --json).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// Runs training on the worker thread, drawing a progress bar from its events (Ctrl-C stops the process; the last
/// periodic checkpoint stays valid because every write is atomic).
fn drive(project: Project, config: TrainConfig, json_out: bool) -> anyhow::Result<()> {
    let train_images = project.indices_in(crate::data::project::Split::Train).len();
    let handle = start_training(project, config.clone());
    let bar = if json_out { ProgressBar::hidden() } else { ProgressBar::new(1) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    let mut summary = json!({ "train_images": train_images });
    let mut last_eval = serde_json::Value::Null;
    let mut last_loss = f32::NAN;
    let mut ips = 0f32;
    let mut result = Ok(());
    for ev in handle.events.iter() {
        match ev {
            Event::Started { total_steps, device, parameters, image_size, augment, mirror_asymmetry } => {
                bar.set_length(total_steps);
                let (millions, augmentation) = (parameters as f64 / 1e6, augment.describe());
                say(&bar, format!("training on {device}, {millions:.2}M parameters, {image_size} px input; augmentation: {augmentation}"));
                if let Some(a) = mirror_asymmetry {
                    say(&bar, format!("images {}; --augment chooses by hand", describe_mirror_check(a)));
                    summary["mirror_asymmetry"] = json!(a);
                }
                summary["augment"] = json!(augment);
                summary["device"] = json!(device);
                summary["parameters"] = json!(parameters);
                summary["image_size"] = json!(image_size);
            }
            Event::Step(s) => {
                bar.set_length(s.total_steps);
                bar.set_position(s.step);
                let losses: Vec<String> = s.losses.iter().map(|(n, l)| format!("{n} {l:.4}")).collect();
                last_loss = s.losses.first().map_or(f32::NAN, |l| l.1);
                ips = 0.9 * ips + 0.1 * s.images_per_sec;
                if s.step <= 1 {
                    ips = s.images_per_sec;
                }
                bar.set_message(format!("loss {}  lr {:.1e}  {:.0} img/s", losses.join(" "), s.lr, ips));
                summary["steps"] = json!(s.step);
                summary["elapsed_s"] = json!(s.elapsed_s);
                summary["images_per_sec"] = json!(ips);
            }
            Event::Eval(e) => {
                // Pretraining's metric is its val loss: print it once.
                let metric = if e.metric_name == "val_loss" { String::new() } else { format!("val {} {:.4}  ", e.metric_name, e.metric) };
                say(&bar, format!(
                    "step {:>6}  epoch {:>6.2}  {metric}{}",
                    e.step,
                    e.epoch,
                    e.val_losses.iter().map(|(n, l)| format!("val_loss[{n}] {l:.4}")).collect::<Vec<_>>().join(" ")
                ));
                last_eval = json!({"step": e.step, e.metric_name.clone(): e.metric, "val_losses": e.val_losses});
            }
            Event::Finished { checkpoint, reason } => {
                bar.finish_and_clear();
                summary["checkpoint"] = json!(checkpoint);
                summary["reason"] = json!(reason);
                if !json_out {
                    println!("finished ({reason}); checkpoint written to {}", checkpoint.display());
                }
            }
            Event::Error { message } => {
                bar.abandon();
                result = Err(anyhow::anyhow!(message));
            }
            Event::CheckpointWritten { .. } | Event::Samples(_) | Event::Paused | Event::Resumed => {}
        }
    }
    if let Some(t) = handle.thread {
        let _ = t.join();
    }
    result?;
    if let Some(st) = crate::train::checkpoint::read_meta(&config.out).ok().and_then(|m| m.train) {
        summary["best_step"] = json!(st.best_step);
        summary["steps"] = json!(st.step);
    }
    summary["final_loss"] = json!(last_loss);
    summary["last_eval"] = last_eval;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
}

pub fn pretrain(a: PretrainArgs) -> anyhow::Result<()> {
    let project = open_data(&a.data)?;
    let train_images = project.indices_in(crate::data::project::Split::Train).len();
    let config = train_config(Objective::Pretrain, &a.run, train_images, None, None)?;
    drive(project, config, a.run.json)
}

pub fn train(a: TrainArgs) -> anyhow::Result<()> {
    let mut project = open_data(&a.data)?;
    let task = a.task.unwrap_or(project.task);
    let objective = Objective::from(task);
    let fine_tuning = a.init.is_some();
    if let Some(n) = a.labels_per_class {
        // The generative loss learns from unlabelled images too, so they stay where it may use them.
        let may_use_unlabelled = match a.run.generative_aux {
            Some(w) => w > 0.0,
            None => default_generative_aux(objective, fine_tuning, 0, usize::MAX) > 0.0,
        } || a.run.pseudo_labels.is_some();
        let beyond = if may_use_unlabelled { Beyond::Unlabel } else { Beyond::Drop };
        let report = crate::data::subset::keep_labels_per_class(&mut project, task, n, a.run.seed, beyond)
            .with_context(|| format!("--labels-per-class {n}"))?;
        eprintln!("{}", report.summary());
    }
    for w in crate::data::readiness::check(&project, task) {
        eprintln!("warning: {w}");
    }
    if !fine_tuning {
        if let Some(advice) = crate::data::readiness::pretraining_advice(&project, task) {
            eprintln!("note: {advice}");
        }
    }
    // The data-sized defaults count the images that teach the task: the labelled ones, and the unlabelled ones
    // when the generative loss learns from them.
    let (labelled, unlabelled) = project.labelled_and_unlabelled(task, crate::data::project::Split::Train);
    let generative_aux = a.run.generative_aux.unwrap_or_else(|| default_generative_aux(objective, fine_tuning, labelled, unlabelled));
    let train_images = images_learned_from(labelled, unlabelled, generative_aux > 0.0 || a.run.pseudo_labels.is_some());
    let mut config = train_config(objective, &a.run, train_images, a.init.clone(), a.resume.clone())?;
    config.init_weights = a.init_weights;
    config.generative_aux = generative_aux;
    if config.generative_aux > 0.0 && a.run.generative_aux.is_none() {
        eprintln!("{unlabelled} unlabelled training images: fine-tuning keeps the generative loss on them (--generative-aux 1; 0 turns it off)");
    }
    if let (Some(t), Objective::Classify) = (config.pseudo_labels, objective) {
        eprintln!("pseudo-labels at confidence {t} on all {} training images ({unlabelled} unlabelled)", labelled + unlabelled);
    }
    drive(project, config, a.run.json)
}

pub fn predict(a: PredictArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!a.images.is_empty(), "give at least one image to predict");
    let predictor = Predictor::load_weights(&a.checkpoint, a.weights)?;
    super::eval_cmds::note_if_tta_changes_nothing(&predictor, a.flip_tta);
    let opts = PredictOptions {
        threshold: a.threshold,
        top_p: a.top_p,
        max_objects: a.max_objects,
        min_objects: a.min_objects,
        nms_iou: (a.nms_iou > 0.0).then_some(a.nms_iou),
        flip_tta: a.flip_tta,
    };
    let names = predictor.class_names().to_vec();
    let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| format!("class {c}"));
    let mut out = vec![];
    let mut failed = 0;
    for path in &a.images {
        let img = match crate::data::decode::load_image(&crate::data::project::ImageSource::File(path.clone())) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("skipped {e}");
                failed += 1;
                continue;
            }
        };
        let p = predictor.predict(&img, &opts).with_context(|| format!("predicting {}", path.display()))?;
        match predictor.task() {
            Task::Classify => {
                let top = p.top_k(a.top);
                if a.json {
                    out.push(json!({"image": path, "classes": top.iter().map(|(c, pr)| json!({"class": name(*c), "probability": pr})).collect::<Vec<_>>(), "probs": p.probs}));
                } else {
                    let s: Vec<String> = top.iter().map(|(c, pr)| format!("{} {:.1}%", name(*c), pr * 100.0)).collect();
                    println!("{}: {}", path.display(), s.join(", "));
                }
            }
            Task::Detect => {
                if a.json {
                    out.push(json!({"image": path, "boxes": p.detections.iter().map(|d| json!({
                        "class": name(d.bbox.class), "score": d.score,
                        "xmin": d.bbox.xmin, "ymin": d.bbox.ymin, "xmax": d.bbox.xmax, "ymax": d.bbox.ymax})).collect::<Vec<_>>()}));
                } else {
                    println!("{}: {} objects", path.display(), p.detections.len());
                    for d in &p.detections {
                        let b = d.bbox;
                        println!("  {:<12} {:.2}  [{:.1}, {:.1}, {:.1}, {:.1}]", name(b.class), d.score, b.xmin, b.ymin, b.xmax, b.ymax);
                    }
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    anyhow::ensure!(failed < a.images.len(), "no image could be read");
    Ok(())
}
