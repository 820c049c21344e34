//! Import a dataset (any [`Format`], auto-detected when not given) into a [`Project`], and open either a
//! project or a raw dataset path the same way for every command.
//!
//! The per-format parsers in [`super::formats`] only read annotation files. Everything that must be the same
//! for every format happens here, once:
//! 1. duplicate images are reported and dropped;
//! 2. every image file is probed (real format, orientation-aware size, truncation, pixel limit) in parallel;
//! 3. boxes are validated: non-finite or zero-area boxes are skipped, boxes outside the image are clamped,
//!    and each is reported;
//! 4. class names become indices (declared order first, then newly seen names sorted);
//! 5. splits: the dataset's own splits are kept; with train/test only, ~10% of train becomes val by a hash
//!    of the file name (test is never used for model selection); with no splits, 80/10/10 by name hash.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::decode;
use super::formats::{self, Coords, Format, FormatError, Parsed, RawSource, Skip};
use super::project::{BBox, ImageEntry, ImageSource, Project, ProjectError, Split, Task, PROJECT_FILE};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error("{path}: does not exist")]
    Missing { path: PathBuf },
    #[error("{path}: cannot tell the dataset format ({reason}); pass --format (one of: coco, yolo, voc, csv, folder, idx, digits)")]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{path}: no importable images as {format}{}", first_reasons(.skipped))]
    Empty { path: PathBuf, format: Format, skipped: Vec<Skip> },
}

fn first_reasons(skipped: &[Skip]) -> String {
    if skipped.is_empty() {
        return String::new();
    }
    let list: Vec<String> = skipped.iter().take(5).map(|s| format!("{}: {}", s.path, s.reason)).collect();
    let more = if skipped.len() > 5 { format!(" (and {} more)", skipped.len() - 5) } else { String::new() };
    format!("; skipped: {}{more}", list.join("; "))
}

/// Summary of an import (`tessera import --json` prints it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub format: String,
    pub source: String,
    pub task: String,
    /// Images imported.
    pub images: usize,
    /// Boxes imported (detection).
    pub boxes: usize,
    /// Images with labels (a class, boxes, or marked as a labelled negative).
    pub labeled: usize,
    /// Class name -> count (boxes for detection, images for classification); every class is listed.
    pub classes: BTreeMap<String, usize>,
    /// Split name -> images.
    pub splits: BTreeMap<String, usize>,
    /// Everything left out, with the reason: images, boxes, rows, annotation files.
    pub skipped: Vec<Skip>,
    /// Things changed or worth knowing (clamped boxes, extension mismatches, split decisions).
    pub warnings: Vec<String>,
}

impl ImportReport {
    /// Counts of a project (for projects opened from tessera.json).
    pub fn of_project(project: &Project, format: &str, source: &Path) -> ImportReport {
        let mut r = ImportReport {
            format: format.into(),
            source: source.display().to_string(),
            task: project.task.as_str().into(),
            images: project.images.len(),
            boxes: project.box_count(),
            labeled: project.images.iter().filter(|i| i.labeled).count(),
            ..Default::default()
        };
        for (c, n) in project.classes.iter().zip(project.class_counts()) {
            r.classes.insert(c.name.clone(), n);
        }
        for s in Split::ALL {
            r.splits.insert(s.as_str().into(), project.indices_in(s).len());
        }
        r
    }

    /// A short human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} images ({} labelled), {} boxes, {} classes, as {} ({})\n",
            self.images,
            self.labeled,
            self.boxes,
            self.classes.len(),
            self.format,
            self.task
        );
        let splits: Vec<String> = self.splits.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s += &format!("splits: {}\n", splits.join(", "));
        let classes: Vec<String> = self.classes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s += &format!("classes: {}\n", classes.join(", "));
        if !self.skipped.is_empty() {
            s += &format!("skipped {}:\n", self.skipped.len());
            for k in self.skipped.iter().take(20) {
                s += &format!("  {}: {}\n", k.path, k.reason);
            }
            if self.skipped.len() > 20 {
                s += &format!("  ... and {} more (see --json)\n", self.skipped.len() - 20);
            }
        }
        if !self.warnings.is_empty() {
            s += &format!("warnings {}:\n", self.warnings.len());
            for w in self.warnings.iter().take(20) {
                s += &format!("  {w}\n");
            }
            if self.warnings.len() > 20 {
                s += &format!("  ... and {} more (see --json)\n", self.warnings.len() - 20);
            }
        }
        s
    }
}

/// Imports the dataset at `src` as a project whose folder is `project_root` (nothing is written; call
/// `Project::save`). Image paths are stored relative to `project_root`; images are never copied.
pub fn import_dataset(src: &Path, format: Option<Format>, project_root: &Path) -> Result<(Project, ImportReport), ImportError> {
    if !src.exists() {
        return Err(ImportError::Missing { path: src.to_path_buf() });
    }
    let src = absolute(src);
    let project_root = absolute(project_root);
    let format = match format {
        Some(f) => f,
        None => detect_format(&src)?,
    };
    if format == Format::Tessera {
        return formats::tessera::import(&src, &project_root);
    }
    let parsed = match format {
        Format::Coco => formats::coco::read(&src)?,
        Format::Yolo => formats::yolo::read(&src)?,
        Format::Voc => formats::voc::read(&src)?,
        Format::Csv => formats::csv_boxes::read(&src)?,
        Format::Folder => formats::folder::read(&src)?,
        Format::Idx => formats::idx::read(&src)?,
        Format::Digits => formats::digits::read(&src)?,
        Format::Tessera => unreachable!(),
    };
    finalize(parsed, format, &src, &project_root)
}

/// Opens a project folder (or its tessera.json), or imports any other dataset path in memory with the
/// dataset's folder as root; nothing is written. Every CLI command that takes a project uses this.
pub fn open_project_or_dataset(path: &Path) -> anyhow::Result<(Project, ImportReport)> {
    let is_project_file = path.is_file() && path.file_name().is_some_and(|n| n == PROJECT_FILE);
    if is_project_file || path.join(PROJECT_FILE).is_file() {
        let project = Project::load(path)?;
        let report = ImportReport::of_project(&project, "tessera", path);
        return Ok((project, report));
    }
    let root = if path.is_dir() { path.to_path_buf() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
    let root = if root.as_os_str().is_empty() { PathBuf::from(".") } else { root };
    Ok(import_dataset(path, None, &root)?)
}

pub(crate) fn absolute(p: &Path) -> PathBuf {
    let p = if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf()) };
    super::project::normalize(&p)
}

// ---------------------------------------------------------------------------------------------
// Format detection

/// Guesses the format of a dataset file or folder from its files (names, then a peek at their content).
pub fn detect_format(src: &Path) -> Result<Format, ImportError> {
    let unknown = |reason: &str| ImportError::UnknownFormat { path: src.to_path_buf(), reason: reason.into() };
    if src.is_file() {
        if src.file_name().is_some_and(|n| n == PROJECT_FILE) {
            return Ok(Format::Tessera);
        }
        return detect_file(src).ok_or_else(|| unknown("the file is not a recognised annotation or data file"));
    }
    if src.join(PROJECT_FILE).is_file() {
        return Ok(Format::Tessera);
    }
    let mut found = Found::default();
    let mut seen = 0usize;
    for entry in walkdir::WalkDir::new(src).follow_links(true).max_depth(6).sort_by_file_name().into_iter().flatten() {
        seen += 1;
        if seen > 400_000 {
            break;
        }
        let p = entry.path();
        if formats::is_junk(p) && p != src {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if entry.file_type().is_dir() {
            if name == "main" && p.parent().is_some_and(|d| d.ends_with("ImageSets")) {
                found.voc_sets = true;
            }
            if name == "labels" {
                found.labels_dir = true;
            }
            continue;
        }
        if formats::is_image_path(p) {
            found.images += 1;
            continue;
        }
        let ext = name.rsplit('.').next().unwrap_or("");
        match ext {
            "json" if found.coco.is_none() && formats::coco::looks_like_coco(p) => found.coco = Some(p.to_path_buf()),
            "yaml" | "yml" if formats::yolo::looks_like_data_yaml(p) => found.yolo_yaml = true,
            "names" => found.yolo_names = true,
            "txt" if name == "classes.txt" => found.yolo_names = true,
            "xml" => {
                if found.voc_checked < 3 {
                    found.voc_checked += 1;
                    if formats::read_text(p).map(|t| formats::voc::looks_like_voc(&t)).unwrap_or(false) {
                        found.voc += 1;
                        if formats::split_from_path(p, src).is_some() {
                            found.voc_split_folders = true;
                        }
                    }
                } else if found.voc > 0 {
                    found.voc += 1;
                    if formats::split_from_path(p, src).is_some() {
                        found.voc_split_folders = true;
                    }
                }
            }
            _ => match detect_file(p) {
                Some(Format::Idx) => found.idx = true,
                Some(Format::Csv) => {
                    found.csv = true;
                    if formats::split_from_name(&name).is_some() {
                        found.csv_split = true;
                    }
                }
                Some(Format::Digits) => found.digits = true,
                _ => {}
            },
        }
    }
    let f = &found;
    Ok(if f.idx {
        Format::Idx
    } else if f.coco.is_some() {
        Format::Coco
    } else if f.yolo_yaml || (f.labels_dir && f.yolo_names) {
        Format::Yolo
    } else if f.voc > 0 && (f.voc_sets || f.voc_split_folders || !f.csv_split) {
        Format::Voc
    } else if f.csv {
        Format::Csv
    } else if f.digits {
        Format::Digits
    } else if f.labels_dir {
        Format::Yolo
    } else if f.images > 0 {
        // Class folders, or a plain folder of photos to label by hand (imported unlabelled).
        Format::Folder
    } else {
        return Err(unknown("no annotation files and no images found"));
    })
}

#[derive(Default)]
struct Found {
    idx: bool,
    coco: Option<PathBuf>,
    yolo_yaml: bool,
    yolo_names: bool,
    labels_dir: bool,
    voc: usize,
    voc_checked: usize,
    voc_sets: bool,
    voc_split_folders: bool,
    csv: bool,
    csv_split: bool,
    digits: bool,
    images: usize,
}

/// Format of a single data/annotation file, from its name and first bytes.
fn detect_file(p: &Path) -> Option<Format> {
    let name = p.file_name()?.to_string_lossy().to_lowercase();
    if name.ends_with(".json") {
        return formats::coco::looks_like_coco(p).then_some(Format::Coco);
    }
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        return Some(Format::Yolo);
    }
    if name.ends_with(".xml") {
        return Some(Format::Voc);
    }
    let interesting = name.ends_with(".csv") || name.ends_with(".gz") || name.contains("idx") || name.ends_with("ubyte");
    if !interesting {
        return None;
    }
    let head = decode::peek_maybe_gzip(p, 4096)?;
    if head.len() >= 4 && head[0] == 0 && head[1] == 0 && head[2] == 8 && (head[3] == 1 || head[3] == 3) {
        return Some(Format::Idx);
    }
    let text = String::from_utf8_lossy(&head);
    let first = text.lines().next().unwrap_or("");
    if formats::csv_boxes::looks_like_box_header(first) {
        return Some(Format::Csv);
    }
    let fields: Vec<&str> = first.split(',').collect();
    if fields.len() == 65 && fields.iter().all(|f| f.trim().parse::<f64>().is_ok()) {
        return Some(Format::Digits);
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The shared validation pipeline

struct Checked {
    width: u32,
    height: u32,
}

fn finalize(parsed: Parsed, format: Format, src: &Path, project_root: &Path) -> Result<(Project, ImportReport), ImportError> {
    let Parsed { images, classes: declared, detection, mut skipped, mut warnings } = parsed;

    // 1. duplicates: the same image file annotated twice.
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut images: Vec<_> = images
        .into_iter()
        .filter(|im| match &im.source {
            RawSource::File(p) => {
                let key = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                if seen.insert(key) {
                    true
                } else {
                    skipped.push(Skip { path: im.key.clone(), reason: "duplicate: this image is already annotated by an earlier entry; this entry was skipped".into() });
                    false
                }
            }
            RawSource::Known { .. } => true,
        })
        .collect();

    // 2. probe image files in parallel.
    let probed: Vec<Result<(Option<String>, Checked), String>> = images
        .par_iter()
        .map(|im| match &im.source {
            RawSource::File(p) => decode::probe_file(p)
                .map_err(|e| e.reason().to_string())
                .map(|probe| (probe.extension_mismatch, Checked { width: probe.width, height: probe.height })),
            RawSource::Known { width, height, .. } => Ok((None, Checked { width: *width, height: *height })),
        })
        .collect();
    let mut probes = Vec::with_capacity(probed.len());
    for (r, im) in probed.into_iter().zip(&images) {
        probes.push(r.map(|(mismatch, c)| {
            if let Some(m) = mismatch {
                // Only a note: the image decodes fine by its content.
                warnings.push(format!("{}: {m} (decoded by content)", im.key));
            }
            c
        }));
    }

    // 3. class table: declared names first, then new ones in sorted order.
    let mut class_names: Vec<String> = Vec::new();
    for c in declared {
        if !class_names.contains(&c) {
            class_names.push(c);
        }
    }
    let mut new_names: Vec<String> = Vec::new();
    {
        let known: HashSet<&String> = class_names.iter().collect();
        let mut fresh: HashSet<&String> = HashSet::new();
        for im in &images {
            for n in im.class.iter().chain(im.boxes.iter().map(|b| &b.class)) {
                if !known.contains(n) && fresh.insert(n) {
                    new_names.push(n.clone());
                }
            }
        }
    }
    new_names.sort();
    class_names.extend(new_names);

    let name = src.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into());
    let task = if detection { Task::Detect } else { Task::Classify };
    let mut project = Project::new(name, task, project_root);
    for c in &class_names {
        project.class_index_or_add(c);
    }
    let class_index: HashMap<&str, usize> = class_names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();

    // 4. entries with validated boxes.
    let mut rel_cache: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut dataset_splits: Vec<Option<Split>> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for (im, probe) in images.drain(..).zip(probes) {
        let checked = match probe {
            Ok(c) => c,
            Err(reason) => {
                skipped.push(Skip { path: im.key.clone(), reason });
                continue;
            }
        };
        let (w, h) = (checked.width, checked.height);
        if let Some((dw, dh)) = im.declared_size {
            if (dw, dh) != (w, h) {
                let hint = if (dh, dw) == (w, h) { " (EXIF rotation? boxes are taken as given)" } else { "" };
                warnings.push(format!("{}: annotation says {dw}x{dh} but the image is {w}x{h}{hint}", im.key));
            }
        }
        let mut boxes = Vec::with_capacity(im.boxes.len());
        for b in &im.boxes {
            match validate_box(b.coords, w, h) {
                Ok((bx, clamped)) => {
                    if clamped {
                        warnings.push(format!(
                            "{} ({}): box outside the {w}x{h} image, clamped to [{}, {}, {}, {}]",
                            im.key, b.origin, bx[0], bx[1], bx[2], bx[3]
                        ));
                    }
                    boxes.push(BBox { xmin: bx[0], ymin: bx[1], xmax: bx[2], ymax: bx[3], class: class_index[b.class.as_str()] });
                }
                Err(reason) => skipped.push(Skip { path: format!("{} ({})", im.key, b.origin), reason }),
            }
        }
        let source = match im.source {
            RawSource::File(p) => ImageSource::File(rel_cached(&mut rel_cache, &p, &project)),
            RawSource::Known { source, .. } => match source {
                ImageSource::Idx { file, index } => ImageSource::Idx { file: rel_cached(&mut rel_cache, &file, &project), index },
                ImageSource::DigitsCsv { file, row } => {
                    ImageSource::DigitsCsv { file: rel_cached(&mut rel_cache, &file, &project), row }
                }
                ImageSource::File(p) => ImageSource::File(rel_cached(&mut rel_cache, &p, &project)),
            },
        };
        let path_ok = match &source {
            ImageSource::File(p) | ImageSource::Idx { file: p, .. } | ImageSource::DigitsCsv { file: p, .. } => p.to_str().is_some(),
        };
        if !path_ok {
            // tessera.json is UTF-8 JSON: such a path could not be saved, so say so now rather than fail later.
            skipped.push(Skip {
                path: im.key.clone(),
                reason: "the file path is not valid UTF-8 and cannot be stored in tessera.json; rename the file".into(),
            });
            continue;
        }
        dataset_splits.push(im.split);
        keys.push(im.key);
        project.images.push(ImageEntry {
            source,
            width: w,
            height: h,
            split: Split::Train,
            class: im.class.as_deref().map(|c| class_index[c]),
            boxes,
            labeled: im.labeled,
        });
    }

    // 5. splits.
    let splits = assign_splits(&dataset_splits, &keys, &mut warnings);
    for (im, s) in project.images.iter_mut().zip(splits) {
        im.split = s;
    }

    if project.images.is_empty() {
        return Err(ImportError::Empty { path: src.to_path_buf(), format, skipped });
    }
    project.warnings = skipped
        .iter()
        .map(|s| format!("skipped {}: {}", s.path, s.reason))
        .chain(warnings.iter().cloned())
        .collect();
    let mut report = ImportReport::of_project(&project, format.as_str(), src);
    report.skipped = skipped;
    report.warnings = warnings;
    Ok((project, report))
}

fn rel_cached(cache: &mut HashMap<PathBuf, PathBuf>, p: &Path, project: &Project) -> PathBuf {
    if let Some(r) = cache.get(p) {
        return r.clone();
    }
    let r = project.relative_path(p);
    cache.insert(p.to_path_buf(), r.clone());
    r
}

/// Validates one box against the image size: Ok((corners, was_clamped)) or Err(reason to skip it).
pub fn validate_box(coords: Coords, w: u32, h: u32) -> Result<([f32; 4], bool), String> {
    let (wf, hf) = (w as f64, h as f64);
    let [xmin, ymin, xmax, ymax] = match coords {
        Coords::Pixel { xmin, ymin, xmax, ymax } => [xmin, ymin, xmax, ymax],
        Coords::Normalized { cx, cy, w: bw, h: bh, quantum } => {
            let snap = |v: f64, scale: f64| {
                let tol = quantum * scale;
                if tol > 0.0 && (v - v.round()).abs() <= tol {
                    v.round()
                } else {
                    v
                }
            };
            [
                snap((cx - bw / 2.0) * wf, wf),
                snap((cy - bh / 2.0) * hf, hf),
                snap((cx + bw / 2.0) * wf, wf),
                snap((cy + bh / 2.0) * hf, hf),
            ]
        }
    };
    let fmt = |v: [f64; 4]| format!("[{}, {}, {}, {}]", v[0], v[1], v[2], v[3]);
    let v = [xmin, ymin, xmax, ymax];
    if v.iter().any(|x| !x.is_finite()) {
        return Err(format!("box {} has a coordinate that is not a finite number", fmt(v)));
    }
    if xmax < xmin || ymax < ymin {
        return Err(format!("box {} has its corners in the wrong order (xmax < xmin or ymax < ymin)", fmt(v)));
    }
    if xmax == xmin || ymax == ymin {
        return Err(format!("zero-area box {} (width {} x height {})", fmt(v), xmax - xmin, ymax - ymin));
    }
    let c = [xmin.clamp(0.0, wf), ymin.clamp(0.0, hf), xmax.clamp(0.0, wf), ymax.clamp(0.0, hf)];
    if c[2] <= c[0] || c[3] <= c[1] {
        return Err(format!("box {} lies entirely outside the {w}x{h} image", fmt(v)));
    }
    let clamped = c != v;
    Ok(([c[0] as f32, c[1] as f32, c[2] as f32, c[3] as f32], clamped))
}

/// The split policy (see the module docs). `keys` are stable names for the hash.
pub fn assign_splits(given: &[Option<Split>], keys: &[String], warnings: &mut Vec<String>) -> Vec<Split> {
    let has = |s: Split| given.iter().any(|g| *g == Some(s));
    let (train, val, test) = (has(Split::Train), has(Split::Val), has(Split::Test));
    let hash = |k: &String| Split::from_name_hash(k);
    if !train && !val && !test {
        return keys.iter().map(hash).collect();
    }
    if train && !val && !test {
        warnings.push("the dataset has only a train split: made an 80/10/10 train/val/test split by file-name hash".into());
        return keys.iter().map(hash).collect();
    }
    let unassigned = given.iter().filter(|g| g.is_none()).count();
    if unassigned > 0 {
        warnings.push(format!("{unassigned} images are in no split of the dataset: assigned 80/10/10 by file-name hash"));
    }
    let carve_val = train && test && !val;
    if carve_val {
        warnings.push("the dataset has train and test but no validation split: ~10% of train moved to val by file-name hash (test is kept for final evaluation only)".into());
    }
    if train && val && !test {
        warnings.push("the dataset has no test split: evaluate on val, or add a test split".into());
    }
    given
        .iter()
        .zip(keys)
        .map(|(g, k)| match g {
            Some(Split::Train) if carve_val && hash(k) == Split::Val => Split::Val,
            Some(s) => *s,
            None => hash(k),
        })
        .collect()
}
