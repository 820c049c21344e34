//! The desktop app (eframe/egui). Depends on the engine; the engine never depends on it.
//!
//! Layout of this module (like the egui demo app):
//! - [`app`]: the `eframe::App`, top-level layout, shortcuts, and message dispatch.
//! - [`state`]: [`state::AppState`], everything the app knows, and [`state::Message`], every change to it.
//! - one file per view: [`project`], [`label`], [`train`], [`predict`], [`evaluate`], [`inside`].
//! - widgets: [`canvas`] (zoom/pan image canvas with box editing), [`charts`] (training curves).
//! - plumbing: [`jobs`] (background work), [`images`] (texture cache), [`engine`] (calls into the engine),
//!   [`theme`] (the look).
pub mod app;
pub mod canvas;
pub mod charts;
pub mod dialogs;
pub mod engine;
pub mod evaluate;
pub mod images;
pub mod inside;
pub mod jobs;
pub mod label;
pub mod predict;
pub mod project;
pub mod state;
pub mod theme;
pub mod train;

pub use app::TesseraApp;

/// Opens the app window. `project` is opened at start if given; otherwise the last project or the demo.
///
/// Environment (for scripts and screenshots; the CLI stays the lead's): `TESSERA_VIEW` picks the first view
/// (project, label, train, predict, evaluate, inside); `TESSERA_PREDICT` lists images/folders to predict
/// (separated by the platform's path separator); `TESSERA_TRAIN=1` starts training once the project is open;
/// `TESSERA_EVALUATE=1` evaluates once a model is loaded; `TESSERA_CONFIG_DIR` / `TESSERA_DATA_DIR` move the
/// app's own files; `TESSERA_THEME=light|dark|system` and `TESSERA_HELP=1` set the theme and open the help;
/// `TESSERA_FRAME_LOG=1` prints frame-time statistics to stderr every few seconds.
pub fn run_app(project: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).try_init();
    let paths = state::AppPaths::from_env();
    let autopilot = app::Autopilot::from_env();
    let viewport = egui::ViewportBuilder::default()
        .with_title("Tessera")
        .with_app_id("org.tessera.Tessera")
        .with_inner_size([1360.0, 860.0])
        .with_min_inner_size([900.0, 560.0])
        .with_drag_and_drop(true)
        .with_icon(app::icon());
    let options = eframe::NativeOptions { viewport, ..Default::default() };
    eframe::run_native(
        "Tessera",
        options,
        Box::new(move |cc| Ok(Box::new(TesseraApp::new(&cc.egui_ctx, paths, project, autopilot)))),
    )
    .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}
