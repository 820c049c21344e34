//! AdamW with inspectable state (so a checkpoint can hold the moments for exact resume), the learning-rate
//! schedule (linear warm-up, cosine decay), global-norm gradient clipping and an EMA of the weights.
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

pub struct AdamW {
    /// (name, parameter, first moment, second moment)
    params: Vec<(String, Var, Tensor, Tensor)>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Optimizer steps taken (bias correction).
    pub t: u64,
    /// Per-parameter multiplier of the learning rate (1 unless [`Self::set_layer_decay`] set it).
    lr_scale: Vec<f64>,
}

/// Layer-wise learning-rate decay for fine-tuning (BEiT, MAE): the top keeps the full rate, each block below gets
/// `decay` times the one above it, the patch embedding and positions `decay^(layers + 1)`. Pretrained low layers
/// then move little while the new task token, class tokens and heads learn at the full rate.
pub fn layer_lr_scale(name: &str, n_layers: usize, decay: f64) -> f64 {
    if let Some(layer) = crate::model::transformer::block_of(name) {
        return decay.powi((n_layers - layer.min(n_layers)) as i32);
    }
    if name.starts_with("patch_embed") || name == "patch_pos" {
        return decay.powi(n_layers as i32 + 1);
    }
    1.0
}

impl AdamW {
    pub fn new(vars: &[(String, Var)], weight_decay: f64) -> Result<AdamW> {
        let params = vars
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.clone(), v.zeros_like()?, v.zeros_like()?)))
            .collect::<Result<_>>()?;
        let lr_scale = vec![1.0; vars.len()];
        Ok(AdamW { params, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay, t: 0, lr_scale })
    }

    /// Scales each parameter's learning rate by [`layer_lr_scale`].
    pub fn set_layer_decay(&mut self, n_layers: usize, decay: f64) {
        self.lr_scale = self.params.iter().map(|(n, ..)| layer_lr_scale(n, n_layers, decay)).collect();
    }

    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|(n, v, _, _)| (n.as_str(), v))
    }

    /// One update with learning rate `lr`; gradients are multiplied by `grad_scale` first (clipping / accumulation).
    /// Weight decay applies to matrices only (not gains, biases).
    pub fn step(&mut self, grads: &HashMap<String, Tensor>, lr: f64, grad_scale: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        for ((name, var, m, v), scale) in self.params.iter_mut().zip(&self.lr_scale) {
            let Some(g) = grads.get(name.as_str()) else { continue };
            let lr = lr * scale;
            let g = if grad_scale != 1.0 { (g * grad_scale)? } else { g.clone() };
            *m = ((&*m * b1)? + (&g * (1.0 - b1))?)?;
            *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&*m / bc1)? / ((&*v / bc2)?.sqrt()? + self.eps)?)?;
            let decay = if var.rank() >= 2 { lr * self.weight_decay } else { 0.0 };
            let w = var.as_tensor();
            let next = ((w * (1.0 - decay))? - (update * lr)?)?;
            var.set(&next)?;
        }
        Ok(())
    }

    /// Moments for the checkpoint, as `m.<name>` / `v.<name>`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 2);
        for (n, _, m, v) in &self.params {
            out.push((format!("m.{n}"), m.clone()));
            out.push((format!("v.{n}"), v.clone()));
        }
        out
    }

    /// Restores the moments written by [`Self::state_tensors`]; parameters whose shape changed keep zero moments.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        self.t = t;
        for (n, var, m, v) in self.params.iter_mut() {
            if let (Some(sm), Some(sv)) = (state.get(&format!("m.{n}")), state.get(&format!("v.{n}"))) {
                if sm.dims() == var.dims() && sv.dims() == var.dims() {
                    *m = sm.to_device(var.device())?;
                    *v = sv.to_device(var.device())?;
                }
            }
        }
        Ok(())
    }
}

/// Gradients of the named parameters from a backward pass.
pub fn collect_grads(store: &GradStore, vars: &[(String, Var)]) -> HashMap<String, Tensor> {
    vars.iter().filter_map(|(n, v)| store.get(v).map(|g| (n.clone(), g.clone()))).collect()
}

/// Adds `more` into `acc` (gradient accumulation).
pub fn accumulate(acc: &mut HashMap<String, Tensor>, more: HashMap<String, Tensor>) -> Result<()> {
    for (n, g) in more {
        match acc.get_mut(&n) {
            Some(a) => *a = (&*a + &g)?,
            None => {
                acc.insert(n, g);
            }
        }
    }
    Ok(())
}

/// Global L2 norm of all gradients.
pub fn global_norm(grads: &HashMap<String, Tensor>) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.values() {
        total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

/// Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak * final_fraction` at `total`.
pub fn learning_rate(step: u64, total: u64, warmup: u64, peak: f64, final_fraction: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step.saturating_sub(warmup)) as f64 / span).clamp(0.0, 1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (final_fraction + (1.0 - final_fraction) * cosine)
}

/// A moving average's decay after optimizer step `step`: warmed up from 0.1 so that early weights (the random
/// init) do not dominate short runs.
pub fn warmed_up_decay(decay: f64, step: u64) -> f64 {
    decay.min((1.0 + step as f64) / (10.0 + step as f64))
}

/// Exponential moving average of the weights.
pub struct Ema {
    pub decay: f64,
    pub shadow: Vec<(String, Tensor)>,
}

impl Ema {
    pub fn new(vars: &[(String, Var)], decay: f64) -> Result<Ema> {
        let shadow = vars.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?))).collect::<Result<_>>()?;
        Ok(Ema { decay, shadow })
    }

    pub fn update(&mut self, vars: &[(String, Var)], step: u64) -> Result<()> {
        let d = warmed_up_decay(self.decay, step);
        for ((_, s), (_, v)) in self.shadow.iter_mut().zip(vars) {
            *s = ((&*s * d)? + (v.as_tensor().detach() * (1.0 - d))?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        assert!(learning_rate(0, 100, 10, 1.0, 0.1) < 0.2);
        assert!((learning_rate(9, 100, 10, 1.0, 0.1) - 1.0).abs() < 1e-9);
        assert!((learning_rate(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-9);
        assert!(learning_rate(50, 100, 10, 1.0, 0.1) < learning_rate(20, 100, 10, 1.0, 0.1));
    }

    #[test]
    fn adamw_minimises_a_quadratic() {
        let dev = candle_core::Device::Cpu;
        let x = Var::from_tensor(&Tensor::new(&[3f32, -2.0], &dev).unwrap()).unwrap();
        let vars = vec![("x".to_string(), x.clone())];
        let mut opt = AdamW::new(&vars, 0.0).unwrap();
        for _ in 0..300 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = collect_grads(&loss.backward().unwrap(), &vars);
            opt.step(&grads, 0.05, 1.0).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");
    }

    #[test]
    fn layer_decay_scales_each_parameters_step() {
        assert_eq!(layer_lr_scale("blocks.3.attn.qkv.weight", 4, 0.5), 0.5);
        assert_eq!(layer_lr_scale("blocks.0.mlp.fc1.weight", 4, 0.5), 0.0625);
        assert_eq!(layer_lr_scale("patch_embed.weight", 4, 0.5), 0.03125);
        assert_eq!(layer_lr_scale("token_head.weight", 4, 0.5), 1.0);
        // One AdamW step moves each parameter by about lr × its scale (Adam's first step has unit size).
        let dev = candle_core::Device::Cpu;
        let top = Var::from_tensor(&Tensor::new(&[1f32], &dev).unwrap()).unwrap();
        let low = Var::from_tensor(&Tensor::new(&[1f32], &dev).unwrap()).unwrap();
        let vars = vec![("token_head.bias".to_string(), top.clone()), ("blocks.0.norm1.weight".to_string(), low.clone())];
        let mut opt = AdamW::new(&vars, 0.0).unwrap();
        opt.set_layer_decay(2, 0.5);
        let loss = (top.as_tensor() + low.as_tensor()).unwrap().sum_all().unwrap();
        opt.step(&collect_grads(&loss.backward().unwrap(), &vars), 0.1, 1.0).unwrap();
        let moved = |v: &Var| 1.0 - v.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((moved(&top) - 0.1).abs() < 1e-4, "{}", moved(&top));
        assert!((moved(&low) - 0.025).abs() < 1e-4, "{}", moved(&low));
    }
}
