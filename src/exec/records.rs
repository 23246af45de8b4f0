//! The coordinator's writing side: stage records (running, done, failed, interrupted), the
//! ingestion of a worker's sentinel (outputs checked and stored first, the record last), and
//! the events the display receives.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Begin, Coordinator, StageEnd, slurm};
use crate::cache::work::{Sentinel, WorkDir};
use crate::cache::{CacheError, OutputRef, Record, RecordStatus, Store, hash_bytes, now_secs};
use crate::contract::Fault;
use crate::plan::StageSpec;
use crate::stages::Devices;

impl Coordinator<'_, '_> {
    pub(super) fn running_record(&self, spec: &StageSpec) -> Record {
        let previous = self.cache.record(&spec.key).ok().flatten();
        Record {
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
            pid: None,
            host: Some(crate::cache::work::hostname()),
            device: None,
            kernels: Some(crate::model::kernels::KERNELS.to_string()),
            job: None,
            job_state: None,
            started_at: now_secs(),
            elapsed_s: 0.0,
        }
    }

    /// The record of a stage that ended (done, failed or interrupted): as
    /// [`Self::running_record`], but started when its running record says, so that
    /// `started_at + elapsed_s` is when it ended (TensorBoard's wall times are read so).
    fn ended_record(&self, spec: &StageSpec) -> Record {
        let mut record = self.running_record(spec);
        if let Ok(Some(running)) = self.cache.record(&spec.key)
            && running.status == RecordStatus::Running
        {
            record.started_at = running.started_at;
        }
        record
    }

    pub(super) fn announce(&mut self, spec: &StageSpec, resumed: bool, device: Devices, pid: u32) {
        self.begun.insert(spec.key.clone(), Instant::now());
        let begin = Begin {
            index: self.begun.len(),
            of: self.of,
            resumed,
            device,
            pid,
        };
        self.events.stage_begin(spec, &begin);
    }

    /// A worker process's progress, to the display and (twice a second) the record.
    pub(super) fn forward_progress(
        &mut self,
        spec: &StageSpec,
        work: &WorkDir,
    ) -> Result<(), CacheError> {
        let Some((done, total)) = work.progress() else {
            return Ok(());
        };
        self.events.stage_total(&spec.key, total);
        self.events.stage_progress(&spec.key, done);
        let due = self
            .last_record
            .get(&spec.key)
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
        if due {
            self.last_record.insert(spec.key.clone(), Instant::now());
            if let Some(mut record) = self.cache.record(&spec.key)?
                && record.status == RecordStatus::Running
                && record.progress != Some((done, total))
            {
                record.progress = Some((done, total));
                self.cache.put_record(&record)?;
                self.cache.write_snapshot_soon()?;
            }
        }
        Ok(())
    }

    /// Takes a sentinel into the database: outputs first, the record last.
    pub(super) fn ingest(
        &mut self,
        spec: &StageSpec,
        work: &WorkDir,
        sentinel: Sentinel,
        pid: Option<u32>,
    ) -> Result<(), CacheError> {
        let mut record = self.ended_record(spec);
        record.pid = pid.or(record.pid);
        match sentinel {
            Sentinel::Failed {
                error,
                fault,
                progress,
                elapsed_s,
            } => {
                record.progress = progress;
                record.elapsed_s = elapsed_s;
                let job = self.cache.record(&spec.key)?.and_then(|r| r.job);
                let tail = match job {
                    Some(job) => slurm::log_tail(self.cache.root(), &job, 20).map(|t| {
                        format!("\n(the end of its Slurm job's log, log/slurm/{job}.log:)\n{t}")
                    }),
                    None => work
                        .stderr_tail(20)
                        .map(|t| format!("\n(the end of its worker's stderr:)\n{t}")),
                }
                .unwrap_or_default();
                self.fail_record(spec, record, format!("{error}{tail}"), fault)?;
                work.clear_failure()?;
            }
            Sentinel::Done {
                outputs,
                metrics,
                progress,
                elapsed_s,
            } => {
                for (name, out) in &outputs {
                    if let Some(error) = self.take_output(name, out)? {
                        let work_error = format!("output `{name}`: {error}");
                        self.fail_record(spec, record, work_error, Fault::Defect)?;
                        work.remove()?;
                        return Ok(());
                    }
                }
                record.outputs = outputs;
                record.metrics = metrics;
                record.progress = progress;
                record.elapsed_s = elapsed_s;
                record.status = RecordStatus::Done;
                // Outputs are durable before the record that points at them.
                self.cache.flush()?;
                self.cache.put_record(&record)?;
                self.cache.set_slot(&spec.slot, &spec.key)?;
                self.cache.progress_clear(&spec.key)?;
                self.cache.flush()?;
                self.cache.write_snapshot_soon()?;
                work.remove()?;
                self.done.insert(spec.key.clone());
                self.summary.ran += 1;
                self.events.stage_end(spec, &StageEnd::Done { elapsed_s });
            }
        }
        Ok(())
    }

    /// Checks a worker's output file and, for a small one, stores its bytes in the database.
    /// `Some(error)` when the file is missing or its bytes are not the hash it claims.
    pub(super) fn take_output(
        &self,
        name: &str,
        out: &OutputRef,
    ) -> Result<Option<String>, CacheError> {
        let files = self.cache.files();
        match out {
            OutputRef::Blob { hash, .. } => Ok((!files.blobs().exists(hash))
                .then(|| format!("blob {hash} is missing from {}", files.root().display()))),
            OutputRef::Artifact { hash, .. } => {
                let path = files.artifacts().path(hash);
                let bytes = match std::fs::read(&path) {
                    Ok(b) => b,
                    Err(e) => return Ok(Some(format!("{}: {e}", path.display()))),
                };
                if hash_bytes(&bytes) != *hash {
                    return Ok(Some(format!(
                        "{} holds other bytes than `{name}` claims",
                        path.display()
                    )));
                }
                // The file is read and checked once; the database takes the same bytes.
                self.cache.index_artifact(hash, &bytes)?;
                Ok(None)
            }
        }
    }

    pub(super) fn fail(
        &mut self,
        spec: &StageSpec,
        work: &WorkDir,
        error: String,
        fault: Fault,
    ) -> Result<(), CacheError> {
        let mut record = self.ended_record(spec);
        record.progress = work.progress().or(record.progress);
        self.fail_record(spec, record, error, fault)?;
        work.clear_failure()
    }

    pub(super) fn fail_record(
        &mut self,
        spec: &StageSpec,
        mut record: Record,
        error: String,
        fault: Fault,
    ) -> Result<(), CacheError> {
        record.status = RecordStatus::Failed;
        record.error = Some(error.clone());
        record.fault = Some(fault);
        self.cache.put_record(&record)?;
        self.cache.flush()?;
        self.cache.write_snapshot_soon()?;
        self.broken.insert(spec.key.clone());
        self.summary
            .failed
            .push((spec.label.clone(), error.clone(), fault));
        if !self.options.keep_going {
            self.halted = true;
        }
        self.events
            .stage_end(spec, &StageEnd::Failed { error, fault });
        Ok(())
    }

    pub(super) fn interrupted(
        &mut self,
        spec: &StageSpec,
        work: &WorkDir,
    ) -> Result<(), CacheError> {
        let mut record = self.ended_record(spec);
        record.status = RecordStatus::Interrupted;
        record.progress = work.progress().or(record.progress);
        self.cache.put_record(&record)?;
        self.cache.flush()?;
        self.cache.write_snapshot_soon()?;
        self.events.stage_end(spec, &StageEnd::Interrupted);
        Ok(())
    }
}
