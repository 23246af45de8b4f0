//! The `eval` stage on a tiny model fixture: per-question outputs, greedy accuracy, Pass@N
//! from seeded samples, mean entropy; the same bytes from a fresh cache.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use cft::cache::{Cache, Store};
use cft::contract::Kind;
use cft::exec::{self, NoEvents, Options};
use cft::plan::{Plan, StageSpec};
use cft::report::load::read_output;
use cft::stages::eval::parse_outputs;
use serde_json::{Value, json};

const QUESTIONS: u64 = 5;
const SAMPLES: u64 = 3;

fn plan() -> (Plan, String, String) {
    plan_with(QUESTIONS, json!({}))
}

/// The two evaluations on `questions` toy questions, `extra` added to the sampled one's
/// bindings.
fn plan_with(questions: u64, extra: Value) -> (Plan, String, String) {
    let mut plan = Plan::default();
    let spec = |kind: Kind, label: &str, params: Value, inputs: Vec<String>, bindings| {
        StageSpec::new(
            "t",
            kind,
            kind.version(),
            label.into(),
            params,
            inputs,
            bindings,
        )
    };
    let data = plan.add(spec(
        Kind::Dataset,
        "dataset toy",
        json!({"source": "synthetic", "synthetic": {"split": "test", "n": questions, "seed": 4, "min_steps": 1, "max_steps": 1}}),
        vec![],
        Value::Null,
    ));
    let model = json!({"model_dir": common::fixture("qwen2")});
    let mut bindings = model.clone();
    for (k, v) in extra.as_object().into_iter().flatten() {
        bindings[k] = v.clone();
    }
    let sampled = plan.add(spec(
        Kind::Eval,
        "eval tiny base toy",
        json!({"model": {"base": {"fingerprint": "fixture"}}, "benchmark": "toy", "template": "plain", "max_new_tokens": 6,
               "sampling": {"n": SAMPLES, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": 11, "benchmarks": ["toy"], "pass_at": [1, 3]}}),
        vec![data.clone()],
        bindings,
    ));
    let chat = plan.add(spec(
        Kind::Eval,
        "eval tiny base gsm8k",
        json!({"model": {"base": {"fingerprint": "fixture"}}, "benchmark": "gsm8k", "template": "chat", "max_new_tokens": 4, "sampling": null}),
        vec![data],
        model,
    ));
    (plan, sampled, chat)
}

fn run(dir: &Path) -> (Value, Vec<u8>, Value) {
    run_plan(dir, plan())
}

fn run_plan(dir: &Path, (plan, sampled, chat): (Plan, String, String)) -> (Value, Vec<u8>, Value) {
    let cache = Cache::open(dir, "test").unwrap();
    let summary = exec::run(
        &plan,
        &cache,
        &exec::Launcher::Threads(&cft::stages::registry()),
        &NoEvents,
        &AtomicBool::new(false),
        &Options::default(),
    )
    .unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    let rec = cache.record(&sampled).unwrap().unwrap();
    let bytes = read_output(&cache, &rec, "outputs.jsonl").unwrap();
    let chat = cache.record(&chat).unwrap().unwrap().metrics;
    (rec.metrics, bytes, chat)
}

#[test]
fn eval_stores_per_question_outputs_and_pass_at_n() {
    let a = tempfile::tempdir().unwrap();
    let (metrics, bytes, chat) = run(a.path());
    let outputs = parse_outputs(&bytes).unwrap();
    assert_eq!(outputs.len() as u64, QUESTIONS);
    assert_eq!(metrics["n_questions"], QUESTIONS);
    let correct = outputs.iter().filter(|o| o.correct).count();
    assert_eq!(metrics["correct"], correct);
    assert_eq!(
        metrics["accuracy"].as_f64().unwrap(),
        correct as f64 / QUESTIONS as f64
    );
    for o in &outputs {
        assert!(o.tokens >= 1 && o.tokens <= 6);
        assert!(
            !o.response.contains("\n\nQuestion:"),
            "cut at the stop string"
        );
        let s = o.samples.as_ref().unwrap();
        assert_eq!(s.correct.len() as u64, SAMPLES);
        assert_eq!(s.preds.len() as u64, SAMPLES);
        assert!(o.entropy.unwrap() > 0.0);
    }
    let pass: Vec<f64> = (1..=SAMPLES)
        .map(|n| metrics["pass_at"][n.to_string()].as_f64().unwrap())
        .collect();
    assert!(pass.windows(2).all(|w| w[0] <= w[1]), "{pass:?}");
    assert!(metrics["mean_entropy"].as_f64().unwrap() > 0.0);
    assert!(metrics["mean_tokens"].as_f64().unwrap() >= 1.0);
    assert_eq!(chat["n_questions"], QUESTIONS);
    assert!(chat.get("pass_at").is_none(), "no sampling, no Pass@N");

    // Same inputs, fresh cache: the same bytes.
    let b = tempfile::tempdir().unwrap();
    let (_, again, _) = run(b.path());
    assert_eq!(bytes, again);
}

#[test]
fn eval_resumes_from_saved_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, sampled, _) = plan();
    {
        // A batch saved by an earlier, interrupted run: it is taken as is, not generated again.
        let cache = Cache::open(dir.path(), "test").unwrap();
        let outputs: Vec<Value> = (0..QUESTIONS)
            .map(|idx| json!({"idx": idx, "response": "saved", "tokens": 1, "pred": "7", "correct": idx == 0, "entropy": 1.5,
                              "samples": {"preds": ["7", "7", "7"], "correct": [idx == 0, false, false]}}))
            .collect();
        let saved = json!({"outputs": outputs, "seconds": 4.0});
        cache
            .progress_put(&sampled, "batch-0", saved.to_string().as_bytes())
            .unwrap();
        cache.flush().unwrap();
    }
    let (metrics, bytes, _) = run(dir.path());
    let outputs = parse_outputs(&bytes).unwrap();
    assert!(outputs.iter().all(|o| o.response == "saved"));
    assert_eq!(metrics["correct"], 1);
    assert_eq!(metrics["seconds"], 4.0);
    assert_eq!(metrics["mean_entropy"], 1.5);
    // Pass@1 = 1/3 on question 0, 0 elsewhere; Pass@3 = 1 on question 0.
    let p1 = metrics["pass_at"]["1"].as_f64().unwrap();
    assert!((p1 - 1.0 / 3.0 / QUESTIONS as f64).abs() < 1e-12);
    assert_eq!(metrics["pass_at"]["3"], 1.0 / QUESTIONS as f64);
    assert!(plan.get(&sampled).is_some());
}

/// On a GPU an evaluation decodes as many batches together as its free memory holds, with one
/// engine per GPU; the items stay batches of 16 questions and the outputs are the same bytes.
/// Forced here through the stage's `engines` and `decode_rows` bindings: 70 questions (five
/// batches) over two engines in waves of two batches each, and over three engines.
#[test]
fn eval_sharded_over_engines_gives_the_same_outputs() {
    let questions = 70;
    let one = tempfile::tempdir().unwrap();
    let (metrics, expected, _) = run_plan(one.path(), plan_with(questions, json!({})));
    assert_eq!(parse_outputs(&expected).unwrap().len() as u64, questions);
    for bindings in [
        json!({"engines": 2, "decode_rows": 128}),
        json!({"engines": 3}),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (m, bytes, _) = run_plan(dir.path(), plan_with(questions, bindings.clone()));
        assert!(bytes == expected, "{bindings}: outputs differ");
        assert_eq!(m["pass_at"], metrics["pass_at"], "{bindings}");
        assert_eq!(m["mean_entropy"], metrics["mean_entropy"], "{bindings}");
    }
}
