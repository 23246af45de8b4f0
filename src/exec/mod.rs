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
mod launch;
mod records;
pub mod slurm;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cache::{Cache, CacheError};
pub use crate::contract::Fault;
use crate::plan::{Plan, StageSpec, Status, statuses};
pub use worker::{WorkerEnd, run_group};

pub use crate::stages::{
    Device, Devices, Output, Progress, Registry, StageCtx, StageError, StageImpl, StageOutput,
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
    pub device: Devices,
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
    /// Ctrl-C: the Slurm jobs that `scancel` could not be seen to end (the user's to cancel).
    pub uncancelled: Vec<String>,
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
    device: Devices,
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
    pub(super) fn spec(&self, key: &str) -> Option<&'p StageSpec> {
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
                self.announce(spec, true, Devices::default(), 0);
            } else if let Some(sentinel) = work.sentinel()? {
                self.waiting.remove(&spec.key);
                self.announce(spec, true, Devices::default(), 0);
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
        // Stages ingested from another worker (an earlier coordinator's) are no one's to wait for.
        for unit in self.units.values_mut() {
            unit.pending.retain(|k| !self.done.contains(k));
        }
        let ids: Vec<usize> = self.units.keys().copied().collect();
        for id in ids {
            let Some(unit) = self.units.get(&id) else {
                continue;
            };
            let (pending, device, pid, is_process) = (
                unit.pending.clone(),
                unit.device.clone(),
                unit.pid,
                unit.is_process,
            );
            for key in pending {
                let Some(spec) = self.spec(&key) else {
                    continue;
                };
                let work = self.cache.files().work(&key);
                if let Some(sentinel) = work.sentinel()? {
                    if !self.begun.contains_key(&key) {
                        self.announce(spec, false, device.clone(), pid);
                    }
                    self.ingest(spec, &work, sentinel, Some(pid))?;
                    if let Some(unit) = self.units.get_mut(&id) {
                        unit.pending.retain(|k| *k != key);
                    }
                } else if !self.begun.contains_key(&key) {
                    if work.lease_holder().is_some() {
                        let resumed = work.item_count() > 0;
                        self.announce(spec, resumed, device.clone(), pid);
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
    pub(super) fn unit_ended(&mut self, id: usize, ended: Ended) -> Result<(), CacheError> {
        self.watch_units()?;
        let Some(unit) = self.units.remove(&id) else {
            return Ok(());
        };
        for n in unit.device.cuda() {
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
            // Ingested already, from another worker (one an earlier coordinator started).
            if self.done.contains(key) {
                continue;
            }
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
            let deaths = self.count_death(key);
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

    /// Counts one more worker (or job) of stage `key` that ended without finishing it.
    pub(super) fn count_death(&mut self, key: &str) -> usize {
        let n = self.deaths.entry(key.to_string()).or_default();
        *n += 1;
        *n
    }

    fn unit_stderr(&self, unit: &Unit) -> Option<String> {
        unit.keys
            .first()
            .and_then(|k| self.cache.files().work(k).stderr_tail(20))
    }
}
