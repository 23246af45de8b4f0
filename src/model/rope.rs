//! Rotary position embedding as HF applies it: the two halves of each head are rotated
//! against each other (`rotate_half`), not interleaved pairs as burn's `RotaryEncoding` does.
//!
//! Angles are computed per call from explicit position ids, so a left-padded row, a row that
//! continues a cached prefix and a training batch all take the same path. The inverse
//! frequencies follow transformers' `_compute_default_rope_parameters` and
//! `_compute_llama3_parameters` (computed in f32 as there).

use burn::prelude::*;

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

    /// `cos` and `sin` of the angles, each `[b, t, 1, head_dim]` (halves repeated, as HF's
    /// `cat(freqs, freqs)`), in `dtype`.
    ///
    /// # Shapes
    /// - `positions`: `[b, t]`
    pub fn cos_sin<B: Backend>(
        &self,
        positions: Tensor<B, 2, Int>,
        dtype: burn::tensor::DType,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let device = positions.device();
        let half = self.inv_freq.len();
        let inv_freq = Tensor::<B, 1>::from_data(
            TensorData::new(self.inv_freq.clone(), [half]),
            (&device, burn::tensor::DType::F32),
        );
        let [b, t] = positions.dims();
        let positions = positions.float().cast(burn::tensor::DType::F32);
        // [b, t, 1] * [1, 1, d/2] -> [b, t, d/2]
        let freqs = positions.reshape([b, t, 1]) * inv_freq.reshape([1, 1, half]);
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2); // [b, t, d]
        let emb = emb.unsqueeze_dim::<4>(2); // [b, t, 1, d]
        (emb.clone().cos().cast(dtype), emb.sin().cast(dtype))
    }
}

/// `x * cos + rotate_half(x) * sin`, with `rotate_half(x) = cat(-x2, x1)`.
///
/// # Shapes
/// - `x`: `[b, t, h, d]`; `cos`, `sin`: `[b, t, 1, d]`
pub fn apply_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [b, t, h, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..t, 0..h, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..t, 0..h, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3); // [b, t, h, d]
    x * cos + rotated * sin
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
