//! The teacher behind next-patch prediction's feature target (`ModelConfig::pretrain_feature_weight`): a copy of
//! the model whose weights follow the trained ones as an exponential moving average (data2vec, BYOL). Its targets
//! move slowly, so the model cannot chase them into a trivial answer within a few steps.
use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};

use super::optim::warmed_up_decay;
use super::run::build_model;
use crate::model::config::ModelConfig;
use crate::model::transformer::Transformer;

pub struct Teacher {
    pub model: Transformer,
    /// The teacher's weights: `Var`s only so that [`Teacher::update`] can overwrite them in place (the model above
    /// holds the same storage); no gradient is ever taken through them.
    vars: Vec<(String, Var)>,
}

impl Teacher {
    /// Per-step decay of the moving average: the teacher lags the model by about a thousand steps (data2vec uses
    /// 0.999 to 0.9999 over runs of 100 000+ steps; ours are 20 000–30 000).
    pub const DECAY: f64 = 0.999;

    /// A teacher starting as a copy of the `student`'s current weights (a resumed run's teacher starts over from
    /// the resumed weights: checkpoints do not keep it).
    pub fn new(cfg: &ModelConfig, student: &[(String, Var)], device: &Device) -> anyhow::Result<Teacher> {
        let weights: HashMap<String, Tensor> =
            student.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?))).collect::<candle_core::Result<_>>()?;
        let (model, vars, _) = build_model(cfg, Some(&weights), true, 0, device)?;
        anyhow::ensure!(vars.iter().map(|(n, _)| n).eq(student.iter().map(|(n, _)| n)), "the teacher's parameters differ from the model's");
        Ok(Teacher { model, vars })
    }

    /// Moves the teacher's weights towards the `student`'s after optimizer step `step`, with the decay warmed up
    /// as for `--ema` so that the random init does not linger in short runs.
    pub fn update(&mut self, student: &[(String, Var)], step: u64) -> candle_core::Result<()> {
        let d = warmed_up_decay(Teacher::DECAY, step);
        for ((_, t), (_, s)) in self.vars.iter().zip(student) {
            t.set(&((t.as_tensor().detach() * d)? + (s.as_tensor().detach() * (1.0 - d))?)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The teacher starts as the model, then moves a thousandth of the way towards it per step (once the decay
    /// has warmed up), through the same storage its model reads; the model's own weights are left alone.
    #[test]
    fn the_teacher_starts_as_the_model_and_follows_it_slowly() {
        let mut cfg = ModelConfig::preset("tiny").unwrap().with_image_size(32);
        (cfg.n_layers, cfg.dim, cfg.pretrain_feature_weight) = (2, 32, 1.0);
        let dev = Device::Cpu;
        let (student, vars, _) = build_model(&cfg, None, true, 1, &dev).unwrap();
        let mut teacher = Teacher::new(&cfg, &vars, &dev).unwrap();
        let patches = Tensor::randn(0f32, 1.0, (2, cfg.n_patches(), cfg.patch_dim()), &dev).unwrap();
        let out = |m: &Transformer| m.forward(Some(&patches), None, None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(out(&student), out(&teacher.model));

        let before: Vec<Tensor> = teacher.vars.iter().map(|(_, v)| v.as_tensor().copy().unwrap()).collect();
        for (_, v) in &vars {
            v.set(&v.as_tensor().zeros_like().unwrap()).unwrap();
        }
        teacher.update(&vars, 1_000_000).unwrap();
        for ((name, t), old) in teacher.vars.iter().zip(&before) {
            let want = (old * Teacher::DECAY).unwrap();
            let diff = (t.as_tensor() - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 1e-6, "{name}: {diff}");
        }
        assert_ne!(out(&teacher.model), out(&student), "the teacher's model reads the updated weights");
        let student_sum: f32 = vars.iter().map(|(_, v)| v.as_tensor().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).sum();
        assert_eq!(student_sum, 0.0);
    }
}
