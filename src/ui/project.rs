//! The Project view: open / create / recent projects, import, the class list (counts, colours, rename,
//! merge, delete), the split summary and import warnings.

use std::path::PathBuf;

use egui::RichText;

use crate::data::project::{Split, Task};

use super::dialogs::{DialogKind, PendingDialog};
use super::state::{AppState, Message};
use super::theme;

pub struct ProjectPanel {
    pub path_input: String,
    pub new_name: String,
    pub new_task: Task,
    pub new_class: String,
    renaming: Option<(usize, String)>,
    merge_into: Option<(usize, usize)>,
    dialog: Option<(DialogKind, PendingDialog)>,
    show_new: bool,
    /// The open dialog picks images to add to the project (rather than a project to open).
    adding: bool,
}

impl Default for ProjectPanel {
    fn default() -> Self {
        ProjectPanel {
            path_input: String::new(),
            new_name: "My project".into(),
            new_task: Task::Detect,
            new_class: String::new(),
            renaming: None,
            merge_into: None,
            dialog: None,
            show_new: false,
            adding: false,
        }
    }
}

impl ProjectPanel {
    pub fn ui(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        if let Some((kind, d)) = &self.dialog {
            if let Some(paths) = d.poll() {
                let kind = *kind;
                self.dialog = None;
                if self.adding {
                    self.adding = false;
                    if !paths.is_empty() {
                        out.push(Message::AddImages(paths));
                    }
                } else if let Some(p) = paths.into_iter().next() {
                    if self.show_new && kind == DialogKind::PickFolder {
                        self.path_input = p.display().to_string();
                    } else {
                        out.push(Message::OpenPath(p));
                    }
                }
            }
        }
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
            ui.set_max_width(1100.0);
            theme::view_header(ui, "Project", "Your images, classes and splits. Open a project or import any dataset format.");
            ui.columns(2, |cols| {
                self.open_card(&mut cols[0], state, out);
                self.recent_card(&mut cols[1], state, out);
            });
            ui.add_space(10.0);
            let Some(project) = &state.project else { return };
            ui.columns(2, |cols| {
                self.classes_card(&mut cols[0], state, out);
                cols[1].vertical(|ui| {
                    self.splits_card(ui, state);
                    ui.add_space(10.0);
                    if !project.warnings.is_empty() {
                        self.warnings_card(ui, state);
                    }
                });
            });
        });
    }

    fn open_card(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        theme::card(ui).show(ui, |ui| {
            ui.set_width(ui.available_width());
            theme::section(ui, "Open or import");
            ui.label(RichText::new("A Tessera project folder, or a dataset: COCO, YOLO, Pascal VOC, CSV, class folders, MNIST IDX, digits CSV. You can also drop it onto the window.").small().color(ui.visuals().weak_text_color()));
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                let busy = self.dialog.is_some();
                if ui.add_enabled(!busy, egui::Button::new("🗁 Open folder…")).clicked() {
                    self.show_new = false;
                    self.dialog = Some((DialogKind::PickFolder, PendingDialog::open(DialogKind::PickFolder, ui.ctx())));
                }
                if ui.add_enabled(!busy, egui::Button::new("🗋 Open file…")).clicked() {
                    self.show_new = false;
                    self.dialog = Some((DialogKind::PickFile, PendingDialog::open(DialogKind::PickFile, ui.ctx())));
                }
                if ui.button("✚ New project…").clicked() {
                    self.show_new = !self.show_new;
                }
                if ui.add_enabled(state.opening.is_none(), egui::Button::new("♦ Demo project")).on_hover_text("The procedural shapes demo").clicked() {
                    out.push(Message::CreateDemo);
                }
            });
            ui.horizontal(|ui| {
                let edit = egui::TextEdit::singleline(&mut self.path_input).hint_text("or type a path: /data/my-dataset").desired_width(ui.available_width() - 80.0);
                let r = ui.add(edit);
                let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                let go = ui.add_enabled(!self.path_input.trim().is_empty() && !self.show_new, egui::Button::new("Open")).clicked();
                if (go || enter) && !self.show_new && !self.path_input.trim().is_empty() {
                    out.push(Message::OpenPath(PathBuf::from(self.path_input.trim())));
                }
            });
            if self.show_new {
                ui.add_space(6.0);
                egui::Grid::new("new_project").num_columns(2).spacing([10.0, 6.0]).show(ui, |ui| {
                    ui.label("Name");
                    ui.text_edit_singleline(&mut self.new_name);
                    ui.end_row();
                    ui.label("Task");
                    ui.horizontal(|ui| {
                        ui.radio_value(&mut self.new_task, Task::Detect, "Object detection");
                        ui.radio_value(&mut self.new_task, Task::Classify, "Classification");
                    });
                    ui.end_row();
                    ui.label("Folder");
                    ui.label(RichText::new("the path above (it is created if missing)").small());
                    ui.end_row();
                });
                ui.horizontal(|ui| {
                    if ui.button("🗁 Choose folder…").clicked() {
                        self.dialog = Some((DialogKind::PickFolder, PendingDialog::open(DialogKind::PickFolder, ui.ctx())));
                    }
                    if ui.add_enabled(!self.path_input.trim().is_empty(), egui::Button::new("Create")).clicked() {
                        out.push(Message::NewProject { dir: PathBuf::from(self.path_input.trim()), name: self.new_name.clone(), task: self.new_task });
                        self.show_new = false;
                    }
                });
            }
            if let Some(p) = &state.opening {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("Opening {}…", p.display()));
                });
            }
        });
    }

    fn recent_card(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        theme::card(ui).show(ui, |ui| {
            ui.set_width(ui.available_width());
            theme::section(ui, "Recent projects");
            if state.settings.recent_projects.is_empty() {
                ui.label(RichText::new("Nothing yet.").color(ui.visuals().weak_text_color()));
            }
            for p in state.settings.recent_projects.iter().take(6) {
                ui.horizontal(|ui| {
                    let current = state.project.as_ref().is_some_and(|c| &c.root == p);
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string());
                    let exists = p.exists();
                    let text = if current { RichText::new(format!("• {name}")).strong() } else { RichText::new(name) };
                    if ui.add_enabled(exists, egui::Button::new(text).frame(false)).on_hover_text(p.display().to_string()).clicked() {
                        out.push(Message::OpenPath(p.clone()));
                    }
                    ui.label(RichText::new(p.parent().map(|d| d.display().to_string()).unwrap_or_default()).small().color(ui.visuals().weak_text_color()));
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui.small_button("✖").on_hover_text("Remove from the list").clicked() {
                            out.push(Message::RemoveRecent(p.clone()));
                        }
                    });
                });
            }
        });
    }

    fn classes_card(&mut self, ui: &mut egui::Ui, state: &AppState, out: &mut Vec<Message>) {
        let Some(project) = &state.project else { return };
        let counts = project.class_counts();
        theme::card(ui).show(ui, |ui| {
            ui.set_width(ui.available_width());
            ui.horizontal(|ui| {
                theme::section(ui, &format!("Classes ({})", project.classes.len()));
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let mut task = project.task;
                    egui::ComboBox::from_id_salt("project_task").selected_text(if task == Task::Detect { "Object detection" } else { "Classification" }).show_ui(ui, |ui| {
                        ui.selectable_value(&mut task, Task::Detect, "Object detection");
                        ui.selectable_value(&mut task, Task::Classify, "Classification");
                    });
                    if task != project.task {
                        out.push(Message::SetTask(task));
                    }
                });
            });
            let max = counts.iter().copied().max().unwrap_or(1).max(1) as f32;
            let unit = if project.task == Task::Detect { "boxes" } else { "images" };
            egui::Grid::new("classes").num_columns(4).spacing([10.0, 6.0]).striped(true).show(ui, |ui| {
                for (i, class) in project.classes.iter().enumerate() {
                    let mut color = class.color;
                    if ui.color_edit_button_srgb(&mut color).on_hover_text("Class colour").changed() {
                        out.push(Message::SetClassColor(i, color));
                    }
                    match &mut self.renaming {
                        Some((ri, text)) if *ri == i => {
                            let r = ui.add(egui::TextEdit::singleline(text).desired_width(140.0));
                            r.request_focus();
                            if ui.input(|inp| inp.key_pressed(egui::Key::Enter)) {
                                out.push(Message::RenameClass(i, text.clone()));
                                self.renaming = None;
                            } else if ui.input(|inp| inp.key_pressed(egui::Key::Escape)) {
                                self.renaming = None;
                            }
                        }
                        _ => {
                            ui.label(RichText::new(&class.name).strong());
                        }
                    }
                    let n = counts.get(i).copied().unwrap_or(0);
                    ui.add(theme::progress_bar(ui, n as f32 / max, format!("{n} {unit}"), theme::class_color(class.color)).desired_width(120.0));
                    ui.horizontal(|ui| {
                        if ui.small_button("✏").on_hover_text("Rename (renaming onto an existing name merges)").clicked() {
                            self.renaming = Some((i, class.name.clone()));
                        }
                        ui.menu_button("⤵", |ui| {
                            ui.label("Merge into…");
                            for (j, other) in project.classes.iter().enumerate() {
                                if j != i && ui.button(&other.name).clicked() {
                                    self.merge_into = Some((i, j));
                                    ui.close();
                                }
                            }
                        })
                        .response
                        .on_hover_text("Merge into another class");
                        if ui.small_button("🗑").on_hover_text("Delete the class and its labels (undoable)").clicked() {
                            out.push(Message::DeleteClass(i));
                        }
                    });
                    ui.end_row();
                }
            });
            if let Some((from, into)) = self.merge_into.take() {
                out.push(Message::MergeClass { from, into });
            }
            ui.add_space(6.0);
            ui.horizontal(|ui| {
                let r = ui.add(egui::TextEdit::singleline(&mut self.new_class).hint_text("new class name").desired_width(180.0));
                let enter = r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if (ui.button("✚ Add class").clicked() || enter) && !self.new_class.trim().is_empty() {
                    out.push(Message::AddClass(std::mem::take(&mut self.new_class)));
                }
            });
        });
    }

    fn splits_card(&mut self, ui: &mut egui::Ui, state: &AppState) {
        let Some(project) = &state.project else { return };
        theme::card(ui).show(ui, |ui| {
            ui.set_width(ui.available_width());
            theme::section(ui, "Images and splits");
            egui::Grid::new("splits").num_columns(4).spacing([18.0, 6.0]).striped(true).show(ui, |ui| {
                ui.label(RichText::new("split").small());
                ui.label(RichText::new("images").small());
                ui.label(RichText::new("labelled").small());
                ui.label(RichText::new(if project.task == Task::Detect { "boxes" } else { "classes seen" }).small());
                ui.end_row();
                for s in Split::ALL {
                    let idx = project.indices_in(s);
                    let labelled = idx.iter().filter(|&&i| project.images[i].labeled || project.images[i].class.is_some() || !project.images[i].boxes.is_empty()).count();
                    let extra = match project.task {
                        Task::Detect => idx.iter().map(|&i| project.images[i].boxes.len()).sum::<usize>(),
                        Task::Classify => {
                            let mut seen: Vec<usize> = idx.iter().filter_map(|&i| project.images[i].class).collect();
                            seen.sort_unstable();
                            seen.dedup();
                            seen.len()
                        }
                    };
                    ui.label(RichText::new(s.as_str()).strong());
                    ui.label(idx.len().to_string());
                    ui.label(labelled.to_string());
                    ui.label(extra.to_string());
                    ui.end_row();
                }
            });
            ui.add_space(4.0);
            ui.label(RichText::new(format!("Folder: {}", project.root.display())).small().color(ui.visuals().weak_text_color()));
            ui.add_space(4.0);
            ui.horizontal(|ui| {
                let busy = self.dialog.is_some() || state.adding_images;
                if ui.add_enabled(!busy, egui::Button::new("✚ Add images…")).on_hover_text("Add image files to this project, unlabelled (or drop them on the window)").clicked() {
                    self.adding = true;
                    self.dialog = Some((DialogKind::PickImages, PendingDialog::open(DialogKind::PickImages, ui.ctx())));
                }
                if ui.add_enabled(!busy, egui::Button::new("✚ Add a folder…")).clicked() {
                    self.adding = true;
                    self.dialog = Some((DialogKind::PickFolder, PendingDialog::open(DialogKind::PickFolder, ui.ctx())));
                }
                if state.adding_images {
                    ui.spinner();
                }
            });

        });
    }

    fn warnings_card(&mut self, ui: &mut egui::Ui, state: &AppState) {
        let Some(project) = &state.project else { return };
        theme::card(ui).show(ui, |ui| {
            ui.set_width(ui.available_width());
            theme::section(ui, &format!("⚠ Import warnings ({})", project.warnings.len()));
            egui::ScrollArea::vertical().max_height(220.0).id_salt("warnings").show(ui, |ui| {
                for w in &project.warnings {
                    ui.label(RichText::new(w).small().color(theme::WARN));
                }
            });
        });
    }
}
