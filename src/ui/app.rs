//! The `eframe::App`: top bar, navigation, status bar, the current view, global shortcuts, drag-and-drop,
//! the help overlay and the quit-while-training question. Views emit [`Message`]s; this file applies them.

use std::path::PathBuf;
use std::time::Instant;

use egui::{Color32, Key, Modifiers, RichText};

use super::evaluate::EvaluatePanel;
use super::inside::InsidePanel;
use super::label::LabelPanel;
use super::predict::PredictPanel;
use super::project::ProjectPanel;
use super::state::{is_image_file, AppPaths, AppState, Message, NoticeLevel, ThemeChoice, View};
use super::theme;
use super::train::TrainPanel;

/// Things to do by themselves once possible (driven by environment variables, for screenshots and demos).
#[derive(Debug, Default, Clone)]
pub struct Autopilot {
    pub view: Option<View>,
    pub predict: Vec<PathBuf>,
    pub train: bool,
    pub evaluate: bool,
    pub frame_log: bool,
    pub help: bool,
    pub theme: Option<ThemeChoice>,
}

impl Autopilot {
    pub fn from_env() -> Autopilot {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Autopilot {
            view: var("TESSERA_VIEW").and_then(|v| View::from_name(&v)),
            predict: var("TESSERA_PREDICT").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default(),
            train: var("TESSERA_TRAIN").is_some_and(|v| v != "0"),
            evaluate: var("TESSERA_EVALUATE").is_some_and(|v| v != "0"),
            frame_log: var("TESSERA_FRAME_LOG").is_some_and(|v| v != "0"),
            help: var("TESSERA_HELP").is_some_and(|v| v != "0"),
            theme: var("TESSERA_THEME").and_then(|v| match v.to_ascii_lowercase().as_str() {
                "light" => Some(ThemeChoice::Light),
                "dark" => Some(ThemeChoice::Dark),
                "system" => Some(ThemeChoice::System),
                _ => None,
            }),
        }
    }
}

pub struct TesseraApp {
    pub state: AppState,
    pub project_panel: ProjectPanel,
    pub label_panel: LabelPanel,
    pub train_panel: TrainPanel,
    pub predict_panel: PredictPanel,
    pub evaluate_panel: EvaluatePanel,
    pub inside_panel: InsidePanel,
    autopilot: Autopilot,
    confirm_quit: bool,
    allow_close: bool,
    last_frame_log: Instant,
}

impl TesseraApp {
    /// The app as `tessera` starts it: settings from disk, then the given project, the last one, or the demo.
    pub fn new(ctx: &egui::Context, paths: AppPaths, project: Option<PathBuf>, autopilot: Autopilot) -> TesseraApp {
        let mut app = TesseraApp::with_state(ctx, AppState::new(paths), autopilot);
        app.state.startup(project);
        app
    }

    /// The app around an existing state, opening nothing by itself (tests build it this way).
    pub fn with_state(ctx: &egui::Context, state: AppState, autopilot: Autopilot) -> TesseraApp {
        theme::install(ctx);
        let mut app = TesseraApp {
            project_panel: ProjectPanel::default(),
            label_panel: LabelPanel::default(),
            train_panel: TrainPanel::default(),
            predict_panel: PredictPanel::default(),
            evaluate_panel: EvaluatePanel::default(),
            inside_panel: InsidePanel::default(),
            state,
            autopilot,
            confirm_quit: false,
            allow_close: false,
            last_frame_log: Instant::now(),
        };
        if let Some(v) = app.autopilot.view {
            app.state.view = v;
        }
        if let Some(t) = app.autopilot.theme {
            app.state.settings.theme = t;
        }
        app.state.show_help = app.autopilot.help;
        app
    }

    /// Applies messages (the only place state changes).
    pub fn apply(&mut self, messages: Vec<Message>) {
        for m in messages {
            self.state.apply(m);
        }
    }

    /// Draws one frame into `ui` (the whole window).
    pub fn frame(&mut self, ui: &mut egui::Ui) {
        let started = Instant::now();
        let ctx = ui.ctx().clone();
        self.state.poll(&ctx);
        ctx.set_theme(match self.state.settings.theme {
            ThemeChoice::System => egui::ThemePreference::System,
            ThemeChoice::Light => egui::ThemePreference::Light,
            ThemeChoice::Dark => egui::ThemePreference::Dark,
        });
        self.run_autopilot();

        let mut out: Vec<Message> = Vec::new();
        self.shortcuts(&ctx, &mut out);
        self.drag_and_drop(&ctx, &mut out);
        self.top_bar(ui, &mut out);
        self.status_bar(ui, &mut out);
        self.navigation(ui, &mut out);

        let frameless = matches!(self.state.view, View::Label);
        let central = if frameless { egui::CentralPanel::no_frame() } else { egui::CentralPanel::default() };
        central.show(ui, |ui| match self.state.view {
            View::Project => self.project_panel.ui(ui, &self.state, &mut out),
            View::Label => self.label_panel.ui(ui, &self.state, &mut out),
            View::Train => self.train_panel.ui(ui, &self.state, &mut out),
            View::Predict => self.predict_panel.ui(ui, &self.state, &mut out),
            View::Evaluate => self.evaluate_panel.ui(ui, &self.state, &mut out),
            View::Inside => self.inside_panel.ui(ui, &self.state, &mut out),
        });

        self.toasts(&ctx, &mut out);
        self.help_overlay(&ctx, &mut out);
        self.quit_guard(&ctx, &mut out);
        self.apply(out);

        let ms = started.elapsed().as_secs_f32() * 1000.0;
        self.state.record_frame(ms);
        if self.autopilot.frame_log && self.last_frame_log.elapsed().as_secs_f32() > 3.0 && !self.state.frame_times.is_empty() {
            self.last_frame_log = Instant::now();
            let (avg, max) = frame_stats(&self.state);
            eprintln!(
                "frame-time view={:?} training={} avg_ms={avg:.2} p50_ms={:.2} p95_ms={:.2} p99_ms={:.2} max_ms={max:.2} frames={}",
                self.state.view,
                self.state.is_training(),
                frame_percentile(&self.state, 0.50),
                frame_percentile(&self.state, 0.95),
                frame_percentile(&self.state, 0.99),
                self.state.frame_times.len()
            );
        }
    }

    fn run_autopilot(&mut self) {
        if !self.autopilot.predict.is_empty() && self.state.predictor.is_some() {
            let paths = std::mem::take(&mut self.autopilot.predict);
            let view = self.state.view;
            self.state.apply(Message::PredictPaths(paths));
            self.state.view = view;
        }
        if self.autopilot.train && self.state.project.is_some() {
            self.autopilot.train = false;
            self.state.apply(Message::StartTraining);
        }
        if self.autopilot.evaluate && self.state.project.is_some() && self.state.predictor.is_some() {
            self.autopilot.evaluate = false;
            self.state.apply(Message::RunEvaluation(crate::data::project::Split::Test));
        }
    }

    fn shortcuts(&mut self, ctx: &egui::Context, out: &mut Vec<Message>) {
        let typing = ctx.egui_wants_keyboard_input();
        ctx.input_mut(|i| {
            // While typing, Ctrl+Z belongs to the text field.
            if !typing && (i.consume_key(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z) || i.consume_key(Modifiers::COMMAND, Key::Y)) {
                out.push(Message::Redo);
            }
            if !typing && i.consume_key(Modifiers::COMMAND, Key::Z) {
                out.push(Message::Undo);
            }
            if i.consume_key(Modifiers::COMMAND, Key::S) {
                out.push(Message::SaveProject);
            }
            if i.consume_key(Modifiers::NONE, Key::F1) || (!typing && i.consume_key(Modifiers::SHIFT, Key::Questionmark)) || (!typing && i.consume_key(Modifiers::NONE, Key::Questionmark)) {
                out.push(Message::ToggleHelp);
            }
            let keys = [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6];
            for (v, k) in View::ALL.iter().zip(keys) {
                if i.consume_key(Modifiers::COMMAND, k) {
                    out.push(Message::ShowView(*v));
                }
            }
        });
    }

    fn drag_and_drop(&mut self, ctx: &egui::Context, out: &mut Vec<Message>) {
        let dropped: Vec<PathBuf> = ctx.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).collect());
        if dropped.is_empty() {
            return;
        }
        // Where dropped images go depends on the view: into the project while organising and labelling,
        // into the Predict view everywhere else. Projects and datasets are always opened.
        let into_project = matches!(self.state.view, View::Project | View::Label) && self.state.project.is_some();
        let mut images = Vec::new();
        for path in dropped {
            let is_project = path.join(crate::data::project::PROJECT_FILE).exists() || path.file_name().is_some_and(|n| n == crate::data::project::PROJECT_FILE);
            let image_folder = path.is_dir() && !is_project && (into_project || matches!(self.state.view, View::Predict)) && folder_of_images(&path);
            if is_project {
                out.push(Message::OpenPath(path));
            } else if is_image_file(&path) || image_folder {
                images.push(path);
            } else {
                // A dataset folder or annotation file: import it as a project.
                out.push(Message::OpenPath(path));
            }
        }
        if !images.is_empty() {
            out.push(if into_project { Message::AddImages(images) } else { Message::PredictPaths(images) });
        }
    }

    fn top_bar(&mut self, ui: &mut egui::Ui, out: &mut Vec<Message>) {
        egui::Panel::top("top_bar").frame(egui::Frame::side_top_panel(ui.style()).inner_margin(egui::Margin::symmetric(12, 8))).show(ui, |ui| {
            ui.horizontal(|ui| {
                brand(ui);
                ui.add_space(16.0);
                match &self.state.project {
                    Some(p) => {
                        ui.label(RichText::new(&p.name).size(16.0).strong()).on_hover_text(p.root.display().to_string());
                        theme::badge(ui, if p.task == crate::data::project::Task::Detect { "detection" } else { "classification" }, theme::ACCENT);
                    }
                    None => {
                        let text = if self.state.opening.is_some() { "Opening…" } else { "No project" };
                        ui.label(RichText::new(text).size(16.0).color(ui.visuals().weak_text_color()));
                    }
                }
                theme::badge(ui, &self.state.device, if self.state.device == "CPU" { Color32::from_rgb(130, 130, 140) } else { theme::GOOD });
                let model = match (&self.state.checkpoint, &self.state.loading_checkpoint) {
                    (_, Some(_)) => ("model: loading…".to_string(), theme::WARN),
                    (Some(c), None) => (format!("model: {}", short_checkpoint_name(c)), theme::GOOD),
                    (None, None) => ("no model yet".to_string(), Color32::from_rgb(130, 130, 140)),
                };
                theme::badge(ui, &model.0, model.1).on_hover_text(self.state.checkpoint.as_ref().map(|c| c.display().to_string()).unwrap_or_default());

                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    if ui.button("?").on_hover_text("Keyboard shortcuts (F1)").clicked() {
                        out.push(Message::ToggleHelp);
                    }
                    let (icon, next, tip) = match self.state.settings.theme {
                        ThemeChoice::System => ("🖥", ThemeChoice::Light, "Theme: follows the system (click for light)"),
                        ThemeChoice::Light => ("☀", ThemeChoice::Dark, "Theme: light (click for dark)"),
                        ThemeChoice::Dark => ("🌙", ThemeChoice::System, "Theme: dark (click to follow the system)"),
                    };
                    if ui.button(icon).on_hover_text(tip).clicked() {
                        out.push(Message::SetTheme(next));
                    }
                    if let Some(run) = self.state.active_run() {
                        let p = run.progress();
                        let r = ui.add(theme::progress_bar(ui, p, format!("{} {:.0}%", run.status.label(), p * 100.0), theme::ACCENT).desired_width(160.0));
                        if r.on_hover_text("Training: open the Train view").clicked() {
                            out.push(Message::ShowView(View::Train));
                        }
                    }
                });
            });
        });
    }

    fn navigation(&mut self, ui: &mut egui::Ui, out: &mut Vec<Message>) {
        egui::Panel::left("navigation").resizable(false).exact_size(176.0).show(ui, |ui| {
            ui.add_space(10.0);
            for (n, v) in View::ALL.iter().enumerate() {
                let selected = self.state.view == *v;
                let text = RichText::new(format!("{}   {}", v.icon(), v.title())).size(15.0);
                let button = egui::Button::selectable(selected, text).min_size(egui::vec2(ui.available_width(), 36.0));
                if ui.add(button).on_hover_text(format!("Ctrl+{}", n + 1)).clicked() {
                    out.push(Message::ShowView(*v));
                }
            }
            ui.with_layout(egui::Layout::bottom_up(egui::Align::Min), |ui| {
                ui.add_space(8.0);
                if let Some(p) = &self.state.project {
                    let labelled = p.images.iter().filter(|i| i.labeled || i.class.is_some() || !i.boxes.is_empty()).count();
                    ui.label(RichText::new(format!("{} images · {} labelled\n{} classes", p.images.len(), labelled, p.classes.len())).small().color(ui.visuals().weak_text_color()));
                }
            });
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui, out: &mut Vec<Message>) {
        egui::Panel::bottom("status_bar").frame(egui::Frame::side_top_panel(ui.style()).inner_margin(egui::Margin::symmetric(12, 4))).show(ui, |ui| {
            ui.horizontal(|ui| {
                let weak = ui.visuals().weak_text_color();
                let save = if let Some(e) = &self.state.save_error {
                    RichText::new(format!("⚠ not saved: {e}")).color(theme::BAD)
                } else if self.state.saving || self.state.dirty {
                    RichText::new("Saving…").color(weak)
                } else if let Some(t) = self.state.last_saved {
                    RichText::new(format!("✔ Saved {}", ago(t))).color(weak)
                } else if self.state.project.is_some() {
                    RichText::new("✔ All changes saved").color(weak)
                } else {
                    RichText::new("").color(weak)
                };
                ui.label(save);
                if self.state.opening.is_some() {
                    ui.spinner();
                    ui.label(RichText::new("Opening project…").color(weak));
                }
                if let Some(n) = self.state.notices.iter().rev().find(|n| n.level == NoticeLevel::Error) {
                    ui.separator();
                    ui.label(RichText::new(format!("⚠ {}", n.text)).color(theme::BAD)).on_hover_text(&n.text);
                    if ui.small_button("✖").clicked() {
                        out.push(Message::DismissNotice(n.id));
                    }
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let (avg, max) = frame_stats(&self.state);
                    let text = if self.state.frame_times.is_empty() {
                        "frame time: measuring…".to_string()
                    } else {
                        format!("frame {avg:.1} ms (p95 {:.1}, max {max:.1})", frame_percentile(&self.state, 0.95))
                    };
                    ui.label(RichText::new(text).small().color(weak))
                        .on_hover_text("Time spent building the UI per frame, over the last few seconds");
                    if self.state.jobs.running() > 0 {
                        ui.spinner();
                    }
                });
            });
        });
    }

    fn toasts(&mut self, ctx: &egui::Context, out: &mut Vec<Message>) {
        let recent: Vec<_> = self
            .state
            .notices
            .iter()
            .filter(|n| n.level != NoticeLevel::Error && n.at.elapsed().as_secs_f32() < 5.0)
            .rev()
            .take(3)
            .cloned()
            .collect();
        if recent.is_empty() {
            return;
        }
        ctx.request_repaint_after(std::time::Duration::from_millis(500));
        egui::Area::new(egui::Id::unique("toasts")).anchor(egui::Align2::RIGHT_BOTTOM, egui::vec2(-16.0, -40.0)).show(ctx, |ui| {
            for n in recent {
                egui::Frame::popup(ui.style()).show(ui, |ui| {
                    ui.set_max_width(380.0);
                    ui.horizontal(|ui| {
                        let color = if n.level == NoticeLevel::Warning { theme::WARN } else { theme::ACCENT };
                        ui.label(RichText::new("•").color(color));
                        ui.label(&n.text);
                        if ui.small_button("✖").clicked() {
                            out.push(Message::DismissNotice(n.id));
                        }
                    });
                });
            }
        });
    }

    fn help_overlay(&mut self, ctx: &egui::Context, out: &mut Vec<Message>) {
        if !self.state.show_help {
            return;
        }
        let modal = egui::Modal::new(egui::Id::unique("help")).show(ctx, |ui| {
            ui.set_width(520.0);
            ui.heading("Keyboard shortcuts");
            ui.add_space(6.0);
            let rows: &[(&str, &[(&str, &str)])] = &[
                ("Everywhere", &[("F1 or ?", "this help"), ("Ctrl+1 … Ctrl+6", "switch view"), ("Ctrl+S", "save now (autosave is on)"), ("Ctrl+Z", "undo"), ("Ctrl+Shift+Z, Ctrl+Y", "redo")]),
                ("Label", &[
                    ("drag on the image", "draw a box"),
                    ("W", "draw mode (draw even over boxes)"),
                    ("drag a box / a handle", "move / resize it"),
                    ("1 … 9", "class of the selected box, or of the image"),
                    ("A / D, ⬅ / ➡", "previous / next image"),
                    ("Del, Backspace", "delete the selected box"),
                    ("Space", "mark done, next image"),
                    ("P", "suggest labels with the model"),
                    ("Enter / Esc", "accept / reject suggestions"),
                    ("wheel, right-drag, F", "zoom to cursor, pan, fit"),
                ]),
                ("Predict", &[("drop images or a folder", "predict them"), ("threshold slider", "filters instantly")]),
            ];
            for (group, keys) in rows {
                theme::section(ui, group);
                egui::Grid::new(group).num_columns(2).spacing([24.0, 4.0]).min_col_width(220.0).striped(true).show(ui, |ui| {
                    for (k, what) in *keys {
                        ui.label(RichText::new(*k).monospace().strong());
                        ui.label(*what);
                        ui.end_row();
                    }
                });
            }
            ui.add_space(8.0);
            ui.vertical_centered(|ui| {
                if ui.button("Close").clicked() {
                    out.push(Message::ToggleHelp);
                }
            });
        });
        if modal.should_close() && !out.iter().any(|m| matches!(m, Message::ToggleHelp)) {
            out.push(Message::ToggleHelp);
        }
    }

    fn quit_guard(&mut self, ctx: &egui::Context, out: &mut Vec<Message>) {
        if ctx.input(|i| i.viewport().close_requested()) {
            if self.state.is_training() && !self.allow_close {
                ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
                self.confirm_quit = true;
            } else {
                self.state.save_blocking();
            }
        }
        if self.state.quit_after_stop && !self.state.is_training() {
            self.state.quit_after_stop = false;
            self.allow_close = true;
            self.state.save_blocking();
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if !self.confirm_quit {
            return;
        }
        egui::Modal::new(egui::Id::unique("confirm_quit")).show(ctx, |ui| {
            ui.set_width(420.0);
            ui.heading("Training is still running");
            ui.label("Quitting stops the run after the current step and saves its checkpoint. Your labels are saved.");
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                if ui.button(RichText::new("Stop, save and quit").color(theme::BAD)).clicked() {
                    out.push(Message::TrainCommand(crate::train::Command::Stop));
                    self.state.quit_after_stop = true;
                    self.confirm_quit = false;
                }
                if ui.button("Keep training").clicked() {
                    self.confirm_quit = false;
                }
            });
        });
    }
}

impl eframe::App for TesseraApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.frame(ui);
    }

    fn on_exit(&mut self) {
        // Stop a run that is still going (it writes its checkpoint) and never lose labels.
        for run in &self.state.runs {
            if let Some(h) = &run.handle {
                h.send(crate::train::Command::Stop);
            }
        }
        self.state.save_blocking();
    }
}

/// A folder holding images directly and no annotation files (so it is pictures, not a dataset to import).
fn folder_of_images(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut images = 0;
    for e in entries.flatten().take(2000) {
        let p = e.path();
        if is_image_file(&p) {
            images += 1;
        } else if p.is_dir() || p.extension().is_some_and(|x| matches!(x.to_string_lossy().to_ascii_lowercase().as_str(), "json" | "xml" | "txt" | "csv" | "yaml" | "yml")) {
            return false;
        }
    }
    images > 0
}

/// Average and maximum frame time (ms) over the recorded frames.
pub fn frame_stats(state: &AppState) -> (f32, f32) {
    let n = state.frame_times.len().max(1) as f32;
    let avg = state.frame_times.iter().sum::<f32>() / n;
    let max = state.frame_times.iter().copied().fold(0.0, f32::max);
    (avg, max)
}

/// The `q`-quantile (0..=1) of the recorded frame times (ms); 0 before the first frame.
pub fn frame_percentile(state: &AppState, q: f32) -> f32 {
    let mut v: Vec<f32> = state.frame_times.iter().copied().collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f32 * q.clamp(0.0, 1.0)).round() as usize]
}

fn ago(t: Instant) -> String {
    let s = t.elapsed().as_secs();
    match s {
        0..=4 => "just now".into(),
        5..=59 => format!("{s} s ago"),
        _ => format!("{} min ago", s / 60),
    }
}

fn short_checkpoint_name(p: &std::path::Path) -> String {
    let parts: Vec<String> = p.components().rev().take(2).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

fn brand(ui: &mut egui::Ui) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(22.0, 22.0), egui::Sense::hover());
    paint_logo(ui.painter(), rect);
    ui.label(RichText::new("Tessera").size(18.0).strong());
}

/// The logo: a 3×3 mosaic of tiles, one lit in the accent colour.
pub fn paint_logo(painter: &egui::Painter, rect: egui::Rect) {
    let cell = rect.width() / 3.0;
    for r in 0..3 {
        for c in 0..3 {
            let min = rect.min + egui::vec2(c as f32 * cell, r as f32 * cell);
            let tile = egui::Rect::from_min_size(min, egui::vec2(cell, cell)).shrink(cell * 0.08);
            let color = if (r, c) == (0, 2) || (r, c) == (1, 1) { theme::ACCENT } else { theme::ACCENT.gamma_multiply(0.45) };
            painter.rect_filled(tile, cell * 0.2, color);
        }
    }
}

/// The window icon (same mosaic as the logo), drawn in code so it never goes missing.
pub fn icon() -> egui::IconData {
    // The same icon the .deb installs (drawn by scripts/make-icon.py), embedded so the window always has it.
    const PNG: &[u8] = include_bytes!("../../assets/icon-64.png");
    match image::load_from_memory(PNG) {
        Ok(img) => {
            let rgba = img.to_rgba8();
            egui::IconData { width: rgba.width(), height: rgba.height(), rgba: rgba.into_raw() }
        }
        Err(_) => egui::IconData::default(),
    }
}
