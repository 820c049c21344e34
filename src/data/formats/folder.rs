//! Folder per class (ImageNet / Keras `image_dataset_from_directory` / Create ML layout):
//! `<class>/<image>` or `<split>/<class>/<image>` with split folders train, val/valid/validation, test.
//! Images below a class folder's subfolders belong to that class; images directly inside a split folder
//! (or the root) are imported unlabelled.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{is_image_path, is_junk, key_of, split_from_name, FormatError, Parsed, RawImage};
use crate::data::export::{ExportError, Exporter};
use crate::data::project::{Split, Task};

pub fn read(src: &Path) -> Result<Parsed, FormatError> {
    if !src.is_dir() {
        return Err(FormatError::bad(src, "a class-folder dataset must be a folder"));
    }
    let mut out = Parsed::default();
    let top = subdirs(src);
    let split_dirs: Vec<(PathBuf, Split)> =
        top.iter().filter_map(|d| split_from_name(&d.file_name().unwrap().to_string_lossy()).map(|s| (d.clone(), s))).collect();
    // (folder holding class folders, split)
    let bases: Vec<(PathBuf, Option<Split>)> = if split_dirs.is_empty() {
        vec![(src.to_path_buf(), None)]
    } else {
        for d in &top {
            if !split_dirs.iter().any(|(s, _)| s == d) {
                out.warn(format!("{}: not a train/val/test folder; ignored", d.display()));
            }
        }
        split_dirs.into_iter().map(|(d, s)| (d, Some(s))).collect()
    };
    let mut classes = BTreeSet::new();
    let mut unlabeled = 0usize;
    for (base, split) in bases {
        // Images directly in the base folder: unlabelled.
        for f in files_in(&base) {
            if is_image_path(&f) {
                let mut raw = RawImage::file(f.clone(), key_of(&f, src));
                raw.split = split;
                out.images.push(raw);
                unlabeled += 1;
            }
        }
        for class_dir in subdirs(&base) {
            let class = class_dir.file_name().unwrap().to_string_lossy().trim().to_string();
            classes.insert(class.clone());
            for entry in walkdir::WalkDir::new(&class_dir).follow_links(true).max_depth(8).sort_by_file_name().into_iter() {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        out.skip(class_dir.display(), format!("cannot read folder: {e}"));
                        continue;
                    }
                };
                let p = entry.path();
                if !entry.file_type().is_file() || is_junk(p) {
                    continue;
                }
                if !is_image_path(p) {
                    out.skip(key_of(p, src), "not an image file (unknown extension)");
                    continue;
                }
                let mut raw = RawImage::file(p.to_path_buf(), key_of(p, src));
                raw.split = split;
                raw.class = Some(class.clone());
                raw.labeled = true;
                out.images.push(raw);
            }
        }
    }
    if unlabeled > 0 && classes.is_empty() {
        out.warn(format!("no labels found: imported {unlabeled} unlabelled images to label by hand"));
    } else if unlabeled > 0 {
        out.warn(format!("{unlabeled} images are not inside a class folder: imported unlabelled"));
    }
    out.classes = classes.into_iter().collect();
    if out.classes.is_empty() && out.images.is_empty() {
        return Err(FormatError::bad(src, "no class folders with images found"));
    }
    Ok(out)
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !is_junk(p))
        .collect();
    v.sort();
    v
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file() && !is_junk(p)).collect();
    v.sort();
    v
}

/// Writes `<split>/<class>/<image>`; unlabelled images go directly into `<split>/`.
pub fn write(ex: &mut Exporter) -> Result<(), ExportError> {
    if ex.project.task != Task::Classify {
        return Err(ExportError::Unsupported("folder export is for classification projects (use coco, yolo, voc or csv for detection)".into()));
    }
    for i in 0..ex.project.images.len() {
        let im = &ex.project.images[i];
        let dir = match im.class {
            Some(c) => format!("{}/{}", im.split.as_str(), sanitize(&ex.project.classes[c].name)),
            None => im.split.as_str().to_string(),
        };
        if ex.place(i, &dir).is_some() {
            ex.count(i);
        }
    }
    Ok(())
}

/// A class name usable as a folder name on every OS ("T-shirt/top" -> "T-shirt_top").
pub fn sanitize(name: &str) -> String {
    let s: String = name.chars().map(|c| if "/\\:*?\"<>|".contains(c) || c.is_control() { '_' } else { c }).collect();
    let s = s.trim().trim_end_matches('.').to_string();
    if s.is_empty() || s == ".." {
        "_".into()
    } else {
        s
    }
}
