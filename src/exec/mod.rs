//! Runs a plan: the coordinator. Stages whose inputs are done run concurrently, at most
//! `jobs` at once, each in a worker ([`worker::run_stage`]) that talks to the coordinator only
//! through its work folder (`cache/work/<key>/`, [`crate::cache::work`]). The coordinator is
//! the single writer of the database: it writes a stage's task, watches its sentinel, and
//! ingests it (outputs first, the record last, as DESIGN.md's Cache and Resume asks).
//!
//! A model stage takes a device from the pool for its worker's lifetime (the CPU is shared by
//! any number of workers; each CUDA device is one worker's). Stages on the same model may share
//! a worker that loads it once ([`group`]). Faults:
//! - a worker that dies (`kill -9`, out of memory) leaves no sentinel: its stage is started
//!   again and resumes from its saved items, up to `retries` times;
//! - a coordinator that dies leaves its workers running (each in a process group of its own):
//!   the next run finds their leases held, waits for them and ingests their sentinels;
//! - Ctrl-C asks every worker to stop after its item in flight, then records the stages as
//!   interrupted.

mod cluster;
mod group;
pub mod slurm;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cache::work::{Sentinel, Task, WorkDir};
use crate::cache::{Cache, CacheError, OutputRef, Record, RecordStatus, Store, now_secs};
pub use crate::contract::Fault;
use crate::plan::{Plan, StageSpec, Status, statuses};
pub use worker::{WorkerEnd, run_stage};

pub use crate::stages::{
    Device, Output, Progress, Registry, StageCtx, StageError, StageImpl, StageOutput,
};

/// How one stage ended.
#[derive(Debug, Clone)]
pub enum StageEnd {
    Done { elapsed_s: f64 },
    Failed { error: String, fault: Fault },
    Interrupted,
    Skipped { because: String },
}

/// A stage's worker has started it.
#[derive(Debug, Clone)]
pub struct Begin {
    /// 1-based count of stages begun in this run, and how many the run has to run.
    pub index: usize,
    pub of: usize,
    /// It resumes from items an earlier worker saved (or continues in a worker an earlier
    /// coordinator started).
    pub resumed: bool,
    pub device: Device,
    /// The worker's process id.
    pub pid: u32,
}

/// Receives progress; the CLI draws bars or prints lines.
pub trait Events: Progress {
    fn begin(&self, _to_run: usize, _cached: usize) {}
    fn stage_begin(&self, _spec: &StageSpec, _begin: &Begin) {}
    fn stage_end(&self, _spec: &StageSpec, _end: &StageEnd) {}
}

pub struct NoEvents;
impl Progress for NoEvents {}
impl Events for NoEvents {}

/// Where workers run.
pub enum Launcher<'r> {
    /// On threads of this process, with these stage implementations (tests; library users
    /// with their own stage kinds). Threads share the process's cores.
    Threads(&'r Registry),
    /// Each worker a `cft worker` process of this executable, in a process group of its own
    /// (so it outlives a coordinator killed under it), with its share of the cores.
    Processes { exe: PathBuf },
    /// Each worker a Slurm job running `cft worker` on the shared cache directory.
    Slurm(Box<slurm::SlurmLauncher>),
}

/// What stops a run from running at all (a stage's failure is in the [`Summary`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Slurm(String),
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Run every stage that does not depend on a failed one.
    pub keep_going: bool,
    /// Workers at once.
    pub jobs: usize,
    /// Where model stages run: the CPU (shared) or CUDA devices (one worker each).
    pub devices: Vec<Device>,
    /// How often a stage whose worker died without a word is started again.
    pub retries: usize,
    /// How often the coordinator looks at its workers' folders.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            keep_going: false,
            jobs: 1,
            devices: vec![Device::Cpu],
            retries: 2,
            poll: Duration::from_millis(25),
        }
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub ran: usize,
    pub cached: usize,
    /// Label, error and whose fault it is, per failed stage.
    pub failed: Vec<(String, String, Fault)>,
    pub skipped: usize,
    pub interrupted: bool,
    /// `--detach`: jobs were submitted and the coordinator left; a later run picks up.
    pub detached: usize,
}

/// Runs every stage of `plan` that is not cached.
pub fn run(
    plan: &Plan,
    cache: &Cache,
    launcher: &Launcher<'_>,
    events: &dyn Events,
    stop: &AtomicBool,
    options: &Options,
) -> Result<Summary, ExecError> {
    let status = statuses(plan, cache, false).map_err(|e| match e {
        crate::plan::PlanError::Cache(c) => c,
        other => CacheError::Corrupt {
            what: "plan".into(),
            message: other.to_string(),
        },
    })?;
    let to_run: Vec<&StageSpec> = plan
        .order()
        .into_iter()
        .filter(|s| {
            status
                .get(&s.key)
                .is_none_or(|st| st.status != Status::Cached)
        })
        .collect();
    let mut run = Coordinator {
        plan,
        cache,
        launcher,
        events,
        stop,
        options,
        summary: Summary {
            cached: plan.len() - to_run.len(),
            ..Summary::default()
        },
        of: to_run.len(),
        waiting: to_run.iter().map(|s| s.key.clone()).collect(),
        cached: plan
            .graph
            .node_weights()
            .filter(|s| {
                status
                    .get(&s.key)
                    .is_some_and(|st| st.status == Status::Cached)
            })
            .map(|s| s.key.clone())
            .collect(),
        order: to_run,
        done: HashSet::new(),
        broken: HashSet::new(),
        orphans: Vec::new(),
        units: HashMap::new(),
        next_unit: 0,
        begun: HashMap::new(),
        deaths: HashMap::new(),
        busy: HashSet::new(),
        halted: false,
        stopping: false,
        last_record: HashMap::new(),
        jobs: cluster::Jobs::default(),
    };
    events.begin(run.of, run.summary.cached);
    cache.write_snapshot()?;
    std::thread::scope(|scope| run.run(scope))?;
    cache.flush()?;
    cache.write_snapshot()?;
    Ok(run.summary)
}

/// Workers' messages to the coordinator: unit `id` has ended.
enum Ended {
    Thread(Vec<(String, Result<WorkerEnd, String>)>),
    Process(std::io::Result<std::process::ExitStatus>),
    /// A Slurm job left the queue: what Slurm last said of it (`None`: it forgot the job).
    Job(Option<slurm::JobInfo>),
}

/// One worker: the stages it runs, in order, and those not yet ingested.
struct Unit {
    keys: Vec<String>,
    pending: Vec<String>,
    device: Device,
    pid: u32,
    is_process: bool,
    /// The Slurm job running it.
    job: Option<String>,
}

struct Coordinator<'p, 'c> {
    plan: &'p Plan,
    cache: &'c Cache,
    launcher: &'c Launcher<'c>,
    events: &'c dyn Events,
    stop: &'c AtomicBool,
    options: &'c Options,
    summary: Summary,
    of: usize,
    /// Stages to run, in plan order (ties among ready stages go to the one planned first).
    order: Vec<&'p StageSpec>,
    waiting: HashSet<String>,
    /// Done before this run began.
    cached: HashSet<String>,
    done: HashSet<String>,
    /// Failed or skipped: their dependents are skipped.
    broken: HashSet<String>,
    /// Stages a worker of an earlier coordinator still holds.
    orphans: Vec<String>,
    units: HashMap<usize, Unit>,
    next_unit: usize,
    /// Stages whose begin was announced, with when.
    begun: HashMap<String, Instant>,
    deaths: HashMap<String, usize>,
    /// CUDA devices held by a worker.
    busy: HashSet<usize>,
    /// A stage failed and `keep_going` is off: start nothing new.
    halted: bool,
    stopping: bool,
    last_record: HashMap<String, Instant>,
    /// The Slurm side: submissions, polls, per-stage adjustments.
    jobs: cluster::Jobs,
}

impl<'p, 'c> Coordinator<'p, 'c> {
    fn spec(&self, key: &str) -> Option<&'p StageSpec> {
        self.plan.get(key)
    }

    fn run<'s>(&mut self, scope: &'s std::thread::Scope<'s, '_>) -> Result<(), ExecError>
    where
        'c: 's,
    {
        let (tx, rx) = mpsc::channel::<(usize, Ended)>();
        self.reattach()?;
        self.recover()?;
        loop {
            if self.stop.load(Ordering::SeqCst) && !self.stopping {
                self.stopping = true;
                for unit in self.units.values().filter(|u| u.is_process) {
                    // SAFETY: plain kill(2) of a child this coordinator started and has not
                    // yet reaped (its waiter thread has not reported), so the pid is its.
                    unsafe { libc::kill(unit.pid as i32, libc::SIGINT) };
                }
                self.cancel_jobs()?;
            }
            self.watch_orphans()?;
            self.watch_units()?;
            self.poll_jobs()?;
            if !self.stopping && !self.halted {
                self.launch(scope, &tx)?;
                if self.detach() {
                    self.summary.detached = self.units.len();
                    break;
                }
            }
            if self.units.is_empty() && self.orphans.is_empty() {
                let ready = !self.stopping && !self.halted && self.next_ready().is_some();
                if !ready {
                    break;
                }
            }
            match rx.recv_timeout(self.options.poll) {
                Ok((id, ended)) => self.unit_ended(id, ended)?,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
        }
        if self.stopping {
            self.summary.interrupted = true;
        }
        Ok(())
    }

    /// What an earlier run left in `work/`: sentinels to ingest, live workers to wait for.
    fn recover(&mut self) -> Result<(), CacheError> {
        // A coordinator killed between writing a record and removing the work folder leaves
        // the folder of a finished stage behind.
        for key in self.cache.files().work_keys() {
            let work = self.cache.files().work(&key);
            if self.cached.contains(&key) && work.lease_holder().is_none() {
                work.remove()?;
            }
        }
        let keys: Vec<&'p StageSpec> = self.order.clone();
        for spec in keys {
            let work = self.cache.files().work(&spec.key);
            let adopted = self.units.values().any(|u| u.pending.contains(&spec.key));
            if !work.exists() || adopted {
                continue;
            }
            if work.lease_holder().is_some() {
                self.waiting.remove(&spec.key);
                self.orphans.push(spec.key.clone());
                self.announce(spec, true, Device::Cpu, 0);
            } else if let Some(sentinel) = work.sentinel()? {
                self.waiting.remove(&spec.key);
                self.announce(spec, true, Device::Cpu, 0);
                self.ingest(spec, &work, sentinel, None)?;
            }
        }
        Ok(())
    }

    fn watch_orphans(&mut self) -> Result<(), CacheError> {
        let mut still = Vec::new();
        for key in std::mem::take(&mut self.orphans) {
            let Some(spec) = self.spec(&key) else {
                continue;
            };
            let work = self.cache.files().work(&key);
            if work.lease_holder().is_some() {
                self.forward_progress(spec, &work)?;
                still.push(key);
            } else if let Some(sentinel) = work.sentinel()? {
                self.ingest(spec, &work, sentinel, None)?;
            } else {
                // Its worker died: run it again, from its saved items.
                self.begun.remove(&key);
                self.waiting.insert(key);
            }
        }
        self.orphans = still;
        Ok(())
    }

    /// Ingests the sentinels of stages whose workers moved on, announces stages that began,
    /// and forwards the progress of worker processes.
    fn watch_units(&mut self) -> Result<(), CacheError> {
        let ids: Vec<usize> = self.units.keys().copied().collect();
        for id in ids {
            let Some(unit) = self.units.get(&id) else {
                continue;
            };
            let (pending, device, pid, is_process) =
                (unit.pending.clone(), unit.device, unit.pid, unit.is_process);
            for key in pending {
                let Some(spec) = self.spec(&key) else {
                    continue;
                };
                let work = self.cache.files().work(&key);
                if let Some(sentinel) = work.sentinel()? {
                    if !self.begun.contains_key(&key) {
                        self.announce(spec, false, device, pid);
                    }
                    self.ingest(spec, &work, sentinel, Some(pid))?;
                    if let Some(unit) = self.units.get_mut(&id) {
                        unit.pending.retain(|k| *k != key);
                    }
                } else if !self.begun.contains_key(&key) {
                    if work.lease_holder().is_some() {
                        let resumed = work.item_count() > 0;
                        self.announce(spec, resumed, device, pid);
                    }
                } else if is_process || self.units.get(&id).is_some_and(|u| u.job.is_some()) {
                    self.forward_progress(spec, &work)?;
                }
            }
        }
        // A Slurm job whose stages are all ingested frees its slot; the job itself ends on
        // its own.
        self.units
            .retain(|_, u| u.job.is_none() || !u.pending.is_empty());
        Ok(())
    }

    /// A worker ended: what it left unfinished is interrupted, waits for another worker, or
    /// (when it died) runs again.
    fn unit_ended(&mut self, id: usize, ended: Ended) -> Result<(), CacheError> {
        self.watch_units()?;
        let Some(unit) = self.units.remove(&id) else {
            return Ok(());
        };
        if let Device::Cuda(n) = unit.device {
            self.busy.remove(&n);
        }
        let thread_ends: HashMap<String, Result<WorkerEnd, String>> = match &ended {
            Ended::Thread(ends) => ends.iter().cloned().collect(),
            Ended::Process(_) | Ended::Job(_) => HashMap::new(),
        };
        if let Ended::Job(info) = &ended {
            return self.job_ended(unit, info.clone());
        }
        for key in &unit.pending {
            let Some(spec) = self.spec(key) else {
                continue;
            };
            let work = self.cache.files().work(key);
            if let Some(sentinel) = work.sentinel()? {
                self.ingest(spec, &work, sentinel, Some(unit.pid))?;
                continue;
            }
            if work.lease_holder().is_some() {
                // Another worker (an earlier coordinator's) has it.
                self.orphans.push(key.clone());
                continue;
            }
            let started = self.begun.contains_key(key) || work.item_count() > 0;
            match thread_ends.get(key) {
                Some(Err(e)) => {
                    self.fail(spec, &work, format!("worker: {e}"), Fault::Defect)?;
                    continue;
                }
                Some(Ok(WorkerEnd::Leased(_))) => {
                    self.orphans.push(key.clone());
                    continue;
                }
                Some(Ok(WorkerEnd::Interrupted)) => {
                    self.interrupted(spec, &work)?;
                    continue;
                }
                _ => {}
            }
            if self.stopping || self.stop.load(Ordering::SeqCst) {
                if started {
                    self.interrupted(spec, &work)?;
                } else {
                    self.waiting.insert(key.clone());
                }
                continue;
            }
            if !started && matches!(ended, Ended::Thread(_)) {
                // A thread worker stops before stages it never began only when asked to.
                self.waiting.insert(key.clone());
                continue;
            }
            // Died without a sentinel.
            let deaths = {
                let n = self.deaths.entry(key.clone()).or_default();
                *n += 1;
                *n
            };
            let how = match &ended {
                Ended::Process(Ok(status)) => format!("its worker (pid {}) {status}", unit.pid),
                Ended::Process(Err(e)) => format!("its worker (pid {}): {e}", unit.pid),
                Ended::Thread(_) => "its worker thread ended without a result".into(),
                Ended::Job(_) => "its Slurm job ended".into(),
            };
            if deaths > self.options.retries {
                let tail = self
                    .unit_stderr(&unit)
                    .map(|t| format!("; the end of its stderr:\n{t}"))
                    .unwrap_or_default();
                let error =
                    format!("{how}, and died {deaths} times before finishing the stage{tail}");
                self.fail(spec, &work, error, Fault::Defect)?;
            } else {
                self.begun.remove(key);
                self.waiting.insert(key.clone());
            }
        }
        Ok(())
    }

    fn unit_stderr(&self, unit: &Unit) -> Option<String> {
        unit.keys
            .first()
            .and_then(|k| self.cache.files().work(k).stderr_tail(20))
    }

    /// The first waiting stage whose inputs are all done, skipping (with their dependents)
    /// those that depend on a failure.
    fn next_ready(&mut self) -> Option<&'p StageSpec> {
        self.ready(1).into_iter().next()
    }

    fn ready(&mut self, limit: usize) -> Vec<&'p StageSpec> {
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

    fn launch<'s>(
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
    fn model_of(&self, spec: &StageSpec) -> Option<String> {
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

    fn free_devices(&self) -> usize {
        if self.options.devices.contains(&Device::Cpu) || self.options.devices.is_empty() {
            return usize::MAX;
        }
        self.options
            .devices
            .iter()
            .filter(|d| matches!(d, Device::Cuda(n) if !self.busy.contains(n)))
            .count()
    }

    fn take_device(&mut self) -> Option<Device> {
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
    fn start_unit<'s>(
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
                    let mut ends = Vec::new();
                    for key in members {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let end = run_stage(files, &key, registry, device, stop, events);
                        ends.push((key, end.map_err(|e| e.to_string())));
                    }
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
    fn prepare(&self, spec: &StageSpec) -> Result<Option<String>, CacheError> {
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

    fn running_record(&self, spec: &StageSpec) -> Record {
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
            job: None,
            job_state: None,
            started_at: now_secs(),
            elapsed_s: 0.0,
        }
    }

    fn announce(&mut self, spec: &StageSpec, resumed: bool, device: Device, pid: u32) {
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
    fn forward_progress(&mut self, spec: &StageSpec, work: &WorkDir) -> Result<(), CacheError> {
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
    fn ingest(
        &mut self,
        spec: &StageSpec,
        work: &WorkDir,
        sentinel: Sentinel,
        pid: Option<u32>,
    ) -> Result<(), CacheError> {
        let mut record = self.running_record(spec);
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
    fn take_output(&self, name: &str, out: &OutputRef) -> Result<Option<String>, CacheError> {
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
                let stored = self.cache.put_artifact(&bytes)?;
                Ok((stored != *hash)
                    .then(|| format!("{} holds other bytes than `{name}` claims", path.display())))
            }
        }
    }

    fn fail(
        &mut self,
        spec: &StageSpec,
        work: &WorkDir,
        error: String,
        fault: Fault,
    ) -> Result<(), CacheError> {
        let mut record = self.running_record(spec);
        record.progress = work.progress().or(record.progress);
        self.fail_record(spec, record, error, fault)?;
        work.clear_failure()
    }

    fn fail_record(
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

    fn interrupted(&mut self, spec: &StageSpec, work: &WorkDir) -> Result<(), CacheError> {
        let mut record = self.running_record(spec);
        record.status = RecordStatus::Interrupted;
        record.progress = work.progress().or(record.progress);
        self.cache.put_record(&record)?;
        self.cache.flush()?;
        self.cache.write_snapshot_soon()?;
        self.events.stage_end(spec, &StageEnd::Interrupted);
        Ok(())
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
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .spawn()
}
