//! `tessera pretrain | train | predict`.
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct PretrainArgs {
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    pub checkpoint: PathBuf,
    pub images: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}


pub fn pretrain(_a: PretrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
pub fn train(_a: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
pub fn predict(_a: PredictArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
