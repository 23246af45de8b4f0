//! A cache of fabricated records, as the greedy, criticality, token-stats, selection, train
//! and eval stages would write them for a small manifest: what `tests/report.rs` builds its
//! reports from and `benches/report.rs` times.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cft::cache::{Cache, OutputRef, Record, RecordStatus};
use cft::plan::{self, Plan, StageSpec};
use cft::report::Report;
use cft::report::load::{from_store, read_output};
use cft::rng::Rng;
use serde_json::{Value, json};

pub const QUESTIONS: u64 = 120;

pub fn manifest(dir: &Path) -> PathBuf {
    let path = dir.join("fab.toml");
    let text = r#"
[experiment]
name = "fab"
seed = 7

[[model]]
name = "tiny"
[model.toy]
hidden_size = 32
num_layers = 1
[model.toy.pretrain]
steps = 10

[data.train]
synthetic = { split = "train", n = 20 }

[[method]]
name = "sft"
label = "SFT"
kind = "sft"

[[method]]
name = "strict3"
label = "CFT"
kind = "cft"
rule = "strict"
k = 3

[[method]]
name = "entropy"
label = "Entropy"
kind = "entropy"
match = "strict3"

[train]
learning_rate = [1e-4, 2e-4]

[eval]
benchmarks = [
  { name = "toy-a", synthetic = { split = "test", n = 10 } },
  { name = "toy-b", synthetic = { split = "hard", n = 10 } },
]

[eval.sampling]
n = 4
"#;
    std::fs::write(&path, text).unwrap();
    path
}

/// Each subject's probability of answering a question correctly.
pub fn accuracy_of(method: &str, cell: &str, bench: &str) -> f64 {
    let p = match (method, cell) {
        ("base", _) => 0.30,
        ("sft", "lr1e-4") => 0.50,
        ("sft", _) => 0.45,
        ("strict3", "lr1e-4") => 0.55,
        ("strict3", _) => 0.64,
        ("entropy", "lr1e-4") => 0.50,
        _ => 0.52,
    };
    if bench == "toy-b" { p - 0.1 } else { p }
}

pub fn record(cache: &Cache, spec: &StageSpec, metrics: Value, outputs: Vec<(&str, Vec<u8>)>) {
    let outputs: BTreeMap<String, OutputRef> = outputs
        .into_iter()
        .map(|(name, bytes)| {
            let hash = cache.put_artifact(&bytes).unwrap();
            (
                name.to_string(),
                OutputRef::Artifact {
                    hash,
                    size: bytes.len() as u64,
                },
            )
        })
        .collect();
    cache
        .put_record(&Record {
            key: spec.key.clone(),
            kind: spec.kind.name().to_string(),
            version: spec.version,
            label: spec.label.clone(),
            slot: spec.slot.clone(),
            params: spec.params.clone(),
            inputs: spec.inputs.clone(),
            status: RecordStatus::Done,
            outputs,
            metrics,
            progress: None,
            error: None,
            fault: None,
            pid: None,
            host: None,
            device: None,
            job: None,
            job_state: None,
            kernels: None,
            started_at: 0,
            elapsed_s: 1.0,
        })
        .unwrap();
}

pub fn jsonl(lines: impl Iterator<Item = Value>) -> Vec<u8> {
    lines
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Records for every stage the report reads, except the entropy method's training records
/// (so the report must show "—" for them).
pub fn fabricate(cache: &Cache, plan: &Plan) {
    for spec in plan.order() {
        let words: Vec<&str> = spec.label.split(' ').collect();
        match spec.kind.name() {
            "eval" => {
                let (method, cell) = match words[2] {
                    "base" => ("base", ""),
                    m => (m, words[3]),
                };
                let bench = *words.last().unwrap();
                let p = accuracy_of(method, cell, bench);
                let mut rng = Rng::stream(1, &spec.label);
                let mut counts = Vec::new();
                let outputs: Vec<Value> = (0..QUESTIONS)
                    .map(|idx| {
                        let correct = rng.unit() < p;
                        let samples: Vec<bool> = (0..4).map(|_| rng.unit() < p).collect();
                        counts.push((4, samples.iter().filter(|c| **c).count() as u64));
                        json!({"idx": idx, "response": "The answer is 3.", "tokens": 5, "pred": "3", "correct": correct, "entropy": 0.5, "samples": {"preds": ["3", "3", "3", "3"], "correct": samples}})
                    })
                    .collect();
                let correct = outputs.iter().filter(|o| o["correct"] == true).count();
                let curve: serde_json::Map<String, Value> =
                    cft::eval::pass_at::pass_at_curve(&counts)
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| ((i + 1).to_string(), json!(v)))
                        .collect();
                record(
                    cache,
                    spec,
                    json!({"accuracy": correct as f64 / QUESTIONS as f64, "n_questions": QUESTIONS, "correct": correct, "pass_at": curve, "mean_entropy": 0.5, "mean_tokens": 5.0, "seconds": 2.0}),
                    vec![("outputs.jsonl", jsonl(outputs.into_iter()))],
                );
            }
            "greedy" => record(
                cache,
                spec,
                json!({"accuracy": 0.6, "correct": 12, "total": 20, "mean_response_tokens": 31.5, "mean_correct_response_tokens": 10.0, "seconds": 3.0}),
                vec![],
            ),
            "criticality" => {
                let weights = (0..12u64).map(|idx| {
                    json!({"idx": idx, "weights": (0..10).map(|t| if (t + idx) % 5 == 0 { 1.0 } else { 0.0 }).collect::<Vec<f32>>()})
                });
                record(
                    cache,
                    spec,
                    json!({"rule": "strict", "k": 3, "critical_ratio": 0.2, "examples": 12, "tokens": 120, "critical_tokens": 24, "seconds_per_1k": 41.0,
                        "categories": {"critical": {"number": 16, "operator": 2, "punctuation": 1, "special": 0, "word": 4, "other": 1},
                                       "normal": {"number": 20, "operator": 6, "punctuation": 20, "special": 2, "word": 44, "other": 4}}}),
                    vec![("weights.jsonl", jsonl(weights))],
                );
            }
            "token-stats" => {
                let stats = (0..12u64).map(|idx| {
                    json!({"idx": idx,
                        "prob": (0..10).map(|t| if (t + idx) % 5 == 0 { 0.9 } else { 0.6 }).collect::<Vec<f32>>(),
                        "entropy": (0..10).map(|t| if (t + idx) % 5 == 0 { 0.2 } else { 1.0 }).collect::<Vec<f32>>(),
                        "attention": vec![0.1f32; 10]})
                });
                record(cache, spec, json!({}), vec![("stats.jsonl", jsonl(stats))]);
            }
            "selection" => record(
                cache,
                spec,
                json!({"selection": "entropy", "fraction": 0.2, "tokens": 120, "selected": 24}),
                vec![],
            ),
            "train" if words[2] != "entropy" => {
                let steps: Vec<Value> = (1..=5)
                    .map(|s| json!({"step": s, "loss": 2.0 / s as f64, "lr": 1e-4, "grad_norm": 1.0, "tokens_per_s": 100.0, "weighted_fraction": 0.2}))
                    .collect();
                // 120 response tokens, and 80 prompt tokens in the batches too.
                let weighted = if words[2] == "sft" { 120 } else { 24 };
                record(
                    cache,
                    spec,
                    json!({"steps": steps, "final_loss": 0.4, "train_tokens": 200, "weighted_tokens": weighted, "response_tokens": 120, "seconds": 9.5}),
                    vec![],
                );
            }
            _ => {}
        }
    }
}

pub fn setup(dir: &Path) -> (Plan, PathBuf) {
    let file = manifest(dir);
    let exp = cft::manifest::load(&file).unwrap();
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    let plan = plan::build(&exp, &cache).unwrap();
    fabricate(&cache, &plan);
    cache.flush().unwrap();
    (plan, file)
}

pub fn report_of(dir: &Path, plan: &Plan) -> Report {
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    let read = |r: &Record, name: &str| read_output(&cache, r, name);
    from_store(plan, &cache, &read).unwrap()
}
