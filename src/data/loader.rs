//! The loader that feeds the trainer: decode, fit to the model input (letterbox for detection, stretch for
//! classification), augment, normalise and batch into Candle tensors, on background threads with a bounded
//! prefetch queue so training never waits on image decoding.
//!
//! Determinism: the order of an epoch comes from (seed, epoch) and each image's augmentation from
//! (seed, epoch, image index), never from thread timing, so the same seed and epoch give the same batches
//! with any number of workers, with or without the cache.
//!
//! Bad images are skipped and reported through [`Loader::skipped`] (name and reason), never a panic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::augment::{augment, clip_visible, AugmentConfig, PAD_VALUE};
use super::decode::load_image;
use super::project::{BBox, Project, Task};

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("invalid loader configuration: {0}")]
    Config(String),
    #[error("{name}: {reason}")]
    Image { name: String, reason: String },
    #[error("building a batch tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Per-channel normalisation, in units of pixel value / 255: `x = (v / 255 - mean) / std`.
/// Stored in checkpoints so that inference normalises exactly like training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Normalization {
    /// The ImageNet statistics: a fine default for photos when a dataset's own are not computed.
    fn default() -> Self {
        Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }
    }
}

impl Normalization {
    /// Per-channel mean and standard deviation over up to `max_images` images of `indices` (evenly spaced,
    /// so the estimate does not depend on thread timing). Images are downscaled to at most 64 px first, which
    /// changes the statistics negligibly and makes this fast. Undecodable images are ignored; if none decodes,
    /// the default is returned.
    pub fn from_images(project: &Project, indices: &[usize], max_images: usize) -> Normalization {
        let n = indices.len().min(max_images.max(1));
        if n == 0 {
            return Normalization::default();
        }
        let picked: Vec<usize> = (0..n).map(|k| indices[k * indices.len() / n]).collect();
        let sums: Vec<[f64; 7]> = picked
            .par_iter()
            .filter_map(|&i| {
                let img = load_image(&project.source_of(i)).ok()?;
                let small = downscale_to(&img.into_rgb8(), 64);
                let mut s = [0f64; 7];
                for p in small.pixels() {
                    for c in 0..3 {
                        let v = p[c] as f64 / 255.0;
                        s[c] += v;
                        s[3 + c] += v * v;
                    }
                    s[6] += 1.0;
                }
                Some(s)
            })
            .collect();
        let mut t = [0f64; 7];
        for s in sums {
            for k in 0..7 {
                t[k] += s[k];
            }
        }
        if t[6] == 0.0 {
            return Normalization::default();
        }
        let mean = [0, 1, 2].map(|c| t[c] / t[6]);
        // A constant channel (e.g. grey images) would give std 0; the floor keeps values finite.
        let std = [0, 1, 2].map(|c| ((t[3 + c] / t[6] - mean[c] * mean[c]).max(0.0).sqrt() as f32).max(0.02));
        Normalization { mean: mean.map(|m| m as f32), std }
    }

    /// Appends `img` normalised, channel-major ([3, H, W]), to `out`.
    pub fn push_chw(&self, img: &RgbImage, out: &mut Vec<f32>) {
        let raw = img.as_raw();
        for c in 0..3 {
            let (scale, offset) = (1.0 / (255.0 * self.std[c]), -self.mean[c] / self.std[c]);
            out.extend(raw.iter().skip(c).step_by(3).map(|&v| v as f32 * scale + offset));
        }
    }

    /// Inverse of [`Normalization::push_chw`] for one [3, H, W] buffer: back to an RGB image (for showing
    /// what the model sees).
    pub fn to_rgb(&self, chw: &[f32], w: u32, h: u32) -> RgbImage {
        let plane = (w * h) as usize;
        RgbImage::from_fn(w, h, |x, y| {
            let i = (y * w + x) as usize;
            image::Rgb([0, 1, 2].map(|c| ((chw[c * plane + i] * self.std[c] + self.mean[c]) * 255.0).round().clamp(0.0, 255.0) as u8))
        })
    }
}

/// How an image is fitted to the square model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Keep the aspect ratio, pad with grey bars (detection: boxes keep their shape).
    #[default]
    Letterbox,
    /// Resize each axis independently (classification: no wasted pixels).
    Stretch,
}

impl Fit {
    pub fn for_task(task: Task) -> Fit {
        match task {
            Task::Detect => Fit::Letterbox,
            Task::Classify => Fit::Stretch,
        }
    }
}

/// The mapping between original image pixels and model-input pixels: `input = original * scale + pad`.
/// `scale` is the horizontal scale and `scale_y` the vertical one; they are equal (up to rounding of the
/// resized size) for [`Fit::Letterbox`] and differ for [`Fit::Stretch`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Letterbox {
    pub scale: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub orig_w: u32,
    pub orig_h: u32,
}

impl Letterbox {
    /// The mapping for an `orig_w` x `orig_h` image fitted into a `size` x `size` input, and the size of the
    /// resized image before padding.
    pub fn compute(orig_w: u32, orig_h: u32, size: u32, fit: Fit) -> (Letterbox, u32, u32) {
        let (w, h) = (orig_w.max(1), orig_h.max(1));
        let (new_w, new_h) = match fit {
            Fit::Stretch => (size, size),
            Fit::Letterbox => {
                let s = size as f64 / w.max(h) as f64;
                (((w as f64 * s).round() as u32).clamp(1, size), ((h as f64 * s).round() as u32).clamp(1, size))
            }
        };
        let lb = Letterbox {
            scale: new_w as f32 / w as f32,
            scale_y: new_h as f32 / h as f32,
            pad_x: ((size - new_w) / 2) as f32,
            pad_y: ((size - new_h) / 2) as f32,
            orig_w: w,
            orig_h: h,
        };
        (lb, new_w, new_h)
    }

    /// The trainer's letterbox ([`crate::train::data`], so every checkpoint's): one scale for both axes,
    /// `size / longer side`, and the resized size that scale times the original, rounded. Unlike
    /// [`Letterbox::compute`] it does not re-derive each axis' scale from the rounded size (they differ by under half
    /// an input pixel on the short side); checkpoints were trained with this mapping, so it stays.
    pub fn uniform(orig_w: u32, orig_h: u32, size: usize) -> (Letterbox, u32, u32) {
        let scale = size as f32 / orig_w.max(orig_h).max(1) as f32;
        let resized = |n: u32| ((n as f32 * scale).round() as usize).clamp(1, size);
        let (new_w, new_h) = (resized(orig_w), resized(orig_h));
        let lb = Letterbox {
            scale,
            scale_y: scale,
            pad_x: ((size - new_w) / 2) as f32,
            pad_y: ((size - new_h) / 2) as f32,
            orig_w,
            orig_h,
        };
        (lb, new_w as u32, new_h as u32)
    }

    /// Original pixels -> model-input pixels.
    pub fn point_to_input(&self, x: f32, y: f32) -> (f32, f32) {
        (x * self.scale + self.pad_x, y * self.scale_y + self.pad_y)
    }

    /// Model-input pixels -> original pixels (not clipped).
    pub fn point_to_original(&self, x: f32, y: f32) -> (f32, f32) {
        ((x - self.pad_x) / self.scale, (y - self.pad_y) / self.scale_y)
    }

    /// A label box in original pixels -> model-input pixels.
    pub fn box_to_input(&self, b: &BBox) -> BBox {
        let (xmin, ymin) = self.point_to_input(b.xmin, b.ymin);
        let (xmax, ymax) = self.point_to_input(b.xmax, b.ymax);
        BBox { xmin, ymin, xmax, ymax, class: b.class }
    }

    /// A predicted box in model-input pixels -> original pixels, clipped to the original image (a box over a
    /// letterbox bar is cut at the image edge).
    pub fn box_to_original(&self, b: &BBox) -> BBox {
        let (xmin, ymin) = self.point_to_original(b.xmin, b.ymin);
        let (xmax, ymax) = self.point_to_original(b.xmax, b.ymax);
        let (w, h) = (self.orig_w as f32, self.orig_h as f32);
        BBox {
            xmin: xmin.clamp(0.0, w),
            ymin: ymin.clamp(0.0, h),
            xmax: xmax.clamp(0.0, w),
            ymax: ymax.clamp(0.0, h),
            class: b.class,
        }
    }
}

/// Area-averaging downscale (alias-free) or bilinear upscale.
fn resize_rgb(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        img.clone()
    } else if w <= img.width() && h <= img.height() {
        area_downscale(img, w, h)
    } else {
        image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)
    }
}

/// For each output index: the first source index it covers and the weights of the source pixels it covers
/// (fractional at the ends, summing to 1).
fn area_weights(n_src: u32, n_out: u32) -> Vec<(usize, Vec<f32>)> {
    let scale = n_src as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let (a, b) = (o as f64 * scale, (o + 1) as f64 * scale);
            let start = a.floor() as usize;
            let end = (b.ceil() as usize).min(n_src as usize);
            let weights = (start..end).map(|s| (((s + 1) as f64).min(b) - (s as f64).max(a)) / scale).map(|w| w as f32).collect();
            (start, weights)
        })
        .collect()
}

/// Downscales by averaging the source area under each output pixel (a box filter with exact fractional
/// coverage). Separable, so it costs about one multiply-add per source value: 2-3x faster than
/// `image::imageops::thumbnail` on camera-sized images, with the same alias-free result.
pub fn area_downscale(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (sw, sh) = src.dimensions();
    let (w, h) = (w.clamp(1, sw.max(1)), h.clamp(1, sh.max(1)));
    let (wx, wy) = (area_weights(sw, w), area_weights(sh, h));
    let (sw, w3) = (sw as usize, w as usize * 3);
    let raw = src.as_raw();
    // Horizontal pass, only over the source rows the vertical pass reads (all of them when downscaling).
    let mut tmp = vec![0f32; sh as usize * w3];
    for (row, out) in raw.chunks_exact(sw * 3).zip(tmp.chunks_exact_mut(w3)) {
        for ((start, weights), px) in wx.iter().zip(out.chunks_exact_mut(3)) {
            let mut acc = [0f32; 3];
            for (k, &wt) in weights.iter().enumerate() {
                let p = (start + k) * 3;
                acc[0] += row[p] as f32 * wt;
                acc[1] += row[p + 1] as f32 * wt;
                acc[2] += row[p + 2] as f32 * wt;
            }
            px.copy_from_slice(&acc);
        }
    }
    let mut out = vec![0u8; h as usize * w3];
    let mut acc = vec![0f32; w3];
    for ((start, weights), dst) in wy.iter().zip(out.chunks_exact_mut(w3)) {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &wt) in weights.iter().enumerate() {
            let r = &tmp[(start + k) * w3..(start + k + 1) * w3];
            for (a, v) in acc.iter_mut().zip(r) {
                *a += v * wt;
            }
        }
        for (d, a) in dst.iter_mut().zip(&acc) {
            *d = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    RgbImage::from_raw(w, h, out).expect("buffer size matches")
}

fn downscale_to(img: &RgbImage, max_side: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w.max(h) <= max_side {
        return img.clone();
    }
    let s = max_side as f32 / w.max(h) as f32;
    resize_rgb(img, ((w as f32 * s).round() as u32).max(1), ((h as f32 * s).round() as u32).max(1))
}

/// Fits an RGB image into a `size` x `size` input.
pub fn fit_rgb(img: &RgbImage, size: u32, fit: Fit) -> (RgbImage, Letterbox) {
    let (lb, new_w, new_h) = Letterbox::compute(img.width(), img.height(), size, fit);
    let resized = resize_rgb(img, new_w, new_h);
    if (new_w, new_h) == (size, size) {
        return (resized, lb);
    }
    let mut canvas = RgbImage::from_pixel(size, size, image::Rgb(PAD_VALUE));
    image::imageops::replace(&mut canvas, &resized, lb.pad_x as i64, lb.pad_y as i64);
    (canvas, lb)
}

/// Resizes keeping the aspect ratio and pads to a `size` x `size` square with grey bars.
pub fn letterbox(img: &DynamicImage, size: usize) -> (RgbImage, Letterbox) {
    fit_image(img, size, Fit::Letterbox)
}

/// Fits any image to the model input.
pub fn fit_image(img: &DynamicImage, size: usize, fit: Fit) -> (RgbImage, Letterbox) {
    match img {
        DynamicImage::ImageRgb8(rgb) => fit_rgb(rgb, size as u32, fit),
        other => fit_rgb(&other.to_rgb8(), size as u32, fit),
    }
}

/// Inference-time preprocessing of one image: fit, normalise, to a `[3, size, size]` f32 tensor on `device`.
/// The returned [`Letterbox`] maps predicted boxes back with [`Letterbox::box_to_original`].
pub fn preprocess(
    img: &DynamicImage,
    size: usize,
    fit: Fit,
    norm: &Normalization,
    device: &Device,
) -> candle_core::Result<(Tensor, Letterbox)> {
    let (rgb, lb) = fit_image(img, size, fit);
    let mut data = Vec::with_capacity(3 * size * size);
    norm.push_chw(&rgb, &mut data);
    Ok((Tensor::from_vec(data, (3, size, size), device)?, lb))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    /// Side of the square model input in pixels.
    pub image_size: usize,
    pub batch_size: usize,
    pub fit: Fit,
    pub augment: AugmentConfig,
    pub normalization: Normalization,
    pub shuffle: bool,
    pub seed: u64,
    /// Background threads decoding and augmenting.
    pub workers: usize,
    /// Batches prepared ahead of the consumer (bounded queue length).
    pub prefetch: usize,
    /// Keep the fitted (pre-augmentation) images in memory after the first epoch.
    pub cache: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            image_size: 64,
            batch_size: 32,
            fit: Fit::Letterbox,
            augment: AugmentConfig::none(),
            normalization: Normalization::default(),
            shuffle: false,
            seed: 0,
            workers: default_workers(),
            prefetch: 4,
            cache: true,
            drop_last: false,
        }
    }
}

impl LoaderConfig {
    /// Training defaults for `task`: the task's fit and augmentations, shuffled, last partial batch dropped.
    pub fn training(task: Task, image_size: usize, batch_size: usize, seed: u64) -> Self {
        LoaderConfig {
            image_size,
            batch_size,
            fit: Fit::for_task(task),
            augment: AugmentConfig::for_task(task),
            shuffle: true,
            seed,
            drop_last: true,
            ..LoaderConfig::default()
        }
    }

    /// Evaluation defaults: no augmentation, fixed order, every image.
    pub fn evaluation(task: Task, image_size: usize, batch_size: usize) -> Self {
        LoaderConfig { image_size, batch_size, fit: Fit::for_task(task), ..LoaderConfig::default() }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 4)
}

/// One batch, ready for the model.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, 3, H, W]` f32, normalised, on the CPU.
    pub images: Tensor,
    /// Classification labels (`None` = unlabelled).
    pub classes: Vec<Option<usize>>,
    /// Detection labels in model-input pixels, after fit and augmentation.
    pub boxes: Vec<Vec<BBox>>,
    /// Project image index of each item.
    pub indices: Vec<usize>,
    /// Original <-> input mapping of each item (before augmentation).
    pub letterboxes: Vec<Letterbox>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// An image the loader could not use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedImage {
    /// Project image index.
    pub index: usize,
    pub name: String,
    pub reason: String,
}

/// An image fitted to the input with its labels mapped to input pixels: what the cache holds.
#[derive(Debug, Clone)]
pub struct FittedImage {
    pub image: RgbImage,
    pub letterbox: Letterbox,
    pub boxes: Vec<BBox>,
}

/// Decodes image `index` of `project`, fits it to `size` and maps its boxes (boxes left with no area after
/// clipping to the image are dropped). Panics inside a decoder become errors.
pub fn load_fitted(project: &Project, index: usize, size: usize, fit: Fit) -> Result<FittedImage, LoaderError> {
    let entry = &project.images[index];
    let name = entry.source.display_name();
    let source = project.source_of(index);
    let decoded = std::panic::catch_unwind(|| load_image(&source))
        .map_err(|_| LoaderError::Image { name: name.clone(), reason: "the decoder crashed on this file".into() })?
        .map_err(|e| LoaderError::Image { name: name.clone(), reason: e.to_string() })?;
    let (image, letterbox) = fit_image(&decoded, size, fit);
    let boxes = entry
        .boxes
        .iter()
        .filter_map(|b| clip_visible(&letterbox.box_to_input(b), size as u32, size as u32, 0.0))
        .collect();
    Ok(FittedImage { image, letterbox, boxes })
}

struct Shared {
    project: Arc<Project>,
    indices: Vec<usize>,
    cfg: LoaderConfig,
    /// Per position in `indices`.
    cache: Vec<OnceLock<Arc<FittedImage>>>,
    skipped: Mutex<BTreeMap<usize, SkippedImage>>,
}

/// A reusable loader over a fixed list of project images. Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

struct Sample {
    index: usize,
    class: Option<usize>,
    boxes: Vec<BBox>,
    letterbox: Letterbox,
    image: RgbImage,
}

impl Loader {
    pub fn new(project: Arc<Project>, indices: Vec<usize>, cfg: LoaderConfig) -> Result<Loader, LoaderError> {
        if cfg.image_size < 8 || cfg.image_size > 4096 {
            return Err(LoaderError::Config(format!("image_size must be 8..=4096 (got {})", cfg.image_size)));
        }
        if cfg.batch_size == 0 {
            return Err(LoaderError::Config("batch_size must be at least 1".into()));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= project.images.len()) {
            return Err(LoaderError::Config(format!("image index {bad} but the project has {} images", project.images.len())));
        }
        let cache = (0..indices.len()).map(|_| OnceLock::new()).collect();
        Ok(Loader { shared: Arc::new(Shared { project, indices, cfg, cache, skipped: Mutex::new(BTreeMap::new()) }) })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.shared.cfg
    }

    /// Number of images this loader serves (skipped ones included).
    pub fn len(&self) -> usize {
        self.shared.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.indices.is_empty()
    }

    /// Batches in one epoch (before any skip).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.len(), self.shared.cfg.batch_size);
        if self.shared.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Images skipped so far (each once), with the reason.
    pub fn skipped(&self) -> Vec<SkippedImage> {
        self.shared.skipped.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub fn skipped_count(&self) -> usize {
        self.shared.skipped.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Project image indices in the order epoch `epoch` visits them.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        self.positions(epoch).into_iter().map(|p| self.shared.indices[p]).collect()
    }

    fn positions(&self, epoch: u64) -> Vec<usize> {
        let mut pos: Vec<usize> = (0..self.len()).collect();
        if self.shared.cfg.shuffle {
            pos.shuffle(&mut StdRng::seed_from_u64(mix(self.shared.cfg.seed, epoch, u64::MAX)));
        }
        pos
    }

    /// The batches of epoch `epoch`, prepared on `workers` background threads, at most `prefetch` batches
    /// ahead of the consumer (plus one in progress per worker). Each worker builds whole batches, so there is
    /// no barrier between threads; batches are handed out in order. Dropping the iterator stops the work.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let positions = self.positions(epoch);
        let cfg = &self.shared.cfg;
        let mut chunks: Vec<Vec<usize>> = positions.chunks(cfg.batch_size).map(<[usize]>::to_vec).collect();
        if cfg.drop_last && chunks.last().is_some_and(|c| c.len() < cfg.batch_size) {
            chunks.pop();
        }
        let planned = chunks.len();
        let workers = cfg.workers.max(1).min(planned.max(1));
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<(usize, Vec<usize>)>();
        let (result_tx, result_rx) = crossbeam_channel::unbounded();
        for w in 0..workers {
            let (jobs, results, shared) = (job_rx.clone(), result_tx.clone(), self.shared.clone());
            let spawned = std::thread::Builder::new().name(format!("tessera-loader-{w}")).spawn(move || {
                for (k, chunk) in jobs {
                    let samples: Vec<Sample> = chunk.iter().filter_map(|&p| shared.sample(p, epoch)).collect();
                    let batch = if samples.is_empty() { Ok(None) } else { shared.collate(samples).map(Some) };
                    if results.send((k, batch)).is_err() {
                        return; // The consumer went away.
                    }
                }
            });
            if let Err(e) = spawned {
                log::error!("loader: could not start a worker thread: {e}");
            }
        }
        let mut iter = EpochIter {
            jobs: Some(job_tx),
            pending: chunks.into_iter().enumerate(),
            results: result_rx,
            ready: BTreeMap::new(),
            next: 0,
            planned,
        };
        for _ in 0..cfg.prefetch.max(1) + workers {
            iter.issue_one();
        }
        iter
    }
}

impl Shared {
    fn fitted(&self, pos: usize) -> Result<Arc<FittedImage>, LoaderError> {
        let load = || load_fitted(&self.project, self.indices[pos], self.cfg.image_size, self.cfg.fit).map(Arc::new);
        if !self.cfg.cache {
            return load();
        }
        if let Some(f) = self.cache[pos].get() {
            return Ok(f.clone());
        }
        let f = load()?;
        Ok(self.cache[pos].get_or_init(|| f).clone())
    }

    /// One augmented sample, or `None` (recorded in `skipped`) for an unusable image.
    fn sample(&self, pos: usize, epoch: u64) -> Option<Sample> {
        let index = self.indices[pos];
        if self.skipped.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&index) {
            return None;
        }
        let fitted = match self.fitted(pos) {
            Ok(f) => f,
            Err(e) => {
                let name = self.project.images[index].source.display_name();
                let reason = match e {
                    LoaderError::Image { reason, .. } => reason,
                    other => other.to_string(),
                };
                log::warn!("loader: skipping {name}: {reason}");
                self.skipped.lock().unwrap_or_else(|e| e.into_inner()).insert(index, SkippedImage { index, name, reason });
                return None;
            }
        };
        let (image, boxes) = if self.cfg.augment.is_none() {
            (fitted.image.clone(), fitted.boxes.clone())
        } else {
            let mut rng = StdRng::seed_from_u64(mix(self.cfg.seed, epoch, index as u64));
            let (img, boxes, _) = augment(&fitted.image, &fitted.boxes, &self.cfg.augment, &mut rng);
            (img, boxes)
        };
        Some(Sample { index, class: self.project.images[index].class, boxes, letterbox: fitted.letterbox, image })
    }

    fn collate(&self, samples: Vec<Sample>) -> Result<Batch, LoaderError> {
        let s = self.cfg.image_size;
        let mut data = Vec::with_capacity(samples.len() * 3 * s * s);
        for sm in &samples {
            self.cfg.normalization.push_chw(&sm.image, &mut data);
        }
        let images = Tensor::from_vec(data, (samples.len(), 3, s, s), &Device::Cpu)?;
        let mut batch = Batch {
            images,
            classes: Vec::with_capacity(samples.len()),
            boxes: Vec::with_capacity(samples.len()),
            indices: Vec::with_capacity(samples.len()),
            letterboxes: Vec::with_capacity(samples.len()),
        };
        for sm in samples {
            batch.classes.push(sm.class);
            batch.boxes.push(sm.boxes);
            batch.indices.push(sm.index);
            batch.letterboxes.push(sm.letterbox);
        }
        Ok(batch)
    }
}

/// Iterator over one epoch's batches; see [`Loader::epoch`].
pub struct EpochIter {
    /// `None` once every job is issued, which lets the workers finish.
    jobs: Option<crossbeam_channel::Sender<(usize, Vec<usize>)>>,
    pending: std::iter::Enumerate<std::vec::IntoIter<Vec<usize>>>,
    results: crossbeam_channel::Receiver<(usize, Result<Option<Batch>, LoaderError>)>,
    /// Batches that finished before their turn.
    ready: BTreeMap<usize, Result<Option<Batch>, LoaderError>>,
    next: usize,
    planned: usize,
}

impl EpochIter {
    /// Batches planned for this epoch (fewer arrive if whole batches are unreadable).
    pub fn planned(&self) -> usize {
        self.planned
    }

    fn issue_one(&mut self) {
        match (self.pending.next(), &self.jobs) {
            (Some(job), Some(tx)) => {
                let _ = tx.send(job);
            }
            _ => self.jobs = None,
        }
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch, LoaderError>;
    fn next(&mut self) -> Option<Self::Item> {
        while self.next < self.planned {
            let result = match self.ready.remove(&self.next) {
                Some(r) => r,
                None => match self.results.recv() {
                    Ok((k, r)) if k == self.next => r,
                    Ok((k, r)) => {
                        self.ready.insert(k, r);
                        continue;
                    }
                    // Every worker is gone (only if threads could not be started).
                    Err(_) => return None,
                },
            };
            self.next += 1;
            self.issue_one();
            match result {
                Ok(None) => continue, // every image of this batch was unreadable
                Ok(Some(batch)) => return Some(Ok(batch)),
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.planned - self.next))
    }
}

/// Decorrelated seed for (seed, epoch, item) — SplitMix64 finaliser over a mix of the three.
fn mix(seed: u64, epoch: u64, item: u64) -> u64 {
    let mut z = seed
        ^ epoch.wrapping_add(1).wrapping_mul(0x9E3779B97F4A7C15)
        ^ item.wrapping_add(1).wrapping_mul(0xD1B54A32D192ED03).rotate_left(17);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_round_trip_and_hand_computed_mapping() {
        // 200x100 into 64: scale 0.32, resized 64x32, pad_y (64-32)/2 = 16.
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(200, 100, image::Rgb([10, 20, 30])));
        let (out, lb) = letterbox(&img, 64);
        assert_eq!(out.dimensions(), (64, 64));
        assert_eq!((lb.scale, lb.scale_y, lb.pad_x, lb.pad_y), (0.32, 0.32, 0.0, 16.0));
        assert_eq!(out.get_pixel(10, 5).0, PAD_VALUE);
        assert_eq!(out.get_pixel(10, 30).0, [10, 20, 30]);
        let b = BBox { xmin: 50.0, ymin: 25.0, xmax: 150.0, ymax: 75.0, class: 1 };
        let i = lb.box_to_input(&b);
        assert_eq!(i, BBox { xmin: 16.0, ymin: 24.0, xmax: 48.0, ymax: 40.0, class: 1 });
        let o = lb.box_to_original(&i);
        for (a, e) in [(o.xmin, b.xmin), (o.ymin, b.ymin), (o.xmax, b.xmax), (o.ymax, b.ymax)] {
            assert!((a - e).abs() < 1e-3, "{o:?}");
        }
        // A prediction reaching into the bar is clipped at the image edge.
        let p = lb.box_to_original(&BBox { xmin: 0.0, ymin: 0.0, xmax: 64.0, ymax: 64.0, class: 0 });
        assert_eq!((p.ymin, p.ymax), (0.0, 100.0));
    }

    #[test]
    fn area_downscale_by_hand() {
        // 4x2 -> 2x1: each output pixel averages a 2x2 block. Left block red values 0, 10, 20, 30 -> 15;
        // right block 100, 100, 200, 200 -> 150.
        let reds = [[0u8, 10, 100, 100], [20, 30, 200, 200]];
        let img = RgbImage::from_fn(4, 2, |x, y| image::Rgb([reds[y as usize][x as usize], 7, 255]));
        let out = area_downscale(&img, 2, 1);
        assert_eq!(out.get_pixel(0, 0).0, [15, 7, 255]);
        assert_eq!(out.get_pixel(1, 0).0, [150, 7, 255]);
        // 3 -> 2 (fractional): output 0 covers source [0, 1.5): (1 * 0 + 0.5 * 90) / 1.5 = 30;
        // output 1 covers [1.5, 3): (0.5 * 90 + 1 * 180) / 1.5 = 150.
        let img = RgbImage::from_fn(3, 1, |x, _| image::Rgb([(x * 90) as u8; 3]));
        let out = area_downscale(&img, 2, 1);
        assert_eq!(out.get_pixel(0, 0).0, [30; 3]);
        assert_eq!(out.get_pixel(1, 0).0, [150; 3]);
        // A constant image stays constant at any ratio.
        let img = RgbImage::from_pixel(641, 479, image::Rgb([9, 99, 199]));
        assert!(area_downscale(&img, 128, 96).pixels().all(|p| p.0 == [9, 99, 199]));
    }

    #[test]
    fn stretch_maps_each_axis() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(100, 50));
        let (out, lb) = fit_image(&img, 50, Fit::Stretch);
        assert_eq!(out.dimensions(), (50, 50));
        assert_eq!((lb.scale, lb.scale_y, lb.pad_x, lb.pad_y), (0.5, 1.0, 0.0, 0.0));
    }

    #[test]
    fn normalization_round_trips() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([(x * 40) as u8, (y * 50) as u8, 200]));
        let n = Normalization::default();
        let mut v = Vec::new();
        n.push_chw(&img, &mut v);
        assert_eq!(v.len(), 60);
        // Channel-major: element [1][y=2][x=0] is the green of pixel (0, 2) = 100.
        assert!((v[20 + 2 * 5] - (100.0 / 255.0 - 0.456) / 0.224).abs() < 1e-5);
        assert_eq!(n.to_rgb(&v, 5, 4), img);
    }

    #[test]
    fn preprocess_gives_chw_tensor() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(30, 60));
        let (t, lb) = preprocess(&img, 32, Fit::Letterbox, &Normalization::default(), &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 32, 32]);
        assert_eq!((lb.pad_x, lb.pad_y), (8.0, 0.0));
    }
}
