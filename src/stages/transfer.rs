//! `transfer` (paper §5.2): another model's greedy-correct responses, made this model's
//! training data. Each gets this model's prompt (its annotation template and tokenizer). Its
//! response keeps its token ids when the two tokenizers tokenise alike, compared by their
//! `tokenizer.json` files, so the source's critical-token masks still fit; otherwise the
//! response's text (the source tokenizer's decoding of its ids) is tokenised again by this
//! model's tokenizer, and its critical tokens come from scoring (`score`).
//!
//! "Alike" means the same normalizer, pre-tokenizer and model (vocabulary and merges), and
//! every added token of the source at the same id in this model's (it may add more): Qwen3
//! adds tokens to Qwen2.5's and tokenises text as it does, which a byte comparison of the
//! files would miss. The verdict and what it compared are the record's metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::contract::TransferParams;
use crate::model::TextTokenizer;

use super::annotate::{Response, decode_each, read_lines, write_lines};
use super::dataset::Problem;
use super::prompt::prompt_ids;
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};

pub struct Transfer;

impl StageImpl for Transfer {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        let params: TransferParams = ctx.params_as()?;
        let target_dir = model_dir(ctx, "model")?;
        let source_dir = model_dir(ctx, "source")?;
        let same = same_tokenizer(&source_dir, &target_dir)?;
        let load = |dir: &Path| {
            TextTokenizer::from_dir(dir)
                .map_err(|e| StageError::Input(format!("model {}: {e}", dir.display())))
        };
        let target = load(&target_dir)?;
        let source = load(&source_dir)?;
        let problems: Vec<Problem> = read_lines(
            &ctx.read(ctx.input("dataset")?, "problems.jsonl")?,
            "problems.jsonl",
        )?;
        let questions: HashMap<u64, &Problem> = problems.iter().map(|p| (p.idx, p)).collect();
        let responses: Vec<Response> = read_lines(
            &ctx.read(ctx.input("greedy")?, "responses.jsonl")?,
            "responses.jsonl",
        )?;
        let fail = |e: crate::model::ModelError| StageError::Failed(e.to_string());
        let mut out = Vec::new();
        let (mut source_tokens, mut tokens) = (0, 0);
        for r in responses.into_iter().filter(|r| r.correct) {
            let p = questions.get(&r.idx).ok_or_else(|| {
                StageError::Failed(format!(
                    "response {} answers no question of the training data",
                    r.idx
                ))
            })?;
            source_tokens += r.response_ids.len();
            let response_ids = match same {
                true => r.response_ids.clone(),
                false => target
                    .encode(&source.decode(&r.response_ids, false).map_err(fail)?, false)
                    .map_err(fail)?,
            };
            tokens += response_ids.len();
            out.push(Response {
                idx: r.idx,
                prompt_ids: prompt_ids(params.template, &p.question, &target)?,
                pieces: decode_each(&response_ids, &target),
                response_ids,
                text: r.text,
                gold: r.gold,
                pred: r.pred,
                correct: true,
            });
        }
        Ok(StageOutput {
            outputs: vec![("responses.jsonl".into(), Output::Bytes(write_lines(&out)?))],
            metrics: json!({
                "same_tokenizer": same,
                "responses": out.len(),
                "source_tokens": source_tokens,
                "tokens": tokens,
            }),
        })
    }
}

/// The directory of the target (`model`) or the `source` model: a `<what>_dir` binding, or
/// the checkpoint of the pretrain input the `<what>_pretrain` binding names.
fn model_dir(ctx: &StageCtx<'_>, what: &str) -> Result<PathBuf, StageError> {
    let b = ctx.bindings();
    if let Some(dir) = b.get(format!("{what}_dir")).and_then(Value::as_str) {
        return Ok(PathBuf::from(dir));
    }
    let key = b
        .get(format!("{what}_pretrain"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            StageError::Failed(format!(
                "stage `{}` has neither a `{what}_dir` nor a `{what}_pretrain` binding",
                ctx.spec.label
            ))
        })?;
    let record = ctx.inputs().iter().find(|r| r.key == key).ok_or_else(|| {
        StageError::Failed(format!(
            "stage `{}`: no input {key} ({what})",
            ctx.spec.label
        ))
    })?;
    ctx.model_dir(record)
}

/// Whether text tokenises alike under the two directories' `tokenizer.json`.
pub fn same_tokenizer(source: &Path, target: &Path) -> Result<bool, StageError> {
    let read = |dir: &Path| -> Result<Value, StageError> {
        let path = dir.join("tokenizer.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| StageError::Input(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| StageError::Input(format!("{}: not JSON: {e}", path.display())))
    };
    let (s, t) = (read(source)?, read(target)?);
    if ["normalizer", "pre_tokenizer", "model"]
        .iter()
        .any(|k| s.get(k) != t.get(k))
    {
        return Ok(false);
    }
    let added = |v: &Value| -> Vec<(u64, String)> {
        v.get("added_tokens")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|a| {
                        Some((
                            a.get("id")?.as_u64()?,
                            a.get("content")?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let target_added = added(&t);
    Ok(added(&s).iter().all(|a| target_added.contains(a)))
}
