//! The coordinator's launching side: which ready stages start now (in plan order, grouped by
//! model, within `jobs` and the device pool), what each worker is given (its task, the input
//! artifacts as files), and how a worker starts: a thread, a `cft worker` process, or a Slurm
//! job.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use super::{Coordinator, Ended, Events, ExecError, Launcher, StageEnd, Unit, group, run_group};
use crate::cache::work::Task;
use crate::cache::{CacheError, RecordStatus, Store};
use crate::contract::Fault;
use crate::plan::StageSpec;
use crate::stages::{Device, Registry};

impl<'p, 'c> Coordinator<'p, 'c> {
    /// The first waiting stage whose inputs are all done, skipping (with their dependents)
    /// those that depend on a failure.
    pub(super) fn next_ready(&mut self) -> Option<&'p StageSpec> {
        self.ready(1).into_iter().next()
    }

    pub(super) fn ready(&mut self, limit: usize) -> Vec<&'p StageSpec> {
        let mut out = Vec::new();
        let order = self.order.clone();
        for spec in order {
            if out.len() >= limit {
                break;
            }
            if !self.waiting.contains(&spec.key) {
                continue;
            }
            if let Some(dep) = spec.inputs.iter().find(|k| self.broken.contains(*k)) {
                let because = format!(
                    "depends on `{}`, which failed",
                    self.spec(dep).map_or(dep.as_str(), |s| &s.label)
                );
                self.waiting.remove(&spec.key);
                self.broken.insert(spec.key.clone());
                self.summary.skipped += 1;
                self.events.stage_end(spec, &StageEnd::Skipped { because });
                continue;
            }
            let inputs_done = spec
                .inputs
                .iter()
                .all(|k| self.done.contains(k) || self.cached.contains(k));
            if inputs_done {
                out.push(spec);
            }
        }
        out
    }

    pub(super) fn launch<'s>(
        &mut self,
        scope: &'s std::thread::Scope<'s, '_>,
        tx: &mpsc::Sender<(usize, Ended)>,
    ) -> Result<(), ExecError>
    where
        'c: 's,
    {
        let jobs = match self.launcher {
            Launcher::Slurm(l) => l.profile.max_jobs,
            _ => self.options.jobs.max(1),
        };
        let free = jobs.saturating_sub(self.units.len() + self.orphans.len());
        if free == 0 {
            return Ok(());
        }
        let free_devices = self.free_devices();
        let ready: Vec<&'p StageSpec> = self
            .ready(usize::MAX)
            .into_iter()
            .filter(|s| !s.kind.uses_model() || free_devices > 0)
            .collect();
        let items: Vec<group::Ready<'_>> = ready
            .iter()
            .map(|s| group::Ready {
                key: &s.key,
                model: self.model_of(s),
            })
            .collect();
        let units = group::units(&items, free);
        // The cores are shared by the workers running once these start (a stage that runs
        // alone gets them all); the outputs do not depend on it.
        let threads = threads_per_worker(self.units.len() + self.orphans.len() + units.len());
        for keys in units {
            let Some(first) = keys.first().and_then(|k| self.spec(k)) else {
                continue;
            };
            let device = if let Launcher::Slurm(l) = self.launcher {
                l.device(first.kind)
            } else if first.kind.uses_model() {
                match self.take_device() {
                    Some(d) => d,
                    None => continue,
                }
            } else {
                Device::Cpu
            };
            self.start_unit(scope, tx, keys, device, threads)?;
        }
        Ok(())
    }

    /// The model a stage loads, for stages that may share a load: the checkpoint it reads or
    /// the model directory the manifest names.
    pub(super) fn model_of(&self, spec: &StageSpec) -> Option<String> {
        if !spec.kind.shares_model_loads() {
            return None;
        }
        if let Some(dir) = spec.bindings.get("model_dir").and_then(|v| v.as_str()) {
            return Some(format!("dir {dir}"));
        }
        spec.inputs
            .iter()
            .find(|k| {
                self.spec(k)
                    .is_some_and(|s| s.kind == "train" || s.kind == "pretrain")
            })
            .map(|k| format!("stage {k}"))
    }

    pub(super) fn free_devices(&self) -> usize {
        if self.options.devices.contains(&Device::Cpu) || self.options.devices.is_empty() {
            return usize::MAX;
        }
        self.options
            .devices
            .iter()
            .filter(|d| matches!(d, Device::Cuda(n) if !self.busy.contains(n)))
            .count()
    }

    pub(super) fn take_device(&mut self) -> Option<Device> {
        if self.options.devices.is_empty() {
            return Some(Device::Cpu);
        }
        for d in &self.options.devices {
            match d {
                Device::Cpu => return Some(Device::Cpu),
                Device::Cuda(n) if !self.busy.contains(n) => {
                    self.busy.insert(*n);
                    return Some(*d);
                }
                Device::Cuda(_) => {}
            }
        }
        None
    }

    /// Writes each stage's task and running record, and starts its worker.
    pub(super) fn start_unit<'s>(
        &mut self,
        scope: &'s std::thread::Scope<'s, '_>,
        tx: &mpsc::Sender<(usize, Ended)>,
        keys: Vec<String>,
        device: Device,
        threads: usize,
    ) -> Result<(), ExecError>
    where
        'c: 's,
    {
        let mut prepared = Vec::new();
        for key in &keys {
            let Some(spec) = self.spec(key) else {
                continue;
            };
            self.waiting.remove(key);
            if let Some(error) = self.prepare(spec)? {
                let work = self.cache.files().work(key);
                self.fail(spec, &work, error, Fault::Defect)?;
                continue;
            }
            prepared.push(key.clone());
        }
        if prepared.is_empty() {
            if let Device::Cuda(n) = device {
                self.busy.remove(&n);
            }
            return Ok(());
        }
        let id = self.next_unit;
        self.next_unit += 1;
        let files = self.cache.files();
        let mut job = None;
        let (pid, is_process) = match self.launcher {
            Launcher::Slurm(l) => match self.submit(l, &prepared)? {
                Some(j) => {
                    job = Some(j);
                    (0, false)
                }
                None => return Ok(()),
            },
            Launcher::Threads(registry) => {
                let registry: &'s Registry = registry;
                let (stop, events): (&'s AtomicBool, &'s dyn Events) = (self.stop, self.events);
                let members = prepared.clone();
                let tx = tx.clone();
                scope.spawn(move || {
                    let ends = run_group(files, &members, registry, device, stop, events)
                        .into_iter()
                        .map(|(k, end)| (k, end.map_err(|e| e.to_string())))
                        .collect();
                    let _ = tx.send((id, Ended::Thread(ends)));
                });
                (std::process::id(), false)
            }
            Launcher::Processes { exe } => {
                match spawn(exe, files.root(), &prepared, device, threads) {
                    Ok(mut child) => {
                        let pid = child.id();
                        let tx = tx.clone();
                        scope.spawn(move || {
                            let status = child.wait();
                            let _ = tx.send((id, Ended::Process(status)));
                        });
                        (pid, true)
                    }
                    Err(e) => {
                        for key in &prepared {
                            if let Some(spec) = self.spec(key) {
                                let work = files.work(key);
                                let error =
                                    format!("could not start `{} worker`: {e}", exe.display());
                                self.fail(spec, &work, error, Fault::Defect)?;
                            }
                        }
                        if let Device::Cuda(n) = device {
                            self.busy.remove(&n);
                        }
                        return Ok(());
                    }
                }
            }
        };
        for key in &prepared {
            if let Some(spec) = self.spec(key) {
                let mut record = self.running_record(spec);
                record.pid = (pid != 0).then_some(pid);
                record.device = Some(device.to_string());
                record.job = job.clone();
                record.job_state = job.as_ref().map(|_| "PENDING".to_string());
                self.cache.put_record(&record)?;
            }
        }
        // Durable before the worker saves anything: a stage with saved items has a record.
        self.cache.flush()?;
        self.cache.write_snapshot_soon()?;
        self.units.insert(
            id,
            Unit {
                keys: prepared.clone(),
                pending: prepared,
                device,
                pid,
                is_process,
                job,
            },
        );
        Ok(())
    }

    /// Writes a stage's task: its input records, their artifacts as files, and the items an
    /// earlier version of cft saved in the database. `Some(error)` when an input is not done.
    pub(super) fn prepare(&self, spec: &StageSpec) -> Result<Option<String>, CacheError> {
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        for key in &spec.inputs {
            match self.cache.record(key)? {
                Some(r) if r.status == RecordStatus::Done => {
                    self.cache.materialise(&r)?;
                    inputs.push(r);
                }
                _ => return Ok(Some(format!("input {key} is not done"))),
            }
        }
        let work = self.cache.files().work(&spec.key);
        for (name, bytes) in self.cache.progress_items(&spec.key)? {
            if work.saved(&name)?.is_none() {
                work.save(&name, &bytes)?;
            }
        }
        work.write_task(&Task {
            spec: spec.clone(),
            inputs,
        })?;
        Ok(None)
    }
}

/// Each of `workers` workers' share of the machine's cores.
pub fn threads_per_worker(workers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / workers.max(1)).max(1)
}

/// Starts `exe worker` on `keys`, in a process group of its own, its stderr appended to the
/// first stage's `stderr.log`.
fn spawn(
    exe: &std::path::Path,
    root: &std::path::Path,
    keys: &[String],
    device: Device,
    threads: usize,
) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let root = std::fs::canonicalize(root)?;
    let first = keys.first().map_or("", String::as_str);
    let log_dir = root.join("work").join(first);
    std::fs::create_dir_all(&log_dir)?;
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("stderr.log"))?;
    Command::new(exe)
        .arg("--cache")
        .arg(&root)
        .arg("worker")
        .arg("--device")
        .arg(device.to_string())
        .arg("--threads")
        .arg(threads.to_string())
        .args(keys)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .spawn()
}
