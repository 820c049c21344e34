//! YOLO (Ultralytics / darknet): one `.txt` per image with lines `class cx cy w h`, normalised to 0..1.
//! Class names from `data.yaml` (`names` as a list or an {id: name} map; `train`/`val`/`test` as folders,
//! lists of folders, or .txt lists of images) or from `classes.txt` / `*.names`. Labels are found by
//! swapping the last `images` folder for `labels` (Ultralytics' rule), or next to the image.
//! Polygon lines (`class x1 y1 x2 y2 ...`, segmentation labels) become their bounding box.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::{files_below, find_file_below, is_image_path, key_of, read_text, split_from_path, Coords, FormatError, Parsed, RawBox, RawImage};
use crate::data::export::{ExportError, Exporter};
use crate::data::project::{Split, Task};

/// A YAML file with a `names` (or `nc`) key.
pub fn looks_like_data_yaml(p: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(p) else { return false };
    serde_yaml_ng::from_str::<Value>(&text)
        .ok()
        .is_some_and(|v| v.get("names").is_some() || v.get("nc").is_some())
}

pub fn read(src: &Path) -> Result<Parsed, FormatError> {
    let mut out = Parsed { detection: true, ..Default::default() };
    let yaml = if src.is_file() {
        let ext = src.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if ext != "yaml" && ext != "yml" {
            return Err(FormatError::bad(src, "a YOLO dataset is a folder or a data.yaml file"));
        }
        Some(src.to_path_buf())
    } else {
        find_data_yaml(src)
    };
    let root = if src.is_file() { src.parent().unwrap_or(Path::new(".")).to_path_buf() } else { src.to_path_buf() };

    // (image, split) pairs and class names.
    let mut images: Vec<(PathBuf, Option<Split>)> = Vec::new();
    let mut names: Option<Vec<String>> = None;
    if let Some(yaml) = &yaml {
        let text = read_text(yaml)?;
        let v: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
            let at = e.location().map(|l| format!(" at line {}, column {}", l.line(), l.column())).unwrap_or_default();
            FormatError::bad(yaml, format!("malformed YAML{at}: {e}"))
        })?;
        names = parse_names(&v).map_err(|reason| FormatError::bad(yaml, reason))?;
        let ydir = yaml.parent().unwrap_or(Path::new(".")).to_path_buf();
        let base = match v.get("path").and_then(Value::as_str) {
            Some(p) if !p.trim().is_empty() => {
                let p = Path::new(p.trim());
                let cand = if p.is_absolute() { p.to_path_buf() } else { ydir.join(p) };
                if cand.is_dir() {
                    cand
                } else {
                    out.warn(format!("{}: path '{}' not found; using the yaml's folder", yaml.display(), p.display()));
                    ydir.clone()
                }
            }
            _ => ydir.clone(),
        };
        let mut any_split = false;
        for (key, split) in [("train", Split::Train), ("val", Split::Val), ("valid", Split::Val), ("test", Split::Test)] {
            let entries: Vec<String> = match v.get(key) {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Sequence(seq)) => seq.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                _ => continue,
            };
            for e in entries {
                any_split = true;
                let p = resolve_rel(&base, &e, &ydir);
                if p.is_dir() {
                    for img in list_images(&p) {
                        images.push((img, Some(split)));
                    }
                } else if p.is_file() {
                    match read_text(&p) {
                        Ok(list) => {
                            let ldir = p.parent().unwrap_or(&base).to_path_buf();
                            for line in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
                                let img = resolve_rel(&base, line, &ldir);
                                if img.is_file() {
                                    images.push((img, Some(split)));
                                } else {
                                    out.skip(format!("{}: {line}", p.display()), "listed image not found");
                                }
                            }
                        }
                        Err(e) => out.skip(p.display(), e.to_string()),
                    }
                } else {
                    out.skip(yaml.display(), format!("{key}: '{e}' not found (looked at {})", p.display()));
                }
            }
        }
        if !any_split {
            images = list_images(&root).into_iter().map(|p| (p.clone(), split_from_path(&p, &root))).collect();
        }
    } else {
        images = list_images(&root).into_iter().map(|p| (p.clone(), split_from_path(&p, &root))).collect();
        if let Some(names_file) = find_names_file(&root) {
            match read_text(&names_file) {
                Ok(t) => names = Some(t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()),
                Err(e) => out.skip(names_file.display(), e.to_string()),
            }
        }
    }
    let names_known = names.is_some();
    if !names_known {
        out.warn("no data.yaml or classes.txt: classes are named by their YOLO ids");
    }
    let names = names.unwrap_or_default();
    out.classes = names.clone();

    let mut missing_labels = 0usize;
    let mut seen = std::collections::HashSet::new();
    let mut labels_used = std::collections::HashSet::new();
    for (img, split) in images {
        if !seen.insert(img.clone()) {
            continue; // listed twice (e.g. the same folder under train and val)
        }
        let mut raw = RawImage::file(img.clone(), key_of(&img, &root));
        raw.split = split;
        match label_path(&img) {
            Some(label) if !labels_used.insert(label.clone()) => {
                // a.jpg and a.png in one folder both map to a.txt: which image it describes is unknowable.
                out.skip(
                    raw.key.clone(),
                    format!("label file {} is shared with another image of the same name; imported unlabelled", label.display()),
                );
            }
            Some(label) => {
                raw.labeled = true;
                match read_text(&label) {
                    Ok(text) => parse_label_text(&text, &label, &names, names_known, &mut raw, &mut out),
                    Err(e) => {
                        raw.labeled = false;
                        out.skip(label.display(), e.to_string());
                    }
                }
            }
            None => missing_labels += 1,
        }
        out.images.push(raw);
    }
    if !names_known {
        let max = out.images.iter().flat_map(|im| &im.boxes).filter_map(|b| b.class.parse::<usize>().ok()).max();
        out.classes = max.map(|m| (0..=m).map(|i| i.to_string()).collect()).unwrap_or_default();
    }
    if missing_labels > 0 {
        out.warn(format!("{missing_labels} images have no label file: imported as unlabelled"));
    }
    Ok(out)
}

/// Parses one label file's lines into `raw.boxes`; bad lines are reported with their line number.
pub fn parse_label_text(text: &str, label: &Path, names: &[String], names_known: bool, raw: &mut RawImage, out: &mut Parsed) {
    let lname = label.file_name().unwrap_or_default().to_string_lossy().into_owned();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{} line {}", label.display(), n + 1);
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Ok(id) = tokens[0].parse::<usize>() else {
            out.skip(at, format!("class id '{}' is not a non-negative integer", tokens[0]));
            continue;
        };
        let class = if names_known {
            match names.get(id) {
                Some(n) => n.clone(),
                None => {
                    out.skip(at, format!("unknown class id {id}: only {} class names are defined", names.len()));
                    continue;
                }
            }
        } else {
            id.to_string()
        };
        let nums: Result<Vec<f64>, _> = tokens[1..].iter().map(|t| t.parse::<f64>()).collect();
        let Ok(nums) = nums else {
            out.skip(at, "coordinates are not all numbers");
            continue;
        };
        if nums.iter().any(|v| !v.is_finite()) {
            out.skip(at, "coordinates must be finite numbers");
            continue;
        }
        // The finest resolution on the line tells how the writer rounded (%.6f, %g, or full precision).
        let quantum = tokens[1..].iter().map(|t| token_quantum(t)).fold(f64::MAX, f64::min);
        let coords = match nums.len() {
            4 => Coords::Normalized { cx: nums[0], cy: nums[1], w: nums[2], h: nums[3], quantum },
            k if k >= 6 && k % 2 == 0 => {
                let xs = nums.iter().step_by(2);
                let ys = nums.iter().skip(1).step_by(2);
                let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                let (y0, y1) = ys.fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                Coords::Normalized { cx: (x0 + x1) / 2.0, cy: (y0 + y1) / 2.0, w: x1 - x0, h: y1 - y0, quantum }
            }
            k => {
                out.skip(at, format!("expected 'class cx cy w h' (or a polygon), found {} values", k + 1));
                continue;
            }
        };
        if let Coords::Normalized { w, h, .. } = coords {
            if w < 0.0 || h < 0.0 {
                out.skip(at, format!("negative box size {w} x {h}"));
                continue;
            }
        }
        raw.boxes.push(RawBox { coords, class, origin: format!("{lname} line {}", n + 1) });
    }
}

/// Resolution a number was written at: 10^-(digits after the point); 0 for exponent notation.
fn token_quantum(t: &str) -> f64 {
    if t.contains(['e', 'E']) {
        return 0.0;
    }
    match t.find('.') {
        Some(i) => 10f64.powi(-((t.len() - i - 1) as i32)),
        None => 1.0,
    }
}

fn resolve_rel(base: &Path, entry: &str, fallback: &Path) -> PathBuf {
    let p = Path::new(entry.trim());
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let a = base.join(p);
    if a.exists() {
        return a;
    }
    let b = fallback.join(p);
    if b.exists() {
        return b;
    }
    // Roboflow writes `train: ../train/images` next to a train/ folder: try without the leading `../`.
    let stripped: PathBuf = p.components().skip_while(|c| matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir)).collect();
    let c = fallback.join(&stripped);
    if c.exists() {
        return c;
    }
    b
}

fn parse_names(v: &Value) -> Result<Option<Vec<String>>, String> {
    match v.get("names") {
        Some(Value::Sequence(seq)) => Ok(Some(seq.iter().map(yaml_scalar).collect())),
        Some(Value::Mapping(map)) => {
            let mut by_id: BTreeMap<usize, String> = BTreeMap::new();
            for (k, name) in map {
                let id = yaml_scalar(k).parse::<usize>().map_err(|_| format!("names: key '{}' is not a class id", yaml_scalar(k)))?;
                by_id.insert(id, yaml_scalar(name));
            }
            let n = by_id.keys().next_back().map(|m| m + 1).unwrap_or(0);
            if n > 100_000 {
                return Err(format!("names: class id {} is implausibly large", n - 1));
            }
            Ok(Some((0..n).map(|i| by_id.get(&i).cloned().unwrap_or_else(|| i.to_string())).collect()))
        }
        Some(_) => Err("names must be a list or an {id: name} map".into()),
        None => match v.get("nc").and_then(Value::as_u64) {
            Some(nc) if nc <= 100_000 => Ok(Some((0..nc).map(|i| i.to_string()).collect())),
            Some(nc) => Err(format!("nc = {nc} is implausibly large")),
            None => Ok(None),
        },
    }
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

fn find_data_yaml(root: &Path) -> Option<PathBuf> {
    let mut cands: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .max_depth(2)
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .map(|e| e.into_path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml") && looks_like_data_yaml(p))
        .collect();
    cands.sort_by_key(|p| (p.components().count(), p.file_name().is_none_or(|n| n != "data.yaml")));
    cands.into_iter().next()
}

fn find_names_file(root: &Path) -> Option<PathBuf> {
    find_file_below(root, 3, |_, n| n == "classes.txt" || n == "obj.names" || n.ends_with(".names"))
}

fn list_images(dir: &Path) -> Vec<PathBuf> {
    files_below(dir, 8, true).filter(|p| is_image_path(p)).collect()
}

/// Ultralytics' rule: `.../images/x/a.jpg` -> `.../labels/x/a.txt`; else `a.txt` next to the image.
pub fn label_path(img: &Path) -> Option<PathBuf> {
    let comps: Vec<_> = img.components().collect();
    if let Some(pos) = comps.iter().rposition(|c| c.as_os_str() == "images") {
        let mut p = PathBuf::new();
        for (i, c) in comps.iter().enumerate() {
            p.push(if i == pos { std::ffi::OsStr::new("labels") } else { c.as_os_str() });
        }
        p.set_extension("txt");
        if p.is_file() {
            return Some(p);
        }
    }
    let side = img.with_extension("txt");
    side.is_file().then_some(side)
}

/// Writes `images/<split>/`, `labels/<split>/` (one .txt per image; unlabelled images get none),
/// `data.yaml` (names as an {id: name} map) and `classes.txt`.
pub fn write(ex: &mut Exporter) -> Result<(), ExportError> {
    if ex.project.task != Task::Detect {
        return Err(ExportError::Unsupported("YOLO detection export needs a detection project (use --format folder for classification)".into()));
    }
    let mut used_splits = Vec::new();
    for i in 0..ex.project.images.len() {
        let split = ex.project.images[i].split.as_str();
        let Some(_) = ex.place(i, &format!("images/{split}")) else { continue };
        if !used_splits.contains(&split) {
            used_splits.push(split);
        }
        let im = &ex.project.images[i];
        if im.has_box_labels() {
            let (w, h) = (im.width as f64, im.height as f64);
            let mut text = String::new();
            for b in &im.boxes {
                let (x0, y0, x1, y1) = (b.xmin as f64, b.ymin as f64, b.xmax as f64, b.ymax as f64);
                // Full f64 precision (shortest exact text): re-import gives back the same f32 pixels.
                text.push_str(&format!("{} {} {} {} {}\n", b.class, (x0 + x1) / 2.0 / w, (y0 + y1) / 2.0 / h, (x1 - x0) / w, (y1 - y0) / h));
            }
            let stem = Path::new(&ex.names[i]).file_stem().unwrap().to_string_lossy().into_owned();
            ex.write_file(&format!("labels/{split}/{stem}.txt"), text.as_bytes())?;
        }
        ex.count(i);
    }
    let mut yaml = String::from("# Exported by Tessera. Paths are relative to this file's folder.\n");
    for s in ["train", "val", "test"] {
        if used_splits.contains(&s) {
            yaml.push_str(&format!("{s}: images/{s}\n"));
        }
    }
    yaml.push_str(&format!("nc: {}\nnames:\n", ex.project.classes.len()));
    for (i, c) in ex.project.classes.iter().enumerate() {
        yaml.push_str(&format!("  {i}: {}\n", serde_json::to_string(&c.name).unwrap()));
    }
    ex.write_file("data.yaml", yaml.as_bytes())?;
    let classes: String = ex.project.classes.iter().map(|c| format!("{}\n", c.name)).collect();
    ex.write_file("classes.txt", classes.as_bytes())?;
    Ok(())
}
