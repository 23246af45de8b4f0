//! The executor's semantics: order, failure policy, resume after `kill -9`, locking,
//! corrupt-blob detection. Test-only stage kinds live in `common`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use cft::cache::{Cache, RecordStatus, Store};
use cft::exec::{
    self, Begin, Events, Launcher, Options, Output, Progress, Registry, StageCtx, StageEnd,
    StageError, StageImpl, StageOutput,
};
use cft::plan::{self, StageSpec, Status};

#[derive(Default)]
struct Log(Mutex<Vec<String>>);
impl Progress for Log {}
impl Events for Log {
    fn stage_begin(&self, spec: &StageSpec, _: &Begin) {
        self.0.lock().unwrap().push(format!("begin {}", spec.label));
    }
    fn stage_end(&self, spec: &StageSpec, end: &StageEnd) {
        let what = match end {
            StageEnd::Done { .. } => "done",
            StageEnd::Failed { .. } => "failed",
            StageEnd::Interrupted => "interrupted",
            StageEnd::Skipped { .. } => "skipped",
        };
        self.0
            .lock()
            .unwrap()
            .push(format!("{what} {}", spec.label));
    }
}

fn run(cache: &Cache, plan: &plan::Plan, keep_going: bool) -> (exec::Summary, Vec<String>) {
    let (echo, slow) = (support::leak_counter(), support::leak_counter());
    let log = Log::default();
    let stop = AtomicBool::new(false);
    let s = exec::run(
        plan,
        cache,
        &Launcher::Threads(&support::test_registry(echo, slow)),
        &log,
        &stop,
        &Options {
            keep_going,
            ..Options::default()
        },
    )
    .unwrap();
    (s, log.0.into_inner().unwrap())
}

#[test]
fn stages_run_after_their_inputs_in_a_stable_order() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "test").unwrap();
    let (summary, log) = run(&cache, &support::diamond(3, 0, false), false);
    assert_eq!(summary.ran, 5);
    let begins: Vec<&str> = log
        .iter()
        .filter_map(|l| l.strip_prefix("begin "))
        .collect();
    // Among ready stages, the one planned first runs first.
    assert_eq!(begins, ["a", "b", "c", "d", "e"]);
    let (again, _) = run(&cache, &support::diamond(3, 0, false), false);
    assert_eq!((again.ran, again.cached), (0, 5));
}

#[test]
fn a_failure_stops_the_run_unless_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "test").unwrap();
    let plan = support::diamond(2, 0, true);
    let (s, log) = run(&cache, &plan, false);
    assert_eq!(s.failed.len(), 1);
    assert!(s.failed[0].1.contains("c failed on purpose"));
    // A stage's own failure is cft's fault, and its record says so.
    assert_eq!(s.failed[0].2, cft::exec::Fault::Defect);
    assert!(
        !log.iter().any(|l| l.ends_with(" e")),
        "stops at the first failure: {log:?}"
    );

    // The failure is recorded with its error, for `cft status`.
    let c = plan.graph.node_weights().find(|s| s.label == "c").unwrap();
    let rec = cache.record(&c.key).unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Failed);
    assert!(rec.error.unwrap().contains("on purpose"));

    let (s, log) = run(&cache, &plan, true);
    assert_eq!((s.ran, s.failed.len(), s.skipped), (1, 1, 1), "{log:?}");
    assert!(log.contains(&"done e".to_string()) && log.contains(&"skipped d".to_string()));
}

/// The child side of the kill test: runs the diamond slowly on the cache named by the
/// environment, printing `saved i` per item, until the parent kills it.
#[test]
#[ignore = "run by kill_9_loses_at_most_the_item_in_flight as a child process"]
fn child_runs_until_killed() {
    let dir = std::env::var("CFT_TEST_CHILD_CACHE").expect("set by the parent test");
    let cache = Cache::open(std::path::Path::new(&dir), "child").unwrap();
    run(&cache, &support::diamond(40, 40, false), false);
}

#[test]
fn kill_9_loses_at_most_the_item_in_flight() {
    // Reference: an uninterrupted run.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = {
        let cache = Cache::open(reference_dir.path(), "test").unwrap();
        run(&cache, &support::diamond(40, 0, false), false);
        support::results(&cache)
    };

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_runs_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CFT_TEST_CHILD_CACHE", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut saved = 0;
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("saved ") {
            saved += 1;
            if saved == 7 {
                break;
            }
        }
    }
    assert_eq!(saved, 7, "the child reported its progress");
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();

    let cache = Cache::open(dir.path(), "test").unwrap();
    let plan = support::diamond(40, 0, false);
    let a = plan.graph.node_weights().find(|s| s.label == "a").unwrap();
    // The record the dead process left says "running"; with the lock ours, it is stale.
    assert_eq!(
        cache.record(&a.key).unwrap().unwrap().status,
        RecordStatus::Running
    );
    let st = plan::statuses(&plan, &cache, false).unwrap();
    assert_eq!(st[&a.key].status, Status::Pending);
    assert!(
        st[&a.key].why.starts_with("interrupted"),
        "{}",
        st[&a.key].why
    );

    let (echo, slow) = (support::leak_counter(), support::leak_counter());
    let stop = AtomicBool::new(false);
    exec::run(
        &plan,
        &cache,
        &Launcher::Threads(&support::test_registry(echo, slow)),
        &cft::exec::NoEvents,
        &stop,
        &Options::default(),
    )
    .unwrap();
    let recomputed = slow.load(Ordering::SeqCst);
    assert!(
        recomputed <= 40 - 7,
        "items saved before the kill are not recomputed ({recomputed} were)"
    );
    assert_eq!(
        support::results(&cache),
        reference,
        "resumed results equal an uninterrupted run"
    );
}

#[test]
fn a_second_run_on_the_same_cache_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = support::toy_manifest(dir.path(), "1e-3");
    let cache_dir = dir.path().join("cache");
    let cache = Cache::open(&cache_dir, "cft run held-by-test").unwrap();
    cache.write_snapshot().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args([
            "run",
            manifest.to_str().unwrap(),
            "--cache",
            cache_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())) && stderr.contains("held-by-test"),
        "{stderr}"
    );

    // Readers still work, through the live view.
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args([
            "plan",
            manifest.to_str().unwrap(),
            "--cache",
            cache_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("a run is in progress"));
    drop(cache);
}

#[test]
fn cache_verify_finds_a_corrupt_blob_and_marks_its_stage_for_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let plan = support::diamond(3, 0, false);
    let b = plan
        .graph
        .node_weights()
        .find(|s| s.label == "b")
        .unwrap()
        .key
        .clone();
    {
        let cache = Cache::open(dir.path(), "test").unwrap();
        run(&cache, &plan, false);
        let rec = cache.record(&b).unwrap().unwrap();
        let path = cache.blobs().path(rec.outputs["blob"].hash());
        std::fs::write(path, b"bit rot").unwrap();
    }
    let verify = || {
        Command::new(env!("CARGO_BIN_EXE_cft"))
            .args(["cache", "verify", "--cache"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("b (")
            && stdout.contains("corrupt")
            && stdout.contains("1 stages marked for re-run"),
        "{stdout}"
    );

    let cache = Cache::open(dir.path(), "test").unwrap();
    let st = plan::statuses(&plan, &cache, false).unwrap();
    let pending: Vec<&str> = plan
        .graph
        .node_weights()
        .filter(|s| st[&s.key].status != Status::Cached)
        .map(|s| s.label.as_str())
        .collect();
    assert_eq!(pending, ["b"]);
    let (s, _) = run(&cache, &plan, false);
    assert_eq!(s.ran, 1);
    drop(cache);
    assert!(verify().status.success());
}

#[test]
fn the_real_binary_runs_dataset_stages_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let data = support::write(
        dir.path(),
        "train.jsonl",
        "{\"question\": \"1+1?\", \"answer\": \"1+1=2\\n#### 2\"}\n{\"question\": \"2*3?\", \"answer\": \"#### 6\"}\n",
    );
    let manifest = support::write(
        dir.path(),
        "m.toml",
        &format!(
            "[experiment]\nname = \"real\"\n[[model]]\nname = \"broken\"\npath = \"model\"\n[data.train]\npath = \"{}\"\n[[method]]\nname = \"sft\"\nkind = \"sft\"\n[eval]\ninclude_base = false\nbenchmarks = [{{ name = \"toy\", synthetic = {{ n = 5 }} }}]\n",
            data.display()
        ),
    );
    let cache_dir = dir.path().join("cache");
    let cft = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cft"))
            .args(args)
            .args([
                manifest.to_str().unwrap(),
                "--cache",
                cache_dir.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let out = cft(&["run", "--keep-going", "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed: greedy broken"), "{stderr}");

    // Both dataset stages ran for real and are cached; the greedy failure is recorded.
    let out = cft(&["plan", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |kind: &str| -> Vec<String> {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| s["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(status("dataset"), ["cached", "cached"]);
    assert_eq!(status("greedy"), ["failed"]);
    let out = cft(&["status"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("failures (1)") && stdout.contains("greedy broken"),
        "{stdout}"
    );

    let cache = Cache::open(&cache_dir, "test").unwrap();
    let problems = cache
        .records()
        .unwrap()
        .into_iter()
        .find(|r| r.label == "dataset train")
        .map(|r| {
            cache
                .artifact(r.outputs["problems.jsonl"].hash())
                .unwrap()
                .unwrap()
        })
        .unwrap();
    let parsed = cft::stages::dataset::parse_problems(&problems).unwrap();
    assert_eq!(
        parsed.iter().map(|p| p.gold.as_str()).collect::<Vec<_>>(),
        ["2", "6"]
    );
}

/// Sets the stop flag (what Ctrl-C does) once a stage has done `after` items.
struct StopAfter<'a> {
    after: u64,
    stop: &'a AtomicBool,
}
impl Progress for StopAfter<'_> {
    fn stage_progress(&self, _key: &str, done: u64) {
        if done >= self.after {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}
impl Events for StopAfter<'_> {}

#[test]
fn ctrl_c_stops_after_the_current_item_and_the_run_resumes() {
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = {
        let cache = Cache::open(reference_dir.path(), "test").unwrap();
        run(&cache, &support::diamond(20, 0, false), false);
        support::results(&cache)
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "test").unwrap();
    let plan = support::diamond(20, 0, false);
    let (echo, slow) = (support::leak_counter(), support::leak_counter());
    let stop = AtomicBool::new(false);
    let events = StopAfter {
        after: 5,
        stop: &stop,
    };
    let s = exec::run(
        &plan,
        &cache,
        &Launcher::Threads(&support::test_registry(echo, slow)),
        &events,
        &stop,
        &Options::default(),
    )
    .unwrap();
    assert!(s.interrupted);
    assert_eq!(
        slow.load(Ordering::SeqCst),
        5,
        "stops right after the item in flight"
    );
    let a = plan.graph.node_weights().find(|s| s.label == "a").unwrap();
    let rec = cache.record(&a.key).unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Interrupted);
    assert_eq!(rec.progress, Some((5, 20)));

    let (s, _) = run(&cache, &plan, false);
    assert_eq!(s.ran, 5);
    assert_eq!(support::results(&cache), reference);
}

/// Counts how many stages run at once and on which devices, holding each for a while.
struct Overlap {
    running: Mutex<Vec<(String, Vec<cft::exec::Device>)>>,
    peak: std::sync::atomic::AtomicUsize,
    clashes: Mutex<Vec<String>>,
    /// Each stage's devices, by label.
    held: Mutex<Vec<(String, String)>>,
}

impl StageImpl for &'static Overlap {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        let me = (ctx.spec.label.clone(), ctx.devices().all().to_vec());
        self.held
            .lock()
            .unwrap()
            .push((me.0.clone(), ctx.devices().to_string()));
        {
            let mut running = self.running.lock().unwrap();
            for (other, devices) in running.iter() {
                let shared = devices
                    .iter()
                    .find(|d| me.1.contains(d) && **d != cft::exec::Device::Cpu);
                if ctx.spec.kind.uses_model()
                    && let Some(d) = shared
                {
                    self.clashes
                        .lock()
                        .unwrap()
                        .push(format!("{} and {other} on {d:?}", me.0));
                }
            }
            running.push(me.clone());
            self.peak.fetch_max(running.len(), Ordering::SeqCst);
        }
        std::thread::sleep(std::time::Duration::from_millis(150));
        self.running.lock().unwrap().retain(|r| r.0 != me.0);
        Ok(StageOutput {
            outputs: vec![("out".into(), Output::Bytes(me.0.into_bytes()))],
            metrics: serde_json::Value::Null,
        })
    }
}

/// Six model stages and three CPU stages, all independent.
fn wide() -> plan::Plan {
    let mut plan = plan::Plan::default();
    for i in 0..6 {
        plan.add(StageSpec::new(
            "test",
            support::SLOW,
            1,
            format!("model{i}"),
            serde_json::json!({"i": i}),
            vec![],
            serde_json::json!({}),
        ));
    }
    for i in 0..3 {
        plan.add(StageSpec::new(
            "test",
            support::ECHO,
            1,
            format!("cpu{i}"),
            serde_json::json!({"i": i}),
            vec![],
            serde_json::json!({}),
        ));
    }
    plan
}

fn run_wide(jobs: usize, devices: Vec<cft::exec::Device>) -> &'static Overlap {
    let (overlap, summary) = run_overlap(&wide(), jobs, devices);
    assert_eq!((summary.ran, summary.failed.len()), (9, 0));
    overlap
}

fn run_overlap(
    plan: &plan::Plan,
    jobs: usize,
    devices: Vec<cft::exec::Device>,
) -> (&'static Overlap, exec::Summary) {
    let overlap: &'static Overlap = Box::leak(Box::new(Overlap {
        running: Mutex::new(Vec::new()),
        peak: Default::default(),
        clashes: Mutex::new(Vec::new()),
        held: Mutex::new(Vec::new()),
    }));
    let mut registry = Registry::default();
    registry.register(support::SLOW, overlap);
    registry.register(support::ECHO, overlap);
    registry.register(cft::contract::Kind::Train, overlap);
    registry.register(cft::contract::Kind::Greedy, overlap);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "test").unwrap();
    let summary = exec::run(
        plan,
        &cache,
        &Launcher::Threads(&registry),
        &cft::exec::NoEvents,
        &AtomicBool::new(false),
        &Options {
            jobs,
            devices,
            ..Options::default()
        },
    )
    .unwrap();
    (overlap, summary)
}

#[test]
fn jobs_bound_how_many_stages_run_at_once() {
    assert_eq!(
        run_wide(1, vec![cft::exec::Device::Cpu])
            .peak
            .load(Ordering::SeqCst),
        1
    );
    assert_eq!(
        run_wide(3, vec![cft::exec::Device::Cpu])
            .peak
            .load(Ordering::SeqCst),
        3
    );
}

#[test]
fn a_device_is_held_by_one_model_stage_at_a_time_and_cpu_stages_need_none() {
    use cft::exec::Device::Cuda;
    // Four workers, two GPUs: two model stages at once at most, never on the same device;
    // the CPU stages fill the other slots.
    let o = run_wide(4, vec![Cuda(0), Cuda(1)]);
    assert!(o.clashes.lock().unwrap().is_empty(), "{:?}", o.clashes);
    let peak = o.peak.load(Ordering::SeqCst);
    assert!((3..=4).contains(&peak), "peak {peak}");
}

/// Two `zero1` trainings over 2 GPUs each and three one-GPU stages on a pool of four GPUs:
/// each training's worker holds two devices, no device is ever held twice, and a training
/// asking for more GPUs than the pool has fails at once, saying so, instead of waiting.
#[test]
fn a_zero1_training_holds_its_gpus_and_asking_for_too_many_fails() {
    use cft::exec::Device::Cuda;
    let mut plan = plan::Plan::default();
    let zero1 = |i: usize, gpus: u64| {
        StageSpec::new(
            "test",
            cft::contract::Kind::Train,
            cft::contract::Kind::Train.version(),
            format!("train{i}"),
            serde_json::json!({"i": i}),
            vec![],
            serde_json::json!({"strategy": "zero1", "gpus": gpus}),
        )
    };
    for i in 0..2 {
        plan.add(zero1(i, 2));
    }
    for i in 0..3 {
        plan.add(StageSpec::new(
            "test",
            support::SLOW,
            1,
            format!("model{i}"),
            serde_json::json!({"i": i}),
            vec![],
            serde_json::json!({}),
        ));
    }
    let (o, summary) = run_overlap(&plan, 4, vec![Cuda(0), Cuda(1), Cuda(2), Cuda(3)]);
    assert_eq!((summary.ran, summary.failed.len()), (5, 0));
    assert!(o.clashes.lock().unwrap().is_empty(), "{:?}", o.clashes);
    for (label, devices) in o.held.lock().unwrap().iter() {
        let want = if label.starts_with("train") { 2 } else { 1 };
        assert_eq!(devices.split(',').count(), want, "{label} held {devices}");
    }

    let mut greedy = plan::Plan::default();
    greedy.add(zero1(9, 8));
    let (_, summary) = run_overlap(&greedy, 2, vec![Cuda(0), Cuda(1)]);
    let (label, error, _) = &summary.failed[0];
    assert_eq!(label, "train9");
    assert!(
        error.contains("8 GPUs") && error.contains("--devices gives 2"),
        "{error}"
    );
}

/// Greedy passes (what every other stage of their model waits for) share the free GPUs, one
/// engine on each: two of them on a pool of five hold two and three, never the same one.
#[test]
fn greedy_passes_share_the_free_gpus() {
    use cft::exec::Device::Cuda;
    let mut plan = plan::Plan::default();
    for i in 0..2 {
        plan.add(StageSpec::new(
            "test",
            cft::contract::Kind::Greedy,
            cft::contract::Kind::Greedy.version(),
            format!("greedy{i}"),
            serde_json::json!({"i": i}),
            vec![],
            serde_json::json!({}),
        ));
    }
    let pool = (0..5).map(Cuda).collect();
    let (o, summary) = run_overlap(&plan, 4, pool);
    assert_eq!((summary.ran, summary.failed.len()), (2, 0));
    assert!(o.clashes.lock().unwrap().is_empty(), "{:?}", o.clashes);
    let mut held: Vec<usize> = o
        .held
        .lock()
        .unwrap()
        .iter()
        .map(|(_, d)| d.split(',').count())
        .collect();
    held.sort();
    assert_eq!(held, [2, 3]);
}

#[test]
fn readers_see_outputs_while_a_run_holds_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let plan = support::diamond(3, 0, false);
    let cache = Cache::open(dir.path(), "cft run held-by-test").unwrap();
    run(&cache, &plan, false);
    cache.write_snapshot().unwrap();
    // The database is held: a reader gets the live view, and reads outputs from their files.
    let view = cft::cache::View::open(dir.path(), "reader").unwrap();
    assert!(view.live().is_some());
    for r in cache.records().unwrap() {
        for name in r.outputs.keys() {
            assert_eq!(
                view.store().output(&r, name).unwrap(),
                cache.output(&r, name).unwrap(),
                "{} {name}",
                r.label
            );
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["cache", "ls", "--cache"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("a run is in progress") && stdout.contains("5 records"),
        "{stdout}"
    );
    drop(cache);
}

/// A worker process that dies at once (as one killed by the out-of-memory killer would): the
/// stage is started again, then recorded as failed with the end of the worker's stderr.
#[test]
fn a_stage_whose_worker_keeps_dying_fails_with_its_stderr() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let exe = support::write(
        dir.path(),
        "dying-worker",
        "#!/bin/sh\necho \"out of memory (pretend) in $$\" >&2\nkill -9 $$\n",
    );
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = Cache::open(&dir.path().join("cache"), "test").unwrap();
    let plan = support::diamond(3, 0, false);
    let s = exec::run(
        &plan,
        &cache,
        &Launcher::Processes { exe },
        &cft::exec::NoEvents,
        &AtomicBool::new(false),
        &Options {
            retries: 2,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(s.failed.len(), 1, "{s:?}");
    let (label, error, _) = &s.failed[0];
    assert_eq!(label, "a");
    assert!(
        error.contains("died 3 times") && error.contains("out of memory (pretend)"),
        "{error}"
    );
    let a = plan.graph.node_weights().find(|s| s.label == "a").unwrap();
    let rec = cache.record(&a.key).unwrap().unwrap();
    assert_eq!(rec.status, RecordStatus::Failed);
    assert!(rec.error.unwrap().contains("out of memory (pretend)"));
}
