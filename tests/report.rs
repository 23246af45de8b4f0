//! Reports from cached records alone: records are fabricated in a temporary cache (as the
//! greedy, criticality, token-stats, selection, train and eval stages would write them), then
//! the report is built from them, by the library, by `cft report`, and by the `report` stage
//! inside a run.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use cft::cache::{Cache, OutputRef, Record, RecordStatus};
use cft::plan::{self, Plan, StageSpec};
use cft::report::load::{from_store, read_output};
use cft::report::{Report, files::artifacts};
use cft::rng::Rng;
use serde_json::{Value, json};

const QUESTIONS: u64 = 120;

fn manifest(dir: &Path) -> std::path::PathBuf {
    support::write(
        dir,
        "fab.toml",
        r#"
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
"#,
    )
}

/// Each subject's probability of answering a question correctly.
fn accuracy_of(method: &str, cell: &str, bench: &str) -> f64 {
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

fn record(cache: &Cache, spec: &StageSpec, metrics: Value, outputs: Vec<(&str, Vec<u8>)>) {
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
            kind: spec.kind.to_string(),
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
            started_at: 0,
            elapsed_s: 1.0,
        })
        .unwrap();
}

fn jsonl(lines: impl Iterator<Item = Value>) -> Vec<u8> {
    lines
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Records for every stage the report reads, except the entropy method's training records
/// (so the report must show "—" for them).
fn fabricate(cache: &Cache, plan: &Plan) {
    for spec in plan.order() {
        let words: Vec<&str> = spec.label.split(' ').collect();
        match spec.kind {
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

fn setup(dir: &Path) -> (Plan, std::path::PathBuf) {
    let file = manifest(dir);
    let exp = cft::manifest::load(&file).unwrap();
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    let plan = plan::build(&exp, &cache).unwrap();
    fabricate(&cache, &plan);
    cache.flush().unwrap();
    (plan, file)
}

fn report_of(dir: &Path, plan: &Plan) -> Report {
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    let read = |r: &Record, name: &str| read_output(&cache, r, name);
    from_store(plan, &cache, &read).unwrap()
}

#[test]
fn report_from_cached_records_picks_best_cells_and_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);

    let started = Instant::now();
    let report = report_of(dir, &plan);
    let first = artifacts(&report).unwrap();
    let took = started.elapsed();
    let second = artifacts(&report_of(dir, &plan)).unwrap();
    assert_eq!(first, second, "a regenerated report has the same bytes");
    assert!(
        took.as_secs_f64() < 1.0,
        "regenerating the report took {took:?}"
    );

    // Best cell by average: SFT's lr1e-4, CFT's lr2e-4.
    let block = &report.blocks[0];
    let row = |m: &str| block.rows.iter().find(|r| r.method == m).unwrap();
    assert_eq!(block.rows[0].method, "base");
    assert_eq!(row("sft").cell.as_deref(), Some("lr1e-4"));
    assert_eq!(row("strict3").cell.as_deref(), Some("lr2e-4"));
    let cft = row("strict3");
    let delta = cft.delta.unwrap();
    assert!(delta > 5.0 && delta < 25.0, "delta {delta}");
    let ci = cft.delta_ci.unwrap();
    assert!(ci.low < delta && delta < ci.high, "{ci:?} around {delta}");
    assert!(cft.bench_ci.iter().all(Option::is_some));
    assert!(row("sft").delta.is_none(), "the baseline has no delta");

    let md =
        String::from_utf8(first.iter().find(|f| f.0 == "report.md").unwrap().1.clone()).unwrap();
    assert!(md.contains("| CFT | lr2e-4 |"), "{md}");
    assert!(md.contains("Pass@4"));
    assert!(md.contains("41.0"), "Table 4 seconds per 1k");
    // Table 5 from the aligned statistics: critical tokens have confidence 0.9.
    assert!(md.contains("| tiny | CFT | 0.900 | 0.600 |"), "{md}");
    // The entropy method was never trained here: its training row shows dashes.
    assert!(
        md.contains("| tiny | Entropy | lr2e-4 | 20.00 | — | — | — |"),
        "{md}"
    );
    // Tokens trained on are a share of the response tokens, not of the batches' 200.
    assert!(
        md.contains("| tiny | SFT | lr1e-4 | 100.00 | 200 |"),
        "{md}"
    );
    assert!(md.contains("| tiny | CFT | lr2e-4 | 20.00 | 200 |"), "{md}");
    // Table 4's Avg tokens: the correct responses' length, not all responses' 31.5.
    assert!(
        md.contains("| tiny | CFT | 12 / 20 | 60.0 | 10.0 | 20.00 |"),
        "{md}"
    );
    let names: Vec<&str> = first.iter().map(|f| f.0.as_str()).collect();
    for want in [
        "report.csv",
        "report.json",
        "report.html",
        "plots/pass_at-tiny-toy-a.png",
        "plots/training-tiny.svg",
        "plots/categories-tiny-CFT.png",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let png = &first.iter().find(|f| f.0.ends_with(".png")).unwrap().1;
    assert_eq!(&png[1..4], b"PNG");

    if let Ok(keep) = std::env::var("CFT_KEEP_REPORT") {
        cft::report::write_files(Path::new(&keep), &first).unwrap();
    }
}

/// Records written before the response-token and correct-length metrics existed still give
/// shares of the response tokens (from the method's weights; SFT and DFT by definition) and
/// Table 4's length of the correct responses (from the criticality record).
#[test]
fn records_of_earlier_builds_still_give_shares_and_lengths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);
    {
        let cache = Cache::open(&dir.join("cache"), "test").unwrap();
        for spec in plan.order() {
            let mut metrics = cft::cache::Store::record(&cache, &spec.key)
                .unwrap()
                .map(|r| r.metrics)
                .unwrap_or(Value::Null);
            let Some(m) = metrics.as_object_mut() else {
                continue;
            };
            let dropped = match spec.kind {
                "greedy" => m.remove("mean_correct_response_tokens"),
                "train" => m.remove("response_tokens"),
                _ => None,
            };
            if dropped.is_some() {
                record(&cache, spec, metrics, vec![]);
            }
        }
        cache.flush().unwrap();
    }
    let report = report_of(dir, &plan);
    let files = artifacts(&report).unwrap();
    let md =
        String::from_utf8(files.iter().find(|f| f.0 == "report.md").unwrap().1.clone()).unwrap();
    assert!(
        md.contains("| tiny | SFT | lr1e-4 | 100.00 | 200 |"),
        "{md}"
    );
    assert!(md.contains("| tiny | CFT | lr2e-4 | 20.00 | 200 |"), "{md}");
    assert!(
        md.contains("| tiny | CFT | 12 / 20 | 60.0 | 10.0 | 20.00 |"),
        "{md}"
    );
}

#[test]
fn cft_report_writes_files_next_to_the_cache_and_reads_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, file) = setup(dir);
    let records_before = {
        let cache = Cache::open(&dir.join("cache"), "test").unwrap();
        cft::cache::Store::records(&cache).unwrap().len()
    };
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_cft"))
            .args(["--cache", dir.join("cache").to_str().unwrap(), "report"])
            .arg(&file)
            .args(["--format", "csv"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let html = std::fs::read(dir.join("cache/reports/fab/report.html")).unwrap();
        (out.stdout, html)
    };
    let (csv, html) = run();
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.starts_with("model,method,label,cell,average,delta,ci_low,ci_high,toy-a,toy-b"));
    assert!(csv.contains("tiny,strict3,CFT,lr2e-4,"));
    assert!(
        dir.join("cache/reports/fab/plots/pass_at-tiny-toy-b.svg")
            .is_file()
    );
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("<svg"), "plots are inline");
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "no network"
    );
    assert_eq!(run().1, html.into_bytes(), "byte-identical across runs");
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    assert_eq!(
        cft::cache::Store::records(&cache).unwrap().len(),
        records_before,
        "cft report runs no stage"
    );
    // The same table side by side with itself: one block, rows tagged by experiment.
    drop(cache);
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["--cache", dir.join("cache").to_str().unwrap(), "compare"])
        .arg(&file)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = String::from_utf8(out.stdout).unwrap();
    let main_table = md.split("## Δ per benchmark").next().unwrap();
    assert_eq!(
        main_table.matches("| fab: CFT | lr2e-4 |").count(),
        2,
        "{md}"
    );
    assert_eq!(
        main_table.matches("| **tiny** |").count(),
        1,
        "one base row"
    );
    assert_eq!(plan.count("report"), 1);
}

#[test]
fn report_stage_inside_a_run_writes_the_same_report() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (plan, _) = setup(dir);
    let expected = artifacts(&report_of(dir, &plan)).unwrap();
    let cache = Cache::open(&dir.join("cache"), "test").unwrap();
    // Stages the report does not read (datasets, pretraining, rollouts, the entropy method's
    // training) run as stubs; the report stage is the real one.
    let mut registry = support::echo_registry(support::leak_counter());
    registry.register("report", cft::stages::report::Report);
    let summary = cft::exec::run(
        &plan,
        &cache,
        &registry,
        &cft::exec::NoEvents,
        &AtomicBool::new(false),
        cft::exec::Options::default(),
    )
    .unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    let spec = plan
        .order()
        .into_iter()
        .find(|s| s.kind == "report")
        .unwrap();
    let rec = cft::cache::Store::record(&cache, &spec.key)
        .unwrap()
        .unwrap();
    let md = read_output(&cache, &rec, "report.md").unwrap();
    // The entropy method's stub training records exist now, with no metrics: still "—".
    let want = &expected.iter().find(|f| f.0 == "report.md").unwrap().1;
    assert_eq!(&md, want);
    assert!(rec.outputs.contains_key("plots/training-tiny.png"));
}
