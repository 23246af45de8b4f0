//! The `grpo` stage through the real binary, on a toy model: `[rl]` plans one GRPO run per
//! starting method (from the cell the report picks), the runs record rewards, entropy, KL
//! and evaluations per step, the report shows Figure 3 as a table and as figures, and a run
//! whose worker is killed with SIGKILL in the middle of GRPO resumes from its saved step and
//! ends with the same bytes as an uninterrupted run.

mod reduced;
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cft::cache::Store;
use reduced::{cft, output, stages};
use serde_json::Value;

/// A toy experiment small enough for the test suite: SFT and Strict-2 over a sweep of two
/// learning rates, then GRPO from each method's best cell and from the base model.
fn manifest(dir: &Path) -> PathBuf {
    support::write(
        dir,
        "rl.toml",
        r#"
[experiment]
name = "rl-reduced"
seed = 7

[[model]]
name = "toy"
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
corpus = { synthetic = { split = "train", n = 4000, seed = 1, max_steps = 1 } }

[data.train]
synthetic = { split = "train", n = 48, seed = 2, max_steps = 1 }

[annotate]
template = "plain"
max_new_tokens = 48

[[method]]
name = "sft"
label = "SFT"
kind = "sft"

[[method]]
name = "strict2"
label = "Strict-2"
kind = "cft"
rule = "strict"
k = 2

[train]
learning_rate = [5e-4, 1e-3]
epochs = 2
batch_size = 4
micro_batch_size = 4
precision = "f32"
max_length = 192
append_eos = true

[eval]
template = "plain"
max_new_tokens = 48
benchmarks = [
  { name = "toy-test", synthetic = { split = "test", n = 16, seed = 3, max_steps = 1 } },
]

[report]
baseline = "sft"
bootstrap = 100
timings = false

[rl]
start = ["sft", "strict2"]
include_base = true
prompt_batch = 8
mini_batch = 4
micro_batch = 16
n = 4
max_steps = 6
learning_rate = 5e-5
max_response_length = 48
precision = "f32"
eval_every = 2
save_every_steps = 1
"#,
    )
}

/// The bytes of every stage output of the cache.
fn outputs(cache: &Path) -> Vec<(String, String, Vec<u8>)> {
    support::results(&cft::cache::Cache::open(cache, "test").unwrap())
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

#[test]
fn grpo_runs_from_each_start_reports_figure_3_and_resumes_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path());
    let cache_a = dir.path().join("cache-a");

    // The plan: one grpo stage per start, reading the RL data, the evaluated benchmark and
    // (for a method with two cells) both checkpoints and their evaluations.
    let planned = stages(&manifest, &cache_a);
    let grpo: Vec<&Value> = planned.iter().filter(|s| s["kind"] == "grpo").collect();
    let labels: Vec<&str> = grpo.iter().filter_map(|s| s["label"].as_str()).collect();
    assert_eq!(
        labels,
        ["grpo toy base", "grpo toy sft", "grpo toy strict2"]
    );

    output(cft(&["run", "--quiet"], &manifest, &cache_a));
    let all = outputs(&cache_a);
    let get = |label: &str, name: &str| -> Vec<u8> {
        all.iter()
            .find(|(l, n, _)| l == label && n == name)
            .map(|(_, _, b)| b.clone())
            .unwrap_or_else(|| panic!("{label} has no {name}"))
    };
    let cache = cft::cache::Cache::open(&cache_a, "test").unwrap();
    for start in ["base", "sft", "strict2"] {
        let label = format!("grpo toy {start}");
        let steps = lines(&get(&label, "steps.jsonl"));
        assert_eq!(steps.len(), 6, "{label}");
        for (i, s) in steps.iter().enumerate() {
            assert_eq!(s["step"], i as u64 + 1);
            let reward = s["reward"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&reward), "{s}");
            assert!(s["entropy"].as_f64().unwrap() > 0.0, "{s}");
            // k3 is never negative but for rounding.
            assert!(s["kl"].as_f64().unwrap() > -1e-6, "{s}");
            assert!(s["response_length"].as_f64().unwrap() > 0.0, "{s}");
            // 8 prompts of 4 responses: two optimiser steps of 4 prompts.
            assert_eq!(s["optimiser_steps"], 2, "{s}");
        }
        // The first step starts at the reference policy: its KL is 0 for the first
        // mini-batch and small after one update.
        assert!(steps[0]["kl"].as_f64().unwrap() < 1e-2, "{:?}", steps[0]);
        let evals = lines(&get(&label, "evals.jsonl"));
        let at: Vec<u64> = evals.iter().map(|e| e["step"].as_u64().unwrap()).collect();
        assert_eq!(at, [0, 2, 4, 6], "{label}");
        // The policy moved: its weights differ from the start's.
        assert!(get(&label, "model/model.safetensors").len() > 1000);
        let record = cache
            .records()
            .unwrap()
            .into_iter()
            .find(|r| r.label == label)
            .unwrap();
        match start {
            "base" => assert!(record.metrics["cell"].is_null()),
            _ => assert!(
                ["lr5e-4", "lr1e-3"].contains(&record.metrics["cell"].as_str().unwrap()),
                "{}",
                record.metrics
            ),
        }
    }
    drop(cache);
    // `cft status` lists each GRPO run with its steps and rewards.
    let status = String::from_utf8(output(cft(&["status"], &manifest, &cache_a)).stdout).unwrap();
    for start in ["base", "sft", "strict2"] {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("grpo toy {start} ")))
            .unwrap_or_else(|| panic!("no grpo toy {start} in\n{status}"));
        assert!(
            line.contains("done, 6 steps") && line.contains("reward"),
            "{line}"
        );
    }
    // `cft export --rl`: the policy a run ended with, as an HF directory.
    let out = dir.path().join("rl-sft");
    let mut export = cft(&["export", "--rl", "sft"], &manifest, &cache_a);
    export.arg("--out").arg(&out);
    output(export);
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        get("grpo toy sft", "model/model.safetensors")
    );
    let mut export = cft(&["export", "--rl", "dft"], &manifest, &cache_a);
    export.arg("--out").arg(dir.path().join("rl-dft"));
    let wrong = export.output().unwrap();
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && err.contains("base, sft, strict2"),
        "{err}"
    );
    // The report's Figure 3: a table and the entropy, reward and accuracy figures.
    output(cft(&["report"], &manifest, &cache_a));
    let report_dir = cache_a.join("reports/rl-reduced");
    let md = std::fs::read_to_string(report_dir.join("report.md")).unwrap();
    assert!(md.contains("Reinforcement learning (Figure 3)"), "{md}");
    for start in ["| base |", "| SFT |", "| Strict-2 |"] {
        assert!(md.contains(start), "{start} in\n{md}");
    }
    for plot in [
        "rl-entropy-toy",
        "rl-reward-toy",
        "rl-accuracy-toy-toy-test",
    ] {
        let svg = std::fs::read_to_string(report_dir.join(format!("plots/{plot}.svg"))).unwrap();
        for line in ["base", "SFT", "Strict-2"] {
            assert!(svg.contains(line), "{plot} has a line for {line}");
        }
        assert!(report_dir.join(format!("plots/{plot}.png")).is_file());
    }

    // SIGKILL of the worker running a grpo stage once it has saved a step, then of the
    // coordinator; the next run resumes it.
    let cache_b = dir.path().join("cache-b");
    let mut child = cft(&["run", "--jobs", "1"], &manifest, &cache_b)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut progress = BufReader::new(child.stderr.take().unwrap()).lines();
    let begun = progress
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with('[') && l.contains("] grpo toy sft"));
    assert!(begun, "grpo toy sft never began");
    std::thread::spawn(move || for _ in progress.by_ref() {});
    let files = cft::cache::Files::at(&cache_b);
    let deadline = Instant::now() + Duration::from_secs(600);
    let killed = loop {
        assert!(Instant::now() < deadline, "no grpo step was saved");
        let saved = files.work_keys().into_iter().find_map(|k| {
            let work = files.work(&k);
            let task = work.task().ok()?;
            let lease = work.lease_holder()?;
            let step = work.saved("state").ok()??;
            (task.spec.label == "grpo toy sft").then_some((lease, step))
        });
        if let Some((lease, step)) = saved {
            let step: Value = serde_json::from_slice(&step).unwrap();
            assert!(step["step"].as_u64().unwrap() < 6, "{step}");
            // SAFETY: kill(2) of the worker process the lease names.
            unsafe { libc::kill(lease.pid as i32, libc::SIGKILL) };
            break lease.pid;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(killed > 0);
    output(cft(&["run", "--quiet"], &manifest, &cache_b));
    let resumed = outputs(&cache_b);
    let names = |o: &[(String, String, Vec<u8>)]| -> Vec<(String, String)> {
        o.iter().map(|(l, n, _)| (l.clone(), n.clone())).collect()
    };
    assert_eq!(names(&resumed), names(&all));
    for (a, b) in all.iter().zip(&resumed) {
        assert!(a == b, "{} {} differs after the resume", a.0, a.1);
    }
}
