//! The worker side: runs one stage from its work folder ([`crate::cache::work`]) and leaves a
//! sentinel. `cft worker` calls this in a process of its own; the in-thread launcher (tests,
//! library users with their own stage kinds) calls it on a thread. Either way it touches only
//! files: the task the coordinator wrote, the inputs' artifact and blob files, its saved items,
//! and last `done.json` or `failed.json`.

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::json;

use crate::cache::work::{HeldLease, Lease, Sentinel, hostname};
use crate::cache::{CacheError, Files, OutputRef, now_secs};
use crate::contract::Fault;
use crate::stages::{Devices, Output, Progress, Registry, StageCtx, StageError, StageOutput};

/// How a worker left a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerEnd {
    /// Its sentinel is written: done ...
    Finished,
    /// ... or failed, with this error.
    Failed(String),
    /// Stopped between items; the saved items stay.
    Interrupted,
    /// Another live worker holds the stage's lease; this one did nothing.
    Leased(Option<Lease>),
    /// The stage's folder is gone: a coordinator ingested it (another worker ran it).
    Gone,
}

/// Runs the stages `keys` of the cache whose files are `files`, in order. Every stage's lease
/// is taken first (so no two workers run a stage at once, and a coordinator that comes after
/// a dead one sees the whole group as running); each is released when its stage ends.
pub fn run_group(
    files: &Files,
    keys: &[String],
    registry: &Registry,
    device: &Devices,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Vec<(String, Result<WorkerEnd, CacheError>)> {
    let leases: Vec<(String, Taken)> = keys.iter().map(|k| (k.clone(), lease(files, k))).collect();
    let mut ends = Vec::new();
    for (key, lease) in leases {
        let end = match lease {
            Err(e) => Err(e),
            Ok(Err(end)) => Ok(end),
            Ok(Ok(_)) if stop.load(std::sync::atomic::Ordering::SeqCst) => {
                Ok(WorkerEnd::Interrupted)
            }
            Ok(Ok(held)) => run_leased(files, &key, held, registry, device, stop, progress),
        };
        ends.push((key, end));
    }
    ends
}

/// A stage's lease, or why the worker does not run it.
type Taken = Result<Result<HeldLease, WorkerEnd>, CacheError>;

/// Takes stage `key`'s lease, or says why not.
fn lease(files: &Files, key: &str) -> Taken {
    let work = files.work(key);
    if !work.has_task() {
        return Ok(Err(WorkerEnd::Gone));
    }
    Ok(match work.take_lease()? {
        Some(Ok(lease)) => Ok(lease),
        Some(Err(holder)) => Err(WorkerEnd::Leased(holder)),
        None => Err(WorkerEnd::Gone),
    })
}

/// Runs stage `key` under its lease: resumes from its saved items and writes the sentinel
/// last.
fn run_leased(
    files: &Files,
    key: &str,
    lease: HeldLease,
    registry: &Registry,
    device: &Devices,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> Result<WorkerEnd, CacheError> {
    let work = files.work(key);
    // A worker that finished just before its coordinator died: nothing left to do.
    if work.sentinel()?.is_some() {
        return Ok(WorkerEnd::Finished);
    }
    // The coordinator ingested the stage (another worker ran it) since the lease was taken.
    if !work.has_task() {
        return Ok(WorkerEnd::Gone);
    }
    let task = work.task()?;
    let spec = &task.spec;
    journal(
        files,
        json!({"event": "start", "key": key, "label": spec.label,
        "pid": lease.lease.pid, "host": lease.lease.host, "device": device.to_string(),
        "saved_items": work.item_count()}),
    );
    let started = Instant::now();
    let (result, progress_seen) = match registry.get(spec.kind) {
        None => (
            Err(StageError::Failed(format!(
                "this build of cft cannot run `{}` stages",
                spec.kind
            ))),
            None,
        ),
        Some(imp) => {
            let mut ctx = StageCtx::new(
                spec,
                files,
                &work,
                task.inputs.clone(),
                stop,
                progress,
                device.clone(),
            );
            let result = catch_unwind(AssertUnwindSafe(|| imp.run(&mut ctx)))
                .unwrap_or_else(|panic| Err(panicked(panic)));
            (result, ctx.progress())
        }
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    if let Some(p) = progress_seen {
        work.write_progress(p)?;
    }
    let sentinel = match result {
        Err(StageError::Interrupted) => {
            journal(
                files,
                json!({"event": "end", "key": key, "pid": lease.lease.pid, "outcome": "interrupted"}),
            );
            return Ok(WorkerEnd::Interrupted);
        }
        Ok(output) => match store(files, output) {
            Ok(outputs) => Sentinel::Done {
                outputs: outputs.0,
                metrics: outputs.1,
                progress: progress_seen,
                elapsed_s,
            },
            Err(e) => Sentinel::Failed {
                error: format!("storing the outputs: {e}"),
                fault: Fault::Defect,
                progress: progress_seen,
                elapsed_s,
            },
        },
        Err(e) => Sentinel::Failed {
            fault: e.fault().unwrap_or(Fault::Defect),
            error: e.to_string(),
            progress: progress_seen,
            elapsed_s,
        },
    };
    work.write_sentinel(&sentinel)?;
    let (outcome, end) = match sentinel {
        Sentinel::Done { .. } => ("done", WorkerEnd::Finished),
        Sentinel::Failed { error, .. } => ("failed", WorkerEnd::Failed(error)),
    };
    journal(
        files,
        json!({"event": "end", "key": key, "pid": lease.lease.pid, "outcome": outcome,
            "model_loads": crate::stages::annotate::model_loads()}),
    );
    drop(lease);
    Ok(end)
}

/// Moves a stage's outputs into the content-addressed stores.
fn store(
    files: &Files,
    output: StageOutput,
) -> Result<
    (
        std::collections::BTreeMap<String, OutputRef>,
        serde_json::Value,
    ),
    CacheError,
> {
    let mut outputs = std::collections::BTreeMap::new();
    for (name, out) in output.outputs {
        let r = match out {
            Output::Bytes(bytes) => {
                let (hash, size) = files.artifacts().put_bytes(&bytes)?;
                OutputRef::Artifact { hash, size }
            }
            Output::File(path) => {
                let (hash, size) = files.blobs().put_file(&path)?;
                OutputRef::Blob { hash, size }
            }
        };
        outputs.insert(name, r);
    }
    Ok((outputs, output.metrics))
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> StageError {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    StageError::Failed(format!("stage panicked (a bug in cft): {message}"))
}

/// Appends one line to `log/workers.jsonl`: which worker started or ended which stage, when.
/// For people debugging a run (and the tests that check no stage ran twice at once); a
/// failing write loses only the line.
fn journal(files: &Files, mut event: serde_json::Value) {
    event["at"] = json!(now_secs());
    if event.get("host").is_none() {
        event["host"] = json!(hostname());
    }
    let dir = files.root().join("log");
    let _ = std::fs::create_dir_all(&dir);
    let line = format!("{event}\n");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("workers.jsonl"))
    {
        // One write of a short line: appends from concurrent workers do not interleave.
        let _ = f.write_all(line.as_bytes());
    }
}
