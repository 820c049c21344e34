//! The training loop itself (runs on the worker thread): builds or loads the model, draws deterministic batches,
//! steps AdamW, evaluates on the val split, writes checkpoints and reports everything as [`Event`]s.
use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor, Var};
use crossbeam_channel::{Receiver, Sender};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::checkpoint::{self, CheckpointMeta, TrainState, WeightsChoice};
use super::data::{compute_normalization, make_batch, mirror_asymmetry, Augment, Dataset, Need, Normalization, Sampler};
use super::optim::{accumulate, collect_grads, global_norm, learning_rate, AdamW, Ema};
use super::teacher::Teacher;
use super::worker::{Command, EvalStats, Event, Objective, SamplePrediction, StepStats, TrainConfig};
use crate::data::project::{Project, Split};
use crate::model::config::ModelConfig;
use crate::model::objectives::{self, DecodeOptions, NoiseBoxes, Object, RawDetection};
use crate::model::params::ParamStore;
use crate::model::transformer::{patchify, Transformer};

/// The device a run uses: CUDA when asked for, compiled in and present; the CPU otherwise.
pub fn pick_device(use_gpu: bool) -> Device {
    if use_gpu {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

pub fn device_name(d: &Device) -> String {
    match d {
        Device::Cpu => format!("CPU ({} threads)", candle_core::utils::get_num_threads()),
        _ => "CUDA GPU".to_string(),
    }
}

/// Builds a model from `source` weights (or a fresh seeded init).
pub fn build_model(
    cfg: &ModelConfig,
    source: Option<&HashMap<String, Tensor>>,
    trainable: bool,
    seed: u64,
    device: &Device,
) -> anyhow::Result<(Transformer, Vec<(String, Var)>, Vec<String>)> {
    let mut store = match source {
        Some(s) => ParamStore::load(s, trainable, seed, device),
        None => {
            let mut p = ParamStore::init(seed, device);
            if !trainable {
                p = ParamStore::load(Box::leak(Box::default()), false, seed, device);
            }
            p
        }
    };
    let model = Transformer::new(cfg, &mut store)?;
    Ok((model, store.vars, store.fresh))
}

/// Removes the weights of the last `k` of `n_layers` transformer blocks, so that [`build_model`] gives them a fresh
/// init (`--reinit-blocks`).
pub fn drop_top_blocks(weights: &mut HashMap<String, Tensor>, n_layers: usize, k: usize) {
    weights.retain(|name, _| !crate::model::transformer::block_of(name).is_some_and(|i| i + k >= n_layers));
}

/// An inference copy (plain tensors, fused kernels) of the current weights.
fn inference_model(cfg: &ModelConfig, weights: &[(String, Tensor)], device: &Device) -> anyhow::Result<Transformer> {
    let map: HashMap<String, Tensor> = weights.iter().map(|(n, t)| (n.clone(), t.detach())).collect();
    Ok(build_model(cfg, Some(&map), false, 0, device)?.0)
}

fn var_tensors(vars: &[(String, Var)]) -> Vec<(String, Tensor)> {
    vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect()
}

fn objective_name(o: Objective) -> &'static str {
    match o {
        Objective::Pretrain => "pretrain",
        Objective::Classify => "classify",
        Objective::Detect => "detect",
    }
}

fn need_of(o: Objective) -> Need {
    match o {
        Objective::Pretrain => Need::Pixels,
        Objective::Classify => Need::Class,
        Objective::Detect => Need::Boxes,
    }
}

/// Default input size for a fresh model: the data's typical side, at most the preset's size. Very small images
/// (under 24 px, e.g. 8×8 digits) are upscaled to 32 so there are enough patches; from 24 px on the native size is
/// kept (`ModelConfig::with_image_size` picks a patch size with ≥ 36 patches), which avoids blurring and is faster:
/// Fashion-MNIST at its native 28 px has 49 patches instead of 64 at 32 px. Detection, and pretraining a project
/// with boxes (its weights go on to detect at the same size), may go larger so small objects stay visible
/// ([`small_object_image_size`]).
pub fn auto_image_size(project: &Project, preset: &ModelConfig, objective: Objective) -> usize {
    let mut sides: Vec<u32> = project.images.iter().map(|e| e.width.max(e.height)).filter(|&s| s > 0).collect();
    if sides.is_empty() {
        return preset.image_size;
    }
    sides.sort_unstable();
    let median = sides[sides.len() / 2] as usize;
    let fit = if median < 24 { 32.min(preset.image_size) } else { median.min(preset.image_size) };
    match objective {
        Objective::Classify => fit,
        Objective::Detect | Objective::Pretrain => small_object_image_size(project, preset).map_or(fit, |s| s.clamp(fit, median.max(fit))),
    }
}

/// Pixels the shorter side of a small object (the 10th percentile of the training boxes) should span at the
/// model's input: one and a half 8-px patches. BCCD's platelets (10th percentile 0.105 of the image's long side)
/// span 7 px at the tiny preset's 64 px and 12 px at 112 px, the size its best runs used (README, Quality). Too
/// little for playing cards, whose classes differ in small rank marks: 72 px there scored below 96 (session 24).
pub const SMALL_OBJECT_PIXELS: f32 = 12.0;

/// The input size at which the small training boxes span [`SMALL_OBJECT_PIXELS`], at most twice the preset's
/// size (each doubling of the side costs four times the patches); `None` without boxes. Measured for the shared
/// data: BCCD 112 px, playing cards 72 px, raccoons 39 px (so the preset's 64).
pub fn small_object_image_size(project: &Project, preset: &ModelConfig) -> Option<usize> {
    let mut shorter: Vec<f32> = project
        .images
        .iter()
        .filter(|e| e.split == Split::Train && e.width > 0 && e.height > 0)
        .flat_map(|e| {
            let long = e.width.max(e.height) as f32;
            e.boxes.iter().map(move |b| b.width().min(b.height()) / long)
        })
        .filter(|&r| r > 0.0)
        .collect();
    if shorter.is_empty() {
        return None;
    }
    shorter.sort_by(f32::total_cmp);
    let small = shorter[shorter.len() / 10];
    Some(((SMALL_OBJECT_PIXELS / small).round() as usize).min(2 * preset.image_size))
}

/// Below this many training images, classification shifts its inputs by default, and mirrors them where the
/// classes allow ([`MIRROR_ASYMMETRY_LIMIT`]). On large sets a short run learns faster without shifts:
/// Fashion-MNIST (54 000 training images), tiny, 12 minutes, hflip on: 0.866 test accuracy without shifts, 0.823
/// with ±8 % shifts. Mid-sized sets overfit without them: CIFAR-10 subset (8977 training images), tiny with
/// `--stem-channels 16`, 15 minutes, 1 thread: 0.544 without (best val at epoch 12 of 21, then falling), 0.623
/// with ±8 % shifts.
pub const CLASSIFY_AUGMENT_BELOW: usize = 20_000;

/// Random erasing's probability on large classification sets ([`super::worker::CLASSIFY_LARGE_SET`]): it keeps
/// long runs from overfitting (Fashion-MNIST, 60 min: val loss 0.21 at the end with it, 0.31 without; test 0.923
/// vs 0.919 with flip TTA over 3 seeds).
pub const CLASSIFY_LARGE_SET_ERASE: f32 = 0.5;

/// Below this [`mirror_asymmetry`] of its labelled training images, a classifier mirrors them by default. Measured
/// (tiny preset's input size): CIFAR-10 subset 0.00 (all labels, 100 and 10 per class), Fashion-MNIST 0.27 (its
/// shoes all face left, yet a mirrored shoe is still a shoe), sklearn digits 0.69. Mirroring is worth 2–3 test
/// points on CIFAR-10 and costs digits 1.1 (tiny, 2400 steps, seed 1: test accuracy 0.989 → 0.977).
pub const MIRROR_ASYMMETRY_LIMIT: f64 = 0.5;

/// The default's mirror decision in words, for logs and the UI.
pub fn describe_mirror_check(asymmetry: f64) -> String {
    if asymmetry < MIRROR_ASYMMETRY_LIMIT {
        format!("mirrored because the classes look alike in a mirror (asymmetry {asymmetry:.2}, limit {MIRROR_ASYMMETRY_LIMIT})")
    } else {
        format!("not mirrored because the classes change in a mirror (asymmetry {asymmetry:.2}, limit {MIRROR_ASYMMETRY_LIMIT})")
    }
}

/// Augmentation defaults per objective. Detection and pretraining use flips and 90° rotations (boxes stay boxes,
/// objects keep their class); classification mirrors only images whose classes survive it (`mirror_safe`: the
/// labelled training images' [`mirror_asymmetry`] is below [`MIRROR_ASYMMETRY_LIMIT`]; photos and clothes pass,
/// digits and letters change meaning), and mirrors and shifts only sets under [`CLASSIFY_AUGMENT_BELOW`] images: on
/// large sets a short run learns faster without either (Fashion-MNIST, defaults, 6000 steps, val accuracy at
/// epochs 1 / 3 / 5: 0.808 / 0.871 / 0.896 mirrored, 0.831 / 0.876 / 0.902 not; test 0.892 against 0.898).
pub fn default_augment(objective: Objective, train_images: usize, mirror_safe: bool) -> Augment {
    match objective {
        Objective::Classify => {
            let erase = if train_images >= super::worker::CLASSIFY_LARGE_SET { CLASSIFY_LARGE_SET_ERASE } else { 0.0 };
            let small = train_images < CLASSIFY_AUGMENT_BELOW;
            Augment { hflip: mirror_safe && small, translate: if small { 0.08 } else { 0.0 }, erase, ..Augment::none() }
        }
        Objective::Detect => Augment { hflip: true, dihedral: true, translate: 0.1, ..Augment::none() },
        Objective::Pretrain => Augment { hflip: true, dihedral: true, ..Augment::none() },
    }
}

fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Loss of one batch for `objective`.
/// `dense_aux`: weight of detection's dense auxiliary loss (0 = off).
/// `teacher`: the moving-average copy whose features are next-patch prediction's second target (pretraining with
/// `cfg.pretrain_feature_weight` > 0; `None` elsewhere, e.g. validation, whose losses stay comparable across runs).
fn batch_loss(
    model: &Transformer,
    batch: &super::data::Batch,
    objective: Objective,
    opts: &LossOptions,
    teacher: Option<&Transformer>,
    rng: &mut StdRng,
) -> anyhow::Result<Tensor> {
    let cfg = &model.cfg;
    // CutMix (classification) mixes the images before they become patches, so each batch is patchified once.
    let mixes = objective == Objective::Classify && batch.classes.len() > 1 && opts.cutmix > 0.0;
    let cutmix = if mixes && rng.random_bool(opts.cutmix.clamp(0.0, 1.0)) { Some(super::data::cutmix_batch(&batch.images, rng)?) } else { None };
    let patches = patchify(cutmix.as_ref().map_or(&batch.images, |(mixed, _, _)| mixed), cfg.patch_size)?;
    let dev = patches.device();
    Ok(match objective {
        Objective::Pretrain => {
            let n = cfg.n_patches();
            if cfg.pretrain_mask_ratio > 0.0 {
                let masked = objectives::random_patch_mask(patches.dim(0)?, n, cfg.pretrain_mask_ratio, rng, dev)?;
                objectives::masked_pretrain_loss(model, &patches, &masked)?
            } else {
                let features = teacher.map(|t| objectives::teacher_features(t, &patches)).transpose()?;
                objectives::pretrain_loss_with_features(model, &patches, rng.random_range(1..n), features.as_ref())?
            }
        }
        Objective::Classify => {
            let labels: Vec<u32> = batch.classes.iter().map(|c| c.unwrap_or(0) as u32).collect();
            let partner_labels = match &cutmix {
                Some((_, partners, keep)) => Some((Tensor::new(partners.iter().map(|&p| labels[p]).collect::<Vec<u32>>(), dev)?, *keep)),
                None => None,
            };
            let partner = partner_labels.as_ref().map(|(t, keep)| (t, *keep));
            objectives::classify_loss_mixed(model, &patches, &Tensor::new(labels, dev)?, partner, opts.label_smoothing, opts.class_aux)?
        }
        Objective::Detect => {
            let seqs: Vec<_> = batch
                .objects
                .iter()
                .map(|o| {
                    let random = rng.random_bool(opts.random_order.clamp(0.0, 1.0));
                    objectives::detect_sequence_ordered(cfg, o, opts.noise, random, rng)
                })
                .collect();
            // Cut the padding no sequence in this batch uses: the same loss for less work.
            let len = seqs.iter().map(|s| s.used_len()).max().unwrap_or(1).max(1);
            let input = objectives::rows_u32(&seqs.iter().map(|s| s.input[..len].to_vec()).collect::<Vec<_>>(), dev)?;
            let target = objectives::rows_u32(&seqs.iter().map(|s| s.target[..len].to_vec()).collect::<Vec<_>>(), dev)?;
            let weight = objectives::rows_f32(&seqs.iter().map(|s| s.weight[..len].to_vec()).collect::<Vec<_>>(), dev)?;
            objectives::detect_loss_with_dense(model, &patches, &input, &target, &weight, Some((&batch.objects, opts.dense_aux)))?
        }
    })
}

/// What shapes a batch's loss besides the batch itself.
#[derive(Debug, Clone, Copy)]
struct LossOptions {
    /// Detection: fake boxes after the real ones.
    noise: NoiseBoxes,
    /// Detection: probability that a sequence lists its objects in random order (else raster order).
    random_order: f64,
    /// Detection: weight of the dense auxiliary loss (0 = off).
    dense_aux: f64,
    /// Classification: label smoothing.
    label_smoothing: f64,
    /// Classification: weight of the patch-level auxiliary loss (0 = off).
    class_aux: f64,
    /// Classification: probability that a batch is mixed by CutMix (0 = off; other objectives ignore it).
    cutmix: f64,
}

impl LossOptions {
    /// Validation: the run's noise boxes, random order, and neither auxiliary loss nor smoothing, so val losses
    /// compare across runs with different training losses.
    fn validation(noise: NoiseBoxes) -> LossOptions {
        LossOptions { noise, random_order: 1.0, dense_aux: 0.0, label_smoothing: 0.0, class_aux: 0.0, cutmix: 0.0 }
    }
}

/// mAP@0.5 (COCO-style 101-point interpolation) over classes that have ground truth.
pub fn map50(preds: &[Vec<RawDetection>], truth: &[Vec<Object>], n_classes: usize) -> f32 {
    let mut aps = vec![];
    for c in 0..n_classes {
        let n_gt: usize = truth.iter().map(|t| t.iter().filter(|o| o.class == c).count()).sum();
        if n_gt == 0 {
            continue;
        }
        let mut dets: Vec<(f32, usize, Object)> = preds
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.iter().filter(|d| d.object.class == c).map(move |d| (d.score, i, d.object)))
            .collect();
        dets.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used: Vec<Vec<bool>> = truth.iter().map(|t| vec![false; t.len()]).collect();
        let (mut tp, mut fp) = (0f32, 0f32);
        let mut pr = vec![];
        for (_, i, o) in dets {
            let best = truth[i]
                .iter()
                .enumerate()
                .filter(|(j, g)| g.class == c && !used[i][*j])
                .map(|(j, g)| (j, objectives::iou(&o, g)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((j, iou)) if iou >= 0.5 => {
                    used[i][j] = true;
                    tp += 1.0
                }
                _ => fp += 1.0,
            }
            pr.push((tp / n_gt as f32, tp / (tp + fp)));
        }
        let ap: f32 = (0..=100)
            .map(|r| {
                let r = r as f32 / 100.0;
                pr.iter().filter(|(rec, _)| *rec >= r).map(|(_, p)| *p).fold(0.0, f32::max)
            })
            .sum::<f32>()
            / 101.0;
        aps.push(ap);
    }
    if aps.is_empty() {
        0.0
    } else {
        aps.iter().sum::<f32>() / aps.len() as f32
    }
}

/// Validation's random draws (pretraining's prefix lengths, detection's noise boxes) come from this seed, not the
/// run's, so val losses compare across runs: with the run's seed, BCCD's 87 val images (two batches, two prefix
/// lengths) gave pretraining val losses of 0.158 / 0.042 / 0.351 for seeds 0 / 1 / 2 of the same command.
const VALIDATION_SEED: u64 = 0;

/// Validation: (val losses, metric name, metric where higher is better, samples).
fn evaluate(
    model: &Transformer,
    val: &Dataset,
    objective: Objective,
    loss_options: &LossOptions,
    device: &Device,
) -> anyhow::Result<(Vec<(String, f32)>, String, f32, Vec<SamplePrediction>)> {
    let cfg = &model.cfg;
    let name = objective_name(objective).to_string();
    let mut loss_sum = 0f32;
    let mut batches = 0;
    let mut correct = 0usize;
    let mut preds: Vec<Vec<RawDetection>> = vec![];
    let mut samples = vec![];
    let all: Vec<usize> = (0..val.len()).collect();
    let mut rng = StdRng::seed_from_u64(VALIDATION_SEED);
    for chunk in all.chunks(64) {
        let batch = make_batch(val, chunk, &Augment::none(), 0, device)?;
        let loss = batch_loss(model, &batch, objective, loss_options, None, &mut rng)?.to_scalar::<f32>()?;
        loss_sum += loss;
        batches += 1;
        let patches = patchify(&batch.images, cfg.patch_size)?;
        match objective {
            Objective::Classify => {
                let probs = candle_nn::ops::softmax_last_dim(&objectives::classify_logits(model, &patches)?)?.to_vec2::<f32>()?;
                for (k, p) in probs.iter().enumerate() {
                    let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |x| x.0);
                    if Some(best) == batch.classes[k] {
                        correct += 1;
                    }
                    if samples.len() < 8 {
                        let pred = crate::model::Prediction { probs: p.clone(), detections: vec![] };
                        samples.push(SamplePrediction { image_index: batch.indices[k], top_classes: pred.top_k(3), boxes: vec![] });
                    }
                }
            }
            Objective::Detect => {
                let opts = DecodeOptions { max_objects: cfg.max_objects, min_objects: 0, top_p: None, seed: 0, no_cache: false };
                let dets = objectives::detect_decode(model, &patches, &opts)?;
                for (k, d) in dets.into_iter().enumerate() {
                    let d = objectives::nms(d, 0.7);
                    if samples.len() < 8 {
                        let it = &val.items[chunk[k]];
                        let boxes = d.iter().filter(|x| x.score >= 0.3).map(|x| (it.letterbox.to_original(&x.object), x.score)).collect();
                        samples.push(SamplePrediction { image_index: it.index, top_classes: vec![], boxes });
                    }
                    preds.push(d);
                }
            }
            Objective::Pretrain => {}
        }
    }
    let val_loss = loss_sum / batches.max(1) as f32;
    let (metric_name, metric) = match objective {
        Objective::Classify => ("accuracy".to_string(), correct as f32 / val.len().max(1) as f32),
        Objective::Detect => {
            let truth: Vec<Vec<Object>> = val.items.iter().map(|i| i.objects.clone()).collect();
            ("map50".to_string(), map50(&preds, &truth, cfg.n_classes))
        }
        Objective::Pretrain => ("val_loss".to_string(), -val_loss),
    };
    Ok((vec![(name, val_loss)], metric_name, metric, samples))
}

struct Run {
    cfg: ModelConfig,
    config: TrainConfig,
    objective: Objective,
    class_names: Vec<String>,
    normalization: Normalization,
    history: Vec<Objective>,
}

impl Run {
    fn save(
        &self,
        vars: &[(String, Var)],
        opt: &AdamW,
        ema: Option<&Ema>,
        best: Option<&[(String, Tensor)]>,
        state: &TrainState,
        events: &Sender<Event>,
    ) -> anyhow::Result<()> {
        let raw = var_tensors(vars);
        let weights = match ema {
            Some(e) => e.shadow.clone(),
            None => raw.clone(),
        };
        let mut opt_state = opt.state_tensors();
        if ema.is_some() {
            opt_state.extend(raw.iter().map(|(n, t)| (format!("raw.{n}"), t.clone())));
        }
        let meta = CheckpointMeta {
            format: checkpoint::FORMAT.into(),
            version: checkpoint::VERSION,
            model: self.cfg.clone(),
            task: self.objective,
            class_names: self.class_names.clone(),
            normalization: self.normalization,
            history: self.history.clone(),
            train: Some(state.clone()),
        };
        // The best file only where an earlier evaluation beat the last one (else it would repeat the weights).
        let best = best.filter(|_| state.best_step.is_some_and(|b| b < state.step));
        checkpoint::write(&self.config.out, &meta, &weights, Some(&opt_state), best)
            .with_context(|| format!("writing checkpoint {}", self.config.out.display()))?;
        let _ = events.send(Event::CheckpointWritten { path: self.config.out.clone(), step: state.step });
        Ok(())
    }
}

pub fn run_training(project: Project, config: TrainConfig, commands: Receiver<Command>, events: Sender<Event>) -> anyhow::Result<()> {
    let device = pick_device(config.use_gpu);
    // Resume: the stored run's settings win, except where to write.
    let resume_meta = match &config.resume {
        Some(r) => Some(checkpoint::read_meta(r)?),
        None => None,
    };
    let config = match &resume_meta {
        Some(m) => {
            let st = m.train.as_ref().with_context(|| format!("{}: this checkpoint has no training state to resume", config.resume.as_ref().unwrap().display()))?;
            TrainConfig { out: config.out.clone(), resume: config.resume.clone(), use_gpu: config.use_gpu, ..st.config.clone() }
        }
        None => config,
    };
    let objective = config.objective;
    // (A resumed run's stored settings carry the shape it started with: that is fine.)
    if !config.model.is_empty() && config.init.is_some() && resume_meta.is_none() {
        bail!("the model's shape comes from the checkpoint it starts from: drop the shape settings (dim, layers, heads, mlp ratio, patch size)");
    }
    let init_meta = match (&resume_meta, &config.init) {
        (None, Some(p)) => Some(checkpoint::read_meta(p).with_context(|| "reading the --init checkpoint")?),
        _ => None,
    };
    if let (Some(m), Some(size)) = (&init_meta, config.image_size) {
        if size != m.model.image_size {
            bail!("the input size comes from the checkpoint it starts from ({} px): drop the image size setting ({size} px), or start from a model trained at {size} px", m.model.image_size);
        }
    }
    let class_names = project.class_names();
    if objective != Objective::Pretrain && class_names.is_empty() {
        bail!("the project has no classes: label some images first");
    }
    if objective == Objective::Classify && class_names.len() < 2 {
        bail!("classification needs at least 2 classes (the project has {})", class_names.len());
    }

    // The most objects in one training image: sizes detection sequences and picks their `auto` settings.
    let most_objects = project.images.iter().filter(|e| e.split == Split::Train).map(|e| e.boxes.len()).max().unwrap_or(1);

    // Model config.
    let mut cfg = match (&resume_meta, &init_meta) {
        (Some(m), _) => m.model.clone(),
        (None, Some(m)) => m.model.clone(),
        (None, None) => {
            let preset = ModelConfig::preset(&config.preset).map_err(anyhow::Error::msg)?;
            let size = config.image_size.unwrap_or_else(|| auto_image_size(&project, &preset, objective));
            let c = config.model.with_defaults_for(objective).apply(preset.with_image_size(size));
            c.validate().map_err(|e| anyhow::anyhow!("model shape: {e}"))?;
            c
        }
    };
    if objective == Objective::Detect && resume_meta.is_none() {
        // Room for the most crowded training image plus as many noise boxes (sequence augmentation). A model
        // started from a checkpoint (`--init`, e.g. pretrained, whose config kept the preset's 10) gets it too,
        // never fewer than it had (its token positions only grow): kept at 10, BCCD's fine-tunes trained on and
        // decoded only the 10 top-most of up to 28 cells (session 28).
        let wanted = (2 * most_objects).clamp(4, 100);
        cfg.max_objects = if init_meta.is_some() { cfg.max_objects.max(wanted) } else { wanted };
    }
    if objective != Objective::Pretrain {
        cfg.n_classes = cfg.n_classes.max(class_names.len());
    }
    if objective == Objective::Detect && resume_meta.is_none() && most_objects > cfg.max_objects {
        log::warn!("images with up to {most_objects} boxes; the model keeps {} per image", cfg.max_objects);
    }
    let (object_order, noise_boxes) = super::worker::crowded_sequences(config.object_order, config.noise_boxes, most_objects);
    if objective == Objective::Detect {
        log::info!("detection sequences: {object_order:?} object order, {noise_boxes:?} noise boxes (up to {most_objects} objects per training image)");
    }
    let normalization = match (&resume_meta, &init_meta) {
        (Some(m), _) | (None, Some(m)) => m.normalization,
        _ => compute_normalization(&project, Split::Train, cfg.image_size),
    };
    let mut history = init_meta.as_ref().or(resume_meta.as_ref()).map(|m| m.history.clone()).unwrap_or_default();
    if history.last() != Some(&objective) {
        history.push(objective);
    }

    // Data.
    let need = need_of(objective);
    let train = Dataset::load(&project, Split::Train, need, cfg.image_size, &normalization);
    for s in &train.skipped {
        log::warn!("skipped {s}");
    }
    if train.is_empty() {
        bail!("no usable {} training images in the train split ({} skipped)", objective_name(objective), train.skipped.len());
    }
    let val = Dataset::load(&project, Split::Val, need, cfg.image_size, &normalization);
    // The generative auxiliary loss and pseudo-labels read every training image, labelled or not.
    let pseudo_labels = config.pseudo_labels.filter(|_| objective == Objective::Classify);
    let all_train = if (config.generative_aux > 0.0 && objective != Objective::Pretrain) || pseudo_labels.is_some() {
        let all = Dataset::load(&project, Split::Train, Need::Pixels, cfg.image_size, &normalization);
        if config.generative_aux > 0.0 {
            log::info!("generative auxiliary loss (weight {}) on {} training images, {} of them labelled", config.generative_aux, all.len(), train.len());
        }
        if let Some(t) = pseudo_labels {
            log::info!("pseudo-labels at confidence {t} on {} training images, {} of them labelled", all.len(), train.len());
        }
        Some(all)
    } else {
        None
    };

    // Augmentation. With the generative loss or pseudo-labels on, the unlabelled images count too
    // (`worker::images_learned_from`).
    let learned_from = all_train.as_ref().map_or(train.len(), |all| all.len());
    // Only sets small enough to mirror at all are checked. A resumed run without a recorded augmentation started
    // before the mirror check, without mirrors: it goes on so.
    let mirror_check = match config.augment {
        None if objective == Objective::Classify && learned_from < CLASSIFY_AUGMENT_BELOW && resume_meta.is_none() => {
            mirror_asymmetry(&train.items, cfg.image_size)
        }
        _ => None,
    };
    let mirror_safe = mirror_check.is_some_and(|a| a < MIRROR_ASYMMETRY_LIMIT);
    let aug = config.augment.unwrap_or_else(|| default_augment(objective, learned_from, mirror_safe));
    // The checkpoint records the augmentation used, not "default": test-time augmentation looks only at the views
    // training showed, and a resumed run goes on with the same.
    let config = TrainConfig { augment: Some(aug), ..config };

    // Weights and optimizer state.
    let (model, vars, opt, ema, mut state) = if let Some(meta) = &resume_meta {
        let path = config.resume.as_ref().unwrap();
        let st = meta.train.clone().unwrap();
        let weights = checkpoint::read_weights(path, &device)?;
        let opt_tensors = checkpoint::read_optimizer(path, &device)?;
        let raw: HashMap<String, Tensor> = if st.has_ema {
            opt_tensors.iter().filter_map(|(n, t)| n.strip_prefix("raw.").map(|k| (k.to_string(), t.clone()))).collect()
        } else {
            weights.clone()
        };
        let (model, vars, _) = build_model(&cfg, Some(&raw), true, config.seed, &device)?;
        let mut opt = AdamW::new(&vars, config.weight_decay)?;
        opt.load_state(&opt_tensors, st.optimizer_t)?;
        let ema = match config.ema {
            Some(d) if st.has_ema => {
                let mut e = Ema::new(&vars, d)?;
                for (n, t) in e.shadow.iter_mut() {
                    if let Some(w) = weights.get(n) {
                        *t = w.clone();
                    }
                }
                Some(e)
            }
            Some(d) => Some(Ema::new(&vars, d)?),
            None => None,
        };
        (model, vars, opt, ema, st)
    } else {
        let init_weights = match &config.init {
            Some(p) => {
                let mut weights = checkpoint::read_model_weights(p, config.init_weights, &device)?;
                drop_top_blocks(&mut weights, cfg.n_layers, config.reinit_blocks);
                Some(weights)
            }
            None => None,
        };
        let (model, vars, fresh) = build_model(&cfg, init_weights.as_ref(), true, config.seed, &device)?;
        if init_weights.is_some() && !fresh.is_empty() {
            log::info!("fine-tuning: new or grown parameters: {}", fresh.join(", "));
        }
        let opt = AdamW::new(&vars, config.weight_decay)?;
        let ema = config.ema.map(|d| Ema::new(&vars, d)).transpose()?;
        let st = TrainState {
            config: config.clone(),
            step: 0,
            total_steps: 0,
            optimizer_t: 0,
            elapsed_s: 0.0,
            best_metric: None,
            evals_without_improvement: 0,
            has_ema: ema.is_some(),
            loss_history: vec![],
            best_step: None,
        };
        (model, vars, opt, ema, st)
    };
    let (mut opt, mut ema) = (opt, ema);
    let mut teacher = if objective == Objective::Pretrain && cfg.pretrain_feature_weight > 0.0 { Some(Teacher::new(&cfg, &vars, &device)?) } else { None };
    if let Some(d) = config.layer_decay {
        opt.set_layer_decay(cfg.n_layers, d);
    }
    // Weights of the best val evaluation so far, copied (the optimizer updates the variables in place). A resumed
    // run gets back the best its checkpoint kept.
    let mut best_weights: Option<Vec<(String, Tensor)>> = match (&resume_meta, &config.resume) {
        (Some(_), Some(path)) if checkpoint::checkpoint_dir(path).join(checkpoint::BEST_FILE).exists() => {
            let best = checkpoint::read_model_weights(path, WeightsChoice::Best, &device)?;
            let mut best: Vec<(String, Tensor)> = best.into_iter().collect();
            best.sort_by(|a, b| a.0.cmp(&b.0));
            Some(best)
        }
        _ => None,
    };
    let run = Run { cfg: cfg.clone(), config: config.clone(), objective, class_names, normalization, history };

    let accum = config.grad_accum.max(1);
    let batch = config.batch_size.max(1);
    let mut sampler = Sampler::new(train.len(), batch, config.seed);
    if objective == Objective::Detect && noise_boxes != NoiseBoxes::Fill {
        // Sequences end with their objects (Fill pads every one to the same length): batch alike counts together.
        sampler = sampler.grouped_by(train.items.iter().map(|item| item.objects.len().min(cfg.max_objects)).collect());
    }
    let steps_per_epoch = (sampler.steps_per_epoch() as f64 / accum as f64).ceil().max(1.0) as u64;
    let by_steps = config.steps;
    let by_epochs = config.epochs.map(|e| (e as f64 * steps_per_epoch as f64).ceil().max(1.0) as u64);
    let time_budget = config.minutes.map(|m| m as f64 * 60.0);
    let mut total_steps = match (by_steps, by_epochs) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        // Time-limited only: a first guess, refined from the measured speed below.
        (None, None) if time_budget.is_some() => 1000,
        (None, None) => 50 * steps_per_epoch,
    };
    if resume_meta.is_some() && state.total_steps > 0 {
        total_steps = state.total_steps;
    }
    let count_limited = by_steps.is_some() || by_epochs.is_some();
    // About ten evaluations per run, at most one per epoch, unless set by hand. A time-limited run's step count is
    // refined from its speed below, and its evaluation interval with it: kept at the first guess (1000 steps), a
    // 30-minute BCCD run evaluated every 100 of its 1630 steps, each time decoding 87 crowded val images.
    let auto_eval_every = |total_steps: u64| steps_per_epoch.max(total_steps / 10).max(1);
    let mut eval_every = if config.eval_every > 0 { config.eval_every } else { auto_eval_every(total_steps) };
    // Pixels to predict are left whole: no erasing or mixing for the generative loss.
    let generative_aug = Augment { erase: 0.0, cutmix: 0.0, ..aug };
    let generative_sampler = all_train.as_ref().map(|all| Sampler::new(all.len(), batch, mix(config.seed, 0x6E6)));
    let val_loss_options = LossOptions::validation(noise_boxes);
    let params: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let _ = events.send(Event::Started {
        total_steps,
        device: device_name(&device),
        parameters: params,
        image_size: cfg.image_size,
        augment: aug,
        mirror_asymmetry: mirror_check,
    });

    let start = Instant::now();
    let elapsed_before = state.elapsed_s;
    let start_step = state.step;
    let mut paused_total = 0f64;
    let elapsed = |start: &Instant, paused: f64| elapsed_before + start.elapsed().as_secs_f64() - paused;
    let mut reason = "completed".to_string();
    // Pseudo-labels given and images looked at since the last evaluation.
    let mut pseudo_counts = (0usize, 0usize);
    while state.step < total_steps {
        // Commands.
        let mut stop = false;
        while let Ok(c) = commands.try_recv() {
            match c {
                Command::Stop => stop = true,
                Command::SaveNow => {
                    state.elapsed_s = elapsed(&start, paused_total);
                    run.save(&vars, &opt, ema.as_ref(), best_weights.as_deref(), &state, &events)?
                }
                Command::Resume => {}
                Command::Pause => {
                    let _ = events.send(Event::Paused);
                    let paused_at = Instant::now();
                    loop {
                        match commands.recv() {
                            Ok(Command::Resume) => break,
                            Ok(Command::Stop) | Err(_) => {
                                stop = true;
                                break;
                            }
                            Ok(Command::SaveNow) => run.save(&vars, &opt, ema.as_ref(), best_weights.as_deref(), &state, &events)?,
                            Ok(Command::Pause) => {}
                        }
                    }
                    // Paused time is not training time.
                    paused_total += paused_at.elapsed().as_secs_f64();
                    if !stop {
                        let _ = events.send(Event::Resumed);
                    }
                }
            }
        }
        if stop {
            reason = "stopped".into();
            break;
        }
        let now = elapsed(&start, paused_total);
        if let Some(budget) = time_budget {
            if now >= budget {
                reason = "time limit reached".into();
                break;
            }
        }

        let step_start = Instant::now();
        let lr = learning_rate(state.step, total_steps, config.warmup_steps.min(total_steps / 5), config.lr, 0.05);
        let mut grads = HashMap::new();
        let mut loss_sum = 0f32;
        let mut generative_sum = 0f32;
        let mut pseudo_sum = 0f32;
        for micro in 0..accum as u64 {
            let k = state.step * accum as u64 + micro;
            let idx = sampler.batch_indices(k);
            let b = make_batch(&train, &idx, &aug, mix(config.seed, 2 * k), &device)?;
            let mut rng = StdRng::seed_from_u64(mix(config.seed, 2 * k + 1));
            let progress = state.step as f64 / total_steps.max(1) as f64;
            let opts = LossOptions {
                noise: noise_boxes,
                random_order: object_order.random_probability(progress),
                dense_aux: config.dense_aux,
                label_smoothing: config.label_smoothing,
                class_aux: config.class_aux,
                cutmix: aug.cutmix as f64,
            };
            let mut loss = batch_loss(&model, &b, objective, &opts, teacher.as_ref().map(|t| &t.model), &mut rng)?;
            let value = loss.to_scalar::<f32>()?;
            if !value.is_finite() {
                bail!("the loss became {value} at step {}: training diverged; try a lower learning rate (now {lr:.2e})", state.step);
            }
            loss_sum += value;
            if let (Some(all), Some(sampler)) = (&all_train, &generative_sampler) {
                let any_images = sampler.batch_indices(k);
                let pixels = make_batch(all, &any_images, &generative_aug, mix(config.seed ^ 0x6E6, 2 * k), &device)?;
                if config.generative_aux > 0.0 {
                    let generative = batch_loss(&model, &pixels, Objective::Pretrain, &opts, None, &mut rng)?;
                    let value = generative.to_scalar::<f32>()?;
                    if !value.is_finite() {
                        bail!("the generative loss became {value} at step {}: training diverged; try a lower learning rate (now {lr:.2e}) or --generative-aux", state.step);
                    }
                    generative_sum += value;
                    loss = (loss + (generative * config.generative_aux)?)?;
                }
                if let Some(threshold) = pseudo_labels {
                    // FixMatch: the lightly augmented view above (mirror, shift) gives the label; a strongly
                    // augmented view of the same images (erasing as well) learns it.
                    let guesses = objectives::confident_classes(&model, &patchify(&pixels.images, cfg.patch_size)?, threshold)?;
                    let confident: Vec<(usize, u32)> = any_images.iter().zip(&guesses).filter_map(|(&i, g)| g.map(|c| (i, c))).collect();
                    pseudo_counts.0 += confident.len();
                    pseudo_counts.1 += any_images.len();
                    if !confident.is_empty() {
                        let strong_aug = Augment { erase: 1.0, cutmix: 0.0, ..aug };
                        let indices: Vec<usize> = confident.iter().map(|&(i, _)| i).collect();
                        let strong = make_batch(all, &indices, &strong_aug, mix(config.seed ^ 0x95E, 2 * k), &device)?;
                        let labels = Tensor::new(confident.iter().map(|&(_, c)| c).collect::<Vec<u32>>(), &device)?;
                        let learned = objectives::classify_loss_with_aux(&model, &patchify(&strong.images, cfg.patch_size)?, &labels, 0.0, config.class_aux)?;
                        // Averaged over the whole batch, as FixMatch does: few confident images, a small loss.
                        let share = confident.len() as f64 / any_images.len() as f64;
                        let learned = (learned * share)?;
                        pseudo_sum += learned.to_scalar::<f32>()?;
                        loss = (loss + learned)?;
                    }
                }
            }
            accumulate(&mut grads, collect_grads(&loss.backward()?, &vars))?;
        }
        let scale = 1.0 / accum as f64;
        let norm = global_norm(&grads)? * scale;
        let clip = match config.grad_clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        opt.step(&grads, lr, scale * clip)?;
        if let Some(e) = ema.as_mut() {
            e.update(&vars, state.step)?;
        }
        if let Some(t) = teacher.as_mut() {
            t.update(&vars, state.step)?;
        }
        state.step += 1;
        state.optimizer_t = opt.t;
        let loss = loss_sum / accum as f32;
        state.loss_history.push(loss);
        let step_time = step_start.elapsed().as_secs_f64();

        // Time-limited runs: refine the step count from the measured speed (including evaluation time).
        let t = elapsed(&start, paused_total);
        if let (Some(budget), false) = (time_budget, count_limited) {
            // Early and then every 250 steps: a machine that gets busier or quieter mid-run still ends on time.
            let done = state.step - start_step;
            if [5, 20, 60, 150, 400].contains(&done) || (done >= 500 && done % 250 == 0) {
                let per_step = (t - elapsed_before) / (state.step - start_step) as f64 * 1.03;
                total_steps = (state.step + ((budget - t).max(0.0) / per_step) as u64).max(state.step + 1);
                if config.eval_every == 0 {
                    eval_every = auto_eval_every(total_steps);
                }
            }
        }
        state.total_steps = total_steps;
        let remaining = total_steps.saturating_sub(state.step) as f64;
        let avg = (t - elapsed_before) / ((state.step - start_step) as f64).max(1.0);
        let _ = events.send(Event::Step(StepStats {
            step: state.step,
            total_steps,
            epoch: state.step as f32 / steps_per_epoch as f32,
            losses: {
                let mut losses = vec![(objective_name(objective).to_string(), loss)];
                if all_train.is_some() && config.generative_aux > 0.0 {
                    losses.push(("generative".to_string(), generative_sum / accum as f32));
                }
                if pseudo_labels.is_some() {
                    losses.push(("pseudo-labels".to_string(), pseudo_sum / accum as f32));
                }
                losses
            },
            lr,
            images_per_sec: (batch * accum) as f32 / step_time as f32,
            elapsed_s: t as f32,
            eta_s: (remaining * avg) as f32,
        }));

        // Evaluation on the val split.
        let last = state.step >= total_steps;
        if !val.is_empty() && (state.step % eval_every == 0 || last) {
            let weights = match &ema {
                Some(e) => e.shadow.clone(),
                None => var_tensors(&vars),
            };
            if pseudo_counts.1 > 0 {
                log::info!("pseudo-labels: {:.1} % of {} images confident since the last evaluation", 100.0 * pseudo_counts.0 as f64 / pseudo_counts.1 as f64, pseudo_counts.1);
                pseudo_counts = (0, 0);
            }
            let eval_model = inference_model(&cfg, &weights, &device)?;
            let (val_losses, metric_name, metric, samples) = evaluate(&eval_model, &val, objective, &val_loss_options, &device)?;
            let shown = if objective == Objective::Pretrain { -metric } else { metric };
            let _ = events.send(Event::Eval(EvalStats {
                step: state.step,
                epoch: state.step as f32 / steps_per_epoch as f32,
                val_losses,
                metric_name,
                metric: shown,
            }));
            if !samples.is_empty() {
                let _ = events.send(Event::Samples(samples));
            }
            // A later evaluation that ties the best takes its place (the weights have trained longer for the same
            // score), without counting as an improvement for early stopping. Small val splits make ties common:
            // on raccoon's 14 val images a 7645-step run scored val mAP@0.5 1.0 fourteen times between steps 1400
            // and 4800; the first of those (kept before this rule) scored 0.53 test mAP@0.5, the last step's
            // weights 0.77.
            let improved = state.best_metric.is_none_or(|b| metric > b);
            if state.best_metric.is_none_or(|b| metric >= b) {
                state.best_metric = Some(metric);
                state.best_step = Some(state.step);
                best_weights = Some(weights.iter().map(|(n, t)| Ok((n.clone(), t.copy()?))).collect::<candle_core::Result<_>>()?);
            }
            if improved {
                state.evals_without_improvement = 0;
            } else {
                state.evals_without_improvement += 1;
            }
            if let Some(p) = config.early_stop_patience {
                if state.evals_without_improvement >= p && !last {
                    reason = format!("early stop: no val improvement in {p} evaluations");
                    break;
                }
            }
        }
    }
    state.elapsed_s = elapsed(&start, paused_total);
    state.total_steps = total_steps;
    run.save(&vars, &opt, ema.as_ref(), best_weights.as_deref(), &state, &events)?;
    let _ = events.send(Event::Finished { checkpoint: config.out.clone(), reason });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::project::{BBox, ImageEntry, ImageSource, Task};
    use crate::train::worker::{crowded_sequences, ObjectOrder, CROWDED_OBJECTS};

    #[test]
    fn auto_sequences_follow_how_crowded_the_images_are() {
        let sparse = crowded_sequences(ObjectOrder::Auto, None, CROWDED_OBJECTS);
        assert_eq!(sparse, (ObjectOrder::Curriculum, NoiseBoxes::Fill));
        let crowded = crowded_sequences(ObjectOrder::Auto, None, CROWDED_OBJECTS + 1);
        assert_eq!(crowded, (ObjectOrder::Raster, NoiseBoxes::Match));
        // Explicit settings win.
        let chosen = crowded_sequences(ObjectOrder::Random, Some(NoiseBoxes::None), 50);
        assert_eq!(chosen, (ObjectOrder::Random, NoiseBoxes::None));
        assert_eq!(ObjectOrder::Raster.random_probability(0.9), 0.0);
        assert_eq!(ObjectOrder::Curriculum.random_probability(0.1), 0.0);
        assert_eq!(ObjectOrder::Curriculum.random_probability(0.9), 1.0);
    }

    fn project_of_side(side: u32) -> Project {
        let mut p = Project::new("p", Task::Classify, "/nonexistent");
        p.images = (0..3)
            .map(|i| ImageEntry {
                source: ImageSource::File(format!("{i}.png").into()),
                width: side,
                height: side,
                split: Split::Train,
                class: None,
                boxes: vec![],
                labeled: false,
            })
            .collect();
        p
    }

    #[test]
    fn small_images_keep_their_size_and_tiny_ones_are_upscaled() {
        let tiny = ModelConfig::preset("tiny").unwrap();
        let classify = Objective::Classify;
        assert_eq!(auto_image_size(&project_of_side(8), &tiny, classify), 32, "8×8 digits");
        assert_eq!(auto_image_size(&project_of_side(28), &tiny, classify), 28, "Fashion-MNIST");
        assert_eq!(auto_image_size(&project_of_side(32), &tiny, classify), 32, "CIFAR");
        assert_eq!(auto_image_size(&project_of_side(640), &tiny, classify), tiny.image_size, "large photos");
        // Without boxes, detection and pretraining pick the same.
        assert_eq!(auto_image_size(&project_of_side(640), &tiny, Objective::Detect), tiny.image_size);
        assert_eq!(auto_image_size(&project_of_side(28), &tiny, Objective::Pretrain), 28);
        let c = tiny.with_image_size(28);
        assert_eq!((c.image_size, c.patch_size, c.n_patches()), (28, 4, 49));
    }

    #[test]
    fn reinit_blocks_starts_only_the_top_blocks_afresh() {
        let cfg = ModelConfig::preset("tiny").unwrap();
        let (_, vars, _) = build_model(&cfg, None, true, 1, &Device::Cpu).unwrap();
        let mut weights: HashMap<String, Tensor> = var_tensors(&vars).into_iter().collect();
        drop_top_blocks(&mut weights, cfg.n_layers, 1);
        let (_, _, fresh) = build_model(&cfg, Some(&weights), true, 2, &Device::Cpu).unwrap();
        let top = format!("blocks.{}.", cfg.n_layers - 1);
        assert!(fresh.iter().all(|name| name.starts_with(&top)), "{fresh:?}");
        assert_eq!(fresh.len(), vars.iter().filter(|(name, _)| name.starts_with(&top)).count());
        assert!(!fresh.is_empty());
    }

    #[test]
    fn detection_enlarges_the_input_until_small_objects_span_a_patch_and_a_half() {
        let tiny = ModelConfig::preset("tiny").unwrap();
        // 640-px images whose boxes are `side` px on their shorter side, like BCCD's platelets (67 px).
        let with_boxes = |side: f32| {
            let mut p = project_of_side(640);
            for e in &mut p.images {
                e.boxes = (0..10).map(|i| BBox { xmin: 10.0 * i as f32, ymin: 0.0, xmax: 10.0 * i as f32 + side, ymax: 2.0 * side, class: 0 }).collect();
            }
            p
        };
        let size = |p: &Project, o| tiny.clone().with_image_size(auto_image_size(p, &tiny, o)).image_size;
        assert_eq!(size(&with_boxes(67.0), Objective::Detect), 112, "67 / 640 of the side spans 12 px at 112 px");
        assert_eq!(size(&with_boxes(67.0), Objective::Pretrain), 112, "pretraining for this detector: the same size");
        assert_eq!(size(&with_boxes(67.0), Objective::Classify), 64, "classification ignores boxes");
        assert_eq!(size(&with_boxes(300.0), Objective::Detect), 64, "large objects keep the preset's size");
        assert_eq!(size(&with_boxes(5.0), Objective::Detect), 128, "at most twice the preset's size");
        // Never above the images' own size.
        let mut small_images = with_boxes(2.0);
        small_images.images.iter_mut().for_each(|e| (e.width, e.height) = (80, 80));
        assert_eq!(size(&small_images, Objective::Detect), 80);
    }

    #[test]
    fn classification_shifts_small_sets_erases_large_ones_and_mirrors_only_when_safe() {
        for images in [1000, 8977] {
            // 8977: the CIFAR-10 subset, which overfits within minutes without shifts.
            let small = default_augment(Objective::Classify, images, false);
            assert!(small.translate > 0.0 && !small.hflip && !small.dihedral, "{images} images");
        }
        assert_eq!(default_augment(Objective::Classify, 1000, false).erase, 0.0, "a small set keeps every pixel");
        assert_eq!(default_augment(Objective::Classify, 8977, false).erase, CLASSIFY_LARGE_SET_ERASE);
        assert_eq!(default_augment(Objective::Classify, 54_000, false), Augment { erase: CLASSIFY_LARGE_SET_ERASE, ..Augment::none() });
        let mirrored = default_augment(Objective::Classify, 8977, true);
        assert!(mirrored.hflip && !mirrored.dihedral, "mirror-safe classes get mirrors, never upside down");
        assert!(!default_augment(Objective::Classify, 54_000, true).hflip, "large sets: a short run learns faster without");
        assert!(default_augment(Objective::Detect, 54_000, false).dihedral);
        assert_eq!(default_augment(Objective::Detect, 54_000, false).erase, 0.0, "erasing could hide whole objects");
    }

    #[test]
    fn large_classification_sets_get_the_large_set_recipe() {
        use crate::train::worker::{TrainConfig, CLASSIFY_LARGE_SET};
        let small = TrainConfig::data_defaults(Objective::Classify, CLASSIFY_LARGE_SET - 1);
        let large = TrainConfig::data_defaults(Objective::Classify, CLASSIFY_LARGE_SET);
        assert_eq!((small.batch_size, small.lr, small.class_aux), (16, 1e-3, 0.0));
        assert_eq!((large.batch_size, large.lr, large.class_aux), (64, 2e-3, 1.0));
        // Detection and pretraining do not change with the data's size.
        for objective in [Objective::Detect, Objective::Pretrain] {
            assert_eq!(TrainConfig::data_defaults(objective, 100), TrainConfig::data_defaults(objective, 100_000), "{objective:?}");
        }
        assert_eq!(TrainConfig::data_defaults(Objective::Detect, 100).lr, 2e-3);
    }

    #[test]
    fn fine_tuning_a_classifier_among_many_unlabelled_images_keeps_the_generative_loss() {
        use crate::train::worker::default_generative_aux;
        assert_eq!(default_generative_aux(Objective::Classify, true, 1000, 7977), 1.0, "CIFAR-10 at 100 labels per class");
        assert_eq!(default_generative_aux(Objective::Classify, true, 1000, 999), 0.0, "fewer unlabelled than labelled");
        assert_eq!(default_generative_aux(Objective::Classify, true, 10, 99), 0.0, "too few unlabelled images to matter");
        assert_eq!(default_generative_aux(Objective::Classify, false, 1000, 7977), 0.0, "from scratch: measured only fine-tuning");
        assert_eq!(default_generative_aux(Objective::Detect, true, 100, 1000), 0.0, "detection: not measured");
        use crate::train::worker::images_learned_from;
        assert_eq!(images_learned_from(1000, 7977, true), 8977, "with the generative loss or pseudo-labels every image teaches");
        assert_eq!(images_learned_from(1000, 7977, false), 1000);
    }

    #[test]
    fn new_classification_and_pretraining_models_get_the_stem_and_detection_models_do_not() {
        use crate::train::worker::{ModelOverrides, DEFAULT_STEM_CHANNELS};
        let tiny = ModelConfig::preset("tiny").unwrap();
        assert!(tiny.stem_channels == 0 && !tiny.local_mixing_full, "the preset itself is plain");
        for objective in [Objective::Classify, Objective::Pretrain] {
            let c = ModelOverrides::default().with_defaults_for(objective).apply(tiny.clone());
            assert_eq!((c.stem_channels, c.local_mixing_full), (DEFAULT_STEM_CHANNELS, true), "{objective:?}");
        }
        let d = ModelOverrides::default().with_defaults_for(Objective::Detect).apply(tiny.clone());
        assert_eq!((d.stem_channels, d.local_mixing_full), (0, false));
        // What the user says wins: `--stem-channels 0 --local-mixing-full false` is the plain model again, and
        // without local mixing there are no following taps to add.
        let asked = ModelOverrides { stem_channels: Some(0), local_mixing_full: Some(false), ..Default::default() };
        let c = asked.with_defaults_for(Objective::Classify).apply(tiny.clone());
        assert_eq!((c.stem_channels, c.local_mixing_full), (0, false));
        let no_mixing = ModelOverrides { local_mixing: Some(false), ..Default::default() };
        let c = no_mixing.with_defaults_for(Objective::Classify).apply(tiny.clone());
        assert!(!c.local_mixing && !c.local_mixing_full && c.stem_channels == DEFAULT_STEM_CHANNELS);
    }
}
