//! The backbone: a decoder-only transformer that reads an image as a prefix of patch tokens and writes output tokens.
//!
//! Sequence = [patch_1 .. patch_N] [task token] [output tokens ...]. Attention is bidirectional inside the image
//! prefix and causal after it (see [`prefix_mask`]). Two heads: a pixel head (generative pretraining: the next
//! patch's pixels) and a token head (classification and detection tokens).
use candle_core::{DType, Device, Module, Result, Tensor, D};

use super::config::{ModelConfig, Positions};
use super::fused_attention;
use super::ops::{gelu, local_mix, masked_softmax, rms_norm};
use super::params::{Init, ParamStore};

const INIT_STD: f64 = 0.02;

/// y = x Wᵀ + b over the last dimension, as one 2-D matmul (no per-batch broadcast of W).
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(p: &mut ParamStore, name: &str, in_dim: usize, out_dim: usize, std: f64, bias: bool) -> Result<Self> {
        let weight = p.get(&format!("{name}.weight"), &[out_dim, in_dim], Init::Normal(std))?;
        let bias = if bias { Some(p.get(&format!("{name}.bias"), &[out_dim], Init::Zeros)?) } else { None };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().unwrap() = self.weight.dim(0)?;
        y.reshape(out)
    }
}

pub struct RmsNorm {
    gain: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: &mut ParamStore, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm { gain: p.get(&format!("{name}.weight"), &[dim], Init::Ones)?, eps })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.gain, self.eps)
    }
}

/// Pre-allocated keys and values of every layer for incremental decoding.
pub struct KvCache {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    /// Tokens stored so far.
    pub len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, batch: usize, capacity: usize, device: &Device) -> Result<KvCache> {
        let shape = (batch, cfg.n_heads, capacity, cfg.head_dim());
        let mut keys = Vec::with_capacity(cfg.n_layers);
        let mut values = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            keys.push(Tensor::zeros(shape, DType::F32, device)?);
            values.push(Tensor::zeros(shape, DType::F32, device)?);
        }
        Ok(KvCache { keys, values, len: 0, capacity })
    }
}

pub struct Attention {
    qkv: Linear,
    proj: Linear,
    n_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(p: &mut ParamStore, name: &str, cfg: &ModelConfig) -> Result<Self> {
        let out_std = INIT_STD / (2.0 * cfg.n_layers as f64).sqrt();
        Ok(Attention {
            // Larger than INIT_STD (1/sqrt(dim)): attention starts non-uniform, which shortens the plateau before
            // a small model from scratch starts to use the image.
            qkv: Linear::new(p, &format!("{name}.qkv"), cfg.dim, 3 * cfg.dim, 1.0 / (cfg.dim as f64).sqrt(), false)?,
            proj: Linear::new(p, &format!("{name}.proj"), cfg.dim, cfg.dim, out_std, false)?,
            n_heads: cfg.n_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// `mask`: the prefix length of a prefix-causal mask; `None` = attend to everything (right for one new token
    /// continuing the cache).
    fn forward(
        &self,
        x: &Tensor,
        mask: Option<usize>,
        cache: Option<(&Tensor, &Tensor, usize)>,
        record: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let qkv = self.qkv.forward(x)?;
        if cache.is_none() && record.is_none() && fused_attention::supported(&qkv) {
            return self.proj.forward(&fused_attention::fused_attention(&qkv, self.n_heads, scale, mask)?);
        }
        let qkv = qkv.reshape((b, t, 3, self.n_heads, self.head_dim))?.permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let (k, v) = match cache {
            Some((kc, vc, offset)) => {
                kc.slice_set(&k, 2, offset)?;
                vc.slice_set(&v, 2, offset)?;
                (kc.narrow(2, 0, offset + t)?, vc.narrow(2, 0, offset + t)?)
            }
            None => (k, v),
        };
        let q_offset = cache.map_or(0, |c| c.2);
        let probs = masked_softmax(&q.matmul(&k.t()?)?, scale, mask, q_offset)?;
        if let Some(r) = record {
            r.push(probs.clone());
        }
        let y = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, c))?;
        self.proj.forward(&y)
    }
}

/// Locality for the patch tokens (as in LocalViT's depthwise convolution inside the MLP): each patch adds its
/// grid neighbours' hidden values, weighted by a learned filter per channel group. Only neighbours that come
/// earlier in raster order (up-left, up, up-right, left) are used, so the mixing is causal over the patch order
/// and generative pretraining (next patch from the previous ones) cannot peek. A small transformer from scratch on
/// small data learns "nearby pixels belong together" slowly; this gives it that bias. Zero-initialised: a new model
/// starts as the plain transformer.
pub struct LocalMixing {
    /// `[groups, taps]` learned weights: the four causal taps, then (with `local_mixing_full`) the four following.
    weight: Tensor,
    grid: usize,
}

/// Neighbour offsets (row, column) of [`LocalMixing`]: first the grid neighbours that precede a patch in raster
/// order (all that pretraining's causal order may read), then those that follow it.
static LOCAL_TAPS: [(isize, isize); 8] = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)];
const CAUSAL_TAPS: usize = 4;
/// Channel groups sharing one filter (hidden width / this many channels each).
const LOCAL_GROUPS: usize = 16;

impl LocalMixing {
    fn new(p: &mut ParamStore, name: &str, cfg: &ModelConfig, hidden: usize) -> Result<Self> {
        let groups = LOCAL_GROUPS.min(hidden);
        if hidden % groups != 0 {
            candle_core::bail!("local mixing: MLP width {hidden} is not a multiple of {groups} groups");
        }
        let taps = if cfg.local_mixing_full { LOCAL_TAPS.len() } else { CAUSAL_TAPS };
        Ok(LocalMixing { weight: p.get(&format!("{name}.weight"), &[groups, taps], Init::Zeros)?, grid: cfg.grid() })
    }

    /// `h` `[B, T, hidden]` whose first `n` positions are the image's patches in raster order (`n` = 0: none, as
    /// when decoding continues a cached sequence); the other positions pass through unchanged. `both_ways`: the
    /// patches see each other in both directions (else only the causal taps are used).
    fn forward(&self, h: &Tensor, n: usize, both_ways: bool) -> Result<Tensor> {
        if n == 0 {
            return Ok(h.clone());
        }
        let taps = self.weight.dim(1)?;
        if both_ways && taps == LOCAL_TAPS.len() {
            local_mix(h, &self.weight, self.grid, n, &LOCAL_TAPS)
        } else {
            local_mix(h, &self.weight.narrow(1, 0, CAUSAL_TAPS)?, self.grid, n, &LOCAL_TAPS[..CAUSAL_TAPS])
        }
    }
}

pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    local: Option<LocalMixing>,
}

impl Mlp {
    fn new(p: &mut ParamStore, name: &str, cfg: &ModelConfig) -> Result<Self> {
        let hidden = cfg.dim * cfg.mlp_ratio;
        let out_std = INIT_STD / (2.0 * cfg.n_layers as f64).sqrt();
        Ok(Mlp {
            fc1: Linear::new(p, &format!("{name}.fc1"), cfg.dim, hidden, INIT_STD, false)?,
            fc2: Linear::new(p, &format!("{name}.fc2"), hidden, cfg.dim, out_std, false)?,
            local: match cfg.local_mixing {
                true => Some(LocalMixing::new(p, &format!("{name}.local"), cfg, hidden)?),
                false => None,
            },
        })
    }

    /// `patches`: how many leading positions of `x` are the image's patches (see [`LocalMixing::forward`]).
    fn forward(&self, x: &Tensor, patches: usize, both_ways: bool) -> Result<Tensor> {
        let h = gelu(&self.fc1.forward(x)?)?;
        let h = match &self.local {
            Some(local) => local.forward(&h, patches, both_ways)?,
            None => h,
        };
        self.fc2.forward(&h)
    }
}

/// Pre-norm transformer block.
pub struct Block {
    norm1: RmsNorm,
    attn: Attention,
    norm2: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(p: &mut ParamStore, name: &str, cfg: &ModelConfig) -> Result<Self> {
        Ok(Block {
            norm1: RmsNorm::new(p, &format!("{name}.norm1"), cfg.dim, cfg.norm_eps)?,
            attn: Attention::new(p, &format!("{name}.attn"), cfg)?,
            norm2: RmsNorm::new(p, &format!("{name}.norm2"), cfg.dim, cfg.norm_eps)?,
            mlp: Mlp::new(p, &format!("{name}.mlp"), cfg)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Option<usize>,
        cache: Option<(&Tensor, &Tensor, usize)>,
        record: Option<&mut Vec<Tensor>>,
        patches: usize,
    ) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.norm1.forward(x)?, mask, cache, record)?)?;
        // The patches see each other both ways when all of them are in the bidirectional prefix.
        let both_ways = mask.is_none_or(|prefix| prefix >= patches);
        &x + self.mlp.forward(&self.norm2.forward(&x)?, patches, both_ways)?
    }
}

/// Convolutional patch stem (`ModelConfig::stem_channels` > 0): a learned bank of 3×3 filters over the pixels,
/// a GELU, and a projection of each patch's filter responses into its token, added to the linear patch embedding.
/// The plain embedding is linear in a patch's pixels; this gives every token local, non-linear features (edges,
/// corners) before the first attention layer, the "early convolutions" that help small transformers on small data.
///
/// The 3×3 windows reach across patch borders, with one rule: a patch reads only pixels of itself and of patches
/// before it in raster order unless all patches see each other (`both_ways`). Pretraining's causal order predicts
/// patch i+1 from token i, so token i must not see any of patch i+1's pixels. Windows are gathered by one
/// `index_select` on the (gradient-free) input, so the filters are a plain matmul.
pub struct PatchStem {
    filters: Linear,
    proj: Linear,
    /// Gather indices into `[N·patch_dim + 1]` (the last entry a zero pad) for every (patch, pixel, tap, channel):
    /// windows that may read every neighbour, and windows that read only preceding patches.
    windows_both_ways: Tensor,
    windows_causal: Tensor,
    taps: usize,
}

impl PatchStem {
    fn new(p: &mut ParamStore, cfg: &ModelConfig) -> Result<Self> {
        let (c, k, ps) = (cfg.channels, cfg.stem_channels, cfg.patch_size);
        let taps = 9 * c;
        let device = p.device().clone();
        let windows = |causal| Tensor::from_vec(stem_window_indices(cfg, causal), (cfg.n_patches() * ps * ps * taps,), &device);
        Ok(PatchStem {
            filters: Linear::new(p, "stem.filters", taps, k, 1.0 / (taps as f64).sqrt(), true)?,
            // Zero, so a new model starts as the plain linear embedding.
            proj: Linear::new(p, "stem.proj", ps * ps * k, cfg.dim, 0.0, false)?,
            windows_both_ways: windows(false)?,
            windows_causal: windows(true)?,
            taps,
        })
    }

    /// Patches `[B, N, patch_dim]` (all N of the image) → `[B, N, dim]`.
    fn forward(&self, patches: &Tensor, both_ways: bool) -> Result<Tensor> {
        let (b, n, _) = patches.dims3()?;
        let features = gelu(&self.filter_responses(patches, both_ways)?)?;
        let per_patch = features.elem_count() / (b * n);
        self.proj.forward(&features.reshape((b, n, per_patch))?)
    }

    /// The filters' responses at every pixel, `[B·N·patch²,  filters]` (patch by patch, pixels row-major).
    fn filter_responses(&self, patches: &Tensor, both_ways: bool) -> Result<Tensor> {
        let (b, n, pd) = patches.dims3()?;
        let windows = if both_ways { &self.windows_both_ways } else { &self.windows_causal };
        if windows.dim(0)? != n * pd * 9 {
            candle_core::bail!("patch stem: expected every patch of the image, got {n}");
        }
        let flat = Tensor::cat(&[patches.reshape((b, n * pd))?, Tensor::zeros((b, 1), patches.dtype(), patches.device())?], 1)?;
        let cols = flat.index_select(windows, 1)?.reshape(((), self.taps))?;
        self.filters.forward(&cols)
    }
}

/// [`PatchStem`]'s gather indices, patch by patch in raster order, then pixel by pixel inside the patch, then
/// the 3×3 taps (row-major), then channels.
fn stem_window_indices(cfg: &ModelConfig, causal: bool) -> Vec<u32> {
    let (ps, c, g) = (cfg.patch_size as isize, cfg.channels, cfg.grid() as isize);
    let side = g * ps;
    let pd = cfg.patch_dim();
    let zero = (cfg.n_patches() * pd) as u32;
    let mut out = Vec::with_capacity(cfg.n_patches() * pd * 9);
    for patch in 0..g * g {
        let (gy, gx) = (patch / g, patch % g);
        for py in 0..ps {
            for px in 0..ps {
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (y, x) = (gy * ps + py + dy, gx * ps + px + dx);
                        let source = (y / ps) * g + x / ps;
                        let readable = (0..side).contains(&y) && (0..side).contains(&x) && (!causal || source <= patch);
                        for ch in 0..c {
                            out.push(if readable {
                                (source as usize * pd + (((y % ps) * ps + x % ps) as usize) * c + ch) as u32
                            } else {
                                zero
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// Generative pretraining's head: the next patch's pixels from a position's final state. With
/// `cfg.pixel_head_blocks` > 0, residual MLP blocks come first, per position (AIM's finding: a deeper head takes
/// the pixel-level detail off the trunk's last layers, whose features then transfer better).
pub struct PixelHead {
    blocks: Vec<(RmsNorm, Linear, Linear)>,
    out: Linear,
}

impl PixelHead {
    fn new(p: &mut ParamStore, cfg: &ModelConfig) -> Result<Self> {
        let hidden = cfg.dim * cfg.mlp_ratio;
        // The output layer keeps its old name, so checkpoints from before the blocks existed load unchanged.
        let out = Linear::new(p, "pixel_head", cfg.dim, cfg.pixel_target_dim(), INIT_STD, true)?;
        let blocks = (0..cfg.pixel_head_blocks)
            .map(|i| {
                let name = format!("pixel_head_blocks.{i}");
                Ok((
                    RmsNorm::new(p, &format!("{name}.norm"), cfg.dim, cfg.norm_eps)?,
                    Linear::new(p, &format!("{name}.fc1"), cfg.dim, hidden, INIT_STD, true)?,
                    Linear::new(p, &format!("{name}.fc2"), hidden, cfg.dim, INIT_STD, true)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(PixelHead { blocks, out })
    }
}

impl Module for PixelHead {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (norm, fc1, fc2) in &self.blocks {
            x = (&x + fc2.forward(&gelu(&fc1.forward(&norm.forward(&x)?)?)?)?)?;
        }
        self.out.forward(&x)
    }
}

pub struct Transformer {
    pub cfg: ModelConfig,
    patch_embed: Linear,
    /// Convolutional features added to the linear patch embedding (`cfg.stem_channels` > 0).
    stem: Option<PatchStem>,
    patch_pos: Tensor,
    /// Fixed (not learned) additions: sine-cosine positions of patches and values of coordinate bins.
    fixed_patch_pos: Option<Tensor>,
    fixed_token_embed: Option<Tensor>,
    token_embed: Tensor,
    token_pos: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    pub pixel_head: PixelHead,
    pub token_head: Linear,
    /// Training-only dense head on the image prefix (detection's auxiliary loss): per patch, the distances from its
    /// centre to the four sides of the object covering it, then background and class logits. See
    /// [`super::objectives::dense_aux_loss`].
    pub dense_head: Linear,
    /// Training-only head of next-patch prediction's feature target (`cfg.pretrain_feature_weight` > 0): the
    /// teacher's features of the next patch. See [`super::objectives::pretrain_loss_with_features`].
    pub feature_head: Option<Linear>,
}

impl Transformer {
    pub fn new(cfg: &ModelConfig, p: &mut ParamStore) -> Result<Transformer> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let vocab = cfg.vocab().size();
        let device = p.device().clone();
        let (fixed_patch_pos, fixed_token_embed, pos_std) = match cfg.positions {
            Positions::Learned => (None, None, INIT_STD),
            Positions::SinCos => {
                let g = cfg.grid();
                let patch: Vec<f32> = (0..g * g).flat_map(|i| sincos_2d(i / g, i % g, cfg.dim)).collect();
                let v = cfg.vocab();
                let mut tok = vec![0f32; vocab * cfg.dim];
                for b in 0..v.n_bins {
                    let row = v.bin_token(b) as usize;
                    // Scaled so that the bin value spans the same frequencies as a patch row/column.
                    let x = b as f32 * g as f32 / v.n_bins as f32;
                    tok[row * cfg.dim..(row + 1) * cfg.dim].copy_from_slice(&sincos_1d(x, cfg.dim));
                }
                (
                    Some(Tensor::from_vec(patch, (g * g, cfg.dim), &device)?),
                    Some(Tensor::from_vec(tok, (vocab, cfg.dim), &device)?),
                    0.0,
                )
            }
        };
        let blocks = (0..cfg.n_layers).map(|i| Block::new(p, &format!("blocks.{i}"), cfg)).collect::<Result<_>>()?;
        Ok(Transformer {
            cfg: cfg.clone(),
            patch_embed: Linear::new(p, "patch_embed", cfg.patch_dim(), cfg.dim, 1.0 / (cfg.patch_dim() as f64).sqrt(), true)?,
            patch_pos: p.get("patch_pos", &[cfg.n_patches(), cfg.dim], if pos_std > 0.0 { Init::Normal(pos_std) } else { Init::Zeros })?,
            fixed_patch_pos,
            fixed_token_embed,
            token_embed: p.get("token_embed", &[vocab, cfg.dim], Init::Normal(INIT_STD))?,
            token_pos: p.get("token_pos", &[cfg.max_output_tokens(), cfg.dim], Init::Normal(INIT_STD))?,
            blocks,
            norm: RmsNorm::new(p, "norm", cfg.dim, cfg.norm_eps)?,
            pixel_head: PixelHead::new(p, cfg)?,
            token_head: Linear::new(p, "token_head", cfg.dim, vocab, INIT_STD, true)?,
            // Created last so that adding it left every other parameter's seeded init unchanged.
            dense_head: Linear::new(p, "dense_head", cfg.dim, super::objectives::DENSE_BOX_OUTPUTS + 1 + cfg.n_classes, INIT_STD, true)?,
            // After every other parameter (fields initialise in this order), so that a model without a stem
            // draws the same seeded init as before.
            stem: if cfg.stem_channels > 0 { Some(PatchStem::new(p, cfg)?) } else { None },
            // Last of all, for the same reason.
            feature_head: if cfg.pretrain_feature_weight > 0.0 { Some(Linear::new(p, "feature_head", cfg.dim, cfg.dim, INIT_STD, true)?) } else { None },
        })
    }

    pub fn device(&self) -> &Device {
        self.token_embed.device()
    }

    /// Embeds patches `[B, N, patch_dim]` and/or output tokens `[B, L]` (u32) whose first one sits at output position
    /// `token_offset`. The patches see each other both ways (classification, detection); see [`Transformer::forward`]
    /// for pretraining's causal order.
    pub fn embed(&self, patches: Option<&Tensor>, tokens: Option<&Tensor>, token_offset: usize) -> Result<Tensor> {
        self.embed_with(patches, tokens, token_offset, true)
    }

    fn embed_with(&self, patches: Option<&Tensor>, tokens: Option<&Tensor>, token_offset: usize, both_ways: bool) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(2);
        if let Some(p) = patches {
            let n = p.dim(1)?;
            let pos = match &self.fixed_patch_pos {
                Some(f) => (&self.patch_pos + f)?,
                None => self.patch_pos.clone(),
            };
            let mut x = self.patch_embed.forward(p)?;
            if let Some(stem) = &self.stem {
                x = (x + stem.forward(p, both_ways)?)?;
            }
            parts.push(x.broadcast_add(&pos.narrow(0, 0, n)?)?);
        }
        if let Some(t) = tokens {
            let (b, l) = t.dims2()?;
            let table = match &self.fixed_token_embed {
                Some(f) => (&self.token_embed + f)?,
                None => self.token_embed.clone(),
            };
            let e = table.index_select(&t.flatten_all()?, 0)?.reshape((b, l, self.cfg.dim))?;
            parts.push(e.broadcast_add(&self.token_pos.narrow(0, token_offset, l)?)?);
        }
        match parts.len() {
            1 => Ok(parts.pop().unwrap()),
            _ => Tensor::cat(&parts, 1),
        }
    }

    /// Runs the blocks over embedded `x` `[B, T, dim]`; returns the final-normed hidden states.
    /// With a cache, `x` continues the cached sequence. `record` collects every layer's attention probabilities.
    pub fn forward_embedded(
        &self,
        x: &Tensor,
        mask: Option<usize>,
        mut cache: Option<&mut KvCache>,
        mut record: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor> {
        let t = x.dim(1)?;
        let offset = cache.as_ref().map_or(0, |c| c.len);
        if let Some(c) = &cache {
            if offset + t > c.capacity {
                candle_core::bail!("KV cache full: {} + {t} > {}", offset, c.capacity);
            }
        }
        // Every sequence starts with the image's patches, so a chunk at offset 0 holds them (a cached continuation
        // holds output tokens only).
        let patches = if offset == 0 { self.cfg.n_patches().min(t) } else { 0 };
        let mut x = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_ref().map(|c| (&c.keys[i], &c.values[i], offset));
            x = block.forward(&x, mask, layer_cache, record.as_deref_mut(), patches)?;
        }
        if let Some(c) = cache.as_mut() {
            c.len += t;
        }
        self.norm.forward(&x)
    }

    pub fn forward(
        &self,
        patches: Option<&Tensor>,
        tokens: Option<&Tensor>,
        mask: Option<usize>,
    ) -> Result<Tensor> {
        let n = patches.map_or(Ok(0), |p| p.dim(1))?;
        let both_ways = mask.is_none_or(|prefix| prefix >= n);
        let x = self.embed_with(patches, tokens, 0, both_ways)?;
        self.forward_embedded(&x, mask, None, None)
    }

    /// Every block's output (the residual stream, before the final norm) for patches `[B, N, patch_dim]` seeing
    /// each other both ways: what a teacher's feature targets are made of.
    pub fn block_outputs(&self, patches: &Tensor) -> Result<Vec<Tensor>> {
        let n = patches.dim(1)?;
        let mut x = self.embed_with(Some(patches), None, 0, true)?;
        let mut outputs = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(&x, None, None, None, n)?;
            outputs.push(x.clone());
        }
        Ok(outputs)
    }
}

/// Parameters used only by training losses (the dense detection head): prediction works without them, so a
/// checkpoint from before they existed still loads for inference.
pub fn is_training_only(name: &str) -> bool {
    name.starts_with("dense_head.") || name.starts_with("feature_head.")
}

/// The transformer block a parameter belongs to (`blocks.{i}.…` → `i`); `None` for every other parameter.
pub fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blocks.")?.split('.').next()?.parse().ok()
}

/// 1-D sine-cosine embedding of position `x` in `dim` values (half sines, half cosines, geometric frequencies).
pub fn sincos_1d(x: f32, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let mut out = vec![0f32; dim];
    for i in 0..half {
        let freq = 1.0 / 100f32.powf(i as f32 / half as f32);
        out[i] = (x * freq).sin();
        out[half + i] = (x * freq).cos();
    }
    out
}

/// 2-D sine-cosine embedding (MAE): half the dimensions encode the row, half the column.
pub fn sincos_2d(row: usize, col: usize, dim: usize) -> Vec<f32> {
    let mut out = sincos_1d(row as f32, dim / 2);
    out.extend(sincos_1d(col as f32, dim - dim / 2));
    out
}

/// The attention mask of a sequence whose first `prefix` positions are the bidirectional image prefix: position i
/// sees j when j < `prefix` or j ≤ i. Masks are applied inside the fused softmax, so this is just the prefix length;
/// `t` and `device` are checked for symmetry with the other constructors.
pub fn prefix_len(t: usize, prefix: usize, _device: &Device) -> Result<usize> {
    if prefix > t {
        candle_core::bail!("prefix {prefix} longer than the sequence {t}");
    }
    Ok(prefix)
}

/// The same mask as an additive `[T, T]` tensor (0 or -inf), for reference implementations and tests.
pub fn prefix_mask(t: usize, prefix: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j < prefix || j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(data, (t, t), device)
}

/// Splits images `[B, C, H, W]` into flattened patches `[B, N, p*p*C]`, row-major over the grid.
pub fn patchify(images: &Tensor, patch: usize) -> Result<Tensor> {
    let (b, c, h, w) = images.dims4()?;
    let (gh, gw) = (h / patch, w / patch);
    images
        .reshape((b, c, gh, patch, gw, patch))?
        .permute((0, 2, 4, 3, 5, 1))?
        .reshape((b, gh * gw, patch * patch * c))
}

/// Inverse of [`patchify`].
pub fn unpatchify(patches: &Tensor, patch: usize, channels: usize, grid: usize) -> Result<Tensor> {
    let b = patches.dim(0)?;
    patches
        .reshape((b, grid, grid, patch, patch, channels))?
        .permute((0, 5, 1, 3, 2, 4))?
        .reshape((b, channels, grid * patch, grid * patch))
}

/// Hidden states → logits over the vocabulary for the last dimension.
pub fn last_dim_log_softmax(logits: &Tensor) -> Result<Tensor> {
    candle_nn::ops::log_softmax(logits, D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::vocab;

    fn tiny() -> (ModelConfig, Transformer) {
        let mut cfg = ModelConfig::preset("tiny").unwrap().with_image_size(32);
        cfg.n_layers = 2;
        cfg.dim = 32;
        cfg.n_heads = 4;
        cfg.n_classes = 3;
        cfg.local_mixing = false;
        let mut p = ParamStore::init(7, &Device::Cpu);
        let m = Transformer::new(&cfg, &mut p).unwrap();
        (cfg, m)
    }

    fn inputs(cfg: &ModelConfig) -> (Tensor, Tensor) {
        let patches = Tensor::randn(0f32, 1.0, (2, cfg.n_patches(), cfg.patch_dim()), &Device::Cpu).unwrap();
        let tokens = Tensor::new(&[[vocab::TASK_DETECT, 10, 11, 12, 13], [vocab::TASK_DETECT, 20, 21, 22, 23]], &Device::Cpu).unwrap();
        (patches, tokens)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn output_shapes() {
        let (cfg, m) = tiny();
        let (patches, tokens) = inputs(&cfg);
        let n = cfg.n_patches();
        let mask = prefix_len(n + 5, n, &Device::Cpu).unwrap();
        let h = m.forward(Some(&patches), Some(&tokens), Some(mask)).unwrap();
        assert_eq!(h.dims(), &[2, n + 5, cfg.dim]);
        assert_eq!(m.token_head.forward(&h).unwrap().dims(), &[2, n + 5, cfg.vocab().size()]);
        assert_eq!(m.pixel_head.forward(&h).unwrap().dims(), &[2, n + 5, cfg.patch_dim()]);
        let img = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
        let back = unpatchify(&patchify(&img, 4).unwrap(), 4, 3, 8).unwrap();
        assert_eq!(max_diff(&img, &back), 0.0);
    }

    #[test]
    fn later_tokens_do_not_change_earlier_logits_but_patches_change_everything() {
        let (cfg, m) = tiny();
        let (patches, tokens) = inputs(&cfg);
        let n = cfg.n_patches();
        let mask = prefix_len(n + 5, n, &Device::Cpu).unwrap();
        let h1 = m.forward(Some(&patches), Some(&tokens), Some(mask)).unwrap();
        // Change the last output token: everything before it is unchanged, the last position changes.
        let tokens2 = Tensor::new(&[[vocab::TASK_DETECT, 10, 11, 12, 30], [vocab::TASK_DETECT, 20, 21, 22, 30]], &Device::Cpu).unwrap();
        let h2 = m.forward(Some(&patches), Some(&tokens2), Some(mask)).unwrap();
        assert!(max_diff(&h1.narrow(1, 0, n + 4).unwrap(), &h2.narrow(1, 0, n + 4).unwrap()) < 1e-6);
        assert!(max_diff(&h1.narrow(1, n + 4, 1).unwrap(), &h2.narrow(1, n + 4, 1).unwrap()) > 1e-4);
        // Change the last patch: the first patch's state changes too (bidirectional prefix).
        let last = patches.narrow(1, n - 1, 1).unwrap().affine(-1.0, 0.5).unwrap();
        let patches3 = Tensor::cat(&[&patches.narrow(1, 0, n - 1).unwrap(), &last], 1).unwrap();
        let h3 = m.forward(Some(&patches3), Some(&tokens), Some(mask)).unwrap();
        for pos in [0, n / 2, n, n + 4] {
            let d = max_diff(&h1.narrow(1, pos, 1).unwrap(), &h3.narrow(1, pos, 1).unwrap());
            assert!(d > 1e-4, "position {pos} did not see the changed patch");
        }
    }

    #[test]
    fn pixel_head_blocks_work_per_position_and_leave_the_output_layers_init_unchanged() {
        let (cfg, plain) = tiny();
        let deep = Transformer::new(&ModelConfig { pixel_head_blocks: 2, ..cfg.clone() }, &mut ParamStore::init(7, &Device::Cpu)).unwrap();
        assert_eq!(deep.pixel_head.blocks.len(), 2);
        let h = Tensor::randn(0f32, 1.0, (2, 5, cfg.dim), &Device::Cpu).unwrap();
        let all = deep.pixel_head.forward(&h).unwrap();
        assert_eq!(all.dims(), &[2, 5, cfg.patch_dim()]);
        // Per position: one position alone gives the same pixels as inside the sequence.
        let one = deep.pixel_head.forward(&h.narrow(1, 3, 1).unwrap()).unwrap();
        assert!(max_diff(&one, &all.narrow(1, 3, 1).unwrap()) < 1e-5);
        // The blocks change the head's output, and are drawn after the output layer, which keeps its init.
        assert!(max_diff(&all, &plain.pixel_head.forward(&h).unwrap()) > 1e-3);
        assert_eq!(max_diff(&deep.pixel_head.out.weight, &plain.pixel_head.out.weight), 0.0);
    }

    fn tiny_stem() -> (ModelConfig, Transformer, ParamStore<'static>) {
        let (cfg, _) = tiny();
        let cfg = ModelConfig { stem_channels: 4, ..cfg };
        let mut p = ParamStore::init(7, &Device::Cpu);
        let m = Transformer::new(&cfg, &mut p).unwrap();
        (cfg, m, p)
    }

    #[test]
    fn patch_stem_filters_are_a_3x3_convolution_over_the_whole_image() {
        let (cfg, m, _) = tiny_stem();
        let stem = m.stem.as_ref().unwrap();
        let (b, c, s, ps, k) = (2, cfg.channels, cfg.image_size, cfg.patch_size, cfg.stem_channels);
        let image = Tensor::randn(0f32, 1.0, (b, c, s, s), &Device::Cpu).unwrap();
        let ours = stem.filter_responses(&patchify(&image, ps).unwrap(), true).unwrap();
        // Taps are ordered (row, column, channel); candle's conv2d kernel is [out, in, row, column].
        let kernel = stem.filters.weight.reshape((k, 3, 3, c)).unwrap().permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        let conv = image.conv2d(&kernel, 1, 1, 1, 1).unwrap().broadcast_add(&stem.filters.bias.as_ref().unwrap().reshape((1, k, 1, 1)).unwrap()).unwrap();
        let g = cfg.grid();
        let conv = conv.reshape((b, k, g, ps, g, ps)).unwrap().permute((0, 2, 4, 3, 5, 1)).unwrap().reshape(((), k)).unwrap();
        assert!(max_diff(&ours, &conv) < 1e-4, "{}", max_diff(&ours, &conv));
    }

    #[test]
    fn patch_stem_starts_as_the_plain_model_and_never_shows_a_patch_to_earlier_tokens_when_causal() {
        let (cfg, plain) = tiny();
        let (_, fresh, p) = tiny_stem();
        let (patches, tokens) = inputs(&cfg);
        let n = cfg.n_patches();
        let both_ways = prefix_len(n + 5, n, &Device::Cpu).unwrap();
        let a = plain.forward(Some(&patches), Some(&tokens), Some(both_ways)).unwrap();
        assert_eq!(max_diff(&a, &fresh.forward(Some(&patches), Some(&tokens), Some(both_ways)).unwrap()), 0.0);

        // A trained (non-zero) projection: the stem changes the outputs. Pretraining's causal order predicts patch
        // j from position j-1, so changing patch j must leave positions < j unchanged; both ways, the patch to the
        // left and the one above read its border pixels.
        let proj = &p.vars.iter().find(|(name, _)| *name == "stem.proj.weight").unwrap().1;
        proj.set(&Tensor::randn(0f32, 0.5, proj.shape(), &Device::Cpu).unwrap()).unwrap();
        let stem = fresh.stem.as_ref().unwrap();
        let causal = prefix_len(n, 1, &Device::Cpu).unwrap();
        let h1 = fresh.forward(Some(&patches), None, Some(causal)).unwrap();
        assert!(max_diff(&h1, &plain.forward(Some(&patches), None, Some(causal)).unwrap()) > 1e-4);
        let g = cfg.grid();
        for j in [1, g + 1, n / 2 + 1, n - 1] {
            let changed = patches.narrow(1, j, 1).unwrap().affine(-1.0, 0.5).unwrap();
            let p2 = Tensor::cat(&[&patches.narrow(1, 0, j).unwrap(), &changed, &patches.narrow(1, j + 1, n - j - 1).unwrap()], 1).unwrap();
            let h2 = fresh.forward(Some(&p2), None, Some(causal)).unwrap();
            assert!(max_diff(&h1.narrow(1, 0, j).unwrap(), &h2.narrow(1, 0, j).unwrap()) < 1e-6, "patch {j} leaked backwards");
            assert!(max_diff(&h1.narrow(1, j, 1).unwrap(), &h2.narrow(1, j, 1).unwrap()) > 1e-4);
            let (s1, s2) = (stem.forward(&patches, true).unwrap(), stem.forward(&p2, true).unwrap());
            for neighbour in [j - 1, j.saturating_sub(g)] {
                assert!(max_diff(&s1.narrow(1, neighbour, 1).unwrap(), &s2.narrow(1, neighbour, 1).unwrap()) > 1e-4, "{neighbour} did not see {j}");
            }
        }
    }

    /// The tiny test model with local mixing, its filters set to random values (they start at zero).
    fn tiny_local() -> (ModelConfig, Transformer) {
        let (mut cfg, _) = tiny();
        cfg.local_mixing = true;
        cfg.local_mixing_full = true; // all eight taps, so the causality test below covers the following ones too
        let mut p = ParamStore::init(7, &Device::Cpu);
        let m = Transformer::new(&cfg, &mut p).unwrap();
        let mut set = 0;
        for (name, var) in &p.vars {
            if name.contains(".local.") {
                var.set(&Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap()).unwrap();
                set += 1;
            }
        }
        assert_eq!(set, cfg.n_layers);
        (cfg, m)
    }

    #[test]
    fn local_mixing_starts_as_the_plain_model_and_stays_causal_over_patches() {
        let (cfg, plain) = tiny();
        let (patches, tokens) = inputs(&cfg);
        let n = cfg.n_patches();
        let mask = prefix_len(n + 5, n, &Device::Cpu).unwrap();
        // Zero-initialised filters, and no other parameter's init moved: the same outputs as the plain model.
        let mut p = ParamStore::init(7, &Device::Cpu);
        let fresh = Transformer::new(&ModelConfig { local_mixing: true, local_mixing_full: true, ..cfg.clone() }, &mut p).unwrap();
        let a = plain.forward(Some(&patches), Some(&tokens), Some(mask)).unwrap();
        let b = fresh.forward(Some(&patches), Some(&tokens), Some(mask)).unwrap();
        assert_eq!(max_diff(&a, &b), 0.0);

        // Trained (non-zero) filters change the outputs, but with a fully causal order over the patches
        // (pretraining) a patch still never sees a later one: changing patch j leaves positions < j unchanged.
        let (_, m) = tiny_local();
        let causal = prefix_len(n, 1, &Device::Cpu).unwrap();
        let h1 = m.forward(Some(&patches), None, Some(causal)).unwrap();
        assert!(max_diff(&h1, &plain.forward(Some(&patches), None, Some(causal)).unwrap()) > 1e-4);
        for j in [1, cfg.grid() + 1, n / 2, n - 1] {
            let changed = patches.narrow(1, j, 1).unwrap().affine(-1.0, 0.5).unwrap();
            let p2 = Tensor::cat(&[&patches.narrow(1, 0, j).unwrap(), &changed, &patches.narrow(1, j + 1, n - j - 1).unwrap()], 1).unwrap();
            let h2 = m.forward(Some(&p2), None, Some(causal)).unwrap();
            assert!(max_diff(&h1.narrow(1, 0, j).unwrap(), &h2.narrow(1, 0, j).unwrap()) < 1e-6, "patch {j} leaked backwards");
            assert!(max_diff(&h1.narrow(1, j, 1).unwrap(), &h2.narrow(1, j, 1).unwrap()) > 1e-4);
        }
    }

    #[test]
    fn full_local_mixing_reads_the_following_neighbours_only_where_patches_see_both_ways() {
        let (cfg, plain) = tiny();
        let cfg = ModelConfig { local_mixing: true, local_mixing_full: true, ..cfg };
        let mut p = ParamStore::init(7, &Device::Cpu);
        let m = Transformer::new(&cfg, &mut p).unwrap();
        // Only the four following taps are non-zero.
        for (name, var) in &p.vars {
            if name.contains(".local.") {
                let (groups, taps) = var.as_tensor().dims2().unwrap();
                let w: Vec<f32> = (0..groups * taps).map(|i| if i % taps >= 4 { 0.5 } else { 0.0 }).collect();
                var.set(&Tensor::from_vec(w, (groups, taps), &Device::Cpu).unwrap()).unwrap();
            }
        }
        let (patches, tokens) = inputs(&cfg);
        let n = cfg.n_patches();
        let both_ways = prefix_len(n + 5, n, &Device::Cpu).unwrap();
        let a = m.forward(Some(&patches), Some(&tokens), Some(both_ways)).unwrap();
        assert!(max_diff(&a, &plain.forward(Some(&patches), Some(&tokens), Some(both_ways)).unwrap()) > 1e-4);
        let causal = prefix_len(n, 1, &Device::Cpu).unwrap();
        let b = m.forward(Some(&patches), None, Some(causal)).unwrap();
        assert_eq!(max_diff(&b, &plain.forward(Some(&patches), None, Some(causal)).unwrap()), 0.0);
    }

    /// Decoding one token at a time with the KV cache gives the same states as one full pass.
    fn assert_cache_matches_recomputation(cfg: &ModelConfig, m: &Transformer) {
        let (patches, tokens) = inputs(cfg);
        let n = cfg.n_patches();
        let mask = prefix_len(n + 5, n, &Device::Cpu).unwrap();
        let full = m.forward(Some(&patches), Some(&tokens), Some(mask)).unwrap();
        let mut cache = KvCache::new(cfg, 2, n + cfg.max_output_tokens(), &Device::Cpu).unwrap();
        let x = m.embed(Some(&patches), Some(&tokens.narrow(1, 0, 1).unwrap()), 0).unwrap();
        let prefill_mask = prefix_len(n + 1, n, &Device::Cpu).unwrap();
        let mut steps = vec![m.forward_embedded(&x, Some(prefill_mask), Some(&mut cache), None).unwrap()];
        for i in 1..5 {
            let x = m.embed(None, Some(&tokens.narrow(1, i, 1).unwrap()), i).unwrap();
            steps.push(m.forward_embedded(&x, None, Some(&mut cache), None).unwrap());
        }
        let incremental = Tensor::cat(&steps, 1).unwrap();
        assert!(max_diff(&full, &incremental) < 1e-4, "{}", max_diff(&full, &incremental));
    }

    #[test]
    fn kv_cache_matches_full_recomputation() {
        let (cfg, m) = tiny();
        assert_cache_matches_recomputation(&cfg, &m);
    }

    #[test]
    fn kv_cache_matches_full_recomputation_with_local_mixing() {
        let (cfg, m) = tiny_local();
        assert_cache_matches_recomputation(&cfg, &m);
    }
}
