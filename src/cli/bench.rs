//! `tessera bench [loader|train|infer|all]`: speed measurements with `--json` output.
//! Each benchmark group is a function returning a serde_json::Value; `bench` prints them.
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark: loader, train, infer, all (default all).
    pub what: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn bench(_a: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
