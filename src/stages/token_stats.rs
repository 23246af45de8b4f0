//! `token-stats`: for every token of every correct greedy response, its probability under the
//! model, the entropy of the distribution it was drawn from, and the attention it receives —
//! what the Entropy and Attention baselines select by, and what Table 5 compares between
//! critical and normal tokens.
//!
//! Attention received by the token at sequence position s is the attention paid to it by the
//! tokens that can see it (positions q >= s), averaged over those queries, over heads and over
//! layers: a_s = mean_{l,h} mean_{q >= s} A_{l,h}[q, s]. Averaging over queries keeps early
//! tokens, which more tokens can see, from winning by count alone.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::Serialize;
use serde_json::json;

use super::annotate::{correct_responses, load_model, write_lines};
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};

#[derive(Serialize, serde::Deserialize)]
struct Line {
    idx: u64,
    prob: Vec<f32>,
    entropy: Vec<f32>,
    attention: Vec<f32>,
}

pub struct TokenStats;

impl StageImpl for TokenStats {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, run)
    }
}

fn run<B: Backend>(ctx: &mut StageCtx<'_>, device: &B::Device) -> Result<StageOutput, StageError> {
    let responses = correct_responses(ctx)?;
    let model = load_model::<B>(&ctx.input_model_dir()?, device, ctx.device().load_options())?;
    ctx.set_total(responses.len() as u64);
    let mut out = Vec::with_capacity(responses.len());
    for r in &responses {
        let lines: Vec<Line> = ctx.item(&r.idx.to_string(), 1, || {
            let line = stats(&model.lm, &r.prompt_ids, &r.response_ids, device)
                .map_err(|e| StageError::Failed(format!("example {}: {e}", r.idx)))?;
            Ok(vec![Line { idx: r.idx, ..line }])
        })?;
        out.extend(lines);
    }
    Ok(StageOutput {
        outputs: vec![("stats.jsonl".into(), Output::Bytes(write_lines(&out)?))],
        metrics: json!({"examples": out.len(), "tokens": out.iter().map(|l| l.prob.len()).sum::<usize>()}),
    })
}

fn stats<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    prompt: &[u32],
    response: &[u32],
    device: &B::Device,
) -> Result<Line, String> {
    let seq: Vec<i32> = prompt.iter().chain(response).map(|&t| t as i32).collect();
    let (p, t) = (prompt.len(), seq.len());
    if p == 0 || response.is_empty() {
        return Err("empty prompt or response".into());
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(seq, [1, t]), device);
    let valid = Tensor::<B, 2, Bool>::from_data(TensorData::new(vec![true; t], [1, t]), device);
    let (logits, layers) = lm.forward_with_attention(ids, valid);
    let [_, _, vocab] = logits.dims();
    // Row s - 1 predicts the token at s; the response occupies s = p..t.
    let logp = log_softmax(logits.reshape([t, vocab]).narrow(0, p - 1, t - p), 1); // [n, vocab]
    let entropy = (logp.clone().exp() * logp.clone()).sum_dim(1).neg(); // [n, 1]
    let targets: Vec<i32> = response.iter().map(|&x| x as i32).collect();
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [t - p, 1]), device);
    let prob = logp.gather(1, targets).exp(); // [n, 1]
    // Mean over layers and heads → [t, t]; then per key column s, the mean over queries q >= s.
    let n_layers = layers.len().max(1) as f64;
    let mut mean: Option<Tensor<B, 2>> = None;
    for a in layers {
        let [_, h, _, _] = a.dims();
        let per_layer = a.cast(burn::tensor::DType::F32).sum_dim(1).reshape([t, t]) / h as f64;
        mean = Some(match mean {
            Some(m) => m + per_layer,
            None => per_layer,
        });
    }
    let attention: Vec<f32> = match mean {
        Some(m) => {
            let received = (m / n_layers).sum_dim(0).reshape([t]); // column sums over queries
            let column: Vec<f32> = received.into_data().iter::<f32>().collect();
            (p..t).map(|s| column[s] / (t - s) as f32).collect()
        }
        None => vec![0.0; t - p],
    };
    Ok(Line {
        idx: 0,
        prob: prob.into_data().iter::<f32>().collect(),
        entropy: entropy.into_data().iter::<f32>().collect(),
        attention,
    })
}
