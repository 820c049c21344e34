//! UI tests: egui_kittest drives the real app (the same `TesseraApp` the window runs) with mouse and keys.
//! Every test uses its own temporary config/data folders and generated data; nothing needs a display.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui::{Key, Modifiers, Pos2};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

use tessera::data::project::{BBox, ImageEntry, ImageSource, Project, Split, Task};
use tessera::model::{Detection, Prediction};
use tessera::ui::app::Autopilot;
use tessera::ui::state::{AppPaths, AppState, Message, PredictItem, View};
use tessera::ui::TesseraApp;

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    Env { _dir: dir, root }
}

fn harness(env: &Env) -> Harness<'static, TesseraApp> {
    let paths = AppPaths { config_dir: env.root.join("config"), data_dir: env.root.join("data") };
    let ctx = egui::Context::default();
    let app = TesseraApp::with_state(&ctx, AppState::new(paths), Autopilot::default());
    Harness::builder().with_size(egui::vec2(1360.0, 860.0)).build_ui_state(|ui, app: &mut TesseraApp| app.frame(ui), app)
}

/// Steps frames (in real time, so background threads get to work) until `done` holds.
fn run_until(h: &mut Harness<'static, TesseraApp>, what: &str, secs: u64, done: impl Fn(&TesseraApp) -> bool) {
    let start = Instant::now();
    loop {
        h.step();
        if done(h.state()) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(15));
    }
}

fn apply(h: &mut Harness<'static, TesseraApp>, m: Message) {
    h.state_mut().state.apply(m);
    h.step();
}

/// A small project of plain generated images (no labels), written to `dir`.
fn tiny_project(dir: &Path, task: Task, n: usize) -> Project {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut p = Project::new("tiny", task, dir);
    for c in ["red", "green", "blue"] {
        p.class_index_or_add(c);
    }
    for i in 0..n {
        let img = image::RgbImage::from_fn(80, 60, |x, y| image::Rgb([(x * 3) as u8, (y * 4) as u8, (i * 40) as u8]));
        let rel = PathBuf::from(format!("images/img{i}.png"));
        img.save(dir.join(&rel)).unwrap();
        p.images.push(ImageEntry { source: ImageSource::File(rel), width: 80, height: 60, split: Split::Train, class: None, boxes: vec![], labeled: false });
    }
    p.save().unwrap();
    p
}

fn open(h: &mut Harness<'static, TesseraApp>, dir: &Path) {
    apply(h, Message::OpenPath(dir.to_path_buf()));
    run_until(h, "the project to open", 30, |a| a.state.project.is_some() && a.state.opening.is_none());
}

/// Opens the project in `dir` and shows it in the Train view.
fn open_in_train_view(h: &mut Harness<'static, TesseraApp>, dir: &Path) {
    open(h, dir);
    apply(h, Message::ShowView(View::Train));
    h.step();
}

/// Waits until the Label view shows the current image fully loaded.
fn wait_for_canvas(h: &mut Harness<'static, TesseraApp>) {
    run_until(h, "the image to load", 30, |a| {
        let (Some(p), Some(i)) = (&a.state.project, a.state.current_image) else { return false };
        matches!(a.state.images.get(&p.source_of(i), tessera::ui::images::ImageKind::Full), tessera::ui::images::ImageSlot::Ready(..))
    });
    h.step();
    h.step();
}

fn drag(h: &mut Harness<'static, TesseraApp>, from: Pos2, to: Pos2) {
    h.hover_at(from);
    h.step();
    h.drag_at(from);
    h.step();
    for k in 1..=4 {
        let t = k as f32 / 4.0;
        h.hover_at(from + (to - from) * t);
        h.step();
    }
    h.drop_at(to);
    h.step();
    h.step();
}

fn boxes(a: &TesseraApp, image: usize) -> Vec<BBox> {
    a.state.project.as_ref().unwrap().images[image].boxes.clone()
}

#[test]
fn demo_project_is_created_and_shown() {
    let env = env();
    let mut h = harness(&env);
    apply(&mut h, Message::CreateDemo);
    run_until(&mut h, "the demo project", 120, |a| a.state.project.is_some());
    let a = h.state();
    let p = a.state.project.as_ref().unwrap();
    assert!(p.images.len() >= 100, "demo has {} images", p.images.len());
    assert_eq!(p.class_names(), ["circle", "square", "triangle", "star", "cross"]);
    assert!(p.root.starts_with(env.root.join("data")), "demo goes to the data dir: {}", p.root.display());
    assert!(p.root.join("tessera.json").is_file());
    // The project view lists the classes with their counts.
    h.step();
    assert!(h.query_by_label("circle").is_some(), "class list shows the demo classes");
    // It is remembered as the last project.
    assert_eq!(h.state().state.settings.recent_projects.first(), Some(&p_root(&h)));
}

/// Reopening the demo project with no model loaded (a first start whose demo detector failed to load, or a last
/// model since deleted) gives it the shipped demo detector again, so the Predict view is never empty on the demo.
#[test]
fn reopened_demo_project_gets_the_shipped_detector() {
    let env = env();
    let dir = env.root.join("demo");
    tessera::data::demo::write_demo(&dir, &tessera::data::demo::DemoOptions { count: 20, ..Default::default() }).unwrap();
    let mut h = harness(&env);
    assert!(h.state().state.predictor.is_none());
    open(&mut h, &dir);
    run_until(&mut h, "the shipped detector to load", 60, |a| a.state.predictor.is_some() && a.state.loading_checkpoint.is_none());
    let ck = h.state().state.checkpoint.clone().unwrap();
    assert!(ck.ends_with("assets/demo-detect"), "{}", ck.display());
    // Any other project opens without a model.
    let mut h = harness(&env);
    let other = env.root.join("other");
    tiny_project(&other, Task::Detect, 4);
    open(&mut h, &other);
    for _ in 0..20 {
        h.step();
    }
    assert!(h.state().state.predictor.is_none() && h.state().state.loading_checkpoint.is_none());
}

fn p_root(h: &Harness<'static, TesseraApp>) -> PathBuf {
    h.state().state.project.as_ref().unwrap().root.clone()
}

#[test]
fn draw_move_undo_redo_and_class_by_key() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Detect, 3);
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::ShowView(View::Label));
    apply(&mut h, Message::SelectImage(Some(0)));
    wait_for_canvas(&mut h);
    assert!(boxes(h.state(), 0).is_empty());

    // Draw a box by dragging from image pixel (10,10) to (40,30).
    let canvas = h.state().label_panel.canvas.clone();
    let (a, b) = (canvas.image_to_screen(Pos2::new(10.0, 10.0)), canvas.image_to_screen(Pos2::new(40.0, 30.0)));
    drag(&mut h, a, b);
    let drawn = boxes(h.state(), 0);
    assert_eq!(drawn.len(), 1, "one box drawn");
    let d = drawn[0];
    for (got, want) in [(d.xmin, 10.0), (d.ymin, 10.0), (d.xmax, 40.0), (d.ymax, 30.0)] {
        assert!((got - want).abs() < 1.0, "box {d:?} should be ~(10,10)-(40,30)");
    }
    assert_eq!(h.state().state.selected_box, Some(0), "the new box is selected");

    // A digit right after drawing sets the box's class.
    h.key_press(Key::Num3);
    h.step();
    assert_eq!(boxes(h.state(), 0)[0].class, 2);

    // Move it by dragging its inside 8 pixels right and 5 down.
    let canvas = h.state().label_panel.canvas.clone();
    let (from, to) = (canvas.image_to_screen(Pos2::new(25.0, 20.0)), canvas.image_to_screen(Pos2::new(33.0, 25.0)));
    drag(&mut h, from, to);
    let moved = boxes(h.state(), 0);
    assert_eq!(moved.len(), 1, "moving does not add a box");
    assert!((moved[0].xmin - 18.0).abs() < 1.0 && (moved[0].ymin - 15.0).abs() < 1.0, "moved box {:?}", moved[0]);
    assert!((moved[0].width() - 30.0).abs() < 0.5, "moving keeps the size");

    // Ctrl+Z undoes the move, then the class change, then the drawing; Ctrl+Shift+Z redoes.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert!((boxes(h.state(), 0)[0].xmin - 10.0).abs() < 1.0, "undo restores the position");
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert!(boxes(h.state(), 0).is_empty(), "undo removes the drawn box");
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.step();
    assert_eq!(boxes(h.state(), 0).len(), 1, "redo brings it back");

    // Delete key removes the selected box.
    apply(&mut h, Message::SelectBox(Some(0)));
    h.key_press(Key::Delete);
    h.step();
    assert!(boxes(h.state(), 0).is_empty());
}

#[test]
fn resize_with_a_handle() {
    let env = env();
    let dir = env.root.join("proj");
    let mut p = tiny_project(&dir, Task::Detect, 1);
    p.images[0].boxes.push(BBox { xmin: 10.0, ymin: 10.0, xmax: 30.0, ymax: 30.0, class: 0 });
    p.save().unwrap();
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::ShowView(View::Label));
    wait_for_canvas(&mut h);
    apply(&mut h, Message::SelectBox(Some(0)));
    let canvas = h.state().label_panel.canvas.clone();
    drag(&mut h, canvas.image_to_screen(Pos2::new(30.0, 30.0)), canvas.image_to_screen(Pos2::new(50.0, 40.0)));
    let b = boxes(h.state(), 0)[0];
    assert!((b.xmin - 10.0).abs() < 0.5 && (b.ymin - 10.0).abs() < 0.5, "the opposite corner stays: {b:?}");
    assert!((b.xmax - 50.0).abs() < 1.0 && (b.ymax - 40.0).abs() < 1.0, "the dragged corner follows: {b:?}");
}

#[test]
fn classify_by_key_press_advances_and_autosaves() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Classify, 3);
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::ShowView(View::Label));
    apply(&mut h, Message::SelectImage(Some(0)));
    h.step();
    h.key_press(Key::Num2);
    h.step();
    h.step();
    let a = h.state();
    assert_eq!(a.state.project.as_ref().unwrap().images[0].class, Some(1), "key 2 sets class index 1");
    assert_eq!(a.state.current_image, Some(1), "and moves to the next image");
    // Autosave writes it to disk, atomically, without a Ctrl+S.
    run_until(&mut h, "autosave", 20, |a| !a.state.dirty && !a.state.saving && a.state.last_saved.is_some());
    let on_disk = Project::load(&dir).unwrap();
    assert_eq!(on_disk.images[0].class, Some(1));
    assert!(on_disk.images[0].labeled);
}

#[test]
fn class_merge_and_delete_are_undoable() {
    let env = env();
    let dir = env.root.join("proj");
    let mut p = tiny_project(&dir, Task::Detect, 2);
    p.images[0].boxes = vec![BBox { xmin: 1.0, ymin: 1.0, xmax: 9.0, ymax: 9.0, class: 0 }, BBox { xmin: 2.0, ymin: 2.0, xmax: 9.0, ymax: 9.0, class: 2 }];
    p.save().unwrap();
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::MergeClass { from: 0, into: 2 });
    {
        let p = h.state().state.project.as_ref().unwrap();
        assert_eq!(p.class_names(), ["green", "blue"]);
        assert!(p.images[0].boxes.iter().all(|b| b.class == 1), "red boxes became blue (now index 1)");
    }
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert_eq!(h.state().state.project.as_ref().unwrap().class_names(), ["red", "green", "blue"]);
    apply(&mut h, Message::DeleteClass(2));
    let p = h.state().state.project.as_ref().unwrap();
    assert_eq!(p.images[0].boxes.len(), 1, "blue's box is gone");
    assert_eq!(p.images[0].boxes[0].class, 0);
    // Rename through the UI state keeps labels.
    apply(&mut h, Message::RenameClass(0, "crimson".into()));
    assert_eq!(h.state().state.project.as_ref().unwrap().classes[0].name, "crimson");
}

fn fake_prediction() -> Prediction {
    let det = |x: f32, score: f32, class: usize| Detection { bbox: BBox { xmin: x, ymin: 5.0, xmax: x + 10.0, ymax: 20.0, class }, score };
    Prediction { probs: vec![], detections: vec![det(5.0, 0.92, 0), det(25.0, 0.61, 1), det(45.0, 0.22, 2)] }
}

#[test]
fn threshold_slider_filters_cached_boxes() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Detect, 1);
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::ShowView(View::Predict));
    h.state_mut().state.predict_items.push(PredictItem { id: 99, path: dir.join("images/img0.png"), prediction: Some(Ok(fake_prediction())), requested: true });
    apply(&mut h, Message::SetThreshold(0.1));
    run_until(&mut h, "the predicted image", 20, |a| a.predict_panel.drawn_boxes == 3);
    // Move the slider (through accessibility, like a screen reader or keyboard user would).
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "confidence threshold").set_value_accesskit(0.5);
    h.step();
    h.step();
    assert!((h.state().state.settings.threshold - 0.5).abs() < 1e-3);
    assert_eq!(h.state().predict_panel.drawn_boxes, 2, "the 0.22 box disappears");
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "confidence threshold").set_value_accesskit(0.95);
    h.step();
    h.step();
    assert_eq!(h.state().predict_panel.drawn_boxes, 0, "all boxes are below 0.95");
}

#[derive(Debug)]
struct Dropped(PathBuf);
impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn dropping_images_opens_them_in_predict() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Detect, 2);
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::ShowView(View::Predict));
    let files: Vec<egui::DroppedFileHandle> = ["images/img0.png", "images/img1.png", "notes.txt"]
        .iter()
        .map(|f| std::sync::Arc::new(Dropped(dir.join(f))) as egui::DroppedFileHandle)
        .collect();
    h.input_mut().dropped_files = files;
    h.step();
    h.step();
    let a = h.state();
    assert_eq!(a.state.view, View::Predict, "dropping images switches to Predict");
    assert_eq!(a.state.predict_items.len(), 2, "both images are listed, the text file is not");
    // Without a model the view says so instead of spinning forever.
    assert!(h.query_by_label_contains("No model loaded").is_some());
}

#[test]
fn dropping_images_in_label_view_adds_them_to_the_project() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Detect, 1);
    let extra = env.root.join("more");
    std::fs::create_dir_all(&extra).unwrap();
    for i in 0..3 {
        image::RgbImage::from_pixel(40, 30, image::Rgb([i * 60, 10, 10])).save(extra.join(format!("new{i}.jpg"))).unwrap();
    }
    std::fs::write(extra.join("broken.png"), b"\x89PNG not really").unwrap();
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::ShowView(View::Label));
    h.input_mut().dropped_files = vec![std::sync::Arc::new(Dropped(extra.clone())) as egui::DroppedFileHandle];
    h.step();
    run_until(&mut h, "the images to be added", 20, |a| a.state.project.as_ref().unwrap().images.len() == 4);
    let p = h.state().state.project.as_ref().unwrap();
    assert!(p.images[1..].iter().all(|i| !i.labeled && i.width == 40 && i.height == 30));
    assert!(p.warnings.iter().any(|w| w.contains("broken.png")), "the bad file is reported by name: {:?}", p.warnings);
    assert_eq!(h.state().state.view, View::Label, "stays in Label to label them");
    run_until(&mut h, "autosave", 20, |a| !a.state.dirty && !a.state.saving);
    assert_eq!(Project::load(&dir).unwrap().images.len(), 4);
}

#[test]
fn training_errors_are_shown_and_the_app_keeps_running() {
    let env = env();
    let dir = env.root.join("empty");
    std::fs::create_dir_all(&dir).unwrap();
    Project::new("empty", Task::Detect, &dir).save().unwrap();
    let mut h = harness(&env);
    open(&mut h, &dir);
    let mut t = h.state().state.settings.train.clone();
    t.pretrain = true; // lets the UI start a run on a project without labels
    apply(&mut h, Message::SetTrainSettings(t));
    apply(&mut h, Message::ShowView(View::Train));
    h.get_by_label_contains("Start training").click();
    run_until(&mut h, "the run to fail", 60, |a| a.state.runs.last().is_some_and(|r| matches!(r.status, tessera::ui::state::RunStatus::Failed(_))));
    let a = h.state();
    assert!(a.state.notices.iter().any(|n| n.level == tessera::ui::state::NoticeLevel::Error && n.text.contains("Training failed")));
    assert!(!a.state.is_training());
    h.step();
    assert!(h.query_by_label_contains("Training failed").is_some(), "the error is on screen");
}

#[test]
fn train_view_warns_about_a_rare_class_and_stops_warning_once_it_is_labelled() {
    let env = env();
    let dir = env.root.join("rare");
    let mut p = tiny_project(&dir, Task::Classify, 24);
    for (i, im) in p.images.iter_mut().enumerate() {
        im.class = Some(if i < 2 { 2 } else { i % 2 });
        im.split = match i % 8 { 6 => Split::Val, 7 => Split::Test, _ => Split::Train };
    }
    p.save().unwrap();
    let mut h = harness(&env);
    open_in_train_view(&mut h, &dir);
    assert!(h.query_by_label_contains("Data check").is_some(), "the warning card is shown");
    assert!(h.query_by_label_contains("'blue' has only 2 training images").is_some());
    // Labelling more blue images (through the app, as the Label view does) clears the warning.
    let mut fixed = h.state().state.project.clone().unwrap();
    for im in fixed.images.iter_mut().filter(|e| e.split == Split::Train) {
        im.class = Some(2);
    }
    fixed.save().unwrap();
    open_in_train_view(&mut h, &dir);
    assert!(h.query_by_label_contains("'blue' has only").is_none(), "blue now has enough images");
    assert!(h.query_by_label_contains("'green' has no training images").is_some(), "green lost all of its training images");
    assert!(h.query_by_label_contains("'red' has no training images").is_some());
}

#[test]
fn a_mostly_unlabelled_project_offers_pretraining_in_one_click() {
    let env = env();
    let dir = env.root.join("unlabelled");
    // 12 labelled images among 120.
    let mut p = tiny_project(&dir, Task::Classify, 120);
    for (i, im) in p.images.iter_mut().enumerate().filter(|(i, _)| i % 10 == 0) {
        im.class = Some(i % 3);
    }
    p.save().unwrap();
    let mut h = harness(&env);
    open_in_train_view(&mut h, &dir);
    assert!(h.query_by_label_contains("108 training images have no label").is_some(), "the data check says why");
    assert!(!h.state().state.settings.train.pretrain);
    h.get_by_label("Turn on pretraining").click();
    h.step();
    h.step();
    assert!(h.state().state.settings.train.pretrain, "the click turns pretraining on");
    let fine_tuning = h.state().state.train_configs(&env.root).pop().unwrap();
    assert_eq!(fine_tuning.generative_aux, 1.0, "and fine-tuning then keeps learning from the unlabelled images");
    h.step();
    assert!(h.query_by_label("Turn on pretraining").is_none(), "nothing left to offer");
    assert!(h.query_by_label_contains("108 training images have no label").is_none(), "nor to advise");
}

#[test]
fn augmentation_can_be_chosen_by_hand_and_reaches_the_run() {
    use tessera::train::data::Augment;
    let env = env();
    let dir = env.root.join("aug");
    let mut p = tiny_project(&dir, Task::Classify, 12);
    for (i, im) in p.images.iter_mut().enumerate() {
        im.class = Some(i % 3);
    }
    p.save().unwrap();
    let mut h = harness(&env);
    open_in_train_view(&mut h, &dir);
    // A small classification project: the engine shifts by up to 8 % and mirrors only if the images' classes look
    // alike in a mirror, which it checks from their pixels when the run starts.
    assert!(h.query_by_label_contains("For this project: shifts up to 8\u{a0}%. Mirrored too if the classes look alike in a mirror").is_some());
    assert_eq!(h.state().state.train_configs(&env.root).last().unwrap().augment, None);

    h.get_by_label("Automatic augmentation").click();
    h.step();
    h.step();
    let small_classify = Augment { translate: 0.08, ..Augment::none() };
    assert_eq!(h.state().state.settings.train.augment, Some(small_classify), "hand-picking starts from the automatic choice");
    h.get_by_label("Mirror left–right").click();
    h.step();
    h.step();
    let configs = h.state().state.train_configs(&env.root);
    assert_eq!(configs.last().unwrap().augment, Some(Augment { hflip: true, ..small_classify }), "the fine-tuning run gets it");

    h.get_by_label("Automatic augmentation").click();
    h.step();
    h.step();
    assert_eq!(h.state().state.settings.train.augment, None);
}

#[test]
fn large_classification_projects_get_the_large_set_recipe_unless_set_by_hand() {
    let env = env();
    let mut state = AppState::new(AppPaths { config_dir: env.root.join("config"), data_dir: env.root.join("data") });
    let mut p = Project::new("large", Task::Classify, &env.root.join("large"));
    for c in ["a", "b", "c"] {
        p.class_index_or_add(c);
    }
    let entry = |i: usize| ImageEntry { source: ImageSource::File(PathBuf::from(format!("images/{i}.png"))), width: 32, height: 32, split: Split::Train, class: Some(i % 3), boxes: vec![], labeled: true };
    p.images = (0..6000).map(entry).collect();
    state.project = Some(p);
    let run = state.train_configs(&env.root).pop().unwrap();
    assert_eq!((run.batch_size, run.lr, run.class_aux), (64, 2e-3, 1.0), "6000 labelled training images");

    let t = &mut state.settings.train;
    (t.batch_auto, t.batch_size, t.lr_auto, t.lr) = (false, 32, false, 5e-4);
    let run = state.train_configs(&env.root).pop().unwrap();
    assert_eq!((run.batch_size, run.lr), (32, 5e-4), "what the user sets wins");

    let t = &mut state.settings.train;
    (t.batch_auto, t.lr_auto) = (true, true);
    state.project.as_mut().unwrap().images.truncate(300);
    let run = state.train_configs(&env.root).pop().unwrap();
    assert_eq!((run.batch_size, run.lr, run.class_aux), (16, 1e-3, 0.0), "a small project keeps the small-set defaults");
}

#[test]
fn pretraining_a_mostly_unlabelled_project_keeps_the_generative_loss_while_fine_tuning() {
    let env = env();
    let mut state = AppState::new(AppPaths { config_dir: env.root.join("config"), data_dir: env.root.join("data") });
    let mut p = Project::new("few labels", Task::Classify, &env.root.join("few"));
    for c in ["a", "b"] {
        p.class_index_or_add(c);
    }
    // 600 labelled images among 6000.
    let entry = |i: usize| ImageEntry { source: ImageSource::File(PathBuf::from(format!("images/{i}.png"))), width: 32, height: 32, split: Split::Train, class: (i % 10 == 0).then_some(i % 2), boxes: vec![], labeled: i % 10 == 0 };
    p.images = (0..6000).map(entry).collect();
    state.project = Some(p);
    assert_eq!(state.labelled_and_unlabelled(), (600, 5400));
    let run = state.train_configs(&env.root).pop().unwrap();
    assert_eq!(run.generative_aux, 0.0, "from scratch it stays off");
    assert_eq!((run.batch_size, run.lr, run.class_aux), (16, 1e-3, 0.0), "600 labelled images: the small-set defaults");

    state.settings.train.pretrain = true;
    let mut stages = state.train_configs(&env.root);
    let run = stages.pop().unwrap();
    let pretraining = stages.pop().unwrap();
    assert_eq!(pretraining.objective, tessera::train::Objective::Pretrain);
    let t = &state.settings.train;
    assert_eq!((pretraining.epochs, pretraining.minutes), (Some(t.pretrain_epochs), Some(t.pretrain_minutes)), "pretraining has its own time limit");
    assert_eq!(run.generative_aux, 1.0, "fine-tuning pretrained weights keeps learning from the 5400 unlabelled images");
    assert_eq!((run.batch_size, run.lr, run.class_aux), (64, 2e-3, 1.0), "which makes 6000 to learn from: the large-set recipe");

    let t = &mut state.settings.train;
    (t.generative_auto, t.generative_aux) = (false, 0.25);
    assert_eq!(state.train_configs(&env.root).pop().unwrap().generative_aux, 0.25, "what the user sets wins");

    let t = &mut state.settings.train;
    t.generative_auto = true;
    for e in &mut state.project.as_mut().unwrap().images {
        e.class = Some(0);
    }
    assert_eq!(state.train_configs(&env.root).pop().unwrap().generative_aux, 0.0, "nothing left unlabelled");
}

#[test]
fn help_overlay_toggles_with_f1() {
    let env = env();
    let mut h = harness(&env);
    h.step();
    h.key_press(Key::F1);
    h.step();
    assert!(h.state().state.show_help);
    h.step();
    assert!(h.query_by_label("Keyboard shortcuts").is_some());
    h.key_press(Key::F1);
    h.step();
    assert!(!h.state().state.show_help);
}

#[test]
fn settings_and_recent_projects_persist() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Detect, 1);
    {
        let mut h = harness(&env);
        open(&mut h, &dir);
        apply(&mut h, Message::SetThreshold(0.7));
        h.state_mut().state.save_blocking();
    }
    let paths = AppPaths { config_dir: env.root.join("config"), data_dir: env.root.join("data") };
    let state = AppState::new(paths);
    assert!((state.settings.threshold - 0.7).abs() < 1e-6);
    assert_eq!(state.settings.last_project.as_deref(), Some(dir.as_path()));
}

/// Every non-ASCII symbol in the UI's string literals must exist in the fonts the app ships, or it would
/// draw as a box (and kittest refuses missing glyphs).
#[test]
fn every_symbol_in_the_ui_has_a_glyph() {
    let mut h = Harness::builder().build_ui(|ui| {
        ui.label("x");
    });
    h.step();
    let mut symbols: Vec<char> = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ui")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for part in line.split('"').skip(1).step_by(2) {
                symbols.extend(part.chars().filter(|c| !c.is_ascii()));
            }
        }
    }
    symbols.sort_unstable();
    symbols.dedup();
    let missing: Vec<char> = h.ctx.fonts_mut(|f| symbols.iter().copied().filter(|&c| !f.has_glyph(&egui::FontId::proportional(14.0), c)).collect());
    assert!(missing.is_empty(), "no glyph for {missing:?}");
}

/// A stand-in for the training worker that speaks the same protocol: it reports steps until told to stop,
/// then writes nothing and says Finished. It lets the UI's side of training be tested without a model.
fn fake_worker(dir: &Path) -> tessera::train::TrainHandle {
    use tessera::train::worker::{EvalStats, StepStats};
    use tessera::train::{Command, Event};
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<Command>();
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded::<Event>();
    let ckpt = dir.join("ckpt");
    let thread = std::thread::spawn(move || {
        let _ = ev_tx.send(Event::Started { total_steps: 1000, device: "CPU".into(), parameters: 1_234_567, image_size: 64, augment: tessera::train::data::Augment::none(), mirror_asymmetry: None });
        let mut step = 0u64;
        loop {
            match cmd_rx.try_recv() {
                Ok(Command::Stop) => break,
                Ok(_) | Err(crossbeam_channel::TryRecvError::Empty) => {}
                Err(_) => return,
            }
            step += 1;
            let loss = 2.0 / (1.0 + step as f32 * 0.05);
            let stats = StepStats { step, total_steps: 1000, epoch: step as f32 / 100.0, losses: vec![("detect".into(), loss)], lr: 1e-3, images_per_sec: 120.0, elapsed_s: step as f32 * 0.01, eta_s: 10.0 };
            let _ = ev_tx.send(Event::Step(stats));
            if step % 20 == 0 {
                let _ = ev_tx.send(Event::Eval(EvalStats { step, epoch: step as f32 / 100.0, val_losses: vec![("detect".into(), loss * 1.1)], metric_name: "map50".into(), metric: 0.01 * step as f32 }));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = ev_tx.send(Event::Finished { checkpoint: ckpt, reason: "stopped".into() });
    });
    tessera::train::TrainHandle { commands: cmd_tx, events: ev_rx, thread: Some(thread) }
}

#[test]
fn live_training_events_fill_the_charts_and_stop_cleanly() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Detect, 1);
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::ShowView(View::Train));
    let handle = fake_worker(&env.root);
    h.state_mut().state.attach_run("run-1".into(), handle, env.root.join("run"), vec![], tessera::train::Objective::Detect);
    run_until(&mut h, "loss points", 20, |a| a.state.runs[0].steps.len() >= 40 && !a.state.runs[0].evals.is_empty());
    assert!(h.state().state.is_training());
    assert!(h.query_by_label_contains("1.23 M parameters · 64 px").is_some(), "the run's size and input size are shown");
    // Pause/Stop are offered while it runs; Stop ends it and the run is kept with its history.
    h.get_by_label_contains("Stop").click();
    run_until(&mut h, "the run to stop", 20, |a| !a.state.is_training());
    let run = &h.state().state.runs[0];
    assert!(matches!(run.status, tessera::ui::state::RunStatus::Finished(_)));
    assert!(env.root.join("run/history.json").is_file(), "the run's curves are kept on disk for comparison");
}

#[test]
fn closing_during_training_asks_then_stops_and_closes() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Detect, 1);
    let mut h = harness(&env);
    open(&mut h, &dir);
    let handle = fake_worker(&env.root);
    h.state_mut().state.attach_run("run-1".into(), handle, env.root.join("run"), vec![], tessera::train::Objective::Detect);
    run_until(&mut h, "the run to start", 20, |a| !a.state.runs[0].steps.is_empty());
    // The window manager asks to close.
    h.input_mut().viewports.entry(egui::ViewportId::ROOT).or_default().events.push(egui::ViewportEvent::Close);
    h.step();
    assert!(root_commands(&h).iter().any(|c| matches!(c, egui::ViewportCommand::CancelClose)), "the close is held back");
    h.step();
    assert!(h.state().state.is_training(), "closing does not kill the run behind the user's back");
    assert!(h.query_by_label("Training is still running").is_some(), "the app asks first");
    h.get_by_label("Stop, save and quit").click();
    // The frame that sees the run end is the one that closes the window.
    run_until(&mut h, "the run to stop", 20, |a| !a.state.is_training());
    assert!(root_commands(&h).iter().any(|c| matches!(c, egui::ViewportCommand::Close)), "the window closes once the run has stopped");
    let run = &h.state().state.runs[0];
    assert!(matches!(run.status, tessera::ui::state::RunStatus::Finished(_)), "{:?}", run.status);
}

fn root_commands(h: &Harness<'static, TesseraApp>) -> Vec<egui::ViewportCommand> {
    h.output().viewport_output.get(&egui::ViewportId::ROOT).map(|v| v.commands.clone()).unwrap_or_default()
}

#[test]
fn export_writes_annotated_pngs_and_json() {
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Detect, 1);
    let mut h = harness(&env);
    open(&mut h, &dir);
    h.state_mut().state.predict_items.push(PredictItem { id: 7, path: dir.join("images/img0.png"), prediction: Some(Ok(fake_prediction())), requested: true });
    apply(&mut h, Message::SetThreshold(0.5));
    let out = env.root.join("export");
    apply(&mut h, Message::ExportPredictions(out.clone()));
    run_until(&mut h, "the export", 20, |a| !a.state.exporting);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("predictions.json")).unwrap()).unwrap();
    let dets = json["images"][0]["detections"].as_array().unwrap();
    assert_eq!(dets.len(), 2, "only boxes above the threshold are exported");
    let png = std::fs::read_dir(&out).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "png")).expect("an annotated PNG");
    let img = image::open(png.path()).unwrap().to_rgb8();
    let original = image::open(dir.join("images/img0.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), original.dimensions());
    assert_ne!(img.get_pixel(5, 10), original.get_pixel(5, 10), "the box edge is drawn onto the image");
}

#[test]
fn confusion_matrix_cell_click_shows_those_images() {
    use tessera::eval::{ClassStats, ClassificationReport, EvalReport};
    let env = env();
    let dir = env.root.join("proj");
    tiny_project(&dir, Task::Classify, 4);
    let mut h = harness(&env);
    open(&mut h, &dir);
    let stats = |n: &str| ClassStats { name: n.into(), support: 1, precision: 0.5, recall: 0.5, ap50: None, ap50_95: None };
    // Images 0 and 1 are red; image 1 was taken for green. Image 2 is green, 3 blue, both right.
    let report = ClassificationReport {
        accuracy: 0.75,
        per_class: vec![stats("red"), stats("green"), stats("blue")],
        confusion: vec![vec![1, 1, 0], vec![0, 1, 0], vec![0, 0, 1]],
        items: vec![(0, 0, 0, 0.9), (1, 0, 1, 0.8), (2, 1, 1, 0.7), (3, 2, 2, 0.95)],
    };
    h.state_mut().state.eval_report = Some(EvalReport::Classification(report));
    apply(&mut h, Message::ShowView(View::Evaluate));
    h.step();
    assert!(h.query_by_label("75.0%").is_some(), "accuracy is shown");
    assert!(h.query_by_label_contains("Worst mistakes").is_some());
    // Click the (truth red, predicted green) cell: row 0, column 1 of the heat map.
    let cell = h.state().evaluate_panel.cell_rect(0, 1).expect("the matrix was drawn");
    h.hover_at(cell.center());
    h.step();
    h.drag_at(cell.center());
    h.step();
    h.drop_at(cell.center());
    h.step();
    h.step();
    assert_eq!(h.state().evaluate_panel.selected_cell, Some((0, 1)));
    assert!(h.query_by_label_contains("Images of red predicted as green").is_some());
    assert!(h.query_by_label("80%").is_some(), "the one image of that cell is listed with its probability");
}

/// The whole loop with the real engine: train from the Train view, watch loss points arrive, then use the
/// model it produced to predict a dropped image, evaluate, suggest labels and look inside.
#[test]
fn real_training_run_then_predict_evaluate_suggest_and_look_inside() {
    let env = env();
    let dir = env.root.join("demo");
    let opts = tessera::data::demo::DemoOptions { count: 60, ..Default::default() };
    tessera::data::demo::write_demo(&dir, &opts).unwrap();
    let mut h = harness(&env);
    open(&mut h, &dir);
    let mut t = h.state().state.settings.train.clone();
    t.epochs = 3.0;
    t.batch_size = 16;
    t.use_gpu = false;
    apply(&mut h, Message::SetTrainSettings(t));
    apply(&mut h, Message::ShowView(View::Train));
    h.get_by_label_contains("Start training").click();
    run_until(&mut h, "loss points", 120, |a| a.state.runs.last().is_some_and(|r| r.steps.len() >= 2));
    {
        let run = h.state().state.runs.last().unwrap();
        assert!(run.steps.iter().all(|s| s.losses.iter().all(|(_, v)| v.is_finite())), "finite losses");
        assert!(run.total_steps > 0 && run.parameters > 0);
    }
    run_until(&mut h, "the run to finish and its model to load", 300, |a| !a.state.is_training() && a.state.predictor.is_some() && a.state.loading_checkpoint.is_none());
    let run = h.state().state.runs.last().unwrap();
    assert!(matches!(run.status, tessera::ui::state::RunStatus::Finished(_)), "{:?}", run.status);
    assert!(!run.evals.is_empty(), "validation points arrived");
    assert!(run.out_dir.join("history.json").is_file());

    // Predict a dropped image with the new model.
    apply(&mut h, Message::ShowView(View::Predict));
    let img = dir.join("images").read_dir().unwrap().flatten().next().unwrap().path();
    h.input_mut().dropped_files = vec![std::sync::Arc::new(Dropped(img)) as egui::DroppedFileHandle];
    h.step();
    run_until(&mut h, "the prediction", 60, |a| a.state.predict_items.first().is_some_and(|i| i.prediction.is_some()));
    let shown = {
        let item = &h.state().state.predict_items[0];
        let p = item.prediction.as_ref().unwrap().as_ref().expect("prediction succeeds");
        p.detections.iter().filter(|d| d.score >= h.state().state.settings.threshold).count()
    };
    run_until(&mut h, "the image to be drawn", 20, |a| a.predict_panel.drawn_boxes == shown && a.state.images.pending() == 0);

    // Evaluate on the test split.
    apply(&mut h, Message::RunEvaluation(Split::Test));
    run_until(&mut h, "the evaluation", 120, |a| !a.state.eval_running);
    assert!(h.state().state.eval_report.is_some(), "evaluation failed: {:?}", h.state().state.eval_error);

    // Model-assisted labelling.
    apply(&mut h, Message::SelectImage(Some(0)));
    apply(&mut h, Message::RequestSuggestions(0));
    run_until(&mut h, "suggestions", 60, |a| a.state.suggesting.is_none());
    assert!(h.state().state.suggestions.contains_key(&0), "suggestions arrived: {:?}", h.state().state.notices.last().map(|n| &n.text));

    // Look inside: attention over the patches.
    apply(&mut h, Message::ShowView(View::Inside));
    run_until(&mut h, "attention", 60, |a| a.state.attention.values().any(|r| match r { Ok(_) => true, Err(e) => !e.starts_with("computing") }));
    let att = h.state().state.attention.values().next().unwrap();
    let map = att.as_ref().expect("attention map");
    assert_eq!(map.per_layer[0].len(), map.grid.0 * map.grid.1);
}

/// Pretraining then fine-tuning runs as one run in two stages; both objectives' losses land in the same
/// chart, and the fine-tuned model starts from the pretrained weights.
#[test]
fn pretrain_then_finetune_is_one_run_with_both_curves() {
    let env = env();
    let dir = env.root.join("demo");
    let opts = tessera::data::demo::DemoOptions { count: 40, ..Default::default() };
    tessera::data::demo::write_demo(&dir, &opts).unwrap();
    let mut h = harness(&env);
    open(&mut h, &dir);
    let mut t = h.state().state.settings.train.clone();
    t.pretrain = true;
    t.pretrain_epochs = 2.0;
    t.epochs = 2.0;
    t.batch_size = 16;
    t.use_gpu = false;
    apply(&mut h, Message::SetTrainSettings(t));
    apply(&mut h, Message::StartTraining);
    run_until(&mut h, "both stages to finish", 300, |a| !a.state.is_training() && a.state.loading_checkpoint.is_none());
    let run = h.state().state.runs.last().unwrap();
    assert!(matches!(run.status, tessera::ui::state::RunStatus::Finished(_)), "{:?}", run.status);
    let objectives: std::collections::BTreeSet<String> = run.steps.iter().flat_map(|s| s.losses.iter().map(|(n, _)| n.clone())).collect();
    assert_eq!(objectives.len(), 2, "pretraining and fine-tuning losses: {objectives:?}");
    assert!(run.steps.windows(2).all(|w| w[1].step > w[0].step), "steps keep counting across stages");
    assert!(run.checkpoint.as_ref().is_some_and(|c| c.ends_with("model")), "the run's model is the fine-tuned one");
    assert!(h.state().state.predictor.is_some());
}

/// Runs the real training worker on `project` until it finishes (panics on an error event).
fn train_to_end(project: &Project, config: tessera::train::TrainConfig) {
    let handle = tessera::train::start_training(project.clone(), config);
    loop {
        match handle.events.recv_timeout(Duration::from_secs(300)).expect("worker went silent") {
            tessera::train::Event::Finished { .. } => break,
            tessera::train::Event::Error { message } => panic!("{message}"),
            _ => {}
        }
    }
}

/// Look inside, generative half: with a pretrained checkpoint loaded, the app computes the model's reconstruction of
/// an image (half its patches given, the rest imagined) and turns it into a texture for the view.
#[test]
fn look_inside_shows_a_pretrained_models_reconstruction() {
    let env = env();
    let dir = env.root.join("demo");
    let opts = tessera::data::demo::DemoOptions { count: 40, ..Default::default() };
    let project = tessera::data::demo::write_demo(&dir, &opts).unwrap();
    let ckpt = env.root.join("pre.ckpt");
    let config = tessera::train::TrainConfig {
        objective: tessera::train::Objective::Pretrain,
        steps: Some(5),
        out: ckpt.clone(),
        ..Default::default()
    };
    train_to_end(&project, config);
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::LoadCheckpoint(ckpt));
    run_until(&mut h, "the pretrained model to load", 60, |a| a.state.predictor.is_some() && a.state.loading_checkpoint.is_none());
    apply(&mut h, Message::ShowView(View::Inside));
    let keep = 32;
    apply(&mut h, Message::ComputeReconstruction { key: "first".into(), source: project.source_of(0), keep });
    run_until(&mut h, "the reconstruction", 60, |a| {
        a.state.reconstructions.get(&("first".to_string(), keep)).is_some_and(|r| !matches!(r, Err(e) if e.starts_with("computing")))
    });
    let result = &h.state().state.reconstructions[&("first".to_string(), keep)];
    let tex = result.as_ref().expect("reconstruction succeeds").as_ref().expect("a pretrained model reconstructs");
    assert_eq!(tex.size(), [64, 64], "the model's input size");
}

/// Flip TTA in the Predict view (here for a classifier trained with mirror images): ticking it re-predicts the open
/// image, whose probabilities become the mean of the image's and its mirror image's, and the choice is remembered.
#[test]
fn flip_tta_checkbox_repredicts_with_averaged_probabilities() {
    let env = env();
    let dir = env.root.join("shapes");
    let opts = tessera::data::demo::DemoOptions { count: 40, single_fraction: 1.0, task: Task::Classify, ..Default::default() };
    let project = tessera::data::demo::write_demo(&dir, &opts).unwrap();
    let ckpt = env.root.join("cls.ckpt");
    let mirror = tessera::train::data::Augment { hflip: true, ..tessera::train::data::Augment::none() };
    let config = tessera::train::TrainConfig { objective: tessera::train::Objective::Classify, steps: Some(20), augment: Some(mirror), out: ckpt.clone(), ..Default::default() };
    train_to_end(&project, config);
    let mut h = harness(&env);
    open(&mut h, &dir);
    apply(&mut h, Message::LoadCheckpoint(ckpt.clone()));
    run_until(&mut h, "the classifier to load", 60, |a| a.state.predictor.is_some() && a.state.loading_checkpoint.is_none());
    apply(&mut h, Message::ShowView(View::Predict));
    let ImageSource::File(rel) = project.source_of(0) else { panic!("demo images are files") };
    let path = if rel.is_absolute() { rel } else { dir.join(rel) };
    apply(&mut h, Message::PredictPaths(vec![path.clone()]));
    let probs = |a: &TesseraApp| a.state.predict_items.first().and_then(|i| i.prediction.clone()).map(|p| p.expect("prediction succeeds").probs);
    run_until(&mut h, "the plain prediction", 60, |a| probs(a).is_some());
    let plain = probs(h.state()).unwrap();

    assert!(!h.state().state.settings.flip_tta, "off by default");
    h.get_by_label("Flip TTA").click();
    h.step();
    assert!(h.state().state.settings.flip_tta);
    run_until(&mut h, "the mirrored prediction", 60, |a| probs(a).is_some());
    let averaged = probs(h.state()).unwrap();

    let predictor = tessera::model::Predictor::load(&ckpt).unwrap();
    let image = image::open(&path).unwrap();
    let mirrored = predictor.predict(&image.fliph(), &Default::default()).unwrap().probs;
    assert!(plain.iter().zip(&mirrored).any(|(a, b)| (a - b).abs() > 1e-6), "the mirror image must predict differently for this test to mean anything");
    for ((a, p), m) in averaged.iter().zip(&plain).zip(&mirrored) {
        assert!((a - (p + m) / 2.0).abs() < 1e-5, "TTA {averaged:?} is not the mean of {plain:?} and {mirrored:?}");
    }
    h.state_mut().state.save_blocking();
    let reopened = AppState::new(AppPaths { config_dir: env.root.join("config"), data_dir: env.root.join("data") });
    assert!(reopened.settings.flip_tta, "the choice persists");
}

/// A picture of the help overlay on an empty app (no paths, no data, nothing that changes between runs), to
/// catch layout regressions. Regenerate with `UPDATE_SNAPSHOTS=1 cargo test --release --test ui_app`.
#[test]
fn snapshot_help_overlay() {
    let env = env();
    let paths = AppPaths { config_dir: env.root.join("config"), data_dir: env.root.join("data") };
    let ctx = egui::Context::default();
    let app = TesseraApp::with_state(&ctx, AppState::new(paths), Autopilot::default());
    let mut h = Harness::builder().with_size(egui::vec2(1100.0, 800.0)).with_theme(egui::Theme::Dark).build_ui_state(|ui, app: &mut TesseraApp| app.frame(ui), app);
    h.state_mut().state.show_help = true;
    h.step();
    h.step();
    // The status bar's frame time changes from run to run; keep it out of the picture.
    let size = h.ctx.content_rect().size();
    h.mask(egui::Rect::from_min_max(egui::pos2(size.x - 320.0, size.y - 30.0), size.to_pos2()));
    h.snapshot("help_overlay");
}
