//! Table 1/2/6 from eval records: per model, the base model's row, then each method's chosen
//! cell, with the average over benchmarks, the delta against the baseline method and paired
//! bootstrap intervals for every delta.

use std::collections::BTreeMap;

use super::bootstrap::{mean_of, percentile_interval, replicates};
use super::inputs::{Params, Records, label};
use super::select::{Candidate, Selection, choose, complete_average};
use super::{Block, Report, Row, analysis};
use crate::rng::Rng;

/// The report of one experiment.
pub fn build(params: &Params, records: &Records<'_>) -> Report {
    let settings = &params.report;
    let rule = Selection::from_select(&settings.select);
    let mut chosen: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut blocks = Vec::new();
    for model in &params.models {
        let (block, cells) = model_block(params, records, model, &rule);
        for (method, cell) in cells {
            chosen.insert((model.clone(), method), cell);
        }
        blocks.push(block);
    }
    let baseline = params
        .methods
        .iter()
        .find(|m| m.name == settings.baseline)
        .map_or(settings.baseline.clone(), |m| m.label.clone());
    let mut annotation = analysis::annotation(params, records);
    let mut training = analysis::training(params, records, &chosen);
    if !settings.timings {
        annotation.iter_mut().for_each(|a| a.seconds_per_1k = None);
        training.iter_mut().for_each(|t| t.seconds = None);
    }
    let number_only = analysis::number_only(params, &blocks, &training);
    let adapters = analysis::adapters(params, &blocks);
    let mut responses = analysis::responses(params, records, &blocks);
    if !settings.timings {
        responses
            .iter_mut()
            .filter_map(|t| t.sampling.as_mut())
            .for_each(|s| s.seconds = None);
    }
    Report {
        experiment: params.experiment.clone(),
        baseline,
        select: rule.describe(),
        confidence: settings.confidence,
        bootstrap: settings.bootstrap,
        timings: settings.timings,
        benchmarks: params.benchmarks.clone(),
        blocks,
        annotation,
        token_stats: analysis::token_stats(params, records),
        categories: analysis::categories(params, records),
        training,
        pass_at: analysis::pass_at(params, records, &chosen),
        number_only,
        adapters,
        responses,
        rl: analysis::rl(params, records),
        cpu_dependent: records.cpu_dependent_kernels(),
    }
}

/// Accuracy in percent of an eval record.
fn accuracy(records: &Records<'_>, label: &str) -> Option<f64> {
    records
        .metrics(label)
        .and_then(|m| m["accuracy"].as_f64())
        .map(|a| a * 100.0)
}

/// One model's block, and the cell chosen for each method.
fn model_block(
    params: &Params,
    records: &Records<'_>,
    model: &str,
    rule: &Selection,
) -> (Block, Vec<(String, String)>) {
    let benches = &params.benchmarks;
    let mut rows = Vec::new();
    let base_scores: Vec<Option<f64>> = benches
        .iter()
        .map(|b| accuracy(records, &label::eval_base(model, b)))
        .collect();
    if base_scores.iter().any(Option::is_some) {
        rows.push(plain_row("base", model, None, base_scores));
    }

    // Each method's chosen cell, with its eval labels per benchmark.
    let mut picked: Vec<(usize, String, Vec<String>)> = Vec::new(); // (row, cell, labels)
    for method in &params.methods {
        let scores: Vec<Vec<Option<f64>>> = method
            .cells
            .iter()
            .map(|cell| {
                benches
                    .iter()
                    .map(|b| accuracy(records, &label::eval(model, &method.name, cell, b)))
                    .collect()
            })
            .collect();
        let candidates: Vec<Candidate<'_>> = method
            .cells
            .iter()
            .zip(&scores)
            .map(|(label, scores)| Candidate { label, scores })
            .collect();
        match choose(rule, benches, &candidates) {
            Some(i) => {
                let cell = method.cells[i].clone();
                let labels = benches
                    .iter()
                    .map(|b| label::eval(model, &method.name, &cell, b))
                    .collect();
                rows.push(plain_row(
                    &method.name,
                    &method.label,
                    Some(cell.clone()),
                    scores[i].clone(),
                ));
                picked.push((rows.len() - 1, cell, labels));
            }
            None => rows.push(plain_row(
                &method.name,
                &method.label,
                None,
                vec![None; benches.len()],
            )),
        }
    }

    // Deltas and intervals against the baseline's chosen cell.
    let baseline = &params.report.baseline;
    let base_at = picked
        .iter()
        .find(|(r, _, _)| rows[*r].method == *baseline)
        .cloned();
    if let Some((base_row, _, base_labels)) = base_at {
        let base = rows[base_row].clone();
        for (r, _, labels) in &picked {
            if *r == base_row {
                continue;
            }
            let name = rows[*r].method.clone();
            let row = &mut rows[*r];
            row.delta = row.average.zip(base.average).map(|(a, b)| a - b);
            row.bench_delta = row
                .scores
                .iter()
                .zip(&base.scores)
                .map(|(a, b)| a.zip(*b).map(|(a, b)| a - b))
                .collect();
            let mut series = Vec::new();
            for (i, (mine, theirs)) in labels.iter().zip(&base_labels).enumerate() {
                let mut rng = Rng::stream(
                    params.seed,
                    &format!("{model}/{name}/{}", params.benchmarks[i]),
                );
                let reps = paired(records, mine, theirs)
                    .map(|pairs| replicates(&pairs, params.report.bootstrap, &mut rng))
                    .unwrap_or_default();
                row.bench_ci[i] = percentile_interval(&reps, params.report.confidence).map(|iv| {
                    super::Interval {
                        low: iv.low * 100.0,
                        high: iv.high * 100.0,
                    }
                });
                series.push(reps);
            }
            let complete = series.iter().all(|s| !s.is_empty()) && !series.is_empty();
            if complete {
                row.delta_ci = percentile_interval(&mean_of(&series), params.report.confidence)
                    .map(|iv| super::Interval {
                        low: iv.low * 100.0,
                        high: iv.high * 100.0,
                    });
            }
        }
    }
    let cells = picked
        .iter()
        .map(|(r, cell, _)| (rows[*r].method.clone(), cell.clone()))
        .collect();
    (
        Block {
            model: model.to_string(),
            rows,
        },
        cells,
    )
}

fn plain_row(method: &str, label: &str, cell: Option<String>, scores: Vec<Option<f64>>) -> Row {
    let n = scores.len();
    Row {
        method: method.to_string(),
        label: label.to_string(),
        cell,
        average: complete_average(&scores),
        scores,
        delta: None,
        delta_ci: None,
        bench_delta: vec![None; n],
        bench_ci: vec![None; n],
    }
}

/// Per-question correctness of two eval records on the questions both answered, by `idx`.
fn paired(records: &Records<'_>, mine: &str, theirs: &str) -> Option<Vec<(bool, bool)>> {
    let a = records.eval_outputs(mine)?;
    let b = records.eval_outputs(theirs)?;
    let base: BTreeMap<u64, bool> = b.iter().map(|o| (o.idx, o.correct)).collect();
    let pairs: Vec<(bool, bool)> = a
        .iter()
        .filter_map(|o| base.get(&o.idx).map(|&c| (o.correct, c)))
        .collect();
    (!pairs.is_empty()).then_some(pairs)
}
