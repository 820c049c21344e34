//! Image and thumbnail cache: decoding happens on two loader threads, the UI thread only uploads the
//! finished pixels as textures (a bounded number per frame so scrolling a big gallery never stalls a frame).

use std::cell::RefCell;
use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender};

use crate::data::project::ImageSource;

/// Thumbnails are decoded to fit in this many pixels.
pub const THUMB_SIZE: u32 = 128;
/// Full images larger than this are downscaled for display (coordinates stay in original pixels).
const MAX_DISPLAY_SIDE: u32 = 4096;
/// At most this many textures are uploaded per frame.
const UPLOADS_PER_FRAME: usize = 12;
/// Thumbnails kept before unused ones are dropped.
const THUMB_CAPACITY: usize = 3000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    Full,
    Thumb,
}

#[derive(Clone)]
pub enum ImageSlot {
    Loading,
    /// The texture and the original image size in pixels.
    Ready(egui::TextureHandle, [u32; 2]),
    Failed(String),
}

struct LoadRequest {
    source: ImageSource,
    kind: ImageKind,
}

struct Loaded {
    source: ImageSource,
    kind: ImageKind,
    result: Result<(egui::ColorImage, [u32; 2]), String>,
}

struct Entry {
    slot: ImageSlot,
    last_used: u64,
}

pub struct ImageCache {
    full_tx: Sender<LoadRequest>,
    thumb_tx: Sender<LoadRequest>,
    done_rx: Receiver<Loaded>,
    ctx_slot: std::sync::Arc<std::sync::Mutex<Option<egui::Context>>>,
    entries: RefCell<HashMap<(ImageSource, ImageKind), Entry>>,
    frame: RefCell<u64>,
}

impl Default for ImageCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageCache {
    pub fn new() -> Self {
        let (full_tx, full_rx) = crossbeam_channel::unbounded::<LoadRequest>();
        let (thumb_tx, thumb_rx) = crossbeam_channel::unbounded::<LoadRequest>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Loaded>();
        let ctx_slot: std::sync::Arc<std::sync::Mutex<Option<egui::Context>>> = Default::default();
        for n in 0..2 {
            let (full_rx, thumb_rx, done_tx, ctx_slot) = (full_rx.clone(), thumb_rx.clone(), done_tx.clone(), ctx_slot.clone());
            let _ = std::thread::Builder::new().name(format!("tessera-images-{n}")).spawn(move || loop {
                // Full images (what the user is looking at) go before thumbnails.
                let req = crossbeam_channel::select_biased! {
                    recv(full_rx) -> r => r,
                    recv(thumb_rx) -> r => r,
                };
                let Ok(req) = req else { return };
                let result = std::panic::catch_unwind(|| decode(&req.source, req.kind))
                    .unwrap_or_else(|_| Err("the decoder crashed on this file".into()));
                if done_tx.send(Loaded { source: req.source, kind: req.kind, result }).is_err() {
                    return;
                }
                if let Some(ctx) = ctx_slot.lock().ok().and_then(|c| c.clone()) {
                    ctx.request_repaint();
                }
            });
        }
        ImageCache { full_tx, thumb_tx, done_rx, ctx_slot, entries: Default::default(), frame: RefCell::new(0) }
    }

    /// The image's slot, asking for it to be loaded if it is not cached yet.
    pub fn get(&self, source: &ImageSource, kind: ImageKind) -> ImageSlot {
        let frame = *self.frame.borrow();
        let mut entries = self.entries.borrow_mut();
        let key = (source.clone(), kind);
        if let Some(e) = entries.get_mut(&key) {
            e.last_used = frame;
            return e.slot.clone();
        }
        let req = LoadRequest { source: source.clone(), kind };
        let _ = match kind {
            ImageKind::Full => self.full_tx.send(req),
            ImageKind::Thumb => self.thumb_tx.send(req),
        };
        entries.insert(key, Entry { slot: ImageSlot::Loading, last_used: frame });
        ImageSlot::Loading
    }

    /// Forgets an image (e.g. after the file changed on disk).
    pub fn forget(&self, source: &ImageSource) {
        let mut entries = self.entries.borrow_mut();
        entries.remove(&(source.clone(), ImageKind::Full));
        entries.remove(&(source.clone(), ImageKind::Thumb));
    }

    /// Uploads finished decodes as textures; call once per frame.
    pub fn poll(&self, ctx: &egui::Context) {
        if let Ok(mut slot) = self.ctx_slot.lock() {
            if slot.is_none() {
                *slot = Some(ctx.clone());
            }
        }
        *self.frame.borrow_mut() += 1;
        let frame = *self.frame.borrow();
        let mut entries = self.entries.borrow_mut();
        let mut uploaded = 0;
        while uploaded < UPLOADS_PER_FRAME {
            let Ok(done) = self.done_rx.try_recv() else { break };
            uploaded += 1;
            let slot = match done.result {
                Ok((pixels, size)) => {
                    let name = format!("{:?}:{}", done.kind, done.source.display_name());
                    // Zoomed in, a labeller wants to see the real pixels, not a blur.
                    let options = match done.kind {
                        ImageKind::Full => egui::TextureOptions { magnification: egui::TextureFilter::Nearest, ..egui::TextureOptions::LINEAR },
                        ImageKind::Thumb => egui::TextureOptions::LINEAR,
                    };
                    ImageSlot::Ready(ctx.load_texture(name, pixels, options), size)
                }
                Err(e) => ImageSlot::Failed(e),
            };
            entries.insert((done.source, done.kind), Entry { slot, last_used: frame });
        }
        if uploaded == UPLOADS_PER_FRAME {
            ctx.request_repaint();
        }
        let thumbs = entries.keys().filter(|k| k.1 == ImageKind::Thumb).count();
        if thumbs > THUMB_CAPACITY {
            entries.retain(|k, e| k.1 == ImageKind::Full || frame.saturating_sub(e.last_used) < 120);
        }
        // Keep only a few full-size images: they are large.
        let mut full: Vec<(u64, (ImageSource, ImageKind))> =
            entries.iter().filter(|(k, _)| k.1 == ImageKind::Full).map(|(k, e)| (e.last_used, k.clone())).collect();
        if full.len() > 24 {
            full.sort_by_key(|(t, _)| *t);
            let excess = full.len() - 24;
            for (_, k) in full.into_iter().take(excess) {
                entries.remove(&k);
            }
        }
    }

    /// Number of images still being decoded.
    pub fn pending(&self) -> usize {
        self.entries.borrow().values().filter(|e| matches!(e.slot, ImageSlot::Loading)).count()
    }
}

fn decode(source: &ImageSource, kind: ImageKind) -> Result<(egui::ColorImage, [u32; 2]), String> {
    let img = crate::data::decode::load_image(source).map_err(|e| e.to_string())?;
    let size = [img.width(), img.height()];
    let max = match kind {
        ImageKind::Full => MAX_DISPLAY_SIDE,
        ImageKind::Thumb => THUMB_SIZE,
    };
    let img = if img.width() > max || img.height() > max { img.thumbnail(max, max) } else { img };
    Ok((to_color_image(&img), size))
}

/// Converts a decoded image to egui pixels.
pub fn to_color_image(img: &image::DynamicImage) -> egui::ColorImage {
    let rgba = img.to_rgba8();
    egui::ColorImage::from_rgba_unmultiplied([rgba.width() as usize, rgba.height() as usize], rgba.as_raw())
}
