//! The three objectives on one backbone, and detection decoding.
//!
//! - Generative pretraining (AIM-style): a random-length bidirectional prefix of patches, then causal order; each
//!   position after the prefix predicts the next patch's per-patch-normalised pixels; loss = MSE.
//!   Or, with `ModelConfig::pretrain_mask_ratio` > 0, masked image modelling (SimMIM): a random share of the
//!   patches enters blank and the model fills them in, every patch seeing every other.
//!   With `ModelConfig::pretrain_feature_weight` > 0, each position also predicts the next patch's features as a
//!   teacher (a moving average of the model, data2vec) computes them while seeing the whole image.
//! - Classification: `[patches] [TASK_CLASSIFY]` → the class token; cross-entropy over the class tokens.
//! - Detection as language (Pix2Seq): `[patches] [TASK_DETECT] ymin xmin ymax xmax class ... EOS`, objects in random
//!   order, padded with noise boxes labelled NOISE whose coordinates carry no loss (sequence augmentation).
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use rand::seq::SliceRandom;
use rand::Rng;

use super::config::{ModelConfig, PretrainTarget};
use crate::data::project::BBox;
use super::transformer::{patchify, prefix_len, sincos_1d, unpatchify, KvCache, Transformer};
use super::vocab::{self, Vocab};

/// Per-patch normalisation of the pretraining targets (AIM): each patch to zero mean, unit variance.
pub fn normalize_patches(patches: &Tensor) -> Result<Tensor> {
    let mean = patches.mean_keepdim(D::Minus1)?;
    let centered = patches.broadcast_sub(&mean)?;
    let std = (centered.sqr()?.mean_keepdim(D::Minus1)? + 1e-6)?.sqrt()?;
    centered.broadcast_div(&std)
}

/// What the pixel head learns to predict for each of the patches `[B, N, patch_dim]`: `[B, N, cfg.pixel_target_dim()]`,
/// per-patch normalised (see [`PretrainTarget`]).
pub fn pretrain_targets(cfg: &ModelConfig, patches: &Tensor) -> Result<Tensor> {
    let (b, n, _) = patches.dims3()?;
    let (ps, c) = (cfg.patch_size, cfg.channels);
    let target = match cfg.pretrain_target {
        PretrainTarget::Pixels => patches.clone(),
        PretrainTarget::Pooled => {
            // A patch's values run [row, column, channel]; split each row and column into (block, offset in block).
            let half = ps / 2;
            patches
                .reshape(vec![b * n * half, 2, half, 2, c])?
                .sum_keepdim(3)?
                .sum_keepdim(1)?
                .affine(0.25, 0.0)?
                .reshape((b, n, half * half * c))?
        }
        PretrainTarget::Blurred => {
            let images = unpatchify(patches, ps, c, cfg.grid())?;
            patchify(&gaussian_blur(&images, 1.0)?, ps)?
        }
    };
    normalize_patches(&target)
}

/// Predicted pretraining targets `[B, N, cfg.pixel_target_dim()]` as whole patches `[B, N, patch_dim]`: a pooled
/// target's 2×2 averages are repeated over their blocks; the others already are patches.
pub fn full_resolution_patches(cfg: &ModelConfig, pred: &Tensor) -> Result<Tensor> {
    if cfg.pretrain_target != PretrainTarget::Pooled {
        return Ok(pred.clone());
    }
    let (b, n, _) = pred.dims3()?;
    let (half, c) = (cfg.patch_size / 2, cfg.channels);
    pred.reshape(vec![b * n * half, 1, half, 1, c])?
        .repeat(vec![1, 2, 1, 2, 1])?
        .reshape((b, n, cfg.patch_dim()))
}

/// Each channel of `images` `[B, C, H, W]` blurred with a Gaussian of `sigma` pixels (taps to 2σ). Near the border
/// the weights are renormalised over the pixels inside the image, so edges keep their brightness.
pub fn gaussian_blur(images: &Tensor, sigma: f64) -> Result<Tensor> {
    let (_, c, h, w) = images.dims4()?;
    let radius = (2.0 * sigma).ceil() as usize;
    let taps: Vec<f32> = (0..2 * radius + 1).map(|i| (-((i as f64 - radius as f64).powi(2)) / (2.0 * sigma * sigma)).exp() as f32).collect();
    let kernel2d: Vec<f32> = taps.iter().flat_map(|a| taps.iter().map(move |b| a * b)).collect();
    let k = 2 * radius + 1;
    let kernel = Tensor::from_vec(kernel2d, (1, 1, k, k), images.device())?;
    let weight_sum = Tensor::ones((1, 1, h, w), DType::F32, images.device())?.conv2d(&kernel, radius, 1, 1, 1)?;
    let per_channel = kernel.repeat((c, 1, 1, 1))?;
    images.conv2d(&per_channel, radius, 1, 1, c)?.broadcast_div(&weight_sum)
}

/// Generative pretraining loss on patches `[B, N, patch_dim]` with a bidirectional prefix of `prefix` patches
/// (1 ≤ prefix < N): positions prefix-1 .. N-2 predict patches prefix .. N-1.
pub fn pretrain_loss(model: &Transformer, patches: &Tensor, prefix: usize) -> Result<Tensor> {
    pretrain_loss_with_features(model, patches, prefix, None)
}

/// [`pretrain_loss`], plus — given a teacher's `features` `[B, N, dim]` ([`teacher_features`]) and a model with a
/// feature head — `cfg.pretrain_feature_weight` times the MSE of the feature head's prediction of the next patch's
/// features, read from the same positions as the pixels.
pub fn pretrain_loss_with_features(model: &Transformer, patches: &Tensor, prefix: usize, features: Option<&Tensor>) -> Result<Tensor> {
    let n = patches.dim(1)?;
    let prefix = prefix.clamp(1, n - 1);
    let mask = prefix_len(n, prefix, patches.device())?;
    let h = model.forward(Some(patches), None, Some(mask))?;
    let context = h.narrow(1, prefix - 1, n - prefix)?;
    let pred = model.pixel_head.forward(&context)?;
    let target = pretrain_targets(&model.cfg, patches)?.narrow(1, prefix, n - prefix)?;
    let pixel_loss = (pred - target)?.sqr()?.mean_all()?;
    match (features, &model.feature_head) {
        (Some(features), Some(head)) => {
            let feature_loss = (head.forward(&context)? - features.narrow(1, prefix, n - prefix)?)?.sqr()?.mean_all()?;
            pixel_loss + (feature_loss * model.cfg.pretrain_feature_weight)?
        }
        _ => Ok(pixel_loss),
    }
}

/// How many of the teacher's top blocks make its feature target (data2vec averages the top 8 of 12 blocks; the
/// tiny preset has 4).
pub const TEACHER_TOP_BLOCKS: usize = 2;

/// Next-patch prediction's feature target: for each patch `[B, N, patch_dim]`, the average of `teacher`'s top
/// [`TEACHER_TOP_BLOCKS`] block outputs with every patch seeing every other, each output normalised per patch (so
/// no block's scale dominates) and the average normalised again (so the loss reads 1 for a model that predicts
/// nothing); detached: no gradient reaches the teacher.
pub fn teacher_features(teacher: &Transformer, patches: &Tensor) -> Result<Tensor> {
    let outputs = teacher.block_outputs(patches)?;
    let top = &outputs[outputs.len().saturating_sub(TEACHER_TOP_BLOCKS)..];
    let mut sum = normalize_patches(&top[0].detach())?;
    for o in &top[1..] {
        sum = (sum + normalize_patches(&o.detach())?)?;
    }
    Ok(normalize_patches(&sum)?.detach())
}

/// Masked image modelling (SimMIM): where `masked` `[B, N]` is 1 the patch enters blank (zero, the data's mean
/// after normalisation); every patch sees every other, as in fine-tuning. Returns the pixel head's prediction of
/// each patch's target at that patch's own position, `[B, N, cfg.pixel_target_dim()]`.
pub fn masked_predictions(model: &Transformer, patches: &Tensor, masked: &Tensor) -> Result<Tensor> {
    let keep = masked.affine(-1.0, 1.0)?.unsqueeze(2)?;
    let h = model.forward(Some(&patches.broadcast_mul(&keep)?), None, None)?;
    model.pixel_head.forward(&h)
}

/// Masked image modelling's loss on patches `[B, N, patch_dim]`: the MSE of [`masked_predictions`] against
/// [`pretrain_targets`] over the masked patches only (the visible ones are given, so they teach nothing).
pub fn masked_pretrain_loss(model: &Transformer, patches: &Tensor, masked: &Tensor) -> Result<Tensor> {
    let pred = masked_predictions(model, patches, masked)?;
    let per_patch = (pred - pretrain_targets(&model.cfg, patches)?)?.sqr()?.mean(D::Minus1)?;
    // Divided on the device: reading the count back would stall a GPU every step.
    (per_patch * masked)?.sum_all()?.broadcast_div(&masked.sum_all()?.clamp(1f32, f32::MAX)?)
}

/// Which patches masked image modelling blanks: for each of `batch` images, `round(ratio · n)` (at least one) of its
/// `n` patches drawn at random, as a `[batch, n]` tensor of 1 (masked) and 0.
pub fn random_patch_mask(batch: usize, n: usize, ratio: f64, rng: &mut impl Rng, device: &Device) -> Result<Tensor> {
    let count = ((ratio * n as f64).round() as usize).clamp(1, n);
    let mut rows = Vec::with_capacity(batch * n);
    for _ in 0..batch {
        let mut row: Vec<f32> = (0..n).map(|i| if i < count { 1.0 } else { 0.0 }).collect();
        row.shuffle(rng);
        rows.extend(row);
    }
    Tensor::from_vec(rows, (batch, n), device)
}

/// Predicted patches (per-patch normalised) for positions 1..N given everything before them (causal, prefix 1).
pub fn predict_next_patches(model: &Transformer, patches: &Tensor, prefix: usize) -> Result<Tensor> {
    let n = patches.dim(1)?;
    let mask = prefix_len(n, prefix.clamp(1, n), patches.device())?;
    let h = model.forward(Some(patches), None, Some(mask))?;
    model.pixel_head.forward(&h)
}

/// Class logits `[B, n_classes]`.
pub fn classify_logits(model: &Transformer, patches: &Tensor) -> Result<Tensor> {
    Ok(classify_forward(model, patches)?.0)
}

/// Class logits `[B, n_classes]` read at the task token, and the final states of the image's patches `[B, N, dim]`.
fn classify_forward(model: &Transformer, patches: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, n, _) = patches.dims3()?;
    let task = Tensor::full(vocab::TASK_CLASSIFY, (b, 1), patches.device())?;
    let mask = prefix_len(n + 1, n, patches.device())?;
    let h = model.forward(Some(patches), Some(&task), Some(mask))?;
    let logits = model.token_head.forward(&h.i((.., n, ..))?)?;
    let v = model.cfg.vocab();
    Ok((logits.narrow(1, v.first_class() as usize, v.n_classes)?.contiguous()?, h.narrow(1, 0, n)?))
}

/// Pseudo-labels for unlabelled images (FixMatch): for each image the class the model gives it where its
/// probability is at least `threshold`, else `None`. Read without gradient: they are targets, not predictions to learn.
pub fn confident_classes(model: &Transformer, patches: &Tensor, threshold: f64) -> Result<Vec<Option<u32>>> {
    let probs = candle_nn::ops::softmax_last_dim(&classify_logits(model, patches)?.detach())?;
    let best = probs.max(D::Minus1)?.to_vec1::<f32>()?;
    let class = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok(best.iter().zip(class).map(|(&p, c)| (p as f64 >= threshold).then_some(c)).collect())
}

pub fn classify_loss(model: &Transformer, patches: &Tensor, labels: &Tensor) -> Result<Tensor> {
    candle_nn::loss::cross_entropy(&classify_logits(model, patches)?, labels)
}

/// Cross-entropy (label-smoothed by `smoothing`) plus `patch_aux` × the patch-level auxiliary loss: the dense head's class logits,
/// averaged over the image's patches (global average pooling), learn the image's label too. The answer is still
/// read at the task token; the auxiliary loss gives every patch a direct gradient towards the label, which a small
/// transformer from scratch otherwise receives only through attention from one token (measured: README, Quality).
pub fn classify_loss_with_aux(model: &Transformer, patches: &Tensor, labels: &Tensor, smoothing: f64, patch_aux: f64) -> Result<Tensor> {
    classify_loss_mixed(model, patches, labels, None, smoothing, patch_aux)
}

/// [`classify_loss_with_aux`] for mixed images (CutMix): each image shows its own class on a share `keep` of its
/// pixels and its partner's class (`partner_labels`) on the rest, so its targets are `keep` on the one and
/// `1 - keep` on the other. Cross-entropy is linear in the target, so that is the same mix of the two losses.
pub fn classify_loss_mixed(
    model: &Transformer,
    patches: &Tensor,
    labels: &Tensor,
    partner: Option<(&Tensor, f64)>,
    smoothing: f64,
    patch_aux: f64,
) -> Result<Tensor> {
    let loss_against = |logits: &Tensor| -> Result<Tensor> {
        let own = smoothed_cross_entropy(logits, labels, smoothing)?;
        match partner {
            Some((partner_labels, keep)) if keep < 1.0 => {
                (own * keep)? + (smoothed_cross_entropy(logits, partner_labels, smoothing)? * (1.0 - keep))?
            }
            _ => Ok(own),
        }
    };
    let (logits, h_patches) = classify_forward(model, patches)?;
    let mut loss = loss_against(&logits)?;
    if patch_aux > 0.0 {
        let n_classes = logits.dim(1)?;
        let dense = model.dense_head.forward(&h_patches)?;
        let pooled = dense.narrow(2, DENSE_BOX_OUTPUTS + 1, n_classes)?.mean(1)?;
        loss = (loss + (loss_against(&pooled)? * patch_aux)?)?;
    }
    Ok(loss)
}

/// Cross-entropy against `1 - smoothing` on the label and `smoothing` spread evenly over all classes.
fn smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let ce = candle_nn::loss::cross_entropy(logits, labels)?;
    if smoothing <= 0.0 {
        return Ok(ce);
    }
    let uniform = candle_nn::ops::log_softmax(logits, D::Minus1)?.mean(D::Minus1)?.mean_all()?.neg()?;
    (ce * (1.0 - smoothing))? + (uniform * smoothing)?
}

/// A labelled object in model-input pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
    pub class: usize,
}

/// The same box in whatever pixels the caller uses: [`Object`] is the model's name for a [`BBox`].
impl From<BBox> for Object {
    fn from(b: BBox) -> Object {
        Object { xmin: b.xmin, ymin: b.ymin, xmax: b.xmax, ymax: b.ymax, class: b.class }
    }
}

impl From<Object> for BBox {
    fn from(o: Object) -> BBox {
        BBox { xmin: o.xmin, ymin: o.ymin, xmax: o.xmax, ymax: o.ymax, class: o.class }
    }
}

impl Object {
    /// Width × height (0 for an inverted box).
    pub fn area(&self) -> f32 {
        (self.xmax - self.xmin).max(0.0) * (self.ymax - self.ymin).max(0.0)
    }
}

/// Tokens of one detection training example: `input[i]` predicts `target[i]` with loss weight `weight[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectSequence {
    pub input: Vec<u32>,
    pub target: Vec<u32>,
    pub weight: Vec<f32>,
}

impl DetectSequence {
    /// Length of the part that carries loss: the padding after it can be cut off (the attention is causal, so the
    /// positions before it do not change).
    pub fn used_len(&self) -> usize {
        self.weight.iter().rposition(|&w| w > 0.0).map_or(0, |i| i + 1)
    }
}

/// How many fake boxes (class NOISE, coordinates without loss) a detection training sequence gets after its real
/// objects: Pix2Seq's sequence augmentation, which teaches the model to keep proposing boxes (recall) and to give
/// doubtful ones a low score instead of stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseBoxes {
    /// None: EOS right after the real objects.
    None,
    /// Up to the model's `max_objects` (Pix2Seq): every sequence is as long as the most crowded image's.
    #[default]
    Fill,
    /// As many as there are real objects (at least one, within `max_objects`). On crowded data (BCCD: up to 28
    /// cells, 13 on average) sequences are half as long on average, and training trims each batch to its longest.
    Match,
}

impl std::str::FromStr for NoiseBoxes {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(NoiseBoxes::None),
            "fill" => Ok(NoiseBoxes::Fill),
            "match" => Ok(NoiseBoxes::Match),
            other => Err(format!("unknown noise-box policy '{other}' (expected none, fill or match)")),
        }
    }
}

/// Builds the Pix2Seq training sequence: objects in random order, then noise boxes (see [`NoiseBoxes`]), then EOS;
/// padded to the fixed length `cfg.max_output_tokens() - 1` (padding carries no loss: see [`DetectSequence::used_len`]).
pub fn detect_sequence(cfg: &ModelConfig, objects: &[Object], noise: NoiseBoxes, rng: &mut impl Rng) -> DetectSequence {
    detect_sequence_ordered(cfg, objects, noise, true, rng)
}

/// [`detect_sequence`] with a choice of object order: random (Pix2Seq), or raster order (top to bottom, then left to
/// right), which is one unambiguous answer per image and much faster to learn from a cold start.
pub fn detect_sequence_ordered(cfg: &ModelConfig, objects: &[Object], noise: NoiseBoxes, random_order: bool, rng: &mut impl Rng) -> DetectSequence {
    let v = cfg.vocab();
    let size = cfg.image_size as f32;
    let mut objs: Vec<Object> = objects.to_vec();
    if random_order {
        objs.shuffle(rng);
    } else {
        objs.sort_by(|a, b| (a.ymin, a.xmin).partial_cmp(&(b.ymin, b.xmin)).unwrap_or(std::cmp::Ordering::Equal));
    }
    objs.truncate(cfg.max_objects);
    let mut full = vec![vocab::TASK_DETECT];
    let mut weights = vec![];
    let coords = |o: &Object| [o.ymin, o.xmin, o.ymax, o.xmax];
    for o in &objs {
        for c in coords(o) {
            full.push(v.bin_token(v.quantize(c, size)));
            weights.push(1.0);
        }
        full.push(v.class_token(o.class));
        weights.push(1.0);
    }
    let noise_objects = match noise {
        NoiseBoxes::None => 0,
        NoiseBoxes::Fill => cfg.max_objects - objs.len(),
        NoiseBoxes::Match => objs.len().max(1).min(cfg.max_objects - objs.len()),
    };
    for _ in 0..noise_objects {
        let o = noise_object(objects, size, rng);
        for c in coords(&o) {
            full.push(v.bin_token(v.quantize(c, size)));
            weights.push(0.0);
        }
        full.push(vocab::NOISE);
        weights.push(1.0);
    }
    full.push(vocab::EOS);
    weights.push(1.0);
    let len = cfg.max_output_tokens();
    while full.len() < len {
        full.push(vocab::EOS);
        weights.push(0.0);
    }
    DetectSequence { input: full[..len - 1].to_vec(), target: full[1..].to_vec(), weight: weights }
}

/// A fake box: half the time a jittered copy of a real one (a near miss the model must learn to reject), otherwise
/// a random box.
fn noise_object(real: &[Object], size: f32, rng: &mut impl Rng) -> Object {
    let (cx, cy, w, h) = if !real.is_empty() && rng.random_bool(0.5) {
        let o = real[rng.random_range(0..real.len())];
        let (w, h) = (o.xmax - o.xmin, o.ymax - o.ymin);
        (
            (o.xmin + o.xmax) / 2.0 + rng.random_range(-0.4..0.4) * w,
            (o.ymin + o.ymax) / 2.0 + rng.random_range(-0.4..0.4) * h,
            w * rng.random_range(0.6..1.5),
            h * rng.random_range(0.6..1.5),
        )
    } else {
        (
            rng.random_range(0.0..size),
            rng.random_range(0.0..size),
            rng.random_range(0.05..0.6) * size,
            rng.random_range(0.05..0.6) * size,
        )
    };
    let clamp = |x: f32| x.clamp(0.0, size);
    Object { xmin: clamp(cx - w / 2.0), ymin: clamp(cy - h / 2.0), xmax: clamp(cx + w / 2.0), ymax: clamp(cy + h / 2.0), class: 0 }
}

/// Width (in bins) of the soft coordinate targets: a coordinate's target is a discretised Gaussian over the bins
/// around the true one, so predicting a neighbouring bin costs little and the model learns distances, not just
/// identities (far faster than one-hot targets on small data).
pub const COORD_SIGMA_BINS: f32 = 1.0;

/// Target distributions `[B, L, V]` for target tokens `[B, L]`: one-hot, except coordinate bins (soft, see
/// [`COORD_SIGMA_BINS`]).
pub fn soft_targets(vocab: &Vocab, targets: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let vsize = vocab.size();
    let (b, l) = (targets.len(), targets.first().map_or(0, Vec::len));
    let mut dense = vec![0f32; b * l * vsize];
    let reach = (3.0 * COORD_SIGMA_BINS).ceil() as i64;
    let kernel: Vec<f32> = (-reach..=reach).map(|d| (-(d * d) as f32 / (2.0 * COORD_SIGMA_BINS * COORD_SIGMA_BINS)).exp()).collect();
    for (i, row) in targets.iter().enumerate() {
        for (j, &t) in row.iter().enumerate() {
            let base = (i * l + j) * vsize;
            match vocab.token_to_bin(t) {
                Some(bin) if COORD_SIGMA_BINS > 0.0 => {
                    let mut total = 0.0;
                    for (k, w) in kernel.iter().enumerate() {
                        let b = bin as i64 + k as i64 - reach;
                        if b >= 0 && (b as usize) < vocab.n_bins {
                            total += w;
                        }
                    }
                    for (k, w) in kernel.iter().enumerate() {
                        let b = bin as i64 + k as i64 - reach;
                        if b >= 0 && (b as usize) < vocab.n_bins {
                            dense[base + vocab.bin_token(b as usize) as usize] = w / total;
                        }
                    }
                }
                _ => dense[base + t as usize] = 1.0,
            }
        }
    }
    Tensor::from_vec(dense, (b, l, vsize), device)
}

/// Weighted token cross-entropy for a batch of detection sequences (soft targets for coordinates).
/// `input`, `target`: `[B, L]` u32, `weight`: `[B, L]`.
pub fn detect_loss(model: &Transformer, patches: &Tensor, input: &Tensor, target: &Tensor, weight: &Tensor) -> Result<Tensor> {
    detect_loss_with_dense(model, patches, input, target, weight, None)
}

/// [`detect_loss`] plus, with `dense = Some((objects, w))`, `w` × [`dense_aux_loss`] on the same forward pass.
pub fn detect_loss_with_dense(
    model: &Transformer,
    patches: &Tensor,
    input: &Tensor,
    target: &Tensor,
    weight: &Tensor,
    dense: Option<(&[Vec<Object>], f64)>,
) -> Result<Tensor> {
    let n = patches.dim(1)?;
    let l = input.dim(1)?;
    let mask = prefix_len(n + l, n, patches.device())?;
    let x = embed_detect_sequence(model, patches, &input.to_vec2::<u32>()?)?;
    let h = model.forward_embedded(&x, Some(mask), None, None)?;
    let loss = detect_sequence_loss(model, &h, n, target, weight)?;
    match dense {
        Some((objects, w)) if w > 0.0 => loss + (dense_aux_loss(model, &h.narrow(1, 0, n)?, objects)? * w)?,
        _ => Ok(loss),
    }
}

/// Outputs of the dense head before its class logits: distances from a patch's centre to the left, top, right and
/// bottom side of the object covering it.
pub const DENSE_BOX_OUTPUTS: usize = 4;

/// Per-patch targets of the dense auxiliary loss for one image: for each patch (row-major over the grid), the
/// object covering its centre (the smallest if several do) as `Some((class, [left, top, right, bottom]))` with
/// distances in image sides, or `None` for background.
pub fn dense_targets(cfg: &ModelConfig, objects: &[Object]) -> Vec<Option<(usize, [f32; 4])>> {
    let (g, p, size) = (cfg.grid(), cfg.patch_size as f32, cfg.image_size as f32);
    (0..g * g)
        .map(|i| {
            let (cy, cx) = (((i / g) as f32 + 0.5) * p, ((i % g) as f32 + 0.5) * p);
            objects
                .iter()
                .filter(|o| o.xmin <= cx && cx <= o.xmax && o.ymin <= cy && cy <= o.ymax)
                .min_by(|a, b| a.area().total_cmp(&b.area()))
                .map(|o| (o.class, [(cx - o.xmin) / size, (cy - o.ymin) / size, (o.xmax - cx) / size, (o.ymax - cy) / size]))
        })
        .collect()
}

/// Dense auxiliary loss on the image prefix's final states `h_patches` (`[B, N, dim]`), for detection training
/// only: each patch classifies itself (background or the class of the object covering it) and, inside an object,
/// regresses the distances to that object's four sides (FCOS-style, L1). A few labelled tokens per image are a
/// thin signal for a small transformer from scratch; this gives every patch a target, so the backbone learns what
/// lies where many times faster, and the decoder only has to read it off (measured: see README, Quality). The
/// decoder and its output are unchanged: detection is still written as tokens.
pub fn dense_aux_loss(model: &Transformer, h_patches: &Tensor, objects: &[Vec<Object>]) -> Result<Tensor> {
    let (b, n, _) = h_patches.dims3()?;
    let dev = h_patches.device();
    let mut classes = Vec::with_capacity(b * n);
    let mut boxes = Vec::with_capacity(b * n * DENSE_BOX_OUTPUTS);
    let mut inside = Vec::with_capacity(b * n);
    for objs in objects {
        for t in dense_targets(&model.cfg, objs) {
            match t {
                Some((c, d)) => {
                    classes.push(1 + c as u32);
                    boxes.extend_from_slice(&d);
                    inside.push(1f32);
                }
                None => {
                    classes.push(0);
                    boxes.extend_from_slice(&[0.0; DENSE_BOX_OUTPUTS]);
                    inside.push(0.0);
                }
            }
        }
    }
    let out = model.dense_head.forward(h_patches)?.reshape((b * n, ()))?;
    let class_loss = candle_nn::loss::cross_entropy(&out.narrow(1, DENSE_BOX_OUTPUTS, out.dim(1)? - DENSE_BOX_OUTPUTS)?.contiguous()?, &Tensor::new(classes, dev)?)?;
    let n_inside: f32 = inside.iter().sum();
    let inside = Tensor::from_vec(inside, (b * n, 1), dev)?;
    let target = Tensor::from_vec(boxes, (b * n, DENSE_BOX_OUTPUTS), dev)?;
    // L1 in image sides is ~0.1 where cross-entropy is ~1: scaled so both matter from the start.
    let box_loss = ((out.narrow(1, 0, DENSE_BOX_OUTPUTS)? - target)?.abs()?.broadcast_mul(&inside)?.sum_all()? / (n_inside.max(1.0) as f64))?;
    class_loss + (box_loss * 2.0)?
}

/// Embeds a whole detection sequence: the image patches, then the output tokens `rows` from position 0.
pub fn embed_detect_sequence(model: &Transformer, patches: &Tensor, rows: &[Vec<u32>]) -> Result<Tensor> {
    Tensor::cat(&[model.embed(Some(patches), None, 0)?, embed_detect_tokens(model, rows, 0)?], 1)
}

/// Embeds detection tokens `rows` (`[B, L]`, the first at output position `offset`; the whole sequence so far from
/// position 0 when `offset` is 0) and adds, on each object's last coordinate token (xmax, whose successor is the
/// class), the 2-D sine-cosine code of that box's centre in patch units: the very code the patches carry. The class
/// token must name what lies inside the box the four coordinates describe; without this the model has to learn to
/// turn four scalar tokens into an attention query over the patches, which a small model from scratch does only
/// after a very long time (its class tokens stay at chance long after its boxes are roughly right).
pub fn embed_detect_tokens(model: &Transformer, rows: &[Vec<u32>], offset: usize) -> Result<Tensor> {
    let cfg = &model.cfg;
    let dev = model.device();
    let (b, l) = (rows.len(), rows.first().map_or(0, Vec::len));
    let flat: Vec<u32> = rows.iter().flatten().copied().collect();
    let x = model.embed(None, Some(&Tensor::from_vec(flat, (b, l), dev)?), offset)?;
    if !cfg.box_query {
        return Ok(x);
    }
    let codes = box_centre_codes(cfg, rows, offset);
    x + Tensor::from_vec(codes, (b, l, cfg.dim), dev)?
}

/// See [`embed_detect_tokens`]. `rows[i]` holds the tokens from output position `offset` on; a code needs the
/// object's four coordinates in `rows` (the decoder, which passes one token at a time, calls [`box_centre_code`]).
fn box_centre_codes(cfg: &ModelConfig, rows: &[Vec<u32>], offset: usize) -> Vec<f32> {
    let v = cfg.vocab();
    let l = rows.first().map_or(0, Vec::len);
    let mut out = vec![0f32; rows.len() * l * cfg.dim];
    for (i, row) in rows.iter().enumerate() {
        // Output position 0 is the task token; objects occupy 1..=5, 6..=10, ...; xmax sits at 5k + 4.
        for j in (3..l).filter(|j| (offset + j) % 5 == 4) {
            let bins: Option<Vec<usize>> = row[j - 3..=j].iter().map(|&t| v.token_to_bin(t)).collect();
            if let Some(b) = bins {
                let code = box_centre_code(cfg, [b[0], b[1], b[2], b[3]]);
                out[(i * l + j) * cfg.dim..(i * l + j + 1) * cfg.dim].copy_from_slice(&code);
            }
        }
    }
    out
}

/// The 2-D sine-cosine code (as the patches have it) of the centre of the box with bins `[ymin, xmin, ymax, xmax]`.
pub fn box_centre_code(cfg: &ModelConfig, bins: [usize; 4]) -> Vec<f32> {
    let v = cfg.vocab();
    let (size, p) = (cfg.image_size as f32, cfg.patch_size as f32);
    // Patch (r, c) carries the code of (r, c) and covers pixels r·p .. (r+1)·p: pixel y sits at row y/p − ½.
    let centre = |a: usize, b: usize| (v.dequantize(a, size) + v.dequantize(b, size)) / 2.0 / p - 0.5;
    let mut code = sincos_1d(centre(bins[0], bins[2]), cfg.dim / 2);
    code.extend(sincos_1d(centre(bins[1], bins[3]), cfg.dim - cfg.dim / 2));
    code
}

/// Weighted token cross-entropy of detection sequences from the final hidden states `h` (`[B, N + L, dim]`).
fn detect_sequence_loss(model: &Transformer, h: &Tensor, n: usize, target: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let l = target.dim(1)?;
    let logits = model.token_head.forward(&h.narrow(1, n, l)?)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let soft = soft_targets(&model.cfg.vocab(), &target.to_vec2::<u32>()?, h.device())?;
    let nll = (logp * soft)?.sum(D::Minus1)?.neg()?;
    (nll * weight)?.sum_all()? / weight.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64
}

/// A decoded box in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDetection {
    pub object: Object,
    pub score: f32,
}

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub max_objects: usize,
    /// EOS is not allowed before this many boxes (Pix2Seq's recall trick: boxes the model would not have written
    /// come with low scores, so they add recall at the bottom of the ranking without hurting precision above it).
    pub min_objects: usize,
    /// Nucleus sampling; `None` = greedy.
    pub top_p: Option<f32>,
    pub seed: u64,
    /// Decode without the KV cache (recomputes the whole sequence each step; for tests and benchmarks).
    pub no_cache: bool,
}

/// Chooses a token among `allowed` from `logits` (greedy or nucleus); returns it and the probabilities over `allowed`.
fn choose(logits: &[f32], allowed: &[u32], top_p: Option<f32>, rng: &mut impl Rng) -> (u32, Vec<f32>) {
    let max = allowed.iter().map(|&t| logits[t as usize]).fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<f32> = allowed.iter().map(|&t| (logits[t as usize] - max).exp()).collect();
    let sum: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    let mut order: Vec<usize> = (0..allowed.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let pick = match top_p {
        None => order[0],
        Some(p) => {
            let mut cum = 0.0;
            let mut nucleus = vec![];
            for &i in &order {
                nucleus.push(i);
                cum += probs[i];
                if cum >= p {
                    break;
                }
            }
            let r: f32 = rng.random_range(0.0..cum.max(1e-12));
            let mut acc = 0.0;
            *nucleus.iter().find(|&&i| {
                acc += probs[i];
                acc >= r
            }).unwrap_or(&nucleus[nucleus.len() - 1])
        }
    };
    (allowed[pick], probs)
}

/// Decodes boxes for patches `[B, N, patch_dim]`, batched, autoregressively with a KV cache.
/// Each box's score is its class token's probability (among the classes and NOISE) times the geometric mean of its
/// four coordinates' confidences (probability within one bin of the chosen one); a box the model calls noise keeps
/// its best real class with that class's (low) probability, so it can still rank for recall.
pub fn detect_decode(model: &Transformer, patches: &Tensor, opts: &DecodeOptions) -> Result<Vec<Vec<RawDetection>>> {
    let cfg = &model.cfg;
    let v: Vocab = cfg.vocab();
    let dev = patches.device();
    let (b, n, _) = patches.dims3()?;
    let max_objects = opts.max_objects.min(cfg.max_objects).max(1);
    let size = cfg.image_size as f32;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(opts.seed);
    let bins: Vec<u32> = (0..v.n_bins).map(|i| v.bin_token(i)).collect();
    let mut first: Vec<u32> = bins.clone();
    first.push(vocab::EOS);
    let mut class_tokens: Vec<u32> = (0..v.n_classes).map(|c| v.class_token(c)).collect();
    class_tokens.push(vocab::NOISE);

    let mut cache = KvCache::new(cfg, b, n + cfg.max_output_tokens(), dev)?;
    let mut all_tokens: Vec<Vec<u32>> = vec![vec![vocab::TASK_DETECT]; b];
    let task = Tensor::full(vocab::TASK_DETECT, (b, 1), dev)?;
    let h = if opts.no_cache {
        let mask = prefix_len(n + 1, n, dev)?;
        model.forward(Some(patches), Some(&task), Some(mask))?
    } else {
        let x = model.embed(Some(patches), Some(&task), 0)?;
        let mask = prefix_len(n + 1, n, dev)?;
        model.forward_embedded(&x, Some(mask), Some(&mut cache), None)?
    };
    let mut last = h.i((.., h.dim(1)? - 1, ..))?;
    let mut done = vec![false; b];
    let mut results: Vec<Vec<RawDetection>> = vec![vec![]; b];
    let mut current: Vec<[usize; 4]> = vec![[0; 4]; b];
    let mut coord_conf: Vec<[f32; 4]> = vec![[1.0; 4]; b];
    for step in 0..5 * max_objects {
        let logits = model.token_head.forward(&last)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let field = step % 5;
        let mut next = vec![vocab::EOS; b];
        for i in 0..b {
            if done[i] {
                continue;
            }
            let allowed: Vec<u32> = match field {
                0 if results[i].len() < opts.min_objects => bins.clone(),
                0 => first.clone(),
                // ymax below ymin / xmax left of xmin is impossible: only bins after the minimum.
                2 | 3 => bins[(current[i][field - 2] + 1).min(v.n_bins - 1)..].to_vec(),
                1 => bins.clone(),
                _ => class_tokens.clone(),
            };
            let (tok, probs) = choose(&logits[i], &allowed, opts.top_p, &mut rng);
            if tok == vocab::EOS {
                done[i] = true;
                continue;
            }
            if field < 4 {
                let bin = v.token_to_bin(tok).unwrap_or(0);
                current[i][field] = bin;
                // Coordinate confidence: the probability mass within one bin of the choice (soft targets spread it).
                let k = allowed.iter().position(|&t| t == tok).unwrap_or(0);
                let near: f32 = probs[k.saturating_sub(1)..(k + 2).min(probs.len())].iter().sum();
                coord_conf[i][field] = near;
            } else {
                let (best, p) = probs[..v.n_classes]
                    .iter()
                    .copied()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((0, 0.0));
                let [y0, x0, y1, x1] = current[i].map(|q| v.dequantize(q, size));
                let geometry = coord_conf[i].iter().product::<f32>().powf(0.25);
                // Class probability × how sure the model was of the box: ranks sloppy boxes below tight ones.
                let score = p * geometry;
                results[i].push(RawDetection { object: Object { xmin: x0, ymin: y0, xmax: x1, ymax: y1, class: best }, score });
            }
            next[i] = tok;
        }
        if done.iter().all(|&d| d) || step + 1 == 5 * max_objects {
            break;
        }
        for i in 0..b {
            all_tokens[i].push(next[i]);
        }
        if opts.no_cache {
            let l = all_tokens[0].len();
            let mask = prefix_len(n + l, n, dev)?;
            let x = embed_detect_sequence(model, patches, &all_tokens)?;
            let h = model.forward_embedded(&x, Some(mask), None, None)?;
            last = h.i((.., n + l - 1, ..))?;
        } else {
            let pos = all_tokens[0].len() - 1;
            let toks = Tensor::from_vec(next, (b, 1), dev)?;
            let mut x = model.embed(None, Some(&toks), pos)?;
            if cfg.box_query && pos % 5 == 4 {
                // The box just completed: its centre's code goes on the xmax token, as in training.
                let codes: Vec<f32> = (0..b).flat_map(|i| box_centre_code(cfg, current[i])).collect();
                x = (x + Tensor::from_vec(codes, (b, 1, cfg.dim), dev)?)?;
            }
            let h = model.forward_embedded(&x, None, Some(&mut cache), None)?;
            last = h.i((.., 0, ..))?;
        }
    }
    for r in results.iter_mut() {
        r.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    Ok(results)
}

pub fn iou(a: &Object, b: &Object) -> f32 {
    let iw = (a.xmax.min(b.xmax) - a.xmin.max(b.xmin)).max(0.0);
    let ih = (a.ymax.min(b.ymax) - a.ymin.max(b.ymin)).max(0.0);
    let inter = iw * ih;
    let union = a.area() + b.area() - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Class-wise non-maximum suppression on detections sorted best first.
pub fn nms(dets: Vec<RawDetection>, iou_threshold: f32) -> Vec<RawDetection> {
    let mut kept: Vec<RawDetection> = Vec::with_capacity(dets.len());
    for d in dets {
        if kept.iter().all(|k| k.object.class != d.object.class || iou(&k.object, &d.object) < iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

/// Weighted boxes fusion (Solovyev et al. 2021) of the detections of `views` predictions of one image (e.g. the
/// image and its mirror, mapped back to the same coordinates), each list sorted best first. Boxes of one class that
/// overlap a cluster's fused box by at least `iou_threshold` join it; a cluster's box is the score-weighted mean of
/// its members and its score their summed score over `views` (a box only one of two views found keeps half its score:
/// agreement ranks above a single view's guess). At most one box per view counts towards a cluster's score.
pub fn weighted_box_fusion(lists: &[Vec<RawDetection>], iou_threshold: f32) -> Vec<RawDetection> {
    let views = lists.len().max(1) as f32;
    let mut all: Vec<(usize, RawDetection)> = lists.iter().enumerate().flat_map(|(v, l)| l.iter().map(move |d| (v, *d))).collect();
    all.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    // Per cluster: the fused box, its members' views, and the running score-weighted coordinate sums.
    struct Cluster {
        fused: Object,
        views: Vec<usize>,
        score_sum: f32,
        weighted: [f32; 4],
    }
    let mut clusters: Vec<Cluster> = vec![];
    for (view, d) in all {
        let o = d.object;
        let home = clusters
            .iter_mut()
            .filter(|c| c.fused.class == o.class && !c.views.contains(&view))
            .map(|c| (iou(&c.fused, &o), c))
            .filter(|(v, _)| *v >= iou_threshold)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, c)| c);
        let c = match home {
            Some(c) => c,
            None => {
                clusters.push(Cluster { fused: o, views: vec![], score_sum: 0.0, weighted: [0.0; 4] });
                clusters.last_mut().expect("just pushed")
            }
        };
        c.views.push(view);
        c.score_sum += d.score;
        for (w, x) in c.weighted.iter_mut().zip([o.xmin, o.ymin, o.xmax, o.ymax]) {
            *w += d.score * x;
        }
        let s = c.score_sum.max(1e-12);
        let [x0, y0, x1, y1] = c.weighted.map(|w| w / s);
        c.fused = Object { xmin: x0, ymin: y0, xmax: x1, ymax: y1, class: o.class };
    }
    let mut fused: Vec<RawDetection> = clusters.into_iter().map(|c| RawDetection { object: c.fused, score: c.score_sum / views }).collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score));
    fused
}

/// Device-independent helper: a `[B, L]` u32 tensor from rows.
pub fn rows_u32(rows: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let l = rows.first().map_or(0, Vec::len);
    Tensor::from_vec(rows.iter().flatten().copied().collect::<Vec<_>>(), (rows.len(), l), device)
}

pub fn rows_f32(rows: &[Vec<f32>], device: &Device) -> Result<Tensor> {
    let l = rows.first().map_or(0, Vec::len);
    Tensor::from_vec(rows.iter().flatten().copied().collect::<Vec<_>>(), (rows.len(), l), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_box_fusion_averages_agreeing_views_and_halves_a_lone_box() {
        let d = |xmin: f32, xmax: f32, class: usize, score: f32| RawDetection { object: Object { xmin, ymin: 0.0, xmax, ymax: 10.0, class }, score };
        let view_a = vec![d(0.0, 10.0, 0, 0.8), d(11.0, 21.0, 0, 0.3)];
        // (2, 12) overlaps (0, 10) by 8 × 10 / 120 = 0.67; the class-1 box has no partner.
        let view_b = vec![d(0.0, 10.0, 1, 0.5), d(2.0, 12.0, 0, 0.4)];
        let fused = weighted_box_fusion(&[view_a, view_b], 0.3);
        assert_eq!(fused.len(), 3, "{fused:?}");
        // Score-weighted mean: xmin (0.8·0 + 0.4·2) / 1.2, xmax (0.8·10 + 0.4·12) / 1.2; score (0.8 + 0.4) / 2.
        let top = fused[0];
        assert!((top.object.xmin - 2.0 / 3.0).abs() < 1e-5 && (top.object.xmax - 32.0 / 3.0).abs() < 1e-5, "{top:?}");
        assert!((top.score - 0.6).abs() < 1e-6 && top.object.class == 0);
        assert_eq!((fused[1].object.class, fused[1].score), (1, 0.25));
        // Two boxes of one view never fuse with each other, however much they overlap the cluster.
        assert_eq!((fused[2].object.xmin, fused[2].score), (11.0, 0.15));
        let same_view = weighted_box_fusion(&[vec![d(0.0, 10.0, 0, 0.9), d(1.0, 10.0, 0, 0.5)]], 0.3);
        assert_eq!(same_view.len(), 2);
    }
    use crate::model::params::ParamStore;
    use rand::SeedableRng;

    /// Hand-computed dense targets: 64 px, 8 px patches (centres at 4, 12, 20, ...). A 20×12 box at the origin
    /// covers the centres x ∈ {4, 12, 20}, y ∈ {4, 12}; a smaller box inside it takes the patch it covers.
    #[test]
    fn dense_targets_by_hand() {
        let c = ModelConfig::preset("tiny").unwrap();
        assert_eq!((c.image_size, c.patch_size), (64, 8));
        let big = Object { xmin: 0.0, ymin: 0.0, xmax: 20.0, ymax: 12.0, class: 2 };
        let small = Object { xmin: 10.0, ymin: 0.0, xmax: 14.0, ymax: 6.0, class: 4 };
        let t = dense_targets(&c, &[big, small]);
        assert_eq!(t.len(), 64);
        let covered: Vec<usize> = (0..64).filter(|&i| t[i].is_some()).collect();
        assert_eq!(covered, vec![0, 1, 2, 8, 9, 10]);
        let (class, d) = t[0].unwrap();
        assert_eq!(class, 2);
        let want = [4.0 / 64.0, 4.0 / 64.0, 16.0 / 64.0, 8.0 / 64.0];
        assert!(d.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{d:?}");
        assert_eq!(t[1].unwrap().0, 4, "the smaller box covering a patch centre wins");
        assert_eq!(t[2].unwrap().0, 2);
        assert!(dense_targets(&c, &[]).iter().all(Option::is_none));
    }

    /// The patch-level auxiliary loss is the cross-entropy of the mean over patches of each patch's dense class
    /// logits, computed here by hand from the dense head's output (softmax over the class columns only).
    #[test]
    fn classification_patch_aux_is_the_cross_entropy_of_pooled_patch_logits() {
        let c = cfg();
        let mut p = ParamStore::init(3, &Device::Cpu);
        let m = Transformer::new(&c, &mut p).unwrap();
        let patches = Tensor::randn(0f32, 1.0, (2, c.n_patches(), c.patch_dim()), &Device::Cpu).unwrap();
        let labels = [2u32, 0];
        let label_t = Tensor::new(&labels, &Device::Cpu).unwrap();
        let plain = classify_loss(&m, &patches, &label_t).unwrap().to_scalar::<f32>().unwrap();
        let with = classify_loss_with_aux(&m, &patches, &label_t, 0.0, 0.5).unwrap().to_scalar::<f32>().unwrap();

        let (_, h_patches) = classify_forward(&m, &patches).unwrap();
        let dense = m.dense_head.forward(&h_patches).unwrap().to_vec3::<f32>().unwrap();
        let mut aux = 0.0f32;
        for (img, &label) in labels.iter().enumerate() {
            let pooled: Vec<f32> = (0..c.n_classes)
                .map(|k| dense[img].iter().map(|row| row[DENSE_BOX_OUTPUTS + 1 + k]).sum::<f32>() / c.n_patches() as f32)
                .collect();
            let log_sum = pooled.iter().map(|v| v.exp()).sum::<f32>().ln();
            aux += (log_sum - pooled[label as usize]) / labels.len() as f32;
        }
        assert!(aux > 0.5, "a fresh model's auxiliary loss is near ln(3): {aux}");
        assert!((with - (plain + 0.5 * aux)).abs() < 1e-4, "with aux {with}, plain {plain} + 0.5 × {aux}");
    }

    /// CutMix's targets: `keep` of the image's own label and the rest of its partner's, for the answer and the
    /// patch-level loss alike — the same as weighting the two single-label losses.
    #[test]
    fn mixed_classification_loss_weights_the_two_labels_by_area() {
        let c = cfg();
        let mut p = ParamStore::init(5, &Device::Cpu);
        let m = Transformer::new(&c, &mut p).unwrap();
        let patches = Tensor::randn(0f32, 1.0, (2, c.n_patches(), c.patch_dim()), &Device::Cpu).unwrap();
        let own = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
        let partner = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let value = |t: Result<Tensor>| t.unwrap().to_scalar::<f32>().unwrap();
        for aux in [0.0, 0.5] {
            let a = value(classify_loss_with_aux(&m, &patches, &own, 0.1, aux));
            let b = value(classify_loss_with_aux(&m, &patches, &partner, 0.1, aux));
            let mixed = value(classify_loss_mixed(&m, &patches, &own, Some((&partner, 0.7)), 0.1, aux));
            assert!((mixed - (0.7 * a + 0.3 * b)).abs() < 1e-5, "aux {aux}: {mixed} vs 0.7 × {a} + 0.3 × {b}");
            let unmixed = value(classify_loss_mixed(&m, &patches, &own, Some((&partner, 1.0)), 0.1, aux));
            assert!((unmixed - a).abs() < 1e-6);
        }
    }

    /// Pseudo-labels are the model's own answers (the argmax of its class logits), given only where its probability
    /// reaches the threshold.
    #[test]
    fn pseudo_labels_are_the_confident_answers() {
        let c = cfg();
        let mut p = ParamStore::init(7, &Device::Cpu);
        let m = Transformer::new(&c, &mut p).unwrap();
        let patches = Tensor::randn(0f32, 1.0, (6, c.n_patches(), c.patch_dim()), &Device::Cpu).unwrap();
        let probs = candle_nn::ops::softmax_last_dim(&classify_logits(&m, &patches).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let best: Vec<(u32, f32)> = probs
            .iter()
            .map(|row| row.iter().enumerate().fold((0u32, f32::MIN), |acc, (i, &p)| if p > acc.1 { (i as u32, p) } else { acc }))
            .collect();
        let all = confident_classes(&m, &patches, 0.0).unwrap();
        assert_eq!(all, best.iter().map(|&(c, _)| Some(c)).collect::<Vec<_>>());
        assert!(confident_classes(&m, &patches, 1.01).unwrap().iter().all(Option::is_none));
        // A threshold between the least and the most sure image keeps exactly those at or above it.
        let mut sure: Vec<f32> = best.iter().map(|&(_, p)| p).collect();
        sure.sort_by(f32::total_cmp);
        let threshold = sure[3] as f64;
        let some = confident_classes(&m, &patches, threshold).unwrap();
        for (got, &(class, prob)) in some.iter().zip(&best) {
            assert_eq!(*got, (prob as f64 >= threshold).then_some(class), "probability {prob}, threshold {threshold}");
        }
        assert_eq!(some.iter().filter(|g| g.is_some()).count(), 3);
    }

    /// The pooled target by hand: 8 px, 1 channel, 4 px patches; each target value is the mean of a 2×2 block of
    /// the patch, then the patch is normalised.
    #[test]
    fn pooled_pretraining_target_averages_2x2_blocks() {
        let c = ModelConfig { image_size: 8, patch_size: 4, channels: 1, pretrain_target: PretrainTarget::Pooled, ..cfg() };
        assert_eq!(c.pixel_target_dim(), 4);
        let values: Vec<f32> = (0..4 * 16).map(|i| ((i * 37) % 11) as f32).collect();
        let patches = Tensor::from_vec(values.clone(), (1, 4, 16), &Device::Cpu).unwrap();
        let got = pretrain_targets(&c, &patches).unwrap();
        let mut pooled = Vec::new();
        for p in 0..4 {
            for (by, bx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let at = |y: usize, x: usize| values[p * 16 + (2 * by + y) * 4 + 2 * bx + x];
                pooled.push((at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0);
            }
        }
        let want = normalize_patches(&Tensor::from_vec(pooled, (1, 4, 4), &Device::Cpu).unwrap()).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-5);
        assert!(max_abs_diff(&pretrain_targets(&ModelConfig { pretrain_target: PretrainTarget::Pixels, ..c }, &patches).unwrap(), &normalize_patches(&patches).unwrap()) < 1e-6);
    }

    /// A pooled prediction spread over its 2×2 blocks pools back to itself.
    #[test]
    fn pooled_predictions_spread_over_their_blocks() {
        let cfg = ModelConfig { pretrain_target: PretrainTarget::Pooled, ..ModelConfig::preset("tiny").unwrap().with_image_size(32) };
        let pred = Tensor::randn(0f32, 1.0, (2, cfg.n_patches(), cfg.pixel_target_dim()), &Device::Cpu).unwrap();
        let full = full_resolution_patches(&cfg, &pred).unwrap();
        assert_eq!(full.dims(), &[2, cfg.n_patches(), cfg.patch_dim()]);
        let pooled_again = pretrain_targets(&cfg, &full).unwrap();
        let want = normalize_patches(&pred).unwrap();
        let diff = (pooled_again - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{diff}");
    }

    /// The blur keeps a flat image flat up to its borders (the renormalisation), and spreads a point symmetrically.
    #[test]
    fn gaussian_blur_keeps_flat_images_and_spreads_points_evenly() {
        let flat = Tensor::full(0.7f32, (1, 3, 8, 8), &Device::Cpu).unwrap();
        assert!(max_abs_diff(&gaussian_blur(&flat, 1.0).unwrap(), &flat) < 1e-5);
        let mut point = vec![0f32; 81];
        point[4 * 9 + 4] = 1.0;
        let out = gaussian_blur(&Tensor::from_vec(point, (1, 1, 9, 9), &Device::Cpu).unwrap(), 1.0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let at = |y: usize, x: usize| out[y * 9 + x];
        assert!(at(4, 4) > at(4, 5) && at(4, 5) > at(4, 6) && at(4, 6) > 0.0);
        for (a, b) in [(at(4, 3), at(4, 5)), (at(3, 4), at(5, 4)), (at(3, 3), at(5, 5))] {
            assert!((a - b).abs() < 1e-6);
        }
        assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-4, "away from the border the blur keeps the total");
        assert_eq!(at(0, 0), 0.0, "taps reach 2 sigma, not further");
    }

    /// The pixel head predicts as many values per patch as the target has: a quarter for the pooled one.
    #[test]
    fn smoothed_targets_size_the_pixel_head() {
        for target in [PretrainTarget::Pooled, PretrainTarget::Blurred] {
            let c = ModelConfig { pretrain_target: target, ..cfg() };
            let model = Transformer::new(&c, &mut ParamStore::init(3, &Device::Cpu)).unwrap();
            let patches = Tensor::randn(0f32, 1.0, (2, c.n_patches(), c.patch_dim()), &Device::Cpu).unwrap();
            let pred = predict_next_patches(&model, &patches, 1).unwrap();
            assert_eq!(pred.dims(), &[2, c.n_patches(), c.pixel_target_dim()]);
            let loss = pretrain_loss(&model, &patches, 5).unwrap().to_scalar::<f32>().unwrap();
            assert!(loss.is_finite() && loss > 0.5, "{target:?}: {loss}");
        }
    }

    /// Masked image modelling: a blanked patch's pixels reach no prediction (not through attention, the stem's
    /// windows or local mixing), while a visible patch informs the blanked ones on every side of it.
    #[test]
    fn masked_patches_leak_nothing_and_visible_ones_inform_both_ways() {
        let c = ModelConfig { stem_channels: 4, local_mixing: true, local_mixing_full: true, pretrain_mask_ratio: 0.5, ..cfg() };
        let model = Transformer::new(&c, &mut ParamStore::init(5, &Device::Cpu)).unwrap();
        let n = c.n_patches();
        let patches = Tensor::randn(0f32, 1.0, (1, n, c.patch_dim()), &Device::Cpu).unwrap();
        let (hidden, visible) = (n / 2, n / 2 + 1);
        let mut mask = vec![1f32; n];
        mask[visible] = 0.0;
        let masked = Tensor::from_vec(mask, (1, n), &Device::Cpu).unwrap();
        let changed = |i: usize| {
            let bump = Tensor::ones((1, 1, c.patch_dim()), DType::F32, &Device::Cpu).unwrap();
            patches.slice_assign(&[0..1, i..i + 1, 0..c.patch_dim()], &(patches.narrow(1, i, 1).unwrap() + bump).unwrap()).unwrap()
        };
        let base = masked_predictions(&model, &patches, &masked).unwrap();
        assert_eq!(base.dims(), &[1, n, c.pixel_target_dim()]);
        assert!(max_abs_diff(&masked_predictions(&model, &changed(hidden), &masked).unwrap(), &base) < 1e-6, "a blanked patch leaked");
        let after = masked_predictions(&model, &changed(visible), &masked).unwrap();
        for i in [0, hidden, n - 1] {
            assert!(max_abs_diff(&after.narrow(1, i, 1).unwrap(), &base.narrow(1, i, 1).unwrap()) > 1e-4, "patch {i} did not see the visible one");
        }
    }

    /// The loss averages the per-patch MSE over the masked patches only; the mask blanks the asked share.
    #[test]
    fn masked_loss_counts_only_masked_patches_and_masks_the_asked_share() {
        let c = ModelConfig { pretrain_mask_ratio: 0.75, ..cfg() };
        let model = Transformer::new(&c, &mut ParamStore::init(6, &Device::Cpu)).unwrap();
        let n = c.n_patches();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let masked = random_patch_mask(3, n, 0.75, &mut rng, &Device::Cpu).unwrap();
        let rows = masked.to_vec2::<f32>().unwrap();
        assert!(rows.iter().all(|r| r.iter().sum::<f32>() == (0.75 * n as f32).round()));
        assert_ne!(rows[0], rows[1], "each image gets its own draw");
        assert_eq!(random_patch_mask(1, n, 0.001, &mut rng, &Device::Cpu).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 1.0);
        let patches = Tensor::randn(0f32, 1.0, (3, n, c.patch_dim()), &Device::Cpu).unwrap();
        let per_patch = (masked_predictions(&model, &patches, &masked).unwrap() - pretrain_targets(&c, &patches).unwrap()).unwrap().sqr().unwrap().mean(D::Minus1).unwrap().to_vec2::<f32>().unwrap();
        let (mut sum, mut count) = (0f32, 0f32);
        for (errs, mask) in per_patch.iter().zip(&rows) {
            for (e, m) in errs.iter().zip(mask) {
                if *m == 1.0 {
                    sum += e;
                    count += 1.0;
                }
            }
        }
        let loss = masked_pretrain_loss(&model, &patches, &masked).unwrap().to_scalar::<f32>().unwrap();
        assert!((loss - sum / count).abs() < 1e-5, "{loss} vs {}", sum / count);
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn cfg() -> ModelConfig {
        let mut c = ModelConfig::preset("tiny").unwrap().with_image_size(32);
        c.n_layers = 2;
        c.dim = 32;
        c.n_classes = 3;
        c.max_objects = 4;
        c
    }

    #[test]
    fn detect_sequence_layout() {
        let c = cfg();
        let v = c.vocab();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let objs = [Object { xmin: 1.0, ymin: 2.0, xmax: 10.0, ymax: 20.0, class: 2 }];
        let s = detect_sequence(&c, &objs, NoiseBoxes::Fill, &mut rng);
        assert_eq!(s.input.len(), c.max_output_tokens() - 1);
        assert_eq!(s.input[0], vocab::TASK_DETECT);
        assert_eq!(s.target[4], v.class_token(2));
        assert_eq!(s.target[0], v.bin_token(v.quantize(2.0, 32.0)));
        // Noise objects: coordinates unweighted, class NOISE weighted; EOS last.
        assert_eq!(s.target[9], vocab::NOISE);
        assert_eq!((s.weight[5], s.weight[9]), (0.0, 1.0));
        assert_eq!(*s.target.last().unwrap(), vocab::EOS);
        let plain = detect_sequence(&c, &objs, NoiseBoxes::None, &mut rng);
        assert_eq!(plain.target[5], vocab::EOS);
        assert_eq!(plain.weight[5], 1.0);
        assert_eq!(plain.weight[6], 0.0);
    }

    #[test]
    fn matched_noise_gives_as_many_fake_boxes_as_real_ones() {
        let c = ModelConfig { max_objects: 6, ..cfg() };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let o = |x: f32| Object { xmin: x, ymin: 2.0, xmax: x + 5.0, ymax: 9.0, class: 0 };
        let noise_count = |s: &DetectSequence| s.target.iter().filter(|&&t| t == vocab::NOISE).count();
        // Two real objects: two noise boxes, then EOS; the rest is padding without loss.
        let s = detect_sequence(&c, &[o(1.0), o(10.0)], NoiseBoxes::Match, &mut rng);
        assert_eq!(noise_count(&s), 2);
        assert_eq!(s.used_len(), 4 * 5 + 1);
        assert_eq!(s.target[s.used_len() - 1], vocab::EOS);
        assert_eq!(s.input.len(), c.max_output_tokens() - 1);
        // Never past max_objects; an empty image still gets one.
        assert_eq!(noise_count(&detect_sequence(&c, &[o(1.0); 5], NoiseBoxes::Match, &mut rng)), 1);
        assert_eq!(noise_count(&detect_sequence(&c, &[], NoiseBoxes::Match, &mut rng)), 1);
        let fill = detect_sequence(&c, &[o(1.0), o(10.0)], NoiseBoxes::Fill, &mut rng);
        assert_eq!((noise_count(&fill), fill.used_len()), (4, 6 * 5 + 1));
    }

    #[test]
    fn raster_order_lists_objects_top_to_bottom_then_left_to_right() {
        let c = cfg();
        let v = c.vocab();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let o = |x: f32, y: f32, class| Object { xmin: x, ymin: y, xmax: x + 4.0, ymax: y + 4.0, class };
        let objs = [o(20.0, 10.0, 0), o(2.0, 10.0, 1), o(5.0, 1.0, 2)];
        for _ in 0..5 {
            let s = detect_sequence_ordered(&c, &objs, NoiseBoxes::Fill, false, &mut rng);
            let classes: Vec<u32> = [4, 9, 14].iter().map(|&i| s.target[i]).collect();
            assert_eq!(classes, vec![v.class_token(2), v.class_token(1), v.class_token(0)]);
        }
    }

    #[test]
    fn cached_decoding_gives_the_same_boxes_as_recomputation() {
        let c = cfg();
        let mut p = ParamStore::init(3, &Device::Cpu);
        let m = Transformer::new(&c, &mut p).unwrap();
        let patches = Tensor::randn(0f32, 1.0, (2, c.n_patches(), c.patch_dim()), &Device::Cpu).unwrap();
        let mut opts = DecodeOptions { max_objects: 4, min_objects: 0, top_p: None, seed: 0, no_cache: false };
        let cached = detect_decode(&m, &patches, &opts).unwrap();
        opts.no_cache = true;
        let full = detect_decode(&m, &patches, &opts).unwrap();
        assert_eq!(cached.len(), 2);
        for (a, b) in cached.iter().zip(&full) {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x.object, y.object);
                assert!((x.score - y.score).abs() < 1e-4);
            }
        }
    }

    /// The query added for the class token must be the code the patch under the box centre carries, or attention
    /// cannot match one to the other.
    #[test]
    fn box_centre_code_is_the_code_of_the_patch_under_the_centre() {
        let c = ModelConfig::preset("tiny").unwrap();
        let v = c.vocab();
        let bin = |px: f32| v.quantize(px, c.image_size as f32);
        // A box from pixel 12 to 28 on both axes is centred on pixel 20, the middle of patch row/column 2 (pixels
        // 16..24); 2-pixel bins shift it by up to a pixel, a tenth of a patch.
        let code = box_centre_code(&c, [bin(12.0), bin(12.0), bin(28.0), bin(28.0)]);
        let patch = crate::model::transformer::sincos_2d(2, 2, c.dim);
        let err: f32 = code.iter().zip(&patch).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 0.15, "max difference {err}");
        // And only on xmax tokens whose four coordinates are bins.
        let rows = vec![vec![vocab::TASK_DETECT, v.bin_token(3), v.bin_token(3), v.bin_token(9), v.bin_token(9), v.class_token(0)]];
        let codes = box_centre_codes(&c, &rows, 0);
        let at = |j: usize| &codes[j * c.dim..(j + 1) * c.dim];
        assert!(at(4).iter().any(|&x| x != 0.0));
        for j in [0, 1, 2, 3, 5] {
            assert!(at(j).iter().all(|&x| x == 0.0), "position {j}");
        }
    }

    #[test]
    fn nms_drops_overlapping_same_class_only() {
        let o = |x: f32, class| RawDetection { object: Object { xmin: x, ymin: 0.0, xmax: x + 10.0, ymax: 10.0, class }, score: 1.0 };
        let kept = nms(vec![o(0.0, 0), o(1.0, 0), o(1.0, 1), o(30.0, 0)], 0.5);
        assert_eq!(kept.len(), 3);
    }

    /// Next-patch prediction's feature target: the teacher sees every patch both ways (the last patch changes the
    /// first one's features), each patch's target is normalised, and the loss adds the weight times the feature
    /// head's MSE at the pixel head's positions; its gradient reaches the feature head and none of the teacher.
    #[test]
    fn feature_target_sees_the_whole_image_and_adds_a_weighted_loss() {
        let c = ModelConfig { pretrain_feature_weight: 0.5, ..cfg() };
        let mut teacher_store = ParamStore::init(7, &Device::Cpu);
        let teacher = Transformer::new(&c, &mut teacher_store).unwrap();
        let mut student_store = ParamStore::init(8, &Device::Cpu);
        let student = Transformer::new(&c, &mut student_store).unwrap();
        let n = c.n_patches();
        let patches = Tensor::randn(0f32, 1.0, (2, n, c.patch_dim()), &Device::Cpu).unwrap();
        let features = teacher_features(&teacher, &patches).unwrap();
        assert_eq!(features.dims(), &[2, n, c.dim]);
        let mean = features.mean(D::Minus1).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let var = features.sqr().unwrap().mean(D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(mean < 1e-4 && var.iter().all(|v| (v - 1.0).abs() < 1e-3), "mean {mean}, variances {var:?}");
        let new_last = Tensor::randn(0f32, 1.0, (2, 1, c.patch_dim()), &Device::Cpu).unwrap();
        let changed = Tensor::cat(&[&patches.narrow(1, 0, n - 1).unwrap(), &new_last], 1).unwrap();
        let first = |f: &Tensor| f.narrow(1, 0, 1).unwrap();
        assert!(max_abs_diff(&first(&teacher_features(&teacher, &changed).unwrap()), &first(&features)) > 1e-3);

        let prefix = 5;
        let loss = pretrain_loss_with_features(&student, &patches, prefix, Some(&features)).unwrap();
        let pixels_only = pretrain_loss(&student, &patches, prefix).unwrap().to_scalar::<f32>().unwrap();
        let h = student.forward(Some(&patches), None, Some(prefix_len(n, prefix, &Device::Cpu).unwrap())).unwrap();
        let pred = student.feature_head.as_ref().unwrap().forward(&h.narrow(1, prefix - 1, n - prefix).unwrap()).unwrap();
        let by_hand = (pred - features.narrow(1, prefix, n - prefix).unwrap()).unwrap().sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
        let total = loss.to_scalar::<f32>().unwrap();
        assert!(by_hand > 0.1 && (total - (pixels_only + 0.5 * by_hand)).abs() < 1e-5, "{total} vs {pixels_only} + 0.5 × {by_hand}");
        let grads = loss.backward().unwrap();
        let head = student_store.vars.iter().find(|(n, _)| n.starts_with("feature_head.")).unwrap();
        assert!(grads.get(&head.1).is_some());
        assert!(teacher_store.vars.iter().all(|(_, v)| grads.get(v).is_none()), "no gradient reaches the teacher");

        // Without the weight there is no feature head, and the features are ignored.
        let plain = Transformer::new(&cfg(), &mut ParamStore::init(8, &Device::Cpu)).unwrap();
        assert!(plain.feature_head.is_none());
        let a = pretrain_loss_with_features(&plain, &patches, prefix, Some(&features)).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(a, pretrain_loss(&plain, &patches, prefix).unwrap().to_scalar::<f32>().unwrap());
    }
}

#[cfg(test)]
mod learning_tests {
    use super::*;
    use crate::model::params::ParamStore;
    use crate::train::optim::{collect_grads, AdamW};

    /// The whole stack (fused ops, gradients, optimizer) can memorise one batch.
    #[test]
    fn overfits_one_batch() {
        let mut c = ModelConfig::preset("tiny").unwrap().with_image_size(32);
        c.n_classes = 4;
        c.n_layers = 2;
        let mut p = ParamStore::init(1, &Device::Cpu);
        let m = Transformer::new(&c, &mut p).unwrap();
        let vars = p.vars;
        let mut opt = AdamW::new(&vars, 0.0).unwrap();
        let patches = Tensor::randn(0f32, 1.0, (8, c.n_patches(), c.patch_dim()), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1, 2, 3, 3, 2, 1, 0], &Device::Cpu).unwrap();
        let mut first = 0.0;
        let mut last = 0.0;
        for i in 0..60 {
            let loss = classify_loss(&m, &patches, &labels).unwrap();
            last = loss.to_scalar::<f32>().unwrap();
            if i == 0 {
                first = last;
            }
            opt.step(&collect_grads(&loss.backward().unwrap(), &vars), 1e-3, 1.0).unwrap();
        }
        assert!(last < 0.05 * first, "loss {first} -> {last}");
    }
}

#[cfg(test)]
mod gradient_tests {
    use super::*;
    use crate::model::params::ParamStore;

    /// Backward pass of the whole model (fused kernels included) against finite differences.
    #[test]
    fn gradients_match_finite_differences() {
        let mut c = ModelConfig::preset("tiny").unwrap().with_image_size(16);
        c.n_classes = 3;
        c.n_layers = 2;
        c.dim = 32;
        let mut p = ParamStore::init(1, &Device::Cpu);
        let m = Transformer::new(&c, &mut p).unwrap();
        let vars = p.vars;
        let patches = Tensor::randn(0f32, 1.0, (3, c.n_patches(), c.patch_dim()), &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
        let loss = |m: &Transformer| classify_loss(m, &patches, &labels).unwrap().to_scalar::<f32>().unwrap() as f64;
        let grads = classify_loss(&m, &patches, &labels).unwrap().backward().unwrap();
        for name in ["patch_embed.weight", "patch_pos", "blocks.0.attn.qkv.weight", "blocks.1.norm1.weight", "blocks.0.mlp.fc1.weight", "token_embed"] {
            let (_, var) = vars.iter().find(|(n, _)| n == name).unwrap();
            let g = grads.get(var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let base = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // The largest-gradient element, for a measurable finite difference.
            let (i, gi) = g.iter().copied().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
            let eps = 1e-2f32;
            let mut plus = base.clone();
            plus[i] += eps;
            var.set(&Tensor::from_vec(plus, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let lp = loss(&m);
            let mut minus = base.clone();
            minus[i] -= eps;
            var.set(&Tensor::from_vec(minus, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let lm = loss(&m);
            var.set(&Tensor::from_vec(base, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let numeric = (lp - lm) / (2.0 * eps as f64);
            assert!(
                (numeric - gi as f64).abs() <= 0.05 * numeric.abs().max(1e-3),
                "{name}[{i}]: backward {gi}, finite difference {numeric}"
            );
        }
    }
}
