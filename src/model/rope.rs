//! Rotary position embedding as HF applies it: the two halves of each head are rotated
//! against each other (`rotate_half`), not interleaved pairs as burn's `RotaryEncoding` does.
//!
//! Angles are computed per call from explicit position ids, so a left-padded row, a row that
//! continues a cached prefix and a training batch all take the same path. The inverse
//! frequencies follow transformers' `_compute_default_rope_parameters` and
//! `_compute_llama3_parameters` (computed in f32 as there).

use burn::prelude::*;
use burn::tensor::DType;

use super::config::{DecoderConfig, Llama3Scaling};

/// The inverse frequencies of one head (`head_dim / 2` values). Plain data, not a parameter.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(config: &DecoderConfig) -> Self {
        let dim = config.head_dim;
        let base = config.rope_theta as f32;
        let mut inv_freq: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32))
            .collect();
        if let Some(scaling) = config.rope_llama3 {
            llama3_scale(&mut inv_freq, &scaling);
        }
        Self { inv_freq }
    }

    /// The rotation tables of one forward pass, shared by every layer.
    ///
    /// # Shapes
    /// - `positions`: `[b, t]`
    pub fn tables<B: Backend>(
        &self,
        positions: Tensor<B, 2, Int>,
        num_heads: usize,
        num_kv_heads: usize,
        dtype: DType,
    ) -> RotaryTables<B> {
        let device = positions.device();
        let half = self.inv_freq.len();
        let inv_freq = Tensor::<B, 1>::from_data(
            TensorData::new(self.inv_freq.clone(), [half]),
            (&device, DType::F32),
        )
        .reshape([1, 1, 1, half]);
        let [b, t] = positions.dims();
        let positions = positions.float().cast(DType::F32).reshape([b, t, 1, 1]);
        // Full-size, contiguous tables: flex multiplies equal shapes much faster than it
        // broadcasts, and the tables are reused by every layer.
        let table = |heads: usize| {
            let freqs = positions.clone().expand([b, t, heads, 1]) * inv_freq.clone(); // [b, t, heads, d/2]
            let cos = freqs.clone().cos();
            let sin = freqs.sin();
            (
                Tensor::cat(vec![cos.clone(), cos], 3).cast(dtype), // [b, t, heads, d]
                // `rotate_half`'s sign folded in: cat(-x2, x1) * sin == cat(x2, x1) * cat(-sin, sin)
                Tensor::cat(vec![sin.clone().neg(), sin], 3).cast(dtype),
            )
        };
        let (cos_q, sin_q) = table(num_heads);
        let (cos_k, sin_k) = match num_kv_heads == num_heads {
            true => (cos_q.clone(), sin_q.clone()),
            false => table(num_kv_heads),
        };
        RotaryTables {
            cos_q,
            sin_q,
            cos_k,
            sin_k,
        }
    }
}

/// `cos` and signed `sin` of every position's angles, for queries (`[b, t, heads, d]`) and
/// keys (`[b, t, kv_heads, d]`); halves repeated as HF's `cat(freqs, freqs)`.
#[derive(Debug, Clone)]
pub struct RotaryTables<B: Backend> {
    cos_q: Tensor<B, 4>,
    sin_q: Tensor<B, 4>,
    cos_k: Tensor<B, 4>,
    sin_k: Tensor<B, 4>,
}

impl<B: Backend> RotaryTables<B> {
    /// # Shapes
    /// - `q`: `[b, t, heads, d]`
    pub fn rotate_q(&self, q: Tensor<B, 4>) -> Tensor<B, 4> {
        rotate(q, self.cos_q.clone(), self.sin_q.clone())
    }

    /// # Shapes
    /// - `k`: `[b, t, kv_heads, d]`
    pub fn rotate_k(&self, k: Tensor<B, 4>) -> Tensor<B, 4> {
        rotate(k, self.cos_k.clone(), self.sin_k.clone())
    }
}

/// `x * cos + rotate_half(x) * sin` with the sign already in `sin`.
fn rotate<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    signed_sin: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, t, h, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..t, 0..h, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..t, 0..h, d / 2..d]);
    let swapped = Tensor::cat(vec![x2, x1], 3); // [b, t, h, d]
    x * cos + swapped * signed_sin
}

/// Llama 3.1: high frequencies unchanged, low frequencies divided by `factor`, a smooth
/// interpolation between the two bands.
fn llama3_scale(inv_freq: &mut [f32], s: &Llama3Scaling) {
    let old_context = s.original_max_position_embeddings as f32;
    let factor = s.factor as f32;
    let (low, high) = (s.low_freq_factor as f32, s.high_freq_factor as f32);
    let low_freq_wavelen = old_context / low;
    let high_freq_wavelen = old_context / high;
    for f in inv_freq.iter_mut() {
        let wavelen = 2.0 * std::f32::consts::PI / *f;
        if wavelen < high_freq_wavelen {
            continue;
        } else if wavelen > low_freq_wavelen {
            *f /= factor;
        } else {
            let smooth = (old_context / wavelen - low) / (high - low);
            *f = (1.0 - smooth) * *f / factor + smooth * *f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_has_three_bands() {
        // head_dim 16, theta 1e4, original context 32: wavelengths 6.3 (kept), 19.9 (smoothed),
        // 62.8 and longer (divided by 8), as in the llama fixture.
        let base = 10_000f32;
        let mut f: Vec<f32> = (0..8)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / 16.0))
            .collect();
        let original = f.clone();
        let s = Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 32,
        };
        llama3_scale(&mut f, &s);
        assert_eq!(f[0], original[0]);
        assert!(f[1] < original[1] && f[1] > original[1] / 8.0);
        assert!((f[7] - original[7] / 8.0).abs() < 1e-12);
    }
}
