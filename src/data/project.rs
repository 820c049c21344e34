//! The project store: a folder holding `tessera.json` with classes, the image list (referenced in place),
//! labels and splits. This is the one data model that the importers write, the loader reads, the
//! trainer trains on and the labelling UI edits.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::util::atomic::write_atomic_with_backup;

/// Version of the `tessera.json` schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// File name of the project file inside a project folder.
pub const PROJECT_FILE: &str = "tessera.json";

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid Tessera project file (line {line}, column {column}): {message}")]
    Corrupt { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{path}: written by a newer Tessera (schema {found}, this build reads up to {supported}); the file was left untouched")]
    NewerSchema { path: PathBuf, found: u32, supported: u32 },
    #[error("{0}")]
    Invalid(String),
}

/// What a project's labels are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classify,
    #[default]
    Detect,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Classify => "classify",
            Task::Detect => "detect",
        }
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "classify" | "classification" | "cls" => Ok(Task::Classify),
            "detect" | "detection" | "det" => Ok(Task::Detect),
            other => Err(format!("unknown task '{other}' (expected classify or detect)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Deterministic 80/10/10 split from a stable hash (FNV-1a) of the file name, for datasets without splits.
    pub fn from_name_hash(name: &str) -> Split {
        let bucket = fnv1a(name.as_bytes()) % 10;
        match bucket {
            0 => Split::Val,
            1 => Split::Test,
            _ => Split::Train,
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(format!("unknown split '{other}' (expected train, val or test)")),
        }
    }
}

/// 64-bit FNV-1a: stable across platforms and releases (unlike std's hasher), so splits never move.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassInfo {
    pub name: String,
    /// sRGB colour used to draw this class.
    pub color: [u8; 3],
}

/// A box in pixel coordinates of the original (orientation-corrected) image; `xmax`/`ymax` exclusive edges.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
    pub class: usize,
}

impl BBox {
    pub fn width(&self) -> f32 {
        self.xmax - self.xmin
    }
    pub fn height(&self) -> f32 {
        self.ymax - self.ymin
    }
    pub fn area(&self) -> f32 {
        self.width().max(0.0) * self.height().max(0.0)
    }
}

/// Where an image's pixels come from. Images are referenced in place, never copied into the project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageSource {
    /// An image file; relative paths are relative to the project folder.
    File(PathBuf),
    /// Image `index` of an MNIST IDX images file (raw or gzip).
    Idx { file: PathBuf, index: usize },
    /// Row `row` (0-based, data rows only) of an 8x8 digits CSV (64 values 0..16 then the label), raw or gzip.
    DigitsCsv { file: PathBuf, row: usize },
}

impl ImageSource {
    /// A short human-readable name (file name, or file#index), for lists and error messages.
    pub fn display_name(&self) -> String {
        match self {
            ImageSource::File(p) => p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            ImageSource::Idx { file, index } => format!("{}#{index}", file.file_name().unwrap_or_default().to_string_lossy()),
            ImageSource::DigitsCsv { file, row } => format!("{}#{row}", file.file_name().unwrap_or_default().to_string_lossy()),
        }
    }

    /// The same source with relative paths resolved against `root`.
    pub fn resolved(&self, root: &Path) -> ImageSource {
        let abs = |p: &PathBuf| if p.is_absolute() { p.clone() } else { root.join(p) };
        match self {
            ImageSource::File(p) => ImageSource::File(abs(p)),
            ImageSource::Idx { file, index } => ImageSource::Idx { file: abs(file), index: *index },
            ImageSource::DigitsCsv { file, row } => ImageSource::DigitsCsv { file: abs(file), row: *row },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageEntry {
    pub source: ImageSource,
    /// Size after EXIF orientation is applied.
    pub width: u32,
    pub height: u32,
    pub split: Split,
    /// Classification label (index into `Project::classes`); `None` = unlabelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<usize>,
    /// Detection labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boxes: Vec<BBox>,
    /// Whether a person (or an importer) has labelled this image; an image with no boxes can be a labelled negative.
    #[serde(default)]
    pub labeled: bool,
}

impl ImageEntry {
    /// Usable for detection: it has boxes, or is marked labelled (a labelled negative: no objects here).
    pub fn has_box_labels(&self) -> bool {
        self.labeled || !self.boxes.is_empty()
    }

    /// Whether training for `task` can learn from this image's label: a class, or boxes / a labelled negative.
    pub fn is_labelled_for(&self, task: Task) -> bool {
        match task {
            Task::Classify => self.class.is_some(),
            Task::Detect => self.has_box_labels(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub schema_version: u32,
    pub name: String,
    pub task: Task,
    pub classes: Vec<ClassInfo>,
    pub images: Vec<ImageEntry>,
    /// Messages from import (skips, clamps) kept so the app can show them later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The folder holding `tessera.json`; not serialised. Relative image paths resolve against it.
    #[serde(skip)]
    pub root: PathBuf,
}

/// A distinct, readable colour for class `i` (golden-angle hue walk).
pub fn class_color(i: usize) -> [u8; 3] {
    let h = (i as f32 * 137.508) % 360.0;
    hsv_to_rgb(h / 60.0, 0.70, 0.95).map(|c| (c * 255.0) as u8)
}

/// HSV to RGB (all 0..1), with the hue given in sixths of a turn (0..6, one unit per colour-wheel sector) so
/// that callers working in degrees (`/ 60`) and in turns (`* 6`) get exactly the arithmetic they had.
pub fn hsv_to_rgb(hue6: f32, s: f32, v: f32) -> [f32; 3] {
    let c = v * s;
    let x = c * (1.0 - ((hue6 % 2.0) - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match hue6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r + m, g + m, b + m]
}

impl Project {
    pub fn new(name: impl Into<String>, task: Task, root: impl Into<PathBuf>) -> Self {
        Project {
            schema_version: SCHEMA_VERSION,
            name: name.into(),
            task,
            classes: Vec::new(),
            images: Vec::new(),
            warnings: Vec::new(),
            root: root.into(),
        }
    }

    /// Index of class `name`, adding it (with a fresh colour) if new.
    pub fn class_index_or_add(&mut self, name: &str) -> usize {
        if let Some(i) = self.class_index(name) {
            return i;
        }
        let i = self.classes.len();
        self.classes.push(ClassInfo { name: name.to_string(), color: class_color(i) });
        i
    }

    pub fn class_index(&self, name: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.name == name)
    }

    pub fn class_names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name.clone()).collect()
    }

    pub fn project_file(&self) -> PathBuf {
        self.root.join(PROJECT_FILE)
    }

    /// Absolute source of image `i`.
    pub fn source_of(&self, i: usize) -> ImageSource {
        self.images[i].source.resolved(&self.root)
    }

    pub fn indices_in(&self, split: Split) -> Vec<usize> {
        (0..self.images.len()).filter(|&i| self.images[i].split == split).collect()
    }

    /// Images in `split` with and without a label for `task`: (labelled, unlabelled).
    pub fn labelled_and_unlabelled(&self, task: Task, split: Split) -> (usize, usize) {
        let in_split = self.images.iter().filter(|e| e.split == split);
        let labelled = in_split.clone().filter(|e| e.is_labelled_for(task)).count();
        (labelled, in_split.count() - labelled)
    }

    /// Per-class counts: boxes for detection, images for classification.
    pub fn class_counts(&self) -> Vec<usize> {
        self.class_counts_for(self.task, None)
    }

    /// Per-class counts for `task` (boxes for detection, labelled images for classification), in one split or all.
    pub fn class_counts_for(&self, task: Task, split: Option<Split>) -> Vec<usize> {
        let n_classes = self.classes.len();
        let mut counts = vec![0; n_classes];
        for im in self.images.iter().filter(|e| split.is_none_or(|s| e.split == s)) {
            match task {
                Task::Classify => {
                    if let Some(c) = im.class.filter(|&c| c < n_classes) {
                        counts[c] += 1;
                    }
                }
                Task::Detect => {
                    for b in im.boxes.iter().filter(|b| b.class < n_classes) {
                        counts[b.class] += 1;
                    }
                }
            }
        }
        counts
    }

    pub fn box_count(&self) -> usize {
        self.images.iter().map(|i| i.boxes.len()).sum()
    }

    /// Checks that every label points at an existing class.
    pub fn validate(&self) -> Result<(), ProjectError> {
        let n = self.classes.len();
        for im in &self.images {
            let name = im.source.display_name();
            if let Some(c) = im.class {
                if c >= n {
                    return Err(ProjectError::Invalid(format!("{name}: class index {c} but only {n} classes")));
                }
            }
            for b in &im.boxes {
                if b.class >= n {
                    return Err(ProjectError::Invalid(format!("{name}: box class index {} but only {n} classes", b.class)));
                }
            }
        }
        Ok(())
    }

    /// Reads `dir/tessera.json` (or the file itself if `path` is a file). Never modifies it.
    pub fn load(path: &Path) -> Result<Project, ProjectError> {
        let file = if path.is_dir() { path.join(PROJECT_FILE) } else { path.to_path_buf() };
        let root = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let text = std::fs::read_to_string(&file).map_err(|source| ProjectError::Io { path: file.clone(), source })?;
        // Look at the schema version first, so a newer file gets the right message rather than a parse error.
        #[derive(Deserialize)]
        struct Header {
            schema_version: Option<u32>,
        }
        if let Ok(Header { schema_version: Some(v) }) = serde_json::from_str::<Header>(&text) {
            if v > SCHEMA_VERSION {
                return Err(ProjectError::NewerSchema { path: file, found: v, supported: SCHEMA_VERSION });
            }
        }
        let mut project: Project = serde_json::from_str(&text).map_err(|e| ProjectError::Corrupt {
            path: file.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        project.root = root;
        project.validate().map_err(|e| ProjectError::Invalid(format!("{}: {e}", file.display())))?;
        Ok(project)
    }

    /// Atomically writes `tessera.json` (temp file, fsync, rename), keeping the previous version as `tessera.json.bak`.
    /// Safe to call from an autosave timer: a crash mid-save leaves the old file intact.
    pub fn save(&self) -> Result<(), ProjectError> {
        let file = self.project_file();
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| ProjectError::Invalid(e.to_string()))?;
        write_atomic_with_backup(&file, &bytes).map_err(|source| ProjectError::Io { path: file, source })
    }

    /// Path to store for `image` inside a project at `self.root`: relative when the image lies below or near
    /// the project folder, absolute otherwise.
    pub fn relative_path(&self, image: &Path) -> PathBuf {
        relative_to(image, &self.root)
    }
}

/// `path` relative to `base` when both are absolute (or both relative), using `..` where needed.
pub fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
        }
    };
    let (path, base) = (normalize(&abs(path)), normalize(&abs(base)));
    let pc: Vec<_> = path.components().collect();
    let bc: Vec<_> = base.components().collect();
    let common = pc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return path;
    }
    let mut out = PathBuf::new();
    for _ in common..bc.len() {
        out.push("..");
    }
    for c in &pc[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// Removes `.` and resolves `..` lexically (no file system access, so it works for files that do not exist yet).
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_colors_are_pinned() {
        // Saved projects, the demo data and the UI snapshots carry these exact colours.
        assert_eq!(class_color(0), [242, 72, 72]);
        assert_eq!(class_color(1), [72, 242, 122]);
        assert_eq!(class_color(2), [171, 72, 242]);
        assert_eq!(class_color(7), [79, 72, 242]);
        assert_eq!(class_color(1000), [242, 72, 106]);
    }

    fn sample(root: &Path) -> Project {
        let mut p = Project::new("t", Task::Detect, root);
        let c = p.class_index_or_add("cat");
        p.images.push(ImageEntry {
            source: ImageSource::File("a b#1.png".into()),
            width: 10,
            height: 8,
            split: Split::Train,
            class: None,
            boxes: vec![BBox { xmin: 1.0, ymin: 2.0, xmax: 5.5, ymax: 7.0, class: c }],
            labeled: true,
        });
        p
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample(dir.path());
        p.save().unwrap();
        let q = Project::load(dir.path()).unwrap();
        assert_eq!(p, q);
    }

    #[test]
    fn newer_schema_is_refused_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(PROJECT_FILE);
        let text = r#"{"schema_version": 99, "name": "x"}"#;
        std::fs::write(&file, text).unwrap();
        let err = Project::load(dir.path()).unwrap_err();
        assert!(matches!(err, ProjectError::NewerSchema { found: 99, .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }

    #[test]
    fn corrupt_file_names_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PROJECT_FILE), "{\n \"schema_version\": 1,\n oops").unwrap();
        let err = Project::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn hash_split_is_stable_and_roughly_80_10_10() {
        assert_eq!(Split::from_name_hash("img_0001.jpg"), Split::from_name_hash("img_0001.jpg"));
        let mut counts = std::collections::HashMap::new();
        for i in 0..10_000 {
            *counts.entry(Split::from_name_hash(&format!("img_{i:05}.jpg"))).or_insert(0) += 1;
        }
        assert!((7600..8400).contains(&counts[&Split::Train]), "{counts:?}");
        assert!((800..1200).contains(&counts[&Split::Val]), "{counts:?}");
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative_to(Path::new("/a/b/c.png"), Path::new("/a/d")), PathBuf::from("../b/c.png"));
        assert_eq!(relative_to(Path::new("/a/b/c.png"), Path::new("/a")), PathBuf::from("b/c.png"));
    }
}
