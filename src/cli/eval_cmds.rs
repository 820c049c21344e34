//! `tessera eval`.
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct EvalArgs {
    pub checkpoint: PathBuf,
    pub data: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn eval(_a: EvalArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
