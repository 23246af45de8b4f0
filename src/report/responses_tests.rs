//! Figure 4 (paper §5.1-5.2) from fabricated records: the table of each model's methods on
//! greedy, greedy + sampled and transferred responses, the sampling counts under it, and its
//! absence where every method trains on the model's own greedy responses.

use serde_json::{Value, json};

use super::files::artifacts;
use super::inputs::{Params, Records, label};
use super::{Report, build, compare, markdown};
use crate::cache::Record;

fn method(name: &str, label: &str, kind: Value, cells: &[&str], responses: Option<&str>) -> Value {
    let mut m = json!({"name": name, "label": label, "kind": kind, "cells": cells});
    if let Some(r) = responses {
        m["responses"] = json!(r);
    }
    m
}

fn params(methods: Vec<Value>) -> Params {
    serde_json::from_value(json!({
        "experiment": "fig4",
        "seed": 7,
        "models": ["big", "small"],
        "methods": methods,
        "benchmarks": ["a", "b"],
        "report": {
            "baseline": "sft",
            "select": {"by": "best-average"},
            "bootstrap": 10,
            "confidence": 0.95,
            "timings": false,
        },
    }))
    .unwrap()
}

fn strict() -> Value {
    json!({"kind": "cft", "rule": "strict", "k": 3})
}

/// SFT and CFT on greedy, greedy + sampled and (CFT only) `big`'s responses; a second CFT of
/// the same kind on greedy responses, and an Entropy baseline no method on other responses
/// shares a kind with.
fn figure4_params() -> Params {
    params(vec![
        method("sft", "SFT", json!({"kind": "sft"}), &["c1"], None),
        method("cft", "CFT", strict(), &["c1", "c2"], None),
        method("cft-lora", "CFT (LoRA)", strict(), &["c1"], None),
        method(
            "entropy",
            "Entropy",
            json!({"kind": "entropy", "matched": "cft", "scope": "global"}),
            &["c1"],
            None,
        ),
        method(
            "sft-sampled",
            "SFT (sampled)",
            json!({"kind": "sft"}),
            &["c1"],
            Some("greedy+sampled"),
        ),
        method(
            "cft-sampled",
            "CFT (sampled)",
            strict(),
            &["c1"],
            Some("greedy+sampled"),
        ),
        method(
            "cft-from-big",
            "CFT (from big)",
            strict(),
            &["c1"],
            Some("from:big"),
        ),
    ])
}

fn record(label: &str, kind: &str, metrics: Value) -> Record {
    serde_json::from_value(json!({
        "key": format!("key-{label}"),
        "kind": kind,
        "version": 1,
        "label": label,
        "slot": format!("fig4/{label}"),
        "params": null,
        "inputs": [],
        "status": "done",
        "metrics": metrics,
    }))
    .unwrap()
}

/// Evals of `(model, method, cell)` at one accuracy on both benchmarks; `big` has no stages of
/// `cft-from-big` (its own responses "transferred"), and only `big` was sampled.
fn figure4_records() -> Vec<Record> {
    let evals: [(&str, &str, &str, f64); 14] = [
        ("big", "sft", "c1", 0.40),
        ("big", "cft", "c1", 0.50),
        ("big", "cft", "c2", 0.55),
        ("big", "cft-lora", "c1", 0.99),
        ("big", "entropy", "c1", 0.41),
        ("big", "sft-sampled", "c1", 0.42),
        ("big", "cft-sampled", "c1", 0.60),
        ("small", "sft", "c1", 0.30),
        ("small", "cft", "c1", 0.35),
        ("small", "cft", "c2", 0.33),
        ("small", "cft-lora", "c1", 0.99),
        ("small", "sft-sampled", "c1", 0.31),
        ("small", "cft-sampled", "c1", 0.38),
        ("small", "cft-from-big", "c1", 0.45),
    ];
    let mut out = Vec::new();
    for (model, m, cell, acc) in evals {
        for bench in ["a", "b"] {
            out.push(record(
                &label::eval(model, m, cell, bench),
                "eval",
                json!({"accuracy": acc}),
            ));
        }
    }
    out.push(record(
        &label::sample("big"),
        "sample",
        json!({"questions": 1459, "solved": 1334, "attempts_mean": 7.31, "limit": 100,
               "samples": 20512, "seconds": 12.5}),
    ));
    out.push(record(
        &label::criticality("big", "strict-k3"),
        "criticality",
        json!({"rule": "strict", "k": 3, "examples": 100, "tokens": 1000,
               "critical_tokens": 200, "critical_ratio": 0.2}),
    ));
    out.push(record(
        &label::score("big", "cft-sampled"),
        "score",
        json!({"reused": false, "tokens": 500, "selected": 75, "fraction": 0.15}),
    ));
    out.push(record(
        &label::score("small", "cft-from-big"),
        "score",
        json!({"reused": true, "tokens": 800, "selected": 96, "fraction": 0.12}),
    ));
    out
}

fn report_of(params: &Params, records: Vec<Record>) -> Report {
    let read = |_: &Record, _: &str| None;
    build(params, &Records::new(records, &read))
}

fn file(files: &[(String, Vec<u8>)], name: &str) -> String {
    String::from_utf8(files.iter().find(|f| f.0 == name).unwrap().1.clone()).unwrap()
}

#[test]
fn the_table_has_a_column_per_set_of_responses_and_a_row_per_kind() {
    let report = report_of(&figure4_params(), figure4_records());
    assert_eq!(report.responses.len(), 2, "one table per model");
    let big = &report.responses[0];
    assert_eq!(big.model, "big");
    assert_eq!(
        big.columns,
        ["Greedy", "Greedy + sampled", "Transferred from big"]
    );
    assert_eq!(
        big.responses,
        [
            None,
            Some("greedy+sampled".to_string()),
            Some("from:big".to_string())
        ]
    );
    // The kinds of methods on other responses only: no Entropy row.
    let labels: Vec<&str> = big.rows.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["SFT", "CFT"]);
    let cell = |t: &super::ResponsesTable, row: usize, col: usize| t.rows[row].cells[col].clone();
    // The first method of a kind and responses: `cft` at its best cell, not `cft-lora`.
    let greedy_cft = cell(big, 1, 0).unwrap();
    assert_eq!(greedy_cft.method, "cft");
    assert_eq!(greedy_cft.cell.as_deref(), Some("c2"));
    assert!((greedy_cft.average.unwrap() - 55.0).abs() < 1e-9);
    let sampled_cft = cell(big, 1, 1).unwrap();
    assert_eq!(sampled_cft.method, "cft-sampled");
    assert!((sampled_cft.average.unwrap() - 60.0).abs() < 1e-9);
    // No SFT on transferred responses; no CFT on big's own responses "transferred" to big.
    assert!(cell(big, 0, 2).is_none());
    assert!(cell(big, 1, 2).is_none());

    let small = &report.responses[1];
    assert_eq!(small.columns, big.columns);
    let transferred = cell(small, 1, 2).unwrap();
    assert_eq!(transferred.method, "cft-from-big");
    assert_eq!(transferred.cell.as_deref(), Some("c1"));
    assert!((transferred.average.unwrap() - 45.0).abs() < 1e-9);
    assert_eq!(cell(small, 1, 0).unwrap().cell.as_deref(), Some("c1"));

    let md = markdown::render(&report, &[]);
    assert!(md.contains("## Training responses (Figure 4)"), "{md}");
    assert!(
        md.contains("| Method | Greedy (%) | Greedy + sampled (%) | Transferred from big (%) |"),
        "{md}"
    );
    assert!(md.contains("| SFT | 40.0 | 42.0 | — |"), "{md}");
    assert!(md.contains("| CFT | 55.0 | 60.0 | — |"), "{md}");
    assert!(md.contains("| SFT | 30.0 | 31.0 | — |"), "{md}");
    assert!(md.contains("| CFT | 35.0 | 38.0 | 45.0 |"), "{md}");

    // The main table still shows the method big does not train, as dashes.
    let row = report.blocks[0]
        .rows
        .iter()
        .find(|r| r.method == "cft-from-big")
        .unwrap();
    assert!(row.cell.is_none() && row.average.is_none());
}

#[test]
fn the_sampling_counts_are_under_the_sampled_models_table() {
    let report = report_of(&figure4_params(), figure4_records());
    let s = report.responses[0].sampling.as_ref().unwrap();
    assert_eq!(
        (s.questions, s.solved, s.limit),
        (Some(1459), Some(1334), Some(100))
    );
    assert_eq!(s.samples, Some(20512));
    assert_eq!(s.attempts_mean, Some(7.31));
    assert_eq!(s.seconds, None, "no timings in this report");
    assert!(
        report.responses[1].sampling.is_none(),
        "small was not sampled"
    );

    let line = "Sampling (§5.1): 1,334 of 1,459 questions greedy decoding got wrong solved within 100 attempts (mean 7.3 attempts); 20,512 samples drawn.";
    let files = artifacts(&report).unwrap();
    let md = file(&files, "report.md");
    assert_eq!(md.matches(line).count(), 1, "{md}");
    // Under big's table, before small's.
    let at = md.find(line).unwrap();
    assert!(md.find("| CFT | 55.0 | 60.0 | — |").unwrap() < at);
    assert!(at < md.find("| CFT | 35.0 | 38.0 | 45.0 |").unwrap());
    assert!(file(&files, "report.html").contains(line));

    let json: Value = serde_json::from_str(&file(&files, "report.json")).unwrap();
    let t = &json["responses"][0];
    assert_eq!(t["sampling"]["solved"], 1334);
    assert_eq!(t["sampling"]["questions"], 1459);
    assert_eq!(t["rows"][1]["cells"][2], Value::Null);
    assert_eq!(
        json["responses"][1]["rows"][1]["cells"][2]["method"],
        "cft-from-big"
    );

    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert!(names.contains(&"plots/responses.svg"), "{names:?}");
    assert!(names.contains(&"plots/responses.png"), "{names:?}");
    let svg = file(&files, "plots/responses.svg");
    // Groups with a method to show: not big's own responses "transferred" to it.
    assert!(svg.contains("Greedy + sampled") && svg.contains("Transferred from big"));
    if let Ok(keep) = std::env::var("CFT_KEEP_REPORT") {
        super::write_files(std::path::Path::new(&keep), &files).unwrap();
    }
    let lines = |text: &str| svg.lines().filter(|l| l.trim() == text).count();
    assert_eq!(lines("Transferred from big"), 1, "{svg}");
    assert_eq!(lines("Greedy + sampled"), 2, "{svg}");
}

#[test]
fn methods_on_other_responses_keep_the_other_tables_whole() {
    let report = report_of(&figure4_params(), figure4_records());
    // Table 4 annotates the greedy responses: one row per greedy CFT rule (CFT trained fully
    // and with LoRA share theirs), none repeated for the methods on sampled or transferred
    // responses.
    let rules: Vec<Option<&str>> = report
        .annotation
        .iter()
        .filter(|a| a.model == "big")
        .map(|a| a.method.as_deref())
        .collect();
    assert_eq!(rules, [Some("CFT, CFT (LoRA)")]);
    // Tokens trained on, from the weighing records when the train record is absent: greedy
    // critical tokens and sampled marked ones over both; the transferred ones' score share.
    let fraction = |model: &str, method: &str| {
        report
            .training
            .iter()
            .find(|t| t.model == model && t.method == method)
            .and_then(|t| t.fraction)
    };
    let sampled = fraction("big", "CFT (sampled)").unwrap();
    assert!((sampled - 275.0 / 1500.0).abs() < 1e-12, "{sampled}");
    assert_eq!(fraction("small", "CFT (from big)"), Some(0.12));
    assert_eq!(fraction("small", "SFT (sampled)"), Some(1.0));
    assert!(
        report
            .training
            .iter()
            .all(|t| !(t.model == "big" && t.method == "CFT (from big)")),
        "big trains no method on its own responses transferred"
    );
}

#[test]
fn no_section_without_a_method_on_other_responses() {
    let greedy_only = params(vec![
        method("sft", "SFT", json!({"kind": "sft"}), &["c1"], None),
        method("cft", "CFT", strict(), &["c1", "c2"], None),
    ]);
    let report = report_of(&greedy_only, figure4_records());
    assert!(report.responses.is_empty());
    let files = artifacts(&report).unwrap();
    let md = file(&files, "report.md");
    assert!(!md.contains("Training responses"), "{md}");
    assert!(!md.contains("Sampling (§5.1)"), "{md}");
    let json: Value = serde_json::from_str(&file(&files, "report.json")).unwrap();
    assert!(json.get("responses").is_none());
    assert!(files.iter().all(|f| !f.0.starts_with("plots/responses.")));
}

#[test]
fn compare_concatenates_the_tables_with_tagged_labels() {
    let report = report_of(&figure4_params(), figure4_records());
    let merged = compare::merge(&[report.clone(), report]);
    assert_eq!(merged.responses.len(), 4);
    assert_eq!(merged.responses[2].model, "big");
    assert_eq!(merged.responses[0].rows[1].label, "fig4: CFT");
    assert!(merged.responses[0].sampling.is_some());
    let md = markdown::render(&merged, &[]);
    assert!(md.contains("| fig4: CFT | 35.0 | 38.0 | 45.0 |"), "{md}");
}
