//! The quickstart, reduced to minutes: `experiments/quickstart.toml` with a smaller toy model,
//! fewer questions and one learning rate runs end to end through the real binary (pretrain,
//! greedy, rollouts, criticality, token statistics, selections, nine fine-tunings,
//! evaluation, report); a second run reuses everything; and a run killed with `kill -9` at
//! several points and resumed ends with the same stage outputs and a byte-identical report.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The shipped quickstart with the model, the data and the sweep made smaller. Everything
/// else (the nine methods, the benchmarks' splits, sampling, the report) is the real file's.
fn reduced_manifest(dir: &Path) -> PathBuf {
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.toml");
    let text = format!(
        r#"include = "{}"

[experiment]
name = "quickstart-reduced"

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
corpus = {{ synthetic = {{ split = "train", n = 4000, seed = 1, max_steps = 1 }} }}

[data.train]
synthetic = {{ split = "train", n = 48, seed = 2, max_steps = 1 }}

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
  {{ name = "toy-test", synthetic = {{ split = "test", n = 16, seed = 3, max_steps = 1 }} }},
  {{ name = "toy-hard", synthetic = {{ split = "hard", n = 16, seed = 4, min_steps = 2, max_steps = 2 }} }},
]

[eval.sampling]
n = 2
pass_at = [1, 2]

[report]
bootstrap = 200
timings = false
"#,
        quickstart.display()
    );
    let path = dir.join("quickstart-reduced.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn cft(args: &[&str], manifest: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cft"));
    cmd.args(args)
        .arg(manifest)
        .arg("--cache")
        .arg(cache)
        .stdin(Stdio::null());
    cmd
}

fn output(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed ({:?}):\n{}\n{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `cft plan --json`'s stages.
fn stages(manifest: &Path, cache: &Path) -> Vec<Value> {
    let out = output(cft(&["plan", "--json"], manifest, cache));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["stages"].as_array().unwrap().clone()
}

/// The bytes of every stage output of the cache (`support::results`). Timings live in
/// metrics, not in outputs, so two runs of the same manifest must agree on all of it.
fn outputs(cache: &Path) -> Vec<(String, String, Vec<u8>)> {
    support::results(&cft::cache::Cache::open(cache, "test").unwrap())
}

/// Runs `cft run` and kills it with SIGKILL `after` the first stage of `kind` begins (its
/// progress lines name it); `false` if the run finished first.
fn kill_during(manifest: &Path, cache: &Path, kind: &str, after: Duration) -> bool {
    let mut child = cft(&["run"], manifest, cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Progress goes to stderr: plain lines when it is not a terminal.
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        // "[6/52] greedy toy"
        let begins = line.starts_with('[')
            && line
                .split_once("] ")
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{kind} ")));
        if begins {
            std::thread::sleep(after);
            let alive = child.try_wait().unwrap().is_none();
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return alive;
        }
    }
    child.wait().unwrap();
    false
}

#[test]
fn reduced_quickstart_runs_end_to_end_reuses_its_cache_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced_manifest(dir.path());
    let cache_a = dir.path().join("cache-a");

    // 1. From a clean cache, uninterrupted: every stage runs and the table is printed.
    let out = output(cft(&["run", "--quiet"], &manifest, &cache_a));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    for label in [
        "SFT", "Union", "Graded", "Strict-2", "Strict-3", "DFT", "Entropy", "Attn", "Random",
    ] {
        assert!(
            stdout.contains(&format!("| {label} ")),
            "{label}:\n{stdout}"
        );
    }
    let all = stages(&manifest, &cache_a);
    let count = |kind: &str| all.iter().filter(|s| s["kind"] == kind).count();
    assert!(all.iter().all(|s| s["status"] == "cached"), "{all:?}");
    // 4 datasets (corpus, train, two benchmarks); one greedy pass; rollouts of ranks 2 and 3
    // shared by the four CFT rules; one token-statistics stage for Entropy and Attention;
    // 9 fine-tunings; 2 benchmarks x (9 checkpoints + the base model).
    let expected = [
        ("dataset", 4),
        ("pretrain", 1),
        ("greedy", 1),
        ("rollout", 2),
        ("criticality", 4),
        ("token-stats", 1),
        ("selection", 3),
        ("train", 9),
        ("eval", 20),
        ("report", 1),
    ];
    for (kind, n) in expected {
        assert_eq!(count(kind), n, "{kind}");
    }
    assert_eq!(all.len(), expected.iter().map(|(_, n)| n).sum::<usize>());

    // The report states what the toy run shows.
    let report = output(cft(&["report", "--format", "md"], &manifest, &cache_a));
    let report_a = report.stdout;
    let text = String::from_utf8_lossy(&report_a).to_string();
    for needle in [
        "Greedy decoding and annotation (Table 4)",
        "Pass@N (Figure 2)",
        "Critical ratio (%)",
        "| **toy** |", // the base model's row
    ] {
        assert!(text.contains(needle), "{needle}:\n{text}");
    }
    use cft::cache::Store;
    let greedy = cft::cache::Cache::open(&cache_a, "test")
        .unwrap()
        .records()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "greedy")
        .unwrap();
    let correct = greedy.metrics["correct"].as_u64().unwrap();
    assert!(
        correct > 0 && correct < 48,
        "the toy model should answer some but not all of the 48 questions: {correct}"
    );

    // 2. Running it again does nothing.
    let out = output(cft(&["run", "--quiet"], &manifest, &cache_a));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("nothing to do") && stdout.contains("| Strict-3 "),
        "{stdout}"
    );
    let before = outputs(&cache_a);

    // 3. Killed with SIGKILL inside each kind of long stage, then resumed: the same outputs
    //    and the same report bytes.
    let cache_b = dir.path().join("cache-b");
    let mut killed = Vec::new();
    for (kind, ms) in [
        ("pretrain", 2000),
        ("greedy", 100),
        ("rollout", 200),
        ("train", 300),
        ("eval", 300),
    ] {
        if kill_during(&manifest, &cache_b, kind, Duration::from_millis(ms)) {
            killed.push(kind);
        }
    }
    assert_eq!(killed.len(), 5, "killed only during {killed:?}");
    output(cft(&["run", "--quiet"], &manifest, &cache_b));
    assert!(outputs(&cache_b) == before, "resumed outputs differ");
    let report_b = output(cft(&["report", "--format", "md"], &manifest, &cache_b)).stdout;
    assert!(report_a == report_b, "the resumed report differs");
}
