//! `selection`: the token masks of the baselines ([`crate::cft::selection`]). Entropy and
//! Attention select as many tokens as the matched CFT method marks, per example or, with
//! `match_scope = "global"`, over all of D_correct; Random selects per example; Number
//! selects numeric tokens (CFT-Number: only those the matched method marks).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use crate::cft::categories::{Category, categorize};
use crate::cft::selection::{count_marked, numbers, random, top, top_global};
use crate::manifest::MatchScope;

use super::annotate::{Response, Weights, correct_responses, read_lines, write_lines};
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};
use crate::contract::SelectionParams;

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
        let params: SelectionParams = ctx.params_as()?;
        let (kind, scope) = match params {
            SelectionParams::Entropy { match_scope } => ("entropy", Some(match_scope)),
            SelectionParams::Attention { match_scope } => ("attention", Some(match_scope)),
            SelectionParams::Random { .. } => ("random", None),
            SelectionParams::Number { .. } => ("number", None),
        };
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
        // The matched CFT method's weights of each example, in response order.
        let cft: Vec<Option<&Vec<f32>>> = responses
            .iter()
            .map(|r| match &matched {
                Some(m) => m
                    .get(&r.idx)
                    .map(Some)
                    .ok_or_else(|| missing("matched weights", r.idx)),
                None => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let counts: Vec<usize> = cft
            .iter()
            .map(|w| w.map_or(0, |w| count_marked(w)))
            .collect();
        let scores = |pick: fn(&TokenStats) -> &Vec<f32>| -> Result<Vec<Vec<f32>>, StageError> {
            responses
                .iter()
                .map(|r| score_line(r, stats.as_ref(), pick, &missing))
                .collect()
        };
        let ranked = |scores: Vec<Vec<f32>>| match scope.unwrap_or(MatchScope::Example) {
            MatchScope::Example => scores
                .iter()
                .zip(&counts)
                .map(|(s, c)| top(s, *c))
                .collect(),
            MatchScope::Global => top_global(&scores, counts.iter().sum()),
        };
        let masks: Vec<Vec<f32>> = match params {
            SelectionParams::Entropy { .. } => ranked(scores(|s| &s.entropy)?),
            SelectionParams::Attention { .. } => ranked(scores(|s| &s.attention)?),
            SelectionParams::Random { seed } => responses
                .iter()
                .zip(&counts)
                .map(|(r, c)| random(r.response_ids.len(), *c, seed, r.idx))
                .collect(),
            SelectionParams::Number { .. } => responses
                .iter()
                .zip(&cft)
                .map(|(r, within)| {
                    let is_number: Vec<bool> = (0..r.response_ids.len())
                        .map(|t| {
                            categorize(r.pieces.get(t).map_or("", String::as_str))
                                == Category::Number
                        })
                        .collect();
                    numbers(&is_number, within.map(Vec::as_slice))
                })
                .collect(),
        };
        let tokens: usize = responses.iter().map(|r| r.response_ids.len()).sum();
        let selected: usize = masks.iter().map(|m| count_marked(m)).sum();
        let out: Vec<Weights> = responses
            .iter()
            .zip(masks)
            .map(|(r, mask)| Weights {
                idx: r.idx,
                weights: mask,
            })
            .collect();
        Ok(StageOutput {
            outputs: vec![("weights.jsonl".into(), Output::Bytes(write_lines(&out)?))],
            metrics: json!({"selection": kind, "match_scope": scope, "tokens": tokens, "selected": selected, "fraction": selected as f64 / tokens.max(1) as f64}),
        })
    }
}

/// One example's scores (entropy or attention), checked against its response length.
fn score_line(
    r: &Response,
    stats: Option<&HashMap<u64, TokenStats>>,
    pick: fn(&TokenStats) -> &Vec<f32>,
    missing: &dyn Fn(&str, u64) -> StageError,
) -> Result<Vec<f32>, StageError> {
    let s = stats
        .and_then(|s| s.get(&r.idx))
        .ok_or_else(|| missing("token statistics", r.idx))?;
    let v = pick(s);
    let len = r.response_ids.len();
    if v.len() != len {
        return Err(StageError::Failed(format!(
            "example {}: {} statistics for {len} tokens",
            r.idx,
            v.len()
        )));
    }
    Ok(v.clone())
}
