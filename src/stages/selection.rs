//! `selection`: the token masks of the baselines ([`crate::cft::selection`]). Entropy,
//! Attention and Random select, per example, as many tokens as the matched CFT method marks;
//! Number selects numeric tokens (CFT-Number: only those the matched method marks).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use crate::cft::categories::{Category, categorize};
use crate::cft::selection::{count_marked, numbers, random, top};

use super::annotate::{Weights, correct_responses, read_lines, write_lines};
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};

pub const VERSION: u32 = 1;

/// A line of the `token-stats` output.
#[derive(Deserialize)]
pub struct TokenStats {
    pub idx: u64,
    pub prob: Vec<f32>,
    pub entropy: Vec<f32>,
    pub attention: Vec<f32>,
}

pub struct Selection;

impl StageImpl for Selection {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        let params = ctx.params().clone();
        let kind = params["selection"].as_str().unwrap_or_default().to_string();
        let seed = params["seed"].as_u64().unwrap_or(0);
        let responses = correct_responses(ctx)?;
        let matched: Option<HashMap<u64, Vec<f32>>> =
            match ctx.inputs().iter().find(|r| r.kind == "criticality") {
                Some(r) => {
                    let lines: Vec<Weights> =
                        read_lines(&ctx.read(r, "weights.jsonl")?, "weights.jsonl")?;
                    Some(lines.into_iter().map(|w| (w.idx, w.weights)).collect())
                }
                None => None,
            };
        let stats: Option<HashMap<u64, TokenStats>> =
            match ctx.inputs().iter().find(|r| r.kind == "token-stats") {
                Some(r) => {
                    let lines: Vec<TokenStats> =
                        read_lines(&ctx.read(r, "stats.jsonl")?, "stats.jsonl")?;
                    Some(lines.into_iter().map(|s| (s.idx, s)).collect())
                }
                None => None,
            };
        let missing = |what: &str, idx: u64| {
            StageError::Failed(format!("{kind} selection: no {what} for example {idx}"))
        };
        let mut out = Vec::with_capacity(responses.len());
        let (mut tokens, mut selected) = (0usize, 0usize);
        for r in &responses {
            let len = r.response_ids.len();
            let cft = match &matched {
                Some(m) => Some(
                    m.get(&r.idx)
                        .ok_or_else(|| missing("matched weights", r.idx))?,
                ),
                None => None,
            };
            let count = cft.map_or(0, |w| count_marked(w));
            let scores = |pick: fn(&TokenStats) -> &Vec<f32>| -> Result<Vec<f32>, StageError> {
                let s = stats
                    .as_ref()
                    .and_then(|s| s.get(&r.idx))
                    .ok_or_else(|| missing("token statistics", r.idx))?;
                let v = pick(s);
                if v.len() != len {
                    return Err(StageError::Failed(format!(
                        "example {}: {} statistics for {len} tokens",
                        r.idx,
                        v.len()
                    )));
                }
                Ok(v.clone())
            };
            let mask = match kind.as_str() {
                "entropy" => top(&scores(|s| &s.entropy)?, count),
                "attention" => top(&scores(|s| &s.attention)?, count),
                "random" => random(len, count, seed, r.idx),
                "number" => {
                    let is_number: Vec<bool> = (0..len)
                        .map(|t| {
                            categorize(r.pieces.get(t).map_or("", String::as_str))
                                == Category::Number
                        })
                        .collect();
                    numbers(&is_number, cft.map(Vec::as_slice))
                }
                other => return Err(StageError::Failed(format!("unknown selection `{other}`"))),
            };
            tokens += len;
            selected += count_marked(&mask);
            out.push(Weights {
                idx: r.idx,
                weights: mask,
            });
        }
        Ok(StageOutput {
            outputs: vec![("weights.jsonl".into(), Output::Bytes(write_lines(&out)?))],
            metrics: json!({"selection": kind, "tokens": tokens, "selected": selected, "fraction": selected as f64 / tokens.max(1) as f64}),
        })
    }
}
