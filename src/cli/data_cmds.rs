//! `tessera import | export`.
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Dataset file or folder.
    pub src: PathBuf,
    /// Project folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Format (auto-detected when omitted).
    #[arg(long)]
    pub format: Option<String>,
    /// Print a machine-readable summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    pub project: PathBuf,
    #[arg(long)]
    pub format: String,
    #[arg(long)]
    pub out: PathBuf,
}


pub fn import(_a: ImportArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
pub fn export(_a: ExportArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
