//! Everything the app knows, and every change to it: panels read [`AppState`] and emit [`Message`]s; the app
//! hands them to [`AppState::apply`]. Nothing in here draws.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::data::project::{BBox, ClassInfo, ImageSource, Project, Split, Task};
use crate::eval::EvalReport;
use crate::model::predictor::AttentionMap;
use crate::model::{PredictOptions, Prediction, Predictor};
use crate::train::data::Augment;
use crate::train::worker::{default_generative_aux, images_learned_from, EvalStats, SamplePrediction, StepStats};
use crate::train::{Command, Event, Objective, TrainConfig, TrainHandle};

use super::engine;
use super::images::ImageCache;
use super::jobs::{JobResult, Jobs, Suggestion};

/// The views the left side panel switches between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum View {
    #[default]
    Project,
    Label,
    Train,
    Predict,
    Evaluate,
    Inside,
}

impl View {
    pub const ALL: [View; 6] = [View::Project, View::Label, View::Train, View::Predict, View::Evaluate, View::Inside];
    pub fn title(self) -> &'static str {
        match self {
            View::Project => "Project",
            View::Label => "Label",
            View::Train => "Train",
            View::Predict => "Predict",
            View::Evaluate => "Evaluate",
            View::Inside => "Look inside",
        }
    }
    pub fn icon(self) -> &'static str {
        match self {
            View::Project => "☰",
            View::Label => "✏",
            View::Train => "⟳",
            View::Predict => "▶",
            View::Evaluate => "✔",
            View::Inside => "◎",
        }
    }
    pub fn from_name(name: &str) -> Option<View> {
        match name.to_ascii_lowercase().as_str() {
            "project" => Some(View::Project),
            "label" => Some(View::Label),
            "train" => Some(View::Train),
            "predict" => Some(View::Predict),
            "evaluate" | "eval" => Some(View::Evaluate),
            "inside" | "look-inside" | "look_inside" => Some(View::Inside),
            _ => None,
        }
    }
}

/// Training settings as the Train view edits them; turned into engine [`TrainConfig`]s at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    pub preset: String,
    /// Model input size; `None` lets the engine pick from the images.
    pub image_size: Option<usize>,
    pub epochs: f32,
    /// Stop after this many minutes even if the epochs are not done.
    pub time_limit: bool,
    pub minutes: f32,
    /// Use the engine's batch size for the task and the data's size ([`TrainConfig::data_defaults`]) instead of
    /// `batch_size`.
    pub batch_auto: bool,
    pub batch_size: usize,
    /// Use the engine's learning rate for the task and the data's size ([`TrainConfig::data_defaults`]) instead
    /// of `lr`.
    pub lr_auto: bool,
    pub lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    /// Data augmentation while fine-tuning; `None` = the engine's choice for the task and the data's size
    /// ([`crate::train::run::default_augment`]). Pretraining always uses its own default.
    pub augment: Option<Augment>,
    pub ema: bool,
    pub early_stop: bool,
    pub patience: u32,
    /// Run generative pretraining on all the project's images (unlabelled included) before fine-tuning.
    pub pretrain: bool,
    pub pretrain_epochs: f32,
    /// Stop pretraining after `pretrain_minutes` even if its epochs are not done.
    pub pretrain_time_limit: bool,
    pub pretrain_minutes: f32,
    pub pretrain_lr: f64,
    /// Start fine-tuning from the current model instead of from scratch.
    pub init_from_current: bool,
    /// Use the engine's weight for the generative loss while fine-tuning ([`default_generative_aux`]) instead of
    /// `generative_aux`.
    pub generative_auto: bool,
    /// Weight of the generative (next patch's pixels) loss kept on every training image while fine-tuning.
    pub generative_aux: f64,
    pub use_gpu: bool,
    pub seed: u64,
}

impl TrainSettings {
    /// The fine-tuning learning rate a run on a `task` project with `train_images` uses: the engine's when
    /// `lr_auto`.
    pub fn effective_lr(&self, task: Task, train_images: usize) -> f64 {
        if self.lr_auto {
            TrainConfig::data_defaults(Objective::from(task), train_images).lr
        } else {
            self.lr
        }
    }

    /// Whether the fine-tuning stage starts from trained weights: pretraining's, or the current model's when
    /// `has_model`.
    pub fn fine_tunes(&self, has_model: bool) -> bool {
        self.pretrain || (self.init_from_current && has_model)
    }

    /// The generative loss weight fine-tuning uses on a project with `labelled` and `unlabelled` training images:
    /// the engine's when `generative_auto`.
    pub fn effective_generative_aux(&self, task: Task, has_model: bool, labelled: usize, unlabelled: usize) -> f64 {
        if self.generative_auto {
            default_generative_aux(Objective::from(task), self.fine_tunes(has_model), labelled, unlabelled)
        } else {
            self.generative_aux
        }
    }

    /// The batch size a stage with `objective` on `train_images` uses: the engine's when `batch_auto`.
    pub fn effective_batch_size(&self, objective: Objective, train_images: usize) -> usize {
        if self.batch_auto {
            TrainConfig::data_defaults(objective, train_images).batch_size
        } else {
            self.batch_size.max(1)
        }
    }
}

impl Default for TrainSettings {
    fn default() -> Self {
        let engine = TrainConfig::default();
        TrainSettings {
            preset: engine.preset,
            image_size: None,
            // Up to 100 epochs but at most 5 minutes: long enough for a good detector on a small project on a
            // laptop's CPU (the shapes demo: test mAP@0.5 ~0.85), short enough to try things.
            epochs: 100.0,
            time_limit: true,
            minutes: 5.0,
            batch_auto: true,
            batch_size: engine.batch_size,
            lr_auto: true,
            lr: engine.lr,
            warmup_steps: engine.warmup_steps,
            weight_decay: engine.weight_decay,
            augment: None,
            ema: false,
            early_stop: false,
            patience: 5,
            pretrain: false,
            // Pretraining pays off with time: CIFAR-10 subset at 100 labels per class, one core, gained +2.3 points
            // after 15 minutes and +3.1 after 24 (session 8's fine-tuning), +8 after 30 (today's); 60 gave no more.
            // 50 epochs cover a small project; the time limit caps a large one.
            pretrain_epochs: 50.0,
            pretrain_time_limit: true,
            pretrain_minutes: 20.0,
            pretrain_lr: engine.lr,
            init_from_current: false,
            generative_auto: true,
            generative_aux: 1.0,
            use_gpu: true,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ThemeChoice {
    #[default]
    System,
    Light,
    Dark,
}

/// What persists between sessions (settings.json in the platform config directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub recent_projects: Vec<PathBuf>,
    pub last_project: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
    pub train: TrainSettings,
    pub threshold: f32,
    /// Test-time augmentation over flips (`PredictOptions::flip_tta`): Predict, Evaluate and suggestions.
    pub flip_tta: bool,
    pub theme: ThemeChoice,
    pub autosave: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            recent_projects: Vec::new(),
            last_project: None,
            last_checkpoint: None,
            train: TrainSettings::default(),
            threshold: 0.35,
            flip_tta: false,
            theme: ThemeChoice::System,
            autosave: true,
        }
    }
}

/// Where the app keeps its own files.
#[derive(Debug, Clone)]
pub struct AppPaths {
    /// settings.json lives here.
    pub config_dir: PathBuf,
    /// The first-run demo project is created here.
    pub data_dir: PathBuf,
}

impl AppPaths {
    /// `TESSERA_CONFIG_DIR` / `TESSERA_DATA_DIR` override the platform directories (tests, screenshots).
    pub fn from_env() -> AppPaths {
        let dirs = directories::ProjectDirs::from("org", "Tessera", "Tessera");
        let fallback = std::env::temp_dir().join("tessera");
        let config_dir = std::env::var_os("TESSERA_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs.as_ref().map(|d| d.config_dir().to_path_buf()))
            .unwrap_or_else(|| fallback.clone());
        let data_dir = std::env::var_os("TESSERA_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs.as_ref().map(|d| d.data_dir().to_path_buf()))
            .unwrap_or(fallback);
        AppPaths { config_dir, data_dir }
    }
    pub fn settings_file(&self) -> PathBuf {
        self.config_dir.join("settings.json")
    }
    pub fn demo_dir(&self) -> PathBuf {
        self.data_dir.join("demo-project")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeLevel {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub id: u64,
    pub level: NoticeLevel,
    pub text: String,
    pub at: Instant,
}

/// The labels of one image: what undo/redo swaps.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageLabels {
    pub class: Option<usize>,
    pub boxes: Vec<BBox>,
    pub labeled: bool,
}

#[derive(Debug, Clone)]
pub enum Snapshot {
    Image { index: usize, labels: ImageLabels },
    /// Class list and every image's labels (class rename/merge/delete).
    All { classes: Vec<ClassInfo>, labels: Vec<ImageLabels> },
}

#[derive(Debug, Clone)]
pub struct Edit {
    pub what: String,
    pub before: Snapshot,
    pub after: Snapshot,
}

#[derive(Debug, Default)]
pub struct UndoStack {
    pub undo: Vec<Edit>,
    pub redo: Vec<Edit>,
}

const UNDO_LIMIT: usize = 500;

#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Starting,
    Running,
    Paused,
    Stopping,
    Finished(String),
    Failed(String),
}

impl RunStatus {
    pub fn is_active(&self) -> bool {
        matches!(self, RunStatus::Starting | RunStatus::Running | RunStatus::Paused | RunStatus::Stopping)
    }
    pub fn label(&self) -> String {
        match self {
            RunStatus::Starting => "starting".into(),
            RunStatus::Running => "running".into(),
            RunStatus::Paused => "paused".into(),
            RunStatus::Stopping => "stopping".into(),
            RunStatus::Finished(r) => format!("finished ({r})"),
            RunStatus::Failed(_) => "failed".into(),
        }
    }
}

/// What is kept of a run on disk (runs/<name>/history.json), so runs can be compared later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub name: String,
    pub status: String,
    pub steps: Vec<StepStats>,
    pub evals: Vec<EvalStats>,
    pub checkpoint: Option<PathBuf>,
}

/// One training run (possibly pretraining then fine-tuning), live or loaded from history.
pub struct TrainingRun {
    pub name: String,
    pub status: RunStatus,
    /// Steps and evaluations with global step numbers (continuing across stages).
    pub steps: Vec<StepStats>,
    pub evals: Vec<EvalStats>,
    pub samples: Vec<SamplePrediction>,
    pub checkpoint: Option<PathBuf>,
    pub device: String,
    pub parameters: usize,
    /// The running stage's input side in pixels.
    pub image_size: usize,
    /// The running stage's augmentation, in words.
    pub augmentation: String,
    pub total_steps: u64,
    /// Stages still to run after the current one.
    pub pending_stages: Vec<TrainConfig>,
    pub stage_objective: Option<Objective>,
    step_offset: u64,
    stage_total: u64,
    pub handle: Option<TrainHandle>,
    pub compare: bool,
    pub out_dir: PathBuf,
    pub started: Instant,
}

impl TrainingRun {
    pub fn record(&self) -> RunRecord {
        RunRecord {
            name: self.name.clone(),
            status: self.status.label(),
            steps: self.steps.clone(),
            evals: self.evals.clone(),
            checkpoint: self.checkpoint.clone(),
        }
    }
    pub fn from_record(r: RunRecord, out_dir: PathBuf) -> TrainingRun {
        let total = r.steps.last().map(|s| s.total_steps).unwrap_or(0);
        TrainingRun {
            name: r.name,
            status: if r.status.starts_with("failed") { RunStatus::Failed(r.status) } else { RunStatus::Finished(r.status) },
            steps: r.steps,
            evals: r.evals,
            samples: Vec::new(),
            checkpoint: r.checkpoint,
            device: String::new(),
            parameters: 0,
            image_size: 0,
            augmentation: String::new(),
            total_steps: total,
            pending_stages: Vec::new(),
            stage_objective: None,
            step_offset: 0,
            stage_total: 0,
            handle: None,
            compare: false,
            out_dir,
            started: Instant::now(),
        }
    }
    /// Fraction done across all stages.
    pub fn progress(&self) -> f32 {
        let Some(last) = self.steps.last() else { return 0.0 };
        if self.total_steps == 0 {
            return 0.0;
        }
        (last.step as f32 / self.total_steps as f32).clamp(0.0, 1.0)
    }
    pub fn best_metric(&self) -> Option<(String, f32)> {
        let lower_is_better = |n: &str| n.contains("loss");
        self.evals
            .iter()
            .map(|e| (e.metric_name.clone(), e.metric))
            .reduce(|a, b| if (b.1 > a.1) != lower_is_better(&a.0) { b } else { a })
    }
}

/// An image dropped onto / opened in the Predict view.
pub struct PredictItem {
    pub id: u64,
    pub path: PathBuf,
    /// Predicted once at a low threshold; the slider filters these, it never re-runs the model.
    pub prediction: Option<Result<Prediction, String>>,
    pub requested: bool,
}

impl PredictItem {
    pub fn source(&self) -> ImageSource {
        ImageSource::File(self.path.clone())
    }
}

/// The threshold predictions are made at; anything the slider can show must be above it.
pub const PREDICT_FLOOR: f32 = 0.02;

pub enum Message {
    // Navigation and app
    ShowView(View),
    ToggleHelp,
    Notify(NoticeLevel, String),
    DismissNotice(u64),
    SetTheme(ThemeChoice),
    SetThreshold(f32),
    /// Mirror test-time augmentation for classifiers on or off; re-predicts the Predict view's images.
    SetFlipTta(bool),
    SetTrainSettings(TrainSettings),
    // Project
    OpenPath(PathBuf),
    CreateDemo,
    NewProject { dir: PathBuf, name: String, task: Task },
    SaveProject,
    SetTask(Task),
    AddClass(String),
    RenameClass(usize, String),
    MergeClass { from: usize, into: usize },
    DeleteClass(usize),
    SetClassColor(usize, [u8; 3]),
    RemoveRecent(PathBuf),
    /// Adds image files (or every image below folders) to the open project, unlabelled.
    AddImages(Vec<PathBuf>),
    // Labelling
    SelectImage(Option<usize>),
    SelectBox(Option<usize>),
    SetLabelClass(usize),
    AddBox { image: usize, bbox: BBox },
    UpdateBox { image: usize, index: usize, bbox: BBox },
    DeleteBox { image: usize, index: usize },
    SetBoxClass { image: usize, index: usize, class: usize },
    SetImageClass { image: usize, class: Option<usize> },
    SetImageSplit { image: usize, split: Split },
    MarkLabeled { image: usize, labeled: bool },
    Undo,
    Redo,
    RequestSuggestions(usize),
    AcceptSuggestions { image: usize, only: Option<usize> },
    RejectSuggestions(usize),
    // Model
    LoadCheckpoint(PathBuf),
    // Training
    StartTraining,
    TrainCommand(Command),
    ToggleCompare(usize),
    UseRunCheckpoint(usize),
    // Predict
    PredictPaths(Vec<PathBuf>),
    ClearPredictions,
    SelectPredictItem(usize),
    ExportPredictions(PathBuf),
    // Evaluate
    RunEvaluation(Split),
    // Look inside
    ComputeAttention { key: String, source: ImageSource, object: Option<usize> },
    ComputeReconstruction { key: String, source: ImageSource, keep: usize },
}

pub struct AppState {
    pub paths: AppPaths,
    pub settings: Settings,
    saved_settings: String,
    pub project: Option<Project>,
    pub view: View,
    pub show_help: bool,
    pub undo: UndoStack,
    // Labelling
    pub current_image: Option<usize>,
    pub selected_box: Option<usize>,
    /// Class given to newly drawn boxes.
    pub label_class: usize,
    pub suggestions: HashMap<usize, Suggestion>,
    pub suggesting: Option<usize>,
    /// Bumped on every change to the project, so views can cache what they derive from it.
    pub revision: u64,
    // Saving
    pub dirty: bool,
    last_edit: Instant,
    pub saving: bool,
    pub last_saved: Option<Instant>,
    pub save_error: Option<String>,
    // Model
    pub checkpoint: Option<PathBuf>,
    pub predictor: Option<Arc<Predictor>>,
    pub loading_checkpoint: Option<PathBuf>,
    pub model_error: Option<String>,
    // Training
    pub runs: Vec<TrainingRun>,
    // Predict
    pub predict_items: Vec<PredictItem>,
    pub predict_selected: usize,
    /// Bumped whenever the model or the prediction options change; prediction results carry the value they
    /// were started with, so a late result from an earlier model or setting is dropped.
    pub predict_generation: u64,
    next_item_id: u64,
    pub exporting: bool,
    pub adding_images: bool,
    // Evaluate
    pub eval_report: Option<EvalReport>,
    pub eval_running: bool,
    pub eval_split: Split,
    pub eval_error: Option<String>,
    /// (images done, images total) of the running evaluation.
    pub eval_progress: Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)>,
    // Look inside
    pub attention: HashMap<String, Result<AttentionMap, String>>,
    pub reconstructions: HashMap<(String, usize), Result<Option<egui::TextureHandle>, String>>,
    pub pending_inside: usize,
    // Busy flags and messages
    pub opening: Option<PathBuf>,
    pub notices: Vec<Notice>,
    next_notice: u64,
    pub jobs: Jobs,
    pub images: ImageCache,
    pub device: String,
    /// Frame times (ms) of the last frames, for the status bar.
    pub frame_times: std::collections::VecDeque<f32>,
    frames_seen: u64,
    /// Set when the user confirmed quitting while training: close once the run has stopped.
    pub quit_after_stop: bool,
    ctx: Option<egui::Context>,
    settings_checked: Instant,
}

impl AppState {
    pub fn new(paths: AppPaths) -> AppState {
        let settings: Settings = std::fs::read_to_string(paths.settings_file())
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let saved_settings = serde_json::to_string(&settings).unwrap_or_default();
        AppState {
            paths,
            settings,
            saved_settings,
            project: None,
            view: View::Project,
            show_help: false,
            undo: UndoStack::default(),
            current_image: None,
            selected_box: None,
            label_class: 0,
            suggestions: HashMap::new(),
            suggesting: None,
            revision: 0,
            dirty: false,
            last_edit: Instant::now(),
            saving: false,
            last_saved: None,
            save_error: None,
            checkpoint: None,
            predictor: None,
            loading_checkpoint: None,
            model_error: None,
            runs: Vec::new(),
            predict_items: Vec::new(),
            predict_selected: 0,
            predict_generation: 0,
            next_item_id: 1,
            exporting: false,
            adding_images: false,
            eval_report: None,
            eval_running: false,
            eval_split: Split::Test,
            eval_error: None,
            eval_progress: Default::default(),
            attention: HashMap::new(),
            reconstructions: HashMap::new(),
            pending_inside: 0,
            opening: None,
            notices: Vec::new(),
            next_notice: 1,
            jobs: Jobs::default(),
            images: ImageCache::new(),
            device: engine::device_label(),
            frame_times: Default::default(),
            frames_seen: 0,
            quit_after_stop: false,
            ctx: None,
            settings_checked: Instant::now(),
        }
    }

    /// What to open at start: the project given on the command line, else the last one, else the demo.
    pub fn startup(&mut self, project: Option<PathBuf>) {
        if let Some(ck) = self.settings.last_checkpoint.clone().filter(|p| p.exists()) {
            self.apply(Message::LoadCheckpoint(ck));
        }
        if let Some(p) = project {
            self.apply(Message::OpenPath(p));
        } else if let Some(last) = self.settings.last_project.clone().filter(|p| p.exists()) {
            self.apply(Message::OpenPath(last));
        } else {
            self.apply(Message::CreateDemo);
        }
    }

    pub fn notify(&mut self, level: NoticeLevel, text: impl Into<String>) {
        let text = text.into();
        match level {
            NoticeLevel::Error => log::error!("{text}"),
            NoticeLevel::Warning => log::warn!("{text}"),
            NoticeLevel::Info => log::info!("{text}"),
        }
        self.notices.push(Notice { id: self.next_notice, level, text, at: Instant::now() });
        self.next_notice += 1;
        if self.notices.len() > 50 {
            self.notices.remove(0);
        }
    }

    pub fn class_names(&self) -> Vec<String> {
        self.project.as_ref().map(|p| p.class_names()).unwrap_or_default()
    }

    pub fn task(&self) -> Option<Task> {
        self.project.as_ref().map(|p| p.task)
    }

    pub fn active_run(&self) -> Option<&TrainingRun> {
        self.runs.iter().find(|r| r.status.is_active())
    }

    pub fn is_training(&self) -> bool {
        self.active_run().is_some()
    }

    pub fn busy(&self) -> bool {
        self.jobs.running() > 0 || self.opening.is_some() || self.saving
    }

    // ---------------------------------------------------------------------------------------------
    // Per-frame work: drain the job and training channels, autosave, persist settings.

    pub fn poll(&mut self, ctx: &egui::Context) {
        if self.ctx.is_none() {
            self.ctx = Some(ctx.clone());
        }
        self.jobs.set_context(ctx);
        self.images.poll(ctx);
        for result in self.jobs.drain() {
            self.on_job(result);
        }
        self.poll_training(ctx);
        if self.dirty && !self.saving && self.settings.autosave && self.last_edit.elapsed() > Duration::from_millis(400) {
            self.save_in_background();
        } else if self.dirty {
            ctx.request_repaint_after(Duration::from_millis(450));
        }
        if self.settings_checked.elapsed() > Duration::from_secs(1) {
            self.settings_checked = Instant::now();
            self.persist_settings(false);
        }
    }

    fn persist_settings(&mut self, blocking: bool) {
        let Ok(text) = serde_json::to_string_pretty(&self.settings) else { return };
        let compact = serde_json::to_string(&self.settings).unwrap_or_default();
        if compact == self.saved_settings {
            return;
        }
        self.saved_settings = compact;
        let file = self.paths.settings_file();
        let write = move || {
            if let Err(e) = crate::util::atomic::write_atomic(&file, text.as_bytes()) {
                log::warn!("could not save settings to {}: {e}", file.display());
            }
        };
        if blocking {
            write();
        } else {
            std::thread::spawn(write);
        }
    }

    fn poll_training(&mut self, ctx: &egui::Context) {
        let mut finished_stage: Vec<(usize, PathBuf, String)> = Vec::new();
        let mut failures: Vec<(usize, String)> = Vec::new();
        for (ri, run) in self.runs.iter_mut().enumerate() {
            let Some(handle) = &run.handle else { continue };
            let mut got_end = false;
            for _ in 0..5000 {
                let Ok(ev) = handle.events.try_recv() else { break };
                match ev {
                    Event::Started { total_steps, device, parameters, image_size, augment, mirror_asymmetry } => {
                        run.augmentation = augment.describe();
                        if let Some(a) = mirror_asymmetry {
                            run.augmentation += &format!("; images {}", crate::train::run::describe_mirror_check(a));
                        }
                        run.stage_total = total_steps;
                        run.total_steps = run.step_offset + total_steps
                            + run.pending_stages.len() as u64 * total_steps.max(1);
                        run.device = device;
                        run.parameters = parameters;
                        run.image_size = image_size;
                        run.status = RunStatus::Running;
                    }
                    Event::Step(mut s) => {
                        s.step += run.step_offset;
                        run.total_steps = run.total_steps.max(run.step_offset + s.total_steps);
                        s.total_steps = run.total_steps;
                        if run.status == RunStatus::Starting {
                            run.status = RunStatus::Running;
                        }
                        run.steps.push(s);
                    }
                    Event::Eval(mut e) => {
                        e.step += run.step_offset;
                        run.evals.push(e);
                    }
                    Event::Samples(s) => run.samples = s,
                    Event::CheckpointWritten { path, .. } => run.checkpoint = Some(path),
                    Event::Paused => run.status = RunStatus::Paused,
                    Event::Resumed => run.status = RunStatus::Running,
                    Event::Finished { checkpoint, reason } => {
                        got_end = true;
                        finished_stage.push((ri, checkpoint, reason));
                    }
                    Event::Error { message } => {
                        got_end = true;
                        failures.push((ri, message));
                    }
                }
            }
            if !got_end && handle.is_finished() && handle.events.is_empty() && run.status.is_active() {
                failures.push((ri, "the training worker stopped without a word".into()));
            }
            if run.status.is_active() {
                ctx.request_repaint_after(Duration::from_millis(100));
            }
        }
        for (ri, message) in failures {
            let run = &mut self.runs[ri];
            run.handle = None;
            run.pending_stages.clear();
            run.status = RunStatus::Failed(message.clone());
            self.save_run_history(ri);
            self.notify(NoticeLevel::Error, format!("Training failed: {message}"));
        }
        for (ri, checkpoint, reason) in finished_stage {
            let stopping = self.runs[ri].status == RunStatus::Stopping;
            let next = if stopping { None } else { self.runs[ri].pending_stages.first().cloned() };
            if let (Some(mut cfg), Some(project)) = (next, self.project.clone()) {
                let run = &mut self.runs[ri];
                run.pending_stages.remove(0);
                run.step_offset = run.steps.last().map(|s| s.step).unwrap_or(run.step_offset);
                cfg.init = Some(checkpoint.clone());
                run.stage_objective = Some(cfg.objective);
                run.checkpoint = Some(checkpoint);
                run.handle = Some(crate::train::start_training(project, cfg));
                continue;
            }
            let run = &mut self.runs[ri];
            run.handle = None;
            run.pending_stages.clear();
            run.checkpoint = Some(checkpoint.clone());
            run.status = RunStatus::Finished(reason.clone());
            let name = run.name.clone();
            self.save_run_history(ri);
            self.notify(NoticeLevel::Info, format!("Training run {name} finished ({reason})."));
            self.apply(Message::LoadCheckpoint(checkpoint));
        }
    }

    fn save_run_history(&self, ri: usize) {
        let run = &self.runs[ri];
        let file = run.out_dir.join("history.json");
        if let Ok(bytes) = serde_json::to_vec(&run.record()) {
            if let Err(e) = crate::util::atomic::write_atomic(&file, &bytes) {
                log::warn!("could not keep the run history in {}: {e}", file.display());
            }
        }
    }

    fn load_run_history(&mut self) {
        self.runs.retain(|r| r.status.is_active());
        let Some(project) = &self.project else { return };
        let Ok(dir) = std::fs::read_dir(project.root.join("runs")) else { return };
        let mut found: Vec<(PathBuf, RunRecord)> = dir
            .flatten()
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path().join("history.json")).ok()?;
                Some((e.path(), serde_json::from_str(&text).ok()?))
            })
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        for (dir, record) in found {
            self.runs.push(TrainingRun::from_record(record, dir));
        }
    }

    fn save_in_background(&mut self) {
        let Some(project) = self.project.clone() else { return };
        self.dirty = false;
        self.saving = true;
        self.jobs.spawn(
            "save",
            move || JobResult::Saved { result: project.save().map_err(|e| e.to_string()) },
            |e| JobResult::Saved { result: Err(e) },
        );
    }

    /// Saves now on this thread (used when closing the window).
    pub fn save_blocking(&mut self) {
        if let Some(p) = &self.project {
            if self.dirty {
                match p.save() {
                    Ok(()) => self.dirty = false,
                    Err(e) => self.save_error = Some(e.to_string()),
                }
            }
        }
        self.persist_settings(true);
    }

    fn on_job(&mut self, result: JobResult) {
        match result {
            JobResult::ProjectOpened { path, result, from_demo } => {
                self.opening = None;
                match result {
                    Ok(project) => self.set_project(project, from_demo),
                    Err(e) => {
                        let text = if from_demo { format!("Could not create the demo project: {e}") } else { format!("Could not open {}: {e}", path.display()) };
                        self.notify(NoticeLevel::Error, text);
                    }
                }
            }
            JobResult::PredictorLoaded { path, result } => {
                // Only the latest request's result counts: a slower, earlier load (say the demo's shipped detector)
                // must not replace the model the user asked for since, whether that one is still loading or done.
                if self.loading_checkpoint.as_ref() != Some(&path) {
                    return;
                }
                self.loading_checkpoint = None;
                match result {
                    Ok(p) => {
                        self.predictor = Some(p);
                        self.checkpoint = Some(path.clone());
                        self.settings.last_checkpoint = Some(path);
                        self.model_error = None;
                        // Everything in the Predict view is predicted (again) by this model.
                        self.repredict_all();
                        self.eval_report = None;
                        self.attention.clear();
                        self.reconstructions.clear();
                        self.suggestions.clear();
                    }
                    Err(e) => {
                        self.model_error = Some(e.clone());
                        self.notify(NoticeLevel::Error, format!("Could not load the model {}: {e}", path.display()));
                    }
                }
            }
            JobResult::Predicted { id, generation, result } => {
                // Results of a job started before the model or the options changed are stale.
                if generation != self.predict_generation {
                    return;
                }
                if let Some(item) = self.predict_items.iter_mut().find(|i| i.id == id) {
                    item.prediction = Some(result);
                }
            }
            JobResult::PredictionsFailed { ids, generation, error } => {
                if generation != self.predict_generation {
                    return;
                }
                for item in self.predict_items.iter_mut().filter(|i| ids.contains(&i.id) && i.prediction.is_none()) {
                    item.prediction = Some(Err(error.clone()));
                }
                self.notify(NoticeLevel::Error, format!("Prediction stopped: {error}"));
            }
            JobResult::Suggested { image, result } => {
                self.suggesting = None;
                match result {
                    Ok(s) => {
                        self.suggestions.insert(image, s);
                    }
                    Err(e) => self.notify(NoticeLevel::Error, format!("Could not suggest labels: {e}")),
                }
            }
            JobResult::Evaluated { result } => {
                self.eval_running = false;
                match result {
                    Ok((r, notes)) => {
                        self.eval_report = Some(r);
                        self.eval_error = None;
                        for n in notes {
                            self.notify(NoticeLevel::Warning, n);
                        }
                    }
                    Err(e) => {
                        self.eval_error = Some(e.clone());
                        self.notify(NoticeLevel::Error, format!("Evaluation failed: {e}"));
                    }
                }
            }
            JobResult::Attention { key, result } => {
                self.pending_inside = self.pending_inside.saturating_sub(1);
                self.attention.insert(key, result);
            }
            JobResult::Reconstruction { key, keep, result } => {
                self.pending_inside = self.pending_inside.saturating_sub(1);
                let tex = result.map(|o| {
                    o.map(|img| {
                        let ctx = self.ctx.clone().expect("polled before jobs finish");
                        ctx.load_texture(format!("recon:{key}:{keep}"), super::images::to_color_image(&img), egui::TextureOptions::NEAREST)
                    })
                });
                self.reconstructions.insert((key, keep), tex);
            }
            JobResult::Saved { result } => {
                self.saving = false;
                match result {
                    Ok(()) => {
                        self.last_saved = Some(Instant::now());
                        self.save_error = None;
                    }
                    Err(e) => {
                        // Keep the edits marked unsaved; the next autosave tries again.
                        self.dirty = true;
                        self.last_edit = Instant::now() + Duration::from_secs(5);
                        if self.save_error.as_ref() != Some(&e) {
                            self.notify(NoticeLevel::Error, format!("Saving the project failed (your labels are kept in memory, retrying): {e}"));
                        }
                        self.save_error = Some(e);
                    }
                }
            }
            JobResult::Exported { result } => {
                self.exporting = false;
                match result {
                    Ok(m) => self.notify(NoticeLevel::Info, m),
                    Err(e) => self.notify(NoticeLevel::Error, format!("Export failed: {e}")),
                }
            }
            JobResult::ImagesScanned { entries, skipped } => {
                self.adding_images = false;
                let Some(p) = &mut self.project else { return };
                let known: std::collections::HashSet<ImageSource> = p.images.iter().map(|i| i.source.clone()).collect();
                let fresh: Vec<_> = entries.into_iter().filter(|e| !known.contains(&e.source)).collect();
                let added = fresh.len();
                let first = p.images.len();
                p.images.extend(fresh);
                for s in &skipped {
                    p.warnings.push(format!("skipped {s}"));
                }
                if added > 0 {
                    self.current_image = Some(first);
                    self.selected_box = None;
                }
                self.mark_dirty();
                let mut text = format!("Added {added} image(s) to the project, unlabelled.");
                if !skipped.is_empty() {
                    text.push_str(&format!(" Skipped {} (see the Project view's warnings).", skipped.len()));
                }
                self.notify(if skipped.is_empty() { NoticeLevel::Info } else { NoticeLevel::Warning }, text);
            }
            JobResult::Done => {}
        }
    }

    fn set_project(&mut self, project: Project, from_demo: bool) {
        // Never drop unsaved edits of the previous project.
        self.save_blocking();
        let folder = project.root.clone();
        let warnings = project.warnings.len();
        self.label_class = 0;
        self.current_image = if project.images.is_empty() { None } else { Some(0) };
        self.selected_box = None;
        self.suggestions.clear();
        self.undo = UndoStack::default();
        self.eval_report = None;
        self.dirty = false;
        self.notify(
            NoticeLevel::Info,
            format!("Opened {} ({} images, {} classes{}).", project.name, project.images.len(), project.classes.len(),
                if warnings > 0 { format!(", {warnings} import warnings") } else { String::new() }),
        );
        self.project = Some(project);
        self.revision += 1;
        self.settings.recent_projects.retain(|p| p != &folder);
        self.settings.recent_projects.insert(0, folder.clone());
        self.settings.recent_projects.truncate(10);
        self.settings.last_project = Some(folder);
        self.load_run_history();
        // The demo project gets the shipped demo detector whenever no model is loaded or loading: on creation, and
        // when reopened after the shipped model could not be loaded before (or the user's last model is gone).
        let is_demo = from_demo || self.project.as_ref().is_some_and(|p| p.name == crate::data::demo::DEMO_PROJECT_NAME);
        if is_demo && self.predictor.is_none() && self.loading_checkpoint.is_none() {
            if let Some(ck) = engine::shipped_checkpoint() {
                self.apply(Message::LoadCheckpoint(ck));
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Messages

    pub fn apply(&mut self, msg: Message) {
        match msg {
            Message::ShowView(v) => self.view = v,
            Message::ToggleHelp => self.show_help = !self.show_help,
            Message::Notify(level, text) => self.notify(level, text),
            Message::DismissNotice(id) => self.notices.retain(|n| n.id != id),
            Message::SetTheme(t) => self.settings.theme = t,
            Message::SetThreshold(t) => self.settings.threshold = t.clamp(PREDICT_FLOOR, 1.0),
            Message::SetFlipTta(on) => {
                if self.settings.flip_tta != on {
                    self.settings.flip_tta = on;
                    self.eval_report = None;
                    self.suggestions.clear();
                    self.repredict_all();
                }
            }
            Message::SetTrainSettings(t) => self.settings.train = t,
            Message::OpenPath(path) => self.open_path(path),
            Message::CreateDemo => self.create_demo(),
            Message::NewProject { dir, name, task } => self.new_project(dir, name, task),
            Message::SaveProject => {
                if self.project.is_some() && !self.saving {
                    self.save_in_background();
                } else if self.saving {
                    self.dirty = true;
                }
            }
            Message::SetTask(task) => {
                if let Some(p) = &mut self.project {
                    p.task = task;
                    self.mark_dirty();
                }
            }
            Message::AddClass(name) => self.add_class(name),
            Message::RenameClass(i, name) => self.rename_class(i, name),
            Message::MergeClass { from, into } => self.merge_class(from, into),
            Message::DeleteClass(i) => self.delete_class(i),
            Message::SetClassColor(i, color) => {
                if self.project.as_ref().is_some_and(|p| i < p.classes.len()) {
                    self.edit_all("class colour", |p| p.classes[i].color = color);
                }
            }
            Message::RemoveRecent(p) => self.settings.recent_projects.retain(|r| r != &p),
            Message::AddImages(paths) => self.add_images(paths),
            Message::SelectImage(i) => {
                self.current_image = i;
                self.selected_box = None;
            }
            Message::SelectBox(b) => self.selected_box = b,
            Message::SetLabelClass(c) => self.label_class = c,
            Message::AddBox { image, bbox } => {
                let n = self.edit_image(image, "draw box", |im| {
                    im.boxes.push(bbox);
                    im.labeled = true;
                });
                if n.is_some() {
                    self.selected_box = self.project.as_ref().map(|p| p.images[image].boxes.len() - 1);
                }
            }
            Message::UpdateBox { image, index, bbox } => {
                self.edit_image(image, "move box", |im| {
                    if let Some(b) = im.boxes.get_mut(index) {
                        *b = bbox;
                    }
                });
            }
            Message::DeleteBox { image, index } => {
                self.edit_image(image, "delete box", |im| {
                    if index < im.boxes.len() {
                        im.boxes.remove(index);
                    }
                    im.labeled = true;
                });
                self.selected_box = None;
            }
            Message::SetBoxClass { image, index, class } => {
                self.label_class = class;
                self.edit_image(image, "change class", |im| {
                    if let Some(b) = im.boxes.get_mut(index) {
                        b.class = class;
                    }
                });
            }
            Message::SetImageClass { image, class } => {
                self.edit_image(image, "set class", |im| {
                    im.class = class;
                    im.labeled = class.is_some();
                });
            }
            Message::SetImageSplit { image, split } => {
                if let Some(p) = &mut self.project {
                    if let Some(im) = p.images.get_mut(image) {
                        im.split = split;
                        self.mark_dirty();
                    }
                }
            }
            Message::MarkLabeled { image, labeled } => {
                self.edit_image(image, "mark labelled", |im| im.labeled = labeled);
            }
            Message::Undo => self.undo_redo(true),
            Message::Redo => self.undo_redo(false),
            Message::RequestSuggestions(image) => self.request_suggestions(image),
            Message::AcceptSuggestions { image, only } => self.accept_suggestions(image, only),
            Message::RejectSuggestions(image) => {
                self.suggestions.remove(&image);
            }
            Message::LoadCheckpoint(path) => self.load_checkpoint(path),
            Message::StartTraining => self.start_training(),
            Message::TrainCommand(cmd) => self.train_command(cmd),
            Message::ToggleCompare(i) => {
                if let Some(r) = self.runs.get_mut(i) {
                    r.compare = !r.compare;
                }
            }
            Message::UseRunCheckpoint(i) => {
                if let Some(ck) = self.runs.get(i).and_then(|r| r.checkpoint.clone()) {
                    self.apply(Message::LoadCheckpoint(ck));
                }
            }
            Message::PredictPaths(paths) => self.add_predict_paths(paths),
            Message::ClearPredictions => {
                self.predict_items.clear();
                self.predict_selected = 0;
            }
            Message::SelectPredictItem(i) => self.predict_selected = i,
            Message::ExportPredictions(dir) => self.export_predictions(dir),
            Message::RunEvaluation(split) => self.run_evaluation(split),
            Message::ComputeAttention { key, source, object } => self.compute_attention(key, source, object),
            Message::ComputeReconstruction { key, source, keep } => self.compute_reconstruction(key, source, keep),
        }
    }

    fn mark_dirty(&mut self) {
        self.revision += 1;
        self.dirty = true;
        self.last_edit = Instant::now();
    }

    fn open_path(&mut self, path: PathBuf) {
        if self.opening.is_some() {
            return;
        }
        self.opening = Some(path.clone());
        self.jobs.spawn(
            "open",
            {
                let path = path.clone();
                move || JobResult::ProjectOpened {
                    result: engine::open_project_or_dataset(&path).map_err(|e| format!("{e:#}")),
                    path,
                    from_demo: false,
                }
            },
            move |e| JobResult::ProjectOpened { path, result: Err(e), from_demo: false },
        );
    }

    fn create_demo(&mut self) {
        if self.opening.is_some() {
            return;
        }
        let dir = self.paths.demo_dir();
        self.opening = Some(dir.clone());
        self.jobs.spawn(
            "demo",
            {
                let dir = dir.clone();
                move || {
                    let result = if dir.join(crate::data::project::PROJECT_FILE).exists() {
                        Project::load(&dir).map_err(|e| e.to_string())
                    } else {
                        engine::create_demo_project(&dir).map_err(|e| format!("{e:#}"))
                    };
                    JobResult::ProjectOpened { path: dir, result, from_demo: true }
                }
            },
            move |e| JobResult::ProjectOpened { path: dir, result: Err(e), from_demo: true },
        );
    }

    fn new_project(&mut self, dir: PathBuf, name: String, task: Task) {
        if dir.join(crate::data::project::PROJECT_FILE).exists() {
            self.notify(NoticeLevel::Warning, format!("{} already holds a project; opening it instead.", dir.display()));
            return self.open_path(dir);
        }
        let project = Project::new(if name.trim().is_empty() { "Untitled".to_string() } else { name }, task, dir.clone());
        match std::fs::create_dir_all(&dir).map_err(|e| e.to_string()).and_then(|_| project.save().map_err(|e| e.to_string())) {
            Ok(()) => self.set_project(project, false),
            Err(e) => self.notify(NoticeLevel::Error, format!("Could not create a project in {}: {e}", dir.display())),
        }
    }

    fn add_images(&mut self, paths: Vec<PathBuf>) {
        let Some(project) = &self.project else {
            return self.notify(NoticeLevel::Warning, "Open or create a project first, then add images to it.");
        };
        if self.adding_images {
            return;
        }
        let root = project.root.clone();
        self.adding_images = true;
        self.jobs.spawn(
            "add-images",
            move || {
                let mut files = Vec::new();
                for p in paths {
                    if p.is_dir() {
                        for e in walkdir::WalkDir::new(&p).follow_links(true).sort_by_file_name().into_iter().flatten() {
                            if e.file_type().is_file() && is_image_file(e.path()) {
                                files.push(e.path().to_path_buf());
                            }
                        }
                    } else {
                        files.push(p);
                    }
                }
                let mut entries = Vec::new();
                let mut skipped = Vec::new();
                for f in files {
                    match crate::data::decode::image_dimensions(&ImageSource::File(f.clone())) {
                        Ok((width, height)) => {
                            let rel = crate::data::project::relative_to(&f, &root);
                            let name = rel.to_string_lossy().into_owned();
                            entries.push(crate::data::project::ImageEntry {
                                source: ImageSource::File(rel),
                                width,
                                height,
                                split: Split::from_name_hash(&name),
                                class: None,
                                boxes: Vec::new(),
                                labeled: false,
                            });
                        }
                        Err(e) => skipped.push(e.to_string()),
                    }
                }
                JobResult::ImagesScanned { entries, skipped }
            },
            |e| JobResult::ImagesScanned { entries: Vec::new(), skipped: vec![e] },
        );
    }

    // --- labels and undo -------------------------------------------------------------------------

    fn labels_of(p: &Project, i: usize) -> ImageLabels {
        let im = &p.images[i];
        ImageLabels { class: im.class, boxes: im.boxes.clone(), labeled: im.labeled }
    }

    fn all_labels(p: &Project) -> Snapshot {
        Snapshot::All { classes: p.classes.clone(), labels: (0..p.images.len()).map(|i| Self::labels_of(p, i)).collect() }
    }

    fn restore(p: &mut Project, s: &Snapshot) {
        let put = |p: &mut Project, i: usize, l: &ImageLabels| {
            if let Some(im) = p.images.get_mut(i) {
                im.class = l.class;
                im.boxes = l.boxes.clone();
                im.labeled = l.labeled;
            }
        };
        match s {
            Snapshot::Image { index, labels } => put(p, *index, labels),
            Snapshot::All { classes, labels } => {
                p.classes = classes.clone();
                for (i, l) in labels.iter().enumerate() {
                    put(p, i, l);
                }
            }
        }
    }

    /// Applies an undoable edit to one image's labels. Returns `None` if there is no such image.
    fn edit_image(&mut self, image: usize, what: &str, f: impl FnOnce(&mut crate::data::project::ImageEntry)) -> Option<()> {
        let p = self.project.as_mut()?;
        p.images.get(image)?;
        let before = Self::labels_of(p, image);
        f(&mut p.images[image]);
        let after = Self::labels_of(p, image);
        if before == after {
            return Some(());
        }
        self.push_edit(Edit { what: what.into(), before: Snapshot::Image { index: image, labels: before }, after: Snapshot::Image { index: image, labels: after } });
        Some(())
    }

    fn edit_all(&mut self, what: &str, f: impl FnOnce(&mut Project)) {
        let Some(p) = self.project.as_mut() else { return };
        let before = Self::all_labels(p);
        f(p);
        let after = Self::all_labels(p);
        self.push_edit(Edit { what: what.into(), before, after });
    }

    fn push_edit(&mut self, edit: Edit) {
        self.undo.undo.push(edit);
        if self.undo.undo.len() > UNDO_LIMIT {
            self.undo.undo.remove(0);
        }
        self.undo.redo.clear();
        self.mark_dirty();
    }

    fn undo_redo(&mut self, undo: bool) {
        let Some(p) = self.project.as_mut() else { return };
        let edit = if undo { self.undo.undo.pop() } else { self.undo.redo.pop() };
        let Some(edit) = edit else { return };
        Self::restore(p, if undo { &edit.before } else { &edit.after });
        if let Snapshot::Image { index, .. } = &edit.before {
            self.current_image = Some(*index);
        }
        self.selected_box = None;
        if undo {
            self.undo.redo.push(edit);
        } else {
            self.undo.undo.push(edit);
        }
        self.mark_dirty();
    }

    fn add_class(&mut self, name: String) {
        let name = name.trim().to_string();
        if name.is_empty() {
            return;
        }
        if self.project.as_ref().is_some_and(|p| p.class_index(&name).is_some()) {
            return self.notify(NoticeLevel::Warning, format!("There is already a class called {name}."));
        }
        self.edit_all("add class", |p| {
            p.class_index_or_add(&name);
        });
    }

    fn rename_class(&mut self, i: usize, name: String) {
        let name = name.trim().to_string();
        let Some(p) = &self.project else { return };
        if name.is_empty() || i >= p.classes.len() || p.classes[i].name == name {
            return;
        }
        if let Some(j) = p.class_index(&name) {
            // Renaming onto an existing name is what a person means by merging.
            return self.merge_class(i, j);
        }
        self.edit_all("rename class", |p| p.classes[i].name = name);
    }

    fn merge_class(&mut self, from: usize, into: usize) {
        let Some(p) = &self.project else { return };
        if from == into || from >= p.classes.len() || into >= p.classes.len() {
            return;
        }
        let (from_name, into_name) = (p.classes[from].name.clone(), p.classes[into].name.clone());
        self.edit_all("merge classes", |p| {
            for im in &mut p.images {
                if im.class == Some(from) {
                    im.class = Some(into);
                }
                for b in &mut im.boxes {
                    if b.class == from {
                        b.class = into;
                    }
                }
            }
            remove_class_index(p, from);
        });
        self.label_class = 0;
        self.notify(NoticeLevel::Info, format!("Merged {from_name} into {into_name}. Ctrl+Z undoes it."));
    }

    fn delete_class(&mut self, i: usize) {
        let Some(p) = &self.project else { return };
        if i >= p.classes.len() {
            return;
        }
        let name = p.classes[i].name.clone();
        self.edit_all("delete class", |p| {
            for im in &mut p.images {
                if im.class == Some(i) {
                    im.class = None;
                    im.labeled = false;
                }
                im.boxes.retain(|b| b.class != i);
            }
            remove_class_index(p, i);
        });
        self.label_class = 0;
        self.selected_box = None;
        self.notify(NoticeLevel::Info, format!("Deleted class {name} and its labels. Ctrl+Z undoes it."));
    }

    // --- model-assisted labelling ----------------------------------------------------------------

    fn request_suggestions(&mut self, image: usize) {
        let (Some(predictor), Some(project)) = (self.predictor.clone(), &self.project) else {
            return self.notify(NoticeLevel::Warning, "Suggestions need a model: train one or load a checkpoint first.");
        };
        let Some(_) = project.images.get(image) else { return };
        if self.suggesting.is_some() {
            return;
        }
        let source = project.source_of(image);
        let remap = class_remap(predictor.class_names(), project);
        // Suggestions use the same confidence threshold as the Predict view.
        let threshold = self.settings.threshold;
        let flip_tta = self.settings.flip_tta;
        self.suggesting = Some(image);
        self.jobs.spawn(
            "suggest",
            move || {
                let result = (|| -> anyhow::Result<Suggestion> {
                    let img = crate::data::decode::load_image(&source)?;
                    let opts = PredictOptions { threshold, flip_tta, ..Default::default() };
                    let pred = predictor.predict(&img, &opts)?;
                    let boxes = pred
                        .detections
                        .iter()
                        .filter_map(|d| remap.get(d.bbox.class).copied().flatten().map(|c| (BBox { class: c, ..d.bbox }, d.score)))
                        .collect();
                    let class = pred.top_k(1).first().and_then(|&(c, p)| remap.get(c).copied().flatten().map(|c| (c, p)));
                    Ok(Suggestion { boxes, class })
                })();
                JobResult::Suggested { image, result: result.map_err(|e| format!("{e:#}")) }
            },
            move |e| JobResult::Suggested { image, result: Err(e) },
        );
    }

    fn accept_suggestions(&mut self, image: usize, only: Option<usize>) {
        let Some(s) = self.suggestions.get(&image).cloned() else { return };
        let task = self.task();
        self.edit_image(image, "accept suggestions", |im| {
            match task {
                Some(Task::Classify) => {
                    if let Some((c, _)) = s.class {
                        im.class = Some(c);
                    }
                }
                _ => {
                    for (i, (b, _)) in s.boxes.iter().enumerate() {
                        if only.is_none() || only == Some(i) {
                            im.boxes.push(*b);
                        }
                    }
                }
            }
            im.labeled = true;
        });
        match only {
            Some(i) => {
                if let Some(s) = self.suggestions.get_mut(&image) {
                    if i < s.boxes.len() {
                        s.boxes.remove(i);
                    }
                    if s.boxes.is_empty() {
                        self.suggestions.remove(&image);
                    }
                }
            }
            None => {
                self.suggestions.remove(&image);
            }
        }
    }

    // --- model -----------------------------------------------------------------------------------

    fn load_checkpoint(&mut self, path: PathBuf) {
        self.loading_checkpoint = Some(path.clone());
        self.jobs.spawn(
            "load-model",
            {
                let path = path.clone();
                move || JobResult::PredictorLoaded {
                    result: Predictor::load(&path).map(Arc::new).map_err(|e| format!("{e:#}")),
                    path,
                }
            },
            move |e| JobResult::PredictorLoaded { path, result: Err(e) },
        );
    }

    // --- training --------------------------------------------------------------------------------

    /// The engine configs for the current settings: optional pretraining, then fine-tuning.
    pub fn train_configs(&self, out: &Path) -> Vec<TrainConfig> {
        let t = &self.settings.train;
        let task = self.task().unwrap_or_default();
        let train_images = self.train_image_count();
        let base = TrainConfig {
            preset: t.preset.clone(),
            image_size: t.image_size,
            warmup_steps: t.warmup_steps,
            weight_decay: t.weight_decay,
            ema: t.ema.then_some(0.999),
            early_stop_patience: t.early_stop.then_some(t.patience),
            seed: t.seed,
            use_gpu: t.use_gpu,
            ..TrainConfig::default()
        };
        let mut stages = Vec::new();
        if t.pretrain {
            stages.push(TrainConfig {
                objective: Objective::Pretrain,
                batch_size: t.effective_batch_size(Objective::Pretrain, train_images),
                epochs: Some(t.pretrain_epochs),
                minutes: t.pretrain_time_limit.then_some(t.pretrain_minutes),
                lr: t.pretrain_lr,
                out: out.join("pretrain"),
                ..base.clone()
            });
        }
        stages.push(TrainConfig {
            objective: Objective::from(task),
            batch_size: t.effective_batch_size(Objective::from(task), train_images),
            epochs: Some(t.epochs),
            minutes: t.time_limit.then_some(t.minutes),
            lr: t.effective_lr(task, train_images),
            class_aux: TrainConfig::data_defaults(Objective::from(task), train_images).class_aux,
            generative_aux: self.fine_tuning_generative_aux(),
            augment: t.augment,
            init: if t.init_from_current && !t.pretrain { self.checkpoint.clone() } else { None },
            out: out.join("model"),
            ..base
        });
        stages
    }

    /// The generative loss weight the fine-tuning stage would use now.
    pub fn fine_tuning_generative_aux(&self) -> f64 {
        let (labelled, unlabelled) = self.labelled_and_unlabelled();
        self.settings.train.effective_generative_aux(self.task().unwrap_or_default(), self.checkpoint.is_some(), labelled, unlabelled)
    }

    /// The training images the engine's data-sized defaults count: the labelled ones, plus the unlabelled ones
    /// when fine-tuning's generative loss learns from them ([`images_learned_from`]; 0 without a project).
    pub fn train_image_count(&self) -> usize {
        let (labelled, unlabelled) = self.labelled_and_unlabelled();
        images_learned_from(labelled, unlabelled, self.fine_tuning_generative_aux() > 0.0)
    }

    /// Training images with and without a label for the open project's task ((0, 0) without a project).
    pub fn labelled_and_unlabelled(&self) -> (usize, usize) {
        self.project.as_ref().map_or((0, 0), |p| p.labelled_and_unlabelled(p.task, crate::data::project::Split::Train))
    }

    fn start_training(&mut self) {
        if self.is_training() {
            return self.notify(NoticeLevel::Warning, "A run is already training; stop it first.");
        }
        let Some(project) = self.project.clone() else {
            return self.notify(NoticeLevel::Warning, "Open a project first.");
        };
        let labelled = project.images.iter().filter(|i| i.labeled || i.class.is_some() || !i.boxes.is_empty()).count();
        if labelled == 0 && !self.settings.train.pretrain {
            return self.notify(NoticeLevel::Warning, "No labelled images yet: label some in the Label view (or enable pretraining).");
        }
        // Training reads the saved project; make sure the latest labels are on disk and in the copy it gets.
        self.save_blocking();
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let name = format!("run-{}", self.runs.len() + 1);
        let out_dir = project.root.join("runs").join(format!("{stamp}-{name}"));
        let mut stages = self.train_configs(&out_dir);
        let first = stages.remove(0);
        let objective = first.objective;
        let handle = crate::train::start_training(project, first);
        self.attach_run(name, handle, out_dir, stages, objective);
    }

    /// Adds a live run driven by `handle` (the engine's worker, or any sender of the same events) and
    /// shows it in the Train view; `later_stages` run after it, each starting from the previous checkpoint.
    pub fn attach_run(&mut self, name: String, handle: TrainHandle, out_dir: PathBuf, later_stages: Vec<TrainConfig>, objective: Objective) {
        for r in &mut self.runs {
            r.compare = false;
        }
        self.runs.push(TrainingRun {
            name,
            status: RunStatus::Starting,
            steps: Vec::new(),
            evals: Vec::new(),
            samples: Vec::new(),
            checkpoint: None,
            device: String::new(),
            parameters: 0,
            image_size: 0,
            augmentation: String::new(),
            total_steps: 0,
            pending_stages: later_stages,
            stage_objective: Some(objective),
            step_offset: 0,
            stage_total: 0,
            handle: Some(handle),
            compare: true,
            out_dir,
            started: Instant::now(),
        });
    }

    fn train_command(&mut self, cmd: Command) {
        let Some(run) = self.runs.iter_mut().find(|r| r.status.is_active()) else { return };
        if let Some(h) = &run.handle {
            if matches!(cmd, Command::Stop) {
                run.status = RunStatus::Stopping;
            }
            h.send(cmd);
        }
    }

    // --- predict ---------------------------------------------------------------------------------

    fn add_predict_paths(&mut self, paths: Vec<PathBuf>) {
        let mut files = Vec::new();
        let mut skipped = 0;
        for p in paths {
            if p.is_dir() {
                for e in walkdir::WalkDir::new(&p).follow_links(true).sort_by_file_name().into_iter().flatten() {
                    if e.file_type().is_file() && is_image_file(e.path()) {
                        files.push(e.path().to_path_buf());
                    }
                }
            } else if is_image_file(&p) {
                files.push(p);
            } else {
                skipped += 1;
            }
        }
        if skipped > 0 {
            self.notify(NoticeLevel::Warning, format!("Skipped {skipped} dropped file(s) that are not images."));
        }
        if files.is_empty() {
            return;
        }
        let first_new = self.predict_items.len();
        for path in files {
            if self.predict_items.iter().any(|i| i.path == path) {
                continue;
            }
            let id = self.next_item_id;
            self.next_item_id += 1;
            self.predict_items.push(PredictItem { id, path, prediction: None, requested: false });
        }
        self.predict_selected = first_new.min(self.predict_items.len().saturating_sub(1));
        self.view = View::Predict;
        self.request_predictions();
    }

    /// Forgets every prediction of the Predict view and predicts the images again (the options changed).
    fn repredict_all(&mut self) {
        self.predict_generation += 1;
        for item in &mut self.predict_items {
            item.requested = false;
            item.prediction = None;
        }
        self.request_predictions();
    }

    /// Predicts every item not predicted yet, on one background thread, in order.
    fn request_predictions(&mut self) {
        let Some(predictor) = self.predictor.clone() else { return };
        let todo: Vec<(u64, PathBuf)> = self
            .predict_items
            .iter_mut()
            .filter(|i| !i.requested)
            .map(|i| {
                i.requested = true;
                (i.id, i.path.clone())
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let ids: Vec<u64> = todo.iter().map(|t| t.0).collect();
        let generation = self.predict_generation;
        let flip_tta = self.settings.flip_tta;
        self.jobs.spawn_streaming(
            "predict",
            move |out| {
                let opts = PredictOptions { threshold: PREDICT_FLOOR, max_objects: 100, flip_tta, ..Default::default() };
                for (id, path) in todo {
                    let result = crate::data::decode::load_image(&ImageSource::File(path))
                        .map_err(anyhow::Error::from)
                        .and_then(|img| predictor.predict(&img, &opts))
                        .map_err(|e| format!("{e:#}"));
                    out.send(JobResult::Predicted { id, generation, result });
                }
                JobResult::Done
            },
            // Mark every item this job owned as failed rather than leaving them spinning.
            move |error| JobResult::PredictionsFailed { ids, generation, error },
        );
    }

    fn export_predictions(&mut self, dir: PathBuf) {
        let threshold = self.settings.threshold;
        let names = self.predictor.as_ref().map(|p| p.class_names().to_vec()).unwrap_or_default();
        let colors: Vec<[u8; 3]> = (0..names.len().max(1)).map(crate::data::project::class_color).collect();
        let items: Vec<(PathBuf, Prediction)> = self
            .predict_items
            .iter()
            .filter_map(|i| match &i.prediction {
                Some(Ok(p)) => Some((i.path.clone(), p.clone())),
                _ => None,
            })
            .collect();
        if items.is_empty() {
            return self.notify(NoticeLevel::Warning, "Nothing to export yet: no image has predictions.");
        }
        self.exporting = true;
        self.jobs.spawn(
            "export",
            move || JobResult::Exported { result: export::write_all(&dir, &items, &names, &colors, threshold).map_err(|e| format!("{e:#}")) },
            |e| JobResult::Exported { result: Err(e) },
        );
    }

    // --- evaluate --------------------------------------------------------------------------------

    fn run_evaluation(&mut self, split: Split) {
        let (Some(predictor), Some(project)) = (self.predictor.clone(), self.project.clone()) else {
            return self.notify(NoticeLevel::Warning, "Evaluation needs a project and a model.");
        };
        if self.eval_running {
            return;
        }
        self.eval_running = true;
        self.eval_split = split;
        let progress = self.eval_progress.clone();
        progress.0.store(0, std::sync::atomic::Ordering::Relaxed);
        progress.1.store(project.indices_in(split).len(), std::sync::atomic::Ordering::Relaxed);
        let ctx = self.ctx.clone();
        // Precision and recall are reported at the threshold the user has chosen in Predict.
        let threshold = self.settings.threshold;
        let flip_tta = self.settings.flip_tta;
        self.jobs.spawn(
            "evaluate",
            move || {
                let opts = PredictOptions { threshold, max_objects: 100, flip_tta, ..Default::default() };
                let mut report = |done: usize, total: usize| {
                    progress.0.store(done, std::sync::atomic::Ordering::Relaxed);
                    progress.1.store(total, std::sync::atomic::Ordering::Relaxed);
                    if let Some(c) = &ctx {
                        c.request_repaint();
                    }
                };
                JobResult::Evaluated { result: engine::evaluate(&predictor, &project, split, &opts, &mut report).map_err(|e| format!("{e:#}")) }
            },
            |e| JobResult::Evaluated { result: Err(e) },
        );
    }

    // --- look inside -----------------------------------------------------------------------------

    fn compute_attention(&mut self, key: String, source: ImageSource, object: Option<usize>) {
        let Some(predictor) = self.predictor.clone() else { return };
        if self.attention.contains_key(&key) {
            return;
        }
        self.attention.insert(key.clone(), Err("computing…".into()));
        self.pending_inside += 1;
        let k2 = key.clone();
        self.jobs.spawn(
            "attention",
            move || {
                let result = crate::data::decode::load_image(&source)
                    .map_err(anyhow::Error::from)
                    .and_then(|img| predictor.attention(&img, object))
                    .map_err(|e| format!("{e:#}"));
                JobResult::Attention { key, result }
            },
            move |e| JobResult::Attention { key: k2, result: Err(e) },
        );
    }

    fn compute_reconstruction(&mut self, key: String, source: ImageSource, keep: usize) {
        let Some(predictor) = self.predictor.clone() else { return };
        if self.reconstructions.contains_key(&(key.clone(), keep)) {
            return;
        }
        self.reconstructions.insert((key.clone(), keep), Err("computing…".into()));
        self.pending_inside += 1;
        let k2 = key.clone();
        self.jobs.spawn(
            "reconstruct",
            move || {
                let result = crate::data::decode::load_image(&source)
                    .map_err(anyhow::Error::from)
                    .and_then(|img| predictor.reconstruct(&img, keep))
                    .map_err(|e| format!("{e:#}"));
                JobResult::Reconstruction { key, keep, result }
            },
            move |e| JobResult::Reconstruction { key: k2, keep, result: Err(e) },
        );
    }

    /// Records one frame's duration (ms). The first frames (font atlas, first textures) are warm-up and
    /// are left out, so the figures describe the app as it is used.
    pub fn record_frame(&mut self, ms: f32) {
        self.frames_seen += 1;
        if self.frames_seen <= 30 {
            return;
        }
        self.frame_times.push_back(ms);
        if self.frame_times.len() > 600 {
            self.frame_times.pop_front();
        }
    }
}

/// Removes class `i` from the class list and shifts the labels above it down.
fn remove_class_index(p: &mut Project, i: usize) {
    p.classes.remove(i);
    for im in &mut p.images {
        if let Some(c) = im.class {
            if c > i {
                im.class = Some(c - 1);
            }
        }
        for b in &mut im.boxes {
            if b.class > i {
                b.class -= 1;
            }
        }
    }
}

/// Maps a model's class indices to the project's (by name); `None` where the project has no such class.
pub fn class_remap(model_classes: &[String], project: &Project) -> Vec<Option<usize>> {
    model_classes.iter().map(|n| project.class_index(n)).collect()
}

pub fn is_image_file(p: &Path) -> bool {
    let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "bmp" | "gif" | "webp" | "tif" | "tiff" | "pnm" | "ppm" | "pgm" | "tga" | "qoi")
}

/// Writing annotated PNGs and a JSON of the predictions.
mod export {
    use super::*;

    pub fn write_all(dir: &Path, items: &[(PathBuf, Prediction)], names: &[String], colors: &[[u8; 3]], threshold: f32) -> anyhow::Result<String> {
        std::fs::create_dir_all(dir)?;
        let mut json_items = Vec::new();
        let mut written = 0;
        let mut failed = Vec::new();
        for (i, (path, pred)) in items.iter().enumerate() {
            let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| format!("class {c}"));
            let dets: Vec<_> = pred.detections.iter().filter(|d| d.score >= threshold).collect();
            json_items.push(serde_json::json!({
                "file": path,
                "detections": dets.iter().map(|d| serde_json::json!({
                    "class": name(d.bbox.class), "class_index": d.bbox.class, "score": d.score,
                    "box": [d.bbox.xmin, d.bbox.ymin, d.bbox.xmax, d.bbox.ymax],
                })).collect::<Vec<_>>(),
                "probabilities": pred.top_k(pred.probs.len()).iter().map(|(c, p)| serde_json::json!({"class": name(*c), "probability": p})).collect::<Vec<_>>(),
            }));
            let img = match crate::data::decode::load_image(&ImageSource::File(path.clone())) {
                Ok(img) => img,
                Err(e) => {
                    failed.push(e.to_string());
                    continue;
                }
            };
            let mut rgb = img.to_rgb8();
            let thick = ((rgb.width().max(rgb.height()) as f32) / 300.0).ceil().max(1.0) as i64;
            for d in &dets {
                let c = colors.get(d.bbox.class % colors.len().max(1)).copied().unwrap_or([255, 0, 0]);
                draw_rect(&mut rgb, &d.bbox, thick, c);
            }
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| format!("image{i}"));
            let mut bytes = Vec::new();
            image::DynamicImage::ImageRgb8(rgb).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
            crate::util::atomic::write_atomic(&dir.join(format!("{i:04}_{stem}.png")), &bytes)?;
            written += 1;
        }
        let json = serde_json::json!({ "threshold": threshold, "classes": names, "images": json_items });
        crate::util::atomic::write_atomic(&dir.join("predictions.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
        let mut msg = format!("Exported {written} annotated image(s) and predictions.json to {}.", dir.display());
        if !failed.is_empty() {
            msg.push_str(&format!(" Skipped {}: {}", failed.len(), failed.join("; ")));
        }
        Ok(msg)
    }

    fn draw_rect(img: &mut image::RgbImage, b: &BBox, thick: i64, c: [u8; 3]) {
        let (w, h) = (img.width() as i64, img.height() as i64);
        let (x0, y0, x1, y1) = (b.xmin as i64, b.ymin as i64, (b.xmax as i64 - 1).max(b.xmin as i64), (b.ymax as i64 - 1).max(b.ymin as i64));
        let mut put = |x: i64, y: i64| {
            if x >= 0 && y >= 0 && x < w && y < h {
                img.put_pixel(x as u32, y as u32, image::Rgb(c));
            }
        };
        for t in 0..thick {
            for x in x0..=x1 {
                put(x, y0 + t);
                put(x, y1 - t);
            }
            for y in y0..=y1 {
                put(x0 + t, y);
                put(x1 - t, y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opening the demo starts loading the shipped detector; a model the user loads meanwhile must win even when
    /// the detector's load finishes last.
    #[test]
    fn an_earlier_model_load_finishing_late_does_not_replace_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AppPaths { config_dir: dir.path().join("config"), data_dir: dir.path().join("data") };
        let mut state = AppState::new(paths);
        let shipped = engine::shipped_checkpoint().expect("the demo detector ships in assets/");
        let detector = Arc::new(Predictor::load(&shipped).unwrap());
        let wanted = dir.path().join("wanted.ckpt");
        state.loading_checkpoint = Some(wanted.clone());
        state.on_job(JobResult::PredictorLoaded { path: shipped.clone(), result: Ok(detector.clone()) });
        assert!(state.predictor.is_none(), "the superseded load is dropped");
        assert_eq!(state.loading_checkpoint.as_ref(), Some(&wanted), "still waiting for the latest request");
        state.loading_checkpoint = None; // the wanted model arrived first; the detector's result comes after
        state.on_job(JobResult::PredictorLoaded { path: shipped.clone(), result: Ok(detector.clone()) });
        assert!(state.predictor.is_none(), "a result nobody waits for any more is dropped");
        state.loading_checkpoint = Some(shipped.clone());
        state.on_job(JobResult::PredictorLoaded { path: shipped.clone(), result: Ok(detector) });
        assert!(state.predictor.is_some() && state.loading_checkpoint.is_none(), "the latest request's result is used");
        assert_eq!(state.checkpoint.as_ref(), Some(&shipped));
    }
}
