//! The training loop itself (runs on the worker thread).
use crossbeam_channel::{Receiver, Sender};

use super::worker::{Command, Event, TrainConfig};
use crate::data::project::Project;

pub fn run_training(
    _project: Project,
    _config: TrainConfig,
    _commands: Receiver<Command>,
    _events: Sender<Event>,
) -> anyhow::Result<()> {
    anyhow::bail!("training loop not written yet")
}
