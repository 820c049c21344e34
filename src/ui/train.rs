//! The Train view: settings (task, preset, pretraining, fine-tuning), start/pause/resume/stop/save,
//! live charts, progress with ETA, a strip of sample predictions on validation images, and the run list.

use egui::{Color32, RichText};

use crate::data::project::Task;
use crate::data::readiness::UNLABELLED_WORTH_PRETRAINING;
use crate::train::data::Augment;
use crate::train::run::default_augment;
use crate::train::worker::CLASSIFY_LARGE_SET;
use crate::train::Objective;
use crate::train::Command;

use super::charts::{self, ChartOptions};
use super::dialogs::{DialogKind, PendingDialog};
use super::images::{ImageKind, ImageSlot};
use super::state::{AppState, Message, RunStatus, TrainSettings};
use super::theme;

#[derive(Default)]
pub struct TrainPanel {
    pub charts: ChartOptions,
    dialog: Option<PendingDialog>,
    /// `data::readiness` warnings and pretraining advice for the project at this revision (recomputed only when
    /// the project changes).
    data_check: Option<DataCheck>,
}

struct DataCheck {
    revision: u64,
    task: Task,
    warnings: Vec<String>,
    pretraining_advice: Option<String>,
}

const PRESETS: [(&str, &str); 3] = [("tiny", "Tiny: fastest, fine on a CPU"), ("small", "Small: better, wants a few minutes"), ("base", "Base: best, wants a GPU")];

impl TrainPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        if let Some(d) = &self.dialog {
            if let Some(p) = d.poll() {
                self.dialog = None;
                if let Some(p) = p.into_iter().next() {
                    out.push(Message::LoadCheckpoint(if p.is_file() { p.parent().map(|d| d.to_path_buf()).unwrap_or(p) } else { p }));
                }
            }
        }
        let Some(project) = &state.project else {
            theme::empty_state(ui, "⟳", "No project open", "Open a project to train a model on it.");
            return;
        };
        if self.data_check.as_ref().map(|c| (c.revision, c.task)) != Some((state.revision, project.task)) {
            self.data_check = Some(DataCheck {
                revision: state.revision,
                task: project.task,
                warnings: crate::data::readiness::check(project, project.task),
                pretraining_advice: crate::data::readiness::pretraining_advice(project, project.task),
            });
        }
        egui::Panel::left("train_settings").resizable(false).exact_size(320.0).show(ui, |ui| {
            egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
                self.settings_ui(ui, state, project.task, out);
            });
        });
        egui::CentralPanel::default().show(ui, |ui| {
            egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
                self.run_ui(ui, state, out);
            });
        });
    }

    fn settings_ui(&mut self, ui: &mut egui::Ui, state: &AppState, task: Task, out: &mut Vec<Message>) {
        let mut t: TrainSettings = state.settings.train.clone();
        let locked = state.is_training();
        let train_images = state.train_image_count();
        let (labelled, unlabelled) = state.labelled_and_unlabelled();
        theme::view_header(ui, "Train", "Teach the transformer your labels.");
        ui.add_enabled_ui(!locked, |ui| {
            theme::section(ui, "Model");
            ui.label(RichText::new(format!("Task: {}", if task == Task::Detect { "object detection" } else { "classification" })).color(ui.visuals().weak_text_color()));
            egui::ComboBox::from_id_salt("preset").width(280.0).selected_text(PRESETS.iter().find(|p| p.0 == t.preset).map(|p| p.1).unwrap_or(&t.preset)).show_ui(ui, |ui| {
                for (k, label) in PRESETS {
                    ui.selectable_value(&mut t.preset, k.to_string(), label);
                }
            });
            egui::Grid::new("model_grid").num_columns(2).spacing([10.0, 6.0]).show(ui, |ui| {
                ui.label("Image size");
                let shown = t.image_size.map(|s| format!("{s} px")).unwrap_or_else(|| "automatic".into());
                egui::ComboBox::from_id_salt("image_size").selected_text(shown).show_ui(ui, |ui| {
                    ui.selectable_value(&mut t.image_size, None, "automatic (from the images)")
                        .on_hover_text("The images' typical side, at most the preset's. Detection goes up to twice that so small objects stay visible.");
                    for s in [32, 48, 64, 96, 128, 160, 224] {
                        ui.selectable_value(&mut t.image_size, Some(s), format!("{s} px"));
                    }
                });
                ui.end_row();
                ui.label("Device");
                ui.checkbox(&mut t.use_gpu, "use the GPU if there is one");
                ui.end_row();
            });

            ui.separator();
            theme::section(ui, "Pretraining (generative)");
            ui.checkbox(&mut t.pretrain, "Pretrain on all images first");
            ui.label(RichText::new("Predicts each next patch of every image, unlabelled ones included; helps when labels are few.").small().color(ui.visuals().weak_text_color()));
            ui.add_enabled_ui(t.pretrain, |ui| {
                egui::Grid::new("pre_grid").num_columns(2).spacing([10.0, 6.0]).show(ui, |ui| {
                    ui.label("Epochs");
                    ui.add(egui::DragValue::new(&mut t.pretrain_epochs).range(0.5..=500.0).speed(0.5));
                    ui.end_row();
                    ui.checkbox(&mut t.pretrain_time_limit, "Time limit");
                    ui.add_enabled(t.pretrain_time_limit, egui::DragValue::new(&mut t.pretrain_minutes).range(0.5..=10_000.0).speed(0.5).suffix(" min"));
                    ui.end_row();
                    ui.label("Learning rate");
                    ui.add(egui::DragValue::new(&mut t.pretrain_lr).range(1e-6..=1e-1).speed(1e-5).custom_formatter(|v, _| format!("{v:.0e}")));
                    ui.end_row();
                });
            });

            ui.separator();
            theme::section(ui, "Fine-tuning");
            egui::Grid::new("ft_grid").num_columns(2).spacing([10.0, 6.0]).show(ui, |ui| {
                ui.label("Epochs");
                ui.add(egui::DragValue::new(&mut t.epochs).range(0.5..=1000.0).speed(0.5));
                ui.end_row();
                ui.checkbox(&mut t.time_limit, "Time limit");
                ui.add_enabled(t.time_limit, egui::DragValue::new(&mut t.minutes).range(0.5..=10_000.0).speed(0.5).suffix(" min"));
                ui.end_row();
                let objective = Objective::from(task);
                ui.label("Batch size");
                ui.horizontal(|ui| {
                    let auto = ui.checkbox(&mut t.batch_auto, "auto").on_hover_text(format!(
                        "The default for the task and the data: 64 images per step for classification sets of {CLASSIFY_LARGE_SET} training images or more (unlabelled ones count while the generative loss is on), else 16. Here: {train_images}"
                    ));
                    if auto.changed() && !t.batch_auto {
                        // Unticking starts editing from the size the run would have used.
                        t.batch_size = t.effective_batch_size(objective, train_images);
                    }
                    if t.batch_auto {
                        let mut shown = t.effective_batch_size(objective, train_images);
                        ui.add_enabled(false, egui::DragValue::new(&mut shown));
                    } else {
                        ui.add(egui::DragValue::new(&mut t.batch_size).range(1..=512));
                    }
                });
                ui.end_row();
                ui.label("Learning rate");
                ui.horizontal(|ui| {
                    let auto = ui.checkbox(&mut t.lr_auto, "auto").on_hover_text(format!(
                        "The default for the task and the data: 2e-3 for detection and for classification sets of {CLASSIFY_LARGE_SET} training images or more (unlabelled ones count while the generative loss is on), else 1e-3. Here: {train_images}"
                    ));
                    if auto.changed() && !t.lr_auto {
                        // Unticking starts editing from the rate the run would have used.
                        t.lr = t.effective_lr(task, train_images);
                    }
                    if t.lr_auto {
                        let mut shown = t.effective_lr(task, train_images);
                        ui.add_enabled(false, egui::DragValue::new(&mut shown).custom_formatter(|v, _| format!("{v:.0e}")));
                    } else {
                        ui.add(egui::DragValue::new(&mut t.lr).range(1e-6..=1e-1).speed(1e-5).custom_formatter(|v, _| format!("{v:.0e}")));
                    }
                });
                ui.end_row();
                ui.label("Generative loss").on_hover_text(
                    "Keeps pretraining's objective (predict the next patch's pixels) on every training image, labelled or not, while fine-tuning. It lets unlabelled images keep teaching the model; each step takes about twice as long.",
                );
                ui.horizontal(|ui| {
                    let has_model = state.checkpoint.is_some();
                    let auto = ui.checkbox(&mut t.generative_auto, "auto").on_hover_text(format!(
                        "1 when fine-tuning pretrained weights and unlabelled training images are at least as many as labelled ones (and {UNLABELLED_WORTH_PRETRAINING} or more), else 0. Here: {labelled} labelled, {unlabelled} unlabelled"
                    ));
                    if auto.changed() && !t.generative_auto {
                        t.generative_aux = t.effective_generative_aux(task, has_model, labelled, unlabelled);
                    }
                    if t.generative_auto {
                        let mut shown = t.effective_generative_aux(task, has_model, labelled, unlabelled);
                        ui.add_enabled(false, egui::DragValue::new(&mut shown).max_decimals(2));
                    } else {
                        ui.add(egui::DragValue::new(&mut t.generative_aux).range(0.0..=10.0).speed(0.05).max_decimals(2));
                    }
                });
                ui.end_row();
                ui.label("Warm-up steps");
                ui.add(egui::DragValue::new(&mut t.warmup_steps).range(0..=100_000));
                ui.end_row();
                ui.label("Weight decay");
                ui.add(egui::DragValue::new(&mut t.weight_decay).range(0.0..=1.0).speed(0.005));
                ui.end_row();
                ui.label("Seed");
                ui.add(egui::DragValue::new(&mut t.seed));
                ui.end_row();
            });
            if state.project.is_some() {
                augment_ui(ui, &mut t, task, train_images);
            }
            ui.checkbox(&mut t.ema, "EMA of the weights");
            ui.horizontal(|ui| {
                ui.checkbox(&mut t.early_stop, "Early stop after");
                ui.add_enabled(t.early_stop, egui::DragValue::new(&mut t.patience).range(1..=100));
                ui.label("evals");
            });
            ui.add_enabled(!t.pretrain && state.checkpoint.is_some(), egui::Checkbox::new(&mut t.init_from_current, "Start from the current model"));
            ui.add_space(6.0);
            if ui.button("Reset to defaults").clicked() {
                t = TrainSettings::default();
            }
        });
        if t != state.settings.train {
            out.push(Message::SetTrainSettings(t));
        }
        ui.separator();
        theme::section(ui, "Model file");
        ui.horizontal(|ui| {
            if ui.add_enabled(self.dialog.is_none(), egui::Button::new("🗁 Load checkpoint…")).clicked() {
                self.dialog = Some(PendingDialog::open(DialogKind::PickCheckpoint, ui.ctx()));
            }
        });
        if let Some(e) = &state.model_error {
            ui.label(RichText::new(e).small().color(theme::BAD));
        }
    }

    /// Advice about the data before (and during) a run: rare or missing classes, imbalance, missing splits; and,
    /// where most training images are unlabelled and the run would not start from trained weights, the advice to
    /// pretrain with a button that turns it on.
    fn data_check_ui(&self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        let Some(check) = &self.data_check else { return };
        let advice = check.pretraining_advice.as_ref().filter(|_| !state.settings.train.fine_tunes(state.checkpoint.is_some()));
        let shown = check.warnings.len() + usize::from(advice.is_some());
        if shown == 0 {
            return;
        }
        theme::card(ui).show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.label(RichText::new(format!("⚠ Data check ({shown})")).strong().color(theme::WARN));
            for w in check.warnings.iter().chain(advice) {
                ui.label(RichText::new(format!("• {w}")).small());
            }
            if advice.is_some()
                && ui
                    .button("Turn on pretraining")
                    .on_hover_text("Turns on Pretraining in the settings: the next run pretrains, then fine-tunes with the generative loss kept on")
                    .clicked()
            {
                out.push(Message::SetTrainSettings(TrainSettings { pretrain: true, ..state.settings.train.clone() }));
            }
        });
        ui.add_space(6.0);
    }

    fn run_ui(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        let active = state.runs.iter().rposition(|r| r.status.is_active());
        let shown = active.or_else(|| state.runs.len().checked_sub(1));
        self.data_check_ui(ui, state, out);
        // Controls and progress.
        theme::card(ui).show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal(|ui| {
                match active.map(|i| &state.runs[i].status) {
                    None => {
                        if ui.add(egui::Button::new(RichText::new("▶  Start training").size(16.0).color(Color32::WHITE)).fill(theme::ACCENT).min_size(egui::vec2(170.0, 34.0))).clicked() {
                            out.push(Message::StartTraining);
                        }
                    }
                    Some(status) => {
                        if *status == RunStatus::Paused {
                            if ui.button("▶ Resume").clicked() {
                                out.push(Message::TrainCommand(Command::Resume));
                            }
                        } else if ui.add_enabled(*status == RunStatus::Running, egui::Button::new("⏸ Pause")).clicked() {
                            out.push(Message::TrainCommand(Command::Pause));
                        }
                        if ui.add_enabled(*status != RunStatus::Stopping, egui::Button::new("⏹ Stop")).on_hover_text("Stop after this step and save the checkpoint").clicked() {
                            out.push(Message::TrainCommand(Command::Stop));
                        }
                        if ui.button("💾 Save now").on_hover_text("Write a checkpoint and keep training").clicked() {
                            out.push(Message::TrainCommand(Command::SaveNow));
                        }
                    }
                }
                if let Some(run) = shown.map(|i| &state.runs[i]) {
                    ui.add_space(10.0);
                    let color = match &run.status {
                        RunStatus::Failed(_) => theme::BAD,
                        RunStatus::Finished(_) => theme::GOOD,
                        _ => theme::ACCENT,
                    };
                    theme::badge(ui, &format!("{} · {}", run.name, run.status.label()), color);
                    if run.parameters > 0 {
                        // The augmentation goes in the tooltip: this row has no room for it beside the buttons.
                        let shape = format!("{:.2} M parameters · {} px · {}", run.parameters as f64 / 1e6, run.image_size, run.device);
                        ui.label(RichText::new(shape).color(ui.visuals().weak_text_color()))
                            .on_hover_text(format!("Augmentation: {}", run.augmentation));
                    }
                }
            });
            if let Some(run) = shown.map(|i| &state.runs[i]) {
                if let RunStatus::Failed(msg) = &run.status {
                    ui.label(RichText::new(format!("⚠ {msg}")).color(theme::BAD));
                }
                let last = run.steps.last();
                let p = run.progress();
                ui.add(theme::progress_bar(ui, p, format!("{:.0}%", p * 100.0), theme::ACCENT).desired_height(16.0));
                ui.horizontal_wrapped(|ui| {
                    let weak = ui.visuals().weak_text_color();
                    match last {
                        Some(s) => {
                            let loss = s.losses.iter().map(|(n, v)| format!("{n} {v:.4}")).collect::<Vec<_>>().join(" · ");
                            for (k, v) in [
                                ("step", format!("{} / {}", s.step, run.total_steps)),
                                ("epoch", format!("{:.2}", s.epoch)),
                                ("loss", loss),
                                ("lr", format!("{:.2e}", s.lr)),
                                ("speed", format!("{:.1} img/s", s.images_per_sec)),
                                ("elapsed", fmt_duration(s.elapsed_s)),
                                ("ETA", if run.status.is_active() { fmt_duration(s.eta_s) } else { "—".into() }),
                            ] {
                                ui.label(RichText::new(k).small().color(weak));
                                ui.label(RichText::new(v).strong());
                                ui.add_space(8.0);
                            }
                            if let Some((name, m)) = run.best_metric() {
                                ui.label(RichText::new(format!("best {name}")).small().color(weak));
                                ui.label(RichText::new(format!("{m:.4}")).strong().color(theme::GOOD));
                            }
                        }
                        None if run.status.is_active() => {
                            ui.spinner();
                            ui.label(RichText::new("Preparing data and model…").color(weak));
                        }
                        None => {}
                    }
                });
            } else {
                ui.label(RichText::new("Press Start: the curves appear here as the model learns. Closing the window asks before stopping a run.").color(ui.visuals().weak_text_color()));
            }
        });
        ui.add_space(8.0);

        // Charts: the shown run plus the ones ticked for comparison.
        let runs: Vec<(usize, &super::state::TrainingRun)> =
            state.runs.iter().enumerate().filter(|(i, r)| Some(*i) == shown || r.compare).collect();
        ui.horizontal(|ui| {
            theme::section(ui, "Curves");
            ui.add_space(12.0);
            ui.checkbox(&mut self.charts.log_scale, "log scale");
            ui.label("smoothing");
            ui.add(egui::Slider::new(&mut self.charts.smoothing, 0.0..=0.99).fixed_decimals(2));
        });
        let w = ui.available_width();
        let h = 210.0;
        ui.columns(2, |cols| {
            cols[0].label(RichText::new("Loss (train solid, validation dashed)").small());
            charts::loss_chart(&mut cols[0], &runs, self.charts, h);
            let no_evals_yet = runs.iter().all(|(_, r)| r.evals.is_empty());
            let title = if no_evals_yet && !runs.is_empty() {
                "Validation metric per epoch (first point after the first evaluation)"
            } else {
                "Validation metric per epoch"
            };
            cols[1].label(RichText::new(title).small());
            charts::metric_chart(&mut cols[1], &runs, h);
        });
        ui.columns(2, |cols| {
            cols[0].label(RichText::new("Learning rate").small());
            charts::lr_chart(&mut cols[0], &runs, h * 0.7);
            cols[1].label(RichText::new("Throughput (images/s)").small());
            charts::throughput_chart(&mut cols[1], &runs, h * 0.7);
        });
        let _ = w;

        // Sample predictions on validation images.
        if let (Some(run), Some(project)) = (shown.map(|i| &state.runs[i]), &state.project) {
            if !run.samples.is_empty() {
                ui.add_space(8.0);
                theme::section(ui, "Validation samples (refresh as the model learns)");
                egui::ScrollArea::horizontal().id_salt("samples").show(ui, |ui| {
                    ui.horizontal(|ui| {
                        for s in &run.samples {
                            if s.image_index >= project.images.len() {
                                continue;
                            }
                            sample_tile(ui, state, project, s);
                        }
                    });
                });
            }
        }

        // Runs.
        if !state.runs.is_empty() {
            ui.add_space(8.0);
            theme::section(ui, "Runs");
            egui::Grid::new("runs").num_columns(6).spacing([14.0, 6.0]).striped(true).show(ui, |ui| {
                for h in ["compare", "run", "status", "steps", "best", ""] {
                    ui.label(RichText::new(h).small().color(ui.visuals().weak_text_color()));
                }
                ui.end_row();
                for (i, r) in state.runs.iter().enumerate().rev() {
                    let mut c = r.compare || Some(i) == shown;
                    if ui.add_enabled(Some(i) != shown, egui::Checkbox::without_text(&mut c)).changed() {
                        out.push(Message::ToggleCompare(i));
                    }
                    ui.horizontal(|ui| {
                        theme::swatch(ui, charts::series_color(i, ""));
                        ui.label(RichText::new(&r.name).strong());
                    });
                    ui.label(r.status.label());
                    ui.label(r.steps.last().map(|s| s.step.to_string()).unwrap_or_else(|| "—".into()));
                    ui.label(r.best_metric().map(|(n, m)| format!("{n} {m:.4}")).unwrap_or_else(|| "—".into()));
                    let is_current = r.checkpoint.is_some() && r.checkpoint == state.checkpoint;
                    if is_current {
                        theme::badge(ui, "in use", theme::GOOD);
                    } else if ui.add_enabled(r.checkpoint.is_some() && !r.status.is_active(), egui::Button::new("Use this model")).clicked() {
                        out.push(Message::UseRunCheckpoint(i));
                    }
                    ui.end_row();
                }
            });
        }
    }
}

fn sample_tile(ui: &mut egui::Ui, state: &AppState, project: &crate::data::project::Project, s: &crate::train::worker::SamplePrediction) {
    let size = egui::vec2(150.0, 150.0);
    theme::card(ui).inner_margin(egui::Margin::same(6)).show(ui, |ui| {
        ui.vertical(|ui| {
            let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
            let im = &project.images[s.image_index];
            if let ImageSlot::Ready(tex, orig) = state.images.get(&project.source_of(s.image_index), ImageKind::Thumb) {
                let o = egui::vec2(orig[0] as f32, orig[1] as f32);
                let fit = (size.x / o.x).min(size.y / o.y);
                let r = egui::Rect::from_center_size(rect.center(), o * fit);
                ui.painter().image(tex.id(), r, egui::Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0)), Color32::WHITE);
                for (b, score) in &s.boxes {
                    let color = project.classes.get(b.class).map(|c| theme::class_color(c.color)).unwrap_or(Color32::RED);
                    let br = egui::Rect::from_min_max(r.min + egui::vec2(b.xmin, b.ymin) * fit, r.min + egui::vec2(b.xmax, b.ymax) * fit);
                    ui.painter().rect_stroke(br, 0.0, egui::Stroke::new(1.5, color.gamma_multiply(0.4 + 0.6 * score)), egui::StrokeKind::Outside);
                }
            } else {
                ui.painter().rect_filled(rect, 4.0, ui.visuals().faint_bg_color);
            }
            let name = |c: usize| project.classes.get(c).map(|c| c.name.clone()).unwrap_or_else(|| format!("#{c}"));
            let caption = if let Some(&(c, p)) = s.top_classes.first() {
                let ok = im.class == Some(c);
                RichText::new(format!("{} {:.0}%", name(c), p * 100.0)).color(if ok { theme::GOOD } else { theme::BAD })
            } else {
                RichText::new(format!("{} found · {} true", s.boxes.len(), im.boxes.len()))
            };
            ui.label(caption.small());
        });
    });
}

pub fn fmt_duration(s: f32) -> String {
    if !s.is_finite() || s < 0.0 {
        return "—".into();
    }
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Fine-tuning's data augmentation: automatic (the engine's choice for this task and data size, shown in words) or
/// chosen by hand, starting from the automatic choice.
fn augment_ui(ui: &mut egui::Ui, t: &mut TrainSettings, task: Task, train_images: usize) {
    // Whether a classifier's images get mirrored is decided from their pixels when training starts; the manual
    // settings start without it.
    let automatic = default_augment(Objective::from(task), train_images, false);
    let mut auto = t.augment.is_none();
    let toggle = ui
        .checkbox(&mut auto, "Automatic augmentation")
        .on_hover_text("Random changes to the training images so the model learns what matters, not the exact pixels.");
    if toggle.changed() {
        t.augment = if auto { None } else { Some(automatic) };
    }
    let weak = ui.visuals().weak_text_color();
    let Some(a) = &mut t.augment else {
        let checks_mirror = task == Task::Classify && train_images < crate::train::run::CLASSIFY_AUGMENT_BELOW;
        let mirror = if checks_mirror { " Mirrored too if the classes look alike in a mirror (checked when training starts)." } else { "" };
        ui.label(RichText::new(format!("For this project: {}.{mirror}", automatic.describe())).small().color(weak));
        return;
    };
    ui.checkbox(&mut a.hflip, "Mirror left–right")
        .on_hover_text("For images whose class does not change in a mirror (clothes, animals, cells); not for digits or text.");
    ui.checkbox(&mut a.dihedral, "Flip upside down and turn by 90°")
        .on_hover_text("For images without an up direction: cells under a microscope, aerial photos, the shapes demo.");
    egui::Grid::new("augment_grid").num_columns(2).spacing([10.0, 6.0]).show(ui, |ui| {
        ui.label("Shift up to");
        let mut shift = a.translate * 100.0;
        if ui.add(egui::DragValue::new(&mut shift).range(0.0..=30.0).speed(0.5).suffix(" %")).changed() {
            a.translate = shift / 100.0;
        }
        ui.end_row();
        ui.label("Zoom up to").on_hover_text("Zooms each image in or out by up to this factor (1× = off).");
        let mut zoom = a.scale.1.max(1.0 / a.scale.0.max(0.1));
        if ui.add(egui::DragValue::new(&mut zoom).range(1.0..=2.0).speed(0.01).suffix("×")).changed() {
            a.scale = (1.0 / zoom, zoom);
        }
        ui.end_row();
        ui.label("Random erasing").on_hover_text(
            "In this share of the training images, a random rectangle becomes noise: a regulariser for classification \
             runs long enough to overfit (Fashion-MNIST, 60 minutes: 50 %).",
        );
        let mut erase = a.erase * 100.0;
        if ui.add(egui::DragValue::new(&mut erase).range(0.0..=100.0).speed(1.0).suffix(" %")).changed() {
            a.erase = erase / 100.0;
        }
        ui.end_row();
        ui.label("CutMix").on_hover_text(
            "In this share of the training batches, each image gets a rectangle of another image pasted in and learns \
             both classes by their areas: a regulariser for long classification runs. Classification only.",
        );
        let mut cutmix = a.cutmix * 100.0;
        if ui.add(egui::DragValue::new(&mut cutmix).range(0.0..=100.0).speed(1.0).suffix(" %")).changed() {
            a.cutmix = cutmix / 100.0;
        }
        ui.end_row();
    });
    if task == Task::Detect && a.erase > 0.0 {
        ui.label(RichText::new("Erasing does not move the boxes: an erased object keeps its box. Not meant for detection.").small().color(theme::WARN));
    }
    if task == Task::Detect && a.cutmix > 0.0 {
        ui.label(RichText::new("CutMix mixes class labels, not boxes: detection runs ignore it.").small().color(weak));
    }
    if *a == Augment::none() {
        ui.label(RichText::new("No augmentation: the model sees the same images every epoch.").small().color(weak));
    }
}
