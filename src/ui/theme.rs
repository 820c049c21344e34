//! The look: spacing, corner radii, the accent colour, and small shared drawing helpers (cards, badges,
//! section headings) so every view looks like the same product.

use egui::{Color32, CornerRadius, Frame, Margin, RichText, Stroke};

pub const ACCENT: Color32 = Color32::from_rgb(64, 132, 246);
pub const GOOD: Color32 = Color32::from_rgb(46, 164, 98);
pub const WARN: Color32 = Color32::from_rgb(222, 150, 30);
pub const BAD: Color32 = Color32::from_rgb(220, 70, 70);

/// Applies Tessera's spacing and shapes to both the light and the dark theme.
pub fn install(ctx: &egui::Context) {
    for theme in [egui::Theme::Light, egui::Theme::Dark] {
        ctx.style_mut_of(theme, |style| {
            style.spacing.item_spacing = egui::vec2(8.0, 6.0);
            style.spacing.button_padding = egui::vec2(10.0, 5.0);
            style.spacing.interact_size.y = 26.0;
            style.spacing.slider_width = 180.0;
            let r = CornerRadius::same(6);
            style.visuals.widgets.noninteractive.corner_radius = r;
            style.visuals.widgets.inactive.corner_radius = r;
            style.visuals.widgets.hovered.corner_radius = r;
            style.visuals.widgets.active.corner_radius = r;
            style.visuals.widgets.open.corner_radius = r;
            style.visuals.window_corner_radius = CornerRadius::same(10);
            style.visuals.selection.bg_fill = ACCENT.gamma_multiply(if theme == egui::Theme::Dark { 0.7 } else { 0.9 });
            style.visuals.selection.stroke = Stroke::new(1.0, Color32::WHITE);
            style.visuals.hyperlink_color = ACCENT;
            use egui::{FontFamily, FontId, TextStyle};
            style.text_styles.insert(TextStyle::Heading, FontId::new(22.0, FontFamily::Proportional));
            style.text_styles.insert(TextStyle::Body, FontId::new(14.0, FontFamily::Proportional));
            style.text_styles.insert(TextStyle::Button, FontId::new(14.0, FontFamily::Proportional));
            style.text_styles.insert(TextStyle::Small, FontId::new(11.5, FontFamily::Proportional));
        });
    }
}

/// A progress bar whose text reads wherever the fill ends. egui draws bar text in the selection's stroke colour
/// (white here), which vanished on the light, unfilled part of the bar; this uses the strong text colour on a
/// lighter fill instead, in both themes.
pub fn progress_bar(ui: &egui::Ui, progress: f32, text: impl Into<String>, fill: Color32) -> egui::ProgressBar {
    egui::ProgressBar::new(progress.clamp(0.0, 1.0))
        .fill(fill.gamma_multiply(0.5))
        .text(RichText::new(text.into()).color(ui.visuals().strong_text_color()))
}

pub fn class_color(rgb: [u8; 3]) -> Color32 {
    Color32::from_rgb(rgb[0], rgb[1], rgb[2])
}

pub fn canvas_background(ui: &egui::Ui) -> Color32 {
    if ui.visuals().dark_mode {
        Color32::from_gray(22)
    } else {
        Color32::from_gray(228)
    }
}

/// A rounded, slightly raised container for a group of related controls.
pub fn card(ui: &egui::Ui) -> Frame {
    Frame::new()
        .fill(ui.visuals().faint_bg_color)
        .stroke(Stroke::new(1.0, ui.visuals().widgets.noninteractive.bg_stroke.color))
        .corner_radius(CornerRadius::same(8))
        .inner_margin(Margin::same(12))
}

/// A section title inside a view.
pub fn section(ui: &mut egui::Ui, text: &str) {
    ui.add_space(4.0);
    ui.label(RichText::new(text).size(15.0).strong());
    ui.add_space(2.0);
}

/// A view's title with a one-line explanation under it.
pub fn view_header(ui: &mut egui::Ui, title: &str, subtitle: &str) {
    ui.add_space(6.0);
    ui.label(RichText::new(title).size(24.0).strong());
    ui.label(RichText::new(subtitle).color(ui.visuals().weak_text_color()));
    ui.add_space(8.0);
}

/// A small coloured pill with text.
pub fn badge(ui: &mut egui::Ui, text: &str, color: Color32) -> egui::Response {
    Frame::new()
        .fill(color.gamma_multiply(0.18))
        .stroke(Stroke::new(1.0, color.gamma_multiply(0.7)))
        .corner_radius(CornerRadius::same(10))
        .inner_margin(Margin::symmetric(8, 2))
        .show(ui, |ui| ui.label(RichText::new(text).size(12.0).color(color)))
        .response
}

/// A big number with a caption, for metric summaries.
pub fn stat(ui: &mut egui::Ui, caption: &str, value: &str) {
    card(ui).show(ui, |ui| {
        ui.set_min_width(120.0);
        ui.vertical(|ui| {
            ui.label(RichText::new(caption).size(12.0).color(ui.visuals().weak_text_color()));
            ui.label(RichText::new(value).size(24.0).strong());
        });
    });
}

/// A centred hint for an empty view.
pub fn empty_state(ui: &mut egui::Ui, icon: &str, title: &str, body: &str) {
    ui.vertical_centered(|ui| {
        ui.add_space((ui.available_height() * 0.25).max(20.0));
        ui.label(RichText::new(icon).size(48.0).color(ui.visuals().weak_text_color()));
        ui.add_space(6.0);
        ui.label(RichText::new(title).size(20.0).strong());
        ui.label(RichText::new(body).color(ui.visuals().weak_text_color()));
    });
}

/// Paints a class-coloured swatch.
pub fn swatch(ui: &mut egui::Ui, color: Color32) -> egui::Response {
    let (rect, resp) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), egui::Sense::hover());
    ui.painter().rect_filled(rect, 3.0, color);
    resp
}
