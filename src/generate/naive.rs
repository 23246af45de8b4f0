//! The reference decoder: one sequence, the whole sequence recomputed every step, no cache,
//! no padding. Slow on purpose; the engine must agree with it.

use burn::prelude::*;

use crate::model::CausalLm;

/// Greedy continuation of `prompt` by full recomputation; stops after an id in `eos`.
pub fn greedy<B: Backend>(
    lm: &CausalLm<B>,
    prompt: &[u32],
    max_new_tokens: usize,
    eos: &[u32],
) -> Vec<u32> {
    let device = lm.model.embed_tokens.weight.device();
    let mut seq: Vec<u32> = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max_new_tokens && !seq.is_empty() {
        let t = seq.len();
        let ids: Vec<i32> = seq.iter().map(|&x| x as i32).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
        let valid =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; t], [1, t]), &device);
        let logits = lm.forward(ids, valid); // [1, t, vocab]
        let [_, _, vocab] = logits.dims();
        let last = logits.slice([0..1, t - 1..t, 0..vocab]).reshape([vocab]);
        let Some(next) = last.argmax(0).into_data().iter::<i64>().next() else {
            break;
        };
        let next = next as u32;
        out.push(next);
        seq.push(next);
        if eos.contains(&next) {
            break;
        }
    }
    out
}
