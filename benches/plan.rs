//! Planning speed: a 5-model x 9-method x 9-cell sweep over the 11 benchmarks.
//! `cargo bench --bench plan` prints the median of 10 plans, with an empty cache and with a
//! cache that holds a record for every stage.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use cft::cache::{Cache, Snapshot};
use cft::exec::{
    self, NoEvents, Options, Output, Registry, StageCtx, StageError, StageImpl, StageOutput,
};
use cft::plan;

struct Tiny;
impl StageImpl for Tiny {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        Ok(StageOutput {
            outputs: vec![(
                "out".into(),
                Output::Bytes(ctx.spec.key.as_bytes().to_vec()),
            )],
            metrics: serde_json::Value::Null,
        })
    }
}

fn manifest() -> String {
    let mut text = String::from(
        "[experiment]\nname = \"bench\"\n[data.train]\nsynthetic = { n = 10 }\n[train]\nbatch_size = [16, 32, 128]\nlearning_rate = [2e-6, 5e-6, 2e-5]\n[eval]\ninclude_base = true\nbenchmarks = [",
    );
    let benches: Vec<String> = (0..11)
        .map(|i| format!("{{ name = \"b{i}\", synthetic = {{ n = 10, seed = {i} }} }}"))
        .collect();
    text.push_str(&benches.join(", "));
    text.push_str("]\n");
    for m in 0..5 {
        text.push_str(&format!(
            "[[model]]\nname = \"m{m}\"\n[model.toy]\nhidden_size = {}\n",
            32 * (m + 1)
        ));
    }
    let methods = [
        ("sft", "kind = \"sft\""),
        ("dft", "kind = \"dft\""),
        ("union", "kind = \"cft\"\nrule = \"union\"\nk = 3"),
        ("graded", "kind = \"cft\"\nrule = \"graded\"\nk = 3"),
        ("strict2", "kind = \"cft\"\nrule = \"strict\"\nk = 2"),
        ("strict3", "kind = \"cft\"\nrule = \"strict\"\nk = 3"),
        ("entropy", "kind = \"entropy\"\nmatch = \"strict3\""),
        ("attn", "kind = \"attention\"\nmatch = \"strict3\""),
        ("random", "kind = \"random\"\nmatch = \"strict3\""),
    ];
    for (name, body) in methods {
        text.push_str(&format!("[[method]]\nname = \"{name}\"\n{body}\n"));
    }
    text
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sweep.toml");
    std::fs::write(&path, manifest()).expect("write manifest");

    let time = |store: &dyn cft::cache::Store| -> (f64, usize) {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..10 {
            let t = Instant::now();
            let exp = cft::manifest::load(&path).expect("manifest");
            let p = plan::build(&exp, store).expect("plan");
            let st = plan::statuses(&p, store, false).expect("status");
            n = st.len();
            times.push(t.elapsed().as_secs_f64());
        }
        (median(times), n)
    };

    let (empty, stages) = time(&Snapshot::default());
    println!(
        "plan 5 models x 9 methods x 9 cells: {stages} stages, empty cache: {:.1} ms (median of 10)",
        empty * 1e3
    );

    let cache = Cache::open(&dir.path().join("cache"), "bench").expect("cache");
    let exp = cft::manifest::load(&path).expect("manifest");
    let p = plan::build(&exp, &cache).expect("plan");
    let mut registry = Registry::default();
    for kind in cft::contract::Kind::ALL {
        registry.register(kind, Tiny);
    }
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    let s = exec::run(
        &p,
        &cache,
        &exec::Launcher::Threads(&registry),
        &NoEvents,
        &stop,
        &Options::default(),
    )
    .expect("run");
    let run_s = t.elapsed().as_secs_f64();
    println!(
        "executor overhead: {} trivial stages recorded in {:.2} s ({:.2} ms per stage)",
        s.ran,
        run_s,
        run_s * 1e3 / s.ran as f64
    );
    let (full, _) = time(&cache);
    println!(
        "plan with every stage cached: {:.1} ms (median of 10)",
        full * 1e3
    );
}
