//! `tessera bench [loader|train|infer|all]`: speed measurements with `--json` output.
//! Each benchmark group is a function returning a serde_json::Value; `bench` prints them. Adding a group is
//! one function plus one line in [`GROUPS`].
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::data::decode::load_image;
use crate::data::demo::{write_demo, DemoOptions};
use crate::data::import::open_project_or_dataset;
use crate::data::loader::{Loader, LoaderConfig};
use crate::data::project::{Project, Task};

/// The default real dataset of the loader benchmark (used by path, never copied).
pub const BCCD_PATH: &str = "../shared/data/det-bccd-bloodcells";
const BCCD_ABSOLUTE: &str = "/work/shared/data/det-bccd-bloodcells";

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark: loader, train, infer, all (default all).
    pub what: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Options of the `loader` group.
    #[command(flatten)]
    pub loader: LoaderBenchArgs,
    /// Options of the `train` and `infer` groups (src/cli/bench_model.rs).
    #[command(flatten)]
    pub model: super::bench_model::ModelBenchArgs,
}

#[derive(Args, Debug, Clone)]
pub struct LoaderBenchArgs {
    /// Loader benchmark dataset (project or dataset path). Default: BCCD from ../shared/data, else generated
    /// demo data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Model input size for the loader benchmark.
    #[arg(long, default_value_t = 128)]
    pub loader_size: usize,
    /// Batch size for the loader benchmark.
    #[arg(long, default_value_t = 32)]
    pub loader_batch: usize,
    /// Loader threads (default: all cores).
    #[arg(long)]
    pub loader_workers: Option<usize>,
    /// Timed epochs per measurement (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub loader_repeats: usize,
}

type Group = fn(&BenchArgs) -> anyhow::Result<Value>;

/// Every group that returns its JSON. `train` and `infer` print through their own module.
const GROUPS: &[(&str, Group)] = &[("loader", loader_group)];
const MODEL_GROUPS: &[&str] = &["train", "infer"];

pub fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let what = a.what.clone().unwrap_or_else(|| "all".into());
    let selected: Vec<&str> = if what == "all" {
        GROUPS.iter().map(|g| g.0).chain(MODEL_GROUPS.iter().copied()).collect()
    } else if GROUPS.iter().any(|g| g.0 == what) || MODEL_GROUPS.contains(&what.as_str()) {
        vec![what.as_str()]
    } else {
        let known: Vec<&str> = GROUPS.iter().map(|g| g.0).chain(MODEL_GROUPS.iter().copied()).collect();
        anyhow::bail!("unknown benchmark '{what}' (expected one of: {}, all)", known.join(", "));
    };
    // --json prints one document: a single group as before, several as one object keyed by group name.
    let single = selected.len() == 1;
    let mut all = serde_json::Map::new();
    for name in selected {
        let loader_group = GROUPS.iter().find(|g| g.0 == name);
        let v = match loader_group {
            Some((_, group)) => group(&a)?,
            None => super::bench_model::measure(name, &a.model)?,
        };
        match (a.json, loader_group.is_some()) {
            (true, true) if single => println!("{}", serde_json::to_string_pretty(&json!({ name: v }))?),
            (true, false) if single => println!("{}", serde_json::to_string_pretty(&v)?),
            (true, _) => {
                all.insert(name.to_string(), v);
            }
            (false, true) => print_text(name, &v),
            (false, false) => super::bench_model::print(&v),
        }
    }
    if a.json && !single {
        println!("{}", serde_json::to_string_pretty(&Value::Object(all))?);
    }
    Ok(())
}

fn print_text(name: &str, v: &Value) {
    println!("== {name}");
    if let Some(obj) = v.as_object() {
        let width = obj.keys().map(String::len).max().unwrap_or(0);
        for (k, val) in obj {
            let shown = match val {
                Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("  {k:<width$}  {shown}");
        }
    }
}

/// Decode + resize + augment throughput of the training loader, with and without its cache.
fn loader_group(a: &BenchArgs) -> anyhow::Result<Value> {
    let la = &a.loader;
    let _tmp; // keeps generated demo data alive for the duration of the benchmark
    let (project, source) = match &la.data {
        Some(p) => (open(p)?, p.display().to_string()),
        None => match [Path::new(BCCD_PATH), Path::new(BCCD_ABSOLUTE)].into_iter().find(|p| p.exists()) {
            Some(p) => (open(p)?, p.display().to_string()),
            None => {
                let dir = tempfile::tempdir()?;
                let project = write_demo(dir.path(), &DemoOptions { count: 400, size: 256, ..DemoOptions::default() })?;
                _tmp = dir;
                (project, "generated demo data (400 images, 256 px; BCCD not found)".to_string())
            }
        },
    };
    let project = Arc::new(project);
    let indices: Vec<usize> = (0..project.images.len()).collect();
    anyhow::ensure!(!indices.is_empty(), "{source}: no images");
    let workers = la.loader_workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let repeats = la.loader_repeats.max(1);

    // Decode only (the part a cache removes), on the same number of threads.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build()?;
    let decode_rate = best_of(repeats, || {
        let t = Instant::now();
        let ok = pool.install(|| indices.par_iter().filter(|&&i| load_image(&project.source_of(i)).is_ok()).count());
        ok as f64 / t.elapsed().as_secs_f64()
    });

    let cfg = LoaderConfig {
        workers,
        cache: false,
        drop_last: false,
        ..LoaderConfig::training(project.task, la.loader_size, la.loader_batch, 0)
    };
    let run_epoch = |loader: &Loader, epoch: u64| -> anyhow::Result<f64> {
        let t = Instant::now();
        let mut n = 0;
        for b in loader.epoch(epoch) {
            n += b?.len();
        }
        Ok(n as f64 / t.elapsed().as_secs_f64())
    };
    let uncached = Loader::new(project.clone(), indices.clone(), cfg.clone())?;
    let mut uncached_rate = 0f64;
    for e in 0..repeats {
        uncached_rate = uncached_rate.max(run_epoch(&uncached, e as u64)?);
    }
    let cached = Loader::new(project.clone(), indices.clone(), LoaderConfig { cache: true, ..cfg.clone() })?;
    let fill_rate = run_epoch(&cached, 0)?;
    let mut cached_rate = 0f64;
    for e in 1..=repeats {
        cached_rate = cached_rate.max(run_epoch(&cached, e as u64)?);
    }
    let no_aug = Loader::new(project.clone(), indices.clone(), LoaderConfig { cache: true, augment: Default::default(), ..cfg })?;
    run_epoch(&no_aug, 0)?;
    let mut cached_plain_rate = 0f64;
    for e in 1..=repeats {
        cached_plain_rate = cached_plain_rate.max(run_epoch(&no_aug, e as u64)?);
    }

    let stages = stage_times(&project, &indices, la.loader_size, repeats);

    let (w, h) = project.images.first().map(|im| (im.width, im.height)).unwrap_or((0, 0));
    Ok(json!({
        "dataset": source,
        "images": project.images.len(),
        "first_image_size": format!("{w}x{h}"),
        "task": project.task.as_str(),
        "image_size": la.loader_size,
        "batch_size": la.loader_batch,
        "workers": workers,
        "decode_only_images_per_s": decode_rate,
        "uncached_images_per_s": uncached_rate,
        "cache_fill_images_per_s": fill_rate,
        "cached_images_per_s": cached_rate,
        "cached_no_augment_images_per_s": cached_plain_rate,
        "skipped": uncached.skipped_count(),
        "single_thread_ms_per_image": stages,
    }))
}

fn open(path: &Path) -> anyhow::Result<Project> {
    let (mut project, _) = open_project_or_dataset(path).with_context(|| format!("opening {}", path.display()))?;
    if project.images.iter().all(|im| im.boxes.is_empty()) {
        project.task = Task::Classify;
    }
    Ok(project)
}

/// Single-threaded milliseconds per image of each loader stage (best of `repeats` passes over up to 64
/// images), to show where the time goes.
fn stage_times(project: &Project, indices: &[usize], size: usize, repeats: usize) -> Value {
    use crate::data::augment::{augment, AugmentConfig};
    use crate::data::loader::{fit_image, Fit, Normalization};
    use rand::SeedableRng;
    let sample: Vec<usize> = indices.iter().copied().take(64).collect();
    let fit = Fit::for_task(project.task);
    let aug = AugmentConfig::for_task(project.task);
    let norm = Normalization::default();
    let mut best = [f64::MAX; 4];
    for _ in 0..repeats {
        let mut t = [0f64; 4];
        let mut n = 0;
        for &i in &sample {
            let s = Instant::now();
            let Ok(img) = load_image(&project.source_of(i)) else { continue };
            t[0] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let (fitted, _) = fit_image(&img, size, fit);
            t[1] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let (augmented, _, _) = augment(&fitted, &[], &aug, &mut rng);
            t[2] += s.elapsed().as_secs_f64();
            let s = Instant::now();
            let mut out = Vec::with_capacity(3 * size * size);
            norm.push_chw(&augmented, &mut out);
            t[3] += s.elapsed().as_secs_f64();
            n += 1;
        }
        for k in 0..4 {
            best[k] = best[k].min(1000.0 * t[k] / n.max(1) as f64);
        }
    }
    json!({ "decode": best[0], "resize": best[1], "augment": best[2], "normalize": best[3] })
}

fn best_of(n: usize, mut f: impl FnMut() -> f64) -> f64 {
    (0..n).map(|_| f()).fold(0.0, f64::max)
}
