//! MNIST IDX files (raw or gzip): `*-images-idx3-ubyte` (magic 2051) paired with `*-labels-idx1-ubyte`
//! (magic 2049). `train-*` is the train split, `t10k-*` / `test-*` the test split. Class names come from a
//! `classes.txt` next to the files, the known Fashion-MNIST names when the folder says "fashion", or the
//! label numbers.

use std::path::{Path, PathBuf};

use super::{files_below, read_text, split_from_name, FormatError, Parsed, RawImage, RawSource};
use crate::data::decode::{self, MAX_IDX_BYTES};
use crate::data::project::{ImageSource, Split};

pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// IDX magic of a file's first bytes (gunzipped when needed): Some(2051) images, Some(2049) labels.
fn magic_of(p: &Path) -> Option<u32> {
    let head: [u8; 4] = decode::peek_maybe_gzip(p, 4)?.try_into().ok()?;
    let m = u32::from_be_bytes(head);
    (m == 2051 || m == 2049).then_some(m)
}

fn split_of(name: &str) -> Option<Split> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("t10k") {
        return Some(Split::Test);
    }
    split_from_name(&lower)
}

pub fn read(src: &Path) -> Result<Parsed, FormatError> {
    let dir = if src.is_file() { src.parent().unwrap_or(Path::new(".")).to_path_buf() } else { src.to_path_buf() };
    let candidates: Vec<PathBuf> = if src.is_file() {
        vec![src.to_path_buf()]
    } else {
        files_below(src, 3, false).collect()
    };
    let image_files: Vec<PathBuf> = candidates.iter().filter(|p| magic_of(p) == Some(2051)).cloned().collect();
    if image_files.is_empty() {
        return Err(FormatError::bad(src, "no IDX images file (magic 2051) found"));
    }
    let mut out = Parsed::default();
    let mut max_label = 0usize;
    for images_path in &image_files {
        let name = images_path.file_name().unwrap().to_string_lossy().into_owned();
        let labels_path = labels_for(images_path);
        let Some(labels_path) = labels_path else {
            out.skip(images_path.display(), "no matching labels file (expected the same name with 'labels' and 'idx1')");
            continue;
        };
        // Through the process-wide cache, so training in this process does not decode the file again.
        let images = match decode::idx_images(images_path) {
            Ok(x) => x,
            Err(e) => {
                out.skip(images_path.display(), e.reason().to_string());
                continue;
            }
        };
        let note = images.note.clone();
        if let Some(n) = note {
            out.skip(images_path.display(), n);
        }
        let labels = decode::read_maybe_gzip(&labels_path, MAX_IDX_BYTES)
            .and_then(|d| decode::parse_idx_labels(&labels_path, &d));
        let (labels, note) = match labels {
            Ok(x) => x,
            Err(e) => {
                out.skip(labels_path.display(), e.reason().to_string());
                continue;
            }
        };
        if let Some(n) = note {
            out.skip(labels_path.display(), n);
        }
        if labels.len() != images.count {
            out.skip(
                images_path.display(),
                format!("{} images but {} labels: only the first {} are used", images.count, labels.len(), images.count.min(labels.len())),
            );
        }
        let split = split_of(&name);
        let (w, h) = (images.cols as u32, images.rows as u32);
        for (index, &label) in labels.iter().enumerate().take(images.count) {
            max_label = max_label.max(label as usize);
            let mut raw = RawImage {
                source: RawSource::Known { source: ImageSource::Idx { file: images_path.clone(), index }, width: w, height: h },
                declared_size: None,
                split,
                class: None,
                boxes: Vec::new(),
                labeled: true,
                key: format!("{name}#{index}"),
            };
            raw.class = Some(label.to_string());
            out.images.push(raw);
        }
    }
    let names = class_names(&dir, max_label + 1, &mut out);
    // Labels are numbers; give them their names.
    for im in &mut out.images {
        if let Some(c) = &im.class {
            let i: usize = c.parse().unwrap_or(0);
            im.class = Some(names[i].clone());
        }
    }
    out.classes = names;
    Ok(out)
}

/// `train-images-idx3-ubyte.gz` -> `train-labels-idx1-ubyte.gz` (also `.` separators, no gzip).
fn labels_for(images: &Path) -> Option<PathBuf> {
    let name = images.file_name()?.to_string_lossy().into_owned();
    let dir = images.parent()?;
    let cand = name.replace("images", "labels").replace("idx3", "idx1");
    for c in [cand.clone(), cand.trim_end_matches(".gz").to_string(), format!("{cand}.gz")] {
        let p = dir.join(&c);
        if p != images && p.is_file() && magic_of(&p) == Some(2049) {
            return Some(p);
        }
    }
    None
}

fn class_names(dir: &Path, n: usize, out: &mut Parsed) -> Vec<String> {
    for f in ["classes.txt", "labels.txt", "class_names.txt"] {
        let p = dir.join(f);
        if p.is_file() {
            match read_text(&p) {
                Ok(t) => {
                    let mut names: Vec<String> = t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
                    if names.len() < n {
                        out.warn(format!("{}: {} names for {n} labels; the rest are named by number", p.display(), names.len()));
                        names.extend((names.len()..n).map(|i| i.to_string()));
                    }
                    return names;
                }
                Err(e) => out.skip(p.display(), e.to_string()),
            }
        }
    }
    let fashion = dir.components().any(|c| c.as_os_str().to_string_lossy().to_ascii_lowercase().contains("fashion"));
    if fashion && n <= 10 {
        out.warn("Fashion-MNIST recognised from the folder name: using its class names");
        return FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    }
    (0..n).map(|i| i.to_string()).collect()
}
