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
use crate::stages::{Device, Devices, Registry};

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
        let mut ready: Vec<&'p StageSpec> = Vec::new();
        for s in self.ready(usize::MAX) {
            if !s.kind.uses_model() {
                ready.push(s);
                continue;
            }
            let wanted = self.devices_wanted(s);
            let pool = self.pool_size();
            if wanted > pool && !matches!(self.launcher, Launcher::Slurm(_)) {
                // Never startable here: say so instead of waiting forever.
                self.waiting.remove(&s.key);
                let work = self.cache.files().work(&s.key);
                let error = format!(
                    "strategy = \"zero1\" over {wanted} GPUs, but --devices gives {pool}: \
                     give more (--devices cuda:0,cuda:1,...) or lower `gpus` in [train]"
                );
                self.fail(s, &work, error, Fault::Input)?;
                continue;
            }
            if free_devices >= wanted {
                ready.push(s);
            }
        }
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
        let mut model_units = units
            .iter()
            .filter(|keys| {
                keys.first()
                    .and_then(|k| self.spec(k))
                    .is_some_and(|s| s.kind.uses_model())
            })
            .count();
        for keys in units {
            let Some(first) = keys.first().and_then(|k| self.spec(k)) else {
                continue;
            };
            let device = if let Launcher::Slurm(l) = self.launcher {
                l.devices(first.kind)
            } else if first.kind.uses_model() {
                // A greedy pass, a rollout, an evaluation or a resampling spreads over its share of the
                // free GPUs (a model copy on each); everything of its model waits for them.
                let spreads = matches!(
                    first.kind,
                    crate::contract::Kind::Greedy
                        | crate::contract::Kind::Rollout
                        | crate::contract::Kind::Eval
                        | crate::contract::Kind::Sample
                );
                let wanted = match spreads && !self.cpu_pool() {
                    true => (self.free_devices() / model_units.max(1)).max(1),
                    false => self.devices_wanted(first),
                };
                model_units = model_units.saturating_sub(1);
                match self.take_devices(wanted) {
                    Some(d) => d,
                    None => continue,
                }
            } else {
                Devices::one(Device::Cpu)
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

    /// How many devices stage `spec` holds: a `zero1` training its `gpus` (all the pool's
    /// GPUs when unset), every other model stage one.
    pub(super) fn devices_wanted(&self, spec: &StageSpec) -> usize {
        let zero1 = spec.kind == crate::contract::Kind::Train
            && spec.bindings.get("strategy").and_then(|v| v.as_str()) == Some("zero1");
        if !zero1 || self.cpu_pool() {
            return 1;
        }
        match spec.bindings.get("gpus").and_then(|v| v.as_u64()) {
            Some(n) => (n as usize).max(1),
            None => self.pool_size().max(1),
        }
    }

    /// Whether model stages run on the (shared) CPU.
    fn cpu_pool(&self) -> bool {
        self.options.devices.is_empty() || self.options.devices.contains(&Device::Cpu)
    }

    /// How many devices the pool has (the CPU counts as one).
    fn pool_size(&self) -> usize {
        match self.cpu_pool() {
            true => 1,
            false => self.options.devices.len(),
        }
    }

    /// `n` free devices of the pool, now held (the CPU, shared, whatever `n`); `None` when
    /// fewer are free.
    pub(super) fn take_devices(&mut self, n: usize) -> Option<Devices> {
        if self.cpu_pool() {
            return Some(Devices::one(Device::Cpu));
        }
        let free: Vec<Device> = self
            .options
            .devices
            .iter()
            .filter(|d| matches!(d, Device::Cuda(k) if !self.busy.contains(k)))
            .take(n)
            .copied()
            .collect();
        if free.len() < n {
            return None;
        }
        let devices = Devices::new(free)?;
        self.busy.extend(devices.cuda());
        Some(devices)
    }

    /// Writes each stage's task and running record, and starts its worker.
    pub(super) fn start_unit<'s>(
        &mut self,
        scope: &'s std::thread::Scope<'s, '_>,
        tx: &mpsc::Sender<(usize, Ended)>,
        keys: Vec<String>,
        device: Devices,
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
            for n in device.cuda() {
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
                let devices = device.clone();
                scope.spawn(move || {
                    let ends = run_group(files, &members, registry, &devices, stop, events)
                        .into_iter()
                        .map(|(k, end)| (k, end.map_err(|e| e.to_string())))
                        .collect();
                    let _ = tx.send((id, Ended::Thread(ends)));
                });
                (std::process::id(), false)
            }
            Launcher::Processes { exe } => {
                match spawn(exe, files.root(), &prepared, &device, threads) {
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
                        for n in device.cuda() {
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
    device: &Devices,
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
