//! The procedural shapes demo dataset: coloured shapes (circle, square, triangle, star, cross) on textured
//! backgrounds (value noise, gradients, stripes), with exact boxes. It gives the app's first run, the tests and
//! the docs data without downloading anything.
//!
//! Every image is generated from its own seed (`seed` mixed with the image index), so the dataset is identical
//! whatever the thread timing, and `--count 100` is a prefix of `--count 1000` with the same seed.
//!
//! Learnability is deliberate: shapes are at least ~20% of the image side, never overlap by more than a sliver,
//! and are drawn with a luminance on the opposite side of the background's (dark shapes on light textures and
//! light shapes on dark ones), so a tiny model can reach high accuracy in minutes.

use std::path::Path;

use anyhow::Context;
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::project::{hsv_to_rgb, BBox, ImageEntry, ImageSource, Project, Split, Task};

/// The shape classes, in class-index order.
pub const SHAPE_NAMES: [&str; 5] = ["circle", "square", "triangle", "star", "cross"];

#[derive(Debug, Clone, PartialEq)]
pub struct DemoOptions {
    /// Number of images.
    pub count: usize,
    /// Side of the (square) images in pixels.
    pub size: u32,
    pub seed: u64,
    /// Fraction of images holding exactly one shape (these also get an image-level `class`, so the same folder
    /// serves classification). The rest hold 2..=`max_shapes` shapes.
    pub single_fraction: f32,
    /// At most this many shapes per image (1..=6).
    pub max_shapes: usize,
    /// Smallest and largest shape size as a fraction of the image side.
    pub min_scale: f32,
    pub max_scale: f32,
    /// Project task written to `tessera.json`.
    pub task: Task,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            // Enough single-shape images (about 500) that classification has a meaningful test split (about
            // 50) and detection about 800 training images; still generated in well under a second.
            count: 1000,
            size: 64,
            seed: 0,
            single_fraction: 0.5,
            max_shapes: 4,
            min_scale: 0.22,
            max_scale: 0.42,
            task: Task::Detect,
        }
    }
}

/// Where image `i` goes: a fixed 80/10/10 pattern over the index, so every split has every kind of image.
pub fn demo_split(i: usize) -> Split {
    match i % 10 {
        8 => Split::Val,
        9 => Split::Test,
        _ => Split::Train,
    }
}

/// Generates the dataset into `out` (`out/images/*.png` and `out/tessera.json`) and returns the project.
/// Images are written first and the project file last (atomically), so an interrupted run never leaves a
/// project pointing at missing images.
pub fn write_demo(out: &Path, opts: &DemoOptions) -> anyhow::Result<Project> {
    validate(opts)?;
    refuse_to_overwrite_a_real_project(out)?;
    let images_dir = out.join("images");
    std::fs::create_dir_all(&images_dir).with_context(|| format!("creating {}", images_dir.display()))?;
    let digits = opts.count.saturating_sub(1).to_string().len().max(4);

    let entries: Vec<ImageEntry> = (0..opts.count)
        .into_par_iter()
        .map(|i| -> anyhow::Result<ImageEntry> {
            let (img, boxes) = render_image(opts, i);
            let rel = Path::new("images").join(format!("shapes_{i:0digits$}.png"));
            let path = out.join(&rel);
            let mut bytes = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
                .with_context(|| format!("encoding {}", path.display()))?;
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
            let class = if boxes.len() == 1 { Some(boxes[0].class) } else { None };
            Ok(ImageEntry {
                source: ImageSource::File(rel),
                width: opts.size,
                height: opts.size,
                split: demo_split(i),
                class,
                boxes,
                labeled: true,
            })
        })
        .collect::<anyhow::Result<_>>()?;

    let mut project = Project::new(DEMO_PROJECT_NAME, opts.task, out);
    for name in SHAPE_NAMES {
        project.class_index_or_add(name);
    }
    project.images = entries;
    project.save().with_context(|| format!("saving {}", project.project_file().display()))?;
    Ok(project)
}

/// Name of the generated project; also how an existing demo folder is recognised (and may be regenerated).
pub const DEMO_PROJECT_NAME: &str = "shapes demo";

/// Regenerating a demo folder is fine; writing over somebody's own project is not.
fn refuse_to_overwrite_a_real_project(out: &Path) -> anyhow::Result<()> {
    let file = out.join(super::project::PROJECT_FILE);
    if !file.exists() {
        return Ok(());
    }
    match Project::load(out) {
        Ok(p) if p.name == DEMO_PROJECT_NAME => Ok(()),
        Ok(p) => anyhow::bail!(
            "{} already holds the Tessera project '{}'; demo data is only written to a new folder or over earlier demo data",
            out.display(),
            p.name
        ),
        Err(e) => anyhow::bail!("{} already holds a project file that is not demo data ({e}); choose another folder", out.display()),
    }
}

fn validate(opts: &DemoOptions) -> anyhow::Result<()> {
    anyhow::ensure!(opts.count > 0, "--count must be at least 1");
    anyhow::ensure!((16..=4096).contains(&opts.size), "--size must be between 16 and 4096 pixels (got {})", opts.size);
    anyhow::ensure!((1..=6).contains(&opts.max_shapes), "max_shapes must be 1..=6 (got {})", opts.max_shapes);
    anyhow::ensure!((0.0..=1.0).contains(&opts.single_fraction), "single_fraction must be within 0..=1");
    anyhow::ensure!(
        0.05 <= opts.min_scale && opts.min_scale <= opts.max_scale && opts.max_scale <= 0.9,
        "shape scale range must satisfy 0.05 <= min <= max <= 0.9"
    );
    Ok(())
}

/// Renders image `index` of the dataset described by `opts`: the pixels and the exact boxes (in pixels,
/// exclusive max edges). Pure function of (`opts`, `index`).
pub fn render_image(opts: &DemoOptions, index: usize) -> (RgbImage, Vec<BBox>) {
    let mut rng = StdRng::seed_from_u64(mix(opts.seed, index as u64));
    let size = opts.size as f32;
    let light_background = rng.random_bool(0.5);
    let background = Background::random(&mut rng, light_background);

    let wanted = if opts.max_shapes == 1 || rng.random::<f32>() < opts.single_fraction {
        1
    } else {
        rng.random_range(2..=opts.max_shapes)
    };
    let mut shapes: Vec<PlacedShape> = Vec::new();
    let mut attempts = 0;
    while shapes.len() < wanted && attempts < 200 {
        attempts += 1;
        let kind = rng.random_range(0..SHAPE_NAMES.len());
        // At most the image minus a margin, so the centre range below is never empty.
        let side = (rng.random_range(opts.min_scale..=opts.max_scale) * size).min(size - 4.0);
        let half = side / 2.0;
        let margin = 1.0;
        let cx = rng.random_range(half + margin..=size - half - margin);
        let cy = rng.random_range(half + margin..=size - half - margin);
        let candidate = PlacedShape { kind, cx, cy, half, color: shape_color(&mut rng, light_background) };
        let b = candidate.bbox();
        // Limited overlap: at most 5% of the smaller box may be covered (a sliver), never one inside another.
        let ok = shapes.iter().all(|s| {
            let o = s.bbox();
            intersection(&b, &o) <= 0.05 * b.area().min(o.area())
        });
        if ok {
            shapes.push(candidate);
        }
    }

    let n = opts.size;
    // 4x4 supersampling gives anti-aliased edges, so shapes look like shapes and not staircases at 64 px.
    const SS: u32 = 4;
    let mut img = RgbImage::new(n, n);
    for y in 0..n {
        for x in 0..n {
            let mut px = background.sample(x as f32 + 0.5, y as f32 + 0.5, size);
            for s in &shapes {
                if !s.may_cover(x as f32, y as f32) {
                    continue;
                }
                let mut hits = 0;
                for sy in 0..SS {
                    for sx in 0..SS {
                        let fx = x as f32 + (sx as f32 + 0.5) / SS as f32;
                        let fy = y as f32 + (sy as f32 + 0.5) / SS as f32;
                        if s.contains(fx, fy) {
                            hits += 1;
                        }
                    }
                }
                let a = hits as f32 / (SS * SS) as f32;
                for c in 0..3 {
                    px[c] = px[c] * (1.0 - a) + s.color[c] * a;
                }
            }
            img.put_pixel(x, y, Rgb(px.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)));
        }
    }
    let boxes = shapes.iter().map(PlacedShape::bbox).collect();
    (img, boxes)
}

/// SplitMix64 finaliser of (seed, index): decorrelated per-image seeds.
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(0xD1B54A32D192ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

fn intersection(a: &BBox, b: &BBox) -> f32 {
    let w = (a.xmax.min(b.xmax) - a.xmin.max(b.xmin)).max(0.0);
    let h = (a.ymax.min(b.ymax) - a.ymin.max(b.ymin)).max(0.0);
    w * h
}

/// HSV to RGB with the hue in turns (any real; only the fraction counts).
fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    hsv_to_rgb(h.rem_euclid(1.0) * 6.0, s, v)
}

fn luminance(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// A saturated colour whose luminance is far from the background's: dark on light, light on dark.
fn shape_color(rng: &mut StdRng, light_background: bool) -> [f32; 3] {
    loop {
        let c = hsv(rng.random::<f32>(), rng.random_range(0.55..1.0), rng.random_range(0.5..1.0));
        let c = if light_background { c.map(|v| v * 0.45) } else { c };
        let l = luminance(c);
        if (light_background && l < 0.32) || (!light_background && l > 0.45) {
            return c;
        }
    }
}

/// One placed shape: `kind` indexes [`SHAPE_NAMES`]; centre and half-size in pixels.
struct PlacedShape {
    kind: usize,
    cx: f32,
    cy: f32,
    half: f32,
    color: [f32; 3],
}

impl PlacedShape {
    /// Shape geometry in unit coordinates (u, v in [-1, 1], v down). Each shape touches all four edges of the
    /// unit square, so the box is exactly centre ± half.
    fn contains_unit(&self, u: f32, v: f32) -> bool {
        match SHAPE_NAMES[self.kind] {
            "circle" => u * u + v * v <= 1.0,
            "square" => u.abs() <= 1.0 && v.abs() <= 1.0,
            // Isosceles triangle, apex at the top centre, base along the bottom edge.
            "triangle" => (-1.0..=1.0).contains(&v) && u.abs() <= (v + 1.0) / 2.0,
            "star" => point_in_polygon(u, v, &STAR),
            "cross" => (u.abs() <= 1.0 && v.abs() <= 0.3) || (v.abs() <= 1.0 && u.abs() <= 0.3),
            _ => false,
        }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        self.contains_unit((x - self.cx) / self.half, (y - self.cy) / self.half)
    }

    fn may_cover(&self, x: f32, y: f32) -> bool {
        x + 1.0 >= self.cx - self.half && x <= self.cx + self.half && y + 1.0 >= self.cy - self.half && y <= self.cy + self.half
    }

    fn bbox(&self) -> BBox {
        BBox {
            xmin: self.cx - self.half,
            ymin: self.cy - self.half,
            xmax: self.cx + self.half,
            ymax: self.cy + self.half,
            class: self.kind,
        }
    }
}

/// A five-pointed star scaled so its extent is exactly [-1, 1] on both axes (outer points at the top, the two
/// sides and the two bottom corners).
static STAR: std::sync::LazyLock<Vec<(f32, f32)>> = std::sync::LazyLock::new(|| {
    let mut pts = Vec::with_capacity(10);
    for k in 0..10 {
        let r = if k % 2 == 0 { 1.0 } else { 0.45 };
        let a = -std::f32::consts::FRAC_PI_2 + k as f32 * std::f32::consts::PI / 5.0;
        pts.push((r * a.cos(), r * a.sin()));
    }
    // Stretch to fill the unit square exactly.
    let (minx, maxx) = pts.iter().fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (miny, maxy) = pts.iter().fold((f32::MAX, f32::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    pts.iter()
        .map(|&(x, y)| (2.0 * (x - minx) / (maxx - minx) - 1.0, 2.0 * (y - miny) / (maxy - miny) - 1.0))
        .collect()
});

fn point_in_polygon(x: f32, y: f32, poly: &[(f32, f32)]) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Background textures: low-contrast so that shapes stay the salient thing, varied so that a model cannot
/// rely on a flat colour.
enum Background {
    /// Bilinear value noise on a coarse grid.
    Noise { base: [f32; 3], amp: f32, cells: usize, grid: Vec<f32> },
    /// Linear gradient between two colours along a direction.
    Gradient { a: [f32; 3], b: [f32; 3], dir: (f32, f32) },
    /// Soft stripes at an angle.
    Stripes { a: [f32; 3], b: [f32; 3], dir: (f32, f32), period: f32 },
}

impl Background {
    fn random(rng: &mut StdRng, light: bool) -> Background {
        let colour = |rng: &mut StdRng| {
            let v = if light { rng.random_range(0.72..0.95) } else { rng.random_range(0.08..0.3) };
            hsv(rng.random::<f32>(), rng.random_range(0.0..0.35), v)
        };
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let dir = (angle.cos(), angle.sin());
        match rng.random_range(0..3) {
            0 => {
                let cells = rng.random_range(3..9usize);
                let grid = (0..(cells + 1) * (cells + 1)).map(|_| rng.random_range(-1.0..1.0)).collect();
                Background::Noise { base: colour(rng), amp: rng.random_range(0.04..0.1), cells, grid }
            }
            1 => Background::Gradient { a: colour(rng), b: colour(rng), dir },
            _ => Background::Stripes { a: colour(rng), b: colour(rng), dir, period: rng.random_range(6.0..16.0) },
        }
    }

    /// Colour at pixel centre (x, y) of an image `size` pixels wide.
    fn sample(&self, x: f32, y: f32, size: f32) -> [f32; 3] {
        let lerp = |a: [f32; 3], b: [f32; 3], t: f32| [0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * t);
        match self {
            Background::Noise { base, amp, cells, grid } => {
                let g = |i: usize, j: usize| grid[j * (cells + 1) + i];
                let fx = x / size * *cells as f32;
                let fy = y / size * *cells as f32;
                let (i, j) = ((fx as usize).min(cells - 1), (fy as usize).min(cells - 1));
                let (tx, ty) = (fx - i as f32, fy - j as f32);
                let top = g(i, j) * (1.0 - tx) + g(i + 1, j) * tx;
                let bottom = g(i, j + 1) * (1.0 - tx) + g(i + 1, j + 1) * tx;
                let n = top * (1.0 - ty) + bottom * ty;
                base.map(|c| c + amp * n)
            }
            Background::Gradient { a, b, dir } => {
                let t = ((x / size - 0.5) * dir.0 + (y / size - 0.5) * dir.1) / std::f32::consts::SQRT_2 + 0.5;
                lerp(*a, *b, t.clamp(0.0, 1.0))
            }
            Background::Stripes { a, b, dir, period } => {
                let p = (x * dir.0 + y * dir.1) / period * std::f32::consts::TAU;
                lerp(*a, *b, 0.5 + 0.5 * p.sin())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DemoOptions {
        DemoOptions { count: 40, ..DemoOptions::default() }
    }

    #[test]
    fn rendering_is_deterministic_and_seed_dependent() {
        let o = small();
        let (a, ba) = render_image(&o, 7);
        let (b, bb) = render_image(&o, 7);
        assert_eq!(a, b);
        assert_eq!(ba, bb);
        let other = DemoOptions { seed: 1, ..o.clone() };
        assert_ne!(render_image(&other, 7).0, a);
    }

    #[test]
    fn boxes_are_inside_the_image_large_enough_and_barely_overlapping() {
        let o = DemoOptions { count: 200, ..DemoOptions::default() };
        let mut counts = [0usize; 7];
        for i in 0..o.count {
            let (_, boxes) = render_image(&o, i);
            assert!((1..=o.max_shapes).contains(&boxes.len()));
            counts[boxes.len()] += 1;
            for b in &boxes {
                assert!(b.xmin >= 0.0 && b.ymin >= 0.0 && b.xmax <= 64.0 && b.ymax <= 64.0, "{b:?}");
                assert!(b.width() >= 12.0 && b.height() >= 12.0, "{b:?}");
                assert!(b.class < SHAPE_NAMES.len());
            }
            for (k, a) in boxes.iter().enumerate() {
                for b in &boxes[k + 1..] {
                    assert!(intersection(a, b) <= 0.05 * a.area().min(b.area()) + 1e-3);
                }
            }
        }
        // Roughly half single-shape images.
        assert!((75..125).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn boxes_are_tight_around_the_drawn_pixels() {
        // A single shape's box must touch the pixels that differ from the background on every side.
        let o = DemoOptions { single_fraction: 1.0, ..small() };
        for i in 0..30 {
            let (_, boxes) = render_image(&o, i);
            let s = &boxes[0];
            let shape = PlacedShape {
                kind: s.class,
                cx: (s.xmin + s.xmax) / 2.0,
                cy: (s.ymin + s.ymax) / 2.0,
                half: s.width() / 2.0,
                color: [0.0; 3],
            };
            // Sample lines just inside the unit-square edges densely: each meets the shape.
            let edge_hit = |f: &dyn Fn(f32) -> (f32, f32)| (0..=1000).any(|k| {
                let (u, v) = f(k as f32 / 500.0 - 1.0);
                shape.contains_unit(u, v)
            });
            // Just inside the edge: the star's and triangle's tips are points.
            let e = 0.98;
            assert!(edge_hit(&|t| (t, -e)), "{} top", SHAPE_NAMES[s.class]);
            assert!(edge_hit(&|t| (t, e)), "{} bottom", SHAPE_NAMES[s.class]);
            assert!(edge_hit(&|t| (-e, t)), "{} left", SHAPE_NAMES[s.class]);
            assert!(edge_hit(&|t| (e, t)), "{} right", SHAPE_NAMES[s.class]);
        }
    }

    #[test]
    fn shapes_contrast_with_background() {
        let o = DemoOptions { single_fraction: 1.0, ..small() };
        for i in 0..30 {
            let (img, boxes) = render_image(&o, i);
            let b = boxes[0];
            let centre_lum = |x: u32, y: u32| {
                let p = img.get_pixel(x, y);
                luminance([p[0] as f32 / 255.0, p[1] as f32 / 255.0, p[2] as f32 / 255.0])
            };
            // Every shape covers its box centre except the star (centre yes) — all five cover the centre.
            let inside = centre_lum(((b.xmin + b.xmax) / 2.0) as u32, ((b.ymin + b.ymax) / 2.0) as u32);
            // A corner of the image far from the single shape shows background.
            let corner = [(0, 0), (63, 0), (0, 63), (63, 63)]
                .into_iter()
                .max_by(|p, q| {
                    let d = |(x, y): (u32, u32)| {
                        let (cx, cy) = ((b.xmin + b.xmax) / 2.0, (b.ymin + b.ymax) / 2.0);
                        (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)
                    };
                    d(*p).total_cmp(&d(*q))
                })
                .unwrap();
            let outside = centre_lum(corner.0, corner.1);
            assert!((inside - outside).abs() > 0.12, "image {i}: inside {inside} outside {outside}");
        }
    }

    #[test]
    fn write_demo_writes_a_loadable_project() {
        let dir = tempfile::tempdir().unwrap();
        let o = small();
        let p = write_demo(dir.path(), &o).unwrap();
        let q = Project::load(dir.path()).unwrap();
        assert_eq!(p.images, q.images);
        assert_eq!(q.class_names(), SHAPE_NAMES.map(String::from).to_vec());
        assert_eq!(q.images.len(), 40);
        assert_eq!(q.indices_in(Split::Test).len(), 4);
        assert_eq!(q.indices_in(Split::Val).len(), 4);
        for (i, im) in q.images.iter().enumerate() {
            let img = crate::data::decode::load_image(&q.source_of(i)).unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
            assert_eq!(im.class.is_some(), im.boxes.len() == 1);
            if let Some(c) = im.class {
                assert_eq!(c, im.boxes[0].class);
            }
        }
        // Same options again: byte-identical images.
        let dir2 = tempfile::tempdir().unwrap();
        write_demo(dir2.path(), &o).unwrap();
        for im in &q.images {
            let ImageSource::File(rel) = &im.source else { unreachable!() };
            assert_eq!(std::fs::read(dir.path().join(rel)).unwrap(), std::fs::read(dir2.path().join(rel)).unwrap());
        }
    }

    #[test]
    fn a_real_project_is_never_overwritten_but_demo_data_is_regenerated() {
        let dir = tempfile::tempdir().unwrap();
        let mut mine = Project::new("my cats", Task::Classify, dir.path());
        mine.class_index_or_add("cat");
        mine.save().unwrap();
        let err = write_demo(dir.path(), &small()).unwrap_err().to_string();
        assert!(err.contains("my cats"), "{err}");
        assert_eq!(Project::load(dir.path()).unwrap(), mine);
        assert!(!dir.path().join("images").exists());

        let demo_dir = tempfile::tempdir().unwrap();
        write_demo(demo_dir.path(), &small()).unwrap();
        let again = write_demo(demo_dir.path(), &DemoOptions { count: 10, ..small() }).unwrap();
        assert_eq!(Project::load(demo_dir.path()).unwrap().images.len(), again.images.len());
    }

    #[test]
    fn extreme_options_do_not_panic() {
        for (size, min_scale, max_scale, max_shapes) in [(16, 0.9, 0.9, 6), (16, 0.05, 0.05, 6), (17, 0.5, 0.9, 1)] {
            let o = DemoOptions { size, min_scale, max_scale, max_shapes, ..small() };
            for i in 0..20 {
                let (img, boxes) = render_image(&o, i);
                assert_eq!(img.dimensions(), (size, size));
                assert!(!boxes.is_empty());
                assert!(boxes.iter().all(|b| b.xmin >= 0.0 && b.xmax <= size as f32 && b.ymin >= 0.0 && b.ymax <= size as f32));
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_demo(dir.path(), &DemoOptions { count: 0, ..small() }).is_err());
        assert!(write_demo(dir.path(), &DemoOptions { size: 4, ..small() }).is_err());
    }
}
