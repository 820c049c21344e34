//! `tessera bench [loader|train|infer|all]`: speed measurements with `--json` output.
//! Each benchmark group is a function returning a serde_json::Value; `bench` prints them.
use clap::Args;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark: loader, train, infer, all (default all).
    pub what: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Options of the `train` and `infer` groups (src/cli/bench_model.rs).
    #[command(flatten)]
    pub model: super::bench_model::ModelBenchArgs,
}

pub fn bench(_a: BenchArgs) -> anyhow::Result<()> {
    if let Some(w @ ("train" | "infer")) = _a.what.as_deref() {
        return super::bench_model::run(w, &_a.model, _a.json);
    }
    anyhow::bail!("not implemented yet")
}
