//! Checkpoints: a directory with `weights.safetensors` (the model), `checkpoint.json` (model config, class names,
//! normalisation, task, training state) and, for resumable runs, `optimizer.safetensors` (AdamW moments and, with
//! EMA, the raw weights) and, when an earlier evaluation on the val split scored better than the last one,
//! `best.safetensors` (the weights of that evaluation: what prediction, evaluation and fine-tuning use unless told
//! otherwise; `weights.safetensors` stays the last step's, which resuming continues from). Every file is written
//! atomically; the JSON last, so it never points at missing weights.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::data::Normalization;
use super::worker::{Objective, TrainConfig};
use crate::model::config::ModelConfig;
use crate::util::atomic::write_atomic;

pub const FORMAT: &str = "tessera-checkpoint";
pub const VERSION: u32 = 1;
pub const META_FILE: &str = "checkpoint.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const BEST_FILE: &str = "best.safetensors";

/// Which of a checkpoint's weights to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WeightsChoice {
    /// The weights of the best evaluation on the val split (the last step's where that was the best, or where the
    /// run had no val split).
    #[default]
    Best,
    /// The last step's weights (what a resumed run continues from).
    Last,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}: no checkpoint here (expected a directory with {META_FILE} and {WEIGHTS_FILE})")]
    Missing(PathBuf),
    #[error("{path}: not a Tessera checkpoint: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: written by a newer Tessera (checkpoint version {found}, this build reads up to {VERSION})")]
    Newer { path: PathBuf, found: u32 },
    #[error("{path}: weights are unreadable or corrupt: {reason}")]
    CorruptWeights { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Where a run stands, for exact resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub config: TrainConfig,
    /// Optimizer steps done.
    pub step: u64,
    pub total_steps: u64,
    pub optimizer_t: u64,
    pub elapsed_s: f64,
    pub best_metric: Option<f32>,
    pub evals_without_improvement: u32,
    pub has_ema: bool,
    /// Loss of every step so far (for the UI's curve after a resume).
    #[serde(default)]
    pub loss_history: Vec<f32>,
    /// The step whose val evaluation gave `best_metric`.
    #[serde(default)]
    pub best_step: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub version: u32,
    pub model: ModelConfig,
    /// The objective of the last training run (the head `predict` uses).
    pub task: Objective,
    pub class_names: Vec<String>,
    pub normalization: Normalization,
    /// Objectives these weights were trained on, in order (e.g. pretrain, then detect).
    #[serde(default)]
    pub history: Vec<Objective>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainState>,
}

/// The checkpoint directory for a path that is the directory or its `checkpoint.json`.
pub fn checkpoint_dir(path: &Path) -> PathBuf {
    if path.file_name().is_some_and(|n| n == META_FILE) {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        path.to_path_buf()
    }
}

pub fn read_meta(path: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let dir = checkpoint_dir(path);
    let file = dir.join(META_FILE);
    if !file.exists() {
        return Err(CheckpointError::Missing(dir));
    }
    let text = std::fs::read_to_string(&file).map_err(|source| CheckpointError::Io { path: file.clone(), source })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid { path: file.clone(), reason: e.to_string() })?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(CheckpointError::Invalid { path: file, reason: format!("missing \"format\": \"{FORMAT}\"") });
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    if version > VERSION {
        return Err(CheckpointError::Newer { path: file, found: version });
    }
    let meta: CheckpointMeta =
        serde_json::from_value(value).map_err(|e| CheckpointError::Invalid { path: file.clone(), reason: e.to_string() })?;
    meta.model.validate().map_err(|reason| CheckpointError::Invalid { path: file, reason })?;
    Ok(meta)
}

fn read_tensors(file: &Path, device: &Device) -> Result<HashMap<String, Tensor>, CheckpointError> {
    if !file.exists() {
        return Err(CheckpointError::Missing(file.to_path_buf()));
    }
    candle_core::safetensors::load(file, device)
        .map_err(|e| CheckpointError::CorruptWeights { path: file.to_path_buf(), reason: e.to_string() })
}

pub fn read_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, CheckpointError> {
    read_tensors(&checkpoint_dir(path).join(WEIGHTS_FILE), device)
}

/// The weights to predict with, evaluate or fine-tune from: `best.safetensors` where the run kept one and `choice`
/// asks for it, else the last step's.
pub fn read_model_weights(path: &Path, choice: WeightsChoice, device: &Device) -> Result<HashMap<String, Tensor>, CheckpointError> {
    let best = checkpoint_dir(path).join(BEST_FILE);
    match choice {
        WeightsChoice::Best if best.exists() => read_tensors(&best, device),
        _ => read_weights(path, device),
    }
}

pub fn read_optimizer(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, CheckpointError> {
    read_tensors(&checkpoint_dir(path).join(OPTIMIZER_FILE), device)
}

fn write_tensors(file: &Path, tensors: &[(String, Tensor)]) -> anyhow::Result<()> {
    let cpu: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?))).collect::<candle_core::Result<_>>()?;
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), None)?;
    write_atomic(file, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// Writes a checkpoint directory (created if needed). `best`: weights of an earlier, better evaluation, if any
/// (an existing best file is removed otherwise, so it never outlives the run that wrote it).
pub fn write(
    dir: &Path,
    meta: &CheckpointMeta,
    weights: &[(String, Tensor)],
    optimizer: Option<&[(String, Tensor)]>,
    best: Option<&[(String, Tensor)]>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    write_tensors(&dir.join(WEIGHTS_FILE), weights)?;
    for (file, tensors) in [(OPTIMIZER_FILE, optimizer), (BEST_FILE, best)] {
        match tensors {
            Some(t) => write_tensors(&dir.join(file), t)?,
            None => {
                let _ = std::fs::remove_file(dir.join(file));
            }
        }
    }
    let json = serde_json::to_vec_pretty(meta)?;
    write_atomic(&dir.join(META_FILE), &json).map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(META_FILE).display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_corrupt_checkpoints_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_meta(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no checkpoint here"), "{err}");
        std::fs::write(dir.path().join(META_FILE), "{\"name\": \"not ours\"}").unwrap();
        assert!(read_meta(dir.path()).unwrap_err().to_string().contains("not a Tessera checkpoint"));
        std::fs::write(dir.path().join(WEIGHTS_FILE), b"garbage").unwrap();
        let err = read_weights(dir.path(), &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let meta = CheckpointMeta {
            format: FORMAT.into(),
            version: VERSION,
            model: ModelConfig::preset("tiny").unwrap(),
            task: Objective::Classify,
            class_names: vec!["a".into()],
            normalization: Normalization::default(),
            history: vec![Objective::Classify],
            train: None,
        };
        let t = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        write(dir.path(), &meta, &[("w".into(), t)], None, None).unwrap();
        let back = read_meta(&dir.path().join(META_FILE)).unwrap();
        assert_eq!(back.class_names, meta.class_names);
        let w = read_weights(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(w["w"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0]);

        // Best weights: used by default, the last step's on request; a later write without them removes them.
        let last = Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap();
        let best = Tensor::new(&[5f32, 6.0], &Device::Cpu).unwrap();
        write(dir.path(), &meta, &[("w".into(), last)], None, Some(&[("w".into(), best)])).unwrap();
        let read = |choice| read_model_weights(dir.path(), choice, &Device::Cpu).unwrap()["w"].to_vec1::<f32>().unwrap();
        assert_eq!(read(WeightsChoice::Best), vec![5.0, 6.0]);
        assert_eq!(read(WeightsChoice::Last), vec![3.0, 4.0]);
        write(dir.path(), &meta, &[("w".into(), Tensor::new(&[7f32, 8.0], &Device::Cpu).unwrap())], None, None).unwrap();
        assert!(!dir.path().join(BEST_FILE).exists());
        assert_eq!(read(WeightsChoice::Best), vec![7.0, 8.0]);
    }

    /// A checkpoint written before the training-only dense head existed (the shipped demo detector was one) still
    /// loads for prediction; a checkpoint missing any other parameter is refused, naming it.
    #[test]
    fn checkpoints_without_training_only_parameters_still_predict() {
        let mut model = ModelConfig::preset("tiny").unwrap();
        model.n_classes = 2;
        let meta = CheckpointMeta {
            format: FORMAT.into(),
            version: VERSION,
            model: model.clone(),
            task: Objective::Detect,
            class_names: vec!["a".into(), "b".into()],
            normalization: Normalization::default(),
            history: vec![Objective::Detect],
            train: None,
        };
        let (_, vars, _) = crate::train::run::build_model(&model, None, true, 0, &Device::Cpu).unwrap();
        let without = |skip: &str| -> Vec<(String, Tensor)> {
            vars.iter().filter(|(n, _)| !n.starts_with(skip)).map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect()
        };
        let old = tempfile::tempdir().unwrap();
        write(old.path(), &meta, &without("dense_head."), None, None).unwrap();
        crate::model::predictor::Predictor::load(old.path()).unwrap();
        let broken = tempfile::tempdir().unwrap();
        write(broken.path(), &meta, &without("norm.weight"), None, None).unwrap();
        let err = crate::model::predictor::Predictor::load(broken.path()).err().expect("refused").to_string();
        assert!(err.contains("norm.weight"), "{err}");
    }
}
