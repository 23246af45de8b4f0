//! Runs a plan: stages in dependency order, each skipped when cached, resumed from its saved
//! items when a previous run was cut off, recorded as failed (with its error) when it fails.
//!
//! Records are written last: a stage is done only when its record says so, and that record is
//! written after its artifacts and blobs are durable (DESIGN.md, Cache and Resume).

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::Value;

use crate::cache::{Cache, CacheError, OutputRef, Record, RecordStatus, Store, now_secs};
pub use crate::contract::Fault;
use crate::plan::{Plan, StageSpec, Status, statuses};

pub use crate::stages::{Output, Progress, Registry, StageCtx, StageError, StageImpl, StageOutput};

/// How one stage ended.
#[derive(Debug, Clone)]
pub enum StageEnd {
    Done { elapsed_s: f64 },
    Failed { error: String, fault: Fault },
    Interrupted,
    Skipped { because: String },
}

/// Receives progress; the CLI draws bars or prints lines.
pub trait Events: Progress {
    fn begin(&self, _to_run: usize, _cached: usize) {}
    fn stage_begin(&self, _spec: &StageSpec, _index: usize, _of: usize, _resumed: bool) {}
    fn stage_end(&self, _spec: &StageSpec, _end: &StageEnd) {}
}

pub struct NoEvents;
impl Progress for NoEvents {}
impl Events for NoEvents {}

#[derive(Clone, Copy, Default)]
pub struct Options {
    /// Run every stage that does not depend on a failed one.
    pub keep_going: bool,
    /// Where model stages run.
    pub device: crate::stages::Device,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    /// Label, error and whose fault it is, per failed stage.
    pub failed: Vec<(String, String, Fault)>,
    pub skipped: usize,
    pub interrupted: bool,
}

pub fn run(
    plan: &Plan,
    cache: &Cache,
    registry: &Registry,
    events: &dyn Events,
    stop: &AtomicBool,
    options: Options,
) -> Result<Summary, CacheError> {
    let status = statuses(plan, cache, false).map_err(|e| match e {
        crate::plan::PlanError::Cache(c) => c,
        other => CacheError::Corrupt {
            what: "plan".into(),
            message: other.to_string(),
        },
    })?;
    let order = plan.order();
    let to_run: Vec<&StageSpec> = order
        .iter()
        .copied()
        .filter(|s| {
            status
                .get(&s.key)
                .is_none_or(|st| st.status != Status::Cached)
        })
        .collect();
    let mut summary = Summary {
        cached: order.len() - to_run.len(),
        ..Summary::default()
    };
    events.begin(to_run.len(), summary.cached);
    cache.write_snapshot()?;

    let mut broken: HashSet<&str> = HashSet::new();
    for (i, spec) in to_run.iter().enumerate() {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            summary.interrupted = true;
            break;
        }
        if let Some(dep) = spec.inputs.iter().find(|k| broken.contains(k.as_str())) {
            let because = format!(
                "depends on `{}`, which failed",
                plan.get(dep).map_or(dep.as_str(), |s| &s.label)
            );
            events.stage_end(spec, &StageEnd::Skipped { because });
            broken.insert(&spec.key);
            summary.skipped += 1;
            continue;
        }
        let resumed = cache.record(&spec.key)?.is_some();
        events.stage_begin(spec, i + 1, to_run.len(), resumed);
        let end = run_stage(spec, cache, registry, events, stop, options)?;
        events.stage_end(spec, &end);
        match end {
            StageEnd::Done { .. } => summary.ran += 1,
            StageEnd::Interrupted => {
                summary.interrupted = true;
                break;
            }
            StageEnd::Failed { error, fault } => {
                summary.failed.push((spec.label.clone(), error, fault));
                broken.insert(&spec.key);
                if !options.keep_going {
                    break;
                }
            }
            StageEnd::Skipped { .. } => summary.skipped += 1,
        }
    }
    cache.flush()?;
    cache.write_snapshot()?;
    Ok(summary)
}

fn run_stage(
    spec: &StageSpec,
    cache: &Cache,
    registry: &Registry,
    events: &dyn Events,
    stop: &AtomicBool,
    options: Options,
) -> Result<StageEnd, CacheError> {
    let started = Instant::now();
    let previous = cache.record(&spec.key)?;
    let mut record = Record {
        key: spec.key.clone(),
        kind: spec.kind.name().to_string(),
        version: spec.version,
        label: spec.label.clone(),
        slot: spec.slot.clone(),
        params: spec.params.clone(),
        inputs: spec.inputs.clone(),
        status: RecordStatus::Running,
        outputs: Default::default(),
        metrics: Value::Null,
        progress: previous.and_then(|p| p.progress),
        error: None,
        fault: None,
        pid: Some(std::process::id()),
        started_at: now_secs(),
        elapsed_s: 0.0,
    };
    // Not flushed: until the stage saves an item there is nothing a crash could lose.
    cache.put_record(&record)?;
    cache.write_snapshot_soon()?;

    let mut inputs = Vec::with_capacity(spec.inputs.len());
    for key in &spec.inputs {
        match cache.record(key)? {
            Some(r) if r.status == RecordStatus::Done => inputs.push(r),
            _ => {
                return fail(
                    cache,
                    record,
                    format!("input {key} is not done"),
                    Fault::Defect,
                );
            }
        }
    }
    let Some(imp) = registry.get(spec.kind) else {
        return fail(
            cache,
            record,
            format!("this build of cft cannot run `{}` stages yet", spec.kind),
            Fault::Defect,
        );
    };
    let device = options.device;
    let mut ctx = StageCtx::new(spec, cache, inputs, stop, events, record.clone(), device);
    let result = catch_unwind(AssertUnwindSafe(|| imp.run(&mut ctx))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(StageError::Failed(format!(
            "stage panicked (a bug in cft): {message}"
        )))
    });
    record.progress = ctx.total.map(|t| (ctx.done, t));
    record.elapsed_s = started.elapsed().as_secs_f64();
    match result {
        Ok(output) => {
            for (name, out) in output.outputs {
                let r = match out {
                    Output::Bytes(bytes) => OutputRef::Artifact {
                        size: bytes.len() as u64,
                        hash: cache.put_artifact(&bytes)?,
                    },
                    Output::File(path) => {
                        let (hash, size) = cache.blobs().put_file(&path)?;
                        OutputRef::Blob { hash, size }
                    }
                };
                record.outputs.insert(name, r);
            }
            record.metrics = output.metrics;
            record.status = RecordStatus::Done;
            // Outputs are durable before the record that points at them.
            cache.flush()?;
            cache.put_record(&record)?;
            cache.set_slot(&spec.slot, &spec.key)?;
            cache.progress_clear(&spec.key)?;
            cache.flush()?;
            cache.write_snapshot_soon()?;
            Ok(StageEnd::Done {
                elapsed_s: record.elapsed_s,
            })
        }
        Err(StageError::Interrupted) => {
            record.status = RecordStatus::Interrupted;
            cache.put_record(&record)?;
            cache.flush()?;
            cache.write_snapshot_soon()?;
            Ok(StageEnd::Interrupted)
        }
        Err(StageError::Input(error)) => fail(cache, record, error, Fault::Input),
        Err(StageError::Failed(error)) => fail(cache, record, error, Fault::Defect),
    }
}

fn fail(
    cache: &Cache,
    mut record: Record,
    error: String,
    fault: Fault,
) -> Result<StageEnd, CacheError> {
    record.status = RecordStatus::Failed;
    record.error = Some(error.clone());
    record.fault = Some(fault);
    cache.put_record(&record)?;
    cache.flush()?;
    cache.write_snapshot_soon()?;
    Ok(StageEnd::Failed { error, fault })
}
