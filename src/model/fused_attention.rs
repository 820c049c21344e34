//! Multi-head attention as one CPU op with its own backward pass, for training and full-sequence inference.
//!
//! Input: the qkv projection's output `[B, T, 3C]` (q | k | v, heads side by side inside each); output `[B, T, C]`
//! (heads side by side, ready for the output projection). Each (batch, head) pair is one parallel task that runs its
//! small matrix products single-threaded straight on the strided rows of the packed input — no head split/merge
//! copies, no `[B, H, T, T]` probabilities kept for the backward pass (they are recomputed, as in FlashAttention),
//! and no zero-padded gradients for the q/k/v slices (the backward writes dq, dk, dv into one `[B, T, 3C]` tensor).
//!
//! In the composed version the same step was ~20 graph nodes per layer: reshape, permute, three narrows (whose
//! gradients are zero-padded to the full qkv size and summed), contiguous copies, two batched matmuls that each run
//! B·H tiny products one after the other with every thread joining each, the softmax, transposes back.
//!
//! The KV-cache decoder and the attention-map viewer (which needs the probabilities) use the composed path.
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::ops::{fast_exp, lane_dot, lane_max, lane_sum};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// A raw pointer that parallel tasks share; each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// A strided `rows × cols` matrix view for gemm: element (r, c) at `ptr + r·row_stride + c·col_stride`.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    row_stride: isize,
    col_stride: isize,
}

impl View {
    /// The transposed view (no data moves).
    fn t(self) -> View {
        View { ptr: self.ptr, row_stride: self.col_stride, col_stride: self.row_stride }
    }
}

/// dst (m × n, rows `dst_row_stride` apart) = lhs (m × k) · rhs (k × n), single-threaded.
///
/// SAFETY: the views must cover m × k, k × n and m × n valid elements; dst must not alias lhs or rhs.
unsafe fn matmul(m: usize, n: usize, k: usize, dst: *mut f32, dst_row_stride: isize, lhs: View, rhs: View) {
    gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_row_stride,
        false,
        lhs.ptr,
        lhs.col_stride,
        lhs.row_stride,
        rhs.ptr,
        rhs.col_stride,
        rhs.row_stride,
        0.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    )
}

struct FusedAttention {
    n_heads: usize,
    scale: f32,
    /// Prefix-causal mask: row i sees columns < max(i + 1, prefix); `None` = no mask.
    prefix: Option<usize>,
}

/// Shapes of one call: batch, tokens, model width, head width.
struct Dims {
    b: usize,
    t: usize,
    c: usize,
    d: usize,
}

impl FusedAttention {
    fn dims(&self, layout: &Layout) -> Result<Dims> {
        let (b, t, c3) = layout.shape().dims3()?;
        if c3 % (3 * self.n_heads) != 0 {
            candle_core::bail!("fused attention: last dim {c3} is not 3 × heads × head width");
        }
        let c = c3 / 3;
        Ok(Dims { b, t, c, d: c / self.n_heads })
    }

    /// Columns visible to query row `i` of `t`.
    fn visible(&self, i: usize, t: usize) -> usize {
        match self.prefix {
            None => t,
            Some(p) => (i + 1).max(p).min(t),
        }
    }

    /// Views of q, k, v of (batch `bi`, head `hi`) inside the packed input.
    fn qkv_views(&self, qkv: *const f32, dims: &Dims, bi: usize, hi: usize) -> [View; 3] {
        let row = (3 * dims.c) as isize;
        let base = bi * dims.t * 3 * dims.c + hi * dims.d;
        [0, 1, 2].map(|part| View { ptr: unsafe { qkv.add(base + part * dims.c) }, row_stride: row, col_stride: 1 })
    }

    /// probs (t × t) = masked softmax(scale · q kᵀ); masked entries are 0.
    fn probabilities(&self, q: View, k: View, t: usize, d: usize, probs: &mut [f32]) {
        unsafe { matmul(t, t, d, probs.as_mut_ptr(), t as isize, q, k.t()) };
        for (i, row) in probs.chunks_mut(t).enumerate() {
            let visible = self.visible(i, t);
            let (seen, hidden) = row.split_at_mut(visible);
            let max = lane_max(seen);
            for x in seen.iter_mut() {
                *x = fast_exp((*x - max) * self.scale);
            }
            let inv = 1.0 / lane_sum(seen);
            seen.iter_mut().for_each(|x| *x *= inv);
            hidden.fill(0.0);
        }
    }
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("fused attention: only f32 is supported") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("fused attention: input must be contiguous") };
    Ok(&data[start..end])
}

impl CustomOp1 for FusedAttention {
    fn name(&self) -> &'static str {
        "tessera-fused-attention"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(storage, layout)?;
        let dims = self.dims(layout)?;
        let Dims { b, t, c, d } = dims;
        let mut out = vec![0f32; b * t * c];
        let out_ptr = SharedMut(out.as_mut_ptr());
        (0..b * self.n_heads).into_par_iter().for_each_init(
            || vec![0f32; t * t],
            |probs, task| {
                let (bi, hi) = (task / self.n_heads, task % self.n_heads);
                let [q, k, v] = self.qkv_views(qkv.as_ptr(), &dims, bi, hi);
                self.probabilities(q, k, t, d, probs);
                let p = View { ptr: probs.as_ptr(), row_stride: t as isize, col_stride: 1 };
                let out_ptr = out_ptr;
                // y[bi, :, head columns] = P · V; tasks write disjoint (row, column) blocks.
                unsafe { matmul(t, d, t, out_ptr.0.add(bi * t * c + hi * d), c as isize, p, v) };
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, t, c))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let arg = arg.contiguous()?;
        let grad_res = grad_res.contiguous()?;
        let (qkv_storage, qkv_layout) = arg.storage_and_layout();
        let (dy_storage, dy_layout) = grad_res.storage_and_layout();
        let (candle_core::Storage::Cpu(qkv_storage), candle_core::Storage::Cpu(dy_storage)) = (&*qkv_storage, &*dy_storage) else {
            candle_core::bail!("fused attention: CPU tensors expected")
        };
        let qkv = contiguous_f32(qkv_storage, qkv_layout)?;
        let dy = contiguous_f32(dy_storage, dy_layout)?;
        let dims = self.dims(qkv_layout)?;
        let Dims { b, t, c, d } = dims;
        let mut dqkv = vec![0f32; b * t * 3 * c];
        let dqkv_ptr = SharedMut(dqkv.as_mut_ptr());
        (0..b * self.n_heads).into_par_iter().for_each_init(
            || (vec![0f32; t * t], vec![0f32; t * t]),
            |(probs, dprobs), task| {
                let (bi, hi) = (task / self.n_heads, task % self.n_heads);
                let [q, k, v] = self.qkv_views(qkv.as_ptr(), &dims, bi, hi);
                let dy = View { ptr: unsafe { dy.as_ptr().add(bi * t * c + hi * d) }, row_stride: c as isize, col_stride: 1 };
                self.probabilities(q, k, t, d, probs);
                let p = View { ptr: probs.as_ptr(), row_stride: t as isize, col_stride: 1 };
                let dqkv_ptr = dqkv_ptr;
                let (dq, dk, dv) = unsafe {
                    let base = dqkv_ptr.0.add(bi * t * 3 * c + hi * d);
                    (base, base.add(c), base.add(2 * c))
                };
                let row3 = (3 * c) as isize;
                unsafe {
                    // dV = Pᵀ · dY
                    matmul(t, d, t, dv, row3, p.t(), dy);
                    // dP = dY · Vᵀ
                    matmul(t, t, d, dprobs.as_mut_ptr(), t as isize, dy, v.t());
                }
                // dS = scale · P ⊙ (dP − Σⱼ dP ⊙ P) (the softmax backward; masked entries have P = 0).
                for (p_row, dp_row) in probs.chunks(t).zip(dprobs.chunks_mut(t)) {
                    let dot = lane_dot(p_row, dp_row);
                    for (dp, &p) in dp_row.iter_mut().zip(p_row) {
                        *dp = self.scale * p * (*dp - dot);
                    }
                }
                let ds = View { ptr: dprobs.as_ptr(), row_stride: t as isize, col_stride: 1 };
                unsafe {
                    // dQ = dS · K, dK = dSᵀ · Q
                    matmul(t, d, t, dq, row3, ds, k);
                    matmul(t, d, t, dk, row3, ds.t(), q);
                }
            },
        );
        Ok(Some(Tensor::from_vec(dqkv, arg.shape(), arg.device())?))
    }
}

/// Attention of `n_heads` heads over the packed qkv projection `[B, T, 3C]` → `[B, T, C]`, with the prefix-causal
/// mask (`prefix = None`: none). CPU and f32 only: the caller falls back to the composed ops elsewhere.
pub fn fused_attention(qkv: &Tensor, n_heads: usize, scale: f64, prefix: Option<usize>) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(FusedAttention { n_heads, scale: scale as f32, prefix })
}

/// Whether [`fused_attention`] runs on this tensor. `TESSERA_ATTENTION=composed` turns it off (before/after
/// measurements, e.g. `TESSERA_ATTENTION=composed tessera bench train`).
pub fn supported(x: &Tensor) -> bool {
    static COMPOSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let composed = *COMPOSED.get_or_init(|| std::env::var("TESSERA_ATTENTION").is_ok_and(|v| v == "composed"));
    !composed && x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::masked_softmax;
    use candle_core::{Device, Var, D};

    /// The composed reference: split heads, masked softmax, merge heads.
    fn composed(qkv: &Tensor, h: usize, scale: f64, prefix: Option<usize>) -> Tensor {
        let (b, t, c3) = qkv.dims3().unwrap();
        let c = c3 / 3;
        let parts = qkv.reshape((b, t, 3, h, c / h)).unwrap().permute((2, 0, 3, 1, 4)).unwrap();
        let q = parts.get(0).unwrap().contiguous().unwrap();
        let k = parts.get(1).unwrap().contiguous().unwrap();
        let v = parts.get(2).unwrap().contiguous().unwrap();
        let probs = masked_softmax(&q.matmul(&k.t().unwrap()).unwrap(), scale, prefix, 0).unwrap();
        probs.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((b, t, c)).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(D::Minus1).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn matches_the_composed_attention_and_its_gradients() {
        let dev = Device::Cpu;
        for (prefix, t) in [(Some(5), 9), (None, 7), (Some(1), 6), (Some(12), 12)] {
            let (b, h, c) = (3, 4, 32);
            let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, 3 * c), &dev).unwrap()).unwrap();
            // A fixed random weighting of the outputs, so the gradient is not uniform.
            let w = Tensor::randn(0f32, 1.0, (b, t, c), &dev).unwrap();
            let scale = 1.0 / ((c / h) as f64).sqrt();

            let fused = fused_attention(qkv.as_tensor(), h, scale, prefix).unwrap();
            let reference = composed(qkv.as_tensor(), h, scale, prefix);
            assert!(max_diff(&fused, &reference) < 1e-5, "forward, prefix {prefix:?}");

            let g_fused = (fused * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g_ref = (reference * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (gf, gr) = (g_fused.get(qkv.as_tensor()).unwrap(), g_ref.get(qkv.as_tensor()).unwrap());
            assert!(max_diff(gf, gr) < 1e-4, "gradient, prefix {prefix:?}: {}", max_diff(gf, gr));
        }
    }

    #[test]
    fn later_tokens_do_not_change_earlier_outputs_after_the_prefix() {
        // Causality: with prefix 3, changing token 5 must leave the outputs of tokens 0..5 unchanged.
        let dev = Device::Cpu;
        let (t, c) = (8, 16);
        let a = Tensor::randn(0f32, 1.0, (1, t, 3 * c), &dev).unwrap();
        let mut values = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for x in &mut values[5 * 3 * c..6 * 3 * c] {
            *x += 1.0;
        }
        let b = Tensor::from_vec(values, (1, t, 3 * c), &dev).unwrap();
        let ya = fused_attention(&a, 2, 0.5, Some(3)).unwrap();
        let yb = fused_attention(&b, 2, 0.5, Some(3)).unwrap();
        assert!(max_diff(&ya.narrow(1, 0, 5).unwrap(), &yb.narrow(1, 0, 5).unwrap()) < 1e-6);
        assert!(max_diff(&ya.narrow(1, 5, 1).unwrap(), &yb.narrow(1, 5, 1).unwrap()) > 1e-3);
    }
}
