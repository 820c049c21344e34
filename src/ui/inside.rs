//! The "Look inside" view: where the transformer looks (attention over the image patches, per layer, for
//! a chosen prediction) and, for a pretrained model, how it imagines the rest of the image patch by patch.

use egui::{Color32, RichText};

use crate::data::project::{ImageSource, Task};

use super::images::{ImageKind, ImageSlot};
use super::state::{AppState, Message};
use super::theme;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InsideSource {
    /// The image selected in the Label view.
    #[default]
    LabelImage,
    /// The image selected in the Predict view.
    PredictImage,
}

pub struct InsidePanel {
    pub source: InsideSource,
    /// Which detection to explain (detection models).
    pub object: usize,
    /// Layer shown; `None` = the mean over layers.
    pub layer: Option<usize>,
    /// Patches kept as given before the model continues the image.
    pub keep_fraction: f32,
    pub opacity: f32,
}

impl Default for InsidePanel {
    fn default() -> Self {
        InsidePanel { source: InsideSource::LabelImage, object: 0, layer: None, keep_fraction: 0.5, opacity: 0.65 }
    }
}

impl InsidePanel {
    fn chosen(&self, state: &AppState) -> Option<(ImageSource, String, Vec<String>)> {
        match self.source {
            InsideSource::LabelImage => {
                let p = state.project.as_ref()?;
                let i = state.current_image.filter(|&i| i < p.images.len())?;
                // The objects are the model's own detections (in decoding order), not the labels.
                let objects = state
                    .suggestions
                    .get(&i)
                    .map(|s| s.boxes.iter().map(|(b, score)| format!("{} {:.0}%", p.classes.get(b.class).map(|c| c.name.as_str()).unwrap_or("?"), score * 100.0)).collect())
                    .unwrap_or_default();
                Some((p.source_of(i), p.images[i].source.display_name(), objects))
            }
            InsideSource::PredictImage => {
                let item = state.predict_items.get(state.predict_selected)?;
                let names = state.predictor.as_ref().map(|p| p.class_names().to_vec()).unwrap_or_default();
                let objects = match &item.prediction {
                    Some(Ok(p)) => p.detections.iter().filter(|d| d.score >= state.settings.threshold).map(|d| format!("{} {:.0}%", names.get(d.bbox.class).cloned().unwrap_or_default(), d.score * 100.0)).collect(),
                    _ => Vec::new(),
                };
                Some((item.source(), item.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), objects))
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
            theme::view_header(ui, "Look inside", "What the transformer attends to, and what it imagines: its generative view of the image.");
            let Some(predictor) = &state.predictor else {
                theme::empty_state(ui, "◎", "No model yet", "Train a model (or load a checkpoint) to look inside it.");
                return;
            };
            ui.horizontal(|ui| {
                ui.label("Image");
                ui.selectable_value(&mut self.source, InsideSource::LabelImage, "selected in Label");
                ui.selectable_value(&mut self.source, InsideSource::PredictImage, "selected in Predict");
            });
            let Some((source, name, objects)) = self.chosen(state) else {
                ui.label(RichText::new("Select an image in that view first.").color(ui.visuals().weak_text_color()));
                return;
            };
            let task = predictor.task();
            ui.horizontal(|ui| {
                ui.label(RichText::new(&name).strong());
                if task == Task::Detect {
                    ui.separator();
                    ui.label("Object");
                    let text = objects.get(self.object).cloned().unwrap_or_else(|| format!("detection #{}", self.object + 1));
                    egui::ComboBox::from_id_salt("inside_object").selected_text(text).show_ui(ui, |ui| {
                        let n = objects.len().max(5);
                        for i in 0..n {
                            let label = objects.get(i).cloned().unwrap_or_else(|| format!("detection #{}", i + 1));
                            ui.selectable_value(&mut self.object, i, label);
                        }
                    });
                }
                ui.separator();
                ui.label("Overlay");
                ui.add(egui::Slider::new(&mut self.opacity, 0.0..=1.0).show_value(false));
            });

            let object = (task == Task::Detect).then_some(self.object);
            let key = format!("{source:?}|{object:?}");
            let size = 360.0;
            ui.add_space(6.0);
            theme::section(ui, "Attention over the patches");
            match state.attention.get(&key) {
                None => out.push(Message::ComputeAttention { key: key.clone(), source: source.clone(), object }),
                Some(Err(e)) if e.starts_with("computing") => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Computing attention…");
                    });
                }
                Some(Err(e)) => {
                    ui.label(RichText::new(format!("⚠ {e}")).color(theme::BAD));
                }
                Some(Ok(map)) => {
                    let layers = map.per_layer.len();
                    ui.horizontal(|ui| {
                        ui.label("Layer");
                        ui.selectable_value(&mut self.layer, None, "mean");
                        for l in 0..layers {
                            ui.selectable_value(&mut self.layer, Some(l), format!("{}", l + 1));
                        }
                    });
                    let weights: Vec<f32> = match self.layer.filter(|&l| l < layers) {
                        Some(l) => map.per_layer[l].clone(),
                        None => {
                            let n = map.grid.0 * map.grid.1;
                            let mut mean = vec![0.0; n];
                            for layer in &map.per_layer {
                                for (m, w) in mean.iter_mut().zip(layer) {
                                    *m += w / layers.max(1) as f32;
                                }
                            }
                            mean
                        }
                    };
                    ui.horizontal(|ui| {
                        let (rect, _) = ui.allocate_exact_size(egui::vec2(size, size), egui::Sense::hover());
                        let img_rect = paint_image(ui, state, &source, rect);
                        if let Some(r) = img_rect {
                            paint_heat(ui, r, map.grid, &weights, self.opacity);
                        }
                        ui.add_space(12.0);
                        ui.vertical(|ui| {
                            ui.label(RichText::new(format!("{}×{} patches, {} layers", map.grid.1, map.grid.0, layers)).color(ui.visuals().weak_text_color()));
                            ui.label(RichText::new("Bright patches are the ones the output token attends to most.\nEarly layers look locally, later layers at the object.").small().color(ui.visuals().weak_text_color()));
                        });
                    });
                }
            }

            ui.add_space(10.0);
            theme::section(ui, "Generative reconstruction");
            ui.horizontal(|ui| {
                ui.label("Patches given");
                ui.add(egui::Slider::new(&mut self.keep_fraction, 0.0..=1.0).custom_formatter(|v, _| format!("{:.0}%", v * 100.0)));
            });
            // Patch count from the attention grid once known (the model's patch size is not exposed otherwise).
            let grid_cells = match state.attention.get(&key) {
                Some(Ok(map)) => (map.grid.0 * map.grid.1).max(1),
                _ => {
                    let g = predictor.image_size() / 8;
                    (g * g).max(1)
                }
            };
            let keep = ((self.keep_fraction * grid_cells as f32).round() as usize).min(grid_cells);
            let rkey = (source_key(&source), keep);
            match state.reconstructions.get(&rkey) {
                None => {
                    if ui.button("Imagine the rest").clicked() {
                        out.push(Message::ComputeReconstruction { key: rkey.0.clone(), source: source.clone(), keep });
                    }
                }
                Some(Err(e)) if e.starts_with("computing") => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("The model is continuing the image patch by patch…");
                    });
                }
                Some(Err(e)) => {
                    ui.label(RichText::new(format!("⚠ {e}")).color(theme::BAD));
                }
                Some(Ok(None)) => {
                    ui.label(RichText::new("This model has no generative head: pretrain it (Train, Pretraining) to see what it imagines.").color(ui.visuals().weak_text_color()));
                }
                Some(Ok(Some(tex))) => {
                    ui.horizontal(|ui| {
                        ui.vertical(|ui| {
                            ui.label(RichText::new("original").small());
                            let (rect, _) = ui.allocate_exact_size(egui::vec2(size * 0.75, size * 0.75), egui::Sense::hover());
                            paint_image(ui, state, &source, rect);
                        });
                        ui.vertical(|ui| {
                            ui.label(RichText::new(format!("model's continuation after {keep} patches")).small());
                            let (rect, _) = ui.allocate_exact_size(egui::vec2(size * 0.75, size * 0.75), egui::Sense::hover());
                            let s = tex.size_vec2();
                            let fit = (rect.width() / s.x).min(rect.height() / s.y);
                            ui.painter().image(tex.id(), egui::Rect::from_center_size(rect.center(), s * fit), egui::Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0)), Color32::WHITE);
                        });
                    });
                }
            }
        });
    }
}

fn source_key(s: &ImageSource) -> String {
    format!("{s:?}")
}

/// Paints the image fitted into `rect`; returns where it landed.
fn paint_image(ui: &mut egui::Ui, state: &AppState, source: &ImageSource, rect: egui::Rect) -> Option<egui::Rect> {
    ui.painter().rect_filled(rect, 6.0, theme::canvas_background(ui));
    match state.images.get(source, ImageKind::Full) {
        ImageSlot::Ready(t, _) => {
            let s = t.size_vec2();
            let fit = (rect.width() / s.x).min(rect.height() / s.y);
            let r = egui::Rect::from_center_size(rect.center(), s * fit);
            ui.painter().image(t.id(), r, egui::Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0)), Color32::WHITE);
            Some(r)
        }
        _ => None,
    }
}

/// Paints per-patch weights as a heat overlay (normalised to the largest weight).
fn paint_heat(ui: &mut egui::Ui, r: egui::Rect, grid: (usize, usize), w: &[f32], opacity: f32) {
    let (rows, cols) = grid;
    if rows == 0 || cols == 0 || w.len() < rows * cols {
        return;
    }
    let max = w.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
    let cell = egui::vec2(r.width() / cols as f32, r.height() / rows as f32);
    for y in 0..rows {
        for x in 0..cols {
            let v = (w[y * cols + x] / max).clamp(0.0, 1.0);
            let cr = egui::Rect::from_min_size(r.min + egui::vec2(x as f32 * cell.x, y as f32 * cell.y), cell);
            // Dark where ignored, hot where attended.
            let heat = heat_color(v);
            let alpha = (opacity * (0.25 + 0.75 * (1.0 - v)) * 255.0) as u8;
            ui.painter().rect_filled(cr, 0.0, Color32::from_rgba_unmultiplied(0, 0, 0, alpha / 2));
            ui.painter().rect_filled(cr, 0.0, Color32::from_rgba_unmultiplied(heat.r(), heat.g(), heat.b(), (opacity * v * 200.0) as u8));
        }
    }
}

fn heat_color(v: f32) -> Color32 {
    // A short inferno-like ramp: purple → red → yellow.
    let stops = [(0.0, [40, 10, 90]), (0.5, [220, 60, 40]), (1.0, [255, 230, 80])];
    let (a, b) = if v < 0.5 { (stops[0], stops[1]) } else { (stops[1], stops[2]) };
    let t = (v - a.0) / (b.0 - a.0);
    let mix = |i: usize| (a.1[i] as f32 + (b.1[i] as f32 - a.1[i] as f32) * t) as u8;
    Color32::from_rgb(mix(0), mix(1), mix(2))
}
