//! Step 2 of a decoding step: what each row of the batch reads back from the device and the
//! token it takes. Greedy rows take the arg-max; sampled rows draw from their own stream,
//! from their whole distribution or, when the device selects (off the CPU), from the few
//! candidates their rule needs ([`super::topk`]).

use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::activation::log_softmax;

use super::engine::{EngineOptions, Row};
use super::sampling::{
    Decoding, sample_from_candidates, sample_from_logprobs, sample_nucleus_from_head,
};
use super::{GenerateError, ReadBack};

/// What the device chose for one row in one step.
pub(super) struct Pick {
    pub(super) token: u32,
    pub(super) logprob: f32,
    pub(super) alternatives: Vec<(u32, f32)>,
}

/// Reads back what each row needs in one transaction and picks its token.
pub(super) fn choose<B: Backend>(
    options: &EngineOptions,
    logits: Tensor<B, 2>,
    rows: &mut [Row<'_>],
    device: &B::Device,
) -> Result<Vec<Pick>, GenerateError> {
    let [b, vocab] = logits.dims();
    let k = options.top_alternatives.min(vocab);
    let on_device = options
        .select_on_device
        .unwrap_or_else(super::topk::on_device::<B>);
    let logp = log_softmax(logits, 1); // [b, vocab]
    let (best_lp, best) = logp.clone().max_dim_with_indices(1); // [b, 1]
    let mut tx = Transaction::default().register(best_lp).register(best);
    if k > 0 {
        let (top_lp, top_ids) = super::topk::select(logp.clone(), k, on_device); // [b, k]
        tx = tx.register(top_lp.exp()).register(top_ids);
    }
    let sampled: Vec<usize> = (0..b)
        .filter(|&r| !rows[r].done && !rows[r].decoding.is_greedy())
        .collect();
    // What a sampled row reads back when the device selects: a row with a `top_k` its
    // `top_k` most likely tokens (all a top-k draw reads); a nucleus row (`top_p` < 1, no
    // `top_k`) its NUCLEUS_HEAD most likely with the sum of its weights, and its whole
    // distribution later only when they do not reach `top_p`. A row with neither reads
    // its whole distribution, and then so do all (the CPU always does).
    let head = match on_device {
        true => sampled
            .iter()
            .map(|&r| match rows[r].decoding {
                Decoding::Sample { top_k, .. } if top_k > 0 => top_k.min(vocab),
                Decoding::Sample { top_p, .. } if top_p < 1.0 => NUCLEUS_HEAD.min(vocab),
                _ => vocab,
            })
            .max()
            .filter(|&h| h < vocab),
        false => None,
    };
    if !sampled.is_empty() {
        let rows_lp = logp.clone().select(0, row_index::<B>(&sampled, device));
        match head {
            Some(h) => {
                // Σ exp(lp / T - max) per row, for the nucleus' mass.
                let t: Vec<f32> = sampled
                    .iter()
                    .map(|&r| match rows[r].decoding {
                        Decoding::Sample { temperature, .. } => temperature,
                        Decoding::Greedy => 1.0,
                    })
                    .collect();
                let t = Tensor::<B, 2>::from_data(TensorData::new(t, [sampled.len(), 1]), device);
                let scaled = rows_lp.clone() / t; // [sampled, vocab]
                let max = scaled.clone().max_dim(1); // [sampled, 1]
                let totals = (scaled - max).exp().sum_dim(1); // [sampled, 1]
                let (lp, ids) = super::topk::top_k(rows_lp, h); // [sampled, h]
                tx = tx.register(lp).register(ids).register(totals);
            }
            None => tx = tx.register(rows_lp),
        }
    }
    let mut data = ReadBack::execute(tx)?;
    let best_lp = data.f32s()?;
    let best = data.i64s()?;
    let (top_p, top_ids) = data.top(k)?;
    let (full, head_ids, totals) = match (sampled.is_empty(), head) {
        (true, _) => (Vec::new(), Vec::new(), Vec::new()),
        (false, None) => (data.f32s()?, Vec::new(), Vec::new()),
        (false, Some(_)) => (data.f32s()?, data.i64s()?, data.f32s()?),
    };
    let width = head.unwrap_or(vocab);

    let mut picks = Vec::with_capacity(b);
    // Nucleus rows whose head fell short, with their draw.
    let mut whole: Vec<(usize, f64)> = Vec::new();
    let mut sampled_row = 0;
    for (r, row) in rows.iter_mut().enumerate() {
        if row.done {
            picks.push(Pick {
                token: 0,
                logprob: 0.0,
                alternatives: Vec::new(),
            });
            continue;
        }
        let alternatives = (0..k)
            .map(|j| (top_ids[r * k + j] as u32, top_p[r * k + j]))
            .collect();
        let (token, logprob) = match row.decoding {
            Decoding::Greedy => (best[r] as u32, best_lp[r]),
            Decoding::Sample {
                temperature,
                top_p,
                top_k,
                ..
            } => {
                let place = sampled_row;
                let span = place * width..(place + 1) * width;
                sampled_row += 1;
                let u = row.rng.next_f64();
                match head {
                    None => {
                        let lp = &full[span];
                        let token = sample_from_logprobs(lp, temperature, top_k, top_p, u);
                        (token, lp[token as usize])
                    }
                    Some(_) => {
                        let ids = &head_ids[span.clone()];
                        let lps = &full[span];
                        let token = match top_k {
                            // This row's own top_k of the head (the head is its top_k or
                            // more).
                            0 => {
                                let candidates =
                                    ids.iter().map(|&i| i as u32).zip(lps.iter().copied());
                                let total = totals[place] as f64;
                                sample_nucleus_from_head(candidates, total, temperature, top_p, u)
                            }
                            _ => {
                                let n = top_k.min(width);
                                let candidates = ids[..n]
                                    .iter()
                                    .map(|&i| i as u32)
                                    .zip(lps[..n].iter().copied());
                                Some(sample_from_candidates(
                                    candidates,
                                    temperature,
                                    top_k,
                                    top_p,
                                    u,
                                ))
                            }
                        };
                        match token {
                            Some(token) => {
                                let lp = ids
                                    .iter()
                                    .position(|&i| i as u32 == token)
                                    .map_or(f32::NEG_INFINITY, |j| lps[j]);
                                (token, lp)
                            }
                            None => {
                                whole.push((r, u));
                                (0, 0.0)
                            }
                        }
                    }
                }
            }
        };
        picks.push(Pick {
            token,
            logprob,
            alternatives,
        });
    }
    // The nucleus rows whose head fell short read their whole distribution now, and draw
    // with the same u.
    if !whole.is_empty() {
        let short: Vec<usize> = whole.iter().map(|w| w.0).collect();
        let idx = row_index::<B>(&short, device);
        let tx = Transaction::default().register(logp.select(0, idx));
        let lps = ReadBack::execute(tx)?.f32s()?;
        for (j, &(r, u)) in whole.iter().enumerate() {
            let Decoding::Sample {
                temperature,
                top_p,
                top_k,
                ..
            } = rows[r].decoding
            else {
                continue;
            };
            let lp = &lps[j * vocab..(j + 1) * vocab];
            let token = sample_from_logprobs(lp, temperature, top_k, top_p, u);
            picks[r].token = token;
            picks[r].logprob = lp[token as usize];
        }
    }
    Ok(picks)
}

/// Rows `rows` of a batch as an index tensor for `select`.
fn row_index<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
    Tensor::from_data(TensorData::new(idx, [rows.len()]), device)
}

/// Most likely tokens a nucleus row (`top_p` < 1, no `top_k`) reads back when the device
/// selects, with its weight sum; a row whose nucleus is wider reads its whole distribution.
pub const NUCLEUS_HEAD: usize = 64;
