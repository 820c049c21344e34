//! The training worker: a background thread driven by crossbeam-channel messages.
//! Both the CLI and the GUI use exactly this API: send [`Command`]s, receive [`Event`]s. The caller never blocks
//! on training; a panic or NaN inside the worker arrives as [`Event::Error`] and the caller carries on.
//!
//! PUBLIC API CONTRACT (the UI is written against it): types and `start_training` may gain fields/variants,
//! but existing ones keep their names and meaning.

use std::path::PathBuf;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use crate::data::project::{BBox, Project, Task};
use crate::data::readiness::unlabelled_images_worth_learning_from;

/// Which objective a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Generative pretraining: predict the next patch's normalised pixels (labels ignored).
    Pretrain,
    Classify,
    Detect,
}

impl From<Task> for Objective {
    fn from(t: Task) -> Self {
        match t {
            Task::Classify => Objective::Classify,
            Task::Detect => Objective::Detect,
        }
    }
}

/// Everything a training run needs. `Default` gives the settings a new user gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub objective: Objective,
    /// Model size preset: "tiny", "small", "base".
    pub preset: String,
    /// Square model input size in pixels (images are resized / letterboxed to it). `None` = the preset's default.
    pub image_size: Option<usize>,
    /// Stop after this many optimizer steps / epochs / minutes, whichever comes first. All `None` = preset default.
    pub steps: Option<u64>,
    pub epochs: Option<f32>,
    pub minutes: Option<f32>,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub grad_clip: Option<f64>,
    pub grad_accum: usize,
    /// EMA decay of the weights (e.g. 0.999); `None` = off.
    pub ema: Option<f64>,
    /// Stop when the validation metric has not improved for this many evaluations; `None` = off.
    pub early_stop_patience: Option<u32>,
    pub seed: u64,
    /// Start from these weights (e.g. a pretrained checkpoint); the vocabulary grows to the project's classes.
    pub init: Option<PathBuf>,
    /// Which of the `init` checkpoint's weights to start from (its best val evaluation's, by default).
    #[serde(default)]
    pub init_weights: crate::train::checkpoint::WeightsChoice,
    /// Continue this checkpoint's run exactly where it stopped.
    pub resume: Option<PathBuf>,
    /// Where the checkpoint is written (a directory: weights.safetensors + checkpoint.json).
    pub out: PathBuf,
    /// Evaluate on the val split every this many steps (0 = once per epoch).
    pub eval_every: u64,
    /// Use the CUDA device if this build has it and one is present.
    pub use_gpu: bool,
    /// Data augmentation; `None` = the objective's default (`train::run::default_augment`).
    #[serde(default)]
    pub augment: Option<crate::train::data::Augment>,
    /// Detection only: weight of the dense auxiliary loss on the image patches
    /// ([`crate::model::objectives::dense_aux_loss`]); 0 = off (plain Pix2Seq).
    #[serde(default)]
    pub dense_aux: f64,
    /// Detection only: the order objects are listed in during training.
    #[serde(default)]
    pub object_order: ObjectOrder,
    /// Detection only: fake boxes after the real ones (Pix2Seq's sequence augmentation); `None` = by the data
    /// (see [`crowded_sequences`]).
    #[serde(default)]
    pub noise_boxes: Option<crate::model::objectives::NoiseBoxes>,
    /// Classification only: label smoothing of the cross-entropy target (0 = off).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Classification only: weight of the patch-level auxiliary loss
    /// ([`crate::model::objectives::classify_loss_with_aux`]); 0 = off.
    #[serde(default)]
    pub class_aux: f64,
    /// Classification and detection: weight of the generative (next-patch pixel) loss on every training image,
    /// labelled or not, added to the task's loss while fine-tuning; 0 = off. With few labels and many images, the
    /// pretraining objective keeps teaching the backbone from the images the labels do not cover.
    #[serde(default)]
    pub generative_aux: f64,
    /// Classification only: FixMatch-style pseudo-labels on every training image, labelled or not. Each step the
    /// model labels a lightly augmented view (mirror, shift) of a batch of training images; where it is at least
    /// this sure, a strongly augmented view (erasing as well) learns that label. `None` = off.
    #[serde(default)]
    pub pseudo_labels: Option<f64>,
    /// Layer-wise learning-rate decay (see [`crate::train::optim::layer_lr_scale`]); `None` = 1, the same rate
    /// everywhere.
    #[serde(default)]
    pub layer_decay: Option<f64>,
    /// Fine-tuning with `init` only: the last this many transformer blocks start from a fresh init instead of the
    /// checkpoint's weights. Measured on CIFAR-10 at 100 labels per class (README): no gain, so 0 by default.
    #[serde(default)]
    pub reinit_blocks: usize,
    /// Changes to the preset's shape for a model trained from scratch (ignored with `init`/`resume`, whose
    /// checkpoint fixes the shape).
    #[serde(default)]
    pub model: ModelOverrides,
}

/// The order a detection training sequence lists its objects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectOrder {
    /// By the data: raster for crowded images, else curriculum (see [`crowded_sequences`]).
    #[default]
    Auto,
    /// Raster order first, then more and more random ([`ObjectOrder::random_probability`]).
    Curriculum,
    /// Random order throughout (Pix2Seq).
    Random,
    /// Top to bottom, then left to right, throughout: one unambiguous answer per image.
    Raster,
}

impl ObjectOrder {
    /// Probability that a sequence lists its objects in random order at `progress` (0..1) through the run.
    /// Curriculum: a cold model cannot localise anything, and with random order the first coordinate's target is a
    /// mixture over every object; raster order gives one answer per image and gets the model looking at the image
    /// sooner. So raster order for the first fifth, then more and more random, fully random for the last 30 %.
    pub fn random_probability(self, progress: f64) -> f64 {
        match self {
            ObjectOrder::Auto | ObjectOrder::Curriculum => ((progress - 0.2) / 0.5).clamp(0.0, 1.0),
            ObjectOrder::Random => 1.0,
            ObjectOrder::Raster => 0.0,
        }
    }
}

impl std::str::FromStr for ObjectOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(ObjectOrder::Auto),
            "curriculum" => Ok(ObjectOrder::Curriculum),
            "random" => Ok(ObjectOrder::Random),
            "raster" => Ok(ObjectOrder::Raster),
            other => Err(format!("unknown object order '{other}' (expected auto, curriculum, random or raster)")),
        }
    }
}

/// Detection data this crowded (the most objects in one training image) trains with raster order and matched
/// noise boxes when left to `auto`. BCCD (up to 28 cells per image): at the same 1 100 steps, test mAP@0.5 0.067
/// with raster order and matched noise vs 0.006 with the curriculum and filled noise (see README, Quality);
/// sparse data (the shapes demo, up to 4 objects) keeps the curriculum and filled noise its tests were tuned with.
pub const CROWDED_OBJECTS: usize = 10;

/// The object order and noise boxes a detection run uses: the settings, with `auto` decided by the most objects
/// in one training image (`most`).
pub fn crowded_sequences(order: ObjectOrder, noise: Option<crate::model::objectives::NoiseBoxes>, most: usize) -> (ObjectOrder, crate::model::objectives::NoiseBoxes) {
    use crate::model::objectives::NoiseBoxes;
    let crowded = most > CROWDED_OBJECTS;
    let order = match order {
        ObjectOrder::Auto if crowded => ObjectOrder::Raster,
        ObjectOrder::Auto => ObjectOrder::Curriculum,
        other => other,
    };
    let noise = noise.unwrap_or(if crowded { NoiseBoxes::Match } else { NoiseBoxes::Fill });
    (order, noise)
}

/// Filters in the convolutional patch stem of a new classification or pretraining model
/// ([`ModelOverrides::with_defaults_for`]).
pub const DEFAULT_STEM_CHANNELS: usize = 16;

/// Shape changes on top of a preset (each `None` keeps the preset's value).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelOverrides {
    pub dim: Option<usize>,
    pub n_layers: Option<usize>,
    pub n_heads: Option<usize>,
    pub mlp_ratio: Option<usize>,
    pub patch_size: Option<usize>,
    pub local_mixing: Option<bool>,
    #[serde(default)]
    pub local_mixing_full: Option<bool>,
    #[serde(default)]
    pub stem_channels: Option<usize>,
    #[serde(default)]
    pub pixel_head_blocks: Option<usize>,
    #[serde(default)]
    pub pretrain_target: Option<crate::model::config::PretrainTarget>,
    #[serde(default)]
    pub pretrain_mask_ratio: Option<f64>,
    #[serde(default)]
    pub pretrain_feature_weight: Option<f64>,
}

impl ModelOverrides {
    pub fn is_empty(&self) -> bool {
        *self == ModelOverrides::default()
    }

    /// These overrides, with the shape a new model for `objective` gets where they say nothing. Classification,
    /// and generative pretraining (whose backbone is fine-tuned for classification as often as for detection), add
    /// the convolutional stem and local mixing's four following taps: with both, Fashion-MNIST (defaults
    /// otherwise, 15 min, 1 thread, seed 1) scores 0.880 test accuracy against 0.876 without, and the stem helped
    /// CIFAR-10 too (session 12). Detection keeps the preset's shape: the stem did not help card detection.
    pub fn with_defaults_for(mut self, objective: Objective) -> Self {
        if objective != Objective::Detect {
            self.stem_channels.get_or_insert(DEFAULT_STEM_CHANNELS);
            self.local_mixing_full.get_or_insert(true);
        }
        self
    }

    /// The preset with these changes; the result is validated by the caller (`ModelConfig::validate`).
    pub fn apply(&self, mut cfg: crate::model::config::ModelConfig) -> crate::model::config::ModelConfig {
        cfg.dim = self.dim.unwrap_or(cfg.dim);
        cfg.n_layers = self.n_layers.unwrap_or(cfg.n_layers);
        cfg.n_heads = self.n_heads.unwrap_or(cfg.n_heads);
        cfg.mlp_ratio = self.mlp_ratio.unwrap_or(cfg.mlp_ratio);
        cfg.local_mixing = self.local_mixing.unwrap_or(cfg.local_mixing);
        cfg.local_mixing_full = cfg.local_mixing && self.local_mixing_full.unwrap_or(cfg.local_mixing_full);
        cfg.stem_channels = self.stem_channels.unwrap_or(cfg.stem_channels);
        cfg.pixel_head_blocks = self.pixel_head_blocks.unwrap_or(cfg.pixel_head_blocks);
        cfg.pretrain_target = self.pretrain_target.unwrap_or(cfg.pretrain_target);
        cfg.pretrain_mask_ratio = self.pretrain_mask_ratio.unwrap_or(cfg.pretrain_mask_ratio);
        cfg.pretrain_feature_weight = self.pretrain_feature_weight.unwrap_or(cfg.pretrain_feature_weight);
        if let Some(p) = self.patch_size {
            cfg.patch_size = p;
            cfg.image_size = (cfg.image_size / p.max(1)).max(2) * p;
        }
        cfg
    }
}

impl TrainConfig {
    /// The peak learning rate a run gets unless told otherwise. Detection with its dense auxiliary loss learns
    /// fastest at 2e-3 (shapes demo, tiny, 4.5 min: test mAP@0.5 0.73–0.78 over 3 seeds vs 0.59 at 1e-3 and 0.68
    /// at 3e-3); classification and pretraining at 1e-3 (3e-3 underfits shapes classification).
    pub fn default_lr(objective: Objective) -> f64 {
        match objective {
            Objective::Detect => 2e-3,
            Objective::Classify | Objective::Pretrain => 1e-3,
        }
    }
}

/// Classification sets with at least this many training images train by default with the recipe measured on
/// the two large sets in `../shared/data` (see [`TrainConfig::data_defaults`]).
pub const CLASSIFY_LARGE_SET: usize = 5_000;

/// The settings a run leaves to the engine that depend on the task and on how many training images there are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataDefaults {
    pub batch_size: usize,
    pub lr: f64,
    /// Weight of classification's patch-level auxiliary loss.
    pub class_aux: f64,
}

impl TrainConfig {
    /// Defaults by task and data size. Large classification sets ([`CLASSIFY_LARGE_SET`]) learn more per minute
    /// with batches of 64 at lr 2e-3 and the patch-level class loss (and random erasing, see
    /// [`crate::train::run::default_augment`]): Fashion-MNIST, tiny, 15 min: 0.880 with batch 16 / lr 1e-3 and
    /// 0.906 with the recipe (flips included); CIFAR-10 subset, 30 min: 0.623 and 0.659. Small sets keep
    /// batches of 16, whose more frequent steps learn more per image seen (the shapes demo).
    pub fn data_defaults(objective: Objective, train_images: usize) -> DataDefaults {
        let base = DataDefaults { batch_size: TrainConfig::default().batch_size, lr: TrainConfig::default_lr(objective), class_aux: 0.0 };
        match objective {
            Objective::Classify if train_images >= CLASSIFY_LARGE_SET => DataDefaults { batch_size: 64, lr: 2e-3, class_aux: 1.0 },
            _ => base,
        }
    }
}

/// The generative auxiliary loss's weight unless set by hand: 1 when a classifier is fine-tuned from trained weights
/// and its project holds enough unlabelled training images
/// ([`crate::data::readiness::unlabelled_images_worth_learning_from`]), else 0. CIFAR-10 subset, 100 labels per
/// class, from a 30-minute pretraining, 3 seeds: 750 fine-tuning steps with it score 1.5 points above 1500 steps
/// without, in the same time. Detection has not been measured with it and keeps 0.
pub fn default_generative_aux(objective: Objective, fine_tuning: bool, labelled: usize, unlabelled: usize) -> f64 {
    if objective == Objective::Classify && fine_tuning && unlabelled_images_worth_learning_from(labelled, unlabelled) {
        1.0
    } else {
        0.0
    }
}

/// How many training images a fine-tuning run's data-sized defaults ([`TrainConfig::data_defaults`],
/// [`crate::train::run::default_augment`]) count: the labelled ones, plus the unlabelled ones when the generative
/// loss or pseudo-labels learn from them too (`uses_unlabelled`). A pretrained classifier fine-tuned on 1000
/// CIFAR-10 labels among 8977 images with the generative loss gains most from the large-set recipe (batches of 64,
/// erasing, the patch-level class loss).
pub fn images_learned_from(labelled: usize, unlabelled: usize, uses_unlabelled: bool) -> usize {
    if uses_unlabelled {
        labelled + unlabelled
    } else {
        labelled
    }
}

/// Default weight of detection's dense auxiliary loss: 1 to 3 measured alike (test mAP@0.5 0.73–0.78 at lr 2e-3).
pub const DEFAULT_DENSE_AUX: f64 = 1.0;

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            objective: Objective::Detect,
            preset: "tiny".into(),
            image_size: None,
            steps: None,
            epochs: None,
            minutes: None,
            // Small data: more, smaller steps learn more per image seen than fewer large ones.
            batch_size: 16,
            lr: 1e-3,
            warmup_steps: 100,
            weight_decay: 0.05,
            grad_clip: Some(1.0),
            grad_accum: 1,
            ema: None,
            early_stop_patience: None,
            seed: 0,
            init: None,
            init_weights: Default::default(),
            resume: None,
            out: PathBuf::from("tessera.ckpt"),
            eval_every: 0,
            use_gpu: false,
            augment: None,
            dense_aux: DEFAULT_DENSE_AUX,
            object_order: ObjectOrder::Auto,
            noise_boxes: None,
            label_smoothing: 0.0,
            class_aux: 0.0,
            generative_aux: 0.0,
            pseudo_labels: None,
            layer_decay: None,
            reinit_blocks: 0,
            model: ModelOverrides::default(),
        }
    }
}

/// Commands from the caller to the worker.
#[derive(Debug, Clone)]
pub enum Command {
    Pause,
    Resume,
    /// Stop after the current step, write a checkpoint, then send `Finished`.
    Stop,
    /// Write a checkpoint now and keep training.
    SaveNow,
}

/// One optimizer step's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepStats {
    pub step: u64,
    pub total_steps: u64,
    pub epoch: f32,
    /// Loss per objective, e.g. [("detect", 1.23)].
    pub losses: Vec<(String, f32)>,
    pub lr: f64,
    pub images_per_sec: f32,
    pub elapsed_s: f32,
    pub eta_s: f32,
}

/// Validation figures, sent after each evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalStats {
    pub step: u64,
    pub epoch: f32,
    /// Validation loss per objective.
    pub val_losses: Vec<(String, f32)>,
    /// Name of the metric ("accuracy", "map50", or "val_loss" for pretraining) and its value.
    pub metric_name: String,
    pub metric: f32,
}

/// A prediction on one validation image, for the live sample strip.
#[derive(Debug, Clone)]
pub struct SamplePrediction {
    /// Index into `Project::images`.
    pub image_index: usize,
    /// Classification: (class, probability) best first. Empty for detection.
    pub top_classes: Vec<(usize, f32)>,
    /// Detection: boxes in original image pixels with scores.
    pub boxes: Vec<(BBox, f32)>,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// `augment`: the augmentation this stage trains with (the task's default unless the config set one).
    /// `mirror_asymmetry`: where the default decided whether a classifier mirrors its images, the measure it went by
    /// ([`crate::train::run::describe_mirror_check`] says it in words). `image_size`: the model's input side in
    /// pixels (chosen from the data unless the config set one).
    Started {
        total_steps: u64,
        device: String,
        parameters: usize,
        image_size: usize,
        augment: crate::train::data::Augment,
        mirror_asymmetry: Option<f64>,
    },
    Step(StepStats),
    Eval(EvalStats),
    Samples(Vec<SamplePrediction>),
    CheckpointWritten { path: PathBuf, step: u64 },
    Paused,
    Resumed,
    /// The run ended (completed, stopped, early-stopped); `checkpoint` holds the final weights.
    Finished { checkpoint: PathBuf, reason: String },
    /// Something went wrong (bad image, NaN loss, panic); the worker has stopped, the caller is fine.
    Error { message: String },
}

/// The caller's side of a running worker.
pub struct TrainHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    pub thread: Option<JoinHandle<()>>,
}

impl TrainHandle {
    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }
    /// True once the worker thread has exited.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().map_or(true, |t| t.is_finished())
    }
}

/// Starts training `project` with `config` on a new thread and returns at once.
pub fn start_training(project: Project, config: TrainConfig) -> TrainHandle {
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("tessera-train".into())
        .spawn(move || {
            let ev = ev_tx.clone();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                super::run::run_training(project, config, cmd_rx, ev_tx)
            }));
            let message = match result {
                Ok(Ok(())) => return,
                Ok(Err(e)) => format!("{e:#}"),
                Err(panic) => format!(
                    "training crashed: {}",
                    panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("unknown panic")
                ),
            };
            let _ = ev.send(Event::Error { message });
        })
        .expect("spawning the training thread");
    TrainHandle { commands: cmd_tx, events: ev_rx, thread: Some(thread) }
}
