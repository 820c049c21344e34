//! `tessera import | export`.
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::data::export::export_project;
use crate::data::formats::Format;
use crate::data::import::{import_dataset, open_project_or_dataset};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Dataset file or folder.
    pub src: PathBuf,
    /// Project folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Format (auto-detected when omitted): coco, yolo, voc, csv, folder, idx, digits, tessera.
    #[arg(long)]
    pub format: Option<String>,
    /// Print a machine-readable summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Project folder (or a dataset path, imported on the fly).
    pub project: PathBuf,
    /// coco, yolo, voc, csv (detection), folder (classification) or tessera.
    #[arg(long)]
    pub format: String,
    /// Folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Print a machine-readable summary.
    #[arg(long)]
    pub json: bool,
}

fn parse_format(s: &str) -> anyhow::Result<Format> {
    s.parse::<Format>().map_err(anyhow::Error::msg)
}

pub fn import(a: ImportArgs) -> anyhow::Result<()> {
    let format = a.format.as_deref().map(parse_format).transpose()?;
    if a.out.join(crate::data::project::PROJECT_FILE).exists() && crate::data::import::absolute(&a.out) == crate::data::import::absolute(&a.src) {
        anyhow::bail!("{}: --out is the project being imported; choose another folder", a.out.display());
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    let (project, report) = import_dataset(&a.src, format, &a.out)?;
    project.save()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
        println!("wrote {}", project.project_file().display());
    }
    Ok(())
}

pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    let format = parse_format(&a.format)?;
    let (project, _) = open_project_or_dataset(&a.project)?;
    let report = export_project(&project, format, &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "exported {} images, {} boxes, {} classes as {} to {}",
            report.images,
            report.boxes,
            report.classes.len(),
            report.format,
            a.out.display()
        );
        for s in report.skipped.iter().take(20) {
            println!("  skipped {}: {}", s.path, s.reason);
        }
        for w in &report.warnings {
            println!("  {w}");
        }
    }
    Ok(())
}
