//! The app's single doorway into the engine for the calls that are still landing on main (demo data,
//! dataset import, evaluation). Keeping them here means the panels never change when the engine does.

use std::path::{Path, PathBuf};

use crate::data::project::{Project, Split};
use crate::eval::EvalReport;
use crate::model::{PredictOptions, Predictor};

/// Writes the procedural shapes demo project into `dir` and returns it.
pub fn create_demo_project(dir: &Path) -> anyhow::Result<Project> {
    crate::data::demo::write_demo(dir, &crate::data::demo::DemoOptions::default())
}

/// Opens a Tessera project folder (or its tessera.json), or imports any supported dataset at `path`.
/// Import skips and warnings are kept in the project's warnings so the Project view can list them.
pub fn open_project_or_dataset(path: &Path) -> anyhow::Result<Project> {
    let (mut project, report) = crate::data::import::open_project_or_dataset(path)?;
    for s in &report.skipped {
        let w = format!("skipped {}: {}", s.path, s.reason);
        if !project.warnings.contains(&w) {
            project.warnings.push(w);
        }
    }
    for w in &report.warnings {
        if !project.warnings.contains(w) {
            project.warnings.push(w.clone());
        }
    }
    Ok(project)
}

/// Evaluates `predictor` on `split` of `project`, reporting `(done, total)` images as it goes.
/// Returns the report and notes about what was left out (undecodable images, classes the project lacks).
pub fn evaluate(
    predictor: &Predictor,
    project: &Project,
    split: Split,
    opts: &PredictOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> anyhow::Result<(EvalReport, Vec<String>)> {
    let ev = crate::eval::evaluate_with(predictor, project, split, opts, crate::eval::evaluate::DEFAULT_EVAL_BATCH, progress)?;
    let mut notes = Vec::new();
    if !ev.skipped.is_empty() {
        let names: Vec<String> = ev.skipped.iter().take(5).map(|s| format!("{} ({})", s.name, s.reason)).collect();
        notes.push(format!("{} image(s) could not be read and were left out: {}", ev.skipped.len(), names.join("; ")));
    }
    if !ev.unknown_classes.is_empty() {
        notes.push(format!("The model knows classes this project lacks (counted as wrong): {}", ev.unknown_classes.join(", ")));
    }
    Ok((ev.report, notes))
}

/// The compute device the engine uses, as shown in the header.
pub fn device_label() -> String {
    if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() {
        "CUDA".into()
    } else {
        "CPU".into()
    }
}

/// The checkpoint that ships in `assets/` (used by the first-run demo), if this installation has one.
pub fn shipped_checkpoint() -> Option<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var("TESSERA_ASSETS") {
        roots.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe() {
        for anc in exe.ancestors().skip(1).take(4) {
            roots.push(anc.join("assets"));
            // A macOS bundle keeps resources in Tessera.app/Contents/Resources.
            roots.push(anc.join("Resources").join("assets"));
        }
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets"));
    roots.push(PathBuf::from("/usr/share/tessera/assets"));
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut candidates: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.join("checkpoint.json").is_file()).collect();
        candidates.sort();
        if let Some(c) = candidates.into_iter().next() {
            return Some(c);
        }
    }
    None
}
