//! What a running stage sees: its spec, its inputs' records and outputs, a place to save
//! finished items (so a killed run resumes from them), progress reporting and the stop flag.
//!
//! All of it is files ([`Files`], [`WorkDir`]): a stage runs in a worker process that never
//! opens the cache's database, which belongs to the coordinator.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cache::work::WorkDir;
use crate::cache::{CacheError, Files, OutputRef, Record};
use crate::contract::{Fault, Kind, StageSpec};

/// How a stage's saved item is stored ([`StageCtx::item`]).
pub trait Item: Sized {
    fn encode(&self) -> Result<Vec<u8>, StageError>;
    fn decode(bytes: &[u8], name: &str) -> Result<Self, StageError>;
}

/// One JSON line per element, as the stages' outputs are written.
impl<T: Serialize + DeserializeOwned> Item for Vec<T> {
    fn encode(&self) -> Result<Vec<u8>, StageError> {
        Ok(crate::contract::artifacts::write_lines(self)?)
    }

    fn decode(bytes: &[u8], name: &str) -> Result<Self, StageError> {
        Ok(crate::contract::artifacts::read_lines(bytes, name)?)
    }
}

/// A stage kind's implementation.
pub trait StageImpl: Send + Sync {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError>;
}

/// Stage implementations by kind.
#[derive(Default)]
pub struct Registry {
    impls: HashMap<Kind, Box<dyn StageImpl>>,
}

impl Registry {
    pub fn register(&mut self, kind: Kind, imp: impl StageImpl + 'static) {
        self.impls.insert(kind, Box::new(imp));
    }

    pub fn get(&self, kind: Kind) -> Option<&dyn StageImpl> {
        self.impls.get(&kind).map(|b| b.as_ref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("interrupted")]
    Interrupted,
    /// An input the user gave cannot be used: a model directory, a data file, a manifest
    /// value ([`Fault::Input`]).
    #[error("{0}")]
    Input(String),
    /// Anything else: a defect in cft ([`Fault::Defect`]).
    #[error("{0}")]
    Failed(String),
}

impl StageError {
    /// Whose fault it is (`None`: interrupted, nobody's).
    pub fn fault(&self) -> Option<Fault> {
        match self {
            StageError::Interrupted => None,
            StageError::Input(_) => Some(Fault::Input),
            StageError::Failed(_) => Some(Fault::Defect),
        }
    }
}

impl From<crate::contract::artifacts::ArtifactError> for StageError {
    fn from(e: crate::contract::artifacts::ArtifactError) -> Self {
        StageError::Failed(e.to_string())
    }
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

/// Where a stage's item counts go, by stage key (the progress display; in a worker process,
/// nowhere but the stage's `progress.json`).
pub trait Progress: Sync {
    fn stage_total(&self, _key: &str, _total: u64) {}
    fn stage_progress(&self, _key: &str, _done: u64) {}
}

pub struct StageCtx<'a> {
    pub spec: &'a StageSpec,
    files: &'a Files,
    work: &'a WorkDir,
    inputs: Vec<Record>,
    stop: &'a AtomicBool,
    events: &'a dyn Progress,
    done: u64,
    total: Option<u64>,
    last_write: Instant,
    devices: super::Devices,
}

impl<'a> StageCtx<'a> {
    /// What stage `spec` sees while it runs: the cache's files, its work folder (saved items,
    /// progress), its input records (in the order of `spec.inputs`), the stop flag, where its
    /// progress goes and the devices its worker holds.
    pub fn new(
        spec: &'a StageSpec,
        files: &'a Files,
        work: &'a WorkDir,
        inputs: Vec<Record>,
        stop: &'a AtomicBool,
        events: &'a dyn Progress,
        devices: super::Devices,
    ) -> Self {
        Self {
            spec,
            files,
            work,
            inputs,
            stop,
            events,
            done: 0,
            total: None,
            last_write: Instant::now(),
            devices,
        }
    }

    /// Items done and total, when the stage set a total.
    pub fn progress(&self) -> Option<(u64, u64)> {
        self.total.map(|t| (self.done, t))
    }

    /// The device model stages run on (`cft run --device`): the first the worker holds.
    pub fn device(&self) -> super::Device {
        self.devices.first()
    }

    /// Every device the worker holds (several for a `zero1` training).
    pub fn devices(&self) -> &super::Devices {
        &self.devices
    }

    pub fn params(&self) -> &Value {
        &self.spec.params
    }

    /// The params as the stage's kind's struct ([`crate::contract`]): a missing or unknown
    /// field is an error naming the stage.
    pub fn params_as<P: crate::contract::Params>(&self) -> Result<P, StageError> {
        if self.spec.kind != P::KIND {
            return Err(StageError::Failed(format!(
                "stage `{}` is a {} stage, read as {}",
                self.spec.label,
                self.spec.kind,
                P::KIND
            )));
        }
        P::from_params(&self.spec.label, &self.spec.params)
            .map_err(|e| StageError::Failed(e.to_string()))
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
        Ok(self.files.output(record, output)?)
    }

    /// The file behind a blob output (checkpoints are read in place).
    pub fn blob_path(&self, record: &Record, output: &str) -> Result<PathBuf, StageError> {
        match record.outputs.get(output) {
            Some(OutputRef::Blob { hash, .. }) => Ok(self.files.blobs().path(hash)),
            _ => Err(StageError::Failed(format!(
                "input `{}` has no blob output `{output}`",
                record.label
            ))),
        }
    }

    /// The model directory a checkpoint record describes ([`Files::model_dir`]).
    pub fn model_dir(&self, record: &Record) -> Result<PathBuf, StageError> {
        Ok(self.files.model_dir(record)?)
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
        self.files.blobs().temp_path()
    }

    /// Content fingerprint of an external file or directory.
    pub fn fingerprint(&self, path: &std::path::Path) -> Result<Option<String>, StageError> {
        Ok(crate::cache::fingerprint_of(path)?)
    }

    /// A previously saved item of this stage (from an interrupted run), if any.
    pub fn saved(&self, item: &str) -> Result<Option<Vec<u8>>, StageError> {
        Ok(self.work.saved(item)?)
    }

    /// Saves a finished item durably: after this returns, a `kill -9` does not lose it.
    pub fn save(&mut self, item: &str, bytes: &[u8]) -> Result<(), StageError> {
        Ok(self.work.save(item, bytes)?)
    }

    /// The folder for large files a saved item refers to (a training run's state): they
    /// survive the worker, like the items, and are removed with the work folder.
    pub fn state_dir(&self) -> Result<PathBuf, StageError> {
        Ok(self.work.state_dir()?)
    }

    /// Item `name` of the stage's work: the copy a previous (interrupted) run saved, or else,
    /// unless the run is asked to stop, `compute`d and saved durably before it is returned.
    /// Either way the progress advances by `count`. Every stage that works in items resumes
    /// through this, so a killed run loses at most the item in flight.
    pub fn item<I: Item>(
        &mut self,
        name: &str,
        count: u64,
        compute: impl FnOnce() -> Result<I, StageError>,
    ) -> Result<I, StageError> {
        let names = [(name.to_string(), count)];
        let mut items = self.items(&names, |_| Ok(vec![compute()?]))?;
        items.pop().ok_or_else(|| {
            StageError::Failed(format!("stage `{}`: item {name} lost", self.spec.label))
        })
    }

    /// Items `names` (each with its count) as [`StageCtx::item`] gives them, the ones not saved
    /// computed together by one call of `compute`, which gets their places in `names` and
    /// returns them in that order (a batch wider than one item); each is saved durably.
    pub fn items<I: Item>(
        &mut self,
        names: &[(String, u64)],
        compute: impl FnOnce(&[usize]) -> Result<Vec<I>, StageError>,
    ) -> Result<Vec<I>, StageError> {
        let mut out: Vec<Option<I>> = Vec::with_capacity(names.len());
        let mut missing = Vec::new();
        for (i, (name, count)) in names.iter().enumerate() {
            match self.saved(name)? {
                Some(bytes) => {
                    out.push(Some(I::decode(&bytes, name)?));
                    self.advance(*count);
                }
                None => {
                    out.push(None);
                    missing.push(i);
                }
            }
        }
        if !missing.is_empty() {
            self.check_stop()?;
            let computed = compute(&missing)?;
            if computed.len() != missing.len() {
                return Err(StageError::Failed(format!(
                    "stage `{}`: {} items computed for {} asked",
                    self.spec.label,
                    computed.len(),
                    missing.len()
                )));
            }
            for (&i, item) in missing.iter().zip(computed) {
                let (name, count) = &names[i];
                self.save(name, &item.encode()?)?;
                self.advance(*count);
                out[i] = Some(item);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        self.events.stage_total(&self.spec.key, total);
        self.persist_progress(true);
    }

    pub fn advance(&mut self, n: u64) {
        self.done += n;
        self.events.stage_progress(&self.spec.key, self.done);
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

    /// Keeps the stage's `progress.json` (which the coordinator shows and records) up to
    /// date, at most twice a second.
    fn persist_progress(&mut self, force: bool) {
        if !force && self.last_write.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_write = Instant::now();
        if let Some(progress) = self.progress() {
            // Best effort: progress is for display; the items are what resume.
            let _ = self.work.write_progress(progress);
        }
    }
}
