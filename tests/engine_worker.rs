//! The training worker's contract: events, stop/resume with the same loss curve, errors instead of crashes,
//! checkpoints that load (and clear errors for ones that do not).
use std::path::Path;
use std::time::Duration;

use tessera::data::demo::{write_demo, DemoOptions};
use tessera::data::project::Project;
use tessera::model::{PredictOptions, Predictor};
use tessera::train::{start_training, Command, Event, Objective, TrainConfig};

fn demo(dir: &Path) -> Project {
    write_demo(dir, &DemoOptions { count: 80, size: 32, seed: 5, ..DemoOptions::default() }).unwrap()
}

fn config(objective: Objective, out: &Path, steps: u64) -> TrainConfig {
    TrainConfig {
        objective,
        preset: "tiny".into(),
        image_size: Some(32),
        steps: Some(steps),
        batch_size: 8,
        lr: 1e-3,
        warmup_steps: 2,
        seed: 11,
        out: out.to_path_buf(),
        eval_every: 4,
        ..TrainConfig::default()
    }
}

/// Runs to the end, returning (step losses, events), optionally sending `Stop` once step `stop_after` is seen.
fn run(project: Project, config: TrainConfig, stop_after: Option<u64>) -> (Vec<f32>, Vec<Event>) {
    let handle = start_training(project, config);
    let mut losses = vec![];
    let mut events = vec![];
    loop {
        match handle.events.recv_timeout(Duration::from_secs(300)) {
            Ok(ev) => {
                if let Event::Step(s) = &ev {
                    losses.push(s.losses[0].1);
                    if Some(s.step) == stop_after {
                        handle.send(Command::Stop);
                    }
                }
                let end = matches!(ev, Event::Finished { .. } | Event::Error { .. });
                events.push(ev);
                if end {
                    break;
                }
            }
            Err(e) => panic!("no event from the worker: {e}"),
        }
    }
    (losses, events)
}

#[test]
fn resume_after_stop_continues_the_same_loss_curve() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(&dir.path().join("data"));
    for objective in [Objective::Detect, Objective::Classify] {
        let full_out = dir.path().join("full.ckpt");
        let (full, _) = run(project.clone(), config(objective, &full_out, 10), None);
        assert_eq!(full.len(), 10);

        let part_out = dir.path().join("part.ckpt");
        let (first, events) = run(project.clone(), config(objective, &part_out, 10), Some(4));
        assert!(matches!(events.last(), Some(Event::Finished { reason, .. }) if reason == "stopped"), "{:?}", events.last());
        assert!(first.len() >= 4 && first.len() < 10, "stopped after {} steps", first.len());
        let resume = TrainConfig { resume: Some(part_out.clone()), out: part_out.clone(), ..config(objective, &part_out, 10) };
        let (rest, _) = run(project.clone(), resume, None);
        let joined: Vec<f32> = first.iter().chain(&rest).copied().collect();
        assert_eq!(joined.len(), full.len(), "{objective:?}: resumed run has a different length");
        for (i, (a, b)) in joined.iter().zip(&full).enumerate() {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{objective:?} step {}: {a} (resumed) vs {b} (uninterrupted)", i + 1);
        }
    }
}

#[test]
fn events_pause_resume_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(&dir.path().join("data"));
    let out = dir.path().join("c.ckpt");
    let handle = start_training(project, config(Objective::Detect, &out, 8));
    handle.send(Command::Pause);
    handle.send(Command::SaveNow);
    handle.send(Command::Resume);
    let mut kinds = vec![];
    for ev in handle.events.iter() {
        let k = match &ev {
            Event::Started { .. } => "started",
            Event::Step(s) => {
                assert!(s.lr > 0.0 && s.losses[0].1.is_finite() && s.total_steps == 8);
                "step"
            }
            Event::Eval(e) => {
                assert_eq!(e.metric_name, "map50");
                assert!((0.0..=1.0).contains(&e.metric));
                "eval"
            }
            Event::Samples(_) => "samples",
            Event::CheckpointWritten { .. } => "checkpoint",
            Event::Paused => "paused",
            Event::Resumed => "resumed",
            Event::Finished { .. } => "finished",
            Event::Error { message } => panic!("{message}"),
        };
        kinds.push(k);
    }
    for k in ["started", "paused", "resumed", "step", "eval", "samples", "checkpoint", "finished"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "step").count(), 8);
    // The checkpoint loads and predicts boxes in original image pixels.
    let p = Predictor::load(&out).unwrap();
    assert_eq!(p.class_names().len(), 5);
    let img = image::DynamicImage::new_rgb8(50, 40);
    let pred = p.predict(&img, &PredictOptions { threshold: 0.0, ..PredictOptions::default() }).unwrap();
    for d in &pred.detections {
        assert!(d.bbox.xmax <= 50.0 && d.bbox.ymax <= 40.0 && d.bbox.xmin >= 0.0, "{:?}", d.bbox);
    }
}

/// The checkpoint keeps the weights of the best val evaluation beside the last step's: prediction uses the best by
/// default, and each set of weights scores on the val split what the run reported when it evaluated them.
#[test]
fn the_best_val_weights_are_kept_and_used_by_default() {
    use tessera::eval::{evaluate, EvalReport};
    use tessera::train::checkpoint::{read_meta, WeightsChoice, BEST_FILE};
    let dir = tempfile::tempdir().unwrap();
    let project = demo(&dir.path().join("data"));
    let out = dir.path().join("best.ckpt");
    // A learning rate too high to keep improving: later evaluations are no better than an early one.
    let cfg = TrainConfig { lr: 2e-2, eval_every: 1, ..config(Objective::Classify, &out, 12) };
    let (_, events) = run(project.clone(), cfg, None);
    let evals: Vec<(u64, f32)> = events.iter().filter_map(|e| if let Event::Eval(e) = e { Some((e.step, e.metric)) } else { None }).collect();
    assert_eq!(evals.len(), 12);
    // The best is the last evaluation with the highest score: a later tie replaces an earlier best. (Four val images
    // score in quarters, so ties happen: when written, steps 5 and 6 both scored 0.5 and step 6 was kept.)
    let best = evals.iter().fold(evals[0], |b, e| if e.1 >= b.1 { *e } else { b });
    let last = *evals.last().unwrap();
    let state = read_meta(&out).unwrap().train.unwrap();
    assert_eq!(state.best_step, Some(best.0), "evaluations {evals:?}");
    assert_eq!(out.join(BEST_FILE).exists(), best.0 < last.0, "a best file only when an earlier evaluation was better");
    assert!(best.0 < last.0, "this setting was chosen so that the best evaluation is an earlier one: {evals:?}");
    let opts = PredictOptions::default();
    let accuracy = |choice| match evaluate(&Predictor::load_weights(&out, choice).unwrap(), &project, tessera::data::project::Split::Val, &opts).unwrap() {
        EvalReport::Classification(c) => c.accuracy,
        other => panic!("{other:?}"),
    };
    assert!((accuracy(WeightsChoice::Best) - best.1).abs() < 1e-6, "best weights: {} vs {}", accuracy(WeightsChoice::Best), best.1);
    assert!((accuracy(WeightsChoice::Last) - last.1).abs() < 1e-6, "last weights: {} vs {}", accuracy(WeightsChoice::Last), last.1);
    let default = match evaluate(&Predictor::load(&out).unwrap(), &project, tessera::data::project::Split::Val, &opts).unwrap() {
        EvalReport::Classification(c) => c.accuracy,
        other => panic!("{other:?}"),
    };
    assert_eq!(default, accuracy(WeightsChoice::Best));

    // Resuming (here a finished run: nothing left to do) keeps the best weights and their step.
    let again = TrainConfig { resume: Some(out.clone()), steps: Some(12), ..config(Objective::Classify, &out, 12) };
    let (_, events) = run(project, again, None);
    assert!(matches!(events.last(), Some(Event::Finished { .. })), "{:?}", events.last());
    assert_eq!(read_meta(&out).unwrap().train.unwrap().best_step, Some(best.0));
    assert!(out.join(BEST_FILE).exists());
}

#[test]
fn diverging_training_is_an_error_event_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(&dir.path().join("data"));
    let out = dir.path().join("nan.ckpt");
    let cfg = TrainConfig { lr: 1e12, grad_clip: None, ..config(Objective::Classify, &out, 30) };
    let (_, events) = run(project, cfg, None);
    match events.last() {
        Some(Event::Error { message }) => assert!(message.contains("diverged"), "{message}"),
        other => panic!("expected an error event, got {other:?}"),
    }
}

#[test]
fn bad_checkpoints_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Predictor::load(&dir.path().join("nope")).err().unwrap().to_string();
    assert!(err.contains("no checkpoint"), "{err}");
    // A real checkpoint with its weights truncated.
    let project = demo(&dir.path().join("data"));
    let out = dir.path().join("c.ckpt");
    run(project, config(Objective::Classify, &out, 2), None);
    let w = out.join("weights.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let err = Predictor::load(&out).err().unwrap().to_string();
    assert!(err.contains("corrupt"), "{err}");
}

/// The demo project with few labels among many images: every training image past the first 12 loses its label.
fn demo_with_few_labels(dir: &Path) -> Project {
    let mut project = demo(dir);
    let train = project.indices_in(tessera::data::project::Split::Train);
    for &i in &train[12..] {
        project.images[i].class = None;
        project.images[i].boxes.clear();
        project.images[i].labeled = false;
    }
    project
}

/// Every step's reported losses (name, value) of a run to its end.
fn loss_curves(project: Project, config: TrainConfig) -> Vec<Vec<(String, f32)>> {
    let handle = start_training(project, config);
    let mut curves = vec![];
    loop {
        match handle.events.recv_timeout(Duration::from_secs(300)).expect("no event from the worker") {
            Event::Step(s) => curves.push(s.losses.clone()),
            Event::Finished { .. } => break,
            Event::Error { message } => panic!("{message}"),
            _ => {}
        }
    }
    curves
}

/// One named loss along a run's curves.
fn named_loss(curves: &[Vec<(String, f32)>], name: &str) -> Vec<f32> {
    curves.iter().map(|l| l.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("the {name} loss is reported")).1).collect()
}

#[test]
fn the_generative_aux_loss_learns_from_unlabelled_images_while_fine_tuning() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo_with_few_labels(&dir.path().join("data"));
    let steps = 30;
    let curves = |weight: f64| {
        let out = dir.path().join(format!("gen{weight}.ckpt"));
        loss_curves(project.clone(), TrainConfig { generative_aux: weight, ..config(Objective::Classify, &out, steps) })
    };
    let with = curves(1.0);
    assert_eq!(with.len(), steps as usize);
    let generative = named_loss(&with, "generative");
    assert!(generative.iter().all(|v| v.is_finite()));
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    assert!(mean(&generative[25..]) < 0.9 * mean(&generative[..5]), "the pixel loss learns: {generative:?}");
    let without = curves(0.0);
    assert!(without.iter().all(|l| l.len() == 1), "no generative loss when it is off");
    assert_ne!(with[5][0].1, without[5][0].1, "the generative loss changes what the task learns");
}

/// What a two-step classification run on `project` with the default augmentation reports and records:
/// (the Started event's augmentation and mirror measure, the checkpoint's recorded augmentation, TTA views).
fn default_augmentation_of(project: Project, out: &Path) -> (tessera::train::data::Augment, Option<f64>, Option<tessera::train::data::Augment>, usize) {
    let (_, events) = run(project, config(Objective::Classify, out, 2), None);
    assert!(matches!(events.last(), Some(Event::Finished { .. })), "{:?}", events.last());
    let (augment, asymmetry) = events.iter().find_map(|e| if let Event::Started { augment, mirror_asymmetry, .. } = e { Some((*augment, *mirror_asymmetry)) } else { None }).unwrap();
    let recorded = tessera::train::checkpoint::read_meta(out).unwrap().train.unwrap().config.augment;
    (augment, asymmetry, recorded, Predictor::load(out).unwrap().tta_views())
}

#[test]
fn classifiers_mirror_by_default_only_images_whose_classes_survive_a_mirror() {
    use tessera::train::run::MIRROR_ASYMMETRY_LIMIT;
    let dir = tempfile::tempdir().unwrap();
    // The shapes (circles, squares, triangles, stars, crosses) are left-right symmetric: mirrored, and the
    // checkpoint says so, so test-time augmentation may look at the mirror image too.
    let (augment, asymmetry, recorded, views) = default_augmentation_of(demo(&dir.path().join("data")), &dir.path().join("shapes.ckpt"));
    assert!(asymmetry.unwrap() < MIRROR_ASYMMETRY_LIMIT && augment.hflip && !augment.dihedral, "{asymmetry:?} {augment:?}");
    assert_eq!((recorded, views), (Some(augment), 2));

    // Arrows pointing left or right: a mirror turns one class into the other.
    let src = dir.path().join("arrows");
    for (class, left) in [("left", true), ("right", false)] {
        std::fs::create_dir_all(src.join(class)).unwrap();
        for i in 0..24u32 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let tip = if left { x } else { 31 - x };
                let on = (8 + i % 8..28).contains(&tip) && (14..18).contains(&y) || tip >= 6 + i % 8 && tip < 14 + i % 8 && y.abs_diff(16) <= tip.saturating_sub(6 + i % 8);
                image::Rgb(if on { [230, 220, 40] } else { [20 + (i * 7 % 40) as u8, 30, 60] })
            });
            img.save(src.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let (project, _) = tessera::data::import::open_project_or_dataset(&src).unwrap();
    let (augment, asymmetry, recorded, views) = default_augmentation_of(project.clone(), &dir.path().join("arrows.ckpt"));
    assert!(asymmetry.unwrap() >= MIRROR_ASYMMETRY_LIMIT && !augment.hflip, "{asymmetry:?} {augment:?}");
    assert_eq!((recorded, views), (Some(augment), 1), "never mirrored, so TTA must not look at the mirror image");

    // Augmentation set by hand is used as given, without the check.
    let by_hand = tessera::train::data::Augment { hflip: true, ..tessera::train::data::Augment::none() };
    let out = dir.path().join("by-hand.ckpt");
    let (_, events) = run(project, TrainConfig { augment: Some(by_hand), ..config(Objective::Classify, &out, 2) }, None);
    let started = events.iter().find_map(|e| if let Event::Started { augment, mirror_asymmetry, .. } = e { Some((*augment, *mirror_asymmetry)) } else { None });
    assert_eq!(started, Some((by_hand, None)));
}

#[test]
fn pseudo_labels_teach_from_the_images_the_model_is_sure_of() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo_with_few_labels(&dir.path().join("data"));
    let steps = 12;
    let curves = |threshold: Option<f64>| {
        let out = dir.path().join(format!("pseudo{threshold:?}.ckpt"));
        // Augmentation by hand: the default one counts the unlabelled images once pseudo-labels are on.
        let augment = Some(tessera::train::data::Augment { hflip: true, ..tessera::train::data::Augment::none() });
        let curves = loss_curves(project.clone(), TrainConfig { pseudo_labels: threshold, augment, ..config(Objective::Classify, &out, steps) });
        assert_eq!(curves.len(), steps as usize);
        curves
    };
    let pseudo = |curve: &[Vec<(String, f32)>]| named_loss(curve, "pseudo-labels");
    let off = curves(None);
    assert!(off.iter().all(|l| l.len() == 1), "no pseudo-label loss when they are off");
    // Never sure enough: nothing is learned from the unlabelled images, and the labelled ones train exactly as without.
    let never = curves(Some(1.01));
    assert!(pseudo(&never).iter().all(|&v| v == 0.0));
    assert_eq!(never.iter().map(|l| l[0].1).collect::<Vec<_>>(), off.iter().map(|l| l[0].1).collect::<Vec<_>>());
    // Always sure: every image of every batch learns its guess.
    let always = curves(Some(0.0));
    assert!(pseudo(&always).iter().all(|v| v.is_finite() && *v > 0.0), "{:?}", pseudo(&always));
    assert_ne!(always[5][0].1, off[5][0].1, "the pseudo-labels change what the labelled images' loss sees");
}

#[test]
fn a_time_limited_run_evaluates_about_ten_times_however_fast_it_trains() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(&dir.path().join("data"));
    let out = dir.path().join("timed.ckpt");
    // No step count: the run refines its steps from its speed, and its evaluation interval with them.
    // 21 s: long enough for 60 steps even on a loaded 2-core machine (12 s gave 56 beside a training run).
    let timed = TrainConfig { steps: None, minutes: Some(0.35), eval_every: 0, ..config(Objective::Classify, &out, 0) };
    let (losses, events) = run(project, timed, None);
    let evals = events.iter().filter(|e| matches!(e, Event::Eval(_))).count();
    let steps = losses.len();
    eprintln!("{steps} steps, {evals} evaluations");
    // 64 training images in batches of 8: 8 steps per epoch, at most one evaluation per epoch.
    // Kept at the first guess of 1000 steps, the interval would be 100: at most two evaluations in this run.
    assert!(steps >= 60, "too few steps in 21 s to tell the intervals apart: {steps}");
    assert!((5..=13).contains(&evals), "{evals} evaluations in {steps} steps");
}

#[test]
fn a_detector_started_from_a_pretrained_checkpoint_has_room_for_the_most_crowded_image() {
    use tessera::data::project::Split;
    use tessera::train::checkpoint::read_meta;
    let dir = tempfile::tempdir().unwrap();
    let project = write_demo(&dir.path().join("data"), &DemoOptions { count: 80, size: 32, seed: 5, max_shapes: 6, ..DemoOptions::default() }).unwrap();
    let most = project.images.iter().filter(|e| e.split == Split::Train).map(|e| e.boxes.len()).max().unwrap();
    let wanted = 2 * most;
    assert!(wanted > 10, "the demo must hold more objects than the preset's 10 ({most} per image at most)");
    let finish = |project: &Project, config: TrainConfig| {
        let (_, events) = run(project.clone(), config, None);
        assert!(matches!(events.last(), Some(Event::Finished { .. })), "{:?}", events.last());
    };

    let pretrained = dir.path().join("pre.ckpt");
    finish(&project, config(Objective::Pretrain, &pretrained, 2));
    assert_eq!(read_meta(&pretrained).unwrap().model.max_objects, 10, "pretraining keeps the preset's count");
    let from_pretrained = dir.path().join("det.ckpt");
    finish(&project, TrainConfig { init: Some(pretrained.clone()), image_size: None, ..config(Objective::Detect, &from_pretrained, 2) });
    assert_eq!(read_meta(&from_pretrained).unwrap().model.max_objects, wanted);
    let scratch = dir.path().join("scratch.ckpt");
    finish(&project, config(Objective::Detect, &scratch, 2));
    assert_eq!(read_meta(&scratch).unwrap().model.max_objects, wanted);

    // Fine-tuning that detector on sparser data keeps its room (its token positions are never cut).
    let mut sparse = project.clone();
    sparse.images.iter_mut().for_each(|e| e.boxes.truncate(1));
    let again = dir.path().join("again.ckpt");
    finish(&sparse, TrainConfig { init: Some(from_pretrained.clone()), image_size: None, ..config(Objective::Detect, &again, 2) });
    assert_eq!(read_meta(&again).unwrap().model.max_objects, wanted);
    // The grown token positions are saved and read back: the detector loads and decodes.
    let image = tessera::data::decode::load_image(&project.source_of(0)).unwrap();
    let boxes = Predictor::load(&again).unwrap().predict(&image, &PredictOptions { threshold: 0.0, max_objects: 100, ..PredictOptions::default() }).unwrap().detections;
    assert!(boxes.len() <= wanted, "{} boxes", boxes.len());
}
