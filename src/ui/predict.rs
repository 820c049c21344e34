//! The Predict view: drop or open images (or a folder), see boxes with class names and scores over the
//! image, a confidence threshold that filters the cached predictions instantly, top-k probability bars, a
//! gallery, and export of annotated PNGs plus JSON.

use std::path::PathBuf;

use egui::{Color32, RichText};

use crate::data::project::{class_color, Task};
use crate::model::Prediction;

use super::canvas::{Canvas, CanvasBox};
use super::dialogs::{DialogKind, PendingDialog};
use super::images::{ImageKind, ImageSlot};
use super::state::{AppState, Message, PREDICT_FLOOR};
use super::theme;

#[derive(Default)]
pub struct PredictPanel {
    pub canvas: Canvas,
    pub path_input: String,
    pub export_dir: String,
    dialog: Option<(DialogKind, PendingDialog)>,
    /// How many boxes the last frame drew (what the user sees; tests read it).
    pub drawn_boxes: usize,
    last_selected: Option<u64>,
}

/// Detections of `p` at or above `threshold`.
pub fn visible_detections(p: &Prediction, threshold: f32) -> impl Iterator<Item = &crate::model::Detection> {
    p.detections.iter().filter(move |d| d.score >= threshold)
}

impl PredictPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        if let Some((_, d)) = &self.dialog {
            if let Some(paths) = d.poll() {
                self.dialog = None;
                if !paths.is_empty() {
                    out.push(Message::PredictPaths(paths));
                }
            }
        }
        self.drawn_boxes = 0;
        let names: Vec<String> = state
            .predictor
            .as_ref()
            .map(|p| p.class_names().to_vec())
            .unwrap_or_else(|| state.class_names());

        self.toolbar(ui, state, out);
        if state.predict_items.is_empty() {
            let body = if state.predictor.is_none() {
                "Drop images or a folder here. Train a model first (or load a checkpoint) to see predictions."
            } else {
                "Drop images or a folder anywhere on this window, or use Open images…"
            };
            theme::empty_state(ui, "▶", "Drop images to predict", body);
            return;
        }
        egui::Panel::right("predict_side").resizable(true).default_size(300.0).min_size(220.0).show(ui, |ui| {
            self.side(ui, state, &names, out);
        });
        egui::CentralPanel::no_frame().show(ui, |ui| {
            self.viewer(ui, state, &names);
        });
    }

    fn toolbar(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        ui.horizontal(|ui| {
            ui.label(RichText::new("Predict").size(20.0).strong());
            ui.add_space(10.0);
            let busy = self.dialog.is_some();
            if ui.add_enabled(!busy, egui::Button::new("🗋 Open images…")).clicked() {
                self.dialog = Some((DialogKind::PickImages, PendingDialog::open(DialogKind::PickImages, ui.ctx())));
            }
            if ui.add_enabled(!busy, egui::Button::new("🗁 Open folder…")).clicked() {
                self.dialog = Some((DialogKind::PickFolder, PendingDialog::open(DialogKind::PickFolder, ui.ctx())));
            }
            let r = ui.add(egui::TextEdit::singleline(&mut self.path_input).hint_text("or type an image / folder path").desired_width(220.0));
            let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui.button("Add").clicked() || enter) && !self.path_input.trim().is_empty() {
                out.push(Message::PredictPaths(vec![PathBuf::from(self.path_input.trim())]));
                self.path_input.clear();
            }
            ui.separator();
            let mut t = state.settings.threshold;
            let slider = egui::Slider::new(&mut t, PREDICT_FLOOR..=1.0).text("confidence threshold").fixed_decimals(2);
            if ui.add(slider).changed() {
                out.push(Message::SetThreshold(t));
            }
            if let Some(p) = &state.predictor {
                let mut flip = state.settings.flip_tta;
                let tip = if p.task() == Task::Classify {
                    "Test-time augmentation: average each image's class probabilities with its mirror image's \
                     (twice the compute; usually a little more accurate). Only for a model trained with mirrored \
                     images (augmentation: mirror); others look at the image itself only. \
                     Also used by Evaluate and label suggestions."
                } else {
                    "Test-time augmentation: also look at each image flipped and turned (as in training) and \
                     merge the boxes: finds more objects and places them better, at up to 8× the compute. \
                     Also used by Evaluate and label suggestions."
                };
                let tip = format!("{tip} This model: {} views per image.", p.tta_views());
                if ui.checkbox(&mut flip, "Flip TTA").on_hover_text(tip).changed() {
                    out.push(Message::SetFlipTta(flip));
                }
            }
        });
        ui.horizontal(|ui| {
            let done = state.predict_items.iter().filter(|i| i.prediction.is_some()).count();
            let total = state.predict_items.len();
            if total > 0 {
                if done < total && state.predictor.is_some() {
                    ui.spinner();
                }
                ui.label(RichText::new(format!("{done} of {total} predicted")).color(ui.visuals().weak_text_color()));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.add_enabled(total > 0, egui::Button::new("Clear")).clicked() {
                    out.push(Message::ClearPredictions);
                }
                let can_export = done > 0 && !state.exporting && !self.export_dir.trim().is_empty();
                if ui.add_enabled(can_export, egui::Button::new(if state.exporting { "Exporting…" } else { "⬇ Export PNG + JSON" })).on_hover_text("Annotated PNGs and predictions.json (boxes above the threshold)").clicked() {
                    out.push(Message::ExportPredictions(PathBuf::from(self.export_dir.trim())));
                }
                if self.export_dir.is_empty() {
                    if let Some(root) = state.project.as_ref().map(|p| p.root.join("predictions")) {
                        self.export_dir = root.display().to_string();
                    }
                }
                ui.add(egui::TextEdit::singleline(&mut self.export_dir).hint_text("export folder").desired_width(240.0));
                ui.label("Export to");
            });
        });
        ui.add_space(4.0);
    }

    fn viewer(&mut self, ui: &mut egui::Ui, state: &AppState, names: &[String]) {
        let Some(item) = state.predict_items.get(state.predict_selected) else { return };
        if self.last_selected != Some(item.id) {
            self.last_selected = Some(item.id);
            self.canvas.reset_view();
        }
        let (tex, size) = match state.images.get(&item.source(), ImageKind::Full) {
            ImageSlot::Ready(t, s) => (Some(t), s),
            ImageSlot::Failed(e) => {
                ui.colored_label(theme::BAD, format!("Cannot show {}: {e}", item.path.display()));
                return;
            }
            ImageSlot::Loading => (None, [1, 1]),
        };
        let mut boxes = Vec::new();
        if let Some(Ok(p)) = &item.prediction {
            for d in visible_detections(p, state.settings.threshold) {
                let c = d.bbox.class;
                let name = names.get(c).cloned().unwrap_or_else(|| format!("class {c}"));
                boxes.push(CanvasBox { bbox: d.bbox, color: theme::class_color(class_color(c)), label: format!("{name} {:.0}%", d.score * 100.0), suggestion: false });
            }
        }
        self.drawn_boxes = boxes.len();
        self.canvas.ui(ui, tex.as_ref(), size, &boxes, None, 0, Color32::WHITE, false);
    }

    fn side(&mut self, ui: &mut egui::Ui, state: &AppState, names: &[String], out: &mut Vec<Message>) {
        let task = state.predictor.as_ref().map(|p| p.task()).or(state.task()).unwrap_or_default();
        if let Some(item) = state.predict_items.get(state.predict_selected) {
            ui.add_space(6.0);
            ui.label(RichText::new(item.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).strong()).on_hover_text(item.path.display().to_string());
            match &item.prediction {
                None if state.predictor.is_none() => {
                    ui.label(RichText::new("No model loaded yet.").color(ui.visuals().weak_text_color()));
                }
                None => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Predicting…");
                    });
                }
                Some(Err(e)) => {
                    ui.label(RichText::new(format!("⚠ {e}")).color(theme::BAD));
                }
                Some(Ok(p)) => {
                    if task == Task::Detect {
                        let vis: Vec<_> = visible_detections(p, state.settings.threshold).collect();
                        theme::section(ui, &format!("{} object(s) ≥ {:.2}", vis.len(), state.settings.threshold));
                        for d in vis.iter().take(12) {
                            let c = d.bbox.class;
                            prob_bar(ui, names.get(c).map(|s| s.as_str()).unwrap_or("?"), d.score, theme::class_color(class_color(c)));
                        }
                        let hidden = p.detections.len() - vis.len();
                        if hidden > 0 {
                            ui.label(RichText::new(format!("{hidden} below the threshold")).small().color(ui.visuals().weak_text_color()));
                        }
                    }
                    if !p.probs.is_empty() {
                        let k = if task == Task::Classify { p.probs.len() } else { 5 };
                        theme::section(ui, if task == Task::Classify { "Class probabilities" } else { "Top classes" });
                        for (c, prob) in p.top_k(k) {
                            prob_bar(ui, names.get(c).map(|s| s.as_str()).unwrap_or("?"), prob, theme::class_color(class_color(c)));
                        }
                    }
                }
            }
            ui.separator();
        }
        theme::section(ui, &format!("Gallery ({})", state.predict_items.len()));
        let tile = 84.0;
        let per_row = ((ui.available_width() + 6.0) / (tile + 6.0)).floor().max(1.0) as usize;
        let rows = state.predict_items.len().div_ceil(per_row);
        egui::ScrollArea::vertical().auto_shrink([false, false]).id_salt("gallery").show_rows(ui, tile + 6.0, rows, |ui, range| {
            for row in range {
                ui.horizontal(|ui| {
                    for i in row * per_row..((row + 1) * per_row).min(state.predict_items.len()) {
                        let item = &state.predict_items[i];
                        let (rect, resp) = ui.allocate_exact_size(egui::vec2(tile, tile), egui::Sense::click());
                        let selected = i == state.predict_selected;
                        ui.painter().rect_filled(rect, 6.0, ui.visuals().faint_bg_color);
                        if let ImageSlot::Ready(t, orig) = state.images.get(&item.source(), ImageKind::Thumb) {
                            let o = egui::vec2(orig[0] as f32, orig[1] as f32);
                            let fit = ((tile - 6.0) / o.x).min((tile - 6.0) / o.y);
                            let r = egui::Rect::from_center_size(rect.center(), o * fit);
                            ui.painter().image(t.id(), r, egui::Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0)), Color32::WHITE);
                            if let Some(Ok(p)) = &item.prediction {
                                for d in visible_detections(p, state.settings.threshold) {
                                    let b = d.bbox;
                                    let br = egui::Rect::from_min_max(r.min + egui::vec2(b.xmin, b.ymin) * fit, r.min + egui::vec2(b.xmax, b.ymax) * fit);
                                    ui.painter().rect_stroke(br, 0.0, egui::Stroke::new(1.0, theme::class_color(class_color(b.class))), egui::StrokeKind::Outside);
                                }
                            }
                        }
                        let badge = match &item.prediction {
                            Some(Ok(p)) if task == Task::Classify => p.top_k(1).first().map(|&(c, _)| names.get(c).cloned().unwrap_or_default()).unwrap_or_default(),
                            Some(Ok(p)) => format!("{}", visible_detections(p, state.settings.threshold).count()),
                            Some(Err(_)) => "!".into(),
                            None => "…".into(),
                        };
                        let g = ui.painter().layout_no_wrap(badge, egui::FontId::proportional(11.0), Color32::WHITE);
                        let br = egui::Rect::from_min_size(rect.left_bottom() - egui::vec2(-3.0, g.size().y + 5.0), g.size() + egui::vec2(6.0, 2.0));
                        ui.painter().rect_filled(br, 3.0, Color32::from_black_alpha(170));
                        ui.painter().galley(br.min + egui::vec2(3.0, 1.0), g, Color32::WHITE);
                        if selected {
                            ui.painter().rect_stroke(rect, 6.0, egui::Stroke::new(2.5, theme::ACCENT), egui::StrokeKind::Inside);
                        }
                        if resp.clicked() {
                            out.push(Message::SelectPredictItem(i));
                        }
                    }
                });
            }
        });
    }
}

/// A labelled horizontal bar for a probability or score.
pub fn prob_bar(ui: &mut egui::Ui, name: &str, p: f32, color: Color32) {
    ui.horizontal(|ui| {
        ui.add_sized([90.0, 18.0], egui::Label::new(RichText::new(name).small()).truncate());
        ui.add(theme::progress_bar(ui, p, format!("{:.1}%", p * 100.0), color).desired_width(ui.available_width() - 4.0));
    });
}
