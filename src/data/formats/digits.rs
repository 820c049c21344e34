//! The 8x8 digits CSV (scikit-learn `load_digits` / UCI optdigits): one row per image, 64 pixel values
//! 0..16 (row-major) then the label; raw or gzip, no header. Images are decoded from the cached table
//! ([`crate::data::decode::digits_table`]) on demand.

use std::path::{Path, PathBuf};

use super::{find_file_below, is_junk, FormatError, Parsed, RawImage, RawSource};
use crate::data::decode;
use crate::data::project::ImageSource;

pub fn read(src: &Path) -> Result<Parsed, FormatError> {
    let file: PathBuf = if src.is_file() {
        src.to_path_buf()
    } else {
        find_file_below(src, 3, |p, n| !is_junk(p) && (n.ends_with(".csv") || n.ends_with(".csv.gz")))
            .ok_or_else(|| FormatError::bad(src, "no digits .csv or .csv.gz file found"))?
    };
    let table = decode::digits_table(&file).map_err(|e| FormatError::bad(&file, e.reason()))?;
    let mut out = Parsed::default();
    let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut max_label = None;
    for (row, r) in table.rows.iter().enumerate() {
        match r {
            Ok(r) => {
                max_label = max_label.max(Some(r.label));
                out.images.push(RawImage {
                    source: RawSource::Known { source: ImageSource::DigitsCsv { file: file.clone(), row }, width: 8, height: 8 },
                    declared_size: None,
                    split: None,
                    class: Some(r.label.to_string()),
                    boxes: Vec::new(),
                    labeled: true,
                    key: format!("{name}#{row}"),
                });
            }
            Err(reason) => out.skip(file.display(), reason.clone()),
        }
    }
    if out.images.is_empty() {
        return Err(FormatError::bad(&file, "no valid digits rows (64 values 0..16 then a label)"));
    }
    let n = max_label.map(|m| m as usize + 1).unwrap_or(0);
    if n > 10_000 {
        return Err(FormatError::bad(&file, format!("label {} is implausibly large for a class index", n - 1)));
    }
    out.classes = (0..n).map(|i| i.to_string()).collect();
    Ok(out)
}
