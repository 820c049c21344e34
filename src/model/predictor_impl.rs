//! Engine side of [`super::predictor::Predictor`]: loads a checkpoint into an inference model (plain tensors, fused
//! kernels) and runs classification, detection decoding, attention maps and generative reconstruction.
use std::path::Path;

use anyhow::Context;
use candle_core::{Device, IndexOp, Tensor};
use image::{DynamicImage, RgbImage};

use super::config::ModelConfig;
use super::objectives::{self, DecodeOptions, Object, RawDetection};
use super::predictor::{AttentionMap, Detection, PredictOptions, Prediction};
use super::transformer::{patchify, prefix_len, unpatchify, KvCache, Transformer};
use super::vocab;
use crate::data::project::Task;
use crate::train::checkpoint;
use crate::train::data::{preprocess, Letterbox, Normalization};
use crate::train::run::default_augment;
use crate::train::worker::Objective;

/// IoU at which a box from another view joins a cluster in detection TTA. Chosen on BCCD's val split (8 views, the
/// session-10 9000-step checkpoints, val mAP@0.5 with and without EMA): 0.2 → 0.757, 0.3 → 0.767 / 0.760,
/// 0.4 → 0.757 / 0.745, 0.55 → 0.742 / 0.730, 0.7 → 0.702. Small objects (4–7 px platelets) scatter by a pixel or two
/// between views, which costs them IoU; below 0.3 neighbouring cells start to merge (RBC AP drops).
const TTA_FUSION_IOU: f32 = 0.3;

/// One of the square's eight symmetries, applied to an image as: transpose (swap x and y), then mirror left-right,
/// then mirror top-bottom.
#[derive(Debug, Clone, Copy)]
struct View {
    transpose: bool,
    hflip: bool,
    vflip: bool,
}

/// Identity first; mirror second (valid for any data trained with left-right flips); the rest need `dihedral`.
const DIHEDRAL_VIEWS: [View; 8] = [
    View { transpose: false, hflip: false, vflip: false },
    View { transpose: false, hflip: true, vflip: false },
    View { transpose: false, hflip: false, vflip: true },
    View { transpose: false, hflip: true, vflip: true },
    View { transpose: true, hflip: false, vflip: false },
    View { transpose: true, hflip: true, vflip: false },
    View { transpose: true, hflip: false, vflip: true },
    View { transpose: true, hflip: true, vflip: true },
];

impl View {
    fn apply(&self, img: &DynamicImage) -> DynamicImage {
        let mut out = if self.transpose { img.rotate90().fliph() } else { img.clone() };
        if self.hflip {
            out = out.fliph();
        }
        if self.vflip {
            out = out.flipv();
        }
        out
    }

    /// Maps a box in the transformed image (`width`×`height`) back to the original image.
    fn undo(&self, o: &Object, width: f32, height: f32) -> Object {
        let mut o = *o;
        if self.vflip {
            (o.ymin, o.ymax) = (height - o.ymax, height - o.ymin);
        }
        if self.hflip {
            (o.xmin, o.xmax) = (width - o.xmax, width - o.xmin);
        }
        if self.transpose {
            o = Object { xmin: o.ymin, ymin: o.xmin, xmax: o.ymax, ymax: o.xmax, class: o.class };
        }
        o
    }
}

pub struct PredictorImpl {
    model: Transformer,
    classes: Vec<String>,
    task: Objective,
    normalization: Normalization,
    /// Flip TTA: how many of [`DIHEDRAL_VIEWS`] the model was trained to see (1 or 2 for a classifier; 1, 2 or 8).
    tta_views: usize,
    device: Device,
}

impl PredictorImpl {
    pub fn load(path: &Path, choice: checkpoint::WeightsChoice) -> anyhow::Result<Self> {
        let meta = checkpoint::read_meta(path)?;
        let device = Device::Cpu;
        let weights = checkpoint::read_model_weights(path, choice, &device)?;
        let (model, _, fresh) = crate::train::run::build_model(&meta.model, Some(&weights), false, 0, &device)
            .with_context(|| format!("{}: weights do not match the model described in checkpoint.json", path.display()))?;
        // Checkpoints written before a training-only head existed lack it; prediction never uses it.
        let fresh: Vec<String> = fresh.into_iter().filter(|n| !crate::model::transformer::is_training_only(n)).collect();
        anyhow::ensure!(
            fresh.is_empty(),
            "{}: the weights file lacks parameters the model needs ({}); the checkpoint is incomplete",
            path.display(),
            fresh.join(", ")
        );
        if meta.task != Objective::Pretrain {
            anyhow::ensure!(
                meta.class_names.len() <= meta.model.n_classes,
                "{}: {} class names but the model has {} class tokens",
                path.display(),
                meta.class_names.len(),
                meta.model.n_classes
            );
        }
        // TTA shows the model only orientations its training augmentation showed it. A checkpoint without training
        // state (stripped for shipping) or from before runs recorded their augmentation was trained with the
        // defaults, which mirrored classifiers' images only since the mirror check: assume no mirrors.
        let augment = meta.train.as_ref().and_then(|t| t.config.augment).unwrap_or_else(|| default_augment(meta.task, usize::MAX, false));
        // A classifier looks at the mirror image only if it learned that a mirror keeps the class: mirroring a model
        // trained without flips cost Fashion-MNIST 4 points (0.897 → 0.857).
        let tta_views = match meta.task {
            Objective::Classify if augment.hflip || augment.dihedral => 2,
            Objective::Classify => 1,
            _ if augment.dihedral => 8,
            _ if augment.hflip => 2,
            _ => 1,
        };
        Ok(PredictorImpl { model, classes: meta.class_names, task: meta.task, normalization: meta.normalization, tta_views, device })
    }

    pub fn tta_views(&self) -> usize {
        self.tta_views
    }

    pub fn config(&self) -> &ModelConfig {
        &self.model.cfg
    }

    pub fn task(&self) -> Task {
        match self.task {
            Objective::Classify => Task::Classify,
            // A pretrained-only checkpoint has no task head trained; report detection (the app's default) and refuse
            // to predict with it below.
            Objective::Detect | Objective::Pretrain => Task::Detect,
        }
    }
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }
    pub fn image_size(&self) -> usize {
        self.model.cfg.image_size
    }

    fn patches(&self, images: &[DynamicImage]) -> anyhow::Result<(Tensor, Vec<Letterbox>)> {
        let size = self.model.cfg.image_size;
        let mut flat = Vec::with_capacity(images.len() * 3 * size * size);
        let mut boxes = vec![];
        for img in images {
            let (p, lb) = preprocess(img, size, &self.normalization);
            flat.extend_from_slice(&p);
            boxes.push(lb);
        }
        let t = Tensor::from_vec(flat, (images.len(), 3, size, size), &self.device)?;
        Ok((patchify(&t, self.model.cfg.patch_size)?, boxes))
    }

    /// Softmax over the project's classes (the vocabulary may hold more class slots than the project uses).
    fn class_probs(&self, patches: &Tensor) -> anyhow::Result<Vec<Vec<f32>>> {
        let logits = objectives::classify_logits(&self.model, patches)?;
        let logits = logits.narrow(1, 0, self.classes.len())?.contiguous()?;
        Ok(candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?)
    }

    pub fn predict(&self, image: &DynamicImage, opts: &PredictOptions) -> anyhow::Result<Prediction> {
        Ok(self.predict_batch(std::slice::from_ref(image), opts)?.remove(0))
    }

    pub fn predict_batch(&self, images: &[DynamicImage], opts: &PredictOptions) -> anyhow::Result<Vec<Prediction>> {
        if images.is_empty() {
            return Ok(vec![]);
        }
        anyhow::ensure!(
            self.task != Objective::Pretrain,
            "this checkpoint is only pretrained (no classification or detection head trained yet): fine-tune it with `tessera train DATA --init CKPT`"
        );
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(32) {
            let (patches, boxes) = self.patches(chunk)?;
            match self.task {
                Objective::Classify => {
                    let mut probs = self.class_probs(&patches)?;
                    if opts.flip_tta && self.tta_views >= 2 {
                        let mirrored: Vec<DynamicImage> = chunk.iter().map(DynamicImage::fliph).collect();
                        let (mirrored, _) = self.patches(&mirrored)?;
                        for (p, m) in probs.iter_mut().zip(self.class_probs(&mirrored)?) {
                            p.iter_mut().zip(m).for_each(|(p, m)| *p = 0.5 * (*p + m));
                        }
                    }
                    out.extend(probs.into_iter().map(|probs| Prediction { probs, detections: vec![] }));
                }
                _ => {
                    let mut per_image = self.detect_original(&patches, &boxes, opts)?;
                    if opts.flip_tta {
                        // Per image, the boxes of every view (mapped back to the image), then fused.
                        let mut views: Vec<Vec<Vec<RawDetection>>> = per_image.into_iter().map(|d| vec![d]).collect();
                        for view in &DIHEDRAL_VIEWS[1..self.tta_views] {
                            let transformed: Vec<DynamicImage> = chunk.iter().map(|img| view.apply(img)).collect();
                            let (t_patches, t_boxes) = self.patches(&transformed)?;
                            let dets = self.detect_original(&t_patches, &t_boxes, opts)?;
                            for ((mut d, t), image_views) in dets.into_iter().zip(&transformed).zip(&mut views) {
                                let (w, h) = (t.width() as f32, t.height() as f32);
                                d.iter_mut().for_each(|x| x.object = view.undo(&x.object, w, h));
                                image_views.push(d);
                            }
                        }
                        per_image = views.iter().map(|v| objectives::weighted_box_fusion(v, TTA_FUSION_IOU)).collect();
                    }
                    for d in per_image {
                        let detections = d
                            .into_iter()
                            .filter(|x| x.score >= opts.threshold)
                            .map(|x| Detection { bbox: x.object.into(), score: x.score })
                            .filter(|x| x.bbox.width() > 0.0 && x.bbox.height() > 0.0)
                            .take(opts.max_objects)
                            .collect();
                        out.push(Prediction { probs: vec![], detections });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Decodes boxes for a batch and returns them per image in original image pixels (best first, after NMS, only
    /// the project's classes).
    fn detect_original(&self, patches: &Tensor, boxes: &[Letterbox], opts: &PredictOptions) -> anyhow::Result<Vec<Vec<RawDetection>>> {
        let dopts = DecodeOptions { max_objects: opts.max_objects, min_objects: opts.min_objects, top_p: opts.top_p, seed: 0, no_cache: false };
        let dets = objectives::detect_decode(&self.model, patches, &dopts)?;
        Ok(dets
            .into_iter()
            .zip(boxes)
            .map(|(d, lb)| {
                let d = match opts.nms_iou {
                    Some(iou) => objectives::nms(d, iou),
                    None => d,
                };
                d.into_iter()
                    .filter(|x| x.object.class < self.classes.len())
                    .map(|x| RawDetection { object: lb.to_original(&x.object).into(), score: x.score })
                    .collect()
            })
            .collect())
    }

    /// Attention from the class token's prediction position to the patches, per layer, averaged over heads.
    pub fn attention(&self, image: &DynamicImage, object: Option<usize>) -> anyhow::Result<AttentionMap> {
        let cfg = &self.model.cfg;
        let (patches, _) = self.patches(std::slice::from_ref(image))?;
        let n = cfg.n_patches();
        // The sequence up to the position that emits the wanted token.
        let tokens: Vec<u32> = match self.task {
            Objective::Classify | Objective::Pretrain => vec![vocab::TASK_CLASSIFY],
            Objective::Detect => {
                // Decode greedily with full recomputation to get the prefix of object `object`'s class token.
                let want = object.unwrap_or(0);
                let dopts = DecodeOptions { max_objects: want + 1, min_objects: 0, top_p: None, seed: 0, no_cache: false };
                let dets = objectives::detect_decode(&self.model, &patches, &dopts)?;
                let v = cfg.vocab();
                let mut toks = vec![vocab::TASK_DETECT];
                // Objects come back sorted by score; rebuild the decoding order is not needed for the map: use the
                // boxes of the first `want` objects as the context, then the wanted object's coordinates.
                for d in dets[0].iter().take(want + 1) {
                    let o = d.object;
                    for c in [o.ymin, o.xmin, o.ymax, o.xmax] {
                        toks.push(v.bin_token(v.quantize(c, cfg.image_size as f32)));
                    }
                    toks.push(v.class_token(o.class.min(v.n_classes.saturating_sub(1))));
                }
                toks.pop(); // predict the class token of the last object from its coordinates
                toks
            }
        };
        let l = tokens.len();
        let x = match self.task {
            Objective::Detect => objectives::embed_detect_sequence(&self.model, &patches, &[tokens])?,
            _ => self.model.embed(Some(&patches), Some(&Tensor::from_vec(tokens, (1, l), &self.device)?), 0)?,
        };
        let mask = prefix_len(n + l, n, &self.device)?;
        let mut record = vec![];
        let mut cache = KvCache::new(cfg, 1, n + l, &self.device)?;
        self.model.forward_embedded(&x, Some(mask), Some(&mut cache), Some(&mut record))?;
        let mut per_layer = vec![];
        for probs in record {
            // [1, heads, T, T] -> row of the last position over the patch columns, mean over heads.
            let row = probs.i((0, .., n + l - 1, 0..n))?.mean(0)?;
            let mut v = row.to_vec1::<f32>()?;
            let s: f32 = v.iter().sum();
            if s > 0.0 {
                v.iter_mut().for_each(|x| *x /= s);
            }
            per_layer.push(v);
        }
        Ok(AttentionMap { grid: (cfg.grid(), cfg.grid()), per_layer })
    }

    /// The input image (letterboxed to the model size) with every patch after the first `keep` replaced by the
    /// model's prediction: from the patches before it (next-patch pretraining), or, for a model pretrained by
    /// masking, from the first `keep` with the rest blanked. Predictions are per-patch normalised, so each is
    /// rescaled to the true patch's mean and spread (as AIM does for visualisation).
    pub fn reconstruct(&self, image: &DynamicImage, keep: usize) -> anyhow::Result<Option<DynamicImage>> {
        if !matches!(self.task, Objective::Pretrain) {
            return Ok(None);
        }
        let cfg = &self.model.cfg;
        let (patches, _) = self.patches(std::slice::from_ref(image))?;
        let n = cfg.n_patches();
        let keep = keep.clamp(1, n);
        // Row i of `pred` predicts patch i + shift.
        let (pred, shift) = if cfg.pretrain_mask_ratio > 0.0 {
            let masked: Vec<f32> = (0..n).map(|i| if i < keep { 0.0 } else { 1.0 }).collect();
            let masked = Tensor::from_vec(masked, (1, n), &self.device)?;
            (objectives::masked_predictions(&self.model, &patches, &masked)?, 0)
        } else {
            (objectives::predict_next_patches(&self.model, &patches, keep)?, 1)
        };
        let pred = objectives::full_resolution_patches(cfg, &pred)?;
        let truth = patches.i(0)?.to_vec2::<f32>()?;
        let pred = pred.i(0)?.to_vec2::<f32>()?;
        let mut rows = truth.clone();
        for i in keep..n {
            let t = &truth[i];
            let mean = t.iter().sum::<f32>() / t.len() as f32;
            let std = (t.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / t.len() as f32).sqrt();
            rows[i] = pred[i - shift].iter().map(|p| p * std + mean).collect();
        }
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        let t = Tensor::from_vec(flat, (1, n, cfg.patch_dim()), &self.device)?;
        let img = unpatchify(&t, cfg.patch_size, cfg.channels, cfg.grid())?.i(0)?; // [3, S, S]
        let s = cfg.image_size;
        let data = img.flatten_all()?.to_vec1::<f32>()?;
        let norm = self.normalization;
        let mut out = RgbImage::new(s as u32, s as u32);
        for (x, y, p) in out.enumerate_pixels_mut() {
            for c in 0..3 {
                let v = data[c * s * s + y as usize * s + x as usize] * norm.std[c] + norm.mean[c];
                p.0[c] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
            }
        }
        Ok(Some(DynamicImage::ImageRgb8(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every view, applied to a non-square image with one marked rectangle, moves the rectangle to where `undo`
    /// maps it back from.
    #[test]
    fn each_view_maps_its_boxes_back_to_the_original_image() {
        let (w, h) = (40u32, 30u32);
        let marked = Object { xmin: 5.0, ymin: 8.0, xmax: 17.0, ymax: 13.0, class: 2 };
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            let inside = (x as f32) >= marked.xmin && (x as f32) < marked.xmax && (y as f32) >= marked.ymin && (y as f32) < marked.ymax;
            image::Rgb(if inside { [255, 255, 255] } else { [0, 0, 0] })
        }));
        for view in DIHEDRAL_VIEWS {
            let t = view.apply(&img).to_rgb8();
            // The marked rectangle's pixel extent in the transformed image, as a box.
            let lit: Vec<(u32, u32)> = t.enumerate_pixels().filter(|p| p.2[0] > 128).map(|p| (p.0, p.1)).collect();
            let seen = Object {
                xmin: lit.iter().map(|p| p.0).min().unwrap() as f32,
                ymin: lit.iter().map(|p| p.1).min().unwrap() as f32,
                xmax: lit.iter().map(|p| p.0).max().unwrap() as f32 + 1.0,
                ymax: lit.iter().map(|p| p.1).max().unwrap() as f32 + 1.0,
                class: 2,
            };
            let back = view.undo(&seen, t.width() as f32, t.height() as f32);
            assert_eq!(back, marked, "{view:?}");
        }
        // The eight views are distinct.
        let images: Vec<Vec<u8>> = DIHEDRAL_VIEWS.iter().map(|v| v.apply(&img).to_rgb8().into_raw()).collect();
        let shapes: Vec<(u32, u32)> = DIHEDRAL_VIEWS.iter().map(|v| (v.apply(&img).width(), v.apply(&img).height())).collect();
        for i in 0..8 {
            for j in 0..i {
                assert!(images[i] != images[j] || shapes[i] != shapes[j], "views {i} and {j} are the same");
            }
        }
    }
}
