//! Robust image decoding: sniff the real format (not the extension), apply EXIF orientation, convert
//! 16-bit/gray/RGBA/palette to RGB8, refuse decompression bombs, and read IDX / digits-CSV sources.
//!
//! IDX and digits-CSV files hold many images; each file is decoded once per process and kept in a
//! cache, so loading image `i` of 70 000 is a slice copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::project::ImageSource;

/// Images with more pixels than this are refused (decompression-bomb guard): 100 megapixels, e.g. 10 000 x 10 000.
/// The check runs on the header, before any pixel buffer is allocated.
pub const MAX_PIXELS: u64 = 100_000_000;

/// Upper bound on the decompressed size of one IDX file (2 GiB): a gzip bomb stops here.
pub const MAX_IDX_BYTES: u64 = 2 << 30;

#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
}

impl DecodeError {
    pub fn bad(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        DecodeError::Bad { path: path.as_ref().display().to_string(), reason: reason.into() }
    }
    /// The reason without the path.
    pub fn reason(&self) -> &str {
        match self {
            DecodeError::Bad { reason, .. } => reason,
        }
    }
}

/// What a header-only look at an image file tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageProbe {
    /// Size after EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// The format found in the bytes.
    pub format: ImageFormat,
    /// Set when the extension names another format than the content (e.g. a PNG named `.jpg`).
    pub extension_mismatch: Option<String>,
}

/// Decodes any [`ImageSource`] to an upright RGB8 image.
pub fn load_image(source: &ImageSource) -> Result<DynamicImage, DecodeError> {
    match source {
        ImageSource::File(p) => load_file(p),
        ImageSource::Idx { file, index } => {
            let idx = idx_images(file)?;
            idx.image(*index).ok_or_else(|| {
                DecodeError::bad(file, format!("image index {index} out of range (file holds {} images)", idx.count))
            })
        }
        ImageSource::DigitsCsv { file, row } => {
            let table = digits_table(file)?;
            match table.rows.get(*row) {
                Some(Ok(r)) => Ok(r.image()),
                Some(Err(e)) => Err(DecodeError::bad(file, e.clone())),
                None => Err(DecodeError::bad(file, format!("row {row} out of range (file holds {} rows)", table.rows.len()))),
            }
        }
    }
}

/// Width and height (orientation-aware) without decoding pixels.
pub fn image_dimensions(source: &ImageSource) -> Result<(u32, u32), DecodeError> {
    match source {
        ImageSource::File(p) => probe_file(p).map(|p| (p.width, p.height)),
        ImageSource::Idx { file, index } => {
            let idx = idx_images(file)?;
            if *index >= idx.count {
                return Err(DecodeError::bad(file, format!("image index {index} out of range ({} images)", idx.count)));
            }
            Ok((idx.cols as u32, idx.rows as u32))
        }
        ImageSource::DigitsCsv { .. } => Ok((8, 8)),
    }
}

fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    // 16-bit RGBA at MAX_PIXELS plus slack for the decoder's own buffers.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    limits
}

/// Reads the header of an image file: real format, orientation-aware size, and a cheap truncation check
/// (JPEG must end with an EOI marker, PNG with an IEND chunk), like Ultralytics' dataset verification.
pub fn probe_file(path: &Path) -> Result<ImageProbe, DecodeError> {
    let file = File::open(path).map_err(|e| DecodeError::bad(path, format!("cannot open: {e}")))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return Err(DecodeError::bad(path, "empty file (0 bytes)"));
    }
    let mut reader = BufReader::new(file);
    let mut head = [0u8; 16];
    let n = read_up_to(&mut reader, &mut head).map_err(|e| DecodeError::bad(path, format!("read error: {e}")))?;
    let format = image::guess_format(&head[..n])
        .map_err(|_| DecodeError::bad(path, "not an image: the content matches no supported image format"))?;
    let (decoder, orientation) = checked_decoder(path, reader, len, format)?;
    let (w, h) = decoder.dimensions();
    let (width, height) = if swaps_axes(orientation) { (h, w) } else { (w, h) };
    Ok(ImageProbe { width, height, format, extension_mismatch: extension_mismatch(path, format) })
}

/// The checks shared by probing and decoding, once the format is known: the truncation check, then a decoder
/// under the allocation limits whose header passed the pixel-count guard, and its EXIF orientation.
fn checked_decoder<'a, R: BufRead + Seek + 'a>(
    path: &Path,
    mut reader: R,
    len: u64,
    format: ImageFormat,
) -> Result<(impl ImageDecoder + 'a, Orientation), DecodeError> {
    check_trailer(&mut reader, len, format).map_err(|r| DecodeError::bad(path, r))?;
    reader.seek(SeekFrom::Start(0)).map_err(|e| DecodeError::bad(path, format!("read error: {e}")))?;
    let mut r = ImageReader::with_format(reader, format);
    r.limits(decode_limits());
    let mut decoder = r.into_decoder().map_err(|e| DecodeError::bad(path, describe(format, e)))?;
    let (w, h) = decoder.dimensions();
    check_pixels(path, w, h)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    Ok((decoder, orientation))
}

/// A decoder error in words: memory-limit refusals say so, everything else is corrupt data.
fn describe(format: ImageFormat, e: image::ImageError) -> String {
    match e {
        image::ImageError::Limits(l) => {
            format!("{format:?} image is too large to decode ({l}); over the limit of {MAX_PIXELS} pixels (decompression-bomb guard)")
        }
        other => format!("corrupt {format:?} image: {other}"),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// A JPEG must end with FF D9 (allowing a little trailing padding), a PNG with its IEND chunk.
fn check_trailer<R: Read + Seek>(r: &mut R, len: u64, format: ImageFormat) -> Result<(), String> {
    let (marker, name): (&[u8], &str) = match format {
        ImageFormat::Jpeg => (&[0xFF, 0xD9], "JPEG end-of-image marker"),
        ImageFormat::Png => (b"IEND", "PNG IEND chunk"),
        _ => return Ok(()),
    };
    let tail_len = len.min(64);
    r.seek(SeekFrom::Start(len - tail_len)).map_err(|e| format!("read error: {e}"))?;
    let mut tail = vec![0u8; tail_len as usize];
    let n = read_up_to(r, &mut tail).map_err(|e| format!("read error: {e}"))?;
    if tail[..n].windows(marker.len()).any(|w| w == marker) {
        Ok(())
    } else {
        Err(format!("truncated file: no {name} at the end ({len} bytes)"))
    }
}

fn check_pixels(path: &Path, w: u32, h: u32) -> Result<(), DecodeError> {
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        return Err(DecodeError::bad(
            path,
            format!("image is {w}x{h} = {pixels} pixels, over the limit of {MAX_PIXELS} (decompression-bomb guard)"),
        ));
    }
    if pixels == 0 {
        return Err(DecodeError::bad(path, format!("image has zero size ({w}x{h})")));
    }
    Ok(())
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(o, Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH)
}

fn extension_mismatch(path: &Path, format: ImageFormat) -> Option<String> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    let claimed = ImageFormat::from_extension(&ext)?;
    (claimed != format).then(|| format!("extension .{ext} but the content is {format:?}"))
}

fn load_file(path: &Path) -> Result<DynamicImage, DecodeError> {
    let bytes = std::fs::read(path).map_err(|e| DecodeError::bad(path, format!("cannot read: {e}")))?;
    decode_bytes(path, &bytes)
}

/// Decodes an encoded image held in memory (`path` is only used in messages).
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<DynamicImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::bad(path, "empty file (0 bytes)"));
    }
    let format = image::guess_format(bytes)
        .map_err(|_| DecodeError::bad(path, "not an image: the content matches no supported image format"))?;
    let (decoder, orientation) = checked_decoder(path, Cursor::new(bytes), bytes.len() as u64, format)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| DecodeError::bad(path, describe(format, e)))?;
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

/// Any colour type (16-bit, gray, alpha, palette-expanded) to RGB8; alpha is composited over white so
/// transparent backgrounds look as they do in an image viewer rather than black.
pub fn to_rgb8(img: DynamicImage) -> DynamicImage {
    if let DynamicImage::ImageRgb8(_) = img {
        return img;
    }
    if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        let (w, h) = rgba.dimensions();
        let mut out = RgbImage::new(w, h);
        for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
            let a = p[3] as u32;
            for c in 0..3 {
                o[c] = ((p[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
            }
        }
        return DynamicImage::ImageRgb8(out);
    }
    DynamicImage::ImageRgb8(img.to_rgb8())
}

// ---------------------------------------------------------------------------------------------
// Multi-image files, decoded once per process.

/// Per-path cache slot: the map lock is held only to find the slot; decoding happens in the slot's OnceLock,
/// so threads loading different files do not wait on each other.
type Slot<T> = Arc<OnceLock<Result<Arc<T>, DecodeError>>>;

fn cached<T>(
    cache: &'static OnceLock<Mutex<HashMap<PathBuf, Slot<T>>>>,
    path: &Path,
    load: impl FnOnce(&Path) -> Result<T, DecodeError>,
) -> Result<Arc<T>, DecodeError> {
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let slot = {
        let mut map = cache.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    };
    slot.get_or_init(|| load(path).map(Arc::new)).clone()
}

/// A file opened for reading, gunzipped on the fly when it starts with the gzip magic (1f 8b): the one place
/// that decides "gzip or raw" for IDX, digits CSV and format sniffing.
pub enum MaybeGzip {
    Raw(BufReader<File>),
    Gzip(flate2::read::MultiGzDecoder<BufReader<File>>),
}

impl MaybeGzip {
    pub fn open(path: &Path) -> std::io::Result<MaybeGzip> {
        let mut file = BufReader::new(File::open(path)?);
        let gzip = file.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        Ok(if gzip { MaybeGzip::Gzip(flate2::read::MultiGzDecoder::new(file)) } else { MaybeGzip::Raw(file) })
    }

    pub fn is_gzip(&self) -> bool {
        matches!(self, MaybeGzip::Gzip(_))
    }
}

impl Read for MaybeGzip {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            MaybeGzip::Raw(r) => r.read(buf),
            MaybeGzip::Gzip(g) => g.read(buf),
        }
    }
}

/// Reads a whole file, transparently gunzipping (gzip magic 1f 8b), at most `max` decompressed bytes.
pub fn read_maybe_gzip(path: &Path, max: u64) -> Result<Vec<u8>, DecodeError> {
    let cannot_read = |e: std::io::Error| DecodeError::bad(path, format!("cannot read: {e}"));
    let mut input = MaybeGzip::open(path).map_err(cannot_read)?;
    let mut out = Vec::new();
    if input.is_gzip() {
        input.take(max + 1).read_to_end(&mut out).map_err(|e| DecodeError::bad(path, format!("corrupt gzip data: {e}")))?;
        if out.len() as u64 > max {
            return Err(DecodeError::bad(path, format!("decompresses to more than {max} bytes (decompression-bomb guard)")));
        }
    } else {
        input.read_to_end(&mut out).map_err(cannot_read)?;
        if out.is_empty() {
            return Err(DecodeError::bad(path, "empty file (0 bytes)"));
        }
    }
    Ok(out)
}

/// The first `n` bytes of a file, gunzipped if it is gzip (fewer if it is shorter); `None` if it cannot be read.
pub fn peek_maybe_gzip(path: &Path, n: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    MaybeGzip::open(path).ok()?.take(n as u64).read_to_end(&mut out).ok()?;
    Some(out)
}

/// An MNIST-style IDX images file (magic 2051): `count` gray images of `rows` x `cols`.
#[derive(Debug)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
    /// Set when the file held fewer complete images than its header promised.
    pub note: Option<String>,
}

impl IdxImages {
    pub fn image(&self, i: usize) -> Option<DynamicImage> {
        let n = self.rows * self.cols;
        let px = self.pixels.get(i.checked_mul(n)?..(i + 1).checked_mul(n)?)?;
        let mut rgb = Vec::with_capacity(n * 3);
        for &v in px {
            rgb.extend_from_slice(&[v, v, v]);
        }
        RgbImage::from_raw(self.cols as u32, self.rows as u32, rgb).map(DynamicImage::ImageRgb8)
    }
}

/// Parses an IDX images buffer. A file shorter than its header promises keeps the complete images and
/// says how many were lost in `Err` of the second element.
pub fn parse_idx_images(path: &Path, data: &[u8]) -> Result<(IdxImages, Option<String>), DecodeError> {
    let (dims, body) = parse_idx_header(path, data, 2051, 3)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    let per = rows.checked_mul(cols).filter(|&n| n > 0 && n as u64 <= MAX_PIXELS).ok_or_else(|| {
        DecodeError::bad(path, format!("IDX image size {rows}x{cols} is zero or over the pixel limit"))
    })?;
    let complete = (body.len() / per).min(count);
    let note = (complete < count).then(|| {
        format!("truncated IDX file: header says {count} images, data holds {complete} complete ones")
    });
    let pixels = body[..complete * per].to_vec();
    Ok((IdxImages { count: complete, rows, cols, pixels, note: note.clone() }, note))
}

/// Parses an IDX labels buffer (magic 2049); truncation is reported like [`parse_idx_images`].
pub fn parse_idx_labels(path: &Path, data: &[u8]) -> Result<(Vec<u8>, Option<String>), DecodeError> {
    let (dims, body) = parse_idx_header(path, data, 2049, 1)?;
    let count = dims[0];
    let complete = body.len().min(count);
    let note = (complete < count).then(|| format!("truncated IDX file: header says {count} labels, data holds {complete}"));
    Ok((body[..complete].to_vec(), note))
}

/// Magic = 0x00 0x00 0x08 (unsigned byte) ndim; then ndim big-endian u32 sizes.
fn parse_idx_header<'a>(path: &Path, data: &'a [u8], magic: u32, ndim: usize) -> Result<(Vec<usize>, &'a [u8]), DecodeError> {
    let header_len = 4 + 4 * ndim;
    if data.len() < header_len {
        return Err(DecodeError::bad(path, format!("not an IDX file: {} bytes is shorter than the header", data.len())));
    }
    let found = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    if found != magic {
        return Err(DecodeError::bad(path, format!("not an IDX file with magic {magic} (found {found})")));
    }
    let dims = (0..ndim)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) as usize
        })
        .collect();
    Ok((dims, &data[header_len..]))
}

static IDX_CACHE: OnceLock<Mutex<HashMap<PathBuf, Slot<IdxImages>>>> = OnceLock::new();

/// The decoded IDX images file, from the process-wide cache.
pub fn idx_images(path: &Path) -> Result<Arc<IdxImages>, DecodeError> {
    cached(&IDX_CACHE, path, |p| {
        let data = read_maybe_gzip(p, MAX_IDX_BYTES)?;
        parse_idx_images(p, &data).map(|(images, _)| images)
    })
}

/// One row of an 8x8 digits CSV: 64 intensities 0..=16 and the label.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitsRow {
    pub pixels: [u8; 64],
    pub label: u32,
}

impl DigitsRow {
    /// 8x8 RGB8 with 0..16 scaled to 0..255.
    pub fn image(&self) -> DynamicImage {
        let mut img = RgbImage::new(8, 8);
        for (i, &v) in self.pixels.iter().enumerate() {
            let g = ((v as u32 * 255 + 8) / 16) as u8;
            img.put_pixel((i % 8) as u32, (i / 8) as u32, image::Rgb([g, g, g]));
        }
        DynamicImage::ImageRgb8(img)
    }
}

/// A digits CSV: one entry per data row (blank lines and an optional non-numeric header skipped);
/// malformed rows are kept as `Err(reason naming the line)` so importers can report them.
#[derive(Debug)]
pub struct DigitsTable {
    pub rows: Vec<Result<DigitsRow, String>>,
}

pub fn parse_digits(text: &str) -> DigitsTable {
    let mut rows = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if rows.is_empty() && fields.iter().any(|f| f.parse::<f64>().is_err()) && lineno == 0 {
            continue; // header
        }
        rows.push(parse_digits_row(&fields).map_err(|e| format!("line {}: {e}", lineno + 1)));
    }
    DigitsTable { rows }
}

fn parse_digits_row(fields: &[&str]) -> Result<DigitsRow, String> {
    if fields.len() != 65 {
        return Err(format!("expected 65 values (64 pixels then the label), found {}", fields.len()));
    }
    let mut pixels = [0u8; 64];
    for (i, f) in fields[..64].iter().enumerate() {
        let v: f64 = f.parse().map_err(|_| format!("pixel {} is not a number: '{f}'", i + 1))?;
        if !(0.0..=16.0).contains(&v) || v.fract() != 0.0 {
            return Err(format!("pixel {} is {f}, expected an integer 0..16", i + 1));
        }
        pixels[i] = v as u8;
    }
    let l: f64 = fields[64].parse().map_err(|_| format!("label is not a number: '{}'", fields[64]))?;
    if !(0.0..=1e6).contains(&l) || l.fract() != 0.0 {
        return Err(format!("label {} is not a non-negative integer", fields[64]));
    }
    Ok(DigitsRow { pixels, label: l as u32 })
}

static DIGITS_CACHE: OnceLock<Mutex<HashMap<PathBuf, Slot<DigitsTable>>>> = OnceLock::new();

/// The parsed digits CSV (raw or gzip), from the process-wide cache.
pub fn digits_table(path: &Path) -> Result<Arc<DigitsTable>, DecodeError> {
    cached(&DIGITS_CACHE, path, |p| {
        let data = read_maybe_gzip(p, 1 << 30)?;
        let text = String::from_utf8(data).map_err(|e| DecodeError::bad(p, format!("not UTF-8 text: {e}")))?;
        Ok(parse_digits(&text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgba};

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut v = Vec::new();
        img.write_to(&mut Cursor::new(&mut v), ImageFormat::Png).unwrap();
        v
    }

    #[test]
    fn png_named_jpg_decodes_and_reports_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a #1.jpg");
        std::fs::write(&p, png_bytes(&DynamicImage::new_rgb8(5, 3))).unwrap();
        let img = load_image(&ImageSource::File(p.clone())).unwrap();
        assert_eq!((img.width(), img.height()), (5, 3));
        let probe = probe_file(&p).unwrap();
        assert_eq!(probe.format, ImageFormat::Png);
        assert!(probe.extension_mismatch.is_some());
    }

    #[test]
    fn colour_types_become_rgb8() {
        let gray16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_pixel(4, 2, Luma([65535]));
        let rgba = ImageBuffer::from_pixel(3, 3, Rgba([255u8, 0, 0, 0]));
        for (img, px) in [
            (DynamicImage::ImageLuma16(gray16), [255, 255, 255]),
            (DynamicImage::ImageRgba8(rgba), [255, 255, 255]), // fully transparent -> white
            (DynamicImage::new_luma8(2, 2), [0, 0, 0]),
        ] {
            let out = decode_bytes(Path::new("x.png"), &png_bytes(&img)).unwrap();
            assert!(matches!(out, DynamicImage::ImageRgb8(_)));
            assert_eq!(out.to_rgb8().get_pixel(0, 0).0, px);
        }
    }

    #[test]
    fn empty_and_truncated_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        let e = load_image(&ImageSource::File(empty.clone())).unwrap_err().to_string();
        assert!(e.contains("empty.png") && e.contains("0 bytes"), "{e}");
        assert!(probe_file(&empty).is_err());

        let mut jpg = Vec::new();
        DynamicImage::new_rgb8(64, 64).write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg).unwrap();
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &jpg[..jpg.len() / 2]).unwrap();
        let e = probe_file(&cut).unwrap_err().to_string();
        assert!(e.contains("cut.jpg") && e.contains("truncated"), "{e}");
        assert!(load_image(&ImageSource::File(cut)).is_err());
    }

    #[test]
    fn huge_header_is_refused_before_allocating() {
        // A valid PNG header claiming 20000 x 20000 pixels, with no data: refused by the pixel limit.
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13];
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&20000u32.to_be_bytes());
        ihdr.extend_from_slice(&20000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&ihdr);
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc.to_be_bytes());
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut z, &[0u8; 4096]).unwrap();
        let mut idat = b"IDAT".to_vec();
        idat.extend_from_slice(&z.finish().unwrap());
        png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
        png.extend_from_slice(&idat);
        png.extend_from_slice(&crc32(&idat).to_be_bytes());
        png.extend_from_slice(&[0, 0, 0, 0]);
        png.extend_from_slice(b"IEND");
        png.extend_from_slice(&crc32(b"IEND").to_be_bytes());
        let e = decode_bytes(Path::new("bomb.png"), &png).unwrap_err().to_string();
        assert!(e.contains("limit"), "{e}");
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

    #[test]
    fn idx_round_trip_and_truncation() {
        let mut data = 2051u32.to_be_bytes().to_vec();
        for d in [3u32, 2, 2] {
            data.extend_from_slice(&d.to_be_bytes());
        }
        data.extend_from_slice(&[0, 1, 2, 3, 10, 11, 12, 13, 20]); // third image incomplete
        let (imgs, note) = parse_idx_images(Path::new("x"), &data).unwrap();
        assert_eq!(imgs.count, 2);
        assert!(note.unwrap().contains("truncated"));
        assert_eq!(imgs.image(1).unwrap().to_rgb8().get_pixel(1, 1).0, [13, 13, 13]);
        assert!(imgs.image(2).is_none());
        assert!(parse_idx_images(Path::new("x"), &data[..6]).is_err());
    }

    #[test]
    fn digits_rows_parse_and_scale() {
        let mut row: Vec<String> = (0..64).map(|i| (i % 17).to_string()).collect();
        row.push("7".into());
        let text = format!("{}\n1,2,3\n", row.join(","));
        let t = parse_digits(&text);
        assert_eq!(t.rows.len(), 2);
        let r = t.rows[0].as_ref().unwrap();
        assert_eq!(r.label, 7);
        assert_eq!(r.image().to_rgb8().get_pixel(0, 2).0, [255; 3]); // value 16 at index 16
        assert!(t.rows[1].as_ref().unwrap_err().contains("line 2"));
    }
}
