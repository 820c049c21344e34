//! The loader on generated demo data: batches, determinism, augmentation, bad images.
use std::path::Path;
use std::sync::Arc;

use tessera::data::augment::AugmentConfig;
use tessera::data::demo::{write_demo, DemoOptions};
use tessera::data::loader::{Fit, Loader, LoaderConfig, Normalization};
use tessera::data::{ImageSource, Project, Split, Task};

fn demo(dir: &Path, count: usize) -> Arc<Project> {
    Arc::new(write_demo(dir, &DemoOptions { count, ..DemoOptions::default() }).unwrap())
}

fn all(project: &Project) -> Vec<usize> {
    (0..project.images.len()).collect()
}

/// Every batch of an epoch, flattened to comparable values.
fn run_epoch(loader: &Loader, epoch: u64) -> Vec<(Vec<usize>, Vec<f32>, String)> {
    loader
        .epoch(epoch)
        .map(|b| {
            let b = b.unwrap();
            let pixels = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (b.indices.clone(), pixels, format!("{:?}", b.boxes))
        })
        .collect()
}

#[test]
fn batches_have_the_right_shape_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path(), 50);
    let cfg = LoaderConfig { image_size: 48, batch_size: 16, ..LoaderConfig::default() };
    let loader = Loader::new(project.clone(), all(&project), cfg).unwrap();
    assert_eq!(loader.batches_per_epoch(), 4);
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(batches.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![16, 16, 16, 2]);
    for b in &batches {
        assert_eq!(b.images.dims(), &[b.len(), 3, 48, 48]);
        for (k, &i) in b.indices.iter().enumerate() {
            let entry = &project.images[i];
            assert_eq!(b.classes[k], entry.class);
            // No augmentation: boxes are the labels scaled from 64 to 48 px.
            assert_eq!(b.boxes[k].len(), entry.boxes.len());
            for (got, want) in b.boxes[k].iter().zip(&entry.boxes) {
                assert!((got.xmin - want.xmin * 0.75).abs() < 1e-4 && (got.ymax - want.ymax * 0.75).abs() < 1e-4);
                assert_eq!(got.class, want.class);
            }
            assert_eq!(b.letterboxes[k].box_to_original(&b.boxes[k][0]).class, entry.boxes[0].class);
        }
    }
    // Unshuffled: the project order.
    let order: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(order, all(&project));
}

#[test]
fn same_seed_and_epoch_give_the_same_batches_whatever_the_threads_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path(), 40);
    let base = LoaderConfig { batch_size: 8, ..LoaderConfig::training(Task::Detect, 32, 8, 7) };
    let one = Loader::new(project.clone(), all(&project), LoaderConfig { workers: 1, cache: false, ..base.clone() }).unwrap();
    let many = Loader::new(project.clone(), all(&project), LoaderConfig { workers: 3, cache: true, prefetch: 1, ..base.clone() }).unwrap();
    let a = run_epoch(&one, 3);
    assert_eq!(a, run_epoch(&many, 3));
    // Twice through the cached loader (second time from the cache): still the same.
    assert_eq!(a, run_epoch(&many, 3));
    // Another epoch: another order and other augmentations, but every image exactly once (drop_last: 40 = 5 x 8).
    let b = run_epoch(&one, 4);
    assert_ne!(a, b);
    let mut seen: Vec<usize> = b.iter().flat_map(|x| x.0.clone()).collect();
    seen.sort();
    assert_eq!(seen, all(&project));
    // Another seed: another order.
    let other = Loader::new(project.clone(), all(&project), LoaderConfig { seed: 8, ..base }).unwrap();
    assert_ne!(one.order(3), other.order(3));
}

#[test]
fn augmented_boxes_stay_inside_and_some_change() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path(), 40);
    let cfg = LoaderConfig { drop_last: false, ..LoaderConfig::training(Task::Detect, 64, 10, 1) };
    let loader = Loader::new(project.clone(), all(&project), cfg).unwrap();
    let mut changed = 0;
    for b in loader.epoch(0) {
        let b = b.unwrap();
        for (k, boxes) in b.boxes.iter().enumerate() {
            for bb in boxes {
                assert!(bb.xmin >= 0.0 && bb.ymin >= 0.0 && bb.xmax <= 64.0 && bb.ymax <= 64.0, "{bb:?}");
                assert!(bb.width() >= 1.0 && bb.height() >= 1.0);
            }
            if *boxes != project.images[b.indices[k]].boxes {
                changed += 1;
            }
        }
    }
    assert!(changed > 10, "augmentation changed only {changed} of 40 label sets");
}

#[test]
fn bad_images_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path(), 20);
    // Corrupt two images after the project was written: one truncated, one deleted.
    let path_of = |i: usize| match &project.images[i].source {
        ImageSource::File(p) => dir.path().join(p),
        _ => unreachable!(),
    };
    let bytes = std::fs::read(path_of(5)).unwrap();
    std::fs::write(path_of(5), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::remove_file(path_of(12)).unwrap();

    let cfg = LoaderConfig { batch_size: 4, image_size: 32, ..LoaderConfig::default() };
    let loader = Loader::new(project.clone(), all(&project), cfg).unwrap();
    for epoch in 0..2 {
        let indices: Vec<usize> = loader.epoch(epoch).flat_map(|b| b.unwrap().indices).collect();
        assert_eq!(indices.len(), 18);
        assert!(!indices.contains(&5) && !indices.contains(&12));
    }
    let skipped = loader.skipped();
    assert_eq!(skipped.iter().map(|s| s.index).collect::<Vec<_>>(), vec![5, 12]);
    assert!(skipped[0].name.contains("shapes_0005.png"), "{skipped:?}");
    assert!(!skipped[0].reason.is_empty() && !skipped[1].reason.is_empty());
}

#[test]
fn dropping_an_epoch_early_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path(), 30);
    let cfg = LoaderConfig { batch_size: 2, prefetch: 1, image_size: 32, ..LoaderConfig::default() };
    let loader = Loader::new(project.clone(), all(&project), cfg).unwrap();
    let first = loader.epoch(0).next().unwrap().unwrap();
    assert_eq!(first.len(), 2);
    // A new epoch on the same loader still works after the abandoned one.
    assert_eq!(loader.epoch(1).count(), 15);
}

#[test]
fn classification_loader_stretches_and_carries_classes() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path(), 60);
    let labelled: Vec<usize> = project.indices_in(Split::Train).into_iter().filter(|&i| project.images[i].class.is_some()).collect();
    assert!(labelled.len() >= 10);
    let cfg = LoaderConfig::training(Task::Classify, 32, 4, 0);
    assert_eq!(cfg.fit, Fit::Stretch);
    let loader = Loader::new(project.clone(), labelled.clone(), cfg).unwrap();
    for b in loader.epoch(0) {
        let b = b.unwrap();
        assert!(b.classes.iter().all(Option::is_some));
        assert_eq!(b.images.dims()[1..], [3, 32, 32]);
    }
}

#[test]
fn normalization_from_demo_images_is_plausible_and_config_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let project = demo(dir.path(), 30);
    let n = Normalization::from_images(&project, &all(&project), 20);
    for c in 0..3 {
        assert!((0.2..0.8).contains(&n.mean[c]), "{n:?}");
        assert!((0.1..0.5).contains(&n.std[c]), "{n:?}");
    }
    // Normalised with its own statistics, a batch has roughly zero mean and unit variance.
    let cfg = LoaderConfig { normalization: n, image_size: 64, batch_size: 30, augment: AugmentConfig::none(), ..LoaderConfig::default() };
    let loader = Loader::new(project.clone(), all(&project), cfg).unwrap();
    let b = loader.epoch(0).next().unwrap().unwrap();
    let v = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
    assert!(mean.abs() < 0.15 && (0.7..1.3).contains(&var), "mean {mean} var {var}");

    let err = Loader::new(project.clone(), vec![999], LoaderConfig::default()).err().unwrap().to_string();
    assert!(err.contains("999"), "{err}");
    let err = Loader::new(project, vec![0], LoaderConfig { batch_size: 0, ..LoaderConfig::default() }).err().unwrap().to_string();
    assert!(err.contains("batch_size"), "{err}");
}

#[test]
fn demo_data_and_loader_bench_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shapes");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera")).args(args).output().unwrap();
        assert!(o.status.success(), "tessera {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let out_s = out.to_str().unwrap();
    let v = run(&["demo-data", "--out", out_s, "--count", "30", "--size", "48", "--seed", "3", "--json"]);
    assert_eq!(v["images"], 30);
    assert_eq!(v["splits"]["train"], 24);
    assert_eq!(v["classes"].as_object().unwrap().len(), 5);
    let project = Project::load(&out).unwrap();
    assert_eq!(project.images.len(), 30);
    assert_eq!(project.images[0].width, 48);
    assert_eq!(std::fs::read_dir(out.join("images")).unwrap().count(), 30);

    let v = run(&["bench", "loader", "--json", "--data", out_s, "--loader-size", "32", "--loader-repeats", "1"]);
    let l = &v["loader"];
    assert_eq!(l["images"], 30);
    for key in ["decode_only_images_per_s", "uncached_images_per_s", "cached_images_per_s"] {
        assert!(l[key].as_f64().unwrap() > 0.0, "{key} in {l}");
    }

    // Bad options are refused with a message, not a crash.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["demo-data", "--out", out_s, "--count", "0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--count"));
}
