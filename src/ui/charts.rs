//! Training charts (egui_plot): loss per objective for train and val, learning rate, the validation
//! metric and throughput, for the live run and any earlier runs being compared.

use egui::Color32;
use egui_plot::{Legend, Line, LineStyle, Plot, PlotPoints, Points};

use super::state::TrainingRun;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartOptions {
    pub log_scale: bool,
    /// Exponential smoothing of the training loss, 0 = raw, 0.99 = very smooth.
    pub smoothing: f32,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions { log_scale: true, smoothing: 0.6 }
    }
}

/// A colour per (run, objective) pair that stays the same between frames.
pub fn series_color(run: usize, objective: &str) -> Color32 {
    let palette = [
        Color32::from_rgb(64, 132, 246),
        Color32::from_rgb(240, 120, 40),
        Color32::from_rgb(46, 164, 98),
        Color32::from_rgb(200, 70, 170),
        Color32::from_rgb(220, 70, 70),
        Color32::from_rgb(120, 110, 230),
    ];
    let shift = match objective {
        "pretrain" => 3,
        "classify" => 1,
        _ => 0,
    };
    palette[(run * 2 + shift) % palette.len()]
}

/// EMA smoothing with bias correction, like TensorBoard's.
pub fn smooth(values: &[[f64; 2]], weight: f32) -> Vec<[f64; 2]> {
    let w = weight.clamp(0.0, 0.999) as f64;
    let mut last = 0.0;
    let mut n = 0;
    values
        .iter()
        .map(|&[x, y]| {
            n += 1;
            last = last * w + (1.0 - w) * y;
            let debias = 1.0 - w.powi(n);
            [x, if debias > 0.0 { last / debias } else { y }]
        })
        .collect()
}

fn y(v: f64, log: bool) -> f64 {
    if log {
        v.max(1e-8).log10()
    } else {
        v
    }
}

fn objectives(run: &TrainingRun) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in &run.steps {
        for (n, _) in &s.losses {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    names
}

fn log_axis(plot: Plot<'_>, log: bool) -> Plot<'_> {
    if log {
        plot.y_axis_formatter(|mark, _| {
            let v = 10f64.powf(mark.value);
            if v >= 100.0 { format!("{v:.0}") } else if v >= 1.0 { format!("{v:.2}") } else { format!("{v:.3}") }
        })
        .label_formatter(|hp| {
            let (name, p) = match hp {
                egui_plot::HoverPosition::NearDataPoint { plot_name, position, .. } => (*plot_name, position),
                egui_plot::HoverPosition::Elsewhere { position } => ("", position),
            };
            Some(format!("{name}\nstep {:.0}: {:.4}", p.x, 10f64.powf(p.y)))
        })
    } else {
        plot
    }
}

/// Training (solid, smoothed; raw faint behind) and validation (dashed with markers) loss.
pub fn loss_chart(ui: &mut egui::Ui, runs: &[(usize, &TrainingRun)], opts: ChartOptions, height: f32) {
    let plot = Plot::new("loss_chart").height(height).legend(Legend::default()).x_axis_label("step").allow_scroll(false);
    log_axis(plot, opts.log_scale).show(ui, |plot_ui| {
        for &(ri, run) in runs {
            for obj in objectives(run) {
                let color = series_color(ri, &obj);
                let raw: Vec<[f64; 2]> = run
                    .steps
                    .iter()
                    .filter_map(|s| s.losses.iter().find(|(n, _)| *n == obj).map(|(_, v)| [s.step as f64, *v as f64]))
                    .filter(|p| p[1].is_finite())
                    .collect();
                let smoothed = smooth(&raw, opts.smoothing);
                let tf = |v: Vec<[f64; 2]>| -> Vec<[f64; 2]> { v.into_iter().map(|[x, v]| [x, y(v, opts.log_scale)]).collect() };
                if opts.smoothing > 0.0 {
                    plot_ui.line(Line::new(format!("{} train {obj} (raw)", run.name), PlotPoints::from(tf(raw))).color(color.gamma_multiply(0.25)).width(1.0));
                }
                plot_ui.line(Line::new(format!("{} train {obj}", run.name), PlotPoints::from(tf(smoothed))).color(color).width(2.0));
                let val: Vec<[f64; 2]> = run
                    .evals
                    .iter()
                    .filter_map(|e| e.val_losses.iter().find(|(n, _)| *n == obj).map(|(_, v)| [e.step as f64, y(*v as f64, opts.log_scale)]))
                    .collect();
                if !val.is_empty() {
                    plot_ui.line(Line::new(format!("{} val {obj}", run.name), PlotPoints::from(val.clone())).color(color).style(LineStyle::dashed_loose()).width(1.5));
                    plot_ui.points(Points::new(format!("{} val {obj}", run.name), PlotPoints::from(val)).color(color).radius(3.0));
                }
            }
        }
    });
}

pub fn lr_chart(ui: &mut egui::Ui, runs: &[(usize, &TrainingRun)], height: f32) {
    Plot::new("lr_chart").height(height).x_axis_label("step").allow_scroll(false).show(ui, |plot_ui| {
        for &(ri, run) in runs {
            let pts: Vec<[f64; 2]> = run.steps.iter().map(|s| [s.step as f64, s.lr]).collect();
            plot_ui.line(Line::new(format!("{} lr", run.name), PlotPoints::from(pts)).color(series_color(ri, "")).width(1.5));
        }
    });
}

pub fn metric_chart(ui: &mut egui::Ui, runs: &[(usize, &TrainingRun)], height: f32) {
    Plot::new("metric_chart").height(height).legend(Legend::default()).x_axis_label("epoch").allow_scroll(false).include_y(0.0).show(ui, |plot_ui| {
        for &(ri, run) in runs {
            let mut names: Vec<String> = run.evals.iter().map(|e| e.metric_name.clone()).collect();
            names.dedup();
            for name in names {
                let pts: Vec<[f64; 2]> = run.evals.iter().filter(|e| e.metric_name == name).map(|e| [e.epoch as f64, e.metric as f64]).collect();
                let color = series_color(ri, if name.contains("loss") { "pretrain" } else { "" });
                plot_ui.line(Line::new(format!("{} {name}", run.name), PlotPoints::from(pts.clone())).color(color).width(2.0));
                plot_ui.points(Points::new(format!("{} {name}", run.name), PlotPoints::from(pts)).color(color).radius(3.5));
            }
        }
    });
}

pub fn throughput_chart(ui: &mut egui::Ui, runs: &[(usize, &TrainingRun)], height: f32) {
    Plot::new("throughput_chart").height(height).x_axis_label("step").allow_scroll(false).include_y(0.0).show(ui, |plot_ui| {
        for &(ri, run) in runs {
            let raw: Vec<[f64; 2]> = run.steps.iter().map(|s| [s.step as f64, s.images_per_sec as f64]).collect();
            plot_ui.line(Line::new(format!("{} images/s", run.name), PlotPoints::from(smooth(&raw, 0.8))).color(series_color(ri, "")).width(1.5));
        }
    });
}
