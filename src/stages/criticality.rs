//! `criticality`: rollout outcomes of ranks 2..k → per-token weights c_t under the method's
//! rule (Strict, Union, Graded; [`crate::cft::criticality`]). Pure and fast: no model. Also
//! measures what the paper reports about the result: the critical ratio and annotation time
//! per 1,000 examples (Table 4) and the token categories of critical vs normal tokens
//! (Figure 5).

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::cft::categories::{ALL, categorize};
use crate::cft::criticality::weights;

use crate::contract::CriticalityParams;

use super::annotate::{Branches, Weights, correct_responses, read_lines, write_lines};
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};

pub struct Criticality;

impl StageImpl for Criticality {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        let CriticalityParams { rule, k } = ctx.params_as()?;
        let k = k as usize;
        let responses = correct_responses(ctx)?;
        // Inputs after the greedy pass are the rollouts of ranks 2..k, in order.
        let rollouts: Vec<_> = ctx
            .inputs()
            .iter()
            .filter(|r| r.kind == "rollout")
            .cloned()
            .collect();
        let mut ranks: Vec<HashMap<u64, Branches>> = Vec::new();
        let mut rollout_seconds = 0.0;
        for r in &rollouts {
            let lines: Vec<Branches> =
                read_lines(&ctx.read(r, "branches.jsonl")?, "branches.jsonl")?;
            ranks.push(lines.into_iter().map(|b| (b.idx, b)).collect());
            rollout_seconds += r.metrics["seconds"].as_f64().unwrap_or(0.0);
        }
        ctx.set_total(responses.len() as u64);
        let mut out = Vec::with_capacity(responses.len());
        let (mut tokens, mut critical) = (0usize, 0usize);
        let mut categories: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
        for r in &responses {
            let fails: Vec<Vec<Option<bool>>> = ranks
                .iter()
                .map(|rank| {
                    rank.get(&r.idx).map(|b| b.fail.clone()).ok_or_else(|| {
                        StageError::Failed(format!("no rollout outcome for example {}", r.idx))
                    })
                })
                .collect::<Result<_, _>>()?;
            let w = weights(rule, k, &fails)
                .map_err(|e| StageError::Failed(format!("example {}: {e}", r.idx)))?;
            if w.len() != r.response_ids.len() {
                return Err(StageError::Failed(format!(
                    "example {}: {} weights for {} response tokens",
                    r.idx,
                    w.len(),
                    r.response_ids.len()
                )));
            }
            tokens += w.len();
            for (t, weight) in w.iter().enumerate() {
                let marked = *weight != 0.0;
                critical += usize::from(marked);
                let piece = r.pieces.get(t).map_or("", String::as_str);
                let side = if marked { "critical" } else { "normal" };
                let name = serde_json::to_value(categorize(piece))
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                *categories.entry(side).or_default().entry(name).or_default() += 1;
            }
            out.push(Weights {
                idx: r.idx,
                weights: w,
            });
            ctx.advance(1);
        }
        for side in ["critical", "normal"] {
            let counts = categories.entry(side).or_default();
            for c in ALL {
                let name = serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                counts.entry(name).or_default();
            }
        }
        let examples = responses.len().max(1);
        Ok(StageOutput {
            outputs: vec![("weights.jsonl".into(), Output::Bytes(write_lines(&out)?))],
            metrics: json!({
                "rule": rule,
                "k": k,
                "examples": responses.len(),
                "tokens": tokens,
                "critical_tokens": critical,
                "critical_ratio": critical as f64 / tokens.max(1) as f64,
                "seconds_per_1k": (!responses.is_empty()).then(|| rollout_seconds / examples as f64 * 1000.0),
                "categories": categories,
            }),
        })
    }
}
