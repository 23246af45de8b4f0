//! Test-only stage kinds and helpers shared by the executor and planner tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cft::contract::Kind;
use cft::exec::{Output, Registry, StageCtx, StageError, StageImpl, StageOutput};
use cft::plan::{Plan, StageSpec};
use serde_json::{Value, json};

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// Output bytes that depend on the kind, params and every input's outputs.
fn digest(ctx: &StageCtx<'_>, extra: &str) -> Result<Vec<u8>, StageError> {
    let mut h = blake3::Hasher::new();
    h.update(ctx.spec.kind.name().as_bytes());
    h.update(ctx.params().to_string().as_bytes());
    for r in ctx.inputs() {
        for name in r.outputs.keys() {
            h.update(&ctx.read(r, name)?);
        }
    }
    h.update(extra.as_bytes());
    Ok(h.finalize().to_hex().as_bytes().to_vec())
}

/// Every kind: one output that hashes params and inputs. Counts how many stages it ran.
pub struct Echo(pub &'static AtomicUsize);

impl StageImpl for Echo {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if ctx.params()["fail"].as_bool() == Some(true) {
            return Err(StageError::Failed(format!(
                "{} failed on purpose",
                ctx.spec.label
            )));
        }
        let out = digest(ctx, "")?;
        // One output goes to the blob store, so blob handling is exercised too.
        let path = ctx.temp_path();
        std::fs::write(&path, &out).map_err(|e| StageError::Failed(e.to_string()))?;
        Ok(StageOutput {
            outputs: vec![
                ("out".into(), Output::Bytes(out)),
                ("blob".into(), Output::File(path)),
            ],
            metrics: json!({"ok": true}),
        })
    }
}

/// `n` items, each saved as it finishes; `delay_ms` per item; prints `saved i` after saving
/// (the kill test reads it). Resumes from saved items.
pub struct SlowItems {
    pub computed: &'static AtomicUsize,
}

impl StageImpl for SlowItems {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        let n = ctx.params()["n"].as_u64().unwrap_or(10);
        let delay = ctx.bindings()["delay_ms"].as_u64().unwrap_or(0);
        ctx.set_total(n);
        let mut all = Vec::new();
        for i in 0..n {
            ctx.check_stop()?;
            let item = format!("{i}");
            let bytes = match ctx.saved(&item)? {
                Some(b) => b,
                None => {
                    std::thread::sleep(std::time::Duration::from_millis(delay));
                    let b = digest(ctx, &item)?;
                    self.computed.fetch_add(1, Ordering::SeqCst);
                    ctx.save(&item, &b)?;
                    println!("saved {i}");
                    b
                }
            };
            all.extend_from_slice(&bytes);
            all.push(b'\n');
            ctx.advance(1);
        }
        Ok(StageOutput {
            outputs: vec![("items".into(), Output::Bytes(all))],
            metrics: json!({"items": n}),
        })
    }
}

/// A registry with Echo behind every kind of the real planner.
pub fn echo_registry(counter: &'static AtomicUsize) -> Registry {
    let mut r = Registry::default();
    for kind in Kind::ALL {
        r.register(kind, Echo(counter));
    }
    r
}

/// The kinds the hand-made plans use for their test stages (a registry maps each kind to an
/// implementation; these stand in for real ones).
pub const ECHO: Kind = Kind::Dataset;
pub const SLOW: Kind = Kind::Pretrain;

/// A small hand-made plan: a → (b, c) → d, where a is slow and resumable.
pub fn diamond(n: u64, delay_ms: u64, fail_c: bool) -> Plan {
    let mut plan = Plan::default();
    let spec = |kind: Kind, label: &str, params: Value, inputs: Vec<String>| {
        // The delay is how fast, not what: a binding, outside the key.
        StageSpec::new(
            "test",
            kind,
            1,
            label.to_string(),
            params,
            inputs,
            json!({"delay_ms": delay_ms}),
        )
    };
    let a = plan.add(spec(SLOW, "a", json!({"n": n}), vec![]));
    let b = plan.add(spec(ECHO, "b", json!({"x": 1}), vec![a.clone()]));
    let c = plan.add(spec(
        ECHO,
        "c",
        json!({"x": 2, "fail": fail_c}),
        vec![a.clone()],
    ));
    plan.add(spec(ECHO, "d", json!({"x": 3}), vec![b, c]));
    plan.add(spec(ECHO, "e", json!({"x": 4}), vec![a]));
    plan
}

pub fn test_registry(echo: &'static AtomicUsize, slow: &'static AtomicUsize) -> Registry {
    let mut r = Registry::default();
    r.register(ECHO, Echo(echo));
    r.register(SLOW, SlowItems { computed: slow });
    r
}

pub fn leak_counter() -> &'static AtomicUsize {
    Box::leak(Box::new(AtomicUsize::new(0)))
}

/// Every record's outputs, as (label, output name, bytes), sorted: what "the same results" means.
pub fn results(cache: &cft::cache::Cache) -> Vec<(String, String, Vec<u8>)> {
    use cft::cache::{OutputRef, Store};
    let mut out = Vec::new();
    for r in cache.records().unwrap() {
        for (name, o) in &r.outputs {
            let bytes = match o {
                OutputRef::Artifact { hash, .. } => cache.artifact(hash).unwrap().unwrap(),
                OutputRef::Blob { hash, .. } => std::fs::read(cache.blobs().path(hash)).unwrap(),
            };
            out.push((r.label.clone(), name.clone(), bytes));
        }
    }
    out.sort();
    out
}

/// A toy manifest whose plan has every stage kind; `lr` is the learning-rate grid.
pub fn toy_manifest(dir: &Path, lr: &str) -> PathBuf {
    write(
        dir,
        "toy.toml",
        &format!(
            r#"
[experiment]
name = "toy"
seed = 3

[[model]]
name = "tiny"
[model.toy]
hidden_size = 32
num_layers = 1
[model.toy.pretrain]
steps = 10

[data.train]
synthetic = {{ split = "train", n = 20 }}

[[method]]
name = "sft"
kind = "sft"

[[method]]
name = "strict3"
kind = "cft"
rule = "strict"
k = 3

[[method]]
name = "entropy"
kind = "entropy"
match = "strict3"

[train]
learning_rate = {lr}
batch_size = [4, 8]

[eval]
benchmarks = [{{ name = "toy-test", synthetic = {{ split = "test", n = 10 }} }}]
"#
        ),
    )
}
