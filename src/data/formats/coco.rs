//! COCO JSON object detection: `images` (id, file_name, width, height), `annotations` (image_id,
//! category_id, bbox = [x, y, width, height] in pixels, iscrowd) and `categories` (id, name).
//! Splits come from the JSON file names (`instances_train2017.json`) or their folders (Roboflow's
//! `train/_annotations.coco.json`).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use super::{annotation_files, key_of, read_text, split_from_name, split_from_path, Coords, FormatError, ImageIndex, Parsed, RawBox, RawImage};
use crate::data::export::{ExportError, Exporter};
use crate::data::project::{Split, Task};

/// Cheap check: a .json whose first megabytes mention "images" and "annotations" or "categories".
pub fn looks_like_coco(p: &Path) -> bool {
    let Ok(f) = std::fs::File::open(p) else { return false };
    let mut head = Vec::new();
    if f.take(4 << 20).read_to_end(&mut head).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&head);
    text.contains("\"images\"") && (text.contains("\"annotations\"") || text.contains("\"categories\""))
}

pub fn read(src: &Path) -> Result<Parsed, FormatError> {
    let (root, files) = annotation_files(src, "json", looks_like_coco);
    if files.is_empty() {
        return Err(FormatError::bad(src, "no COCO .json annotation file found"));
    }
    let index = ImageIndex::build(&root);
    let mut out = Parsed { detection: true, ..Default::default() };
    for f in &files {
        let text = match read_text(f) {
            Ok(t) => t,
            Err(e) => {
                out.skip(f.display(), e.to_string());
                continue;
            }
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => read_value(&v, f, &root, &index, &mut out),
            Err(e) => out.skip(f.display(), format!("malformed JSON at line {}, column {}: {e}", e.line(), e.column())),
        }
    }
    if files.len() == 1 && out.images.is_empty() && !out.skipped.is_empty() {
        let s = &out.skipped[0];
        return Err(FormatError::Bad { path: s.path.clone(), reason: s.reason.clone() });
    }
    Ok(out)
}

/// A COCO id: integer or string; compared by its JSON text.
fn id_key(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn read_value(v: &Value, file: &Path, root: &Path, index: &ImageIndex, out: &mut Parsed) {
    let fname = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let Some(obj) = v.as_object() else {
        out.skip(file.display(), "not a COCO file: the top level is not a JSON object");
        return;
    };
    let Some(images) = obj.get("images").and_then(Value::as_array) else {
        out.skip(file.display(), "not a COCO file: no \"images\" list");
        return;
    };
    let split = split_from_name(&fname).or_else(|| split_from_path(file, root));

    // Categories, in id order.
    let mut cats: Vec<(String, String, f64)> = Vec::new(); // key, name, numeric id for ordering
    for (k, c) in obj.get("categories").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let id = id_key(c.get("id"));
        let name = c.get("name").and_then(Value::as_str).map(|s| s.trim().to_string());
        match (id, name) {
            (Some(id), Some(name)) if !name.is_empty() => {
                let order = c.get("id").and_then(Value::as_f64).unwrap_or(k as f64);
                cats.push((id, name, order));
            }
            _ => out.skip(format!("{} (categories[{k}])", file.display()), "category without an id or a name"),
        }
    }
    cats.sort_by(|a, b| a.2.total_cmp(&b.2));
    let mut cat_names: HashMap<String, String> = HashMap::new();
    for (id, name, _) in &cats {
        if cat_names.insert(id.clone(), name.clone()).is_some() {
            out.warn(format!("{}: category id {id} is defined twice; the last name '{name}' is used", file.display()));
        }
        if !out.classes.contains(name) {
            out.classes.push(name.clone());
        }
    }

    // Where the images may be.
    let dir = file.parent().unwrap_or(root).to_path_buf();
    let stem = file.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let mut dirs = vec![dir.clone(), dir.join("images"), dir.join(&stem)];
    if let Some(up) = dir.parent() {
        dirs.push(up.join("images"));
        if let Some(s) = split {
            dirs.push(up.join("images").join(s.as_str()));
            dirs.push(up.join(s.as_str()));
        }
        if let Some(rest) = stem.strip_prefix("instances_") {
            dirs.push(up.join(rest));
            dirs.push(up.join("images").join(rest));
        }
    }
    dirs.push(root.to_path_buf());

    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (k, im) in images.iter().enumerate() {
        let at = format!("{fname} images[{k}]");
        let Some(id) = id_key(im.get("id")) else {
            out.skip(&at, "image without an id");
            continue;
        };
        let Some(name) = im.get("file_name").and_then(Value::as_str) else {
            out.skip(&at, "image without a file_name");
            continue;
        };
        let path = match index.resolve(name, &dirs) {
            Ok(p) => p,
            Err(reason) => {
                out.skip(format!("{fname}: {name}"), reason);
                continue;
            }
        };
        if by_id.contains_key(&id) {
            out.skip(&at, format!("duplicate image id {id} ('{name}'); this entry was skipped"));
            continue;
        }
        let mut raw = RawImage::file(path.clone(), key_of(&path, root));
        raw.split = split;
        raw.labeled = true;
        let size = (im.get("width").and_then(Value::as_f64), im.get("height").and_then(Value::as_f64));
        if let (Some(w), Some(h)) = size {
            if w >= 1.0 && h >= 1.0 && w < 1e9 && h < 1e9 {
                raw.declared_size = Some((w as u32, h as u32));
            }
        }
        by_id.insert(id, out.images.len());
        out.images.push(raw);
    }

    for (k, a) in obj.get("annotations").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("{fname} annotations[{k}]");
        let image = id_key(a.get("image_id")).and_then(|id| by_id.get(&id).copied());
        let Some(image) = image else {
            out.skip(&at, format!("image_id {} is not an imported image", a.get("image_id").unwrap_or(&Value::Null)));
            continue;
        };
        let cat = id_key(a.get("category_id"));
        let Some(class) = cat.as_ref().and_then(|c| cat_names.get(c)).cloned() else {
            out.skip(&at, format!("unknown category_id {}", cat.unwrap_or_else(|| "(none)".into())));
            continue;
        };
        if a.get("iscrowd").and_then(Value::as_i64).unwrap_or(0) != 0 {
            out.skip(&at, "crowd annotation (iscrowd=1) is not a single-object box");
            continue;
        }
        let bbox: Option<Vec<f64>> = a.get("bbox").and_then(Value::as_array).map(|b| b.iter().filter_map(Value::as_f64).collect());
        let Some([x, y, w, h]) = bbox.as_deref().and_then(|b| <[f64; 4]>::try_from(b).ok()) else {
            out.skip(&at, "bbox is not a list of 4 numbers [x, y, width, height]");
            continue;
        };
        out.images[image].boxes.push(RawBox {
            coords: Coords::Pixel { xmin: x, ymin: y, xmax: x + w, ymax: y + h },
            class,
            origin: format!("annotations[{k}]"),
        });
    }
}

/// Writes `annotations/instances_<split>.json` and `images/<split>/...` for every non-empty split.
/// Unlabelled images are left out (and counted in the report's warnings).
pub fn write(ex: &mut Exporter) -> Result<(), ExportError> {
    if ex.project.task != Task::Detect {
        return Err(ExportError::Unsupported("COCO export needs a detection project (use --format folder for classification)".into()));
    }
    let categories: Vec<Value> = ex
        .project
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"id": i + 1, "name": c.name, "supercategory": "none"}))
        .collect();
    let mut ann_id = 0u64;
    for split in Split::ALL {
        let indices = ex.project.indices_in(split);
        if indices.is_empty() {
            continue;
        }
        let (mut images, mut anns) = (Vec::new(), Vec::new());
        for i in indices {
            // An image in a COCO file without annotations reads as "no objects here" to every tool: only
            // labelled images are written.
            if !ex.project.images[i].has_box_labels() {
                ex.note_unlabeled(i);
                continue;
            }
            let Some(_) = ex.place(i, &format!("images/{}", split.as_str())) else { continue };
            let im = &ex.project.images[i];
            let image_id = images.len() + 1;
            images.push(json!({"id": image_id, "file_name": ex.names[i], "width": im.width, "height": im.height}));
            for b in &im.boxes {
                ann_id += 1;
                // x, y as the stored f32; width/height in f64 so that x + width gives xmax back exactly.
                let w = b.xmax as f64 - b.xmin as f64;
                let h = b.ymax as f64 - b.ymin as f64;
                anns.push(json!({
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": b.class + 1,
                    "bbox": [num32(b.xmin), num32(b.ymin), num64(w), num64(h)],
                    "area": num64(w * h),
                    "iscrowd": 0,
                    "segmentation": [],
                }));
            }
            ex.count(i);
        }
        let doc = json!({
            "info": {"description": format!("{} exported by Tessera", ex.project.name)},
            "images": images,
            "annotations": anns,
            "categories": categories,
        });
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| ExportError::Unsupported(e.to_string()))?;
        ex.write_file(&format!("annotations/instances_{}.json", split.as_str()), &bytes)?;
    }
    Ok(())
}

/// An f32 as JSON: integers as integers, others by their shortest f32 text (so 0.1f32 writes 0.1).
fn num32(v: f32) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        let x: f64 = format!("{v}").parse().unwrap_or(v as f64);
        json!(x)
    }
}

fn num64(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}
