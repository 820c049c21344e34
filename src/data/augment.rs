//! Training-time augmentations that keep boxes right: horizontal flip, random resized crop / scale jitter
//! (zoom in and out), and colour jitter (brightness, contrast, saturation).
//!
//! Augmentations run on the model-input-sized image (after letterbox or stretch), so they are cheap and the
//! loader's cache of resized images can be reused every epoch. Every geometric step is one [`CropResize`]
//! (plus an optional mirror) that maps pixels and boxes with the same formula, so they cannot drift apart.

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::project::{BBox, Task};

/// Grey used for letterbox bars and for the area outside the image when zooming out (as YOLO does).
pub const PAD_VALUE: [u8; 3] = [114, 114, 114];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip.
    pub hflip: f32,
    /// Probability of a random resized crop.
    pub crop: f32,
    /// Range of the crop's area as a fraction of the image area. Above 1 zooms out (the image shrinks inside
    /// a grey border), below 1 zooms in.
    pub crop_scale: (f32, f32),
    /// Range of the crop's aspect ratio (width / height), sampled log-uniformly.
    pub crop_ratio: (f32, f32),
    /// Maximum relative change of brightness, contrast and saturation (0 = off; 0.3 = factors in 0.7..1.3).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    /// Detection: a box cut by the crop is kept (clipped) when at least this fraction of its area stays
    /// visible, and dropped otherwise.
    pub min_visible: f32,
}

impl Default for AugmentConfig {
    /// No augmentation (evaluation); use [`AugmentConfig::for_task`] for training.
    fn default() -> Self {
        AugmentConfig::none()
    }
}

impl AugmentConfig {
    pub fn none() -> Self {
        AugmentConfig {
            hflip: 0.0,
            crop: 0.0,
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            min_visible: 0.5,
        }
    }

    /// Sensible training defaults. Classification zooms in only a little, so the object stays in view;
    /// detection zooms in and out (scale jitter) since its boxes follow the crop.
    pub fn for_task(task: Task) -> Self {
        match task {
            Task::Classify => AugmentConfig {
                hflip: 0.5,
                crop: 0.5,
                crop_scale: (0.6, 1.0),
                crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
                brightness: 0.2,
                contrast: 0.2,
                saturation: 0.2,
                min_visible: 0.5,
            },
            Task::Detect => AugmentConfig {
                hflip: 0.5,
                crop: 0.5,
                crop_scale: (0.5, 1.5),
                crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
                brightness: 0.2,
                contrast: 0.2,
                saturation: 0.2,
                min_visible: 0.5,
            },
        }
    }

    pub fn is_none(&self) -> bool {
        self.hflip <= 0.0 && self.crop <= 0.0 && self.brightness <= 0.0 && self.contrast <= 0.0 && self.saturation <= 0.0
    }
}

/// The region `(x0, y0, w, h)` of the source (in source pixels, may extend past its edges) that is resized
/// to the whole `out_w` x `out_h` output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropResize {
    pub x0: f32,
    pub y0: f32,
    pub w: f32,
    pub h: f32,
    pub out_w: u32,
    pub out_h: u32,
}

impl CropResize {
    pub fn identity(w: u32, h: u32) -> Self {
        CropResize { x0: 0.0, y0: 0.0, w: w as f32, h: h as f32, out_w: w, out_h: h }
    }

    fn sx(&self) -> f32 {
        self.out_w as f32 / self.w
    }
    fn sy(&self) -> f32 {
        self.out_h as f32 / self.h
    }

    /// Maps a source point to output coordinates.
    pub fn map_point(&self, x: f32, y: f32) -> (f32, f32) {
        ((x - self.x0) * self.sx(), (y - self.y0) * self.sy())
    }

    /// Maps a box, unclipped.
    pub fn map_box(&self, b: &BBox) -> BBox {
        let (xmin, ymin) = self.map_point(b.xmin, b.ymin);
        let (xmax, ymax) = self.map_point(b.xmax, b.ymax);
        BBox { xmin, ymin, xmax, ymax, class: b.class }
    }

    /// Resamples `src` (bilinear; pixels outside the source are `pad`).
    pub fn apply(&self, src: &RgbImage, pad: [u8; 3]) -> RgbImage {
        let (sw, sh) = (src.width() as i64, src.height() as i64);
        let (inv_x, inv_y) = (1.0 / self.sx(), 1.0 / self.sy());
        let stride = sw as usize * 3;
        let raw = src.as_raw();
        let pad = pad.map(f32::from);
        // Source column and weight of every output column, computed once (the same for every row).
        let cols: Vec<(i64, f32)> = (0..self.out_w)
            .map(|ox| {
                // Centre of the output pixel, mapped back to source pixel-centre coordinates.
                let fx = self.x0 + (ox as f32 + 0.5) * inv_x - 0.5;
                (fx.floor() as i64, fx - fx.floor())
            })
            .collect();
        let row_of = |y: i64| (0..sh).contains(&y).then(|| &raw[y as usize * stride..(y as usize + 1) * stride]);
        let texel = |row: Option<&[u8]>, x: i64| -> [f32; 3] {
            match row {
                Some(r) if (0..sw).contains(&x) => {
                    let o = x as usize * 3;
                    [r[o] as f32, r[o + 1] as f32, r[o + 2] as f32]
                }
                _ => pad,
            }
        };
        let mut out = vec![0u8; self.out_w as usize * self.out_h as usize * 3];
        for (oy, dst) in out.chunks_exact_mut(self.out_w as usize * 3).enumerate() {
            let fy = self.y0 + (oy as f32 + 0.5) * inv_y - 0.5;
            let (yi, ty) = (fy.floor() as i64, fy - fy.floor());
            let (top_row, bottom_row) = (row_of(yi), row_of(yi + 1));
            for (&(xi, tx), px) in cols.iter().zip(dst.chunks_exact_mut(3)) {
                let (a, b) = (texel(top_row, xi), texel(top_row, xi + 1));
                let (c, d) = (texel(bottom_row, xi), texel(bottom_row, xi + 1));
                for k in 0..3 {
                    let top = a[k] + (b[k] - a[k]) * tx;
                    let bottom = c[k] + (d[k] - c[k]) * tx;
                    px[k] = (top + (bottom - top) * ty).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        RgbImage::from_raw(self.out_w, self.out_h, out).expect("buffer size matches")
    }
}

/// The geometric part of one augmentation draw, recorded so tests (and debugging tools) can check boxes
/// against it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeometricTransform {
    pub crop: CropResize,
    /// Mirror horizontally after the crop.
    pub flip: bool,
}

impl GeometricTransform {
    /// Maps a box through crop and flip, unclipped.
    pub fn map_box(&self, b: &BBox) -> BBox {
        let m = self.crop.map_box(b);
        if self.flip {
            let w = self.crop.out_w as f32;
            BBox { xmin: w - m.xmax, xmax: w - m.xmin, ..m }
        } else {
            m
        }
    }
}

/// Draws one crop (torchvision's RandomResizedCrop, extended to areas above 1 for zooming out).
pub fn sample_crop(w: u32, h: u32, cfg: &AugmentConfig, rng: &mut impl Rng) -> CropResize {
    let (wf, hf) = (w as f32, h as f32);
    let (smin, smax) = ordered(cfg.crop_scale);
    let (rmin, rmax) = ordered(cfg.crop_ratio);
    let (lmin, lmax) = (rmin.max(1e-3).ln(), rmax.max(1e-3).ln());
    for _ in 0..10 {
        let area = wf * hf * uniform(rng, smin, smax);
        let ratio = uniform(rng, lmin, lmax).exp();
        let cw = (area * ratio).sqrt();
        let ch = (area / ratio).sqrt();
        // Zooming in must stay inside the image; zooming out may not exceed it by more than the scale allows.
        if cw < 2.0 || ch < 2.0 || (smax <= 1.0 && (cw > wf || ch > hf)) {
            continue;
        }
        let x0 = uniform(rng, (wf - cw).min(0.0), (wf - cw).max(0.0));
        let y0 = uniform(rng, (hf - ch).min(0.0), (hf - ch).max(0.0));
        return CropResize { x0, y0, w: cw, h: ch, out_w: w, out_h: h };
    }
    CropResize::identity(w, h)
}

fn ordered((a, b): (f32, f32)) -> (f32, f32) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// Applies one random augmentation to an image and its boxes (same pixel coordinates). Returns the new image
/// and the boxes that remain visible (clipped to the image), plus the geometric transform that was used.
/// Deterministic for a given `rng` state. The number of random draws does not depend on the image content.
pub fn augment(
    img: &RgbImage,
    boxes: &[BBox],
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> (RgbImage, Vec<BBox>, GeometricTransform) {
    let (w, h) = img.dimensions();
    let do_crop = rng.random::<f32>() < cfg.crop;
    let crop = if do_crop { sample_crop(w, h, cfg, rng) } else { CropResize::identity(w, h) };
    let flip = rng.random::<f32>() < cfg.hflip;
    let transform = GeometricTransform { crop, flip };

    let mut out = if do_crop && crop != CropResize::identity(w, h) { crop.apply(img, PAD_VALUE) } else { img.clone() };
    if flip {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    let factors = [cfg.brightness, cfg.contrast, cfg.saturation].map(|j| 1.0 + uniform(rng, -j.abs(), j.abs()));
    if factors.iter().any(|f| *f != 1.0) {
        colour_jitter(&mut out, factors[0], factors[1], factors[2]);
    }
    let kept = boxes.iter().filter_map(|b| clip_visible(&transform.map_box(b), w, h, cfg.min_visible)).collect();
    (out, kept, transform)
}

/// Clips `b` to the `w` x `h` image; `None` when less than `min_visible` of its area (or less than a pixel
/// in either direction) remains.
pub fn clip_visible(b: &BBox, w: u32, h: u32, min_visible: f32) -> Option<BBox> {
    let c = BBox {
        xmin: b.xmin.clamp(0.0, w as f32),
        ymin: b.ymin.clamp(0.0, h as f32),
        xmax: b.xmax.clamp(0.0, w as f32),
        ymax: b.ymax.clamp(0.0, h as f32),
        class: b.class,
    };
    let visible = c.area();
    if c.width() < 1.0 || c.height() < 1.0 || visible < min_visible * b.area() {
        None
    } else {
        Some(c)
    }
}

/// Brightness scales all channels; contrast scales the distance from the image's mean grey; saturation scales
/// each pixel's distance from its own grey.
pub fn colour_jitter(img: &mut RgbImage, brightness: f32, contrast: f32, saturation: f32) {
    let grey = |p: &[u8]| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
    let n = (img.width() * img.height()).max(1) as f32;
    let mean = img.as_raw().chunks_exact(3).map(grey).sum::<f32>() / n * brightness;
    for p in img.as_mut().chunks_exact_mut(3) {
        let mut v = [p[0] as f32 * brightness, p[1] as f32 * brightness, p[2] as f32 * brightness];
        let g = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
        for c in &mut v {
            *c = g + (*c - g) * saturation;
            *c = mean + (*c - mean) * contrast;
        }
        for (dst, c) in p.iter_mut().zip(v) {
            *dst = c.round().clamp(0.0, 255.0) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// An image with each box filled with its own pure colour on black, so pixels can be checked against boxes.
    fn painted(w: u32, h: u32, boxes: &[BBox]) -> RgbImage {
        let mut img = RgbImage::new(w, h);
        for (k, b) in boxes.iter().enumerate() {
            for y in b.ymin as u32..b.ymax as u32 {
                for x in b.xmin as u32..b.xmax as u32 {
                    img.put_pixel(x, y, Rgb(colour_of(k)));
                }
            }
        }
        img
    }

    fn colour_of(k: usize) -> [u8; 3] {
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]][k % 4]
    }

    fn boxes_strategy() -> impl Strategy<Value = Vec<BBox>> {
        // Integer-aligned, non-overlapping boxes: one per quadrant of a 64x64 image.
        proptest::collection::vec((0u32..8, 0u32..8, 8u32..24, 8u32..24), 1..=4).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(k, (x, y, bw, bh))| {
                    let (qx, qy) = ((k % 2) as u32 * 32, (k / 2) as u32 * 32);
                    BBox {
                        xmin: (qx + x) as f32,
                        ymin: (qy + y) as f32,
                        xmax: (qx + x + bw) as f32,
                        ymax: (qy + y + bh) as f32,
                        class: k,
                    }
                })
                .collect()
        })
    }

    fn geometric_only() -> AugmentConfig {
        AugmentConfig { brightness: 0.0, contrast: 0.0, saturation: 0.0, ..AugmentConfig::for_task(Task::Detect) }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn boxes_stay_inside_and_follow_the_transform(boxes in boxes_strategy(), seed in any::<u64>()) {
            let img = painted(64, 64, &boxes);
            let cfg = geometric_only();
            let (out, kept, t) = augment(&img, &boxes, &cfg, &mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(out.dimensions(), (64, 64));
            for b in &kept {
                prop_assert!(b.xmin >= 0.0 && b.ymin >= 0.0 && b.xmax <= 64.0 && b.ymax <= 64.0, "{:?}", b);
                prop_assert!(b.width() >= 1.0 && b.height() >= 1.0);
                // Each kept box is exactly the clipped image of its source box under the recorded transform.
                let src = &boxes[b.class];
                let expected = clip_visible(&t.map_box(src), 64, 64, cfg.min_visible).unwrap();
                prop_assert_eq!(*b, expected);
            }
            // Every box that is mostly visible is kept; the others are dropped.
            for (k, src) in boxes.iter().enumerate() {
                let m = t.map_box(src);
                let cw = (m.xmax.min(64.0) - m.xmin.max(0.0)).max(0.0);
                let ch = (m.ymax.min(64.0) - m.ymin.max(0.0)).max(0.0);
                let visible = cw * ch;
                let is_kept = kept.iter().any(|b| b.class == k);
                if visible >= cfg.min_visible * m.area() + 1e-3 && cw >= 1.01 && ch >= 1.01 {
                    prop_assert!(is_kept, "box {:?} mapped {:?} visible {}", src, m, visible);
                }
                if visible < cfg.min_visible * m.area() - 1e-3 {
                    prop_assert!(!is_kept, "box {:?} mapped {:?} visible {}", src, m, visible);
                }
            }
            // Pixels follow the boxes: the centre of each kept box (if it is at least 4 px across, away from
            // bilinear edge blending) shows that box's colour.
            for b in &kept {
                if b.width() >= 4.0 && b.height() >= 4.0 {
                    let m = t.map_box(&boxes[b.class]);
                    let (cx, cy) = (((m.xmin + m.xmax) / 2.0), ((m.ymin + m.ymax) / 2.0));
                    if (0.0..64.0).contains(&cx) && (0.0..64.0).contains(&cy) && m.width() >= 4.0 && m.height() >= 4.0 {
                        let p = out.get_pixel(cx as u32, cy as u32).0;
                        let want = colour_of(b.class);
                        let dist: i32 = (0..3).map(|c| (p[c] as i32 - want[c] as i32).abs()).sum();
                        prop_assert!(dist < 60, "box {:?} centre pixel {:?} want {:?}", b, p, want);
                    }
                }
            }
        }

        #[test]
        fn deterministic_under_seed(boxes in boxes_strategy(), seed in any::<u64>()) {
            let img = painted(64, 64, &boxes);
            let cfg = AugmentConfig::for_task(Task::Detect);
            let a = augment(&img, &boxes, &cfg, &mut StdRng::seed_from_u64(seed));
            let b = augment(&img, &boxes, &cfg, &mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(a.0, b.0);
            prop_assert_eq!(a.1, b.1);
        }

        #[test]
        fn sampled_crops_respect_the_scale_range(seed in any::<u64>(), w in 16u32..200, h in 16u32..200) {
            let cfg = AugmentConfig::for_task(Task::Classify);
            let c = sample_crop(w, h, &cfg, &mut StdRng::seed_from_u64(seed));
            // Zoom-in only: the crop lies inside the image.
            prop_assert!(c.x0 >= 0.0 && c.y0 >= 0.0);
            prop_assert!(c.x0 + c.w <= w as f32 + 1e-3 && c.y0 + c.h <= h as f32 + 1e-3);
            let frac = c.w * c.h / (w * h) as f32;
            prop_assert!(frac >= 0.6 - 1e-3 && frac <= 1.0 + 1e-3, "{}", frac);
        }
    }

    #[test]
    fn flip_mirrors_boxes_exactly() {
        let boxes = [BBox { xmin: 2.0, ymin: 3.0, xmax: 10.0, ymax: 20.0, class: 0 }];
        let img = painted(32, 32, &boxes);
        let cfg = AugmentConfig { hflip: 1.0, ..AugmentConfig::none() };
        let (out, kept, _) = augment(&img, &boxes, &cfg, &mut StdRng::seed_from_u64(1));
        assert_eq!(kept, vec![BBox { xmin: 22.0, ymin: 3.0, xmax: 30.0, ymax: 20.0, class: 0 }]);
        assert_eq!(out.get_pixel(22, 3).0, colour_of(0));
        assert_eq!(out.get_pixel(29, 19).0, colour_of(0));
        assert_eq!(out.get_pixel(21, 3).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(30, 3).0, [0, 0, 0]);
    }

    #[test]
    fn crop_resize_samples_by_hand() {
        // Identity geometry reproduces the image exactly.
        let img = RgbImage::from_fn(6, 4, |x, y| Rgb([(x * 40) as u8, (y * 60) as u8, 9]));
        assert_eq!(CropResize::identity(6, 4).apply(&img, PAD_VALUE), img);
        // Zoom out 2x around the image: source region x0=-3, w=12 (and y0=-2, h=8) into 6x4. Output pixel 0
        // maps to source x = -3 + 0.5 * 2 - 0.5 = -2.5: outside -> pad. Output pixel (3, 2) maps to
        // (-3 + 3.5 * 2 - 0.5, -2 + 2.5 * 2 - 0.5) = (3.5, 2.5): the mean of pixels 3 and 4 in rows 2 and 3
        // -> red (120 + 160) / 2 = 140, green (120 + 180) / 2 = 150.
        let zoom_out = CropResize { x0: -3.0, y0: -2.0, w: 12.0, h: 8.0, out_w: 6, out_h: 4 };
        let out = zoom_out.apply(&img, PAD_VALUE);
        assert_eq!(out.get_pixel(0, 0).0, PAD_VALUE);
        assert_eq!(out.get_pixel(3, 2).0, [140, 150, 9]);
    }

    #[test]
    fn no_augmentation_is_identity() {
        let boxes = [BBox { xmin: 2.0, ymin: 3.0, xmax: 10.0, ymax: 20.0, class: 0 }];
        let img = painted(32, 32, &boxes);
        let (out, kept, _) = augment(&img, &boxes, &AugmentConfig::none(), &mut StdRng::seed_from_u64(1));
        assert_eq!(out, img);
        assert_eq!(kept, boxes.to_vec());
    }

    #[test]
    fn crop_of_the_right_half_doubles_coordinates() {
        // Hand computation: crop x0=16, w=16 (full height) of a 32 px image resized to 32 => x' = (x - 16) * 2, y' = y.
        // Box 20..28 => 8..24; box 4..12 lies outside and is dropped; box 12..20 is half visible (16..20 of
        // 12..20) so it is kept with min_visible 0.5 and clipped to 0..8.
        let crop = CropResize { x0: 16.0, y0: 0.0, w: 16.0, h: 32.0, out_w: 32, out_h: 32 };
        let t = GeometricTransform { crop, flip: false };
        let b = |x0: f32, x1: f32, c| BBox { xmin: x0, ymin: 0.0, xmax: x1, ymax: 10.0, class: c };
        assert_eq!(clip_visible(&t.map_box(&b(20.0, 28.0, 0)), 32, 32, 0.5), Some(BBox { xmin: 8.0, ymin: 0.0, xmax: 24.0, ymax: 10.0, class: 0 }));
        assert_eq!(clip_visible(&t.map_box(&b(4.0, 12.0, 1)), 32, 32, 0.5), None);
        assert_eq!(clip_visible(&t.map_box(&b(12.0, 20.0, 2)), 32, 32, 0.5), Some(BBox { xmin: 0.0, ymin: 0.0, xmax: 8.0, ymax: 10.0, class: 2 }));
        assert_eq!(clip_visible(&t.map_box(&b(12.0, 20.0, 2)), 32, 32, 0.6), None);
    }

    #[test]
    fn colour_jitter_neutral_factors_change_nothing_and_brightness_scales() {
        let mut img = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30) as u8, (y * 30) as u8, 77]));
        let orig = img.clone();
        colour_jitter(&mut img, 1.0, 1.0, 1.0);
        assert_eq!(img, orig);
        colour_jitter(&mut img, 0.5, 1.0, 1.0);
        assert_eq!(img.get_pixel(4, 2).0, [60, 30, 39]); // 120*0.5, 60*0.5, 77*0.5 = 38.5 rounds to 39
        let mut grey = orig.clone();
        colour_jitter(&mut grey, 1.0, 1.0, 0.0);
        let p = grey.get_pixel(3, 5).0;
        assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
    }
}
