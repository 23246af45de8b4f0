//! What the annotation and training stages measured (paper Tables 4 and 5, Figures 2 and 5,
//! training curves), read from their records. Table 5 is computed here from the per-token
//! statistics and the criticality weights, which are aligned token by token.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::inputs::{MethodParams, Params, Records, label};
use super::{AnnotationRow, CategoryRow, PassCurve, TokenStats, TokenStatsRow, TrainingRow};
use crate::manifest::MethodKind;

/// The CFT methods of the experiment trained on the model's own greedy responses, those whose
/// criticality stage annotates them (Tables 4 and 5, Figure 5). A CFT method on sampled or
/// transferred responses (Figure 4) shares its rule's annotation of the greedy ones, or has
/// none of this model's: it would repeat a row, or show another method's.
fn cft_methods(params: &Params) -> impl Iterator<Item = (&MethodParams, String)> {
    params
        .methods
        .iter()
        .filter(|m| m.responses.is_none())
        .filter_map(|m| m.criticality().map(|c| (m, c)))
}

/// Table 4, one row per model and CFT rule (one per model when there is none).
pub fn annotation(params: &Params, records: &Records<'_>) -> Vec<AnnotationRow> {
    let mut out = Vec::new();
    for model in &params.models {
        let greedy = records.metrics(&label::greedy(model));
        let g = |k: &str| greedy.and_then(|m| m[k].as_f64());
        let row = |method: Option<String>, crit: Option<&Value>| AnnotationRow {
            model: model.clone(),
            method,
            greedy_correct: greedy.and_then(|m| m["correct"].as_u64()),
            total: greedy.and_then(|m| m["total"].as_u64()),
            accuracy: g("accuracy").map(|a| a * 100.0),
            mean_tokens: g("mean_correct_response_tokens").or_else(|| crit.and_then(mean_tokens)),
            critical_ratio: crit
                .and_then(|c| c["critical_ratio"].as_f64())
                .map(|r| r * 100.0),
            seconds_per_1k: crit.and_then(|c| c["seconds_per_1k"].as_f64()),
        };
        // Methods that share a criticality stage (CFT trained fully and with LoRA, Table 3)
        // share its row, their labels joined.
        let mut rules: Vec<(String, Vec<String>)> = Vec::new();
        for (method, crit) in cft_methods(params) {
            match rules.iter_mut().find(|(c, _)| *c == crit) {
                Some((_, labels)) => labels.push(method.label.clone()),
                None => rules.push((crit, vec![method.label.clone()])),
            }
        }
        let any = !rules.is_empty();
        for (crit, labels) in rules {
            let m = records.metrics(&label::criticality(model, &crit));
            out.push(row(Some(labels.join(", ")), m));
        }
        if !any {
            out.push(row(None, None));
        }
    }
    out
}

/// The mean length of the correct responses from a criticality record, which counts the
/// tokens of exactly those: greedy records written before `mean_correct_response_tokens`
/// was recorded still get Table 4's "Avg Tokens" from it.
fn mean_tokens(criticality: &Value) -> Option<f64> {
    let tokens = criticality["tokens"].as_f64()?;
    let examples = criticality["examples"].as_f64()?;
    (examples > 0.0).then(|| tokens / examples)
}

#[derive(Deserialize)]
struct StatsLine {
    idx: u64,
    prob: Vec<f32>,
    entropy: Vec<f32>,
}

#[derive(Deserialize)]
struct WeightsLine {
    idx: u64,
    weights: Vec<f32>,
}

/// The shared JSONL reader; an unreadable file counts as absent (the report shows "—").
fn jsonl<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<Vec<T>> {
    crate::contract::artifacts::read_lines(bytes, "").ok()
}

#[derive(Default)]
struct Acc {
    n: u64,
    prob: f64,
    neg_log: f64,
    entropy: f64,
}

impl Acc {
    fn add(&mut self, p: f32, e: f32) {
        let p = f64::from(p);
        self.n += 1;
        self.prob += p;
        self.neg_log += -p.max(f64::MIN_POSITIVE).ln();
        self.entropy += f64::from(e);
    }

    fn stats(&self) -> Option<TokenStats> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            TokenStats {
                tokens: self.n,
                confidence: self.prob / n,
                perplexity: (self.neg_log / n).exp(),
                entropy: self.entropy / n,
            }
        })
    }
}

/// Table 5 for each model and CFT rule: a token is critical when its weight is non-zero.
pub fn token_stats(params: &Params, records: &Records<'_>) -> Vec<TokenStatsRow> {
    let mut out = Vec::new();
    for model in &params.models {
        let stats: Option<Vec<StatsLine>> = records
            .output(&label::token_stats(model), "stats.jsonl")
            .and_then(|b| jsonl(&b));
        for (method, crit) in cft_methods(params) {
            let weights: Option<Vec<WeightsLine>> = records
                .output(&label::criticality(model, &crit), "weights.jsonl")
                .and_then(|b| jsonl(&b));
            let (mut critical, mut normal) = (Acc::default(), Acc::default());
            if let (Some(stats), Some(weights)) = (&stats, &weights) {
                let by_idx: BTreeMap<u64, &StatsLine> = stats.iter().map(|s| (s.idx, s)).collect();
                for w in weights {
                    let Some(s) = by_idx.get(&w.idx) else {
                        continue;
                    };
                    for (t, weight) in w.weights.iter().enumerate() {
                        let (Some(&p), Some(&e)) = (s.prob.get(t), s.entropy.get(t)) else {
                            break;
                        };
                        match *weight > 0.0 {
                            true => critical.add(p, e),
                            false => normal.add(p, e),
                        }
                    }
                }
            }
            out.push(TokenStatsRow {
                model: model.clone(),
                method: method.label.clone(),
                critical: critical.stats(),
                normal: normal.stats(),
            });
        }
    }
    out
}

pub const CATEGORIES: [&str; 6] = [
    "number",
    "operator",
    "punctuation",
    "special",
    "word",
    "other",
];

/// Figure 5 for each model and CFT rule: shares of each category.
pub fn categories(params: &Params, records: &Records<'_>) -> Vec<CategoryRow> {
    let shares = |v: &Value| -> Vec<(String, f64)> {
        let counts: Vec<f64> = CATEGORIES
            .iter()
            .map(|c| v[*c].as_f64().unwrap_or(0.0))
            .collect();
        let total: f64 = counts.iter().sum();
        CATEGORIES
            .iter()
            .zip(counts)
            .map(|(c, n)| (c.to_string(), if total > 0.0 { n / total } else { 0.0 }))
            .collect()
    };
    let mut out = Vec::new();
    for model in &params.models {
        for (method, crit) in cft_methods(params) {
            let Some(cats) = records
                .metrics(&label::criticality(model, &crit))
                .map(|m| &m["categories"])
                .filter(|c| c.is_object())
            else {
                continue;
            };
            // No correct responses, no tokens: nothing to show rather than bars of zeros.
            let counted = |side: &str| {
                CATEGORIES
                    .iter()
                    .any(|c| cats[side][*c].as_f64() > Some(0.0))
            };
            if !counted("critical") && !counted("normal") {
                continue;
            }
            out.push(CategoryRow {
                model: model.clone(),
                method: method.label.clone(),
                critical: shares(&cats["critical"]),
                normal: shares(&cats["normal"]),
            });
        }
    }
    out
}

/// The share of the annotated response tokens a `train` record put weight on — what the
/// paper's "fine-tuning on less than 12% of tokens" counts, so 1 for SFT. Prompt tokens are
/// not in it: `train_tokens` counts them, and dividing by it would halve every share.
/// `None` for records written before `response_tokens` was recorded.
pub fn trained_share(train: &Value) -> Option<f64> {
    let weighted = train["weighted_tokens"].as_f64()?;
    let response = train["response_tokens"].as_f64()?;
    (response > 0.0).then(|| weighted / response)
}

/// Training of each method's chosen cell: the fraction of tokens it trained on, its final
/// loss and its curve.
pub fn training(
    params: &Params,
    records: &Records<'_>,
    chosen: &BTreeMap<(String, String), String>,
) -> Vec<TrainingRow> {
    let mut out = Vec::new();
    for model in &params.models {
        for method in &params.methods {
            let Some(cell) = chosen.get(&(model.clone(), method.name.clone())) else {
                continue;
            };
            let train = records.metrics(&label::train(model, &method.name, cell));
            let t = |k: &str| train.and_then(|m| m[k].as_f64());
            // A record without the response-token count (or no record yet): the share of the
            // annotated tokens the method's weights select, which is what training trains on
            // up to `max_length` truncation; SFT and DFT weigh every response token.
            let fraction = train.and_then(trained_share).or_else(|| {
                if let Some(responses) = &method.responses {
                    return responses_share(records, model, method, responses);
                }
                records
                    .metrics(&label::selection(model, &method.name))
                    .and_then(|m| m["fraction"].as_f64())
                    .or_else(|| {
                        method.criticality().and_then(|c| {
                            records
                                .metrics(&label::criticality(model, &c))
                                .and_then(|m| m["critical_ratio"].as_f64())
                        })
                    })
                    .or_else(|| {
                        matches!(method.kind, MethodKind::Sft | MethodKind::Dft).then_some(1.0)
                    })
            });
            let curve = train
                .and_then(|m| m["steps"].as_array())
                .map(|steps| {
                    steps
                        .iter()
                        .filter_map(|s| Some((s["step"].as_f64()?, s["loss"].as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            out.push(TrainingRow {
                model: model.clone(),
                method: method.label.clone(),
                cell: cell.clone(),
                fraction,
                final_loss: t("final_loss"),
                train_tokens: train.and_then(|m| m["train_tokens"].as_u64()),
                seconds: t("seconds"),
                curve,
            });
        }
    }
    out
}

/// [`training`]'s share for a train record without response-token counts, of a method on
/// sampled or transferred responses (Figure 4): SFT and DFT weigh every token; CFT on
/// transferred responses what the `score` stage marked of them; CFT on greedy and sampled
/// responses the critical tokens of the greedy ones (its criticality) and the tokens the
/// `score` stage marked of the sampled ones, over the tokens of both.
fn responses_share(
    records: &Records<'_>,
    model: &str,
    method: &MethodParams,
    responses: &str,
) -> Option<f64> {
    match method.kind {
        MethodKind::Sft | MethodKind::Dft => return Some(1.0),
        MethodKind::Cft { .. } => {}
        _ => return None,
    }
    let score = records.metrics(&label::score(model, &method.name))?;
    if responses.starts_with("from:") {
        return score["fraction"].as_f64();
    }
    let crit = records.metrics(&label::criticality(model, &method.criticality()?))?;
    let tokens = crit["tokens"].as_f64()? + score["tokens"].as_f64()?;
    let weighted = crit["critical_tokens"].as_f64()? + score["selected"].as_f64()?;
    (tokens > 0.0).then(|| weighted / tokens)
}

/// Pass@N curves (Figure 2) of the base model and each method's chosen cell, on every
/// benchmark that was sampled.
pub fn pass_at(
    params: &Params,
    records: &Records<'_>,
    chosen: &BTreeMap<(String, String), String>,
) -> Vec<PassCurve> {
    let curve = |l: &str| -> Option<Vec<f64>> {
        let map = records.metrics(l)?["pass_at"].as_object()?;
        let mut points: Vec<(u64, f64)> = map
            .iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_f64()?)))
            .collect();
        points.sort_by_key(|p| p.0);
        (!points.is_empty()).then(|| points.into_iter().map(|p| p.1 * 100.0).collect())
    };
    let mut out = Vec::new();
    for model in &params.models {
        for bench in &params.benchmarks {
            if let Some(values) = curve(&label::eval_base(model, bench)) {
                out.push(PassCurve {
                    model: model.clone(),
                    benchmark: bench.clone(),
                    method: format!("{model} (base)"),
                    cell: None,
                    values,
                });
            }
            for method in &params.methods {
                let Some(cell) = chosen.get(&(model.clone(), method.name.clone())) else {
                    continue;
                };
                if let Some(values) = curve(&label::eval(model, &method.name, cell, bench)) {
                    out.push(PassCurve {
                        model: model.clone(),
                        benchmark: bench.clone(),
                        method: method.label.clone(),
                        cell: Some(cell.clone()),
                        values,
                    });
                }
            }
        }
    }
    out
}

/// Figure 6 (App. C.3) from the accuracy blocks and the training rows: per model, the methods
/// of [`super::NumberOnly`], when the manifest has a `number` method.
pub fn number_only(
    params: &Params,
    blocks: &[super::Block],
    training: &[super::TrainingRow],
) -> Vec<super::NumberOnly> {
    use crate::manifest::MethodKind;
    let restricted: Vec<&str> = params
        .methods
        .iter()
        .filter_map(|m| match &m.kind {
            MethodKind::Number { within } => Some(within.as_deref().unwrap_or("")),
            _ => None,
        })
        .collect();
    if restricted.is_empty() {
        return Vec::new();
    }
    let shown: Vec<&str> = params
        .methods
        .iter()
        .filter(|m| {
            matches!(m.kind, MethodKind::Sft | MethodKind::Number { .. })
                || restricted.contains(&m.name.as_str())
        })
        .map(|m| m.name.as_str())
        .collect();
    blocks
        .iter()
        .map(|b| super::NumberOnly {
            model: b.model.clone(),
            bars: b
                .rows
                .iter()
                .filter(|r| shown.contains(&r.method.as_str()))
                .map(|r| super::NumberBar {
                    method: r.method.clone(),
                    label: r.label.clone(),
                    cell: r.cell.clone(),
                    scores: r.scores.clone(),
                    average: r.average,
                    fraction: training
                        .iter()
                        .find(|t| {
                            t.model == b.model
                                && t.method == r.label
                                && Some(&t.cell) == r.cell.as_ref()
                        })
                        .and_then(|t| t.fraction),
                })
                .collect(),
        })
        .collect()
}

/// Table 3: where the methods train under more than one adapter, one row per method kind
/// (with its settings) and one column per adapter, in the manifest's order.
pub fn adapters(params: &Params, blocks: &[super::Block]) -> Vec<super::AdapterTable> {
    let mut columns: Vec<String> = Vec::new();
    for m in &params.methods {
        if let Some(a) = &m.adapter
            && !columns.contains(a)
        {
            columns.push(a.clone());
        }
    }
    if columns.len() < 2 {
        return Vec::new();
    }
    // Row i: the methods of the i-th distinct kind.
    let mut kinds: Vec<&crate::manifest::MethodKind> = Vec::new();
    for m in &params.methods {
        if !kinds.contains(&&m.kind) {
            kinds.push(&m.kind);
        }
    }
    blocks
        .iter()
        .map(|b| super::AdapterTable {
            model: b.model.clone(),
            columns: columns.clone(),
            rows: kinds
                .iter()
                .map(|kind| {
                    let of_kind: Vec<_> =
                        params.methods.iter().filter(|m| &m.kind == *kind).collect();
                    super::AdapterRow {
                        label: of_kind.first().map_or(String::new(), |m| m.label.clone()),
                        cells: columns
                            .iter()
                            .map(|c| {
                                let m = of_kind.iter().find(|m| m.adapter.as_ref() == Some(c))?;
                                let row = b.rows.iter().find(|r| r.method == m.name)?;
                                Some(super::AdapterCell {
                                    method: m.name.clone(),
                                    cell: row.cell.clone(),
                                    average: row.average,
                                })
                            })
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect()
}

/// A Figure 4 column's title from a method's `responses`.
pub fn responses_title(responses: Option<&str>) -> String {
    match responses {
        None => "Greedy".into(),
        Some("greedy+sampled") => "Greedy + sampled".into(),
        Some(other) => match other.strip_prefix("from:") {
            Some(source) => format!("Transferred from {source}"),
            None => other.to_string(),
        },
    }
}

/// Figure 4 (§5.1-5.2), where some method trains on sampled or transferred responses: per
/// model, one row per method kind (with its settings) among those of such methods, one column
/// per set of responses in the manifest's order; a cell holds the first method of its kind
/// and responses, as [`adapters`] fills its cells, and nothing where that method trains on
/// this model's own responses "transferred" (the planner trains no such stage).
pub fn responses(
    params: &Params,
    records: &Records<'_>,
    blocks: &[super::Block],
) -> Vec<super::ResponsesTable> {
    if params.methods.iter().all(|m| m.responses.is_none()) {
        return Vec::new();
    }
    let mut groups: Vec<Option<&str>> = Vec::new();
    for m in &params.methods {
        let g = m.responses.as_deref();
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    let mut kinds: Vec<&MethodKind> = Vec::new();
    for m in params.methods.iter().filter(|m| m.responses.is_some()) {
        if !kinds.contains(&&m.kind) {
            kinds.push(&m.kind);
        }
    }
    blocks
        .iter()
        .map(|b| {
            let own = format!("from:{}", b.model);
            super::ResponsesTable {
                model: b.model.clone(),
                columns: groups.iter().map(|g| responses_title(*g)).collect(),
                responses: groups.iter().map(|g| g.map(str::to_string)).collect(),
                rows: kinds
                    .iter()
                    .map(|kind| {
                        let of_kind: Vec<_> =
                            params.methods.iter().filter(|m| &m.kind == *kind).collect();
                        super::AdapterRow {
                            label: of_kind.first().map_or(String::new(), |m| m.label.clone()),
                            cells: groups
                                .iter()
                                .map(|g| {
                                    let m =
                                        of_kind.iter().find(|m| m.responses.as_deref() == *g)?;
                                    if *g == Some(own.as_str()) {
                                        return None;
                                    }
                                    let row = b.rows.iter().find(|r| r.method == m.name)?;
                                    Some(super::AdapterCell {
                                        method: m.name.clone(),
                                        cell: row.cell.clone(),
                                        average: row.average,
                                    })
                                })
                                .collect(),
                        }
                    })
                    .collect(),
                sampling: sampling(records, &b.model),
            }
        })
        .collect()
}

/// §5.1's counts from a model's `sample` record, if it has one.
fn sampling(records: &Records<'_>, model: &str) -> Option<super::Sampling> {
    let m = records.metrics(&label::sample(model))?;
    Some(super::Sampling {
        questions: m["questions"].as_u64(),
        solved: m["solved"].as_u64(),
        attempts_mean: m["attempts_mean"].as_f64(),
        limit: m["limit"].as_u64(),
        samples: m["samples"].as_u64(),
        seconds: m["seconds"].as_f64(),
    })
}

/// Figure 3: each model's GRPO runs from `base` and from each method, as their records say.
pub fn rl(params: &Params, records: &Records<'_>) -> Vec<super::RlRun> {
    let mut out = Vec::new();
    let starts: Vec<(&str, &str)> = std::iter::once(("base", "base"))
        .chain(
            params
                .methods
                .iter()
                .map(|m| (m.name.as_str(), m.label.as_str())),
        )
        .collect();
    for model in &params.models {
        for &(start, start_label) in &starts {
            let Some(m) = records.metrics(&label::grpo(model, start)) else {
                continue;
            };
            let steps = m["steps"].as_array().cloned().unwrap_or_default();
            let series = |key: &str| -> Vec<(f64, f64)> {
                steps
                    .iter()
                    .filter_map(|s| Some((s["step"].as_f64()?, s[key].as_f64()?)))
                    .collect()
            };
            let evals = m["evals"].as_array().cloned().unwrap_or_default();
            let mut benchmarks: Vec<String> = Vec::new();
            for e in &evals {
                if let Some(acc) = e["accuracy"].as_object() {
                    for b in acc.keys() {
                        if !benchmarks.contains(b) {
                            benchmarks.push(b.clone());
                        }
                    }
                }
            }
            // The manifest's order of benchmarks, then any other.
            benchmarks.sort_by_key(|b| {
                params
                    .benchmarks
                    .iter()
                    .position(|x| x == b)
                    .unwrap_or(usize::MAX)
            });
            let accuracy = benchmarks
                .iter()
                .map(|b| {
                    evals
                        .iter()
                        .filter_map(|e| {
                            Some((e["step"].as_f64()?, e["accuracy"][b].as_f64()? * 100.0))
                        })
                        .collect()
                })
                .collect();
            out.push(super::RlRun {
                model: model.clone(),
                start: start.to_string(),
                label: start_label.to_string(),
                cell: m["cell"].as_str().map(str::to_string),
                steps: steps.last().and_then(|s| s["step"].as_u64()).unwrap_or(0),
                entropy: series("entropy"),
                reward: series("reward"),
                benchmarks,
                accuracy,
                reward_first: m["reward_first"].as_f64(),
                reward_last: m["reward_last"].as_f64(),
            });
        }
    }
    out
}
