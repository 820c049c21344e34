//! Where a model's parameters come from: fresh seeded initialisation (trainable `Var`s), or a checkpoint's tensors
//! (frozen for inference, or wrapped in `Var`s to fine-tune / resume). Seeded init is ours, not candle's thread RNG,
//! so that a run is reproducible from its seed.
use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

#[derive(Debug, Clone, Copy)]
pub enum Init {
    Normal(f64),
    Zeros,
    Ones,
}

pub struct ParamStore<'a> {
    device: Device,
    rng: StdRng,
    /// Weights to load; names missing here are initialised (e.g. a task head new to this checkpoint).
    source: Option<&'a HashMap<String, Tensor>>,
    /// Whether parameters become `Var`s (training) or stay plain tensors (inference).
    trainable: bool,
    pub vars: Vec<(String, Var)>,
    pub tensors: Vec<(String, Tensor)>,
    /// Names initialised fresh or grown while loading (reported to the user when fine-tuning).
    pub fresh: Vec<String>,
}

impl<'a> ParamStore<'a> {
    pub fn init(seed: u64, device: &Device) -> ParamStore<'static> {
        ParamStore {
            device: device.clone(),
            rng: StdRng::seed_from_u64(seed),
            source: None,
            trainable: true,
            vars: Vec::new(),
            tensors: Vec::new(),
            fresh: Vec::new(),
        }
    }

    pub fn load(source: &'a HashMap<String, Tensor>, trainable: bool, seed: u64, device: &Device) -> ParamStore<'a> {
        ParamStore { source: Some(source), trainable, ..ParamStore::init(seed, device) }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn make(&mut self, shape: &[usize], init: Init) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => {
                let d = Normal::new(0.0f32, std as f32).expect("valid std");
                (0..n).map(|_| d.sample(&mut self.rng)).collect()
            }
        };
        Tensor::from_vec(data, shape, &self.device)
    }

    /// Gets parameter `name`. A loaded tensor with fewer rows than asked for (a vocabulary that grew) keeps its rows
    /// and gets fresh ones appended; any other shape mismatch is an error naming the parameter.
    pub fn get(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        // Always draw from the RNG so that the init of later parameters does not depend on what was loaded.
        let fresh = self.make(shape, init)?;
        let t = match self.source.and_then(|s| s.get(name)) {
            None => {
                if self.source.is_some() {
                    self.fresh.push(name.to_string());
                }
                fresh
            }
            Some(saved) => {
                let saved = saved.to_dtype(DType::F32)?.to_device(&self.device)?;
                let sd = saved.dims();
                if sd == shape {
                    saved
                } else if sd.len() == shape.len() && sd[0] < shape[0] && sd[1..] == shape[1..] {
                    self.fresh.push(format!("{name} (grown {} -> {} rows)", sd[0], shape[0]));
                    Tensor::cat(&[&saved, &fresh.narrow(0, sd[0], shape[0] - sd[0])?], 0)?
                } else {
                    candle_core::bail!("checkpoint parameter {name} has shape {sd:?}, the model expects {shape:?}")
                }
            }
        };
        if self.trainable {
            let v = Var::from_tensor(&t)?;
            let t = v.as_tensor().clone();
            self.vars.push((name.to_string(), v));
            Ok(t)
        } else {
            self.tensors.push((name.to_string(), t.clone()));
            Ok(t)
        }
    }
}
