//! Native file dialogs (rfd) run off the UI thread, so the window keeps drawing while one is open.
//! Where no dialog can appear (e.g. no desktop portal), the dialog returns nothing and the views' typed
//! path fields and drag-and-drop still work.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crossbeam_channel::Receiver;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    PickFolder,
    PickFile,
    PickImages,
    PickCheckpoint,
}

/// A dialog that is open (or was); poll it each frame.
pub struct PendingDialog {
    rx: Receiver<Vec<PathBuf>>,
}

impl PendingDialog {
    pub fn open(kind: DialogKind, ctx: &egui::Context) -> PendingDialog {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let picked = block_on(async move {
                let d = rfd::AsyncFileDialog::new();
                match kind {
                    DialogKind::PickFolder => d.set_title("Choose a folder").pick_folder().await.map(|f| vec![f.path().to_path_buf()]),
                    DialogKind::PickFile => d
                        .set_title("Open a project or dataset file")
                        .add_filter("Projects and datasets", &["json", "xml", "yaml", "yml", "csv", "txt", "gz", "idx", "idx3-ubyte", "ubyte"])
                        .add_filter("All files", &["*"])
                        .pick_file()
                        .await
                        .map(|f| vec![f.path().to_path_buf()]),
                    DialogKind::PickImages => d
                        .set_title("Choose images")
                        .add_filter("Images", &["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"])
                        .pick_files()
                        .await
                        .map(|v| v.into_iter().map(|f| f.path().to_path_buf()).collect()),
                    DialogKind::PickCheckpoint => d
                        .set_title("Choose a checkpoint (checkpoint.json)")
                        .add_filter("Checkpoint", &["json"])
                        .pick_file()
                        .await
                        .map(|f| vec![f.path().to_path_buf()]),
                }
            });
            let _ = tx.send(picked.unwrap_or_default());
            ctx.request_repaint();
        });
        PendingDialog { rx }
    }

    /// `Some(paths)` once the dialog closed (empty when cancelled or unavailable).
    pub fn poll(&self) -> Option<Vec<PathBuf>> {
        self.rx.try_recv().ok()
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the current (dialog) thread.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
