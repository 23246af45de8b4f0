//! Training examples and their batches. An example is `prompt ++ response` with one weight
//! per position; the loss at position `t` predicts token `t + 1`, so the weight of response
//! token `j` sits on the position before it. Weights come from the criticality or selection
//! stage aligned to the tokenised response; a length mismatch is an error, never a shift.
//!
//! Two choices of OpenRLHF's SFT data path are settings here: whether every sequence ends
//! with the tokenizer's EOS ([`EndOfSequence`]), and whether an epoch's last, incomplete
//! batch is trained on ([`LastBatch`]).

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

/// The EOS every training sequence ends with under `append_eos`, as OpenRLHF's
/// `SFTDataset.__getitem__` (`datasets/sft_dataset.py`) ends it: the tokenizer's `eos_token`
/// is appended unless the response already ends with it, and a sequence cut at `max_len` has
/// its last token replaced by it ("to avoid EOS_token truncation"), so the model always
/// learns where to stop.
///
/// The appended EOS is trained on like every response token when there are no per-token
/// weights (SFT, DFT: OpenRLHF's loss mask covers it). With weights (CFT, the selection
/// baselines) it gets weight 0: it is no token of the annotated greedy response, so no
/// rollout tested it and Eq. 8 has no `c_t` for it. The greedy stage keeps the end token out
/// of y (`generate::Ending::kept`); a response that still ends with one (a caller's
/// own data) keeps it with its weight and gets no second one.
#[derive(Debug, Clone, PartialEq)]
pub struct EndOfSequence {
    /// What is appended: the tokenizer's `eos_token` (what OpenRLHF appends).
    pub id: u32,
    /// Every id that already ends a response: the model's EOS ids, any of which stopped
    /// generation. A response ending with one gets no second EOS.
    pub stops: Vec<u32>,
}

impl EndOfSequence {
    fn ends(&self, ids: &[u32]) -> bool {
        ids.last()
            .is_some_and(|t| self.stops.contains(t) || *t == self.id)
    }
}

impl Example {
    /// `weights`: one per response token (`None`: 1 on every response token, SFT and DFT).
    /// `eos`: end the sequence with an EOS (see [`EndOfSequence`]).
    pub fn new(
        idx: u64,
        prompt: &[u32],
        response: &[u32],
        weights: Option<&[f32]>,
        eos: Option<&EndOfSequence>,
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
        // The weight of an EOS we put in: 1 like every token without weights, 0 with them.
        let eos_weight = if weights.is_some() { 0.0 } else { 1.0 };
        // The share of tokens trained on counts the annotated tokens only, not an EOS put in.
        let annotated = response.len();
        let mut response = response.to_vec();
        let mut weights: Option<Vec<f32>> = weights.map(<[f32]>::to_vec);
        if let Some(eos) = eos
            && !eos.ends(&response)
        {
            response.push(eos.id);
            if let Some(w) = &mut weights {
                w.push(eos_weight);
            }
        }
        let mut ids: Vec<u32> = prompt.iter().chain(&response).copied().collect();
        ids.truncate(max_length.max(2));
        if let Some(eos) = eos
            && ids.len() > prompt.len()
            && ids.last() != Some(&eos.id)
            && ids.len() < prompt.len() + response.len()
        {
            // Cut inside the response: its last kept token becomes the EOS.
            let last = ids.len() - 1;
            ids[last] = eos.id;
            if let Some(w) = &mut weights {
                w[last - prompt.len()] = eos_weight;
            }
        }
        let weights = weights.as_deref();
        let mut per_position = vec![0.0f32; ids.len().saturating_sub(1)];
        let (mut response_tokens, mut weighted_tokens) = (0, 0);
        for (j, slot) in per_position.iter_mut().enumerate() {
            // position j predicts token j + 1; response token r is token prompt.len() + r
            let Some(r) = (j + 1).checked_sub(prompt.len()) else {
                continue;
            };
            *slot = weights.map_or(1.0, |w| w[r]);
            if r < annotated {
                response_tokens += 1;
                weighted_tokens += usize::from(*slot != 0.0);
            }
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

/// What happens to an epoch's last `n mod batch_size` examples (stage param `last_batch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastBatch {
    /// They form one more, smaller step: `ceil(n / batch_size)` steps per epoch (HF Trainer).
    Short,
    /// They sit out this epoch (the next epoch's shuffle gives others the tail):
    /// `floor(n / batch_size)` steps per epoch, as OpenRLHF counts them
    /// (`cli/train_sft.py`: `num_update_steps_per_epoch = len(train_dataset) //
    /// args.train_batch_size`; its dataloader is built with `drop_last=True`).
    Drop,
}

impl LastBatch {
    /// Optimiser steps per pass over `n` examples in batches of `batch_size`.
    pub fn steps_per_epoch(self, n: usize, batch_size: usize) -> u64 {
        let batch_size = batch_size.max(1);
        match self {
            Self::Short => n.div_ceil(batch_size) as u64,
            Self::Drop => (n / batch_size) as u64,
        }
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
        let e = Example::new(7, &[1, 2, 3], &[4, 5], Some(&[0.0, 2.0]), None, 100).unwrap();
        assert_eq!(e.ids, vec![1, 2, 3, 4, 5]);
        // positions 0,1 predict prompt tokens; 2 predicts 4 (w 0); 3 predicts 5 (w 2)
        assert_eq!(e.weights, vec![0.0, 0.0, 0.0, 2.0]);
        assert_eq!((e.response_tokens, e.weighted_tokens), (2, 1));
        let sft = Example::new(7, &[1, 2, 3], &[4, 5], None, None, 100).unwrap();
        assert_eq!(sft.weights, vec![0.0, 0.0, 1.0, 1.0]);
        // SFT weighs every response token and no prompt token.
        assert_eq!((sft.response_tokens, sft.weighted_tokens), (2, 2));
    }

    #[test]
    fn length_mismatch_is_an_error_naming_idx() {
        let err = Example::new(9, &[1], &[4, 5, 6], Some(&[1.0]), None, 100).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("idx 9") && text.contains("1 weights for 3"),
            "{text}"
        );
    }

    #[test]
    fn truncation_keeps_alignment() {
        let e = Example::new(0, &[1, 2], &[3, 4, 5], Some(&[1.0, 0.0, 1.0]), None, 4).unwrap();
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

    fn eos() -> EndOfSequence {
        EndOfSequence {
            id: 9,
            stops: vec![8, 9],
        }
    }

    /// `append_eos`: the trainer sees prompt ++ response ++ EOS; SFT trains on the EOS with
    /// weight 1, a weighted method gives it 0 and keeps its own weights.
    #[test]
    fn eos_is_appended_with_weight_one_without_weights_and_zero_with_them() {
        let eos = eos();
        let sft = Example::new(1, &[1, 2], &[4, 5], None, Some(&eos), 100).unwrap();
        assert_eq!(sft.ids, vec![1, 2, 4, 5, 9]);
        assert_eq!(sft.weights, vec![0.0, 1.0, 1.0, 1.0]);
        // the share of tokens trained on counts the annotated response tokens only
        assert_eq!((sft.response_tokens, sft.weighted_tokens), (2, 2));
        let cft = Example::new(1, &[1, 2], &[4, 5], Some(&[2.0, 1.0]), Some(&eos), 100).unwrap();
        assert_eq!(cft.ids, vec![1, 2, 4, 5, 9]);
        assert_eq!(cft.weights, vec![0.0, 2.0, 1.0, 0.0]);
    }

    /// A response that stopped on an EOS of the model (any of its EOS ids) gets no second
    /// one, and its own EOS keeps its annotated weight.
    #[test]
    fn no_second_eos() {
        let eos = eos();
        for stop in [8, 9] {
            let e = Example::new(1, &[1], &[4, stop], Some(&[0.0, 1.0]), Some(&eos), 100).unwrap();
            assert_eq!(e.ids, vec![1, 4, stop]);
            assert_eq!(e.weights, vec![0.0, 1.0]);
        }
        let off = Example::new(1, &[1], &[4, 5], None, None, 100).unwrap();
        assert_eq!(
            off.ids,
            vec![1, 4, 5],
            "append_eos = false leaves the response alone"
        );
    }

    /// Cut at `max_length`, the sequence still ends with the EOS (it replaces the last kept
    /// token), with the EOS weight; a cut inside the prompt leaves the prompt alone.
    #[test]
    fn truncation_keeps_the_eos_last() {
        let eos = eos();
        let e = Example::new(
            1,
            &[1, 2],
            &[3, 4, 5],
            Some(&[1.0, 1.0, 1.0]),
            Some(&eos),
            4,
        )
        .unwrap();
        assert_eq!(e.ids, vec![1, 2, 3, 9]);
        assert_eq!(e.weights, vec![0.0, 1.0, 0.0]);
        let sft = Example::new(1, &[1, 2], &[3, 4, 5], None, Some(&eos), 4).unwrap();
        assert_eq!(sft.ids, vec![1, 2, 3, 9]);
        assert_eq!(sft.weights, vec![0.0, 1.0, 1.0]);
        let long_prompt = Example::new(1, &[1, 2, 3, 4], &[5], None, Some(&eos), 3).unwrap();
        assert_eq!(long_prompt.ids, vec![1, 2, 3]);
        assert_eq!(long_prompt.response_tokens, 0);
    }

    /// 10 examples in batches of 4: 3 steps with the short last batch, 2 without it.
    #[test]
    fn steps_per_epoch_short_and_drop() {
        assert_eq!(LastBatch::Short.steps_per_epoch(10, 4), 3);
        assert_eq!(LastBatch::Drop.steps_per_epoch(10, 4), 2);
        assert_eq!(LastBatch::Drop.steps_per_epoch(12, 4), 3);
        assert_eq!(LastBatch::Short.steps_per_epoch(12, 4), 3);
        assert_eq!(LastBatch::Drop.steps_per_epoch(3, 4), 0);
    }
}
