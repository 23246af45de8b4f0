//! Cached, pending, running or failed — and, for pending stages, why: never run, interrupted,
//! waiting on a missing input, or stale because a parameter or an input changed since the
//! stage last filled the same slot.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::cache::{RecordStatus, Store};

use super::{Plan, PlanError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Cached,
    Pending,
    Running,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageStatus {
    pub status: Status,
    pub why: String,
    pub progress: Option<(u64, u64)>,
    /// The Slurm job running it and the state the coordinator last saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<(String, String)>,
}

/// The status of every stage. `live` says the store is the view of a running process, so a
/// `running` record is really running rather than left behind by a dead one.
pub fn statuses(
    plan: &Plan,
    store: &dyn Store,
    live: bool,
) -> Result<HashMap<String, StageStatus>, PlanError> {
    let mut out: HashMap<String, StageStatus> = HashMap::new();
    for spec in plan.order() {
        let record = store.record(&spec.key)?;
        let done = record
            .as_ref()
            .is_some_and(|r| r.status == RecordStatus::Done);
        let worker = if done { None } else { store.worker(&spec.key) };
        let job = record
            .as_ref()
            .filter(|r| r.status == RecordStatus::Running)
            .and_then(|r| {
                let job = r.job.clone()?;
                Some((job, r.job_state.clone().unwrap_or_else(|| "?".into())))
            });
        let (status, why, progress) = match &record {
            // A worker holds the stage's lease: it runs, whether or not its coordinator lives.
            _ if worker.is_some() => {
                let w = worker.unwrap_or_default();
                (
                    Status::Running,
                    format!("running in worker pid {} on {}", w.pid, w.host),
                    record.as_ref().and_then(|r| r.progress),
                )
            }
            Some(r) if r.status == RecordStatus::Done => {
                let missing: Vec<&str> = r
                    .outputs
                    .iter()
                    .filter(|(_, o)| matches!(o, crate::cache::OutputRef::Blob { hash, .. } if !store.blob_exists(hash)))
                    .map(|(n, _)| n.as_str())
                    .collect();
                if missing.is_empty() {
                    (Status::Cached, "cached".to_string(), None)
                } else {
                    (
                        Status::Pending,
                        format!("output blob missing: {}", missing.join(", ")),
                        None,
                    )
                }
            }
            Some(r) if r.status == RecordStatus::Failed => (
                Status::Failed,
                format!(
                    "failed{}: {}",
                    match r.fault {
                        Some(crate::contract::Fault::Input) => " (bad input)",
                        Some(crate::contract::Fault::Defect) => " (a defect in cft)",
                        None => "",
                    },
                    r.error.as_deref().unwrap_or("unknown error")
                ),
                r.progress,
            ),
            Some(r) if r.status == RecordStatus::Running && live => {
                let why = match &job {
                    Some((id, state)) => format!("running as Slurm job {id} ({state})"),
                    None => "running".to_string(),
                };
                (Status::Running, why, r.progress)
            }
            Some(r) if r.status == RecordStatus::Running && job.is_some() => {
                let (id, state) = job.clone().unwrap_or_default();
                (
                    Status::Pending,
                    format!(
                        "submitted as Slurm job {id} (last seen {state}); `cft run` re-attaches to it"
                    ),
                    r.progress,
                )
            }
            Some(r) => (
                Status::Pending,
                match r.progress {
                    Some((done, total)) => {
                        format!("interrupted at {done}/{total} items; resumes from there")
                    }
                    None => "interrupted; resumes from its saved items".to_string(),
                },
                r.progress,
            ),
            None => (Status::Pending, why_pending(plan, spec, store, &out)?, None),
        };
        out.insert(
            spec.key.clone(),
            StageStatus {
                status,
                why,
                progress,
                job,
            },
        );
    }
    Ok(out)
}

fn why_pending(
    plan: &Plan,
    spec: &super::StageSpec,
    store: &dyn Store,
    known: &HashMap<String, StageStatus>,
) -> Result<String, PlanError> {
    let text = spec.params.to_string();
    if let Some(at) = text.find("\"missing:") {
        let rest = &text[at + 9..];
        let path = rest.split('"').next().unwrap_or(rest);
        return Ok(format!("missing input: {path}"));
    }
    if let Some(failed) = spec.inputs.iter().find(|k| {
        known
            .get(*k)
            .is_some_and(|s| s.status == Status::Failed || s.why.starts_with("blocked"))
    }) {
        let label = plan
            .get(failed)
            .map_or(failed.as_str(), |s| s.label.as_str());
        return Ok(format!("blocked: `{label}` failed or is blocked"));
    }
    let Some(old_key) = store.slot(&spec.slot)? else {
        return Ok("not run yet".to_string());
    };
    let Some(old) = store.record(&old_key)? else {
        return Ok("not run yet".to_string());
    };
    let mut reasons = Vec::new();
    if old.version != spec.version {
        reasons.push(format!("stage version {} → {}", old.version, spec.version));
    }
    let mut changes = Vec::new();
    diff(&old.params, &spec.params, String::new(), &mut changes);
    if !changes.is_empty() {
        reasons.push(format!("params changed: {}", changes.join(", ")));
    }
    for (i, new_input) in spec.inputs.iter().enumerate() {
        if old.inputs.get(i) != Some(new_input) {
            let label = plan
                .get(new_input)
                .map_or(new_input.as_str(), |s| s.label.as_str());
            let state = match known.get(new_input).map(|s| s.status) {
                Some(Status::Cached) => "",
                _ => ", not yet rebuilt",
            };
            reasons.push(format!("input `{label}` changed{state}"));
        }
    }
    if old.inputs.len() != spec.inputs.len() {
        reasons.push(format!(
            "{} inputs instead of {}",
            spec.inputs.len(),
            old.inputs.len()
        ));
    }
    if reasons.is_empty() {
        reasons.push("key changed".into());
    }
    Ok(format!("stale: {}", reasons.join("; ")))
}

/// Dotted paths whose values differ, as `path old → new`.
fn diff(old: &Value, new: &Value, path: String, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    p,
                    out,
                );
            }
        }
        (a, b) if a != b => out.push(format!("{path} {} → {}", short(a), short(b))),
        _ => {}
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}
