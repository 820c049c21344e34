//! Model hyper-parameters: one serialisable struct, stored in every checkpoint, plus named presets.
use serde::{Deserialize, Serialize};

/// How token positions are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// A learned embedding per patch position and per output-token position.
    Learned,
    /// Fixed 2-D sine-cosine embeddings of the patch's row and column (plus a learned residual), and fixed 1-D
    /// sine-cosine embeddings of coordinate-bin tokens: geometry the model need not learn from a small dataset.
    #[serde(rename = "sincos")]
    SinCos,
}

/// What generative pretraining predicts for the next patch (see `objectives::pretrain_targets`). Each is
/// per-patch normalised (AIM). The two smoothed targets ask the trunk for a patch's layout and colour rather than
/// its exact texture (PixMIM's low-pass idea); on CIFAR-10 at 100 labels per class both transferred 2–2.5 points
/// worse than the pixels (README, session 25), hence the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PretrainTarget {
    /// The patch's pixels.
    #[default]
    Pixels,
    /// The patch's pixels averaged over 2×2 blocks: half the resolution, a quarter of the values.
    Pooled,
    /// The patch's pixels after a Gaussian blur (σ = 1 px) of the whole image: full resolution, no fine texture.
    Blurred,
}

impl std::str::FromStr for PretrainTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pixels" => Ok(PretrainTarget::Pixels),
            "pooled" => Ok(PretrainTarget::Pooled),
            "blurred" => Ok(PretrainTarget::Blurred),
            other => Err(format!("unknown pretraining target '{other}' (expected pixels, pooled or blurred)")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Preset this config came from (informational).
    pub preset: String,
    /// Square input size in pixels; a multiple of `patch_size`.
    pub image_size: usize,
    pub patch_size: usize,
    pub channels: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Hidden size of the MLP = `dim * mlp_ratio`.
    pub mlp_ratio: usize,
    /// Coordinate bins for detection tokens.
    pub n_bins: usize,
    /// Most objects a detection sequence can hold (real + noise).
    pub max_objects: usize,
    /// Number of class tokens in the vocabulary (grows when fine-tuning on more classes).
    pub n_classes: usize,
    pub positions: Positions,
    pub norm_eps: f64,
    /// Detection: add the box centre's position code to each object's last coordinate token (see
    /// `objectives::embed_detect_tokens`). False for checkpoints from before it existed.
    #[serde(default)]
    pub box_query: bool,
    /// Local mixing in every MLP (see `transformer::LocalMixing`): each patch also sees its already-read grid
    /// neighbours through a learned depthwise filter. False for checkpoints from before it existed.
    #[serde(default)]
    pub local_mixing: bool,
    /// Local mixing also reads the following neighbours (right, down-left, down, down-right) wherever all patches
    /// see each other (classification, detection); pretraining's causal order keeps to the preceding four. False
    /// for checkpoints from before it existed.
    #[serde(default)]
    pub local_mixing_full: bool,
    /// Filters of the convolutional patch stem (see `transformer::PatchStem`); 0: the plain linear patch embedding
    /// (also what checkpoints from before it existed load as).
    #[serde(default)]
    pub stem_channels: usize,
    /// Residual MLP blocks between the trunk and the pixel head's output layer (see `transformer::PixelHead`);
    /// 0: one linear layer (also what checkpoints from before it existed load as).
    #[serde(default)]
    pub pixel_head_blocks: usize,
    /// What the pixel head predicts; pixels for checkpoints from before the choice existed.
    #[serde(default)]
    pub pretrain_target: PretrainTarget,
    /// Generative pretraining's task: 0 predicts each next patch from the ones before it (AIM, prefix-causal);
    /// a fraction in (0, 1) blanks that share of the patches at random and predicts them from the rest, every
    /// patch seeing every other (SimMIM's masked image modelling; fine-tuning's attention exactly). On CIFAR-10 at
    /// 100 labels per class it transferred no better than next-patch prediction at any ratio tried (0.25 tied,
    /// 0.5 and 0.75 worse; README, session 26), hence the default. 0 for checkpoints from before it existed.
    #[serde(default)]
    pub pretrain_mask_ratio: f64,
    /// Weight of next-patch prediction's second target (0 = off): besides the next patch's pixels, the features a
    /// teacher (an exponential moving average of the model, as in data2vec) computes for that patch while seeing the
    /// whole image, which carry what the rest of the image says about it. A model with it has a feature head; 0
    /// for checkpoints from before it existed.
    #[serde(default)]
    pub pretrain_feature_weight: f64,
}

impl ModelConfig {
    /// A named preset at its default input size. Errors name the valid presets.
    pub fn preset(name: &str) -> Result<ModelConfig, String> {
        let base = ModelConfig {
            preset: name.to_string(),
            image_size: 64,
            patch_size: 8,
            channels: 3,
            dim: 128,
            n_layers: 4,
            n_heads: 4,
            mlp_ratio: 2,
            n_bins: 64,
            max_objects: 10,
            n_classes: 0,
            positions: Positions::SinCos,
            norm_eps: 1e-5,
            box_query: true,
            // Shapes detection, tiny, 1500 steps, seed 1: test mAP@0.5 0.513 with, 0.335 without (README, Quality).
            local_mixing: true,
            local_mixing_full: false,
            stem_channels: 0,
            pixel_head_blocks: 0,
            pretrain_target: PretrainTarget::Pixels,
            pretrain_mask_ratio: 0.0,
            pretrain_feature_weight: 0.0,
        };
        match name {
            // Trains usefully in minutes on 2 CPU cores at 32–128 px.
            "tiny" => Ok(base),
            // A few times tiny: a laptop's CPU in tens of minutes, or a small GPU.
            "small" => Ok(ModelConfig { dim: 256, n_layers: 6, n_heads: 8, mlp_ratio: 4, image_size: 96, n_bins: 96, max_objects: 20, ..base }),
            // GPU-sized.
            "base" => Ok(ModelConfig {
                dim: 512,
                n_layers: 12,
                n_heads: 8,
                mlp_ratio: 4,
                image_size: 224,
                patch_size: 16,
                n_bins: 224,
                max_objects: 40,
                ..base
            }),
            other => Err(format!("unknown preset '{other}' (expected tiny, small or base)")),
        }
    }

    /// Adapts the input size (and, for tiny images, the patch size) so there are 16–256 patches, and the coordinate
    /// bins so one bin is about two input pixels (but at least 32): finer bins measured no better and learn slower.
    pub fn with_image_size(mut self, image_size: usize) -> ModelConfig {
        let mut patch = self.patch_size;
        while patch > 2 && (image_size / patch) * (image_size / patch) < 36 {
            patch /= 2;
        }
        let image_size = (image_size / patch).max(2) * patch;
        self.patch_size = patch;
        self.image_size = image_size;
        self.n_bins = (image_size / 2).clamp(32, 512);
        self
    }

    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn n_patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Values per patch: patch_size² × channels.
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.channels
    }
    /// Values the pixel head predicts per patch (see [`PretrainTarget`]).
    pub fn pixel_target_dim(&self) -> usize {
        match self.pretrain_target {
            PretrainTarget::Pooled => self.patch_dim() / 4,
            PretrainTarget::Pixels | PretrainTarget::Blurred => self.patch_dim(),
        }
    }
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }
    /// Longest output-token sequence: the task token, then 5 tokens per object, then EOS.
    pub fn max_output_tokens(&self) -> usize {
        1 + 5 * self.max_objects + 1
    }
    pub fn vocab(&self) -> super::vocab::Vocab {
        super::vocab::Vocab::new(self.n_bins, self.n_classes)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            return Err(format!("image size {} is not a multiple of patch size {}", self.image_size, self.patch_size));
        }
        if self.n_heads == 0 || self.dim % self.n_heads != 0 {
            return Err(format!("dim {} is not divisible by {} heads", self.dim, self.n_heads));
        }
        if self.n_layers == 0 || self.mlp_ratio == 0 || self.n_bins < 2 || self.max_objects == 0 {
            return Err("n_layers, mlp_ratio, n_bins and max_objects must be positive".into());
        }
        if self.pretrain_target == PretrainTarget::Pooled && self.patch_size % 2 != 0 {
            return Err(format!("the pooled pretraining target needs an even patch size, not {}", self.patch_size));
        }
        if !(0.0..1.0).contains(&self.pretrain_mask_ratio) {
            return Err(format!("the pretraining mask ratio must be at least 0 and below 1, not {}", self.pretrain_mask_ratio));
        }
        if !(self.pretrain_feature_weight >= 0.0 && self.pretrain_feature_weight.is_finite()) {
            return Err(format!("the pretraining feature weight must be a finite number of at least 0, not {}", self.pretrain_feature_weight));
        }
        if self.pretrain_feature_weight > 0.0 && self.pretrain_mask_ratio > 0.0 {
            return Err("the teacher's feature target goes with next-patch prediction, not with a pretraining mask ratio".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_unknown_is_refused() {
        for p in ["tiny", "small", "base"] {
            ModelConfig::preset(p).unwrap().validate().unwrap();
        }
        assert!(ModelConfig::preset("huge").unwrap_err().contains("tiny"));
    }

    #[test]
    fn small_images_get_smaller_patches() {
        let c = ModelConfig::preset("tiny").unwrap().with_image_size(32);
        assert_eq!((c.image_size, c.patch_size), (32, 4));
        let c = ModelConfig::preset("tiny").unwrap().with_image_size(100);
        assert_eq!(c.image_size % c.patch_size, 0);
        c.validate().unwrap();
    }

    /// Checkpoints from before the choice of pretraining target load as pixels by next-patch prediction without a
    /// feature target; an odd patch cannot be pooled; out-of-range ratios and weights are refused.
    #[test]
    fn pretraining_target_defaults_to_pixels_and_pooling_needs_even_patches() {
        let c = ModelConfig::preset("tiny").unwrap();
        let mut json = serde_json::to_value(&c).unwrap();
        json.as_object_mut().unwrap().remove("pretrain_target");
        json.as_object_mut().unwrap().remove("pretrain_mask_ratio");
        json.as_object_mut().unwrap().remove("pretrain_feature_weight");
        let old: ModelConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.pretrain_target, PretrainTarget::Pixels);
        assert_eq!("blurred".parse::<PretrainTarget>(), Ok(PretrainTarget::Blurred));
        assert!("hog".parse::<PretrainTarget>().unwrap_err().contains("pooled"));
        assert_eq!(old.pretrain_mask_ratio, 0.0, "next-patch prediction");
        assert_eq!(old.pretrain_feature_weight, 0.0, "pixels only, no feature head");
        let odd = ModelConfig { image_size: 30, patch_size: 3, pretrain_target: PretrainTarget::Pooled, ..c.clone() };
        assert!(odd.validate().unwrap_err().contains("even patch size"));
        let all_masked = ModelConfig { pretrain_mask_ratio: 1.0, ..c.clone() };
        assert!(all_masked.validate().unwrap_err().contains("mask ratio"));
        for w in [-1.0, f64::NAN] {
            assert!(ModelConfig { pretrain_feature_weight: w, ..c.clone() }.validate().unwrap_err().contains("feature weight"));
        }
        let masked_with_teacher = ModelConfig { pretrain_feature_weight: 1.0, pretrain_mask_ratio: 0.5, ..c };
        assert!(masked_with_teacher.validate().unwrap_err().contains("next-patch"));
    }
}
