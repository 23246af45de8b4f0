//! The reduced quickstart and how tests run the real binary on it (shared by the quickstart
//! and Slurm tests).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The shipped quickstart with the model, the data and the sweep made smaller. Everything
/// else (the nine methods, the benchmarks' splits, sampling, the report) is the real file's.
pub fn reduced_manifest(dir: &Path) -> PathBuf {
    reduced("quickstart.toml", dir)
}

/// The shipped manifest `experiments/<shipped>` (the quickstart or one that includes it),
/// reduced as [`reduced_manifest`] reduces the quickstart.
pub fn reduced(shipped: &str, dir: &Path) -> PathBuf {
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experiments")
        .join(shipped);
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

pub fn cft(args: &[&str], manifest: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cft"));
    cmd.args(args)
        .arg(manifest)
        .arg("--cache")
        .arg(cache)
        .stdin(Stdio::null());
    cmd
}

pub fn output(mut cmd: Command) -> Output {
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
pub fn stages(manifest: &Path, cache: &Path) -> Vec<Value> {
    let out = output(cft(&["plan", "--json"], manifest, cache));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["stages"].as_array().unwrap().clone()
}
