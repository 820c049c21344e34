//! Export a project to a dataset format. The export is self-contained: image files are hard-linked (or
//! copied when a link is impossible) next to the annotations in the layout the format's own tools expect;
//! images held in IDX / digits files are written as PNG.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::formats::{self, Format, Skip};
use super::project::{ImageSource, Project};
use crate::util::atomic::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Unsupported(String),
}

/// What an export wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    pub format: String,
    pub out: PathBuf,
    pub images: usize,
    pub boxes: usize,
    pub classes: BTreeMap<String, usize>,
    /// Images that could not be exported (unreadable source, ...).
    pub skipped: Vec<Skip>,
    pub warnings: Vec<String>,
}

/// Shared state of one export: unique output names and the image placement.
pub struct Exporter<'a> {
    pub project: &'a Project,
    /// Unique (case-insensitively, by stem too) output file name for every image.
    pub names: Vec<String>,
    pub out: PathBuf,
    pub report: ExportReport,
    unlabeled: usize,
}

impl<'a> Exporter<'a> {
    fn new(project: &'a Project, format: Format, out: &Path) -> Self {
        Exporter {
            project,
            names: unique_names(project),
            out: out.to_path_buf(),
            report: ExportReport { format: format.as_str().into(), out: out.to_path_buf(), ..Default::default() },
            unlabeled: 0,
        }
    }

    /// Puts image `i` at `<out>/<dir>/<names[i]>`; returns that path relative to `out` (with `/`), or `None`
    /// after recording a skip when the source cannot be read.
    pub fn place(&mut self, i: usize, dir: &str) -> Option<String> {
        let rel = if dir.is_empty() { self.names[i].clone() } else { format!("{dir}/{}", self.names[i]) };
        let dest = self.out.join(&rel);
        let source = self.project.source_of(i);
        let result = (|| -> Result<(), String> {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            if dest.exists() {
                std::fs::remove_file(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
            }
            match &source {
                ImageSource::File(p) => {
                    if std::fs::hard_link(p, &dest).is_err() {
                        std::fs::copy(p, &dest).map_err(|e| format!("cannot copy {}: {e}", p.display()))?;
                    }
                    Ok(())
                }
                other => {
                    let img = super::decode::load_image(other).map_err(|e| e.to_string())?;
                    let mut bytes = Vec::new();
                    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map_err(|e| e.to_string())?;
                    write_atomic(&dest, &bytes).map_err(|e| format!("{}: {e}", dest.display()))
                }
            }
        })();
        match result {
            Ok(()) => Some(rel),
            Err(reason) => {
                self.report.skipped.push(Skip { path: self.project.images[i].source.display_name(), reason });
                None
            }
        }
    }

    /// Writes `<out>/<rel>` atomically.
    pub fn write_file(&self, rel: &str, bytes: &[u8]) -> Result<(), ExportError> {
        let p = self.out.join(rel);
        write_atomic(&p, bytes).map_err(|source| ExportError::Io { path: p, source })
    }

    /// Counts image `i` as exported.
    pub fn count(&mut self, i: usize) {
        let im = &self.project.images[i];
        self.report.images += 1;
        self.report.boxes += im.boxes.len();
        for b in &im.boxes {
            *self.report.classes.entry(self.project.classes[b.class].name.clone()).or_default() += 1;
        }
        if let Some(c) = im.class {
            *self.report.classes.entry(self.project.classes[c].name.clone()).or_default() += 1;
        }
    }

    /// Records an image left out because it has no labels and the format cannot say "unlabelled".
    pub fn note_unlabeled(&mut self, _i: usize) {
        self.unlabeled += 1;
    }
}

/// Exports `project` as `format` into `out` (created if needed).
pub fn export_project(project: &Project, format: Format, out: &Path) -> Result<ExportReport, ExportError> {
    project.validate().map_err(|e| ExportError::Unsupported(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(|source| ExportError::Io { path: out.to_path_buf(), source })?;
    let mut ex = Exporter::new(project, format, out);
    match format {
        Format::Coco => formats::coco::write(&mut ex)?,
        Format::Yolo => formats::yolo::write(&mut ex)?,
        Format::Voc => formats::voc::write(&mut ex)?,
        Format::Csv => formats::csv_boxes::write(&mut ex)?,
        Format::Folder => formats::folder::write(&mut ex)?,
        Format::Tessera => formats::tessera::write(&mut ex)?,
        Format::Idx | Format::Digits => {
            return Err(ExportError::Unsupported(format!(
                "export as {format} is not supported (use folder for classification, or coco/yolo/voc/csv for detection)"
            )))
        }
    }
    if ex.unlabeled > 0 {
        let msg = format!("{} unlabelled images were not exported ({format} has no way to mark an image unlabelled)", ex.unlabeled);
        ex.report.warnings.push(msg);
    }
    Ok(ex.report)
}

/// Output file names, unique even when two images share a name in different folders (the parent folder is
/// prefixed, then a counter) and unique by stem so per-image annotation files never collide.
fn unique_names(project: &Project) -> Vec<String> {
    let mut used: HashSet<String> = HashSet::new();
    let mut names = Vec::with_capacity(project.images.len());
    for im in &project.images {
        let base = match &im.source {
            ImageSource::File(p) => {
                let name = p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
                let parent = p.parent().and_then(|d| d.file_name()).map(|s| s.to_string_lossy().into_owned());
                (name, parent)
            }
            ImageSource::Idx { file, index } => (format!("{}_{index:05}.png", file_stem_clean(file)), None),
            ImageSource::DigitsCsv { file, row } => (format!("{}_{row:05}.png", file_stem_clean(file)), None),
        };
        let (name, parent) = base;
        let stem_key = |n: &str| Path::new(n).file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
        let mut candidate = name.clone();
        if used.contains(&stem_key(&candidate)) {
            if let Some(parent) = &parent {
                candidate = format!("{parent}_{name}");
            }
        }
        let (stem, ext) = split_ext(&name);
        let mut k = 1;
        while used.contains(&stem_key(&candidate)) {
            candidate = format!("{stem}_{k}{ext}");
            k += 1;
        }
        used.insert(stem_key(&candidate));
        names.push(candidate);
    }
    names
}

fn split_ext(name: &str) -> (String, String) {
    match name.rfind('.') {
        Some(i) if i > 0 => (name[..i].to_string(), name[i..].to_string()),
        _ => (name.to_string(), String::new()),
    }
}

/// `train-images-idx3-ubyte.gz` -> `train-images-idx3-ubyte`.
fn file_stem_clean(file: &Path) -> String {
    let mut s = file.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    for ext in [".gz", ".csv"] {
        if let Some(t) = s.strip_suffix(ext) {
            s = t.to_string();
        }
    }
    s
}
