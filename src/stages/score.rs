//! `score` (paper §5.1-5.2): the critical tokens of responses no rollout annotated — the
//! first correct samples of the questions greedy decoding got wrong (`sample`), or another
//! model's responses (`transfer`). Each token gets
//!
//!   s_t = P_cft(y_t | Q, y_<t) − P_base(y_t | Q, y_<t),
//!
//! M_cft being a CFT method's checkpoint (its cell chosen as the report chooses it) and
//! M_base the model before fine-tuning, and the top `top` share of each response's tokens
//! (rounded up, so every response keeps at least one; ties to the earlier token) are
//! critical. Responses transferred with their token ids (same tokenizer) take the source
//! model's critical tokens as they are instead, and no model is loaded.
//!
//! Outputs `weights.jsonl` (the 0/1 masks) and `scores.jsonl` (each response's s_t, for a
//! person or a check against `cft score` of the two models). The probabilities are those of
//! `cft score`: one forward pass over prompt and response, read at the response's tokens.

use std::collections::HashMap;

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cache::Record;
use crate::cft::selection::{count_marked, top};
use crate::contract::ScoreParams;
use crate::generate::{encode, score};
use crate::model::LanguageModel;

use super::annotate::{Response, Weights, load_model, read_lines, write_lines};
use super::{Item, Output, StageCtx, StageError, StageImpl, StageOutput};

/// Responses per forward pass and saved item.
const CHUNK: usize = 8;

pub struct Score;

impl StageImpl for Score {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, run)
    }
}

/// One response's s_t (`scores.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub idx: u64,
    pub s: Vec<f32>,
}

/// A chunk's probabilities of its response tokens under one model.
#[derive(Serialize, Deserialize)]
struct Probs(Vec<Vec<f32>>);

impl Item for Probs {
    fn encode(&self) -> Result<Vec<u8>, StageError> {
        serde_json::to_vec(&self.0).map_err(|e| StageError::Failed(e.to_string()))
    }

    fn decode(bytes: &[u8], name: &str) -> Result<Self, StageError> {
        serde_json::from_slice(bytes)
            .map(Probs)
            .map_err(|e| StageError::Failed(format!("saved {name}: {e}")))
    }
}

fn run<B: Backend>(ctx: &mut StageCtx<'_>, device: &B::Device) -> Result<StageOutput, StageError> {
    let params: ScoreParams = ctx.params_as()?;
    let source = ctx
        .inputs()
        .iter()
        .find(|r| r.kind == "sample" || r.kind == "transfer")
        .cloned()
        .ok_or_else(|| {
            StageError::Failed(format!(
                "stage `{}` has no sample or transfer input",
                ctx.spec.label
            ))
        })?;
    let responses: Vec<Response> =
        read_lines(&ctx.read(&source, "responses.jsonl")?, "responses.jsonl")?;
    let responses: Vec<Response> = responses.into_iter().filter(|r| r.correct).collect();
    let tokens: usize = responses.iter().map(|r| r.response_ids.len()).sum();
    if source.kind == "transfer" && source.metrics["same_tokenizer"].as_bool() == Some(true) {
        return reuse(ctx, &responses, tokens);
    }

    // The base model: a `model_dir` binding, or the toy family's pretrain input.
    let base_dir = match ctx.bindings().get("model_dir").and_then(|v| v.as_str()) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            let r = ctx.input("pretrain")?.clone();
            ctx.model_dir(&r)?
        }
    };
    let rest: Vec<Record> = ctx
        .inputs()
        .iter()
        .filter(|r| r.kind == "train" || r.kind == "eval")
        .cloned()
        .collect();
    let (cft_dir, cell) = super::start::chosen_checkpoint(ctx, &params.scorer, &rest)?;
    let chunks: Vec<&[Response]> = responses.chunks(CHUNK).collect();
    ctx.set_total(2 * responses.len() as u64);
    let load = ctx.device().load_options();
    let mut probs: [Vec<Vec<f32>>; 2] = [Vec::new(), Vec::new()];
    for (which, dir) in [("base", &base_dir), ("cft", &cft_dir)]
        .into_iter()
        .enumerate()
    {
        let (name, dir) = dir;
        // Loaded only if an item is not saved yet.
        let mut model: Option<LanguageModel<B>> = None;
        for (c, chunk) in chunks.iter().enumerate() {
            let p = ctx.item(&format!("{name}-{c}"), chunk.len() as u64, || {
                if model.is_none() {
                    model = Some(load_model::<B>(dir, device, load)?);
                }
                let Some(m) = model.as_ref() else {
                    return Err(StageError::Failed("model not loaded".into()));
                };
                Ok(Probs(response_probs(&m.lm, chunk)?))
            })?;
            probs[which].extend(p.0);
        }
    }
    let mut weights = Vec::with_capacity(responses.len());
    let mut scores = Vec::with_capacity(responses.len());
    for ((r, cft), base) in responses.iter().zip(&probs[1]).zip(&probs[0]) {
        let s: Vec<f32> = cft.iter().zip(base).map(|(c, b)| c - b).collect();
        let count = ((params.top * s.len() as f64).ceil() as usize).min(s.len());
        weights.push(Weights {
            idx: r.idx,
            weights: top(&s, count),
        });
        scores.push(Scores { idx: r.idx, s });
    }
    let selected: usize = weights.iter().map(|w| count_marked(&w.weights)).sum();
    Ok(StageOutput {
        outputs: vec![
            (
                "weights.jsonl".into(),
                Output::Bytes(write_lines(&weights)?),
            ),
            ("scores.jsonl".into(), Output::Bytes(write_lines(&scores)?)),
        ],
        metrics: json!({
            "reused": false,
            "scorer": params.scorer.method,
            "cell": cell,
            "examples": weights.len(),
            "tokens": tokens,
            "selected": selected,
            "fraction": selected as f64 / tokens.max(1) as f64,
        }),
    })
}

/// Responses transferred with their token ids: the source's critical tokens, unchanged.
fn reuse(
    ctx: &StageCtx<'_>,
    responses: &[Response],
    tokens: usize,
) -> Result<StageOutput, StageError> {
    let record = ctx.input("criticality")?;
    let lines: Vec<Weights> = read_lines(&ctx.read(record, "weights.jsonl")?, "weights.jsonl")?;
    let by_idx: HashMap<u64, Vec<f32>> = lines.into_iter().map(|w| (w.idx, w.weights)).collect();
    let mut out = Vec::with_capacity(responses.len());
    for r in responses {
        let w = by_idx.get(&r.idx).ok_or_else(|| {
            StageError::Failed(format!(
                "the source has no critical tokens for example {}",
                r.idx
            ))
        })?;
        if w.len() != r.response_ids.len() {
            return Err(StageError::Failed(format!(
                "example {}: {} weights for {} tokens",
                r.idx,
                w.len(),
                r.response_ids.len()
            )));
        }
        out.push(Weights {
            idx: r.idx,
            weights: w.clone(),
        });
    }
    let selected: usize = out.iter().map(|w| count_marked(&w.weights)).sum();
    Ok(StageOutput {
        outputs: vec![("weights.jsonl".into(), Output::Bytes(write_lines(&out)?))],
        metrics: json!({
            "reused": true,
            "examples": out.len(),
            "tokens": tokens,
            "selected": selected,
            "fraction": selected as f64 / tokens.max(1) as f64,
        }),
    })
}

/// P(y_t | Q, y_<t) of every response token, one forward pass per response as `cft score`
/// makes it.
fn response_probs<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    chunk: &[Response],
) -> Result<Vec<Vec<f32>>, StageError> {
    let fail = |e: crate::generate::GenerateError| StageError::Failed(format!("score: {e}"));
    let mut out = Vec::with_capacity(chunk.len());
    for r in chunk {
        let seq: Vec<u32> = r
            .prompt_ids
            .iter()
            .chain(&r.response_ids)
            .copied()
            .collect();
        let p = r.prompt_ids.len();
        if p == 0 {
            return Err(StageError::Failed(format!(
                "example {}: empty prompt",
                r.idx
            )));
        }
        let encoded = encode(lm, std::slice::from_ref(&seq)).map_err(fail)?;
        let Some(e) = encoded.into_iter().next() else {
            return Err(StageError::Failed("nothing was encoded".into()));
        };
        let rows = score(e.logits, &seq, 0, false).map_err(fail)?;
        // Row s - 1 predicts the token at s; the response occupies s = p..len.
        let probs: Vec<f32> = rows[p - 1..seq.len() - 1]
            .iter()
            .map(|row| row.next_logprob.map_or(0.0, f32::exp))
            .collect();
        out.push(probs);
    }
    Ok(out)
}
