//! Property tests for every dataset parser and writer (exact round trips; arbitrary bytes never panic) and a
//! bounded fuzz test that mutates valid annotation files and images. No external data is used.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use tessera::data::decode::{load_image, parse_digits, parse_idx_images, parse_idx_labels, probe_file};
use tessera::data::export::export_project;
use tessera::data::formats::Format;
use tessera::data::import::{import_dataset, ImportReport};
use tessera::data::{BBox, ImageEntry, ImageSource, Project, Split, Task};

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::new();
    DynamicImage::new_rgb8(w, h).write_to(&mut Cursor::new(&mut v), ImageFormat::Png).unwrap();
    v
}

fn jpg(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::new();
    DynamicImage::new_rgb8(w, h).write_to(&mut Cursor::new(&mut v), ImageFormat::Jpeg).unwrap();
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Checks what every successful import must satisfy, whatever the input was.
fn check_invariants(p: &Project, r: &ImportReport) {
    p.validate().unwrap();
    assert_eq!(r.images, p.images.len());
    assert_eq!(r.boxes, p.box_count());
    assert_eq!(r.classes.len(), p.classes.len());
    for im in &p.images {
        assert!(im.width > 0 && im.height > 0);
        for b in &im.boxes {
            let ok = b.xmin.is_finite() && b.ymax.is_finite() && 0.0 <= b.xmin && b.xmin < b.xmax && b.xmax <= im.width as f32;
            assert!(ok && 0.0 <= b.ymin && b.ymin < b.ymax && b.ymax <= im.height as f32, "bad box {b:?} in {}x{}", im.width, im.height);
        }
    }
    for s in &r.skipped {
        assert!(!s.reason.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// round trips

#[derive(Debug, Clone)]
struct GenBox {
    x: f32,
    dx: f32,
    y: f32,
    dy: f32,
    integer: bool,
    class: usize,
}

fn gen_box() -> impl Strategy<Value = GenBox> {
    (0f32..1.0, 0.001f32..1.0, 0f32..1.0, 0.001f32..1.0, any::<bool>(), 0usize..3)
        .prop_map(|(x, dx, y, dy, integer, class)| GenBox { x, dx, y, dy, integer, class })
}

fn gen_image() -> impl Strategy<Value = (u32, u32, u8, Vec<GenBox>)> {
    (2u32..300, 2u32..200, 0u8..3, proptest::collection::vec(gen_box(), 0..5))
}

fn class_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9&<>\"',#_ éδ-]{1,10}".prop_map(|s| s.trim().to_string()).prop_filter("non-empty", |s| !s.is_empty())
}

fn to_bbox(g: &GenBox, w: u32, h: u32) -> Option<BBox> {
    let (wf, hf) = (w as f32, h as f32);
    let (mut x0, mut y0) = (g.x * (wf - 1.0), g.y * (hf - 1.0));
    let (mut x1, mut y1) = ((x0 + g.dx * wf).min(wf), (y0 + g.dy * hf).min(hf));
    if g.integer {
        (x0, y0, x1, y1) = (x0.floor(), y0.floor(), x1.ceil().min(wf), y1.ceil().min(hf));
    }
    (x1 > x0 && y1 > y0).then_some(BBox { xmin: x0, ymin: y0, xmax: x1, ymax: y1, class: g.class })
}

fn build_detection(dir: &Path, classes: &[String], images: &[(u32, u32, u8, Vec<GenBox>)]) -> Project {
    let mut p = Project::new("prop", Task::Detect, dir);
    for c in classes {
        p.class_index_or_add(c);
    }
    for (i, (w, h, split, boxes)) in images.iter().enumerate() {
        let name = format!("img {i}.png");
        write(&dir.join("src").join(&name), png(*w, *h));
        p.images.push(ImageEntry {
            source: ImageSource::File(PathBuf::from("src").join(&name)),
            width: *w,
            height: *h,
            split: Split::ALL[*split as usize],
            class: None,
            boxes: boxes.iter().filter_map(|b| to_bbox(b, *w, *h)).map(|mut b| {
                b.class %= classes.len();
                b
            }).collect(),
            labeled: true,
        });
    }
    p
}

fn sorted_boxes(p: &Project, name: &str) -> Vec<(u32, u32, u32, u32, String)> {
    let im = p.images.iter().find(|im| im.source.display_name() == name).unwrap_or_else(|| panic!("{name} missing"));
    let mut v: Vec<_> = im
        .boxes
        .iter()
        .map(|b| (b.xmin.to_bits(), b.ymin.to_bits(), b.xmax.to_bits(), b.ymax.to_bits(), p.classes[b.class].name.clone()))
        .collect();
    v.sort();
    v
}

/// Splits survive unless the exported set has train but no val: then val is carved from train (train and
/// test only) or an 80/10/10 hash split is made (train only).
fn splits_comparable(p: &Project) -> bool {
    let has = |s| p.images.iter().any(|im| im.split == s);
    has(Split::Val) || !has(Split::Train)
}

fn round_trip_detection(format: Format, classes: Vec<String>, images: Vec<(u32, u32, u8, Vec<GenBox>)>) -> Result<(), TestCaseError> {
    let mut classes = classes;
    classes.dedup();
    let mut unique = Vec::new();
    for c in classes {
        if !unique.contains(&c) {
            unique.push(c);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let p = build_detection(dir.path(), &unique, &images);
    let out = dir.path().join("export");
    export_project(&p, format, &out).unwrap();
    let (q, r) = import_dataset(&out, Some(format), &dir.path().join("proj")).unwrap();
    check_invariants(&q, &r);
    prop_assert_eq!(q.images.len(), p.images.len());
    // Every class that has a box keeps its name; exported class lists keep their order.
    for (i, im) in p.images.iter().enumerate() {
        let name = format!("img {i}.png");
        prop_assert_eq!(sorted_boxes(&q, &name), sorted_boxes(&p, &name), "{} {}", format, name);
        let qi = q.images.iter().find(|x| x.source.display_name() == name).unwrap();
        prop_assert_eq!((qi.width, qi.height), (im.width, im.height));
        if splits_comparable(&p) {
            prop_assert_eq!(qi.split, im.split);
        } else if im.split == Split::Test {
            prop_assert_eq!(qi.split, Split::Test);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn coco_round_trip(classes in proptest::collection::vec(class_name(), 1..4), images in proptest::collection::vec(gen_image(), 1..4)) {
        round_trip_detection(Format::Coco, classes, images)?;
    }

    #[test]
    fn yolo_round_trip(classes in proptest::collection::vec(class_name(), 1..4), images in proptest::collection::vec(gen_image(), 1..4)) {
        round_trip_detection(Format::Yolo, classes, images)?;
    }

    #[test]
    fn voc_round_trip(classes in proptest::collection::vec(class_name(), 1..4), images in proptest::collection::vec(gen_image(), 1..4)) {
        round_trip_detection(Format::Voc, classes, images)?;
    }

    #[test]
    fn csv_round_trip(classes in proptest::collection::vec(class_name(), 1..4), images in proptest::collection::vec(gen_image(), 1..4)) {
        round_trip_detection(Format::Csv, classes, images)?;
    }

    #[test]
    fn tessera_round_trip(classes in proptest::collection::vec(class_name(), 1..4), images in proptest::collection::vec(gen_image(), 1..4)) {
        round_trip_detection(Format::Tessera, classes, images)?;
    }

    /// YOLO files from other tools carry ~6 decimals: integer pixel boxes written that way come back as the
    /// same integers.
    #[test]
    fn yolo_six_decimals_restore_integer_pixels(w in 2u32..2000, h in 2u32..2000, a in 0u32..1000, b in 0u32..1000, c in 1u32..1000, d in 1u32..1000) {
        let (x0, y0) = (a % (w - 1), b % (h - 1));
        let (x1, y1) = ((x0 + 1 + c % (w - x0)).min(w), (y0 + 1 + d % (h - y0)).min(h));
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("images/a.png"), png(w, h));
        let (wf, hf) = (w as f64, h as f64);
        let line = format!("0 {:.6} {:.6} {:.6} {:.6}\n", (x0 + x1) as f64 / 2.0 / wf, (y0 + y1) as f64 / 2.0 / hf, (x1 - x0) as f64 / wf, (y1 - y0) as f64 / hf);
        write(&dir.path().join("labels/a.txt"), &line);
        write(&dir.path().join("classes.txt"), "thing\n");
        let (p, _) = import_dataset(dir.path(), Some(Format::Yolo), dir.path()).unwrap();
        let bx = p.images[0].boxes[0];
        prop_assert_eq!((bx.xmin, bx.ymin, bx.xmax, bx.ymax), (x0 as f32, y0 as f32, x1 as f32, y1 as f32), "{}", line);
    }

    #[test]
    fn folder_round_trip(names in proptest::collection::vec("[a-zA-Z0-9 #_éδ-]{1,8}", 1..4), items in proptest::collection::vec((0usize..4, 0u8..3), 1..8)) {
        let mut classes: Vec<String> = Vec::new();
        for n in names.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()) {
            if !classes.contains(&n) {
                classes.push(n);
            }
        }
        prop_assume!(!classes.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let mut p = Project::new("f", Task::Classify, dir.path());
        for c in &classes {
            p.class_index_or_add(c);
        }
        for (i, (c, s)) in items.iter().enumerate() {
            let name = format!("p{i}.png");
            write(&dir.path().join("src").join(&name), png(3, 2));
            p.images.push(ImageEntry { source: ImageSource::File(PathBuf::from("src").join(&name)), width: 3, height: 2, split: Split::ALL[*s as usize], class: Some(c % classes.len()), boxes: vec![], labeled: true });
        }
        let out = dir.path().join("export");
        export_project(&p, Format::Folder, &out).unwrap();
        let (q, r) = import_dataset(&out, None, &dir.path().join("proj")).unwrap();
        check_invariants(&q, &r);
        prop_assert_eq!(q.images.len(), p.images.len());
        for im in &p.images {
            let name = im.source.display_name();
            let qi = q.images.iter().find(|x| x.source.display_name() == name).unwrap();
            prop_assert_eq!(&q.classes[qi.class.unwrap()].name, &p.classes[im.class.unwrap()].name);
            if splits_comparable(&p) {
                prop_assert_eq!(qi.split, im.split);
            }
        }
    }

    /// IDX has no Tessera writer; its parser round-trips the bytes a standard writer produces.
    #[test]
    fn idx_parser_round_trip(n in 0usize..20, rows in 1u32..9, cols in 1u32..9, seed in any::<u64>()) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let pixels: Vec<u8> = (0..n * (rows * cols) as usize).map(|_| rng.random()).collect();
        let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..10)).collect();
        let mut img = 2051u32.to_be_bytes().to_vec();
        for x in [n as u32, rows, cols] {
            img.extend_from_slice(&x.to_be_bytes());
        }
        img.extend_from_slice(&pixels);
        let mut lab = 2049u32.to_be_bytes().to_vec();
        lab.extend_from_slice(&(n as u32).to_be_bytes());
        lab.extend_from_slice(&labels);
        let (parsed, note) = parse_idx_images(Path::new("x"), &img).unwrap();
        prop_assert!(note.is_none());
        prop_assert_eq!(&parsed.pixels, &pixels);
        prop_assert_eq!((parsed.count, parsed.rows, parsed.cols), (n, rows as usize, cols as usize));
        let (l, _) = parse_idx_labels(Path::new("y"), &lab).unwrap();
        prop_assert_eq!(l, labels);
    }

    #[test]
    fn digits_parser_round_trip(rows in proptest::collection::vec((proptest::collection::vec(0u8..17, 64), 0u32..10), 1..10)) {
        let text: String = rows.iter().map(|(px, l)| {
            let mut f: Vec<String> = px.iter().map(|v| v.to_string()).collect();
            f.push(l.to_string());
            f.join(",") + "\n"
        }).collect();
        let t = parse_digits(&text);
        prop_assert_eq!(t.rows.len(), rows.len());
        for (r, (px, l)) in t.rows.iter().zip(&rows) {
            let r = r.as_ref().unwrap();
            prop_assert_eq!(&r.pixels[..], &px[..]);
            prop_assert_eq!(r.label, *l);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// arbitrary bytes never panic

/// A dataset folder for `format` whose annotation file is `bytes` (plus one valid image).
fn dataset_with_annotation(dir: &Path, format: Format, bytes: &[u8]) -> PathBuf {
    write(&dir.join("images/a.png"), png(8, 8));
    match format {
        Format::Coco => write(&dir.join("annotations.json"), bytes),
        Format::Yolo => {
            write(&dir.join("labels/a.txt"), bytes);
            write(&dir.join("data.yaml"), bytes);
        }
        Format::Voc => write(&dir.join("images/a.xml"), bytes),
        Format::Csv => write(&dir.join("labels.csv"), bytes),
        Format::Idx => {
            write(&dir.join("train-images-idx3-ubyte"), bytes);
            write(&dir.join("train-labels-idx1-ubyte"), bytes);
        }
        Format::Digits => write(&dir.join("digits.csv"), bytes),
        Format::Folder => write(&dir.join("images/b.jpg"), bytes),
        Format::Tessera => write(&dir.join("tessera.json"), bytes),
    }
    dir.to_path_buf()
}

fn import_any(src: &Path, format: Option<Format>) {
    let out = tempfile::tempdir().unwrap();
    match import_dataset(src, format, out.path()) {
        Ok((p, r)) => check_invariants(&p, &r),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), f in 0usize..8) {
        let format = Format::ALL[f];
        let dir = tempfile::tempdir().unwrap();
        let src = dataset_with_annotation(dir.path(), format, &bytes);
        import_any(&src, Some(format));
        import_any(&src, None);
    }

    /// Text-like garbage reaches deeper into the parsers than random bytes.
    #[test]
    fn arbitrary_text_never_panics(text in "[a-z0-9<>/{}\\[\\],:\". \n_-]{0,300}", f in 0usize..8) {
        let format = Format::ALL[f];
        let dir = tempfile::tempdir().unwrap();
        let src = dataset_with_annotation(dir.path(), format, text.as_bytes());
        import_any(&src, Some(format));
    }

    #[test]
    fn arbitrary_image_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000), prefix in 0usize..4) {
        let magic: [&[u8]; 4] = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a"];
        let mut data = magic[prefix].to_vec();
        data.extend_from_slice(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jpg");
        std::fs::write(&p, &data).unwrap();
        let _ = probe_file(&p);
        let _ = load_image(&ImageSource::File(p));
    }
}

// ---------------------------------------------------------------------------------------------
// bounded fuzz: mutate valid datasets

/// Valid small datasets of every format: (format, root, files worth mutating).
fn valid_datasets(root: &Path) -> Vec<(Format, PathBuf, Vec<PathBuf>)> {
    let mut v = Vec::new();
    // VOC
    let d = root.join("voc");
    for i in 0..3 {
        write(&d.join(format!("JPEGImages/{i}.jpg")), jpg(30, 20));
        write(
            &d.join(format!("Annotations/{i}.xml")),
            format!("<annotation><filename>{i}.jpg</filename><size><width>30</width><height>20</height></size><object><name>c{i}</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>15</ymax></bndbox></object></annotation>"),
        );
    }
    write(&d.join("ImageSets/Main/train.txt"), "0\n1\n");
    write(&d.join("ImageSets/Main/test.txt"), "2\n");
    v.push((Format::Voc, d.clone(), vec![d.join("Annotations/0.xml"), d.join("JPEGImages/1.jpg"), d.join("ImageSets/Main/train.txt")]));
    // COCO
    let d = root.join("coco");
    write(&d.join("images/a.png"), png(30, 20));
    write(&d.join("images/b.jpg"), jpg(30, 20));
    write(&d.join("instances_train.json"), r#"{"images":[{"id":1,"file_name":"a.png","width":30,"height":20},{"id":2,"file_name":"b.jpg"}],"annotations":[{"id":1,"image_id":1,"category_id":1,"bbox":[1,2,10,10]},{"id":2,"image_id":2,"category_id":2,"bbox":[0.5,0.5,3.25,4]}],"categories":[{"id":1,"name":"x"},{"id":2,"name":"y"}]}"#);
    v.push((Format::Coco, d.clone(), vec![d.join("instances_train.json"), d.join("images/a.png"), d.join("images/b.jpg")]));
    // YOLO
    let d = root.join("yolo");
    write(&d.join("data.yaml"), "train: images/train\nval: images/val\nnames: [p, q]\n");
    write(&d.join("images/train/a.jpg"), jpg(30, 20));
    write(&d.join("images/val/b.png"), png(30, 20));
    write(&d.join("labels/train/a.txt"), "0 0.5 0.5 0.2 0.3\n1 0.1 0.1 0.1 0.1\n");
    write(&d.join("labels/val/b.txt"), "1 0.5 0.5 0.5 0.5\n");
    v.push((Format::Yolo, d.clone(), vec![d.join("data.yaml"), d.join("labels/train/a.txt"), d.join("images/train/a.jpg")]));
    // CSV
    let d = root.join("csv");
    write(&d.join("images/a.jpg"), jpg(30, 20));
    write(&d.join("images/b.jpg"), jpg(30, 20));
    write(&d.join("train_labels.csv"), "filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,30,20,r,1,2,20,15\na.jpg,30,20,s,3,3,9,9\n");
    write(&d.join("test_labels.csv"), "filename,width,height,class,xmin,ymin,xmax,ymax\nb.jpg,30,20,r,1,2,20,15\n");
    v.push((Format::Csv, d.clone(), vec![d.join("train_labels.csv"), d.join("images/a.jpg")]));
    // folders
    let d = root.join("folder");
    write(&d.join("train/cat/a.png"), png(5, 5));
    write(&d.join("train/dog/b.jpg"), jpg(5, 5));
    write(&d.join("test/dog/c.jpg"), jpg(5, 5));
    v.push((Format::Folder, d.clone(), vec![d.join("train/cat/a.png"), d.join("train/dog/b.jpg")]));
    // IDX
    let d = root.join("idx");
    let mut img = 2051u32.to_be_bytes().to_vec();
    for x in [4u32, 3, 3] {
        img.extend_from_slice(&x.to_be_bytes());
    }
    img.extend((0..36).map(|i| i as u8));
    let mut lab = 2049u32.to_be_bytes().to_vec();
    lab.extend_from_slice(&4u32.to_be_bytes());
    lab.extend([0, 1, 2, 1]);
    write(&d.join("train-images-idx3-ubyte.gz"), gz(&img));
    write(&d.join("train-labels-idx1-ubyte"), &lab);
    v.push((Format::Idx, d.clone(), vec![d.join("train-images-idx3-ubyte.gz"), d.join("train-labels-idx1-ubyte")]));
    // digits
    let d = root.join("digits");
    let row: Vec<String> = (0..64).map(|i| (i % 17).to_string()).collect();
    write(&d.join("digits.csv"), format!("{},3\n{},4\n", row.join(","), row.join(",")));
    v.push((Format::Digits, d.clone(), vec![d.join("digits.csv")]));
    v
}

fn mutate(rng: &mut impl Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let len = d.len();
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                d[i] = rng.random();
            }
            1 => d.truncate(rng.random_range(0..=len)),
            2 => {
                let i = rng.random_range(0..=len);
                let junk: [&[u8]; 8] = [b"<", b"\"", b",", b"\n", b"-1e9", b"NaN", b"\xff\xfe", b"}"];
                let j = junk[rng.random_range(0..junk.len())];
                d.splice(i..i, j.iter().copied());
            }
            3 if len > 1 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..len);
                d.drain(a..b);
            }
            4 if len > 1 => {
                let a = rng.random_range(0..len);
                let b = rng.random_range(a..len.min(a + 64));
                let chunk = d[a..b].to_vec();
                d.splice(a..a, chunk);
            }
            _ => d.clear(),
        }
    }
    d
}

#[test]
fn fuzz_mutated_datasets_never_panic_and_report() {
    let root = tempfile::tempdir().unwrap();
    let sets = valid_datasets(root.path());
    // Every valid set imports cleanly first.
    for (format, dir, _) in &sets {
        let (p, r) = import_dataset(dir, None, dir).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(r.format, format.as_str());
        assert!(r.skipped.is_empty(), "{format}: {:?}", r.skipped);
        check_invariants(&p, &r);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < Duration::from_secs(3) && runs < 3000 {
        let (format, dir, files) = &sets[runs % sets.len()];
        let file = &files[rng.random_range(0..files.len())];
        let original = std::fs::read(file).unwrap();
        let mutated = mutate(&mut rng, &original);
        std::fs::write(file, &mutated).unwrap();
        let out = tempfile::tempdir().unwrap();
        match import_dataset(dir, Some(*format), out.path()) {
            Ok((p, r)) => {
                check_invariants(&p, &r);
                // A mutated image is either still a good image or reported by name.
                let is_image = tessera::data::formats::is_image_path(file);
                if is_image && probe_file(file).is_err() {
                    let name = file.file_name().unwrap().to_string_lossy().into_owned();
                    assert!(r.skipped.iter().any(|s| s.path.contains(&name)), "{format}: {name} broken but not reported: {:?}", r.skipped);
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        std::fs::write(file, &original).unwrap();
        runs += 1;
    }
    assert!(runs >= sets.len(), "fuzz ran {runs} cases");
}
