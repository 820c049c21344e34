//! The engine's view of a project: every image of a split decoded once, letterboxed to the model input and
//! normalised, held in memory (small datasets; decoding per step would cost more than the model on 2 cores).
//! Batches are drawn deterministically from (seed, step) so that a resumed run sees exactly the same batches.
use candle_core::{Device, Result as CResult, Tensor};
use image::imageops::FilterType;
use image::DynamicImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::project::{BBox, Project, Split};
use crate::model::objectives::Object;

pub use crate::data::loader::{Letterbox, Normalization};

/// Used when no image of the split decodes: pixels centred on mid-grey.
const FALLBACK_NORMALIZATION: Normalization = Normalization { mean: [0.5; 3], std: [0.25; 3] };

/// The model's [`Object`] is a [`BBox`] in model-input pixels; these adapt the shared letterbox mapping to it.
impl Letterbox {
    pub fn to_input(&self, b: &BBox) -> Object {
        self.box_to_input(b).into()
    }
    /// Back to original-image pixels, clamped to the image.
    pub fn to_original(&self, o: &Object) -> BBox {
        self.box_to_original(&(*o).into())
    }
}

/// Letterboxes `img` into a `size`×`size` CHW array (geometry: [`Letterbox::uniform`]; padding = the
/// normalisation mean, i.e. 0 after normalising) and normalises it.
///
/// Not [`crate::data::loader::preprocess`]: every checkpoint was trained, and is run by the predictor, on this
/// exact pixel path (resize filters, padding), so it must not change under them.
pub fn preprocess(img: &DynamicImage, size: usize, norm: &Normalization) -> (Vec<f32>, Letterbox) {
    let rgb = img.to_rgb8();
    let (lb, nw, nh) = Letterbox::uniform(rgb.width(), rgb.height(), size);
    let filter = if lb.scale < 1.0 { FilterType::Triangle } else { FilterType::CatmullRom };
    let resized = if (nw, nh) == (rgb.width(), rgb.height()) { rgb } else { image::imageops::resize(&rgb, nw, nh, filter) };
    let mut out = vec![0f32; 3 * size * size];
    let (px, py) = (lb.pad_x as usize, lb.pad_y as usize);
    for (x, y, p) in resized.enumerate_pixels() {
        for c in 0..3 {
            let v = p.0[c] as f32 / 255.0;
            out[c * size * size + (y as usize + py) * size + x as usize + px] = (v - norm.mean[c]) / norm.std[c];
        }
    }
    (out, lb)
}

/// One decoded, preprocessed image.
#[derive(Debug, Clone)]
pub struct Item {
    /// Index into `Project::images`.
    pub index: usize,
    /// Normalised CHW pixels.
    pub pixels: Vec<f32>,
    pub letterbox: Letterbox,
    pub class: Option<usize>,
    /// Boxes in input pixels.
    pub objects: Vec<Object>,
}

/// Which images a split contributes to an objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any image (pretraining).
    Pixels,
    /// An image-level class.
    Class,
    /// Labelled for detection (boxes, or a labelled negative).
    Boxes,
}

pub struct Dataset {
    pub size: usize,
    pub items: Vec<Item>,
    /// Files that could not be used, with the reason.
    pub skipped: Vec<String>,
}

impl Dataset {
    pub fn load(project: &Project, split: Split, need: Need, size: usize, norm: &Normalization) -> Dataset {
        let wanted: Vec<usize> = project
            .indices_in(split)
            .into_iter()
            .filter(|&i| {
                let e = &project.images[i];
                match need {
                    Need::Pixels => true,
                    Need::Class => e.class.is_some(),
                    Need::Boxes => e.has_box_labels(),
                }
            })
            .collect();
        let results: Vec<std::result::Result<Item, String>> = wanted
            .par_iter()
            .map(|&i| {
                let e = &project.images[i];
                let img = crate::data::decode::load_image(&project.source_of(i)).map_err(|err| err.to_string())?;
                let (pixels, letterbox) = preprocess(&img, size, norm);
                let objects = e
                    .boxes
                    .iter()
                    .filter(|b| b.width() > 0.0 && b.height() > 0.0)
                    .map(|b| {
                        let o = letterbox.to_input(b);
                        let c = |v: f32| v.clamp(0.0, size as f32);
                        Object { xmin: c(o.xmin), ymin: c(o.ymin), xmax: c(o.xmax), ymax: c(o.ymax), class: o.class }
                    })
                    .collect();
                Ok(Item { index: i, pixels, letterbox, class: e.class, objects })
            })
            .collect();
        let mut items = vec![];
        let mut skipped = vec![];
        for r in results {
            match r {
                Ok(it) => items.push(it),
                Err(e) => skipped.push(e),
            }
        }
        Dataset { size, items, skipped }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// How much the images' class evidence changes in a mirror: 0 when every class's mean image (minus the mean
/// over all classes) is left–right symmetric, about 1 when it is unrelated to its mirror image, up to 2 when
/// mirroring turns it into its negative. Means are pooled per channel to cells of size / 8 pixels, and the sampling
/// noise of each class's mean (its pixels' variance over its count) is taken out of both sides of the ratio, so
/// classes with few images do not look asymmetric by chance. `None` without two classes with images, or when the
/// class means differ by no more than that noise (one object anywhere in the frame, as in the shapes demo's
/// classification set): then the pixels say nothing either way.
pub fn mirror_asymmetry(items: &[Item], size: usize) -> Option<f64> {
    const GRID: usize = 8;
    let cell = (size / GRID).max(1);
    let grid = size / cell;
    let cells = grid * grid;
    let pool = |pixels: &[f32]| -> Vec<f64> {
        let channels = pixels.len() / (size * size);
        let mut out = vec![0f64; channels * cells];
        for c in 0..channels {
            for y in 0..grid * cell {
                for x in 0..grid * cell {
                    out[c * cells + (y / cell) * grid + x / cell] += pixels[c * size * size + y * size + x] as f64;
                }
            }
        }
        let area = (cell * cell) as f64;
        out.iter_mut().for_each(|v| *v /= area);
        out
    };
    // Per class: count, sum and sum of squares of the pooled pixels.
    let mut stats: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::new();
    for item in items {
        let Some(class) = item.class else { continue };
        let pooled = pool(&item.pixels);
        if stats.len() <= class {
            stats.resize(class + 1, (0, vec![], vec![]));
        }
        let (n, sum, sq) = &mut stats[class];
        if sum.is_empty() {
            *sum = vec![0.0; pooled.len()];
            *sq = vec![0.0; pooled.len()];
        }
        *n += 1;
        for (k, v) in pooled.iter().enumerate() {
            sum[k] += v;
            sq[k] += v * v;
        }
    }
    stats.retain(|(n, _, _)| *n > 1);
    if stats.len() < 2 {
        return None;
    }
    let dims = stats[0].1.len();
    let means: Vec<Vec<f64>> = stats.iter().map(|(n, sum, _)| sum.iter().map(|s| s / *n as f64).collect()).collect();
    let overall: Vec<f64> = (0..dims).map(|k| means.iter().map(|m| m[k]).sum::<f64>() / means.len() as f64).collect();
    let mirror_of = |k: usize| {
        let (plane, rest) = (k / cells, k % cells);
        plane * cells + (rest / grid) * grid + (grid - 1 - rest % grid)
    };
    let (mut changed, mut energy) = (0f64, 0f64);
    for ((n, _, sq), mean) in stats.iter().zip(&means) {
        let n = *n as f64;
        // Variance of this class's mean, summed over the grid: the noise in |d|² (and twice that in |d - mirror(d)|²).
        let noise: f64 = (0..dims).map(|k| (sq[k] / n - mean[k] * mean[k]).max(0.0) / (n - 1.0)).sum();
        let d: Vec<f64> = (0..dims).map(|k| mean[k] - overall[k]).collect();
        changed += (0..dims).map(|k| (d[k] - d[mirror_of(k)]).powi(2)).sum::<f64>() - 2.0 * noise;
        energy += 2.0 * (d.iter().map(|v| v * v).sum::<f64>() - noise);
    }
    (energy > 0.0).then(|| (changed / energy).clamp(0.0, 2.0))
}

/// Per-channel mean/std over raw (un-normalised) pixels of up to 500 images of a split.
pub fn compute_normalization(project: &Project, split: Split, size: usize) -> Normalization {
    let ds = {
        let mut p = project.clone();
        let idx = p.indices_in(split);
        let keep: std::collections::HashSet<usize> = idx.into_iter().take(500).collect();
        for (i, e) in p.images.iter_mut().enumerate() {
            if !keep.contains(&i) {
                e.split = Split::Test; // excluded from the sample below (a throwaway copy)
                if split == Split::Test {
                    e.split = Split::Train;
                }
            }
        }
        Dataset::load(&p, split, Need::Pixels, size, &Normalization { mean: [0.0; 3], std: [1.0; 3] })
    };
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    let mut n = 0f64;
    let plane = size * size;
    for it in &ds.items {
        // Skip letterbox padding (exact zeros) so it does not bias the statistics.
        for c in 0..3 {
            for &v in &it.pixels[c * plane..(c + 1) * plane] {
                sum[c] += v as f64;
                sq[c] += (v * v) as f64;
            }
        }
        n += plane as f64;
    }
    if n == 0.0 {
        return FALLBACK_NORMALIZATION;
    }
    let mut norm = FALLBACK_NORMALIZATION;
    for c in 0..3 {
        let m = sum[c] / n;
        norm.mean[c] = m as f32;
        norm.std[c] = ((sq[c] / n - m * m).max(1e-6).sqrt() as f32).max(0.02);
    }
    norm
}

/// Data augmentation, applied to the cached arrays.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    pub hflip: bool,
    /// Vertical flips and 90° rotations too (for data without an up direction, e.g. shapes, cells).
    pub dihedral: bool,
    /// Largest random shift as a fraction of the input size.
    pub translate: f32,
    /// Scale jitter: the image is zoomed by a factor drawn log-uniformly from this range (above 1 zooms in and
    /// crops, below 1 zooms out inside a border) at a random place. `(1, 1)` = off.
    #[serde(default = "no_scale")]
    pub scale: (f32, f32),
    /// Random erasing (Zhong et al., 2017): the probability that one rectangle of the image (2–40 % of its
    /// area, aspect ratio 0.3–3.3) is replaced by standard-normal noise. A regulariser for classification runs long
    /// enough to overfit; it leaves boxes as they are, so it is not meant for detection. `0` = off.
    #[serde(default)]
    pub erase: f32,
    /// CutMix (Yun et al., 2019): the probability that a training batch is mixed — each image gets a random
    /// rectangle of another image of the batch pasted in, and learns both classes in proportion to their areas.
    /// A regulariser for classification runs long enough to overfit; classification only. `0` = off.
    #[serde(default)]
    pub cutmix: f32,
}

fn no_scale() -> (f32, f32) {
    (1.0, 1.0)
}

impl Augment {
    pub fn none() -> Augment {
        Augment { hflip: false, dihedral: false, translate: 0.0, scale: no_scale(), erase: 0.0, cutmix: 0.0 }
    }

    /// In words, for people: "mirror, shifts up to 8 %, random erasing 50 %" or "none".
    pub fn describe(&self) -> String {
        let mut parts = vec![];
        if self.hflip {
            parts.push("mirror".to_string());
        }
        if self.dihedral {
            parts.push("flips and 90° turns".to_string());
        }
        if self.translate > 0.0 {
            // A no-break space: "10" and "%" stay on one line where the text wraps.
            parts.push(format!("shifts up to {:.0}\u{a0}%", self.translate * 100.0));
        }
        if self.jitters_scale() {
            parts.push(format!("zoom {}–{}×", self.scale.0, self.scale.1));
        }
        if self.erase > 0.0 {
            parts.push(format!("random erasing {:.0}\u{a0}%", self.erase * 100.0));
        }
        if self.cutmix > 0.0 {
            parts.push(format!("CutMix {:.0}\u{a0}%", self.cutmix * 100.0));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    fn jitters_scale(&self) -> bool {
        self.scale.0 < self.scale.1 || self.scale.0 != 1.0
    }
}

/// CutMix on a batch `[B, 3, S, S]`: image i gets a rectangle of image B-1-i (the batch reversed, so every image
/// has a partner without a copy of the labels' order) pasted at a random place. The rectangle's area is drawn
/// uniformly (λ ~ Beta(1, 1), as in the paper) and clipped at the border. Returns the mixed images, the order of
/// partners, and the share of each image's own pixels that are left (the weight of its own label).
pub fn cutmix_batch(images: &Tensor, rng: &mut StdRng) -> CResult<(Tensor, Vec<usize>, f64)> {
    let (b, _, h, w) = images.dims4()?;
    let partners: Vec<usize> = (0..b).rev().collect();
    let cut = (1.0 - rng.random::<f64>()).sqrt();
    let (cut_w, cut_h) = ((w as f64 * cut).round() as usize, (h as f64 * cut).round() as usize);
    let (cx, cy) = (rng.random_range(0..w), rng.random_range(0..h));
    let (x0, x1) = (cx.saturating_sub(cut_w / 2), (cx + cut_w.div_ceil(2)).min(w));
    let (y0, y1) = (cy.saturating_sub(cut_h / 2), (cy + cut_h.div_ceil(2)).min(h));
    let mut pasted = vec![0f32; h * w];
    for y in y0..y1 {
        pasted[y * w + x0..y * w + x1].fill(1.0);
    }
    let keep = 1.0 - ((x1 - x0) * (y1 - y0)) as f64 / (h * w) as f64;
    let pasted = Tensor::from_vec(pasted, (1, 1, h, w), images.device())?.to_dtype(images.dtype())?;
    let order = Tensor::from_vec(partners.iter().map(|&p| p as u32).collect::<Vec<_>>(), b, images.device())?;
    let partner_images = images.index_select(&order, 0)?;
    let mixed = (images.broadcast_mul(&pasted.affine(-1.0, 1.0)?)? + partner_images.broadcast_mul(&pasted)?)?;
    Ok((mixed, partners, keep))
}

/// A batch ready for the model.
pub struct Batch {
    /// `[B, 3, S, S]`
    pub images: Tensor,
    pub classes: Vec<Option<usize>>,
    pub objects: Vec<Vec<Object>>,
    pub indices: Vec<usize>,
}

/// Transforms one item: the geometric part ([`transform_item`]), then random erasing.
fn augment_item(item: &Item, size: usize, aug: &Augment, rng: &mut StdRng) -> (Vec<f32>, Vec<Object>) {
    let (mut pixels, objects) = transform_item(item, size, aug, rng);
    if aug.erase > 0.0 && rng.random_bool(aug.erase.clamp(0.0, 1.0) as f64) {
        erase_random_rectangle(&mut pixels, size, rng);
    }
    (pixels, objects)
}

/// Replaces one random rectangle of 2–40 % of the image's area (aspect ratio 0.3–3.3, log-uniform) with
/// standard normal noise: the pixels are normalised, so this is noise at the data's own contrast (torchvision's
/// `RandomErasing(value="random")`). Tries a few draws for one that fits, as Zhong et al. do.
fn erase_random_rectangle(pixels: &mut [f32], size: usize, rng: &mut StdRng) {
    let plane = size * size;
    for _ in 0..10 {
        let area = rng.random_range(0.02..0.4) * plane as f32;
        let aspect = rng.random_range((0.3f32).ln()..(1.0f32 / 0.3).ln()).exp();
        let (h, w) = ((area * aspect).sqrt().round() as usize, (area / aspect).sqrt().round() as usize);
        if h == 0 || w == 0 || h >= size || w >= size {
            continue;
        }
        let (y0, x0) = (rng.random_range(0..=size - h), rng.random_range(0..=size - w));
        for c in 0..pixels.len() / plane {
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    pixels[c * plane + y * size + x] = rng.sample(rand_distr::StandardNormal);
                }
            }
        }
        return;
    }
}

/// Transforms one item: optional zoom (bilinear) at a random place, integer shift (zero fill), optional
/// flips/rotation; boxes follow, clipped to the image, and boxes left less than half visible are dropped.
fn transform_item(item: &Item, size: usize, aug: &Augment, rng: &mut StdRng) -> (Vec<f32>, Vec<Object>) {
    let max_shift = (aug.translate * size as f32) as i64;
    let (dx, dy) = if max_shift > 0 {
        (rng.random_range(-max_shift..=max_shift), rng.random_range(-max_shift..=max_shift))
    } else {
        (0, 0)
    };
    let hflip = aug.hflip && rng.random_bool(0.5);
    let (vflip, transpose) = if aug.dihedral { (rng.random_bool(0.5), rng.random_bool(0.5)) } else { (false, false) };
    let sf = size as f32;
    // Zoom by `r` with the zoomed image's corner at `(ox, oy)`: source point p lands at p * r + o.
    let (r, ox, oy) = if aug.jitters_scale() {
        let (lo, hi) = (aug.scale.0.max(0.05), aug.scale.1.max(aug.scale.0).max(0.05));
        let r = if hi > lo { (rng.random_range(lo.ln()..hi.ln())).exp() } else { lo };
        let slack = sf - r * sf; // negative when zooming in: the part that falls outside
        let mut place = || if slack.abs() < 1e-3 { 0.0 } else { rng.random_range(slack.min(0.0)..=slack.max(0.0)) };
        (r, place(), place())
    } else {
        (1.0, 0.0, 0.0)
    };
    let zoomed = r != 1.0 || ox != 0.0 || oy != 0.0;
    if dx == 0 && dy == 0 && !hflip && !vflip && !transpose && !zoomed {
        return (item.pixels.clone(), item.objects.clone());
    }
    let s = size as i64;
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    // Output pixel (x, y) reads source ((x', y') after inverse transform).
    for y in 0..s {
        for x in 0..s {
            let (mut sx, mut sy) = (x - dx, y - dy);
            if hflip {
                sx = s - 1 - sx;
            }
            if vflip {
                sy = s - 1 - sy;
            }
            if transpose {
                std::mem::swap(&mut sx, &mut sy);
            }
            if sx < 0 || sy < 0 || sx >= s || sy >= s {
                continue;
            }
            let o = (y * s + x) as usize;
            if zoomed {
                // Pixel centres: the zoomed pixel sx covers source [(sx - ox) / r, (sx + 1 - ox) / r).
                let u = (sx as f32 + 0.5 - ox) / r - 0.5;
                let v = (sy as f32 + 0.5 - oy) / r - 0.5;
                if u < -0.5 || v < -0.5 || u > sf - 0.5 || v > sf - 0.5 {
                    continue;
                }
                let (u0, v0) = (u.floor().max(0.0), v.floor().max(0.0));
                let (fu, fv) = ((u - u0).clamp(0.0, 1.0), (v - v0).clamp(0.0, 1.0));
                let (u0, v0) = ((u0 as usize).min(size - 1), (v0 as usize).min(size - 1));
                let (u1, v1) = ((u0 + 1).min(size - 1), (v0 + 1).min(size - 1));
                for c in 0..3 {
                    let px = |yy: usize, xx: usize| item.pixels[c * plane + yy * size + xx];
                    let top = px(v0, u0) * (1.0 - fu) + px(v0, u1) * fu;
                    let bottom = px(v1, u0) * (1.0 - fu) + px(v1, u1) * fu;
                    out[c * plane + o] = top * (1.0 - fv) + bottom * fv;
                }
            } else {
                let i = (sy * s + sx) as usize;
                for c in 0..3 {
                    out[c * plane + o] = item.pixels[c * plane + i];
                }
            }
        }
    }
    let objects = item
        .objects
        .iter()
        .filter_map(|o| {
            let (mut x0, mut y0, mut x1, mut y1) = (o.xmin * r + ox, o.ymin * r + oy, o.xmax * r + ox, o.ymax * r + oy);
            // Forward transform is the inverse sequence in reverse: zoom, transpose, vflip, hflip, shift.
            if transpose {
                (x0, y0, x1, y1) = (y0, x0, y1, x1);
            }
            if vflip {
                (y0, y1) = (sf - y1, sf - y0);
            }
            if hflip {
                (x0, x1) = (sf - x1, sf - x0);
            }
            let (x0s, y0s, x1s, y1s) = (x0 + dx as f32, y0 + dy as f32, x1 + dx as f32, y1 + dy as f32);
            let c = |v: f32| v.clamp(0.0, sf);
            let area = (x1s - x0s) * (y1s - y0s);
            let visible = (c(x1s) - c(x0s)) * (c(y1s) - c(y0s));
            (area > 0.0 && visible >= 0.5 * area)
                .then_some(Object { xmin: c(x0s), ymin: c(y0s), xmax: c(x1s), ymax: c(y1s), class: o.class })
        })
        .collect();
    (out, objects)
}

/// Deterministic batch order: epoch `e` visits a permutation seeded by (seed, e).
pub struct Sampler {
    pub n: usize,
    pub batch: usize,
    pub seed: u64,
    /// Each item's sequence length (detection: its objects), or empty. When set, each run of
    /// [`LENGTH_GROUP_BATCHES`] batches of the permutation is sorted by length before it is cut into batches, and
    /// those batches are visited in shuffled order: a batch costs its longest sequence, so batches of alike lengths
    /// waste less padding (BCCD's 1–30 cells per image: 15 % fewer tokens per step) while every epoch still visits
    /// every item once and each batch still mixes images from the whole set.
    pub lengths: Vec<usize>,
}

/// Batches per length group of a [`Sampler`] with lengths.
pub const LENGTH_GROUP_BATCHES: usize = 8;

impl Sampler {
    pub fn new(n: usize, batch: usize, seed: u64) -> Sampler {
        Sampler { n, batch, seed, lengths: vec![] }
    }
    /// Groups batches by these per-item lengths (see [`Sampler::lengths`]).
    pub fn grouped_by(self, lengths: Vec<usize>) -> Sampler {
        assert_eq!(lengths.len(), self.n, "one length per item");
        Sampler { lengths, ..self }
    }
    pub fn steps_per_epoch(&self) -> u64 {
        self.n.div_ceil(self.batch).max(1) as u64
    }
    /// Item indices of (micro-)batch number `k` (counted from the start of training).
    pub fn batch_indices(&self, k: u64) -> Vec<usize> {
        let spe = self.steps_per_epoch();
        let (epoch, pos) = (k / spe, (k % spe) as usize);
        let epoch_seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch;
        let mut perm: Vec<usize> = (0..self.n).collect();
        perm.shuffle(&mut StdRng::seed_from_u64(epoch_seed));
        let slot = |i: usize| perm[i % self.n];
        if self.lengths.is_empty() {
            return (0..self.batch).map(|j| slot(pos * self.batch + j)).collect();
        }
        // The group of batches `pos` falls in (the epoch's last group may hold fewer).
        let group = pos / LENGTH_GROUP_BATCHES;
        let first_batch = group * LENGTH_GROUP_BATCHES;
        let batches = LENGTH_GROUP_BATCHES.min(spe as usize - first_batch);
        let mut members: Vec<usize> = (first_batch * self.batch..(first_batch + batches) * self.batch).map(slot).collect();
        members.sort_by_key(|&i| self.lengths[i]);
        let mut order: Vec<usize> = (0..batches).collect();
        order.shuffle(&mut StdRng::seed_from_u64(epoch_seed ^ (group as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)));
        let b = order[pos - first_batch];
        members[b * self.batch..(b + 1) * self.batch].to_vec()
    }
}

pub fn make_batch(ds: &Dataset, indices: &[usize], aug: &Augment, rng_seed: u64, device: &Device) -> CResult<Batch> {
    let size = ds.size;
    let parts: Vec<(Vec<f32>, Vec<Object>)> = indices
        .par_iter()
        .enumerate()
        .map(|(j, &i)| {
            let mut rng = StdRng::seed_from_u64(rng_seed.wrapping_add(j as u64 * 0x2545_F491_4F6C_DD1D));
            augment_item(&ds.items[i], size, aug, &mut rng)
        })
        .collect();
    let mut flat = Vec::with_capacity(indices.len() * 3 * size * size);
    let mut objects = Vec::with_capacity(indices.len());
    for (p, o) in parts {
        flat.extend_from_slice(&p);
        objects.push(o);
    }
    Ok(Batch {
        images: Tensor::from_vec(flat, (indices.len(), 3, size, size), device)?,
        classes: indices.iter().map(|&i| ds.items[i].class).collect(),
        objects,
        indices: indices.iter().map(|&i| ds.items[i].index).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn augmentation_is_described_in_words() {
        assert_eq!(Augment::none().describe(), "none");
        let a = Augment { hflip: true, translate: 0.08, scale: (0.7, 1.4), erase: 0.5, ..Augment::none() };
        assert_eq!(a.describe(), "mirror, shifts up to 8\u{a0}%, zoom 0.7–1.4×, random erasing 50\u{a0}%");
    }

    #[test]
    fn letterbox_round_trips_boxes() {
        let (lb, _, _) = Letterbox::uniform(200, 100, 64);
        let b = BBox { xmin: 10.0, ymin: 20.0, xmax: 150.0, ymax: 90.0, class: 1 };
        let back = lb.to_original(&lb.to_input(&b));
        assert!((back.xmin - 10.0).abs() < 1e-3 && (back.ymax - 90.0).abs() < 1e-3);
        assert_eq!(lb.pad_x, 0.0);
        assert_eq!(lb.pad_y, 16.0);
    }

    #[test]
    fn trainer_letterbox_uses_one_scale_for_both_axes() {
        // 100x33 into 64: scale 0.64, resized 64x21 (21.12 rounded), pad_y (64 - 21) / 2 = 21. The short axis keeps
        // scale 0.64 (not 21/33): checkpoints were trained with this mapping.
        let (lb, w, h) = Letterbox::uniform(100, 33, 64);
        assert_eq!((w, h, lb.scale, lb.scale_y, lb.pad_x, lb.pad_y), (64, 21, 0.64, 0.64, 0.0, 21.0));
        let o = lb.to_input(&BBox { xmin: 0.0, ymin: 33.0, xmax: 100.0, ymax: 33.0, class: 2 });
        assert_eq!((o.xmax, o.ymin, o.class), (64.0, 33.0 * 0.64 + 21.0, 2));
        let (pixels, _) = preprocess(&DynamicImage::new_rgb8(100, 33), 64, &Normalization { mean: [0.5; 3], std: [0.25; 3] });
        // Padding rows are exactly 0 (the mean); black image rows are (0 - 0.5) / 0.25 = -2.
        assert_eq!((pixels[20 * 64], pixels[21 * 64], pixels[41 * 64], pixels[42 * 64]), (0.0, -2.0, -2.0, 0.0));
    }

    /// A `size`² item, black but for a bright block (first channel) that is also its one object's box.
    fn bright_block(size: usize, xs: std::ops::Range<usize>, ys: std::ops::Range<usize>) -> Item {
        let mut pixels = vec![0f32; 3 * size * size];
        for y in ys.clone() {
            for x in xs.clone() {
                pixels[y * size + x] = 1.0;
            }
        }
        let (xmin, xmax, ymin, ymax) = (xs.start as f32, xs.end as f32, ys.start as f32, ys.end as f32);
        Item {
            index: 0,
            pixels,
            letterbox: Letterbox::uniform(size as u32, size as u32, size).0,
            class: None,
            objects: vec![Object { xmin, ymin, xmax, ymax, class: 0 }],
        }
    }

    /// `per_class` noisy copies (Gaussian noise of `noise` std) of each class's pattern, `size`² pixels, all channels.
    fn noisy_copies(patterns: &[Vec<f32>], per_class: usize, noise: f32, size: usize) -> Vec<Item> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut items = vec![];
        for (class, pattern) in patterns.iter().enumerate() {
            for _ in 0..per_class {
                let pixels = (0..3).flat_map(|_| pattern.iter().map(|v| v + noise * rng.sample::<f32, _>(rand_distr::StandardNormal)).collect::<Vec<_>>()).collect();
                let letterbox = Letterbox::uniform(size as u32, size as u32, size).0;
                items.push(Item { index: items.len(), pixels, letterbox, class: Some(class), objects: vec![] });
            }
        }
        items
    }

    fn pattern(size: usize, bright: impl Fn(usize, usize) -> bool) -> Vec<f32> {
        (0..size * size).map(|i| if bright(i % size, i / size) { 1.0 } else { 0.0 }).collect()
    }

    #[test]
    fn mirror_asymmetry_tells_mirror_safe_classes_from_mirror_sensitive_ones() {
        let size = 16;
        let mid = |x: usize| (x as f32 + 0.5 - size as f32 / 2.0).abs();
        // Left–right symmetric classes (a centred square, a horizontal bar, a ring): mirroring changes nothing.
        let symmetric = [
            pattern(size, |x, y| mid(x) < 4.0 && mid(y) < 4.0),
            pattern(size, |x, y| mid(x) < 7.0 && (6..9).contains(&y)),
            pattern(size, |x, y| (4.0..7.0).contains(&(mid(x).powi(2) + mid(y).powi(2)).sqrt())),
        ];
        let a = mirror_asymmetry(&noisy_copies(&symmetric, 20, 0.3, size), size).unwrap();
        assert!(a < 0.1, "symmetric classes: {a}");
        // Few, very noisy images of the same classes: the noise in their means must not read as asymmetry.
        let a = mirror_asymmetry(&noisy_copies(&symmetric, 3, 1.5, size), size).unwrap();
        assert!(a < 0.3, "few noisy images: {a}");
        // Classes that are each other's mirror image (a block on the left, the same on the right): a mirror swaps them.
        let swapped = [pattern(size, |x, y| x < 5 && (4..12).contains(&y)), pattern(size, |x, y| x >= size - 5 && (4..12).contains(&y))];
        let a = mirror_asymmetry(&noisy_copies(&swapped, 20, 0.3, size), size).unwrap();
        assert!(a > 1.5, "mirror-image classes: {a}");
        // Glyph-like classes (random strokes, as digits are to a mirror): their mirrors look like no class.
        let mut rng = StdRng::seed_from_u64(3);
        let glyphs: Vec<Vec<f32>> = (0..5).map(|_| {
            let cells: Vec<bool> = (0..16).map(|_| rng.random_bool(0.4)).collect();
            pattern(size, |x, y| cells[(y / 4) * 4 + x / 4])
        }).collect();
        let a = mirror_asymmetry(&noisy_copies(&glyphs, 20, 0.3, size), size).unwrap();
        assert!(a > crate::train::run::MIRROR_ASYMMETRY_LIMIT, "glyphs: {a}");
        // One class only: nothing to compare.
        assert_eq!(mirror_asymmetry(&noisy_copies(&symmetric[..1], 20, 0.3, size), size), None);
    }

    #[test]
    fn augmentation_moves_boxes_with_pixels() {
        // A single bright pixel block at a known box; after any transform the box must still cover it.
        let size = 16;
        let item = bright_block(size, 9..13, 2..5);
        let aug = Augment { hflip: true, dihedral: true, translate: 0.1, ..Augment::none() };
        for seed in 0..20 {
            let (p, objs) = augment_item(&item, size, &aug, &mut StdRng::seed_from_u64(seed));
            let o = objs[0];
            let mut inside = 0.0;
            let total: f32 = p[..size * size].iter().sum();
            for y in 0..size {
                for x in 0..size {
                    if (x as f32) >= o.xmin && (x as f32) < o.xmax && (y as f32) >= o.ymin && (y as f32) < o.ymax {
                        inside += p[y * size + x];
                    }
                }
            }
            assert_eq!(inside, total, "seed {seed}: box {o:?} does not cover the moved pixels");
            assert_eq!(total, 12.0);
        }
    }

    #[test]
    fn cutmix_pastes_one_rectangle_of_the_partner_and_reports_what_is_left() {
        // Image i is filled with the value i, so every pixel tells where it came from.
        let (b, size) = (4usize, 10usize);
        let values: Vec<f32> = (0..b).flat_map(|i| vec![i as f32; 3 * size * size]).collect();
        let images = Tensor::from_vec(values, (b, 3, size, size), &Device::Cpu).unwrap();
        let mut keeps = vec![];
        for seed in 0..40 {
            let (mixed, partners, keep) = cutmix_batch(&images, &mut StdRng::seed_from_u64(seed)).unwrap();
            assert_eq!(partners, vec![3, 2, 1, 0]);
            assert_eq!(mixed.dims(), images.dims());
            let px = mixed.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
            for (i, row) in px.iter().enumerate() {
                let own = row.iter().filter(|&&v| v == i as f32).count();
                let theirs = row.iter().filter(|&&v| v == partners[i] as f32).count();
                assert_eq!(own + theirs, row.len(), "seed {seed}, image {i}: pixels from a third image");
                assert!((own as f64 / row.len() as f64 - keep).abs() < 1e-9, "seed {seed}: keep {keep}, own {own}");
                // The pasted pixels form one rectangle in every channel.
                let plane = size * size;
                let pasted: Vec<usize> = (0..plane).filter(|&k| row[k] != i as f32).collect();
                if let (Some(&first), Some(&last)) = (pasted.first(), pasted.last()) {
                    let (x0, y0, x1, y1) = (first % size, first / size, last % size, last / size);
                    assert_eq!(pasted.len(), (x1 - x0 + 1) * (y1 - y0 + 1), "seed {seed}: not a rectangle");
                    assert!((0..3).all(|ch| pasted.iter().all(|&k| row[ch * plane + k] == partners[i] as f32)));
                }
            }
            keeps.push(keep);
        }
        let mean = keeps.iter().sum::<f64>() / keeps.len() as f64;
        assert!(keeps.iter().all(|k| (0.0..=1.0).contains(k)) && (0.4..0.8).contains(&mean), "keep shares {keeps:?}");
    }

    #[test]
    fn random_erasing_replaces_one_rectangle_and_keeps_boxes() {
        let size = 28;
        let item = bright_block(size, 9..13, 2..5);
        let always = Augment { erase: 1.0, ..Augment::none() };
        let mut erased_fractions = vec![];
        for seed in 0..30 {
            let (p, objs) = augment_item(&item, size, &always, &mut StdRng::seed_from_u64(seed));
            assert_eq!(objs, item.objects, "erasing leaves boxes alone");
            let changed: Vec<usize> = (0..3 * size * size).filter(|&i| p[i] != item.pixels[i]).collect();
            // The changed pixels lie in one rectangle, the same in all three channels.
            let plane = size * size;
            let in_first: Vec<usize> = changed.iter().copied().filter(|&i| i < plane).collect();
            assert_eq!(changed.len(), 3 * in_first.len(), "seed {seed}");
            let (xs, ys): (Vec<usize>, Vec<usize>) = in_first.iter().map(|&i| (i % size, i / size)).unzip();
            let w = xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1;
            let h = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
            assert_eq!(in_first.len(), w * h, "seed {seed}: the erased pixels are not one rectangle");
            erased_fractions.push(in_first.len() as f32 / plane as f32);
        }
        assert!(erased_fractions.iter().all(|&f| (0.01..0.45).contains(&f)), "{erased_fractions:?}");
        let mean = erased_fractions.iter().sum::<f32>() / erased_fractions.len() as f32;
        assert!((0.1..0.3).contains(&mean), "mean erased fraction {mean}");
        // Probability 0 (the default) is the identity.
        let (p, _) = augment_item(&item, size, &Augment::none(), &mut StdRng::seed_from_u64(1));
        assert_eq!(p, item.pixels);
    }

    #[test]
    fn zoom_jitter_moves_boxes_with_pixels() {
        // A bright block; after zooming in or out at a random place (with flips), the block's box must still hold
        // (nearly) all of its brightness, and the boxes must change size.
        let size = 32;
        let item = bright_block(size, 12..22, 10..18);
        let aug = Augment { hflip: true, dihedral: true, scale: (0.5, 2.0), ..Augment::none() };
        let mut widths = vec![];
        for seed in 0..40 {
            let (p, objs) = augment_item(&item, size, &aug, &mut StdRng::seed_from_u64(seed));
            let Some(o) = objs.first() else { continue }; // zoomed in so far that the block left the view
            let (mut inside, mut total) = (0.0, 0.0);
            for y in 0..size {
                for x in 0..size {
                    let v = p[y * size + x];
                    total += v;
                    let (cx, cy) = (x as f32 + 0.5, y as f32 + 0.5);
                    // Bilinear sampling spreads an edge over up to one pixel.
                    if cx >= o.xmin - 1.0 && cx <= o.xmax + 1.0 && cy >= o.ymin - 1.0 && cy <= o.ymax + 1.0 {
                        inside += v;
                    }
                }
            }
            assert!(total > 0.0 && inside >= 0.99 * total, "seed {seed}: box {o:?} holds {inside} of {total}");
            widths.push(((o.xmax - o.xmin).min(o.ymax - o.ymin) * 10.0).round() as i32);
        }
        widths.sort();
        widths.dedup();
        assert!(widths.len() > 5, "the zoom varies the box sizes: {widths:?}");
    }

    #[test]
    fn sampler_is_deterministic_and_covers_an_epoch() {
        let s = Sampler::new(10, 4, 3);
        assert_eq!(s.batch_indices(5), s.batch_indices(5));
        let mut seen: Vec<usize> = (0..3).flat_map(|k| s.batch_indices(k)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 10);
    }

    #[test]
    fn a_sampler_grouped_by_length_visits_every_item_once_per_epoch_in_batches_of_alike_lengths() {
        // 100 items of lengths 0..=29 in batches of 4: 25 batches an epoch, three groups of 8 and one of 1.
        let lengths: Vec<usize> = (0..100).map(|i| (i * 7) % 30).collect();
        let grouped = Sampler::new(100, 4, 5).grouped_by(lengths.clone());
        let plain = Sampler::new(100, 4, 5);
        let spread = |b: &[usize]| b.iter().map(|&i| lengths[i]).max().unwrap() - b.iter().map(|&i| lengths[i]).min().unwrap();
        for epoch in 0..2u64 {
            let batches: Vec<Vec<usize>> = (0..25).map(|k| grouped.batch_indices(epoch * 25 + k)).collect();
            let mut seen: Vec<usize> = batches.concat();
            seen.sort();
            assert_eq!(seen, (0..100).collect::<Vec<_>>(), "epoch {epoch} visits each item once");
            // Padding: the sum of each batch's longest sequence is well under random batches'.
            let cost = |s: &Sampler| (0..25).map(|k| s.batch_indices(epoch * 25 + k).iter().map(|&i| lengths[i]).max().unwrap()).sum::<usize>();
            assert!(cost(&grouped) * 10 < cost(&plain) * 8, "grouped {} vs plain {}", cost(&grouped), cost(&plain));
            assert!(batches.iter().take(24).all(|b| spread(b) <= 10), "lengths within a batch stay close");
        }
        // Sorted groups are not visited shortest first: the order of a group's batches is shuffled.
        let longest: Vec<usize> = (0..8).map(|k| grouped.batch_indices(k).iter().map(|&i| lengths[i]).max().unwrap()).collect();
        assert!(longest.windows(2).any(|w| w[0] > w[1]), "{longest:?}");
        assert_eq!(grouped.batch_indices(3), grouped.batch_indices(3));
    }
}
