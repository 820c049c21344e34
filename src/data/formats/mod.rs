//! Dataset formats. Each format has its own file with a parser (`read`) that turns the files on disk into
//! [`RawImage`] records, and a writer (`write`) that exports a [`Project`](super::Project).
//!
//! Parsers only read annotations; checking the images (exists, real format, size, truncation), validating
//! boxes (zero-area, outside the image), mapping class names and assigning splits happen once, for every
//! format, in [`crate::data::import`].
pub mod coco;
pub mod csv_boxes;
pub mod digits;
pub mod folder;
pub mod idx;
pub mod tessera;
pub mod voc;
pub mod yolo;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::project::{ImageSource, Split};

/// The dataset formats Tessera reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// COCO JSON (`images`, `annotations` with `bbox` = [x, y, w, h], `categories`).
    Coco,
    /// YOLO txt labels (`class cx cy w h`, normalised) with data.yaml or classes.txt.
    Yolo,
    /// Pascal VOC xml, one file per image, optional ImageSets/Main split lists.
    Voc,
    /// CSV `filename,width,height,class,xmin,ymin,xmax,ymax`.
    Csv,
    /// Folder per class, optionally below train/val/test folders.
    Folder,
    /// MNIST IDX images + labels (raw or gzip).
    Idx,
    /// The 8x8 digits CSV (64 values 0..16 then the label; raw or gzip).
    Digits,
    /// A Tessera project folder (tessera.json).
    Tessera,
}

impl Format {
    pub const ALL: [Format; 8] =
        [Format::Coco, Format::Yolo, Format::Voc, Format::Csv, Format::Folder, Format::Idx, Format::Digits, Format::Tessera];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Coco => "coco",
            Format::Yolo => "yolo",
            Format::Voc => "voc",
            Format::Csv => "csv",
            Format::Folder => "folder",
            Format::Idx => "idx",
            Format::Digits => "digits",
            Format::Tessera => "tessera",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "coco" | "coco-json" | "json" => Format::Coco,
            "yolo" | "darknet" | "ultralytics" => Format::Yolo,
            "voc" | "pascal" | "pascal-voc" | "pascalvoc" | "xml" => Format::Voc,
            "csv" => Format::Csv,
            "folder" | "folders" | "imagefolder" | "class-folders" => Format::Folder,
            "idx" | "mnist" => Format::Idx,
            "digits" | "digits-csv" => Format::Digits,
            "tessera" | "project" => Format::Tessera,
            other => {
                return Err(format!(
                    "unknown format '{other}' (expected one of: {})",
                    Format::ALL.map(|f| f.as_str()).join(", ")
                ))
            }
        })
    }
}

/// A skipped file, image, box or row, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    pub path: String,
    pub reason: String,
}

/// Box coordinates as the file gives them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Coords {
    /// Pixel corners.
    Pixel { xmin: f64, ymin: f64, xmax: f64, ymax: f64 },
    /// YOLO: centre and size as fractions of the image size. `quantum` is the resolution the file was written
    /// at (10^-decimals), so values within it of an integer pixel can snap back to that integer.
    Normalized { cx: f64, cy: f64, w: f64, h: f64, quantum: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawBox {
    pub coords: Coords,
    pub class: String,
    /// Where the box was read from ("file.xml, object 3"), for messages.
    pub origin: String,
}

/// Where a raw image's pixels are.
#[derive(Debug, Clone, PartialEq)]
pub enum RawSource {
    /// An image file (absolute path, or relative to the current directory).
    File(PathBuf),
    /// A multi-image source whose size is already known from its header.
    Known { source: ImageSource, width: u32, height: u32 },
}

/// One image as a parser found it, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawImage {
    pub source: RawSource,
    /// Size the annotation claims, checked against the real image.
    pub declared_size: Option<(u32, u32)>,
    /// The dataset's own split, if it has one.
    pub split: Option<Split>,
    /// Classification label.
    pub class: Option<String>,
    pub boxes: Vec<RawBox>,
    pub labeled: bool,
    /// Stable name used for hash splits and messages (path relative to the dataset root).
    pub key: String,
}

impl RawImage {
    pub fn file(path: PathBuf, key: String) -> Self {
        RawImage {
            source: RawSource::File(path),
            declared_size: None,
            split: None,
            class: None,
            boxes: Vec::new(),
            labeled: false,
            key,
        }
    }
}

/// What a parser hands to the import pipeline.
#[derive(Debug, Default)]
pub struct Parsed {
    pub images: Vec<RawImage>,
    /// Declared class names in their index order (COCO categories, YOLO names, IDX labels, ...).
    pub classes: Vec<String>,
    pub detection: bool,
    pub skipped: Vec<Skip>,
    pub warnings: Vec<String>,
}

impl Parsed {
    pub fn skip(&mut self, path: impl std::fmt::Display, reason: impl Into<String>) {
        self.skipped.push(Skip { path: path.to_string(), reason: reason.into() });
    }
    pub fn warn(&mut self, msg: impl Into<String>) {
        self.warnings.push(msg.into());
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl FormatError {
    pub fn bad(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        FormatError::Bad { path: path.as_ref().display().to_string(), reason: reason.into() }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        FormatError::Io { path: path.as_ref().display().to_string(), source }
    }
}

/// Extensions of image files we import (matched case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 12] = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff", "pnm", "ppm", "pgm", "qoi"];

pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

/// The folder images resolve against, and the annotation files to read: `src` itself when it is a file, otherwise
/// every file below it (4 levels, sorted) with extension `ext` that `accept` recognises.
pub fn annotation_files(src: &Path, ext: &str, accept: impl Fn(&Path) -> bool) -> (PathBuf, Vec<PathBuf>) {
    if src.is_file() {
        return (src.parent().unwrap_or(Path::new(".")).to_path_buf(), vec![src.to_path_buf()]);
    }
    let files = files_below(src, 4, false)
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) && accept(p))
        .collect();
    (src.to_path_buf(), files)
}

/// Every file below `dir` (at most `max_depth` levels, sorted by name; symlinks followed when `follow_links`),
/// hidden files and OS droppings left out. Unreadable entries are passed over.
pub fn files_below(dir: &Path, max_depth: usize, follow_links: bool) -> impl Iterator<Item = PathBuf> {
    walkdir::WalkDir::new(dir)
        .follow_links(follow_links)
        .max_depth(max_depth)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| !is_junk(p))
}

/// The first path (sorted by name, at most `max_depth` levels below `dir`) that is a file, or a link to one, and
/// that `wanted` accepts; `wanted` also gets the file name in lower case.
pub fn find_file_below(dir: &Path, max_depth: usize, wanted: impl Fn(&Path, &str) -> bool) -> Option<PathBuf> {
    walkdir::WalkDir::new(dir).max_depth(max_depth).sort_by_file_name().into_iter().flatten().map(|e| e.into_path()).find(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy().to_lowercase();
        p.is_file() && wanted(p, &name)
    })
}

/// Hidden files and OS droppings that are never part of a dataset.
pub fn is_junk(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.starts_with('.') || name.eq_ignore_ascii_case("thumbs.db") || name.eq_ignore_ascii_case("desktop.ini")
}

/// A split named by a folder or file name: `train`, `val`/`valid`/`validation`, `test` (also inside names
/// like `instances_train2017.json` or `train_labels.csv`).
pub fn split_from_name(name: &str) -> Option<Split> {
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()).collect();
    let has = |w: &[&str]| words.iter().any(|x| w.contains(x));
    if has(&["trainval"]) {
        return None;
    }
    match (has(&["train", "training"]), has(&["val", "valid", "validation", "dev"]), has(&["test", "testing"])) {
        (true, false, false) => Some(Split::Train),
        (false, true, false) => Some(Split::Val),
        (false, false, true) => Some(Split::Test),
        _ => None,
    }
}

/// The first split named by a folder on the path from `root` to `path` (exclusive of the file name).
pub fn split_from_path(path: &Path, root: &Path) -> Option<Split> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parent = rel.parent()?;
    parent.components().find_map(|c| split_from_name(&c.as_os_str().to_string_lossy()))
}

/// `path` relative to `root` with forward slashes: a stable key for hash splits and messages.
pub fn key_of(path: &Path, root: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

/// Every image file below a folder, indexed by file name (and by stem) to resolve names that annotation
/// files give without a usable path.
#[derive(Debug, Default)]
pub struct ImageIndex {
    by_name: HashMap<String, Vec<PathBuf>>,
    by_stem: HashMap<String, Vec<PathBuf>>,
}

impl ImageIndex {
    pub fn build(root: &Path) -> ImageIndex {
        let mut index = ImageIndex::default();
        for p in files_below(root, 8, true).filter(|p| is_image_path(p)) {
            let name = p.file_name().unwrap().to_string_lossy().to_lowercase();
            let stem = p.file_stem().unwrap().to_string_lossy().to_lowercase();
            index.by_name.entry(name).or_default().push(p.clone());
            index.by_stem.entry(stem).or_default().push(p);
        }
        index
    }

    /// Finds the image an annotation names: `name` may be a bare file name, a relative path, a path from
    /// another machine (Windows or Unix) or a stem without extension. Candidates are tried in `dirs` first.
    /// Returns Err(reason) when there is no match or several equally good ones.
    pub fn resolve(&self, name: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("empty image file name".into());
        }
        for d in dirs {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        let lower = base.to_lowercase();
        let pick = |cands: &Vec<PathBuf>| -> Result<PathBuf, String> {
            if cands.len() == 1 {
                return Ok(cands[0].clone());
            }
            // Prefer a candidate inside one of the preferred folders.
            let inside: Vec<&PathBuf> = cands.iter().filter(|c| dirs.iter().any(|d| c.starts_with(d))).collect();
            if inside.len() == 1 {
                return Ok(inside[0].clone());
            }
            Err(format!("image name '{base}' is ambiguous: {} files have it", cands.len()))
        };
        if let Some(c) = self.by_name.get(&lower) {
            return pick(c);
        }
        let stem = Path::new(&lower).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(c) = self.by_stem.get(&lower).or_else(|| self.by_stem.get(&stem)) {
            return pick(c);
        }
        Err(format!("image '{name}' not found"))
    }

    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Formats a float for a text annotation file: integers without a fraction, other values with the
/// shortest representation that reads back to the same number.
pub fn fmt_num(v: f32) -> String {
    format!("{v}")
}

/// Line and column of byte `offset` in `text` (1-based), for parse error messages.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
    (line, col)
}

/// Reads a text file, reporting non-UTF-8 content as an error that names the file.
pub fn read_text(path: &Path) -> Result<String, FormatError> {
    let bytes = std::fs::read(path).map_err(|e| FormatError::io(path, e))?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(s)),
        Err(e) => {
            let (line, col) = line_col(&String::from_utf8_lossy(e.as_bytes()), e.utf8_error().valid_up_to());
            Err(FormatError::bad(path, format!("line {line}, column {col}: not valid UTF-8 text")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names() {
        assert_eq!(split_from_name("train"), Some(Split::Train));
        assert_eq!(split_from_name("instances_val2017.json"), Some(Split::Val));
        assert_eq!(split_from_name("test_labels.csv"), Some(Split::Test));
        assert_eq!(split_from_name("valid"), Some(Split::Val));
        assert_eq!(split_from_name("trainval.txt"), None);
        assert_eq!(split_from_name("raccoon_labels.csv"), None);
        assert_eq!(split_from_name("contest"), None);
    }

    #[test]
    fn format_names_parse() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>().unwrap(), f);
        }
        assert!("bogus".parse::<Format>().is_err());
    }
}
