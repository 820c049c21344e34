//! Engine side of [`super::predictor::Predictor`]: loads a checkpoint into an inference model (plain tensors, fused
//! kernels) and runs classification, detection decoding, attention maps and generative reconstruction.
use std::path::Path;

use anyhow::Context;
use candle_core::{Device, IndexOp, Tensor};
use image::{DynamicImage, RgbImage};

use super::config::ModelConfig;
use super::objectives::{self, DecodeOptions};
use super::predictor::{AttentionMap, Detection, PredictOptions, Prediction};
use super::transformer::{patchify, prefix_len, unpatchify, KvCache, Transformer};
use super::vocab;
use crate::data::project::Task;
use crate::train::checkpoint;
use crate::train::data::{preprocess, Letterbox, Normalization};
use crate::train::worker::Objective;

pub struct PredictorImpl {
    model: Transformer,
    classes: Vec<String>,
    task: Objective,
    normalization: Normalization,
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
        Ok(PredictorImpl { model, classes: meta.class_names, task: meta.task, normalization: meta.normalization, device })
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
                    if opts.flip_tta {
                        let mirrored: Vec<DynamicImage> = chunk.iter().map(DynamicImage::fliph).collect();
                        let (mirrored, _) = self.patches(&mirrored)?;
                        for (p, m) in probs.iter_mut().zip(self.class_probs(&mirrored)?) {
                            p.iter_mut().zip(m).for_each(|(p, m)| *p = 0.5 * (*p + m));
                        }
                    }
                    out.extend(probs.into_iter().map(|probs| Prediction { probs, detections: vec![] }));
                }
                _ => {
                    let dopts = DecodeOptions { max_objects: opts.max_objects, min_objects: opts.min_objects, top_p: opts.top_p, seed: 0, no_cache: false };
                    let dets = objectives::detect_decode(&self.model, &patches, &dopts)?;
                    for (d, lb) in dets.into_iter().zip(&boxes) {
                        let d = match opts.nms_iou {
                            Some(iou) => objectives::nms(d, iou),
                            None => d,
                        };
                        let detections = d
                            .into_iter()
                            .filter(|x| x.score >= opts.threshold && x.object.class < self.classes.len())
                            .map(|x| Detection { bbox: lb.to_original(&x.object), score: x.score })
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
    /// model's prediction from the patches before it. Predictions are per-patch normalised, so each is rescaled to
    /// the true patch's mean and spread (as AIM does for visualisation).
    pub fn reconstruct(&self, image: &DynamicImage, keep: usize) -> anyhow::Result<Option<DynamicImage>> {
        if !matches!(self.task, Objective::Pretrain) {
            return Ok(None);
        }
        let cfg = &self.model.cfg;
        let (patches, _) = self.patches(std::slice::from_ref(image))?;
        let n = cfg.n_patches();
        let keep = keep.clamp(1, n);
        let pred = objectives::predict_next_patches(&self.model, &patches, keep)?; // position i predicts patch i+1
        let truth = patches.i(0)?.to_vec2::<f32>()?;
        let pred = pred.i(0)?.to_vec2::<f32>()?;
        let mut rows = truth.clone();
        for i in keep..n {
            let t = &truth[i];
            let mean = t.iter().sum::<f32>() / t.len() as f32;
            let std = (t.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / t.len() as f32).sqrt();
            rows[i] = pred[i - 1].iter().map(|p| p * std + mean).collect();
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
