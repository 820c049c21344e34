//! The desktop app (eframe/egui). Depends on the engine; the engine never depends on it.

/// Opens the app window. `project` is opened at start if given; otherwise the last project or the demo.
pub fn run_app(project: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let _ = project;
    anyhow::bail!("the desktop app is not built yet")
}
