//! `cft generate` and `cft score` as other tools read them: exact JSON lines.

mod common;

use std::process::Command;

use common::{fixture, reference};
use serde_json::Value;

fn cft(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn generate_json_prints_one_line_per_prompt_in_order() {
    let dir = fixture("olmo2");
    let r = reference("olmo2");
    let (a, b) = (csv(&r.prompts[2]), csv(&r.prompts[0]));
    let args = [
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        &a,
        "--ids",
        &b,
    ];
    let (ok, stdout, stderr) = cft(&[
        &args[..],
        &[
            "--max-new-tokens",
            "24",
            "--greedy",
            "--ignore-eos",
            "--json",
        ],
    ]
    .concat());
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let keys: Vec<&str> = lines[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["ids", "prompt_ids", "text"]);
    assert_eq!(lines[0]["prompt_ids"], serde_json::json!(r.prompts[2]));
    assert_eq!(lines[0]["ids"], serde_json::json!(r.greedy_batch[2]));
    assert_eq!(lines[1]["ids"], serde_json::json!(r.greedy_batch[0]));
    assert!(lines[1]["text"].is_string());
}

#[test]
fn score_json_prints_one_line_per_position() {
    let dir = fixture("qwen3");
    let r = reference("qwen3");
    let ids = csv(&r.prompts[0]);
    let (ok, stdout, stderr) = cft(&[
        "score",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        &ids,
        "--top",
        "3",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), r.prompts[0].len());
    for (p, line) in lines.iter().enumerate() {
        let want = &r.score[0][p];
        assert_eq!(line["pos"], p);
        assert_eq!(line["token"], want.token);
        assert_eq!(line["top"].as_array().unwrap().len(), 3);
        assert!(line.get("logits").is_none());
        match want.next_logprob {
            Some(lp) => assert!((line["next_logprob"].as_f64().unwrap() as f32 - lp).abs() < 1e-4),
            None => assert!(line["next_logprob"].is_null()),
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = fixture("qwen2");
    let model = dir.to_str().unwrap();
    for args in [
        vec![
            "generate",
            "--model",
            model,
            "--ids",
            "1,x",
            "--max-new-tokens",
            "2",
        ],
        vec![
            "generate",
            "--model",
            model,
            "--ids",
            "1,100000",
            "--max-new-tokens",
            "2",
        ],
        vec![
            "generate",
            "--model",
            "/nonexistent",
            "--ids",
            "1",
            "--max-new-tokens",
            "2",
        ],
        vec![
            "score", "--model", model, "--ids", "1", "--device", "cuda:x", "--json",
        ],
    ] {
        let (ok, _, stderr) = cft(&args);
        assert!(!ok && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
