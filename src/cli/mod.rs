//! The headless command line. `tessera` with no subcommand opens the desktop app.
//! Each group of subcommands lives in its own file with its own clap `Args` struct.
pub mod bench;
pub mod bench_model;
pub mod data_cmds;
pub mod demo_cmds;
pub mod engine_cmds;
pub mod eval_cmds;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    version,
    about = "Train and use a small GPT over images: classification and object detection",
    long_about = "Tessera trains a small generative pretrained transformer over image patches for image classification and \
object detection. Run it with no arguments to open the desktop app; the subcommands run the same engine headless.",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Commands>,
    /// Project folder (or dataset) to open in the app.
    pub project: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Commands {
    /// Import a dataset (COCO, YOLO, VOC, CSV, class folders, MNIST IDX, digits CSV) into a project.
    Import(data_cmds::ImportArgs),
    /// Export a project to a dataset format.
    Export(data_cmds::ExportArgs),
    /// Generate the procedural shapes demo dataset.
    DemoData(demo_cmds::DemoDataArgs),
    /// Generative pretraining on images (labels ignored).
    Pretrain(engine_cmds::PretrainArgs),
    /// Train (fine-tune) a classifier or detector.
    Train(engine_cmds::TrainArgs),
    /// Predict classes or boxes for images.
    Predict(engine_cmds::PredictArgs),
    /// Evaluate a checkpoint on a project split.
    Eval(eval_cmds::EvalArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Measure speed: loader, training, inference (see the README's speed table).
    Bench(bench::BenchArgs),
}

const EXAMPLES: &str = "\
Examples:
  tessera                                             open the app (first run: a demo project)
  tessera demo-data --out shapes                      make the procedural shapes dataset
  tessera import ~/photos/voc --out myproject --json  import a dataset into a project
  tessera pretrain myproject --minutes 10 --out pre.ckpt
  tessera train myproject --task detect --init pre.ckpt --minutes 20 --out det.ckpt
  tessera predict det.ckpt photo.jpg --json           boxes with class and score
  tessera eval det.ckpt myproject --split test --json map50, map50_95, per-class AP
  tessera bench --json                                speed figures";

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        None => crate::ui::run_app(cli.project),
        Some(Commands::Import(a)) => data_cmds::import(a),
        Some(Commands::Export(a)) => data_cmds::export(a),
        Some(Commands::DemoData(a)) => demo_cmds::demo_data(a),
        Some(Commands::Pretrain(a)) => engine_cmds::pretrain(a),
        Some(Commands::Train(a)) => engine_cmds::train(a),
        Some(Commands::Predict(a)) => engine_cmds::predict(a),
        Some(Commands::Eval(a)) => eval_cmds::eval(a),
        Some(Commands::Bench(a)) => bench::bench(a),
        Some(Commands::Completions { shell }) => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "tessera", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
