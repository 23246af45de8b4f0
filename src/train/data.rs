//! Training examples and their batches. An example is `prompt ++ response` with one weight
//! per position; the loss at position `t` predicts token `t + 1`, so the weight of response
//! token `j` sits on the position before it. Weights come from the criticality or selection
//! stage aligned to the tokenised response; a length mismatch is an error, never a shift.

use burn::prelude::*;

use super::TrainError;
use crate::rng::Rng;

/// One training sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub idx: u64,
    /// `prompt ++ response`, truncated to the maximum length.
    pub ids: Vec<u32>,
    /// Weight of predicting `ids[t + 1]` from position `t`; `len = ids.len() - 1`. Zero on
    /// prompt positions.
    pub weights: Vec<f32>,
    /// Number of annotated response tokens predicted (after truncation): the denominator of
    /// the share of tokens trained on, as the paper's "< 12% of tokens" counts them.
    pub response_tokens: usize,
    /// How many of those carry a non-zero weight (all of them for SFT and DFT).
    pub weighted_tokens: usize,
}

impl Example {
    /// `weights`: one per response token (`None`: 1 on every response token, SFT and DFT).
    pub fn new(
        idx: u64,
        prompt: &[u32],
        response: &[u32],
        weights: Option<&[f32]>,
        max_length: usize,
    ) -> Result<Self, TrainError> {
        if let Some(w) = weights
            && w.len() != response.len()
        {
            return Err(TrainError::WeightLength {
                idx,
                weights: w.len(),
                tokens: response.len(),
            });
        }
        let mut ids: Vec<u32> = prompt.iter().chain(response).copied().collect();
        ids.truncate(max_length.max(2));
        let mut per_position = vec![0.0f32; ids.len().saturating_sub(1)];
        let (mut response_tokens, mut weighted_tokens) = (0, 0);
        for (j, slot) in per_position.iter_mut().enumerate() {
            // position j predicts token j + 1; response token r is token prompt.len() + r
            let Some(r) = (j + 1).checked_sub(prompt.len()) else {
                continue;
            };
            *slot = weights.map_or(1.0, |w| w[r]);
            response_tokens += 1;
            weighted_tokens += usize::from(*slot != 0.0);
        }
        Ok(Self {
            idx,
            ids,
            weights: per_position,
            response_tokens,
            weighted_tokens,
        })
    }
}

/// The order of examples in `epoch`: a Fisher-Yates shuffle seeded by `(seed, epoch)`, so a
/// resumed run recomputes it from the step number alone.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = Rng::stream(seed, &format!("train-order-{epoch}"));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.range(0, i as u64) as usize;
        order.swap(i, j);
    }
    order
}

/// A right-padded micro-batch on the device.
pub struct Batch<B: Backend> {
    /// `[b, t]` input ids (padding: `pad_id`).
    pub inputs: Tensor<B, 2, Int>,
    /// `[b, t]` the next token at each position (padding: 0).
    pub targets: Tensor<B, 2, Int>,
    /// `[b, t]` false on padding.
    pub valid: Tensor<B, 2, Bool>,
    /// `[b, t]` per-position loss weights (0 on prompt and padding).
    pub weights: Tensor<B, 2>,
    /// Number of real tokens (not padding) in the batch.
    pub tokens: usize,
}

impl<B: Backend> Batch<B> {
    pub fn new(examples: &[&Example], pad_id: u32, device: &B::Device) -> Self {
        let b = examples.len();
        let t = examples
            .iter()
            .map(|e| e.ids.len().saturating_sub(1))
            .max()
            .unwrap_or(0)
            .max(1);
        let mut inputs = vec![pad_id as i64; b * t];
        let mut targets = vec![0i64; b * t];
        let mut valid = vec![false; b * t];
        let mut weights = vec![0.0f32; b * t];
        let mut tokens = 0;
        for (row, e) in examples.iter().enumerate() {
            let n = e.ids.len().saturating_sub(1);
            tokens += e.ids.len();
            for j in 0..n {
                inputs[row * t + j] = e.ids[j] as i64;
                targets[row * t + j] = e.ids[j + 1] as i64;
                valid[row * t + j] = true;
                weights[row * t + j] = e.weights[j];
            }
        }
        Self {
            inputs: Tensor::from_data(TensorData::new(inputs, [b, t]), device),
            targets: Tensor::from_data(TensorData::new(targets, [b, t]), device),
            valid: Tensor::from_data(TensorData::new(valid, [b, t]), device),
            weights: Tensor::from_data(TensorData::new(weights, [b, t]), device),
            tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sit_on_the_position_before_their_token() {
        let e = Example::new(7, &[1, 2, 3], &[4, 5], Some(&[0.0, 2.0]), 100).unwrap();
        assert_eq!(e.ids, vec![1, 2, 3, 4, 5]);
        // positions 0,1 predict prompt tokens; 2 predicts 4 (w 0); 3 predicts 5 (w 2)
        assert_eq!(e.weights, vec![0.0, 0.0, 0.0, 2.0]);
        assert_eq!((e.response_tokens, e.weighted_tokens), (2, 1));
        let sft = Example::new(7, &[1, 2, 3], &[4, 5], None, 100).unwrap();
        assert_eq!(sft.weights, vec![0.0, 0.0, 1.0, 1.0]);
        // SFT weighs every response token and no prompt token.
        assert_eq!((sft.response_tokens, sft.weighted_tokens), (2, 2));
    }

    #[test]
    fn length_mismatch_is_an_error_naming_idx() {
        let err = Example::new(9, &[1], &[4, 5, 6], Some(&[1.0]), 100).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("idx 9") && text.contains("1 weights for 3"),
            "{text}"
        );
    }

    #[test]
    fn truncation_keeps_alignment() {
        let e = Example::new(0, &[1, 2], &[3, 4, 5], Some(&[1.0, 0.0, 1.0]), 4).unwrap();
        assert_eq!(e.ids, vec![1, 2, 3, 4]);
        assert_eq!(e.weights, vec![0.0, 1.0, 0.0]);
        // The share of tokens trained on counts the response tokens that were kept.
        assert_eq!((e.response_tokens, e.weighted_tokens), (2, 1));
    }

    #[test]
    fn epoch_orders_are_seeded_permutations() {
        let a = epoch_order(10, 1, 0);
        assert_eq!(a, epoch_order(10, 1, 0));
        assert_ne!(a, epoch_order(10, 1, 1));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
    }
}
