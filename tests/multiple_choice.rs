//! Table 3 (§5.3) through the binary: the shipped toy manifest
//! `experiments/quickstart-medqa.toml`, made smaller as the quickstart's tests make theirs,
//! pretrains a toy model on five-option questions, grades every greedy answer, rollout and
//! evaluation as MedQA (a letter against the gold letter), trains SFT and CFT (k = 2) fully
//! and with LoRA, and the report shows Table 3.

mod reduced;

use reduced::{cft, output};
use serde_json::Value;

use cft::eval::{Benchmark, grade};

/// The shipped manifest with a smaller model, less data and one full-FT cell; its methods,
/// their adapters and LoRA's learning rates are the file's.
fn reduced_medqa(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/experiments/quickstart-medqa.toml"
    );
    let text = format!(
        r#"include = "{shipped}"

[experiment]
name = "medqa-reduced"

[[model]]
name = "toy-mc"
[model.toy]
architecture = "llama"
hidden_size = 96
num_layers = 2
num_heads = 4
num_kv_heads = 2
intermediate_size = 288
max_position = 192
vocab_size = 384
[model.toy.pretrain]
steps = 300
batch_size = 16
learning_rate = 4e-3
warmup_ratio = 0.05
corpus = {{ synthetic = {{ split = "train", n = 4000, seed = 1, max_steps = 1, choices = 5 }} }}

[data.train]
synthetic = {{ split = "train", n = 48, seed = 2, max_steps = 1, choices = 5 }}

[annotate]
max_new_tokens = 48

[train]
learning_rate = 1e-3
epochs = 2
batch_size = 4
micro_batch_size = 4

[eval]
max_new_tokens = 64
benchmarks = [
  {{ name = "toy-mc-test", synthetic = {{ split = "test", n = 16, seed = 3, max_steps = 1, choices = 5 }} }},
]

[report]
bootstrap = 200
timings = false
"#
    );
    let path = dir.join("medqa-reduced.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn multiple_choice_is_graded_by_letter_and_the_report_shows_table_3() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced_medqa(dir.path());
    let cache = dir.path().join("cache");

    // Every stage that grades names MedQA's grader: greedy and rollouts through the training
    // data's format, the evaluation (whose benchmark name says nothing) through `grader`.
    let exp = cft::manifest::load(&manifest).unwrap();
    let plan = cft::plan::build(&exp, &cft::cache::Snapshot::default()).unwrap();
    let specs: Vec<_> = plan.graph.node_weights().collect();
    let of_kind = |k: &str| -> Vec<_> { specs.iter().filter(|s| s.kind.name() == k).collect() };
    assert_eq!(of_kind("greedy").len(), 1);
    assert_eq!(of_kind("rollout").len(), 1, "k = 2: rank-2 rollouts only");
    for s in of_kind("greedy").into_iter().chain(of_kind("rollout")) {
        assert_eq!(s.params["benchmark"], "medqa", "{}", s.label);
    }
    let evals = of_kind("eval");
    assert!(!evals.is_empty());
    for s in &evals {
        assert_eq!(s.params["grader"], "medqa", "{}", s.label);
    }
    // LoRA where the method asks for it, full fine-tuning elsewhere.
    let trains = of_kind("train");
    assert_eq!(
        trains.len(),
        6,
        "one full-FT cell each, LoRA's two learning rates"
    );
    for s in trains {
        let kind = &s.params["adapter"]["kind"];
        match s.label.contains("-lora ") {
            true => assert_eq!(kind, "lora", "{}", s.label),
            false => assert_eq!(kind, "full", "{}", s.label),
        }
    }

    output(cft(&["run", "--quiet", "--jobs", "2"], &manifest, &cache));
    output(cft(&["report"], &manifest, &cache));

    // D_correct: five-option questions, letter answers, each correct by the MedQA grader.
    let jsonl = dir.path().join("annotations.jsonl");
    output(cft(
        &["export", "--annotations", "--out", jsonl.to_str().unwrap()],
        &manifest,
        &cache,
    ));
    let lines: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "the toy model answers some questions");
    for l in &lines {
        let (question, gold) = (l["question"].as_str().unwrap(), l["gold"].as_str().unwrap());
        assert!(question.contains("\nAnswer Choices: "), "{question}");
        assert!(["A", "B", "C", "D", "E"].contains(&gold), "{gold}");
        let response = l["response"].as_str().unwrap();
        assert!(
            grade(Benchmark::Medqa, response, gold).correct,
            "{response} / {gold}"
        );
        let weights = l["weights"].as_object().unwrap();
        assert!(weights.contains_key("cft") && weights.contains_key("cft-lora"));
    }

    let report_dir = cache.join("reports/medqa-reduced");
    let json: Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let tables = json["adapters"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{tables:?}");
    assert_eq!(tables[0]["model"], "toy-mc");
    assert_eq!(tables[0]["columns"], serde_json::json!(["Full FT", "LoRA"]));
    let rows = tables[0]["rows"].as_array().unwrap();
    let labels: Vec<&str> = rows.iter().filter_map(|r| r["label"].as_str()).collect();
    assert_eq!(labels, ["SFT", "CFT"]);
    let expected = [["sft", "sft-lora"], ["cft", "cft-lora"]];
    for (row, methods) in rows.iter().zip(expected) {
        for (cell, method) in row["cells"].as_array().unwrap().iter().zip(methods) {
            assert_eq!(cell["method"], method, "{row}");
            let avg = cell["average"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&avg), "{row}");
        }
    }
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(
        md.contains("## Full fine-tuning and LoRA (Table 3)"),
        "{md}"
    );
    assert!(
        md.contains("| Model | Method | Full FT (%) | LoRA (%) |"),
        "{md}"
    );
    for label in ["| toy-mc | SFT |", "| toy-mc | CFT |"] {
        assert!(md.contains(label), "{label} in\n{md}");
    }
}
