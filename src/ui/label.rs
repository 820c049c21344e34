//! The Label view: image browser on the left, the canvas in the middle, the inspector (classes, boxes,
//! suggestions) on the right. labelImg-style shortcuts.

use egui::{Color32, Key, Modifiers, RichText};

use crate::data::project::{Project, Split, Task};

use super::canvas::{Canvas, CanvasAction, CanvasBox};
use super::images::{ImageKind, ImageSlot};
use super::state::{AppState, Message};
use super::theme;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    #[default]
    All,
    Unlabelled,
    Labelled,
    Class(usize),
    Split(Split),
}

impl Filter {
    fn label(self, p: &Project) -> String {
        match self {
            Filter::All => "All images".into(),
            Filter::Unlabelled => "Unlabelled".into(),
            Filter::Labelled => "Labelled".into(),
            Filter::Class(c) => format!("Class: {}", p.classes.get(c).map(|c| c.name.as_str()).unwrap_or("?")),
            Filter::Split(s) => format!("Split: {}", s.as_str()),
        }
    }
    fn accepts(self, p: &Project, i: usize) -> bool {
        let im = &p.images[i];
        let labelled = im.labeled || im.class.is_some() || !im.boxes.is_empty();
        match self {
            Filter::All => true,
            Filter::Unlabelled => !labelled,
            Filter::Labelled => labelled,
            Filter::Class(c) => im.class == Some(c) || im.boxes.iter().any(|b| b.class == c),
            Filter::Split(s) => im.split == s,
        }
    }
}

#[derive(Default)]
pub struct LabelPanel {
    pub canvas: Canvas,
    pub filter: Filter,
    /// Indices of the images the filter shows (recomputed when the project or filter changes).
    visible: Vec<usize>,
    visible_key: Option<(Filter, u64, usize)>,
    scroll_to_current: bool,
    last_image: Option<usize>,
}

impl LabelPanel {
    pub fn visible(&self) -> &[usize] {
        &self.visible
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        let Some(project) = &state.project else {
            theme::empty_state(ui, "✏", "No project open", "Open or create a project in the Project view to start labelling.");
            return;
        };
        let key = (self.filter, state.revision, project.images.len());
        if self.visible_key != Some(key) {
            self.visible = (0..project.images.len()).filter(|&i| self.filter.accepts(project, i)).collect();
            self.visible_key = Some(key);
        }
        if state.current_image != self.last_image {
            self.last_image = state.current_image;
            self.scroll_to_current = true;
            self.canvas.reset_view();
        }

        self.keyboard(ui, state, project, out);

        egui::Panel::left("label_browser").resizable(true).default_size(250.0).min_size(180.0).show(ui, |ui| {
            self.browser(ui, state, project, out);
        });
        egui::Panel::right("label_inspector").resizable(true).default_size(260.0).min_size(200.0).show(ui, |ui| {
            egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
                self.inspector(ui, state, project, out);
            });
        });
        egui::CentralPanel::default().show(ui, |ui| {
            self.toolbar(ui, state, project, out);
            self.canvas_ui(ui, state, project, out);
        });
    }

    fn step(&self, state: &AppState, delta: isize) -> Option<usize> {
        if self.visible.is_empty() {
            return None;
        }
        let pos = state.current_image.and_then(|c| self.visible.iter().position(|&v| v == c));
        let next = match pos {
            Some(p) => (p as isize + delta).clamp(0, self.visible.len() as isize - 1) as usize,
            None => 0,
        };
        Some(self.visible[next])
    }

    fn keyboard(&mut self, ui: &mut egui::Ui, state: &AppState, project: &Project, out: &mut Vec<Message>) {
        if ui.ctx().egui_wants_keyboard_input() {
            return;
        }
        let consume = |ui: &mut egui::Ui, k: Key| ui.input_mut(|i| i.consume_key(Modifiers::NONE, k));
        if consume(ui, Key::D) || consume(ui, Key::ArrowRight) {
            out.push(Message::SelectImage(self.step(state, 1)));
        }
        if consume(ui, Key::A) || consume(ui, Key::ArrowLeft) {
            out.push(Message::SelectImage(self.step(state, -1)));
        }
        let Some(image) = state.current_image.filter(|&i| i < project.images.len()) else { return };
        if consume(ui, Key::W) && project.task == Task::Detect {
            self.canvas.draw_mode = !self.canvas.draw_mode;
        }
        if consume(ui, Key::F) {
            self.canvas.reset_view();
        }
        if consume(ui, Key::Delete) || consume(ui, Key::Backspace) {
            if let Some(b) = state.selected_box {
                out.push(Message::DeleteBox { image, index: b });
            }
        }
        if consume(ui, Key::Space) {
            // labelImg's "verify": this image is done as it is.
            out.push(Message::MarkLabeled { image, labeled: true });
            out.push(Message::SelectImage(self.step(state, 1)));
        }
        if consume(ui, Key::P) {
            out.push(Message::RequestSuggestions(image));
        }
        if consume(ui, Key::Enter) && state.suggestions.contains_key(&image) {
            out.push(Message::AcceptSuggestions { image, only: None });
        }
        if consume(ui, Key::Escape) {
            if state.suggestions.contains_key(&image) {
                out.push(Message::RejectSuggestions(image));
            } else {
                out.push(Message::SelectBox(None));
                self.canvas.draw_mode = false;
            }
        }
        const DIGITS: [Key; 9] = [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6, Key::Num7, Key::Num8, Key::Num9];
        for (c, k) in DIGITS.iter().enumerate() {
            if c >= project.classes.len() || !consume(ui, *k) {
                continue;
            }
            match project.task {
                Task::Classify => {
                    out.push(Message::SetImageClass { image, class: Some(c) });
                    out.push(Message::SelectImage(self.step(state, 1)));
                }
                Task::Detect => match state.selected_box {
                    Some(b) => out.push(Message::SetBoxClass { image, index: b, class: c }),
                    None => out.push(Message::SetLabelClass(c)),
                },
            }
        }
    }

    fn browser(&mut self, ui: &mut egui::Ui, state: &AppState, project: &Project, out: &mut Vec<Message>) {
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            ui.label(RichText::new("Images").strong());
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.label(RichText::new(format!("{} / {}", self.visible.len(), project.images.len())).color(ui.visuals().weak_text_color()));
            });
        });
        egui::ComboBox::from_id_salt("label_filter").width(ui.available_width()).selected_text(self.filter.label(project)).show_ui(ui, |ui| {
            let mut options = vec![Filter::All, Filter::Unlabelled, Filter::Labelled];
            options.extend(Split::ALL.iter().map(|s| Filter::Split(*s)));
            options.extend((0..project.classes.len()).map(Filter::Class));
            for f in options {
                ui.selectable_value(&mut self.filter, f, f.label(project));
            }
        });
        let unlabelled = project.images.iter().filter(|i| !(i.labeled || i.class.is_some() || !i.boxes.is_empty())).count();
        let done = project.images.len() - unlabelled;
        let frac = if project.images.is_empty() { 0.0 } else { done as f32 / project.images.len() as f32 };
        ui.add(egui::ProgressBar::new(frac).desired_height(6.0).fill(theme::GOOD));
        ui.label(RichText::new(format!("{done} labelled · {unlabelled} to go")).small().color(ui.visuals().weak_text_color()));
        ui.separator();
        if self.visible.is_empty() {
            ui.label(RichText::new("No image matches this filter.").color(ui.visuals().weak_text_color()));
            return;
        }
        let row_h = 60.0;
        let current_row = state.current_image.and_then(|c| self.visible.iter().position(|&v| v == c));
        let mut scroll = egui::ScrollArea::vertical().auto_shrink([false, false]).id_salt("label_browser_scroll");
        if self.scroll_to_current {
            if let Some(r) = current_row {
                let spacing = ui.spacing().item_spacing.y;
                scroll = scroll.vertical_scroll_offset(((r as f32) * (row_h + spacing) - 120.0).max(0.0));
            }
            self.scroll_to_current = false;
        }
        scroll.show_rows(ui, row_h, self.visible.len(), |ui, range| {
            for row in range {
                let i = self.visible[row];
                let im = &project.images[i];
                let selected = state.current_image == Some(i);
                let (rect, resp) = ui.allocate_exact_size(egui::vec2(ui.available_width(), row_h), egui::Sense::click());
                if selected {
                    ui.painter().rect_filled(rect, 6.0, ui.visuals().selection.bg_fill.gamma_multiply(0.35));
                } else if resp.hovered() {
                    ui.painter().rect_filled(rect, 6.0, ui.visuals().widgets.hovered.weak_bg_fill);
                }
                let thumb = egui::Rect::from_min_size(rect.min + egui::vec2(4.0, 4.0), egui::vec2(row_h - 8.0, row_h - 8.0));
                match state.images.get(&project.source_of(i), ImageKind::Thumb) {
                    ImageSlot::Ready(tex, _) => {
                        let s = tex.size_vec2();
                        let fit = (thumb.width() / s.x).min(thumb.height() / s.y);
                        let r = egui::Rect::from_center_size(thumb.center(), s * fit);
                        ui.painter().image(tex.id(), r, egui::Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0)), Color32::WHITE);
                    }
                    ImageSlot::Failed(_) => {
                        ui.painter().rect_filled(thumb, 4.0, theme::BAD.gamma_multiply(0.3));
                        ui.painter().text(thumb.center(), egui::Align2::CENTER_CENTER, "!", egui::FontId::proportional(18.0), theme::BAD);
                    }
                    ImageSlot::Loading => {
                        ui.painter().rect_filled(thumb, 4.0, ui.visuals().faint_bg_color);
                    }
                }
                let text_x = thumb.right() + 8.0;
                let name = im.source.display_name();
                ui.painter().text(egui::pos2(text_x, rect.top() + 10.0), egui::Align2::LEFT_TOP, truncate(&name, 22), egui::FontId::proportional(13.0), ui.visuals().text_color());
                let info = match project.task {
                    Task::Detect => format!("{} box{} · {}", im.boxes.len(), if im.boxes.len() == 1 { "" } else { "es" }, im.split.as_str()),
                    Task::Classify => format!(
                        "{} · {}",
                        im.class.and_then(|c| project.classes.get(c)).map(|c| c.name.as_str()).unwrap_or("—"),
                        im.split.as_str()
                    ),
                };
                ui.painter().text(egui::pos2(text_x, rect.top() + 30.0), egui::Align2::LEFT_TOP, info, egui::FontId::proportional(11.5), ui.visuals().weak_text_color());
                let labelled = im.labeled || im.class.is_some() || !im.boxes.is_empty();
                let dot = egui::pos2(rect.right() - 12.0, rect.center().y);
                ui.painter().circle_filled(dot, 4.0, if labelled { theme::GOOD } else { ui.visuals().weak_text_color().gamma_multiply(0.5) });
                if resp.clicked() {
                    out.push(Message::SelectImage(Some(i)));
                }
            }
        });
    }

    fn toolbar(&mut self, ui: &mut egui::Ui, state: &AppState, project: &Project, out: &mut Vec<Message>) {
        ui.horizontal(|ui| {
            if ui.button("◀").on_hover_text("Previous image (A)").clicked() {
                out.push(Message::SelectImage(self.step(state, -1)));
            }
            if ui.button("▶").on_hover_text("Next image (D)").clicked() {
                out.push(Message::SelectImage(self.step(state, 1)));
            }
            if let Some(i) = state.current_image.filter(|&i| i < project.images.len()) {
                let im = &project.images[i];
                ui.label(RichText::new(im.source.display_name()).strong());
                ui.label(RichText::new(format!("{}×{}", im.width, im.height)).color(ui.visuals().weak_text_color()));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui.add_enabled(!state.undo.redo.is_empty(), egui::Button::new("⟳")).on_hover_text("Redo (Ctrl+Shift+Z)").clicked() {
                    out.push(Message::Redo);
                }
                if ui.add_enabled(!state.undo.undo.is_empty(), egui::Button::new("⟲")).on_hover_text("Undo (Ctrl+Z)").clicked() {
                    out.push(Message::Undo);
                }
                if ui.button("⛶ Fit").on_hover_text("Fit the image (F)").clicked() {
                    self.canvas.reset_view();
                }
                if project.task == Task::Detect {
                    ui.toggle_value(&mut self.canvas.draw_mode, "✚ Draw box").on_hover_text("Draw a box (W); or just drag on empty space");
                }
            });
        });
        ui.add_space(2.0);
    }

    fn canvas_ui(&mut self, ui: &mut egui::Ui, state: &AppState, project: &Project, out: &mut Vec<Message>) {
        let Some(image) = state.current_image.filter(|&i| i < project.images.len()) else {
            theme::empty_state(ui, "⬜", "No image selected", "Pick an image on the left.");
            return;
        };
        let im = &project.images[image];
        let (texture, size) = match state.images.get(&project.source_of(image), ImageKind::Full) {
            ImageSlot::Ready(t, s) => (Some(t), s),
            ImageSlot::Loading => (None, [im.width, im.height]),
            ImageSlot::Failed(e) => {
                ui.colored_label(theme::BAD, format!("This image cannot be shown: {e}"));
                (None, [im.width, im.height])
            }
        };
        let color_of = |c: usize| project.classes.get(c).map(|c| theme::class_color(c.color)).unwrap_or(Color32::GRAY);
        let name_of = |c: usize| project.classes.get(c).map(|c| c.name.clone()).unwrap_or_else(|| format!("class {c}"));
        let mut boxes: Vec<CanvasBox> = im
            .boxes
            .iter()
            .map(|b| CanvasBox { bbox: *b, color: color_of(b.class), label: name_of(b.class), suggestion: false })
            .collect();
        let n_real = boxes.len();
        if let Some(s) = state.suggestions.get(&image) {
            for (b, score) in &s.boxes {
                boxes.push(CanvasBox { bbox: *b, color: color_of(b.class), label: format!("{} {:.0}%?", name_of(b.class), score * 100.0), suggestion: true });
            }
        }
        let editable = project.task == Task::Detect;
        let new_class = state.label_class.min(project.classes.len().saturating_sub(1));
        let actions = self.canvas.ui(ui, texture.as_ref(), size, &boxes, state.selected_box, new_class, color_of(new_class), editable);
        if project.task == Task::Classify {
            // The image's class as a large tag over the canvas, so a key press visibly lands.
            let (text, color) = match im.class {
                Some(c) => (name_of(c), color_of(c)),
                None => ("unlabelled: press 1–9".to_string(), Color32::from_gray(110)),
            };
            let suggestion = state.suggestions.get(&image).and_then(|s| s.class).map(|(c, p)| format!("   model: {} {:.0}%? (Enter)", name_of(c), p * 100.0)).unwrap_or_default();
            let painter = ui.painter_at(self.canvas.last_rect);
            let galley = painter.layout_no_wrap(format!("{text}{suggestion}"), egui::FontId::proportional(18.0), Color32::WHITE);
            let r = egui::Rect::from_min_size(self.canvas.last_rect.min + egui::vec2(12.0, 12.0), galley.size() + egui::vec2(20.0, 10.0));
            painter.rect_filled(r, 6.0, color.gamma_multiply(0.9));
            painter.galley(r.min + egui::vec2(10.0, 5.0), galley, Color32::WHITE);
        }
        for a in actions {
            match a {
                CanvasAction::Select(b) => out.push(Message::SelectBox(b.filter(|&b| b < n_real))),
                CanvasAction::Created(mut bbox) => {
                    if project.classes.is_empty() {
                        out.push(Message::AddClass("object".into()));
                        bbox.class = 0;
                    }
                    out.push(Message::AddBox { image, bbox });
                }
                CanvasAction::Changed(index, bbox) => out.push(Message::UpdateBox { image, index, bbox }),
                CanvasAction::ClickedSuggestion(s) => out.push(Message::AcceptSuggestions { image, only: Some(s) }),
            }
        }
    }

    fn inspector(&mut self, ui: &mut egui::Ui, state: &AppState, project: &Project, out: &mut Vec<Message>) {
        let Some(image) = state.current_image.filter(|&i| i < project.images.len()) else { return };
        let im = &project.images[image];
        ui.add_space(6.0);
        theme::section(ui, "Image");
        egui::Grid::new("image_info").num_columns(2).spacing([12.0, 6.0]).show(ui, |ui| {
            ui.label("Split");
            let mut split = im.split;
            egui::ComboBox::from_id_salt("image_split").selected_text(split.as_str()).show_ui(ui, |ui| {
                for s in Split::ALL {
                    ui.selectable_value(&mut split, s, s.as_str());
                }
            });
            if split != im.split {
                out.push(Message::SetImageSplit { image, split });
            }
            ui.end_row();
            ui.label("Status");
            let mut labelled = im.labeled;
            if ui.checkbox(&mut labelled, "labelled").on_hover_text("Space marks the image done and moves on").changed() {
                out.push(Message::MarkLabeled { image, labeled: labelled });
            }
            ui.end_row();
        });

        ui.separator();
        theme::section(ui, if project.task == Task::Classify { "Class (press 1–9)" } else { "Classes (1–9)" });
        for (c, class) in project.classes.iter().enumerate() {
            let active = match project.task {
                Task::Classify => im.class == Some(c),
                Task::Detect => match state.selected_box.and_then(|b| im.boxes.get(b)) {
                    Some(b) => b.class == c,
                    None => state.label_class == c,
                },
            };
            ui.horizontal(|ui| {
                theme::swatch(ui, theme::class_color(class.color));
                let key = if c < 9 { format!("{}", c + 1) } else { " ".into() };
                let text = RichText::new(format!("{key}  {}", class.name));
                if ui.selectable_label(active, text).clicked() {
                    match (project.task, state.selected_box) {
                        (Task::Classify, _) => out.push(Message::SetImageClass { image, class: Some(c) }),
                        (Task::Detect, Some(b)) => out.push(Message::SetBoxClass { image, index: b, class: c }),
                        (Task::Detect, None) => out.push(Message::SetLabelClass(c)),
                    }
                }
            });
        }
        if project.classes.is_empty() {
            ui.label(RichText::new("No classes yet: add them in the Project view (a first box creates \"object\").").small().color(ui.visuals().weak_text_color()));
        }

        if project.task == Task::Detect {
            ui.separator();
            theme::section(ui, &format!("Boxes ({})", im.boxes.len()));
            for (bi, b) in im.boxes.iter().enumerate() {
                ui.horizontal(|ui| {
                    let color = project.classes.get(b.class).map(|c| theme::class_color(c.color)).unwrap_or(Color32::GRAY);
                    theme::swatch(ui, color);
                    let name = project.classes.get(b.class).map(|c| c.name.as_str()).unwrap_or("?");
                    if ui.selectable_label(state.selected_box == Some(bi), format!("{name}  {:.0}×{:.0}", b.width(), b.height())).clicked() {
                        out.push(Message::SelectBox(Some(bi)));
                    }
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui.small_button("✖").on_hover_text("Delete (Del)").clicked() {
                            out.push(Message::DeleteBox { image, index: bi });
                        }
                    });
                });
            }
        }

        ui.separator();
        theme::section(ui, "Model-assisted labelling");
        match (&state.predictor, state.suggestions.get(&image)) {
            (None, _) => {
                ui.label(RichText::new("Train a model (or load a checkpoint) to get suggestions.").small().color(ui.visuals().weak_text_color()));
            }
            (Some(_), None) => {
                let busy = state.suggesting == Some(image);
                if ui.add_enabled(!busy, egui::Button::new(if busy { "Thinking…" } else { "✨ Suggest labels (P)" })).clicked() {
                    out.push(Message::RequestSuggestions(image));
                }
            }
            (Some(_), Some(s)) => {
                match project.task {
                    Task::Classify => match s.class {
                        Some((c, p)) => {
                            ui.label(format!("Model says: {} ({:.0}%)", project.classes.get(c).map(|c| c.name.as_str()).unwrap_or("?"), p * 100.0));
                        }
                        None => {
                            ui.label("The model has no class of this project to suggest.");
                        }
                    },
                    Task::Detect => {
                        ui.label(format!("{} suggested box(es), dashed. Click one to accept it.", s.boxes.len()));
                    }
                }
                ui.horizontal(|ui| {
                    if ui.button("✔ Accept (Enter)").clicked() {
                        out.push(Message::AcceptSuggestions { image, only: None });
                    }
                    if ui.button("✖ Reject (Esc)").clicked() {
                        out.push(Message::RejectSuggestions(image));
                    }
                });
            }
        }

        ui.separator();
        theme::section(ui, "Shortcuts");
        let hint = match project.task {
            Task::Detect => "Drag: draw · drag box: move · handles: resize\nW draw · A/D prev/next · Del delete\n1–9 class · Space done · P suggest\nWheel zoom · right-drag pan · F fit\nCtrl+Z / Ctrl+Shift+Z undo/redo",
            Task::Classify => "1–9 set class and go to the next image\nA/D prev/next · Space done · P suggest\nCtrl+Z / Ctrl+Shift+Z undo/redo",
        };
        ui.label(RichText::new(hint).small().color(ui.visuals().weak_text_color()));
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}
