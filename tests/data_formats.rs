//! Dataset import/export: one test group per format on small files written by the test, bad input
//! (reported skips, never panics), and exact round trips. No external data is used.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};
use tessera::data::decode::{image_dimensions, load_image, probe_file};
use tessera::data::export::export_project;
use tessera::data::formats::Format;
use tessera::data::import::{detect_format, import_dataset, open_project_or_dataset, ImportReport};
use tessera::data::{BBox, ImageEntry, ImageSource, Project, Split, Task};

// ---------------------------------------------------------------------------------------------
// helpers

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut Cursor::new(&mut v), format).unwrap();
    v
}

fn jpg(w: u32, h: u32) -> Vec<u8> {
    let img = ImageBuffer::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
    encode(&DynamicImage::ImageRgb8(img), ImageFormat::Jpeg)
}

fn png(w: u32, h: u32) -> Vec<u8> {
    encode(&DynamicImage::new_rgb8(w, h), ImageFormat::Png)
}

/// Imports with the dataset folder as the project root (like opening a dataset path in place).
fn import(src: &Path, format: Option<Format>) -> (Project, ImportReport) {
    let root = if src.is_dir() { src } else { src.parent().unwrap() };
    let r = import_dataset(src, format, root);
    r.unwrap_or_else(|e| panic!("import of {} failed: {e}", src.display()))
}

fn skipped_has(report: &ImportReport, path_part: &str, reason_part: &str) -> bool {
    report.skipped.iter().any(|s| s.path.contains(path_part) && s.reason.contains(reason_part))
}

fn boxes_of(p: &Project, file_name: &str) -> Vec<(f32, f32, f32, f32, String)> {
    let im = p
        .images
        .iter()
        .find(|im| im.source.display_name() == file_name)
        .unwrap_or_else(|| panic!("{file_name} not imported"));
    let mut v: Vec<_> =
        im.boxes.iter().map(|b| (b.xmin, b.ymin, b.xmax, b.ymax, p.classes[b.class].name.clone())).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A 2x2 palette PNG (colour type 3) built by hand: red, green / blue, white.
fn palette_png() -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&2u32.to_be_bytes());
    ihdr.extend_from_slice(&2u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"PLTE", &[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]);
    let raw = [0u8, 0, 1, 0, 2, 3]; // filter byte + 2 indices per row
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw).unwrap();
    png_chunk(&mut out, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A JPEG with an EXIF APP1 segment saying orientation `o` inserted after SOI.
fn jpeg_with_orientation(w: u32, h: u32, o: u16) -> Vec<u8> {
    let plain = jpg(w, h);
    let mut tiff = b"MM\0*\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    tiff.extend_from_slice(&o.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}

fn voc_xml(filename: &str, w: u32, h: u32, objects: &[(&str, [f32; 4])]) -> String {
    let mut s = format!("<annotation>\n<filename>{filename}</filename>\n<size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n");
    for (name, b) in objects {
        s += &format!(
            "<object><name>{name}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>\n",
            b[0], b[1], b[2], b[3]
        );
    }
    s + "</annotation>\n"
}

// ---------------------------------------------------------------------------------------------
// decoding

#[test]
fn decode_handles_every_colour_type_and_lying_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_pixel(3, 2, Rgb([65535, 0, 32896]));
    write(&d.join("rgb16.png"), encode(&DynamicImage::ImageRgb16(rgb16), ImageFormat::Png));
    let gray: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_pixel(3, 2, Luma([77]));
    write(&d.join("gray.png"), encode(&DynamicImage::ImageLuma8(gray), ImageFormat::Png));
    let rgba = ImageBuffer::from_pixel(3, 2, Rgba([10u8, 20, 30, 255]));
    write(&d.join("rgba.png"), encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
    write(&d.join("palette.png"), palette_png());
    write(&d.join("png inside #1.jpg"), png(3, 2));

    let px = |name: &str| {
        let img = load_image(&ImageSource::File(d.join(name))).unwrap();
        assert!(matches!(img, DynamicImage::ImageRgb8(_)), "{name} not RGB8");
        img.to_rgb8()
    };
    assert_eq!(px("rgb16.png").get_pixel(0, 0).0, [255, 0, 128]);
    assert_eq!(px("gray.png").get_pixel(2, 1).0, [77, 77, 77]);
    assert_eq!(px("rgba.png").get_pixel(1, 1).0, [10, 20, 30]);
    let pal = px("palette.png");
    assert_eq!((pal.get_pixel(0, 0).0, pal.get_pixel(1, 0).0, pal.get_pixel(0, 1).0), ([255, 0, 0], [0, 255, 0], [0, 0, 255]));
    assert_eq!(px("png inside #1.jpg").dimensions(), (3, 2));
    assert!(probe_file(&d.join("png inside #1.jpg")).unwrap().extension_mismatch.is_some());
}

#[test]
fn exif_orientation_is_applied_to_pixels_and_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rotated.jpg");
    write(&p, jpeg_with_orientation(16, 8, 6)); // 6 = rotate 90 degrees clockwise
    let src = ImageSource::File(p.clone());
    assert_eq!(image_dimensions(&src).unwrap(), (8, 16));
    let img = load_image(&src).unwrap();
    assert_eq!((img.width(), img.height()), (8, 16));
    // An import stores the upright size too.
    let (project, _) = import(dir.path(), Some(Format::Folder));
    assert_eq!((project.images[0].width, project.images[0].height), (8, 16));
}

#[test]
fn broken_images_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = jpg(32, 32);
    write(&d.join("empty.jpg"), b"");
    write(&d.join("cut.jpg"), &j[..j.len() / 2]);
    write(&d.join("text.png"), b"hello, not an image");
    for name in ["empty.jpg", "cut.jpg", "text.png"] {
        let e = load_image(&ImageSource::File(d.join(name))).unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
        assert!(probe_file(&d.join(name)).is_err());
    }
    assert!(load_image(&ImageSource::File(d.join("missing.png"))).unwrap_err().to_string().contains("missing.png"));
}

// ---------------------------------------------------------------------------------------------
// Pascal VOC

fn voc_dataset(d: &Path) {
    for i in 0..6 {
        write(&d.join(format!("VOC/JPEGImages/img{i}.jpg")), jpg(40, 30));
        write(
            &d.join(format!("VOC/Annotations/img{i}.xml")),
            voc_xml(&format!("img{i}.jpg"), 40, 30, &[("cat", [1.0, 2.0, 20.0, 25.0]), (" dog ", [5.0, 5.0, 10.5, 9.0])]),
        );
    }
    write(&d.join("VOC/ImageSets/Main/train.txt"), "img0\nimg1\nimg2\n");
    write(&d.join("VOC/ImageSets/Main/val.txt"), "img3\n");
    write(&d.join("VOC/ImageSets/Main/test.txt"), "img4\nimg5\n");
    write(&d.join("VOC/ImageSets/Main/trainval.txt"), "img0\nimg1\nimg2\nimg3\n");
}

#[test]
fn voc_keeps_image_sets_and_reports_bad_boxes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    voc_dataset(d);
    // zero-area, outside (clamped), unknown tag, malformed xml, missing image, duplicate annotation.
    write(
        &d.join("VOC/Annotations/img0.xml"),
        voc_xml("img0.jpg", 40, 30, &[("cat", [3.0, 3.0, 3.0, 3.0]), ("cat", [-5.0, 2.0, 50.0, 20.0]), ("cat", [1.0, 1.0, 2.0, 2.0])]),
    );
    write(&d.join("VOC/Annotations/broken.xml"), "<annotation>\n<filename>img1.jpg</filename>\n<object>\n</annotation>");
    write(&d.join("VOC/Annotations/ghost.xml"), voc_xml("ghost.jpg", 40, 30, &[("cat", [1.0, 1.0, 5.0, 5.0])]));
    write(&d.join("VOC/Annotations/copy_of_img2.xml"), voc_xml("img2.jpg", 40, 30, &[("cat", [1.0, 1.0, 5.0, 5.0])]));

    assert_eq!(detect_format(d).unwrap(), Format::Voc);
    let (p, r) = import(d, None);
    assert_eq!(p.task, Task::Detect);
    assert_eq!(r.images, 6);
    assert_eq!(p.class_names(), vec!["cat", "dog"], "names are trimmed and sorted");
    assert_eq!((r.splits["train"], r.splits["val"], r.splits["test"]), (3, 1, 2));
    assert!(skipped_has(&r, "img0", "zero-area"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "broken.xml", "line 4"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "ghost.xml", "not found"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "img2", "duplicate"), "{:?}", r.skipped);
    assert!(r.warnings.iter().any(|w| w.contains("img0") && w.contains("clamped")), "{:?}", r.warnings);
    assert_eq!(boxes_of(&p, "img0.jpg"), vec![(0.0, 2.0, 40.0, 20.0, "cat".into()), (1.0, 1.0, 2.0, 2.0, "cat".into())]);
    assert_eq!(boxes_of(&p, "img3.jpg")[1], (5.0, 5.0, 10.5, 9.0, "dog".into()));
    // Paths are stored relative to the project, images are not copied.
    assert!(p.images.iter().all(|im| matches!(&im.source, ImageSource::File(f) if f.is_relative())));
    assert_eq!(r.boxes, p.box_count());
}

#[test]
fn voc_labelimg_layout_with_split_folders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (split, n) in [("train", 4), ("test", 2)] {
        for i in 0..n {
            let name = format!("{split} shot #{i}.JPG");
            write(&d.join("images").join(split).join(&name), jpg(20, 20));
            write(
                &d.join("images").join(split).join(format!("{split} shot #{i}.xml")),
                voc_xml(&name, 20, 20, &[("ace", [1.0, 1.0, 9.0, 9.0])]),
            );
        }
    }
    let (p, r) = import(d, None);
    assert_eq!(r.format, "voc");
    assert_eq!(r.images, 6);
    assert_eq!(r.splits["test"], 2);
    assert_eq!(r.splits["train"] + r.splits["val"], 4);
    assert!(p.images.iter().any(|im| im.source.display_name() == "test shot #1.JPG"));
}

// ---------------------------------------------------------------------------------------------
// COCO

#[test]
fn coco_reads_categories_boxes_and_splits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in ["a.jpg", "b.jpg", "c.jpg"] {
        write(&d.join("images/train").join(n), jpg(50, 40));
    }
    write(&d.join("images/val/v.jpg"), jpg(50, 40));
    let train = r#"{"images":[{"id":1,"file_name":"a.jpg","width":50,"height":40},{"id":2,"file_name":"b.jpg","width":50,"height":40},
        {"id":3,"file_name":"c.jpg","width":50,"height":40},{"id":4,"file_name":"a.jpg","width":50,"height":40},{"id":5,"file_name":"nope.jpg"}],
      "annotations":[{"id":1,"image_id":1,"category_id":7,"bbox":[1.5,2,10,20]},{"id":2,"image_id":2,"category_id":3,"bbox":[0,0,50,40]},
        {"id":3,"image_id":2,"category_id":99,"bbox":[1,1,2,2]},{"id":4,"image_id":3,"category_id":3,"bbox":[1,1,0,5]},
        {"id":5,"image_id":3,"category_id":3,"bbox":[1,1,5]},{"id":6,"image_id":42,"category_id":3,"bbox":[1,1,5,5]}],
      "categories":[{"id":7,"name":"zebra"},{"id":3,"name":"ant"}]}"#;
    write(&d.join("annotations/instances_train.json"), train);
    write(
        &d.join("annotations/instances_val.json"),
        r#"{"images":[{"id":1,"file_name":"v.jpg"}],"annotations":[],"categories":[{"id":3,"name":"ant"},{"id":7,"name":"zebra"}]}"#,
    );
    assert_eq!(detect_format(d).unwrap(), Format::Coco);
    let (p, r) = import(d, None);
    assert_eq!(p.class_names(), vec!["ant", "zebra"], "categories in id order");
    assert_eq!(r.images, 4);
    assert_eq!(boxes_of(&p, "a.jpg"), vec![(1.5, 2.0, 11.5, 22.0, "zebra".into())]);
    assert_eq!(boxes_of(&p, "b.jpg"), vec![(0.0, 0.0, 50.0, 40.0, "ant".into())]);
    assert!(skipped_has(&r, "annotations[2]", "unknown category_id 99"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "c.jpg", "zero-area"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "annotations[4]", "4 numbers"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "annotations[5]", "image_id 42"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "nope.jpg", "not found"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "a.jpg", "duplicate"), "{:?}", r.skipped);
    assert_eq!(r.splits["val"], 1);
    // v.jpg has no annotations: a labelled negative.
    let v = p.images.iter().find(|i| i.source.display_name() == "v.jpg").unwrap();
    assert!(v.labeled && v.boxes.is_empty());
}

#[test]
fn malformed_json_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("instances.json");
    write(&f, "{\"images\": [\n  {\"id\": 1,\n  \"file_name\": oops}\n], \"annotations\": []}");
    let e = import_dataset(&f, Some(Format::Coco), dir.path()).unwrap_err().to_string();
    assert!(e.contains("instances.json") && e.contains("line 3"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// YOLO

#[test]
fn yolo_data_yaml_layout_with_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("data.yaml"), "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: person\n  1: car\n");
    write(&d.join("images/train/a.jpg"), jpg(640, 480));
    write(&d.join("images/train/b.png"), png(100, 50));
    write(&d.join("images/train/nolabel.jpg"), jpg(10, 10));
    write(&d.join("images/val/c.jpg"), jpg(10, 10));
    // 6 decimals from another tool: snaps back to the integer pixels 64,48 .. 192,144.
    write(&d.join("labels/train/a.txt"), "0 0.200000 0.200000 0.200000 0.200000\n1 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\nbad line\n1 0.5 0.5\n");
    // a polygon label becomes its bounding box; a box sticking out is clamped.
    write(&d.join("labels/train/b.txt"), "1 0.1 0.2 0.5 0.2 0.3 0.6\n0 0.95 0.5 0.2 0.2\n");
    write(&d.join("labels/val/c.txt"), "");
    assert_eq!(detect_format(d).unwrap(), Format::Yolo);
    let (p, r) = import(d, None);
    assert_eq!(p.class_names(), vec!["person", "car"]);
    assert_eq!(r.images, 4);
    assert_eq!(boxes_of(&p, "a.jpg")[0], (64.0, 48.0, 192.0, 144.0, "person".into()));
    assert_eq!(boxes_of(&p, "a.jpg").len(), 2);
    assert!(skipped_has(&r, "a.txt line 3", "unknown class id 5"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "a.txt line 4", ""), "{:?}", r.skipped);
    assert!(skipped_has(&r, "a.txt line 5", "found 3 values"), "{:?}", r.skipped);
    assert_eq!(boxes_of(&p, "b.png")[0], (10.0, 10.0, 50.0, 30.0, "car".into()));
    assert_eq!(boxes_of(&p, "b.png")[1], (85.0, 20.0, 100.0, 30.0, "person".into()));
    assert!(r.warnings.iter().any(|w| w.contains("clamped")));
    let nolabel = p.images.iter().find(|i| i.source.display_name() == "nolabel.jpg").unwrap();
    assert!(!nolabel.labeled, "a missing label file means unlabelled");
    let c = p.images.iter().find(|i| i.source.display_name() == "c.jpg").unwrap();
    assert!(c.labeled && c.boxes.is_empty() && c.split == Split::Val, "an empty label file is a labelled negative");
}

#[test]
fn yolo_classes_txt_layout_and_malformed_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("classes.txt"), "cat\ndog\n");
    write(&d.join("images/x.jpg"), jpg(20, 20));
    write(&d.join("labels/x.txt"), "1 0.5 0.5 0.5 0.5\n");
    let (p, _) = import(d, Some(Format::Yolo));
    assert_eq!(boxes_of(&p, "x.jpg"), vec![(5.0, 5.0, 15.0, 15.0, "dog".into())]);

    write(&d.join("data.yaml"), "names: [a, b\ntrain: images\n");
    let e = import_dataset(&d.join("data.yaml"), Some(Format::Yolo), d).unwrap_err().to_string();
    assert!(e.contains("data.yaml") && e.contains("line"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// CSV

#[test]
fn csv_split_files_give_splits_and_rows_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..20 {
        write(&d.join(format!("images/r{i}.jpg")), jpg(30, 20));
    }
    let header = "filename,width,height,class,xmin,ymin,xmax,ymax\n";
    let mut train = header.to_string();
    for i in 0..16 {
        train += &format!("r{i}.jpg,30,20,raccoon,1,2,20,15\n");
    }
    train += "r0.jpg,30,20,raccoon,3,3,9,9\n"; // second box of r0
    train += "r1.jpg,30,20,raccoon,x,3,9,9\n"; // bad number
    train += "missing.jpg,30,20,raccoon,1,1,5,5\n";
    train += "r2.jpg,30,20\n"; // short row
    write(&d.join("data/train_labels.csv"), &train);
    let mut test = header.to_string();
    for i in 16..20 {
        test += &format!("r{i}.jpg,30,20,raccoon,1,2,20,15\n");
    }
    test += "r3.jpg,30,20,raccoon,1,2,20,15\n"; // r3 is already in train
    write(&d.join("data/test_labels.csv"), &test);
    let mut all = header.to_string();
    for i in 0..20 {
        all += &format!("r{i}.jpg,30,20,raccoon,1,2,20,15\n");
    }
    write(&d.join("data/all_labels.csv"), &all);

    assert_eq!(detect_format(d).unwrap(), Format::Csv);
    let (p, r) = import(d, None);
    assert_eq!(r.images, 20);
    assert_eq!(r.boxes, 21, "r0 has two boxes; rows from the all-labels CSV are not counted twice");
    assert_eq!(r.splits["test"], 4);
    assert_eq!(r.splits["train"] + r.splits["val"], 16);
    assert!(skipped_has(&r, "train_labels.csv line 19", "xmin is not a number"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "train_labels.csv line 20", "not found"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "test_labels.csv line 6", "duplicate"), "{:?}", r.skipped);
    assert_eq!(boxes_of(&p, "r0.jpg").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// class folders

#[test]
fn class_folders_with_splits_odd_names_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for split in ["train", "test"] {
        for class in ["cat", "dog #2"] {
            for i in 0..5 {
                write(&d.join(split).join(class).join(format!("im {i}.png")), png(8, 6));
            }
        }
    }
    write(&d.join("train/cat/empty.jpg"), b"");
    let j = jpg(16, 16);
    write(&d.join("train/cat/cut.jpg"), &j[..j.len() - 40]);
    write(&d.join("train/cat/notes.txt"), "hello");
    write(&d.join("train/cat/actually png.jpg"), png(8, 6));
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"latin1-\xe9.png");
        write(&d.join("train/dog #2").join(name), png(8, 6));
    }
    assert_eq!(detect_format(d).unwrap(), Format::Folder);
    let (p, r) = import(d, None);
    assert_eq!(p.task, Task::Classify);
    assert_eq!(p.class_names(), vec!["cat", "dog #2"]);
    assert_eq!(r.images, 21);
    assert_eq!(r.classes["cat"], 11);
    assert_eq!(r.splits["test"], 10);
    assert!(skipped_has(&r, "empty.jpg", "0 bytes"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "cut.jpg", "truncated"), "{:?}", r.skipped);
    assert!(skipped_has(&r, "notes.txt", "not an image"), "{:?}", r.skipped);
    assert!(r.warnings.iter().any(|w| w.contains("actually png.jpg")), "{:?}", r.warnings);
    #[cfg(unix)]
    assert!(skipped_has(&r, "latin1-", "UTF-8"), "{:?}", r.skipped);
    // The project saves and loads with such names.
    let out = tempfile::tempdir().unwrap();
    let (p, _) = import_dataset(d, None, out.path()).unwrap();
    p.save().unwrap();
    let q = Project::load(out.path()).unwrap();
    assert_eq!(q.images.len(), 21);
    assert!(load_image(&q.source_of(0)).is_ok());
}

#[test]
fn decompression_bomb_is_skipped_not_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut bomb = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&30000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut bomb, b"IHDR", &ihdr);
    // A few hundred bytes of zlib data that would inflate to 2.7 GB of pixels.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![0u8; 1 << 20]).unwrap();
    png_chunk(&mut bomb, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut bomb, b"IEND", &[]);
    write(&d.join("a/bomb.png"), &bomb);
    write(&d.join("a/ok.png"), png(4, 4));
    let (p, r) = import(d, None);
    assert_eq!(p.images.len(), 1);
    assert!(skipped_has(&r, "bomb.png", "limit"), "{:?}", r.skipped);
    assert!(load_image(&ImageSource::File(d.join("a/bomb.png"))).unwrap_err().to_string().contains("limit"));
}

// ---------------------------------------------------------------------------------------------
// MNIST IDX and digits CSV

fn idx_images(n: usize, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = 2051u32.to_be_bytes().to_vec();
    for x in [n as u32, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    for i in 0..n * (rows * cols) as usize {
        v.push((i % 251) as u8);
    }
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = 2049u32.to_be_bytes().to_vec();
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_gzip_and_raw_with_train_test_splits() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train_labels: Vec<u8> = (0..50).map(|i| (i % 3) as u8).collect();
    write(&d.join("train-images-idx3-ubyte.gz"), gz(&idx_images(50, 4, 5)));
    write(&d.join("train-labels-idx1-ubyte.gz"), gz(&idx_labels(&train_labels)));
    write(&d.join("t10k-images-idx3-ubyte"), idx_images(10, 4, 5));
    write(&d.join("t10k-labels-idx1-ubyte"), idx_labels(&[2; 10]));
    assert_eq!(detect_format(d).unwrap(), Format::Idx);
    let (p, r) = import(d, None);
    assert_eq!(r.images, 60);
    assert_eq!(p.class_names(), vec!["0", "1", "2"]);
    assert_eq!(r.splits["test"], 10);
    assert!(r.splits["val"] > 0, "val carved out of train");
    let first = p.images.iter().position(|im| matches!(&im.source, ImageSource::Idx { index: 1, file } if file.to_string_lossy().contains("train"))).unwrap();
    let img = load_image(&p.source_of(first)).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (5, 4));
    assert_eq!(img.get_pixel(0, 0).0, [20, 20, 20], "image 1 starts at byte 20");
    assert_eq!(p.images[first].class, Some(1));
}

#[test]
fn truncated_idx_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let imgs = idx_images(10, 2, 2);
    write(&d.join("train-images-idx3-ubyte"), &imgs[..imgs.len() - 6]);
    write(&d.join("train-labels-idx1-ubyte"), idx_labels(&[1; 10]));
    let (p, r) = import(d, Some(Format::Idx));
    assert_eq!(p.images.len(), 8);
    assert!(skipped_has(&r, "train-images", "truncated"), "{:?}", r.skipped);
}

#[test]
fn digits_csv_gzip_rows_and_scaling() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut text = String::new();
    for r in 0..30 {
        let mut row: Vec<String> = (0..64).map(|i| ((i + r) % 17).to_string()).collect();
        row.push((r % 10).to_string());
        text += &(row.join(",") + "\n");
    }
    text += "1,2,3\n"; // malformed: line 31
    write(&d.join("digits.csv.gz"), gz(text.as_bytes()));
    assert_eq!(detect_format(d).unwrap(), Format::Digits);
    let (p, r) = import(d, None);
    assert_eq!(r.images, 30);
    assert_eq!(p.classes.len(), 10);
    assert!(skipped_has(&r, "digits.csv.gz", "line 31"), "{:?}", r.skipped);
    let img = load_image(&p.source_of(0)).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (8, 8));
    assert_eq!(img.get_pixel(0, 2).0, [255; 3], "value 16 scales to 255");
    assert_eq!(img.get_pixel(1, 0).0, [16; 3], "value 1 scales to 16");
}

// ---------------------------------------------------------------------------------------------
// opening and exporting

#[test]
fn dataset_paths_open_in_memory_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    voc_dataset(d);
    let before: Vec<_> = walkdir::WalkDir::new(d).into_iter().flatten().map(|e| e.into_path()).collect();
    let (p, r) = open_project_or_dataset(d).unwrap();
    assert_eq!(r.images, 6);
    assert!(load_image(&p.source_of(0)).is_ok(), "sources resolve against the dataset folder");
    let after: Vec<_> = walkdir::WalkDir::new(d).into_iter().flatten().map(|e| e.into_path()).collect();
    assert_eq!(before, after);

    let proj = tempfile::tempdir().unwrap();
    let (p, _) = import_dataset(d, None, proj.path()).unwrap();
    p.save().unwrap();
    let (q, r) = open_project_or_dataset(proj.path()).unwrap();
    assert_eq!(r.format, "tessera");
    assert_eq!(q.images, p.images);
}

#[test]
fn export_refuses_the_wrong_task_and_disambiguates_names() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("a/x.png"), png(4, 4));
    write(&d.join("b/x.png"), png(4, 4));
    let (p, _) = import(d, Some(Format::Folder));
    let out = tempfile::tempdir().unwrap();
    assert!(export_project(&p, Format::Coco, out.path()).is_err());
    let rep = export_project(&p, Format::Folder, out.path()).unwrap();
    assert_eq!(rep.images, 2);
    let (q, _) = import(out.path(), Some(Format::Folder));
    assert_eq!(q.images.len(), 2);
    let mut counts = q.class_counts();
    counts.sort();
    assert_eq!(counts, vec![1, 1]);
}

// ---------------------------------------------------------------------------------------------
// round trips (exact) — fixed cases; property versions live in tests/data_props.rs

/// A detection project of `n` images of various sizes with the given boxes, images written to `dir`.
pub fn detection_project(dir: &Path, boxes: &[Vec<(f32, f32, f32, f32, usize)>]) -> Project {
    let mut p = Project::new("t", Task::Detect, dir);
    for c in ["alpha", "beta gamma", "δ"] {
        p.class_index_or_add(c);
    }
    for (i, bs) in boxes.iter().enumerate() {
        let (w, h) = (50 + (i as u32 * 37) % 200, 40 + (i as u32 * 53) % 150);
        let name = format!("im {i}.jpg");
        write(&dir.join("src").join(&name), jpg(w, h));
        p.images.push(ImageEntry {
            source: ImageSource::File(PathBuf::from("src").join(&name)),
            width: w,
            height: h,
            split: Split::ALL[i % 3],
            class: None,
            boxes: bs
                .iter()
                .map(|&(x0, y0, x1, y1, c)| BBox {
                    xmin: x0 * w as f32,
                    ymin: y0 * h as f32,
                    xmax: x1 * w as f32,
                    ymax: y1 * h as f32,
                    class: c,
                })
                .collect(),
            labeled: true,
        });
    }
    p
}

#[test]
fn every_detection_format_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = detection_project(dir.path(), &[vec![(0.1, 0.1, 0.5, 0.6, 0), (0.3, 0.2, 0.9, 0.9, 2)], vec![], vec![(0.0, 0.0, 1.0, 1.0, 1)]]);
    p.images[0].boxes.push(BBox { xmin: 3.0, ymin: 4.0, xmax: 17.0, ymax: 30.0, class: 1 }); // integers
    p.images[0].boxes.push(BBox { xmin: 0.1, ymin: 1.0 / 3.0, xmax: 12.345678, ymax: 29.999, class: 0 }); // awkward floats
    for f in [Format::Coco, Format::Yolo, Format::Voc, Format::Csv, Format::Tessera] {
        let out = tempfile::tempdir().unwrap();
        export_project(&p, f, out.path()).unwrap();
        let (q, r) = import(out.path(), None);
        assert_eq!(r.format, f.as_str(), "auto-detect the exported {f}");
        assert_eq!(q.class_names(), p.class_names(), "{f}");
        for (i, im) in p.images.iter().enumerate() {
            let name = format!("im {i}.jpg");
            let orig = boxes_of(&p, &name);
            assert_eq!(boxes_of(&q, &name), orig, "{f} {name}");
            let qi = q.images.iter().find(|x| x.source.display_name() == name).unwrap();
            assert_eq!(qi.split, im.split, "{f} keeps splits");
            assert!(qi.labeled);
        }
    }
}

#[test]
fn yolo_roboflow_layout_and_shared_label_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Roboflow: data.yaml beside train/ and valid/, with paths written as ../train/images.
    write(&d.join("data.yaml"), "train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['card']\n");
    write(&d.join("train/images/a.jpg"), jpg(20, 20));
    write(&d.join("train/labels/a.txt"), "0 0.5 0.5 0.5 0.5\n");
    write(&d.join("train/images/b.jpg"), jpg(20, 20));
    write(&d.join("train/images/b.png"), png(20, 20));
    write(&d.join("train/labels/b.txt"), "0 0.5 0.5 0.5 0.5\n");
    write(&d.join("valid/images/v.jpg"), jpg(20, 20));
    write(&d.join("valid/labels/v.txt"), "");
    let (p, r) = import(d, None);
    assert_eq!(r.format, "yolo");
    assert_eq!(r.images, 4);
    assert_eq!(r.splits["val"], 1);
    assert!(skipped_has(&r, "b.png", "shared"), "{:?}", r.skipped);
    assert_eq!(boxes_of(&p, "a.jpg"), vec![(5.0, 5.0, 15.0, 15.0, "card".into())]);
}

#[test]
fn voc_wrong_filename_falls_back_to_the_xml_name_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("pics/photo.jpg"), jpg(20, 20));
    write(&d.join("pics/photo.xml"), voc_xml("renamed-long-ago.jpg", 20, 20, &[("x", [1.0, 1.0, 5.0, 5.0])]));
    let (p, r) = import(d, None);
    assert_eq!(p.images.len(), 1);
    assert!(r.warnings.iter().any(|w| w.contains("photo.xml") && w.contains("renamed-long-ago.jpg")), "{:?}", r.warnings);
}

#[test]
fn a_plain_folder_of_photos_imports_unlabelled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..4 {
        write(&d.join(format!("photo {i}.jpg")), jpg(12, 9));
    }
    assert_eq!(detect_format(d).unwrap(), Format::Folder);
    let (p, r) = import(d, None);
    assert_eq!(r.images, 4);
    assert_eq!(r.labeled, 0);
    assert!(p.classes.is_empty());
    assert!(p.images.iter().all(|im| !im.labeled && im.class.is_none()));
}

#[test]
fn unlabelled_images_never_come_back_as_negatives() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = detection_project(dir.path(), &[vec![(0.1, 0.1, 0.5, 0.5, 0)], vec![], vec![]]);
    p.images[2].labeled = false; // image 1 stays a labelled negative
    for f in [Format::Coco, Format::Yolo, Format::Voc, Format::Csv] {
        let out = tempfile::tempdir().unwrap();
        let rep = export_project(&p, f, out.path()).unwrap();
        let (q, _) = import(out.path(), Some(f));
        let back = |name: &str| q.images.iter().find(|im| im.source.display_name() == name).map(|im| im.labeled);
        assert_eq!(back("im 1.jpg"), Some(true), "{f}: labelled negative kept");
        match f {
            Format::Yolo => assert_eq!(back("im 2.jpg"), Some(false), "yolo: no label file = unlabelled"),
            _ => {
                assert_eq!(back("im 2.jpg"), None, "{f}: unlabelled image left out");
                assert!(rep.warnings.iter().any(|w| w.contains("unlabelled")), "{f}: {:?}", rep.warnings);
            }
        }
    }
}
