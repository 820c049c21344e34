//! `tessera demo-data`: generate the procedural shapes dataset (see [`crate::data::demo`]).
use std::path::PathBuf;

use clap::Args;

use crate::data::demo::{write_demo, DemoOptions};
use crate::data::project::{Split, Task};

#[derive(Args, Debug)]
pub struct DemoDataArgs {
    /// Folder to write (created if missing): `images/*.png` and `tessera.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = DemoOptions::default().count)]
    pub count: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = DemoOptions::default().size)]
    pub size: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// At most this many shapes per image (1 = a pure classification set).
    #[arg(long, default_value_t = DemoOptions::default().max_shapes)]
    pub max_shapes: usize,
    /// Fraction of images holding exactly one shape (these also carry a class label for classification).
    #[arg(long, default_value_t = DemoOptions::default().single_fraction)]
    pub single_fraction: f32,
    /// Smallest shape, as a fraction of the image side.
    #[arg(long, default_value_t = DemoOptions::default().min_scale)]
    pub min_scale: f32,
    /// Largest shape, as a fraction of the image side.
    #[arg(long, default_value_t = DemoOptions::default().max_scale)]
    pub max_scale: f32,
    /// Task recorded in the project (both labels are written either way).
    #[arg(long, default_value = "detect")]
    pub task: Task,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

pub fn demo_data(a: DemoDataArgs) -> anyhow::Result<()> {
    let opts = DemoOptions {
        count: a.count,
        size: a.size,
        seed: a.seed,
        single_fraction: a.single_fraction,
        max_shapes: a.max_shapes,
        min_scale: a.min_scale,
        max_scale: a.max_scale,
        task: a.task,
    };
    let project = write_demo(&a.out, &opts)?;
    let mut box_counts = vec![0usize; project.classes.len()];
    for b in project.images.iter().flat_map(|i| &i.boxes) {
        box_counts[b.class] += 1;
    }
    let classes: serde_json::Map<String, serde_json::Value> =
        project.class_names().into_iter().zip(box_counts).map(|(n, c)| (n, c.into())).collect();
    let single = project.images.iter().filter(|i| i.class.is_some()).count();
    let splits: serde_json::Map<String, serde_json::Value> =
        Split::ALL.iter().map(|s| (s.as_str().to_string(), project.indices_in(*s).len().into())).collect();
    if a.json {
        let summary = serde_json::json!({
            "out": a.out, "images": project.images.len(), "boxes": project.box_count(),
            "single_shape_images": single, "classes": classes, "splits": splits,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "wrote {} images ({} boxes, {} single-shape images with a class label) of {} px to {}",
            project.images.len(),
            project.box_count(),
            single,
            a.size,
            a.out.display()
        );
        println!("splits: {}", serde_json::Value::Object(splits));
        println!("boxes per class: {}", serde_json::Value::Object(classes));
    }
    Ok(())
}
