//! Training: the worker thread and its message API, the loop, optimizer, schedule and checkpoints.
pub mod run;
pub mod worker;

pub use worker::{start_training, Command, Event, Objective, TrainConfig, TrainHandle};
pub mod data;
pub mod optim;
pub mod checkpoint;
pub mod teacher;
