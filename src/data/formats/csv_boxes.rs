//! Box CSV: `filename,width,height,class,xmin,ymin,xmax,ymax`, one row per box (TensorFlow Object Detection
//! API / `xml_to_csv.py`). Columns are found by header name (common aliases accepted). A row with a file
//! name and no class/box marks a labelled image without objects. Files named like `train_labels.csv` /
//! `test_labels.csv` give the splits; a CSV without a split name only adds images the split CSVs lack.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{annotation_files, key_of, split_from_name, Coords, FormatError, ImageIndex, Parsed, RawBox, RawImage};
use crate::data::export::{ExportError, Exporter};
use crate::data::project::{Split, Task};

const FILE: &[&str] = &["filename", "file_name", "file", "image", "image_name", "image_id", "path", "img"];
const CLASS: &[&str] = &["class", "label", "class_name", "name", "category", "labelname"];
const XMIN: &[&str] = &["xmin", "x_min", "x1", "left"];
const YMIN: &[&str] = &["ymin", "y_min", "y1", "top"];
const XMAX: &[&str] = &["xmax", "x_max", "x2", "right"];
const YMAX: &[&str] = &["ymax", "y_max", "y2", "bottom"];

fn find(header: &[String], names: &[&str]) -> Option<usize> {
    header.iter().position(|h| names.contains(&h.as_str()))
}

/// Does this header line name a file column, a class column and the four box corners?
pub fn looks_like_box_header(line: &str) -> bool {
    let header: Vec<String> = line.split(',').map(|h| h.trim().trim_matches('"').to_ascii_lowercase()).collect();
    [FILE, CLASS, XMIN, YMIN, XMAX, YMAX].iter().all(|names| find(&header, names).is_some())
}

struct Columns {
    file: usize,
    class: usize,
    corners: [usize; 4],
    width: Option<usize>,
    height: Option<usize>,
}

pub fn read(src: &Path) -> Result<Parsed, FormatError> {
    let (root, files) = annotation_files(src, "csv", has_box_header);
    if files.is_empty() {
        return Err(FormatError::bad(src, "no CSV with a filename,class,xmin,ymin,xmax,ymax header found"));
    }
    // Split CSVs first, then the others (which only add images the split CSVs do not have).
    let split_of = |f: &PathBuf| split_from_name(&f.file_name().unwrap_or_default().to_string_lossy());
    let (mut split_files, other_files): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| split_of(f).is_some());
    // train, then val, then test: an image listed in two splits stays in the first and is reported in the other.
    split_files.sort_by_key(|f| split_of(f));
    let have_splits = !split_files.is_empty();
    split_files.extend(other_files);

    let index = ImageIndex::build(&root);
    let mut out = Parsed { detection: true, ..Default::default() };
    // image path -> (index in out.images, csv that defined it)
    let mut owner: HashMap<PathBuf, (usize, PathBuf)> = HashMap::new();
    for f in &split_files {
        let split = split_from_name(&f.file_name().unwrap_or_default().to_string_lossy());
        let additive = have_splits && split.is_none();
        if let Err(e) = read_one(f, split, additive, &root, &index, &mut owner, &mut out) {
            out.skip(f.display(), e);
        }
    }
    Ok(out)
}

fn has_box_header(p: &Path) -> bool {
    use std::io::Read;
    let Ok(f) = std::fs::File::open(p) else { return false };
    let mut head = Vec::new();
    if f.take(64 * 1024).read_to_end(&mut head).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&head);
    looks_like_box_header(text.lines().next().unwrap_or("").trim_start_matches('\u{feff}'))
}

fn read_one(
    f: &Path,
    split: Option<Split>,
    additive: bool,
    root: &Path,
    index: &ImageIndex,
    owner: &mut HashMap<PathBuf, (usize, PathBuf)>,
    out: &mut Parsed,
) -> Result<(), String> {
    let text = super::read_text(f).map_err(|e| e.to_string())?;
    let mut rdr = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| format!("malformed CSV header: {e}"))?
        .iter()
        .map(|h| h.trim_matches('"').to_ascii_lowercase())
        .collect();
    let col = |names: &[&str], what: &str| find(&header, names).ok_or_else(|| format!("no {what} column in the header"));
    let cols = Columns {
        file: col(FILE, "filename")?,
        class: col(CLASS, "class")?,
        corners: [col(XMIN, "xmin")?, col(YMIN, "ymin")?, col(XMAX, "xmax")?, col(YMAX, "ymax")?],
        width: find(&header, &["width", "w", "image_width"]),
        height: find(&header, &["height", "h", "image_height"]),
    };
    let dir = f.parent().unwrap_or(root).to_path_buf();
    let mut dirs = vec![dir.clone(), dir.join("images")];
    if let Some(s) = split {
        dirs.push(dir.join(s.as_str()));
        dirs.push(dir.join("images").join(s.as_str()));
    }
    if let Some(up) = dir.parent() {
        dirs.push(up.join("images"));
    }
    dirs.push(root.to_path_buf());
    let fname = f.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut skipped_rows_of_others = 0usize;
    let mut unresolved: HashMap<String, String> = HashMap::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                out.skip(format!("{} line {line}", f.display()), format!("malformed CSV row: {e}"));
                continue;
            }
        };
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let at = format!("{} line {line}", f.display());
        let get = |i: usize| rec.get(i).unwrap_or("").trim();
        let name = get(cols.file);
        if name.is_empty() {
            out.skip(at, "empty file name");
            continue;
        }
        if let Some(reason) = unresolved.get(name) {
            out.skip(at, reason.clone());
            continue;
        }
        let path = match index.resolve(name, &dirs) {
            Ok(p) => p,
            Err(reason) => {
                unresolved.insert(name.to_string(), reason.clone());
                out.skip(at, reason);
                continue;
            }
        };
        let image = match owner.get(&path) {
            Some((i, by)) if by == f => *i,
            Some((_, by)) => {
                if !additive {
                    out.skip(at, format!("duplicate: '{name}' is already listed in {}; this row was skipped", by.display()));
                } else {
                    skipped_rows_of_others += 1;
                }
                continue;
            }
            None => {
                let mut raw = RawImage::file(path.clone(), key_of(&path, root));
                raw.split = split;
                raw.labeled = true;
                let num = |i: Option<usize>| i.and_then(|i| get(i).parse::<f64>().ok()).filter(|v| *v >= 1.0 && *v < 1e9);
                if let (Some(w), Some(h)) = (num(cols.width), num(cols.height)) {
                    raw.declared_size = Some((w as u32, h as u32));
                }
                out.images.push(raw);
                owner.insert(path.clone(), (out.images.len() - 1, f.to_path_buf()));
                out.images.len() - 1
            }
        };
        let class = get(cols.class);
        let corner_text: Vec<&str> = cols.corners.iter().map(|&i| get(i)).collect();
        if class.is_empty() && corner_text.iter().all(|c| c.is_empty()) {
            continue; // an image without objects
        }
        if class.is_empty() {
            out.skip(at, "box without a class name");
            continue;
        }
        let mut v = [0f64; 4];
        let mut bad = None;
        for (k, t) in corner_text.iter().enumerate() {
            match t.parse::<f64>() {
                Ok(x) if x.is_finite() => v[k] = x,
                _ => bad = Some(format!("{} is not a number: '{t}'", ["xmin", "ymin", "xmax", "ymax"][k])),
            }
        }
        if let Some(reason) = bad {
            out.skip(at, reason);
            continue;
        }
        out.images[image].boxes.push(RawBox {
            coords: Coords::Pixel { xmin: v[0], ymin: v[1], xmax: v[2], ymax: v[3] },
            class: class.to_string(),
            origin: format!("{fname} line {line}"),
        });
    }
    if skipped_rows_of_others > 0 {
        out.warn(format!(
            "{}: {skipped_rows_of_others} rows describe images already in the train/val/test CSVs and were not used again",
            f.display()
        ));
    }
    Ok(())
}

/// Writes `images/<file>` and `<split>_labels.csv` per non-empty split. Unlabelled images are left out
/// (reported); a labelled image without boxes gets a row with an empty class.
pub fn write(ex: &mut Exporter) -> Result<(), ExportError> {
    if ex.project.task != Task::Detect {
        return Err(ExportError::Unsupported("CSV box export needs a detection project (use --format folder for classification)".into()));
    }
    let mut per_split: HashMap<Split, Vec<Vec<String>>> = HashMap::new();
    for i in 0..ex.project.images.len() {
        if !ex.project.images[i].has_box_labels() {
            ex.note_unlabeled(i);
            continue;
        }
        let Some(_) = ex.place(i, "images") else { continue };
        let im = &ex.project.images[i];
        let rows = per_split.entry(im.split).or_default();
        let base = |class: &str| vec![ex.names[i].clone(), im.width.to_string(), im.height.to_string(), class.to_string()];
        if im.boxes.is_empty() {
            let mut r = base("");
            r.extend(["", "", "", ""].map(String::from));
            rows.push(r);
        }
        for b in &im.boxes {
            let mut r = base(&ex.project.classes[b.class].name);
            r.extend([b.xmin, b.ymin, b.xmax, b.ymax].map(super::fmt_num));
            rows.push(r);
        }
        ex.count(i);
    }
    for split in Split::ALL {
        let Some(rows) = per_split.get(&split) else { continue };
        let mut w = csv::Writer::from_writer(Vec::new());
        let io = |e: csv::Error| ExportError::Unsupported(e.to_string());
        w.write_record(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]).map_err(io)?;
        for r in rows {
            w.write_record(r).map_err(io)?;
        }
        let bytes = w.into_inner().map_err(|e| ExportError::Unsupported(e.to_string()))?;
        ex.write_file(&format!("{}_labels.csv", split.as_str()), &bytes)?;
    }
    Ok(())
}
