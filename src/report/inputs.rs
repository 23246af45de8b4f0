//! What a report reads: the `report` stage's params (experiment, models, methods with their
//! sweep cells, benchmarks, report settings) and the finished records of its inputs, found by
//! the labels the planner gives them (`eval {model} {method} {cell} {bench}`, ...).
//!
//! The same inputs come from two places: the `report` stage inside a run (its input records)
//! and `cft report`, which plans the manifest and looks the report stage's inputs up in the
//! cache. Reading goes through a caller's function, so neither path needs the other's handle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::Value;

use crate::cache::{Record, RecordStatus};
use crate::contract::artifacts::{QuestionOutput, parse_outputs};

/// The `report` stage's params and its methods, as the contract defines them.
pub use crate::contract::{ReportMethod as MethodParams, ReportParams as Params};

/// Reads one output of a record; `None` when it cannot be read (the report shows "—").
pub type Reader<'a> = dyn Fn(&Record, &str) -> Option<Vec<u8>> + 'a;

/// Finished records by label, with a reader for their outputs.
pub struct Records<'a> {
    by_label: BTreeMap<String, Record>,
    read: &'a Reader<'a>,
    outputs: Mutex<HashMap<String, Option<std::sync::Arc<Vec<QuestionOutput>>>>>,
}

impl<'a> Records<'a> {
    /// Keeps the records that are done; others (running, failed) count as absent.
    pub fn new(records: impl IntoIterator<Item = Record>, read: &'a Reader<'a>) -> Records<'a> {
        let by_label = records
            .into_iter()
            .filter(|r| r.status == RecordStatus::Done)
            .map(|r| (r.label.clone(), r))
            .collect();
        Records {
            by_label,
            read,
            outputs: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, label: &str) -> Option<&Record> {
        self.by_label.get(label)
    }

    /// How many records ran with each kernel set other than this build's default.
    pub fn cpu_dependent_kernels(&self) -> Vec<(String, u64)> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for r in self.by_label.values() {
            match r.kernels.as_deref() {
                None | Some("avx2") => {}
                Some(k) => *counts.entry(k.to_string()).or_default() += 1,
            }
        }
        counts.into_iter().collect()
    }

    pub fn metrics(&self, label: &str) -> Option<&Value> {
        self.get(label).map(|r| &r.metrics)
    }

    pub fn output(&self, label: &str, name: &str) -> Option<Vec<u8>> {
        let record = self.get(label)?;
        (self.read)(record, name)
    }

    /// An eval record's per-question outputs (parsed once).
    pub fn eval_outputs(&self, label: &str) -> Option<std::sync::Arc<Vec<QuestionOutput>>> {
        if let Ok(map) = self.outputs.lock()
            && let Some(v) = map.get(label)
        {
            return v.clone();
        }
        let parsed = self
            .output(label, "outputs.jsonl")
            .and_then(|b| parse_outputs(&b).ok())
            .map(std::sync::Arc::new);
        if let Ok(mut map) = self.outputs.lock() {
            map.insert(label.to_string(), parsed.clone());
        }
        parsed
    }
}

pub use crate::contract::label;
