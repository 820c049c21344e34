//! The image canvas: zoom (wheel, towards the cursor), pan (right/middle drag), and box editing
//! (drag to draw, drag a box to move it, drag a handle to resize). It reports what the user did as
//! [`CanvasAction`]s; it never changes labels itself.

use egui::{Color32, Pos2, Rect, Sense, Stroke, StrokeKind, Vec2};

use crate::data::project::BBox;

use super::theme;

/// A box as the canvas shows it.
#[derive(Debug, Clone)]
pub struct CanvasBox {
    pub bbox: BBox,
    pub color: Color32,
    pub label: String,
    /// Suggestions are drawn dashed and cannot be edited until accepted.
    pub suggestion: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CanvasAction {
    Select(Option<usize>),
    Created(BBox),
    Changed(usize, BBox),
    /// A click on a suggestion (index among suggestions).
    ClickedSuggestion(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Handle {
    Move,
    /// Which edges move: (left, top, right, bottom).
    Resize(bool, bool, bool, bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Drag {
    None,
    Drawing { start: Pos2, now: Pos2 },
    Editing { index: usize, handle: Handle, start: Pos2, original: BBox, now: BBox },
    Panning,
}

/// Canvas view state (kept by the panel between frames).
#[derive(Debug, Clone)]
pub struct Canvas {
    /// Zoom relative to "fit the image in the view".
    pub zoom: f32,
    /// Offset of the image centre from the view centre, in screen points.
    pub pan: Vec2,
    /// W: the next drag draws a box even when it starts on another box.
    pub draw_mode: bool,
    drag: Drag,
    /// Where the canvas was last drawn, and the image size: lets tests and shortcuts map coordinates.
    pub last_rect: Rect,
    pub last_image_size: Vec2,
}

impl Default for Canvas {
    fn default() -> Self {
        Canvas { zoom: 1.0, pan: Vec2::ZERO, draw_mode: false, drag: Drag::None, last_rect: Rect::NOTHING, last_image_size: Vec2::ZERO }
    }
}

const HANDLE_RADIUS: f32 = 5.0;
const MIN_BOX_POINTS: f32 = 4.0;

impl Canvas {
    pub fn reset_view(&mut self) {
        self.zoom = 1.0;
        self.pan = Vec2::ZERO;
        self.drag = Drag::None;
    }

    fn scale(&self, rect: Rect, size: Vec2) -> f32 {
        let fit = (rect.width() / size.x).min(rect.height() / size.y) * 0.96;
        fit * self.zoom
    }

    fn origin(&self, rect: Rect, size: Vec2) -> Pos2 {
        rect.center() + self.pan - size * self.scale(rect, size) / 2.0
    }

    /// Image pixel coordinates to screen points (using the last drawn layout).
    pub fn image_to_screen(&self, p: Pos2) -> Pos2 {
        let (rect, size) = (self.last_rect, self.last_image_size);
        self.origin(rect, size) + p.to_vec2() * self.scale(rect, size)
    }

    pub fn screen_to_image(&self, p: Pos2) -> Pos2 {
        let (rect, size) = (self.last_rect, self.last_image_size);
        ((p - self.origin(rect, size)) / self.scale(rect, size)).to_pos2()
    }

    fn box_rect(&self, b: &BBox) -> Rect {
        Rect::from_min_max(self.image_to_screen(Pos2::new(b.xmin, b.ymin)), self.image_to_screen(Pos2::new(b.xmax, b.ymax)))
    }

    /// Draws the image and boxes into the available space and handles the mouse.
    /// `texture` is `None` while the image is still loading; `selected` indexes `boxes`.
    #[allow(clippy::too_many_arguments)]
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        texture: Option<&egui::TextureHandle>,
        image_size: [u32; 2],
        boxes: &[CanvasBox],
        selected: Option<usize>,
        new_box_class: usize,
        new_box_color: Color32,
        editable: bool,
    ) -> Vec<CanvasAction> {
        let mut actions = Vec::new();
        let (rect, response) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
        let size = Vec2::new(image_size[0].max(1) as f32, image_size[1].max(1) as f32);
        if self.last_image_size != size {
            self.reset_view();
        }
        self.last_rect = rect;
        self.last_image_size = size;
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 4.0, theme::canvas_background(ui));

        // Zoom towards the cursor (wheel, pinch or ctrl+wheel).
        if let Some(hover) = response.hover_pos() {
            let mut factor = ui.input(|i| i.zoom_delta());
            let wheel: f32 = ui.input(|i| {
                i.events
                    .iter()
                    .filter_map(|e| match e {
                        egui::Event::MouseWheel { delta, unit, modifiers, .. } if !modifiers.command => Some(match unit {
                            egui::MouseWheelUnit::Point => delta.y / 50.0,
                            _ => delta.y,
                        }),
                        _ => None,
                    })
                    .sum()
            });
            if wheel != 0.0 {
                factor *= 1.15f32.powf(wheel);
            }
            if factor != 1.0 {
                let before = self.screen_to_image(hover);
                self.zoom = (self.zoom * factor).clamp(0.2, 40.0);
                let scale = self.scale(rect, size);
                // Keep the image point under the cursor where it is.
                let origin = hover - before.to_vec2() * scale;
                self.pan = origin - rect.center() + size * scale / 2.0;
            }
        }

        // Pan with the right or middle button.
        if response.dragged_by(egui::PointerButton::Secondary) || response.dragged_by(egui::PointerButton::Middle) {
            self.pan += response.drag_delta();
            self.drag = Drag::Panning;
        }

        let img_rect = Rect::from_min_size(self.origin(rect, size), size * self.scale(rect, size));
        match texture {
            Some(t) => {
                painter.image(t.id(), img_rect, Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)), Color32::WHITE);
            }
            None => {
                painter.rect_filled(img_rect, 0.0, ui.visuals().faint_bg_color);
                painter.text(rect.center(), egui::Align2::CENTER_CENTER, "Loading image…", egui::FontId::proportional(16.0), ui.visuals().weak_text_color());
            }
        }

        // Mouse editing.
        let pointer = response.interact_pointer_pos();
        if editable && response.drag_started_by(egui::PointerButton::Primary) {
            if let Some(pos) = pointer {
                // The press position, not where the drag threshold was crossed.
                let press = ui.input(|i| i.pointer.press_origin()).unwrap_or(pos);
                self.drag = self.start_drag(press, boxes, selected, &mut actions);
            }
        }
        if response.dragged_by(egui::PointerButton::Primary) {
            if let Some(pos) = pointer {
                self.update_drag(pos, size);
            }
        }
        if response.drag_stopped() {
            match std::mem::replace(&mut self.drag, Drag::None) {
                Drag::Drawing { start, now } => {
                    let r = Rect::from_two_pos(start, now);
                    if r.width() >= MIN_BOX_POINTS && r.height() >= MIN_BOX_POINTS {
                        let a = self.screen_to_image(r.min).clamp(Pos2::ZERO, size.to_pos2());
                        let b = self.screen_to_image(r.max).clamp(Pos2::ZERO, size.to_pos2());
                        if b.x - a.x >= 1.0 && b.y - a.y >= 1.0 {
                            actions.push(CanvasAction::Created(BBox { xmin: a.x, ymin: a.y, xmax: b.x, ymax: b.y, class: new_box_class }));
                        }
                    }
                    self.draw_mode = false;
                }
                Drag::Editing { index, original, now, .. } => {
                    if now != original {
                        actions.push(CanvasAction::Changed(index, now));
                    }
                }
                _ => {}
            }
        }
        if response.clicked() {
            if let Some(pos) = pointer {
                let hit_suggestion = boxes.iter().enumerate().filter(|(_, b)| b.suggestion).position(|(_, b)| self.box_rect(&b.bbox).contains(pos));
                match (hit_suggestion, self.hit_box(pos, boxes)) {
                    (_, Some(i)) => actions.push(CanvasAction::Select(Some(i))),
                    (Some(s), None) => actions.push(CanvasAction::ClickedSuggestion(s)),
                    (None, None) => actions.push(CanvasAction::Select(None)),
                }
            }
        }

        // Boxes.
        let font = egui::FontId::proportional(13.0);
        for (i, b) in boxes.iter().enumerate() {
            let shown = match &self.drag {
                Drag::Editing { index, now, .. } if *index == i => *now,
                _ => b.bbox,
            };
            let r = self.box_rect(&shown);
            let is_sel = selected == Some(i) && !b.suggestion;
            if b.suggestion {
                dashed_rect(&painter, r, Stroke::new(2.0, b.color));
            } else {
                painter.rect_filled(r, 0.0, b.color.gamma_multiply(if is_sel { 0.22 } else { 0.10 }));
                painter.rect_stroke(r, 0.0, Stroke::new(if is_sel { 3.0 } else { 2.0 }, b.color), StrokeKind::Outside);
            }
            if !b.label.is_empty() {
                let galley = painter.layout_no_wrap(b.label.clone(), font.clone(), Color32::WHITE);
                let tag = Rect::from_min_size(r.left_top() - Vec2::new(0.0, galley.size().y + 4.0), galley.size() + Vec2::new(8.0, 4.0));
                let tag = if tag.top() < rect.top() { tag.translate(Vec2::new(0.0, galley.size().y + 4.0)) } else { tag };
                painter.rect_filled(tag, 3.0, if b.suggestion { b.color.gamma_multiply(0.6) } else { b.color.gamma_multiply(0.9) });
                painter.galley(tag.min + Vec2::new(4.0, 2.0), galley, Color32::WHITE);
            }
            if is_sel && editable {
                for h in handle_points(r) {
                    painter.circle_filled(h, HANDLE_RADIUS, Color32::WHITE);
                    painter.circle_stroke(h, HANDLE_RADIUS, Stroke::new(1.5, b.color));
                }
            }
        }
        if let Drag::Drawing { start, now } = &self.drag {
            let r = Rect::from_two_pos(*start, *now);
            painter.rect_filled(r, 0.0, new_box_color.gamma_multiply(0.15));
            painter.rect_stroke(r, 0.0, Stroke::new(2.0, new_box_color), StrokeKind::Outside);
        }

        // Crosshair while drawing is possible.
        if editable {
            if let Some(h) = response.hover_pos() {
                if self.draw_mode || matches!(self.drag, Drag::Drawing { .. }) {
                    let s = Stroke::new(1.0, ui.visuals().text_color().gamma_multiply(0.5));
                    painter.line_segment([Pos2::new(rect.left(), h.y), Pos2::new(rect.right(), h.y)], s);
                    painter.line_segment([Pos2::new(h.x, rect.top()), Pos2::new(h.x, rect.bottom())], s);
                    ui.ctx().set_cursor_icon(egui::CursorIcon::Crosshair);
                } else if let Some(i) = selected.filter(|&i| i < boxes.len() && !boxes[i].suggestion) {
                    let r = self.box_rect(&boxes[i].bbox);
                    if let Some(h) = hit_handle(r, h) {
                        ui.ctx().set_cursor_icon(cursor_for(h));
                    }
                }
            }
        }
        // Zoom badge.
        painter.text(rect.right_bottom() - Vec2::new(8.0, 6.0), egui::Align2::RIGHT_BOTTOM, format!("{:.0}%", self.scale(rect, size) * 100.0), egui::FontId::proportional(12.0), ui.visuals().weak_text_color());
        actions
    }

    fn hit_box(&self, pos: Pos2, boxes: &[CanvasBox]) -> Option<usize> {
        // The smallest box under the cursor wins, so nested boxes stay reachable.
        boxes
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.suggestion && self.box_rect(&b.bbox).expand(2.0).contains(pos))
            .min_by(|a, b| a.1.bbox.area().total_cmp(&b.1.bbox.area()))
            .map(|(i, _)| i)
    }

    fn start_drag(&self, pos: Pos2, boxes: &[CanvasBox], selected: Option<usize>, actions: &mut Vec<CanvasAction>) -> Drag {
        if !self.draw_mode {
            if let Some(i) = selected.filter(|&i| i < boxes.len() && !boxes[i].suggestion) {
                if let Some(h) = hit_handle(self.box_rect(&boxes[i].bbox), pos) {
                    let b = boxes[i].bbox;
                    return Drag::Editing { index: i, handle: h, start: pos, original: b, now: b };
                }
            }
            if let Some(i) = self.hit_box(pos, boxes) {
                actions.push(CanvasAction::Select(Some(i)));
                let b = boxes[i].bbox;
                return Drag::Editing { index: i, handle: Handle::Move, start: pos, original: b, now: b };
            }
        }
        Drag::Drawing { start: pos, now: pos }
    }

    fn update_drag(&mut self, pos: Pos2, size: Vec2) {
        let scale = self.scale(self.last_rect, size);
        match &mut self.drag {
            Drag::Drawing { now, .. } => *now = pos,
            Drag::Editing { handle, start, original, now, .. } => {
                let d = (pos - *start) / scale;
                let mut b = *original;
                match *handle {
                    Handle::Move => {
                        let dx = d.x.clamp(-b.xmin, size.x - b.xmax);
                        let dy = d.y.clamp(-b.ymin, size.y - b.ymax);
                        b.xmin += dx;
                        b.xmax += dx;
                        b.ymin += dy;
                        b.ymax += dy;
                    }
                    Handle::Resize(l, t, r, btm) => {
                        if l {
                            b.xmin = (b.xmin + d.x).clamp(0.0, b.xmax - 1.0);
                        }
                        if t {
                            b.ymin = (b.ymin + d.y).clamp(0.0, b.ymax - 1.0);
                        }
                        if r {
                            b.xmax = (b.xmax + d.x).clamp(b.xmin + 1.0, size.x);
                        }
                        if btm {
                            b.ymax = (b.ymax + d.y).clamp(b.ymin + 1.0, size.y);
                        }
                    }
                }
                *now = b;
            }
            _ => {}
        }
    }
}

fn handle_points(r: Rect) -> [Pos2; 8] {
    [r.left_top(), r.center_top(), r.right_top(), r.right_center(), r.right_bottom(), r.center_bottom(), r.left_bottom(), r.left_center()]
}

fn hit_handle(r: Rect, pos: Pos2) -> Option<Handle> {
    let handles = [
        Handle::Resize(true, true, false, false),
        Handle::Resize(false, true, false, false),
        Handle::Resize(false, true, true, false),
        Handle::Resize(false, false, true, false),
        Handle::Resize(false, false, true, true),
        Handle::Resize(false, false, false, true),
        Handle::Resize(true, false, false, true),
        Handle::Resize(true, false, false, false),
    ];
    handle_points(r).iter().zip(handles).find(|(p, _)| p.distance(pos) <= HANDLE_RADIUS + 3.0).map(|(_, h)| h)
}

fn cursor_for(h: Handle) -> egui::CursorIcon {
    use egui::CursorIcon::*;
    match h {
        Handle::Move => Move,
        Handle::Resize(true, true, _, _) | Handle::Resize(_, _, true, true) => ResizeNwSe,
        Handle::Resize(_, true, true, _) | Handle::Resize(true, _, _, true) => ResizeNeSw,
        Handle::Resize(true, false, false, false) | Handle::Resize(false, false, true, false) => ResizeHorizontal,
        _ => ResizeVertical,
    }
}

fn dashed_rect(painter: &egui::Painter, r: Rect, stroke: Stroke) {
    let pts = [r.left_top(), r.right_top(), r.right_bottom(), r.left_bottom(), r.left_top()];
    for w in pts.windows(2) {
        painter.extend(egui::Shape::dashed_line(&[w[0], w[1]], stroke, 6.0, 4.0));
    }
}
