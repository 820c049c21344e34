//! `tessera bench train` and `tessera bench infer`: model speed on the CPU (or GPU) for the tiny and small presets.
//!
//! - train: optimizer steps/s and images/s of one full training step (forward + loss + backward + global-norm clip +
//!   AdamW, the same work as a step of the training loop) per objective, with the time split into those phases.
//! - infer: latency of classification (one forward pass) and of detection decoding (prefill + one token at a time,
//!   with and without the KV cache), at batch 1 and batched; p50/p95 over repeated calls.
//! - Achieved GFLOP/s from an analytic count of the model's matmul FLOPs, against the machine's practical peak (a big
//!   candle matmul on the same threads), and the process's peak resident memory (VmHWM).
//!
//! The same model in PyTorch lives in benches/reference/ and reports the same JSON keys; benches/compare.sh runs both.
//! `--dump DIR` writes initial weights, a fixed batch and the losses Tessera computes on it, for the reference's
//! equality check (`python3 benches/reference/bench.py check DIR`).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use clap::Args;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::model::config::ModelConfig;
use crate::model::objectives::{self, DecodeOptions, Object};
use crate::model::params::ParamStore;
use crate::model::transformer::Transformer;
use crate::model::vocab;
use crate::train::optim::{collect_grads, global_norm, AdamW};

/// Settings of a training step as `TrainConfig::default()` has them.
const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 0.05;
const GRAD_CLIP: f64 = 1.0;
/// Classes of the benchmark model (like a digits dataset); only the size of the token head depends on it.
const N_CLASSES: usize = 10;

#[derive(Args, Debug, Clone)]
pub struct ModelBenchArgs {
    /// Model preset for `train`/`infer`: tiny, small (default: both, one after the other).
    #[arg(long)]
    pub preset: Option<String>,
    /// Model input size in pixels (default: the preset's).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Training batch size (the training default is 32).
    #[arg(long, default_value_t = 32)]
    pub train_batch: usize,
    /// Batch size of the batched inference measurements.
    #[arg(long, default_value_t = 8)]
    pub infer_batch: usize,
    /// Training objectives to measure, comma-separated: detect, classify, pretrain.
    #[arg(long, default_value = "detect,classify,pretrain")]
    pub objectives: String,
    /// Seconds spent on each measurement (after warm-up); at least 5 steps / calls are always timed.
    #[arg(long, default_value_t = 10.0)]
    pub budget_s: f64,
    /// Skip detection decoding without the KV cache (slow on small).
    #[arg(long)]
    pub skip_no_cache: bool,
    /// Skip measuring the machine's matmul peak.
    #[arg(long)]
    pub skip_peak: bool,
    /// Run on the CUDA GPU (needs a build with `--features cuda` and a GPU); the CPU otherwise.
    #[arg(long)]
    pub gpu: bool,
    /// Write initial weights, a fixed batch and Tessera's losses on it to this folder (for the PyTorch reference's
    /// equality check), then exit.
    #[arg(long)]
    pub dump: Option<PathBuf>,
}

impl Default for ModelBenchArgs {
    fn default() -> Self {
        ModelBenchArgs {
            preset: None,
            image_size: None,
            train_batch: 32,
            infer_batch: 8,
            objectives: "detect,classify,pretrain".into(),
            budget_s: 10.0,
            skip_no_cache: false,
            skip_peak: false,
            gpu: false,
            dump: None,
        }
    }
}

fn presets(a: &ModelBenchArgs) -> Vec<String> {
    match &a.preset {
        Some(p) => p.split(',').map(str::to_string).collect(),
        None => vec!["tiny".into(), "small".into()],
    }
}

fn bench_config(preset: &str, image_size: Option<usize>) -> anyhow::Result<ModelConfig> {
    let mut cfg = ModelConfig::preset(preset).map_err(anyhow::Error::msg)?;
    if let Some(s) = image_size {
        cfg = cfg.with_image_size(s);
    }
    cfg.n_classes = N_CLASSES;
    // The PyTorch reference (benches/reference) is the plain transformer: compare like with like. Local mixing's
    // own cost is measured by `tessera train` throughput (README, Speed).
    cfg.local_mixing = false;
    cfg.local_mixing_full = false;
    Ok(cfg)
}

/// Matmul FLOPs (2 per multiply-add) of one forward pass over `n` patches and `l` tokens, with a head applied to
/// `head_rows` positions producing `head_out` values each. Attention counts the full T × T scores (masked entries
/// are computed too). Same formula as benches/reference/bench.py. A training step is counted as 3 × forward.
pub fn forward_flops(cfg: &ModelConfig, b: usize, n: usize, l: usize, head_rows: usize, head_out: usize) -> f64 {
    let (b, n, l, head_rows, head_out) = (b as f64, n as f64, l as f64, head_rows as f64, head_out as f64);
    let t = n + l;
    let d = cfg.dim as f64;
    let hid = (cfg.dim * cfg.mlp_ratio) as f64;
    let per_layer = 2.0 * b * t * d * (3.0 * d + d + 2.0 * hid) + 2.0 * 2.0 * b * t * t * d;
    2.0 * b * n * cfg.patch_dim() as f64 * d + cfg.n_layers as f64 * per_layer + 2.0 * b * head_rows * d * head_out
}

/// Peak resident memory of this process so far (VmHWM), in MB; `None` off Linux.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn percentile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[((q / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// One training batch of random content with the real shapes: random patches, real Pix2Seq sequences of random
/// boxes, random class labels.
struct Batch {
    patches: Tensor,
    det_input: Tensor,
    det_target: Tensor,
    det_weight: Tensor,
    cls_labels: Tensor,
    pretrain_prefix: usize,
}

fn make_batch(cfg: &ModelConfig, b: usize, seed: u64, dev: &Device) -> anyhow::Result<Batch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = cfg.n_patches();
    let values: Vec<f32> = (0..b * n * cfg.patch_dim()).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let patches = Tensor::from_vec(values, (b, n, cfg.patch_dim()), dev)?;
    let size = cfg.image_size as f32;
    let (mut inputs, mut targets, mut weights, mut labels) = (vec![], vec![], vec![], vec![]);
    for _ in 0..b {
        let count = rng.random_range(1..=3usize.min(cfg.max_objects));
        let objects: Vec<Object> = (0..count)
            .map(|_| {
                let (x0, y0) = (rng.random_range(0.0..size * 0.7), rng.random_range(0.0..size * 0.7));
                let (w, h) = (rng.random_range(4.0..size * 0.3), rng.random_range(4.0..size * 0.3));
                Object { xmin: x0, ymin: y0, xmax: x0 + w, ymax: y0 + h, class: rng.random_range(0..N_CLASSES) }
            })
            .collect();
        let s = objectives::detect_sequence(cfg, &objects, objectives::NoiseBoxes::Fill, &mut rng);
        inputs.push(s.input);
        targets.push(s.target);
        weights.push(s.weight);
        labels.push(rng.random_range(0..N_CLASSES as u32));
    }
    Ok(Batch {
        patches,
        det_input: objectives::rows_u32(&inputs, dev)?,
        det_target: objectives::rows_u32(&targets, dev)?,
        det_weight: objectives::rows_f32(&weights, dev)?,
        cls_labels: Tensor::from_vec(labels, b, dev)?,
        pretrain_prefix: (n / 4).max(1),
    })
}

fn loss(model: &Transformer, batch: &Batch, objective: &str) -> candle_core::Result<Tensor> {
    match objective {
        "detect" => objectives::detect_loss(model, &batch.patches, &batch.det_input, &batch.det_target, &batch.det_weight),
        "classify" => objectives::classify_loss(model, &batch.patches, &batch.cls_labels),
        _ => objectives::pretrain_loss(model, &batch.patches, batch.pretrain_prefix),
    }
}

/// Sequence length and forward FLOPs of one objective's training batch.
fn objective_shape(cfg: &ModelConfig, objective: &str, b: usize, prefix: usize) -> (usize, f64) {
    let n = cfg.n_patches();
    let vocab = cfg.vocab().size();
    match objective {
        "detect" => {
            let l = cfg.max_output_tokens() - 1;
            (n + l, forward_flops(cfg, b, n, l, l, vocab))
        }
        "classify" => (n + 1, forward_flops(cfg, b, n, 1, 1, vocab)),
        _ => (n, forward_flops(cfg, b, n, 0, n - prefix, cfg.patch_dim())),
    }
}

/// Phase times of one training step, in milliseconds.
#[derive(Default, Clone, Copy)]
struct StepTimes {
    forward: f64,
    backward: f64,
    clip: f64,
    optimizer: f64,
}

impl StepTimes {
    fn total(&self) -> f64 {
        self.forward + self.backward + self.clip + self.optimizer
    }
}

/// One training step exactly as the training loop does it: loss, backward, global-norm clipping folded into the
/// gradient scale, AdamW.
fn train_step(
    model: &Transformer,
    vars: &[(String, Var)],
    opt: &mut AdamW,
    batch: &Batch,
    objective: &str,
) -> anyhow::Result<(f32, StepTimes)> {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let l = loss(model, batch, objective)?;
    let value = l.to_scalar::<f32>()?;
    let forward = ms(t);
    let t = Instant::now();
    let store = l.backward()?;
    // GPU work is asynchronous: wait for it so each phase is timed where it runs.
    l.device().synchronize()?;
    let backward = ms(t);
    let t = Instant::now();
    let grads = collect_grads(&store, vars);
    let norm = global_norm(&grads)?;
    let scale = if norm > GRAD_CLIP { GRAD_CLIP / norm } else { 1.0 };
    let clip = ms(t);
    let t = Instant::now();
    opt.step(&grads, LR, scale)?;
    l.device().synchronize()?;
    let optimizer = ms(t);
    Ok((value, StepTimes { forward, backward, clip, optimizer }))
}

fn trainable_model(cfg: &ModelConfig, seed: u64, dev: &Device) -> anyhow::Result<(Transformer, Vec<(String, Var)>)> {
    let mut p = ParamStore::init(seed, dev);
    let model = Transformer::new(cfg, &mut p)?;
    Ok((model, p.vars))
}

/// The device the measurements run on: `--gpu` asks for CUDA and fails clearly when it is not there.
fn bench_device(a: &ModelBenchArgs) -> anyhow::Result<Device> {
    if !a.gpu {
        return Ok(Device::Cpu);
    }
    match crate::train::run::pick_device(true) {
        Device::Cpu => anyhow::bail!("--gpu: no CUDA device (this build {} the `cuda` feature)", if cfg!(feature = "cuda") { "has" } else { "lacks" }),
        d => Ok(d),
    }
}

/// `tessera bench train`: one JSON object per preset.
pub fn train(a: &ModelBenchArgs) -> anyhow::Result<Value> {
    if let Some(dir) = &a.dump {
        return dump(a, dir);
    }
    let dev = bench_device(a)?;
    let mut out = vec![];
    for preset in presets(a) {
        let cfg = bench_config(&preset, a.image_size)?;
        let (model, vars) = trainable_model(&cfg, 0, &dev)?;
        let mut opt = AdamW::new(&vars, WEIGHT_DECAY)?;
        let batch = make_batch(&cfg, a.train_batch, 1, &dev)?;
        let mut results = vec![];
        for objective in a.objectives.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !["detect", "classify", "pretrain"].contains(&objective) {
                anyhow::bail!("unknown objective '{objective}' (expected detect, classify or pretrain)");
            }
            eprintln!("bench train: {preset} {objective} (batch {}, {} px) ...", a.train_batch, cfg.image_size);
            let (seq_len, fwd) = objective_shape(&cfg, objective, a.train_batch, batch.pretrain_prefix);
            for _ in 0..2 {
                train_step(&model, &vars, &mut opt, &batch, objective)?;
            }
            let mut steps: Vec<StepTimes> = vec![];
            let mut last_loss = 0.0;
            let start = Instant::now();
            while steps.len() < 5 || (start.elapsed().as_secs_f64() < a.budget_s && steps.len() < 1000) {
                let (l, t) = train_step(&model, &vars, &mut opt, &batch, objective)?;
                last_loss = l;
                steps.push(t);
            }
            let totals: Vec<f64> = steps.iter().map(StepTimes::total).collect();
            let step_ms = mean(&totals);
            let phase = |f: fn(&StepTimes) -> f64| mean(&steps.iter().map(f).collect::<Vec<_>>());
            results.push(json!({
                "objective": objective,
                "what": "forward + loss + backward + global-norm clip + AdamW",
                "batch": a.train_batch,
                "seq_len": seq_len,
                "steps": steps.len(),
                "step_ms_mean": step_ms,
                "step_ms_p50": percentile(&totals, 50.0),
                "steps_per_s": 1e3 / step_ms,
                "images_per_s": a.train_batch as f64 * 1e3 / step_ms,
                "breakdown_ms": {
                    "forward": phase(|s| s.forward),
                    "backward": phase(|s| s.backward),
                    "clip": phase(|s| s.clip),
                    "optimizer": phase(|s| s.optimizer),
                },
                "gflop_per_step": 3.0 * fwd / 1e9,
                "gflops": 3.0 * fwd / 1e9 / (step_ms / 1e3),
                "final_loss": last_loss,
            }));
        }
        out.push(json!({
            "group": "train",
            "preset": preset,
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "dim": cfg.dim,
            "n_layers": cfg.n_layers,
            "params": vars.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
            "results": results,
            "peak_rss_mb": peak_rss_mb(),
            "note": "the training loop's step (src/train/run.rs) is not benchmarked directly yet: this runs the engine's \
                     objectives (detect_loss, classify_loss, pretrain_loss), backward, optim::global_norm and \
                     optim::AdamW with TrainConfig::default() settings, on random content of the real shapes; data \
                     loading is excluded (see `tessera bench loader`)",
        }));
    }
    Ok(wrap(out, a, &dev))
}

/// A frozen (inference) model; with `suppress_eos` the token head can never emit EOS, so detection decoding always
/// runs to `max_objects` boxes (the worst case; a random model would otherwise stop at an arbitrary point).
fn inference_model(cfg: &ModelConfig, seed: u64, suppress_eos: bool, dev: &Device) -> anyhow::Result<Transformer> {
    let (_, vars) = trainable_model(cfg, seed, dev)?;
    let mut weights: HashMap<String, Tensor> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    if suppress_eos {
        let bias = weights.get("token_head.bias").context("token_head.bias")?;
        let mut values = bias.to_vec1::<f32>()?;
        values[vocab::EOS as usize] = -1e9;
        let len = values.len();
        weights.insert("token_head.bias".into(), Tensor::from_vec(values, len, dev)?);
    }
    let mut p = ParamStore::load(&weights, false, seed, dev);
    Ok(Transformer::new(cfg, &mut p)?)
}

/// Times `f` (after one warm-up call) for `budget_s` seconds or `max_reps` calls, at least `min_reps` calls; ms.
fn time_calls(mut f: impl FnMut() -> anyhow::Result<()>, budget_s: f64, min_reps: usize) -> anyhow::Result<Vec<f64>> {
    f()?;
    let mut times = vec![];
    let start = Instant::now();
    while times.len() < min_reps || (start.elapsed().as_secs_f64() < budget_s && times.len() < 1000) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// `tessera bench infer`: one JSON object per preset.
pub fn infer(a: &ModelBenchArgs) -> anyhow::Result<Value> {
    let dev = bench_device(a)?;
    let mut out = vec![];
    for preset in presets(a) {
        let cfg = bench_config(&preset, a.image_size)?;
        let model = inference_model(&cfg, 0, true, &dev)?;
        let n = cfg.n_patches();
        let mut results = vec![];
        for b in [1, a.infer_batch] {
            let batch = make_batch(&cfg, b, 2, &dev)?;
            let patches = &batch.patches;
            eprintln!("bench infer: {preset} classify batch {b} ...");
            let t = time_calls(|| Ok(drop(objectives::classify_logits(&model, patches)?.to_vec2::<f32>()?)), a.budget_s, 5)?;
            let fwd = forward_flops(&cfg, b, n, 1, 1, cfg.vocab().size());
            results.push(json!({
                "task": "classify", "batch": b, "p50_ms": percentile(&t, 50.0), "p95_ms": percentile(&t, 95.0),
                "per_image_ms": percentile(&t, 50.0) / b as f64, "reps": t.len(),
                "gflops": fwd / 1e9 / (percentile(&t, 50.0) / 1e3),
            }));
            for no_cache in [false, true] {
                if no_cache && a.skip_no_cache {
                    continue;
                }
                eprintln!("bench infer: {preset} detect batch {b} kv_cache={} ...", !no_cache);
                let opts = DecodeOptions { max_objects: cfg.max_objects, min_objects: 0, top_p: None, seed: 0, no_cache };
                let mut boxes = 0;
                let t = time_calls(
                    || {
                        boxes = objectives::detect_decode(&model, patches, &opts)?.iter().map(Vec::len).sum();
                        Ok(())
                    },
                    a.budget_s,
                    if no_cache { 3 } else { 5 },
                )?;
                results.push(json!({
                    "task": "detect", "batch": b, "kv_cache": !no_cache, "tokens": 5 * cfg.max_objects,
                    "boxes": boxes,
                    "p50_ms": percentile(&t, 50.0), "p95_ms": percentile(&t, 95.0),
                    "per_image_ms": percentile(&t, 50.0) / b as f64, "reps": t.len(),
                }));
            }
        }
        out.push(json!({
            "group": "infer",
            "preset": preset,
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "results": results,
            "peak_rss_mb": peak_rss_mb(),
            "note": "model only (objectives::classify_logits, objectives::detect_decode greedy) on ready patches; image \
                     decoding and resizing are excluded. Detection decodes max_objects boxes every time (EOS suppressed): \
                     the worst case",
        }));
    }
    Ok(wrap(out, a, &dev))
}

/// The machine's practical f32 matmul peak: best of a few 2048³ candle matmuls, GFLOP/s.
pub fn matmul_peak_gflops(dev: &Device) -> anyhow::Result<f64> {
    let n = 2048;
    let x = Tensor::randn(0f32, 1.0, (n, n), dev)?;
    let y = Tensor::randn(0f32, 1.0, (n, n), dev)?;
    let mut best = f64::MAX;
    for _ in 0..4 {
        let t = Instant::now();
        let z = x.matmul(&y)?;
        z.sum_all()?.to_scalar::<f32>()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}

fn machine(dev: &Device) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()));
    json!({
        "cpu": cpu,
        "logical_cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "threads": candle_core::utils::get_num_threads(),
        "device": crate::train::run::device_name(dev),
        "framework": format!("tessera {} (candle 0.11, gemm)", env!("CARGO_PKG_VERSION")),
    })
}

fn wrap(presets: Vec<Value>, a: &ModelBenchArgs, dev: &Device) -> Value {
    let mut v = json!({ "machine": machine(dev), "presets": presets });
    if !a.skip_peak {
        if let Ok(p) = matmul_peak_gflops(dev) {
            v["matmul_peak_gflops"] = json!(p);
            v["matmul_peak_what"] = json!(if dev.is_cpu() {
                "best of 4 candle f32 matmuls 2048x2048x2048 on the same threads"
            } else {
                "best of 4 candle f32 matmuls 2048x2048x2048 on the GPU"
            });
        }
    }
    v
}

/// Human-readable lines for the `train`/`infer` JSON.
pub fn print_human(v: &Value) {
    let m = &v["machine"];
    println!("machine: {} ({} threads), running on {}", m["cpu"].as_str().unwrap_or("?"), m["threads"], m["device"].as_str().unwrap_or("?"));
    for p in v["presets"].as_array().into_iter().flatten() {
        println!("{} {} ({} px, patch {}):", p["group"].as_str().unwrap_or(""), p["preset"].as_str().unwrap_or(""), p["image_size"], p["patch_size"]);
        for r in p["results"].as_array().into_iter().flatten() {
            if p["group"] == "train" {
                let b = &r["breakdown_ms"];
                println!(
                    "  {:<9} {:>6.2} steps/s {:>7.1} images/s  step {:>7.1} ms (fwd {:.0} / bwd {:.0} / clip {:.0} / adamw {:.0})  {:>5.1} GFLOP/s",
                    r["objective"].as_str().unwrap_or(""),
                    r["steps_per_s"].as_f64().unwrap_or(0.0),
                    r["images_per_s"].as_f64().unwrap_or(0.0),
                    r["step_ms_mean"].as_f64().unwrap_or(0.0),
                    b["forward"].as_f64().unwrap_or(0.0),
                    b["backward"].as_f64().unwrap_or(0.0),
                    b["clip"].as_f64().unwrap_or(0.0),
                    b["optimizer"].as_f64().unwrap_or(0.0),
                    r["gflops"].as_f64().unwrap_or(0.0),
                );
            } else {
                let what = match r["kv_cache"].as_bool() {
                    Some(true) => "detect (kv cache)".to_string(),
                    Some(false) => "detect (no cache)".to_string(),
                    None => r["task"].as_str().unwrap_or("").to_string(),
                };
                println!(
                    "  {:<18} batch {:>2}: p50 {:>8.2} ms  p95 {:>8.2} ms  per image {:>7.2} ms",
                    what,
                    r["batch"],
                    r["p50_ms"].as_f64().unwrap_or(0.0),
                    r["p95_ms"].as_f64().unwrap_or(0.0),
                    r["per_image_ms"].as_f64().unwrap_or(0.0)
                );
            }
        }
        if let Some(mb) = p["peak_rss_mb"].as_f64() {
            println!("  peak memory (VmHWM, process so far): {mb:.0} MB");
        }
    }
    if let Some(g) = v["matmul_peak_gflops"].as_f64() {
        println!("matmul peak (candle 2048³ f32): {g:.1} GFLOP/s");
    }
}

/// Writes the reference equality-check folder: weights.safetensors (initial weights, Tessera's names),
/// batch.safetensors (patches, detection sequences, labels) and expected.json (config, losses, optimizer settings).
fn dump(a: &ModelBenchArgs, dir: &Path) -> anyhow::Result<Value> {
    let dev = Device::Cpu;
    let preset = presets(a).into_iter().next().unwrap_or_else(|| "tiny".into());
    let cfg = bench_config(&preset, a.image_size)?;
    let batch_size = a.train_batch.min(8);
    let (model, vars) = trainable_model(&cfg, 0, &dev)?;
    let batch = make_batch(&cfg, batch_size, 1, &dev)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let weights: HashMap<String, Tensor> = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    candle_core::safetensors::save(&weights, dir.join("weights.safetensors"))?;
    let batch_tensors: HashMap<String, Tensor> = [
        ("patches", &batch.patches),
        ("det_input", &batch.det_input),
        ("det_target", &batch.det_target),
        ("det_weight", &batch.det_weight),
        ("cls_labels", &batch.cls_labels),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t.clone()))
    .collect();
    candle_core::safetensors::save(&batch_tensors, dir.join("batch.safetensors"))?;
    let mut losses = serde_json::Map::new();
    for objective in ["detect", "classify", "pretrain"] {
        losses.insert(objective.into(), json!(loss(&model, &batch, objective)?.to_dtype(DType::F32)?.to_scalar::<f32>()?));
    }
    let opt_steps = 3;
    let mut opt = AdamW::new(&vars, WEIGHT_DECAY)?;
    for _ in 0..opt_steps {
        train_step(&model, &vars, &mut opt, &batch, "detect")?;
    }
    losses.insert("detect_after_steps".into(), json!(loss(&model, &batch, "detect")?.to_scalar::<f32>()?));
    let expected = json!({
        "config": cfg,
        "batch": batch_size,
        "pretrain_prefix": batch.pretrain_prefix,
        "lr": LR,
        "weight_decay": WEIGHT_DECAY,
        "grad_clip": GRAD_CLIP,
        "opt_steps": opt_steps,
        "losses": losses,
    });
    crate::util::atomic::write_atomic(&dir.join("expected.json"), serde_json::to_string_pretty(&expected)?.as_bytes())?;
    Ok(json!({ "group": "dump", "dir": dir, "expected": expected }))
}

/// Entry from `tessera bench train|infer`: runs the group and prints it (JSON or lines).
/// Runs `tessera bench train|infer` and returns its JSON.
pub fn measure(what: &str, a: &ModelBenchArgs) -> anyhow::Result<Value> {
    match what {
        "train" => train(a),
        "infer" => infer(a),
        other => anyhow::bail!("unknown model benchmark '{other}' (expected train or infer)"),
    }
}

/// Prints the result of [`measure`] for people.
pub fn print(v: &Value) {
    if v["group"] == "dump" {
        println!("wrote {} (check with: python3 benches/reference/bench.py check {})", v["dir"], v["dir"]);
    } else {
        print_human(v);
    }
}
