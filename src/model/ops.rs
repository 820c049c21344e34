//! Fused CPU kernels that candle lacks a backward pass for: softmax over the last dimension.
//! candle_nn::ops::softmax_last_dim is fast but not differentiable; the composed candle_nn::ops::softmax is
//! differentiable but makes five passes. This op does one pass forward and a short tensor expression backward.
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "tessera-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("softmax: only f32 is supported on the CPU") };
        let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("softmax: input must be contiguous") };
        let src = &data[start..end];
        let dim = layout.dims()[layout.dims().len() - 1];
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(dim * 64.max(1)).zip(src.par_chunks(dim * 64)).for_each(|(o, s)| {
            for (o, s) in o.chunks_mut(dim).zip(s.chunks(dim)) {
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &x) in o.iter_mut().zip(s) {
                    *o = (x - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|o| *o *= inv);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        // d softmax: y * (g - sum(g * y))
        let gy = grad_res.mul(res)?;
        let s = gy.sum_keepdim(D::Minus1)?;
        Ok(Some(gy.sub(&res.broadcast_mul(&s)?)?))
    }
}

/// Softmax over the last dimension, differentiable, fused on the CPU.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return candle_nn::ops::softmax_last_dim(x);
    }
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// RMS normalisation with a learned gain; the fused kernel when no gradient is needed.
pub fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.track_op() && !gain.track_op() && x.is_contiguous() {
        return candle_nn::ops::rms_norm(x, gain, eps as f32);
    }
    let inv_rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv_rms)?.broadcast_mul(gain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn softmax_matches_candle_forward_and_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (3, 5, 7), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 5, 7), &dev).unwrap();
        let ours = softmax_last_dim(x.as_tensor()).unwrap();
        let reference = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        let diff = (&ours - &reference).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6, "{diff}");
        let g1 = ours.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = reference.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let d = (g1.get(&x).unwrap() - g2.get(&x).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
