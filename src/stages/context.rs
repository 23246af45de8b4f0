//! What a running stage sees: its spec, its inputs' records and outputs, a place to save
//! finished items (so a killed run resumes from them), progress reporting and the stop flag.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cache::{Cache, CacheError, OutputRef, Record, Store};
use crate::plan::StageSpec;

/// A stage kind's implementation.
pub trait StageImpl: Send + Sync {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError>;
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Failed(String),
}

impl From<CacheError> for StageError {
    fn from(e: CacheError) -> Self {
        StageError::Failed(e.to_string())
    }
}

/// What a stage produced: named outputs and metrics for the record.
#[derive(Default)]
pub struct StageOutput {
    pub outputs: Vec<(String, Output)>,
    pub metrics: Value,
}

pub enum Output {
    /// Small bytes, stored in the `artifacts` tree by content hash.
    Bytes(Vec<u8>),
    /// A finished file (from [`StageCtx::temp_path`]), moved into `blobs/` by content hash.
    File(PathBuf),
}

/// Where a stage's item counts go (the executor forwards them to the progress display).
pub trait Progress: Sync {
    fn stage_total(&self, _total: u64) {}
    fn stage_progress(&self, _done: u64) {}
}

pub struct StageCtx<'a> {
    pub spec: &'a StageSpec,
    pub(crate) cache: &'a Cache,
    pub(crate) inputs: Vec<Record>,
    pub(crate) stop: &'a AtomicBool,
    pub(crate) events: &'a dyn Progress,
    pub(crate) record: Record,
    pub(crate) done: u64,
    pub(crate) total: Option<u64>,
    pub(crate) last_write: Instant,
}

impl<'a> StageCtx<'a> {
    pub fn params(&self) -> &Value {
        &self.spec.params
    }

    pub fn bindings(&self) -> &Value {
        &self.spec.bindings
    }

    /// The records of the stages this one reads, in the order of `spec.inputs`.
    pub fn inputs(&self) -> &[Record] {
        &self.inputs
    }

    /// The first input of a kind.
    pub fn input(&self, kind: &str) -> Result<&Record, StageError> {
        self.inputs.iter().find(|r| r.kind == kind).ok_or_else(|| {
            StageError::Failed(format!("stage `{}` has no `{kind}` input", self.spec.label))
        })
    }

    /// The bytes of an input's output.
    pub fn read(&self, record: &Record, output: &str) -> Result<Vec<u8>, StageError> {
        let missing =
            || StageError::Failed(format!("input `{}` has no output `{output}`", record.label));
        match record.outputs.get(output).ok_or_else(missing)? {
            OutputRef::Artifact { hash, .. } => self.cache.artifact(hash)?.ok_or_else(|| {
                StageError::Failed(format!(
                    "artifact {hash} of `{}` is missing from the cache; run `cft cache verify`",
                    record.label
                ))
            }),
            OutputRef::Blob { hash, .. } => {
                let path = self.cache.blobs().path(hash);
                std::fs::read(&path).map_err(|e| {
                    StageError::Failed(format!(
                        "blob {} of `{}`: {e}",
                        path.display(),
                        record.label
                    ))
                })
            }
        }
    }

    /// The file behind a blob output (checkpoints are read in place).
    pub fn blob_path(&self, record: &Record, output: &str) -> Result<PathBuf, StageError> {
        match record.outputs.get(output) {
            Some(OutputRef::Blob { hash, .. }) => Ok(self.cache.blobs().path(hash)),
            _ => Err(StageError::Failed(format!(
                "input `{}` has no blob output `{output}`",
                record.label
            ))),
        }
    }

    /// The model directory a checkpoint record describes. A stage that produces a model names
    /// its outputs `model/<file>` (HF layout: `config.json`, `model.safetensors`,
    /// `tokenizer.json`, ...); they are linked under `<cache>/models/<key>/` with those names,
    /// so a checkpoint loads exactly like a downloaded model. Blobs are immutable, so hard
    /// links are safe; idempotent.
    pub fn model_dir(&self, record: &Record) -> Result<PathBuf, StageError> {
        let dir = self.cache.root().join("models").join(&record.key);
        let fail = |e: std::io::Error, p: &std::path::Path| StageError::Failed(format!("{}: {e}", p.display()));
        let mut any = false;
        for (name, out) in &record.outputs {
            let Some(rel) = name.strip_prefix("model/") else { continue };
            any = true;
            let target = dir.join(rel);
            if target.exists() {
                continue;
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| fail(e, parent))?;
            }
            match out {
                OutputRef::Blob { hash, .. } => {
                    let blob = self.cache.blobs().path(hash);
                    if std::fs::hard_link(&blob, &target).is_err() {
                        std::fs::copy(&blob, &target).map_err(|e| fail(e, &target))?;
                    }
                }
                OutputRef::Artifact { .. } => {
                    let bytes = self.read(record, name)?;
                    std::fs::write(&target, bytes).map_err(|e| fail(e, &target))?;
                }
            }
        }
        if !any {
            return Err(StageError::Failed(format!("`{}` produced no model files", record.label)));
        }
        Ok(dir)
    }

    /// The model this stage works on: its `model_dir` binding (an HF directory the manifest
    /// names), else the checkpoint of its `train` or `pretrain` input.
    pub fn input_model_dir(&self) -> Result<PathBuf, StageError> {
        if let Some(dir) = self.bindings().get("model_dir").and_then(|v| v.as_str()) {
            return Ok(PathBuf::from(dir));
        }
        let record = self
            .inputs
            .iter()
            .find(|r| r.kind == "train")
            .or_else(|| self.inputs.iter().find(|r| r.kind == "pretrain"))
            .ok_or_else(|| StageError::Failed(format!("stage `{}` has no model: no `model_dir` binding and no train or pretrain input", self.spec.label)))?;
        self.model_dir(record)
    }

    /// A temporary file path inside the blob store, for outputs written as files.
    pub fn temp_path(&self) -> PathBuf {
        self.cache.blobs().temp_path()
    }

    /// Content fingerprint of an external file or directory (memoised in the cache).
    pub fn fingerprint(&self, path: &std::path::Path) -> Result<Option<String>, StageError> {
        Ok(self.cache.fingerprint(path)?)
    }

    /// A previously saved item of this stage (from an interrupted run), if any.
    pub fn saved(&self, item: &str) -> Result<Option<Vec<u8>>, StageError> {
        Ok(self.cache.progress_get(&self.spec.key, item)?)
    }

    /// Saves a finished item durably: after this returns, a `kill -9` does not lose it.
    pub fn save(&mut self, item: &str, bytes: &[u8]) -> Result<(), StageError> {
        self.cache.progress_put(&self.spec.key, item, bytes)?;
        self.cache.flush()?;
        Ok(())
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        self.events.stage_total(total);
        self.persist_progress(true);
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        self.events.stage_progress(self.done);
        self.persist_progress(false);
    }

    /// Returns `Interrupted` once Ctrl-C was pressed; stages call it between items.
    pub fn check_stop(&self) -> Result<(), StageError> {
        if self.stop.load(Ordering::SeqCst) {
            Err(StageError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Keeps `cft status` (through the record and the live snapshot) up to date, at most
    /// twice a second.
    fn persist_progress(&mut self, force: bool) {
        if !force && self.last_write.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_write = Instant::now();
        self.record.progress = self.total.map(|t| (self.done, t));
        // Progress display is best effort; a failing write shows up at the next flush.
        let _ = self.cache.put_record(&self.record);
        let _ = self.cache.write_snapshot_soon();
    }
}
