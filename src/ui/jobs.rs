//! Background jobs: anything slower than a frame (opening a project, loading a checkpoint, predicting,
//! evaluating, saving) runs on its own thread and reports back through a channel that the app drains with
//! `try_recv` once per frame. The UI thread never waits for one.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use image::DynamicImage;

use crate::data::project::{BBox, Project};
use crate::eval::EvalReport;
use crate::model::{Prediction, Predictor};
use crate::model::predictor::AttentionMap;

/// What a finished job hands back.
pub enum JobResult {
    ProjectOpened { path: PathBuf, result: Result<Project, String>, from_demo: bool },
    PredictorLoaded { path: PathBuf, result: Result<Arc<Predictor>, String> },
    /// Predictions for items of the Predict view (by item id), from the job started at `generation`.
    Predicted { id: u64, generation: u64, result: Result<Prediction, String> },
    /// A prediction job died: these items (those still without a result) get the error.
    PredictionsFailed { ids: Vec<u64>, generation: u64, error: String },
    /// Model-assisted labelling suggestions for a project image.
    Suggested { image: usize, result: Result<Suggestion, String> },
    Evaluated { result: Result<(EvalReport, Vec<String>), String> },
    Attention { key: String, result: Result<AttentionMap, String> },
    Reconstruction { key: String, keep: usize, result: Result<Option<DynamicImage>, String> },
    Saved { result: Result<(), String> },
    Exported { result: Result<String, String> },
    /// Images found for "Add images": new entries, and files that were skipped with the reason.
    ImagesScanned { entries: Vec<crate::data::project::ImageEntry>, skipped: Vec<String> },
    /// A streaming job's last word (nothing more to report).
    Done,
}

/// The model's guess for an image, offered as editable labels.
#[derive(Debug, Clone)]
pub struct Suggestion {
    pub boxes: Vec<(BBox, f32)>,
    pub class: Option<(usize, f32)>,
}

/// Lets a streaming job report intermediate results.
pub struct JobSender {
    tx: Sender<JobResult>,
    ctx: Option<egui::Context>,
}

impl JobSender {
    pub fn send(&self, result: JobResult) {
        let _ = self.tx.send(result);
        if let Some(ctx) = &self.ctx {
            ctx.request_repaint();
        }
    }
}

pub struct Jobs {
    tx: Sender<JobResult>,
    rx: Receiver<JobResult>,
    ctx: Option<egui::Context>,
    running: Arc<std::sync::atomic::AtomicUsize>,
}

impl Default for Jobs {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Jobs { tx, rx, ctx: None, running: Arc::new(std::sync::atomic::AtomicUsize::new(0)) }
    }
}

impl Jobs {
    pub fn set_context(&mut self, ctx: &egui::Context) {
        if self.ctx.is_none() {
            self.ctx = Some(ctx.clone());
        }
    }

    /// Runs `work` on a new thread; a panic inside it becomes an error message, never a crash.
    pub fn spawn(&self, name: &str, work: impl FnOnce() -> JobResult + Send + 'static, on_panic: impl FnOnce(String) -> JobResult + Send + 'static) {
        self.spawn_streaming(name, move |_| work(), on_panic)
    }

    /// Like [`Self::spawn`], for work that reports several results as it goes (e.g. one per predicted image).
    pub fn spawn_streaming(
        &self,
        name: &str,
        work: impl FnOnce(&JobSender) -> JobResult + Send + 'static,
        on_panic: impl FnOnce(String) -> JobResult + Send + 'static,
    ) {
        let sender = JobSender { tx: self.tx.clone(), ctx: self.ctx.clone() };
        let tx = self.tx.clone();
        let ctx = self.ctx.clone();
        let running = self.running.clone();
        running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name(format!("tessera-{name}")).spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&sender))).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                on_panic(format!("crashed: {msg}"))
            });
            let _ = tx.send(result);
            running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(ctx) = ctx {
                ctx.request_repaint();
            }
        });
        if let Err(e) = spawned {
            self.running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            log::error!("could not start a {name} thread: {e}");
        }
    }

    /// Finished jobs, without waiting.
    pub fn drain(&self) -> Vec<JobResult> {
        self.rx.try_iter().collect()
    }

    /// Number of jobs still running (for the status bar and for tests that wait).
    pub fn running(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::SeqCst)
    }
}
