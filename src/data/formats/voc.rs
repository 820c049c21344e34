//! Pascal VOC: one `<annotation>` xml per image (`<filename>`, `<size>`, `<object><name>`, `<bndbox>`),
//! as written by labelImg and the VOC devkit. Splits come from `ImageSets/Main/{train,val,test}.txt` or from
//! train/val/test folders around the xml files.
//!
//! Coordinates are kept exactly as written (no 1-based shift), so VOC files from labelImg, the CSV that
//! `xml_to_csv.py` makes from them, and our own exports all agree.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{
    files_below, key_of, read_text, split_from_path, Coords, FormatError, ImageIndex, Parsed, RawBox, RawImage,
};
use crate::data::project::{Split, Task};

/// Is this text a VOC annotation (root element `annotation`)? Cheap check used by format detection.
pub fn looks_like_voc(text: &str) -> bool {
    roxmltree::Document::parse(text).map(|d| d.root_element().has_tag_name("annotation")).unwrap_or(false)
}

/// Reads every VOC xml below `src` (or the one xml file `src`).
pub fn read(src: &Path) -> Result<Parsed, FormatError> {
    let root = if src.is_file() { src.parent().unwrap_or(Path::new(".")).to_path_buf() } else { src.to_path_buf() };
    let xmls: Vec<PathBuf> = if src.is_file() {
        vec![src.to_path_buf()]
    } else {
        files_below(src, 8, true).filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml"))).collect()
    };
    let mut out = Parsed { detection: true, ..Default::default() };
    if xmls.is_empty() {
        return Err(FormatError::bad(src, "no Pascal VOC .xml files found"));
    }
    let index = ImageIndex::build(&root);
    let sets = read_image_sets(&root, &mut out);
    for xml in &xmls {
        let text = match read_text(xml) {
            Ok(t) => t,
            Err(e) => {
                out.skip(xml.display(), e.to_string());
                continue;
            }
        };
        match parse_annotation(&text, xml) {
            Ok(ann) => {
                let Some(ann) = ann else { continue }; // some other xml (not an annotation)
                add_annotation(ann, xml, &root, &index, &sets, &mut out);
            }
            Err(reason) => out.skip(xml.display(), reason),
        }
    }
    Ok(out)
}

/// One parsed xml file.
#[derive(Debug, Default, PartialEq)]
pub struct Annotation {
    pub filename: String,
    pub size: Option<(u32, u32)>,
    /// (name, xmin, ymin, xmax, ymax) or an error for that object.
    pub objects: Vec<Result<(String, [f64; 4]), String>>,
}

/// Parses VOC xml text. `Ok(None)` when the root element is not `annotation`; `Err` names line and column.
pub fn parse_annotation(text: &str, path: &Path) -> Result<Option<Annotation>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| {
        let pos = e.pos();
        format!("malformed XML at line {}, column {}: {e}", pos.row, pos.col)
    })?;
    let root = doc.root_element();
    if !root.has_tag_name("annotation") {
        return Ok(None);
    }
    let child_text = |n: roxmltree::Node, tag: &str| -> Option<String> {
        n.children().find(|c| c.has_tag_name(tag)).map(|c| c.text().unwrap_or("").trim().to_string())
    };
    let mut ann = Annotation { filename: child_text(root, "filename").unwrap_or_default(), ..Default::default() };
    if ann.filename.is_empty() {
        // No <filename>: the image is named like the xml.
        ann.filename = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    }
    if let Some(size) = root.children().find(|c| c.has_tag_name("size")) {
        let w = child_text(size, "width").and_then(|s| s.parse::<f64>().ok());
        let h = child_text(size, "height").and_then(|s| s.parse::<f64>().ok());
        if let (Some(w), Some(h)) = (w, h) {
            if w >= 1.0 && h >= 1.0 && w < 1e9 && h < 1e9 {
                ann.size = Some((w as u32, h as u32));
            }
        }
    }
    for (k, obj) in root.children().filter(|c| c.has_tag_name("object")).enumerate() {
        let line = doc.text_pos_at(obj.range().start).row;
        let name = child_text(obj, "name").unwrap_or_default();
        let result = (|| {
            if name.is_empty() {
                return Err(format!("object {} (line {line}): no <name>", k + 1));
            }
            let bb = obj
                .children()
                .find(|c| c.has_tag_name("bndbox"))
                .ok_or_else(|| format!("object {} '{name}' (line {line}): no <bndbox>", k + 1))?;
            let mut v = [0f64; 4];
            for (slot, tag) in v.iter_mut().zip(["xmin", "ymin", "xmax", "ymax"]) {
                let s = child_text(bb, tag).ok_or_else(|| format!("object {} '{name}' (line {line}): no <{tag}>", k + 1))?;
                *slot = s
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("object {} '{name}' (line {line}): <{tag}> is not a number: '{s}'", k + 1))?;
            }
            Ok((name.clone(), v))
        })();
        ann.objects.push(result);
    }
    Ok(Some(ann))
}

fn add_annotation(
    ann: Annotation,
    xml: &Path,
    root: &Path,
    index: &ImageIndex,
    sets: &HashMap<String, Split>,
    out: &mut Parsed,
) {
    let xml_dir = xml.parent().unwrap_or(root).to_path_buf();
    let mut dirs = vec![xml_dir.clone()];
    if let Some(up) = xml_dir.parent() {
        for d in ["JPEGImages", "images", "Images", "img"] {
            dirs.push(up.join(d));
        }
    }
    dirs.push(root.to_path_buf());
    let stem = xml.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let image = index.resolve(&ann.filename, &dirs).or_else(|first| {
        let by_stem = index.resolve(&stem, &dirs).map_err(|_| first.clone())?;
        out.warn(format!("{}: <filename> {first}; using {} (named like the xml)", xml.display(), by_stem.display()));
        Ok::<_, String>(by_stem)
    });
    let image = match image {
        Ok(p) => p,
        Err(reason) => {
            out.skip(xml.display(), reason);
            return;
        }
    };
    let image_stem = image.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let split = sets.get(&image_stem).or_else(|| sets.get(&stem)).copied().or_else(|| split_from_path(xml, root));
    let mut raw = RawImage::file(image.clone(), key_of(&image, root));
    raw.declared_size = ann.size;
    raw.split = split;
    raw.labeled = true;
    let xml_name = xml.file_name().unwrap_or_default().to_string_lossy().into_owned();
    for (k, obj) in ann.objects.into_iter().enumerate() {
        match obj {
            Ok((name, [xmin, ymin, xmax, ymax])) => raw.boxes.push(RawBox {
                coords: Coords::Pixel { xmin, ymin, xmax, ymax },
                class: name,
                origin: format!("{xml_name}, object {}", k + 1),
            }),
            Err(reason) => out.skip(xml.display(), reason),
        }
    }
    out.images.push(raw);
}

/// `ImageSets/Main/{train,val,test}.txt` below `root`: image id -> split. Class-specific lists
/// (`RBC_train.txt`) and `trainval.txt` are not split definitions and are ignored.
fn read_image_sets(root: &Path, out: &mut Parsed) -> HashMap<String, Split> {
    let mut map = HashMap::new();
    let mains: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .max_depth(4)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_dir() && e.file_name() == "Main" && e.path().parent().is_some_and(|p| p.ends_with("ImageSets")))
        .map(|e| e.into_path())
        .collect();
    for main in mains {
        for split in Split::ALL {
            let names: &[&str] = match split {
                Split::Train => &["train.txt"],
                Split::Val => &["val.txt", "valid.txt"],
                Split::Test => &["test.txt"],
            };
            for n in names {
                let p = main.join(n);
                if !p.is_file() {
                    continue;
                }
                match read_text(&p) {
                    Ok(text) => {
                        for line in text.lines() {
                            // The whole line: image ids may contain spaces.
                            let id = line.trim();
                            if id.is_empty() {
                                continue;
                            }
                            if let Some(prev) = map.insert(id.to_string(), split) {
                                if prev != split {
                                    out.warn(format!(
                                        "{}: '{id}' is listed in both {} and {}; using {}",
                                        main.display(),
                                        prev.as_str(),
                                        split.as_str(),
                                        split.as_str()
                                    ));
                                }
                            }
                        }
                    }
                    Err(e) => out.skip(p.display(), e.to_string()),
                }
            }
        }
    }
    map
}

/// Writes `Annotations/<stem>.xml`, `JPEGImages/<image>` and `ImageSets/Main/<split>.txt` (VOC devkit layout).
pub fn write(ex: &mut crate::data::export::Exporter) -> Result<(), crate::data::export::ExportError> {
    use crate::data::export::ExportError;
    if ex.project.task != Task::Detect {
        return Err(ExportError::Unsupported("VOC export needs a detection project (use --format folder for classification)".into()));
    }
    let mut sets: HashMap<Split, Vec<String>> = HashMap::new();
    for i in 0..ex.project.images.len() {
        if !ex.project.images[i].has_box_labels() {
            ex.note_unlabeled(i);
            continue;
        }
        let Some(rel) = ex.place(i, "JPEGImages") else { continue };
        let file_name = ex.names[i].clone();
        let stem = Path::new(&file_name).file_stem().unwrap().to_string_lossy().into_owned();
        let im = &ex.project.images[i];
        let mut xml = String::new();
        xml.push_str("<annotation>\n\t<folder>JPEGImages</folder>\n");
        xml.push_str(&format!("\t<filename>{}</filename>\n", esc(&file_name)));
        xml.push_str(&format!("\t<path>{}</path>\n", esc(&rel)));
        xml.push_str("\t<source>\n\t\t<database>Tessera</database>\n\t</source>\n");
        xml.push_str(&format!(
            "\t<size>\n\t\t<width>{}</width>\n\t\t<height>{}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n",
            im.width, im.height
        ));
        for b in &im.boxes {
            let name = &ex.project.classes[b.class].name;
            xml.push_str(&format!(
                "\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n\t\t\t<xmax>{}</xmax>\n\t\t\t<ymax>{}</ymax>\n\t\t</bndbox>\n\t</object>\n",
                esc(name),
                super::fmt_num(b.xmin),
                super::fmt_num(b.ymin),
                super::fmt_num(b.xmax),
                super::fmt_num(b.ymax)
            ));
        }
        xml.push_str("</annotation>\n");
        ex.write_file(&format!("Annotations/{stem}.xml"), xml.as_bytes())?;
        sets.entry(im.split).or_default().push(stem);
        ex.count(i);
    }
    for split in Split::ALL {
        let ids = sets.remove(&split).unwrap_or_default();
        let mut text = ids.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        ex.write_file(&format!("ImageSets/Main/{}.txt", split.as_str()), text.as_bytes())?;
    }
    Ok(())
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}
