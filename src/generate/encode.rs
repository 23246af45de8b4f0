//! Running known sequences once: their KV state (to branch from any prefix later) and their
//! logits at every position, with the per-position statistics `cft score` and the rollout and
//! token-statistics stages read (next-token log-prob, entropy, top-k alternatives).

use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::activation::log_softmax;

use super::state::{BatchState, SequenceState, valid_tensor};
use super::{GenerateError, ReadBack};
use crate::model::{CausalLm, KvCache, attention_bias};

/// One sequence run through the model.
#[derive(Debug, Clone)]
pub struct Encoded<B: Backend> {
    /// Keys and values of every token; `state.prefix(t)` is the state of `tokens[..t]`.
    pub state: SequenceState<B>,
    /// `[t, vocab]`: row `p` is the distribution of the token after `tokens[..=p]`.
    pub logits: Tensor<B, 2>,
}

/// Runs `sequences` as one left-padded batch and splits the result per sequence.
pub fn encode<B: Backend>(
    lm: &CausalLm<B>,
    sequences: &[Vec<u32>],
) -> Result<Vec<Encoded<B>>, GenerateError> {
    super::check_tokens(sequences.iter().map(Vec::as_slice), lm.config.vocab_size)?;
    let Some(width) = sequences.iter().map(Vec::len).max() else {
        return Ok(Vec::new());
    };
    let device = lm.model.embed_tokens.weight.device();
    let n = sequences.len();
    let (mut ids, mut masks) = (Vec::new(), Vec::new());
    for s in sequences {
        let pad = width - s.len();
        ids.extend(std::iter::repeat_n(0, pad).chain(s.iter().map(|&t| t as i32)));
        masks.push([vec![false; pad], vec![true; s.len()]].concat());
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, width]), &device);
    let valid = valid_tensor::<B>(&masks, &device);
    let positions = crate::model::positions_from_valid(valid.clone());
    let bias = attention_bias(valid, width);
    let mut cache = KvCache::new(lm.model.layers.len());
    let logits = lm.logits(lm.forward_hidden(ids, positions, bias, Some(&mut cache))); // [n, w, vocab]
    let [_, _, vocab] = logits.dims();
    let batch = BatchState {
        cache,
        valid: masks,
    };
    Ok(sequences
        .iter()
        .enumerate()
        .map(|(row, s)| {
            let pad = width - s.len();
            Encoded {
                state: batch.sequence(row),
                logits: logits
                    .clone()
                    .slice([row..row + 1, pad..width, 0..vocab])
                    .reshape([s.len(), vocab]),
            }
        })
        .collect())
}

/// Statistics of one position `p` of a scored sequence.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PositionScore {
    pub pos: usize,
    pub token: u32,
    /// `log P(tokens[p + 1] | tokens[..=p])`; `None` at the last position.
    pub next_logprob: Option<f32>,
    /// Entropy in nats of `P(· | tokens[..=p])`.
    pub entropy: f32,
    /// The `k` most likely next tokens with their probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
    /// The raw logits, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits: Option<Vec<f32>>,
}

/// Per-position statistics of `tokens` from their logits `[t, vocab]`, read in one transaction.
pub fn score<B: Backend>(
    logits: Tensor<B, 2>,
    tokens: &[u32],
    top_k: usize,
    with_logits: bool,
) -> Result<Vec<PositionScore>, GenerateError> {
    let [t, vocab] = logits.dims();
    if tokens.len() != t {
        return Err(GenerateError::LengthMismatch {
            tokens: tokens.len(),
            positions: t,
        });
    }
    let k = top_k.min(vocab);
    let device = logits.device();
    let logp = log_softmax(logits.clone(), 1); // [t, vocab]
    let entropy = (logp.clone().exp() * logp.clone()).sum_dim(1).neg(); // [t, 1]
    let mut tx = Transaction::default().register(entropy);
    if t > 1 {
        let next: Vec<i32> = tokens[1..t].iter().map(|&x| x as i32).collect();
        let next = Tensor::<B, 2, Int>::from_data(TensorData::new(next, [t - 1, 1]), &device);
        tx = tx.register(logp.clone().narrow(0, 0, t - 1).gather(1, next)); // [t-1, 1]
    }
    if k > 0 {
        let (top_lp, top_ids) = super::topk::select(logp, k, super::topk::on_device::<B>());
        tx = tx.register(top_lp.exp()).register(top_ids);
    }
    if with_logits {
        tx = tx.register(logits);
    }
    let mut data = ReadBack::execute(tx)?;
    let entropy = data.f32s()?;
    let next_lp = match t > 1 {
        true => data.f32s()?,
        false => Vec::new(),
    };
    let (top_p, top_ids) = data.top(k)?;
    let raw = match with_logits {
        true => data.f32s()?,
        false => Vec::new(),
    };
    Ok((0..t)
        .map(|p| PositionScore {
            pos: p,
            token: tokens[p],
            next_logprob: next_lp.get(p).copied(),
            entropy: entropy[p],
            top: (0..k)
                .map(|j| (top_ids[p * k + j] as u32, top_p[p * k + j]))
                .collect(),
            logits: with_logits.then(|| raw[p * vocab..(p + 1) * vocab].to_vec()),
        })
        .collect())
}
