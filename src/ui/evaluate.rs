//! The Evaluate view: accuracy or mAP@0.5 and mAP@0.5:0.95, a per-class table, the confusion matrix as a
//! heat map (click a cell to see its images), the worst mistakes, and precision–recall curves.

use egui::{Color32, RichText};
use egui_plot::{Legend, Line, Plot, PlotPoints};

use crate::data::project::{Project, Split};
use crate::eval::{ClassStats, EvalReport};

use super::images::{ImageKind, ImageSlot};
use super::state::{AppState, Message, View};
use super::theme;

#[derive(Default)]
pub struct EvaluatePanel {
    /// Confusion-matrix cell (truth, predicted) whose images are shown.
    pub selected_cell: Option<(usize, usize)>,
    split: Option<Split>,
    /// Where the confusion matrix's cells were drawn: origin and cell size (for tests and tooltips).
    matrix_layout: Option<(egui::Pos2, f32, usize)>,
}

impl EvaluatePanel {
    /// Screen rectangle of confusion cell (truth, predicted) as last drawn.
    pub fn cell_rect(&self, truth: usize, predicted: usize) -> Option<egui::Rect> {
        let (origin, cell, n) = self.matrix_layout?;
        (truth < n && predicted < n).then(|| egui::Rect::from_min_size(origin + egui::vec2(predicted as f32 * cell, truth as f32 * cell), egui::vec2(cell, cell)))
    }
}

impl EvaluatePanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        let Some(project) = &state.project else {
            theme::empty_state(ui, "✔", "No project open", "Open a project and train a model to evaluate it.");
            return;
        };
        let split = *self.split.get_or_insert(Split::Test);
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
            theme::view_header(ui, "Evaluate", "How good is the model on images it never trained on?");
            ui.horizontal(|ui| {
                ui.label("Split");
                let mut s = split;
                egui::ComboBox::from_id_salt("eval_split").selected_text(s.as_str()).show_ui(ui, |ui| {
                    for x in Split::ALL {
                        ui.selectable_value(&mut s, x, format!("{} ({} images)", x.as_str(), project.indices_in(x).len()));
                    }
                });
                self.split = Some(s);
                let can = state.predictor.is_some() && !state.eval_running;
                let text = if state.eval_running { "Evaluating…" } else { "▶ Evaluate" };
                if ui.add_enabled(can, egui::Button::new(RichText::new(text).color(Color32::WHITE)).fill(theme::ACCENT)).clicked() {
                    self.selected_cell = None;
                    out.push(Message::RunEvaluation(s));
                }
                if state.eval_running {
                    let done = state.eval_progress.0.load(std::sync::atomic::Ordering::Relaxed);
                    let total = state.eval_progress.1.load(std::sync::atomic::Ordering::Relaxed).max(1);
                    ui.add(theme::progress_bar(ui, done as f32 / total as f32, format!("{done} / {total} images"), theme::ACCENT).desired_width(220.0));
                }
                if state.predictor.is_none() {
                    ui.label(RichText::new("Needs a model: train one first.").color(ui.visuals().weak_text_color()));
                }
            });
            if let Some(e) = &state.eval_error {
                ui.label(RichText::new(format!("⚠ {e}")).color(theme::BAD));
            }
            ui.add_space(8.0);
            match &state.eval_report {
                None => {
                    if !state.eval_running {
                        theme::empty_state(ui, "✔", "No evaluation yet", "Press Evaluate to measure the current model on the chosen split.");
                    }
                }
                Some(EvalReport::Classification(r)) => {
                    ui.horizontal(|ui| {
                        theme::stat(ui, "accuracy", &format!("{:.1}%", r.accuracy * 100.0));
                        theme::stat(ui, "images", &r.items.len().to_string());
                        let wrong = r.items.iter().filter(|i| i.1 != i.2).count();
                        theme::stat(ui, "mistakes", &wrong.to_string());
                    });
                    ui.add_space(8.0);
                    ui.columns(2, |cols| {
                        theme::section(&mut cols[0], "Per class");
                        class_table(&mut cols[0], &r.per_class, false);
                        theme::section(&mut cols[1], "Confusion matrix (rows: truth, columns: predicted; click a cell)");
                        cols[1].add_space(4.0);
                        let (clicked, layout) = confusion_heatmap(&mut cols[1], &r.confusion, &project.class_names());
                        self.matrix_layout = layout;
                        if let Some(cell) = clicked {
                            self.selected_cell = if self.selected_cell == Some(cell) { None } else { Some(cell) };
                        }
                    });
                    ui.add_space(8.0);
                    match self.selected_cell {
                        Some((t, p)) => {
                            let name = |c: usize| project.classes.get(c).map(|c| c.name.clone()).unwrap_or_default();
                            theme::section(ui, &format!("Images of {} predicted as {}", name(t), name(p)));
                            let items: Vec<(usize, String)> = r.items.iter().filter(|i| i.1 == t && i.2 == p).map(|i| (i.0, format!("{:.0}%", i.3 * 100.0))).collect();
                            gallery(ui, state, project, &items, out);
                        }
                        None => {
                            theme::section(ui, "Worst mistakes (most confident wrong answers)");
                            let mut wrong: Vec<_> = r.items.iter().filter(|i| i.1 != i.2).collect();
                            wrong.sort_by(|a, b| b.3.total_cmp(&a.3));
                            let name = |c: usize| project.classes.get(c).map(|c| c.name.clone()).unwrap_or_default();
                            let items: Vec<(usize, String)> = wrong.iter().take(40).map(|i| (i.0, format!("{} as {} {:.0}%", name(i.1), name(i.2), i.3 * 100.0))).collect();
                            gallery(ui, state, project, &items, out);
                        }
                    }
                }
                Some(EvalReport::Detection(r)) => {
                    ui.horizontal(|ui| {
                        theme::stat(ui, "mAP@0.5", &format!("{:.3}", r.map50));
                        theme::stat(ui, "mAP@0.5:0.95", &format!("{:.3}", r.map50_95));
                        theme::stat(ui, &format!("precision @ {:.2}", r.threshold), &format!("{:.1}%", r.precision * 100.0));
                        theme::stat(ui, &format!("recall @ {:.2}", r.threshold), &format!("{:.1}%", r.recall * 100.0));
                    });
                    ui.add_space(8.0);
                    ui.columns(2, |cols| {
                        theme::section(&mut cols[0], "Per class");
                        class_table(&mut cols[0], &r.per_class, true);
                        theme::section(&mut cols[1], "Precision–recall (IoU 0.5)");
                        Plot::new("pr_curves").height(260.0).legend(Legend::default()).x_axis_label("recall").y_axis_label("precision").include_x(0.0).include_x(1.0).include_y(0.0).include_y(1.0).allow_scroll(false).show(&mut cols[1], |plot_ui| {
                            for (c, curve) in r.pr_curves.iter().enumerate() {
                                let name = r.per_class.get(c).map(|s| s.name.clone()).unwrap_or_else(|| format!("class {c}"));
                                let pts: Vec<[f64; 2]> = curve.iter().map(|&(rc, pr)| [rc as f64, pr as f64]).collect();
                                let color = project.classes.get(c).map(|k| theme::class_color(k.color)).unwrap_or(theme::ACCENT);
                                plot_ui.line(Line::new(name, PlotPoints::from(pts)).color(color).width(2.0));
                            }
                        });
                    });
                    ui.add_space(8.0);
                    theme::section(ui, &format!("Worst images (false positives + misses at {:.2})", r.threshold));
                    let mut worst: Vec<_> = r.items.iter().filter(|i| i.1 > 0).collect();
                    worst.sort_by(|a, b| b.1.cmp(&a.1));
                    let items: Vec<(usize, String)> = worst.iter().take(40).map(|i| (i.0, format!("{} error(s)", i.1))).collect();
                    gallery(ui, state, project, &items, out);
                }
            }
        });
    }
}

fn class_table(ui: &mut egui::Ui, rows: &[ClassStats], detection: bool) {
    egui::Grid::new("per_class").num_columns(if detection { 6 } else { 4 }).spacing([14.0, 5.0]).striped(true).show(ui, |ui| {
        let weak = ui.visuals().weak_text_color();
        let mut heads = vec!["class", "support", "precision", "recall"];
        if detection {
            heads.extend(["AP50", "AP50:95"]);
        }
        for h in heads {
            ui.label(RichText::new(h).small().color(weak));
        }
        ui.end_row();
        for r in rows {
            ui.label(RichText::new(&r.name).strong());
            ui.label(r.support.to_string());
            ui.label(format!("{:.3}", r.precision));
            ui.label(format!("{:.3}", r.recall));
            if detection {
                ui.label(r.ap50.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into()));
                ui.label(r.ap50_95.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into()));
            }
            ui.end_row();
        }
    });
}

/// Draws the matrix; returns the clicked cell and the layout (origin, cell size, classes).
pub fn confusion_heatmap(ui: &mut egui::Ui, m: &[Vec<usize>], names: &[String]) -> (Option<(usize, usize)>, Option<(egui::Pos2, f32, usize)>) {
    let n = m.len();
    if n == 0 {
        return (None, None);
    }
    let label_w = 80.0;
    let cell = ((ui.available_width() - label_w) / n as f32).clamp(14.0, 48.0);
    let size = egui::vec2(label_w + cell * n as f32, label_w + cell * n as f32);
    let (rect, resp) = ui.allocate_exact_size(size, egui::Sense::click());
    let painter = ui.painter_at(rect);
    let origin = rect.min + egui::vec2(label_w, label_w);
    let row_sums: Vec<usize> = m.iter().map(|r| r.iter().sum::<usize>().max(1)).collect();
    let font = egui::FontId::proportional(if cell > 30.0 { 12.0 } else { 9.0 });
    let text_color = ui.visuals().text_color();
    for t in 0..n {
        let name = names.get(t).cloned().unwrap_or_else(|| t.to_string());
        painter.text(egui::pos2(origin.x - 4.0, origin.y + (t as f32 + 0.5) * cell), egui::Align2::RIGHT_CENTER, &name, font.clone(), text_color);
        painter.text(egui::pos2(origin.x + (t as f32 + 0.5) * cell, origin.y - 4.0), egui::Align2::LEFT_CENTER, &name, font.clone(), text_color);
        for p in 0..n {
            let v = m[t].get(p).copied().unwrap_or(0);
            let frac = v as f32 / row_sums[t] as f32;
            let r = egui::Rect::from_min_size(origin + egui::vec2(p as f32 * cell, t as f32 * cell), egui::vec2(cell, cell)).shrink(1.0);
            let base = if t == p { theme::GOOD } else { theme::BAD };
            let fill = if v == 0 { ui.visuals().faint_bg_color } else { base.gamma_multiply(0.15 + 0.85 * frac) };
            painter.rect_filled(r, 2.0, fill);
            if v > 0 && cell >= 22.0 {
                painter.text(r.center(), egui::Align2::CENTER_CENTER, v.to_string(), font.clone(), if frac > 0.5 { Color32::WHITE } else { text_color });
            }
        }
    }
    let layout = Some((origin, cell, n));
    let hovered_cell = |pos: egui::Pos2| {
        let d = pos - origin;
        let (p, t) = ((d.x / cell).floor(), (d.y / cell).floor());
        (p >= 0.0 && t >= 0.0 && (p as usize) < n && (t as usize) < n).then_some((t as usize, p as usize))
    };
    if let Some((t, p)) = resp.hover_pos().and_then(hovered_cell) {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        resp.clone().on_hover_text(format!("{} images of {} predicted as {}", m[t].get(p).copied().unwrap_or(0), name(t), name(p)));
    }
    if resp.clicked() {
        if let Some(cell) = resp.interact_pointer_pos().and_then(hovered_cell) {
            return (Some(cell), layout);
        }
    }
    (None, layout)
}

/// Thumbnails of project images with a caption; clicking one opens it in the Label view.
fn gallery(ui: &mut egui::Ui, state: &AppState, project: &Project, items: &[(usize, String)], out: &mut Vec<Message>) {
    if items.is_empty() {
        ui.label(RichText::new("None.").color(ui.visuals().weak_text_color()));
        return;
    }
    ui.horizontal_wrapped(|ui| {
        for (i, caption) in items {
            if *i >= project.images.len() {
                continue;
            }
            ui.vertical(|ui| {
                let (rect, resp) = ui.allocate_exact_size(egui::vec2(110.0, 110.0), egui::Sense::click());
                ui.painter().rect_filled(rect, 6.0, ui.visuals().faint_bg_color);
                if let ImageSlot::Ready(t, orig) = state.images.get(&project.source_of(*i), ImageKind::Thumb) {
                    let o = egui::vec2(orig[0] as f32, orig[1] as f32);
                    let fit = (104.0 / o.x).min(104.0 / o.y);
                    let r = egui::Rect::from_center_size(rect.center(), o * fit);
                    ui.painter().image(t.id(), r, egui::Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0)), Color32::WHITE);
                }
                ui.add_sized([110.0, 16.0], egui::Label::new(RichText::new(caption).small()).truncate());
                if resp.on_hover_text("Open in the Label view").clicked() {
                    out.push(Message::SelectImage(Some(*i)));
                    out.push(Message::ShowView(View::Label));
                }
            });
        }
    });
}
