//! Fused CPU kernels with hand-written backward passes, drop-in replacements for composed candle expressions in the
//! transformer's hot path. Why: candle's autograd allocates a zero tensor and adds into it for every input of every
//! node, and every composed op is a full pass over memory; on the CPU the training step of the tiny preset spends
//! about three quarters of its time outside matmuls (profile in the speed report). Each op here is one pass
//! forward and one pass backward, with no gradient for constant inputs (the attention mask).
//!
//! | op                        | replaces                                                             |
//! |---------------------------|----------------------------------------------------------------------|
//! | [`masked_softmax`]        | `softmax_last_dim((scores * scale).broadcast_add(mask))`             |
//! | [`gelu`]                  | `Tensor::gelu` (tanh approximation, candle's formula)                |
//! | [`rms_norm`]              | `ops::rms_norm` while training (x · rsqrt(mean(x²) + eps) · gain)    |
//! | [`add_bias`]              | `y.broadcast_add(bias)` over the last dimension                      |
//!
//! Every op falls back to the composed candle expression off the CPU or for non-f32 inputs, so results are the
//! same everywhere; the tests check forward values and gradients against those expressions.
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows handed to one rayon task: enough work to amortise scheduling.
fn rows_per_task(row_len: usize) -> usize {
    (16 * 1024 / row_len.max(1)).max(1)
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{op}: only f32 is supported on the CPU") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{op}: input must be contiguous") };
    Ok(&data[start..end])
}

fn fused_ok(xs: &[&Tensor]) -> bool {
    xs.iter().all(|x| x.device().is_cpu() && x.dtype() == DType::F32)
}

// ---------------------------------------------------------------------------------------------------------------
// softmax(scale · x + mask) over the last dimension

struct MaskedSoftmax {
    scale: f32,
}

impl MaskedSoftmax {
    /// `mask`: additive `[rows_of_mask, n]`, repeated over the leading dimensions of `x` (as broadcast_add would).
    fn run(&self, src: &[f32], n: usize, mask: Option<(&[f32], usize)>) -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        let per_task = rows_per_task(n);
        out.par_chunks_mut(n * per_task).zip(src.par_chunks(n * per_task)).enumerate().for_each(|(task, (o, s))| {
            for (r, (o, s)) in o.chunks_mut(n).zip(s.chunks(n)).enumerate() {
                let row = task * per_task + r;
                let m = mask.map(|(m, mask_rows)| &m[(row % mask_rows) * n..(row % mask_rows + 1) * n]);
                let mut max = f32::NEG_INFINITY;
                for j in 0..n {
                    let v = s[j] * self.scale + m.map_or(0.0, |m| m[j]);
                    o[j] = v;
                    max = max.max(v);
                }
                let mut sum = 0f32;
                for v in o.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|v| *v *= inv);
            }
        });
        out
    }

    fn backward(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let _ = arg;
        res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad { scale: self.scale })
    }
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "tessera-scaled-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, "scaled softmax")?;
        let n = l.dims()[l.dims().len() - 1];
        Ok((CpuStorage::F32(self.run(src, n, None)), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.backward(arg, res, grad)?))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "tessera-scaled-masked-softmax"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(s1, l1, "masked softmax")?;
        let mask = f32_slice(s2, l2, "masked softmax")?;
        let n = l1.dims()[l1.dims().len() - 1];
        let (mask_rows, mask_n) = l2.shape().dims2()?;
        if mask_n != n || (src.len() / n) % mask_rows != 0 {
            candle_core::bail!("masked softmax: mask {:?} does not broadcast to {:?}", l2.dims(), l1.dims());
        }
        Ok((CpuStorage::F32(self.run(src, n, Some((mask, mask_rows)))), l1.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _mask: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The mask is a constant: no gradient (candle's broadcast_add would build and sum one).
        Ok((Some(self.backward(arg, res, grad)?), None))
    }
}

/// dx = scale · y ⊙ (g − Σ g ⊙ y), one pass per row.
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "tessera-softmax-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let n = l1.dims()[l1.dims().len() - 1];
        let mut out = vec![0f32; y.len()];
        let chunk = n * rows_per_task(n);
        out.par_chunks_mut(chunk).zip(y.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(|(o, (y, g))| {
            for (o, (y, g)) in o.chunks_mut(n).zip(y.chunks(n).zip(g.chunks(n))) {
                let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                for j in 0..n {
                    o[j] = self.scale * y[j] * (g[j] - dot);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `softmax(x · scale + mask)` over the last dimension, differentiable in `x`. `mask`: additive `[T, S]` (0 or
/// −∞) repeated over the leading dimensions of `x` `[.., T, S]`, as in the transformer's attention.
pub fn masked_softmax(x: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let op = MaskedSoftmax { scale: scale as f32 };
    let fused = fused_ok(&[x]) && mask.is_none_or(|m| fused_ok(&[m]) && m.rank() == 2);
    if !fused {
        let s = (x * scale)?;
        let s = match mask {
            Some(m) => s.broadcast_add(m)?,
            None => s,
        };
        return candle_nn::ops::softmax(&s, D::Minus1);
    }
    let x = x.contiguous()?;
    match mask {
        Some(m) => x.apply_op2(&m.contiguous()?, op),
        None => x.apply_op1(op),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// GELU, tanh approximation (candle's `gelu`)

const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "tessera-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, self.name())?;
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(16 * 1024).zip(src.par_chunks(16 * 1024)).for_each(|(o, s)| {
            for (o, &v) in o.iter_mut().zip(s) {
                *o = 0.5 * v * (1.0 + (SQRT_TWO_OVER_PI * v * (1.0 + GELU_C * v * v)).tanh());
            }
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad)?))
    }
}

/// g · d/dx gelu(x), one pass.
struct GeluGrad;

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "tessera-gelu-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(16 * 1024).zip(x.par_chunks(16 * 1024).zip(g.par_chunks(16 * 1024))).for_each(|(o, (x, g))| {
            for ((o, &v), &g) in o.iter_mut().zip(x).zip(g) {
                let t = (SQRT_TWO_OVER_PI * v * (1.0 + GELU_C * v * v)).tanh();
                let dt = SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
                *o = g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * dt);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// GELU with the tanh approximation (candle's `Tensor::gelu`), one fused pass forward and backward on the CPU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(&[x]) {
        return x.gelu();
    }
    x.contiguous()?.apply_op1(Gelu)
}

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm: y = x · rsqrt(mean(x²) + eps) · gain over the last dimension

struct RmsNorm {
    eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "tessera-rms-norm"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let gain = f32_slice(s2, l2, self.name())?;
        let d = gain.len();
        let mut out = vec![0f32; x.len()];
        let chunk = d * rows_per_task(d);
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                let inv = inv_rms(x, self.eps);
                for j in 0..d {
                    o[j] = x[j] * inv * gain[j];
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, gain: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let x = x.contiguous()?;
        let grad = grad.contiguous()?;
        let dx = x.apply_op3_no_bwd(gain, &grad, &RmsNormGradX { eps: self.eps })?;
        let dgain = x.apply_op2_no_bwd(&grad, &RmsNormGradGain { eps: self.eps })?;
        Ok((Some(dx), Some(dgain)))
    }
}

/// dx = inv · (g⊙gain − x̂ · mean(g⊙gain⊙x̂)), x̂ = x · inv.
struct RmsNormGradX {
    eps: f32,
}

impl CustomOp3 for RmsNormGradX {
    fn name(&self) -> &'static str {
        "tessera-rms-norm-grad-x"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let gain = f32_slice(s2, l2, self.name())?;
        let g = f32_slice(s3, l3, self.name())?;
        let d = gain.len();
        let mut out = vec![0f32; x.len()];
        let chunk = d * rows_per_task(d);
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(|(o, (x, g))| {
            for (o, (x, g)) in o.chunks_mut(d).zip(x.chunks(d).zip(g.chunks(d))) {
                let inv = inv_rms(x, self.eps);
                let dot: f32 = (0..d).map(|j| g[j] * gain[j] * x[j]).sum::<f32>() * inv / d as f32;
                for j in 0..d {
                    o[j] = inv * (g[j] * gain[j] - x[j] * inv * dot);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// dgain = Σ_rows g ⊙ x̂.
struct RmsNormGradGain {
    eps: f32,
}

impl CustomOp2 for RmsNormGradGain {
    fn name(&self) -> &'static str {
        "tessera-rms-norm-grad-gain"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, self.name())?;
        let g = f32_slice(s2, l2, self.name())?;
        let d = l1.dims()[l1.dims().len() - 1];
        let chunk = d * rows_per_task(d);
        let acc = x
            .par_chunks(chunk)
            .zip(g.par_chunks(chunk))
            .map(|(x, g)| {
                let mut acc = vec![0f32; d];
                for (x, g) in x.chunks(d).zip(g.chunks(d)) {
                    let inv = inv_rms(x, self.eps);
                    for j in 0..d {
                        acc[j] += g[j] * x[j] * inv;
                    }
                }
                acc
            })
            .reduce(|| vec![0f32; d], |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            });
        Ok((CpuStorage::F32(acc), Shape::from(d)))
    }
}

/// RMS normalisation with a learned gain over the last dimension; fused forward and backward on the CPU.
pub fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_ok(&[x, gain]) {
        return super::ops::rms_norm(x, gain, eps);
    }
    x.contiguous()?.apply_op2(&gain.contiguous()?, RmsNorm { eps: eps as f32 })
}

// ---------------------------------------------------------------------------------------------------------------
// y + bias over the last dimension

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "tessera-add-bias"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(s1, l1, self.name())?;
        let b = f32_slice(s2, l2, self.name())?;
        let n = b.len();
        let mut out = y.to_vec();
        out.par_chunks_mut(n * rows_per_task(n)).for_each(|o| {
            for row in o.chunks_mut(n) {
                row.iter_mut().zip(b).for_each(|(o, b)| *o += b);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(&self, _y: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // dy is the incoming gradient itself (no copy); dbias is its column sums.
        let grad = grad.contiguous()?;
        let db = grad.apply_op1_no_bwd(&ColumnSums)?;
        Ok((Some(grad), Some(db)))
    }
}

struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "tessera-column-sums"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l, self.name())?;
        let n = l.dims()[l.dims().len() - 1];
        let acc = g
            .par_chunks(n * rows_per_task(n))
            .map(|g| {
                let mut acc = vec![0f32; n];
                for row in g.chunks(n) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                acc
            })
            .reduce(|| vec![0f32; n], |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            });
        Ok((CpuStorage::F32(acc), Shape::from(n)))
    }
}

/// `y.broadcast_add(bias)` for `bias` `[n]` over the last dimension of `y`; the backward passes the gradient
/// through untouched and sums it into the bias in one pass.
pub fn add_bias(y: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if !fused_ok(&[y, bias]) || bias.rank() != 1 {
        return y.broadcast_add(bias);
    }
    y.contiguous()?.apply_op2(&bias.contiguous()?, AddBias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::transformer::prefix_mask;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Checks `fast(x, p)` against `reference(x, p)`: values, and gradients of a random projection of the output
    /// with respect to every variable.
    fn check(
        shapes: &[&[usize]],
        fast: impl Fn(&[Tensor]) -> Tensor,
        reference: impl Fn(&[Tensor]) -> Tensor,
        tol: f32,
    ) {
        let dev = Device::Cpu;
        let vars: Vec<Var> = shapes.iter().map(|s| Var::from_tensor(&Tensor::randn(0f32, 1.5, *s, &dev).unwrap()).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (fast(&ts), reference(&ts));
        assert_eq!(a.dims(), b.dims());
        assert!(max_diff(&a, &b) < tol, "forward differs by {}", max_diff(&a, &b));
        let w = Tensor::randn(0f32, 1.0, a.dims(), &dev).unwrap();
        let ga = (&a * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v).expect("fast grad"), gb.get(v).expect("reference grad"));
            assert_eq!(x.dims(), y.dims());
            let scale = y.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap().max(1.0);
            assert!(max_diff(x, y) / scale < tol, "gradient {i} differs by {}", max_diff(x, y));
        }
    }

    #[test]
    fn masked_softmax_matches_composed_ops() {
        let dev = Device::Cpu;
        let (t, prefix) = (9, 5);
        let mask = prefix_mask(t, prefix, &dev).unwrap();
        let m = mask.clone();
        check(
            &[&[2, 3, t, t]],
            |x| masked_softmax(&x[0], Some(&mask), 0.35).unwrap(),
            |x| candle_nn::ops::softmax(&(&x[0] * 0.35).unwrap().broadcast_add(&m).unwrap(), D::Minus1).unwrap(),
            1e-5,
        );
        // Masked entries are exactly zero; rows sum to one.
        let x = Tensor::randn(0f32, 1.0, (1, 1, t, t), &dev).unwrap();
        let y = masked_softmax(&x, Some(&mask), 1.0).unwrap();
        assert_eq!(y.get(0).unwrap().get(0).unwrap().get(0).unwrap().get(t - 1).unwrap().to_scalar::<f32>().unwrap(), 0.0);
        let sums = y.sum_keepdim(D::Minus1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
        // No mask: plain scaled softmax (the KV-cache decoding path).
        check(
            &[&[4, 1, 7]],
            |x| masked_softmax(&x[0], None, 0.5).unwrap(),
            |x| candle_nn::ops::softmax(&(&x[0] * 0.5).unwrap(), D::Minus1).unwrap(),
            1e-5,
        );
    }

    #[test]
    fn gelu_matches_candle() {
        check(&[&[3, 5, 300]], |x| gelu(&x[0]).unwrap(), |x| x[0].gelu().unwrap(), 1e-5);
    }

    #[test]
    fn rms_norm_matches_composed_ops() {
        check(
            &[&[2, 7, 24], &[24]],
            |x| rms_norm(&x[0], &x[1], 1e-5).unwrap(),
            |x| super::super::ops::rms_norm(&x[0], &x[1], 1e-5).unwrap(),
            1e-5,
        );
    }

    #[test]
    fn add_bias_matches_broadcast_add() {
        check(
            &[&[3, 4, 10], &[10]],
            |x| add_bias(&x[0], &x[1]).unwrap(),
            |x| x[0].broadcast_add(&x[1]).unwrap(),
            1e-5,
        );
    }
}
