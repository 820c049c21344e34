//! `tessera demo-data`.
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct DemoDataArgs {
    #[arg(long)]
    pub out: PathBuf,
}

pub fn demo_data(_a: DemoDataArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
