//! The coordinator's Slurm side: submitting a unit of stages as one job, one batched look at
//! the queue per poll (with backoff while Slurm does not answer), re-attaching to the jobs a
//! killed coordinator left, and what a job that left the queue without a sentinel means:
//!
//! - PREEMPTED, TIMEOUT, CANCELLED by someone else, or a worker that left on SIGUSR2: submitted
//!   again, resuming from the saved items; it counts against `retries` only when the job saved
//!   no new item (a long stage may take several time-limited jobs).
//! - OUT_OF_MEMORY: submitted again with twice the memory, up to the profile's `max_memory`.
//! - NODE_FAIL: submitted again, avoiding that node.
//! - FAILED (or anything else): submitted again up to `retries` times, then recorded as failed
//!   with the end of the job's log.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::slurm::{self, Adjust, JobInfo, SlurmLauncher};
use super::{Coordinator, ExecError, Launcher, Unit};
use crate::cache::{CacheError, RecordStatus, Store};
use crate::contract::Fault;

#[derive(Default)]
pub(super) struct Jobs {
    /// Per stage: memory and nodes to avoid in its next job.
    adjust: HashMap<String, Adjust>,
    /// Per stage: items saved when its current job was submitted.
    items_at_submit: HashMap<String, usize>,
    last_submit: Option<Instant>,
    last_poll: Option<Instant>,
    /// 1 while Slurm answers; doubles (to 8) while it does not.
    backoff: u32,
    /// Per job: when the queue first showed it ended (its sentinel may still be on its way),
    /// or first failed to show it at all.
    ended_at: HashMap<String, Instant>,
    unknown_since: HashMap<String, Instant>,
    probed: bool,
}

impl Coordinator<'_, '_> {
    fn slurm(&self) -> Option<&SlurmLauncher> {
        match self.launcher {
            Launcher::Slurm(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn detach(&self) -> bool {
        self.slurm().is_some_and(|l| l.detach)
    }

    /// Submits `keys` as one job; `None` when it could not be (the stages were recorded as
    /// failed, or wait for the next try).
    pub(super) fn submit(
        &mut self,
        l: &SlurmLauncher,
        keys: &[String],
    ) -> Result<Option<String>, ExecError> {
        let root = std::fs::canonicalize(self.cache.root())
            .map_err(|e| CacheError::io(self.cache.root(), e))?;
        if !self.jobs.probed {
            l.probe_shared_filesystem(&root).map_err(ExecError::Slurm)?;
            self.jobs.probed = true;
        }
        std::fs::create_dir_all(root.join("log/slurm"))
            .map_err(|e| CacheError::io(&root.join("log/slurm"), e))?;
        if let Some(t) = self.jobs.last_submit {
            let wait = l.profile.submit_interval.saturating_sub(t.elapsed());
            std::thread::sleep(wait);
        }
        self.jobs.last_submit = Some(Instant::now());
        let Some(kind) = keys.first().and_then(|k| self.spec(k)).map(|s| s.kind) else {
            return Ok(None);
        };
        let adjust = keys
            .first()
            .and_then(|k| self.jobs.adjust.get(k))
            .cloned()
            .unwrap_or_default();
        let args = l.sbatch_args(&root, kind, keys, &adjust);
        match slurm::client::sbatch(&args) {
            Ok(job) => {
                for k in keys {
                    let items = self.cache.files().work(k).item_count();
                    self.jobs.items_at_submit.insert(k.clone(), items);
                }
                Ok(Some(job))
            }
            Err(e) => {
                // Counted like a dead worker: a partition that does not exist fails the
                // stage after `retries` tries instead of looping.
                for k in keys {
                    let Some(spec) = self.spec(k) else { continue };
                    let deaths = self.count_death(k);
                    if deaths > self.options.retries {
                        let work = self.cache.files().work(k);
                        self.fail(spec, &work, format!("sbatch: {e}"), Fault::Input)?;
                    } else {
                        self.waiting.insert(k.clone());
                    }
                }
                Ok(None)
            }
        }
    }

    /// One look at the queue for every job in flight, every `poll` seconds (longer while
    /// Slurm does not answer). Ended jobs become [`super::Ended::Job`] once their sentinels
    /// are in, or after the profile's sentinel latency.
    pub(super) fn poll_jobs(&mut self) -> Result<(), CacheError> {
        let Some(l) = self.slurm() else {
            return Ok(());
        };
        let (poll, latency) = (l.profile.poll, l.profile.sentinel_latency);
        let backoff = self.jobs.backoff.max(1);
        if self
            .jobs
            .last_poll
            .is_some_and(|t| t.elapsed() < poll * backoff)
        {
            return Ok(());
        }
        self.jobs.last_poll = Some(Instant::now());
        let ids: Vec<String> = self.units.values().filter_map(|u| u.job.clone()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let states = match slurm::client::query(&ids) {
            Ok(s) => {
                self.jobs.backoff = 1;
                s
            }
            Err(_) => {
                // Unknown, never failed: look again later.
                self.jobs.backoff = (backoff * 2).min(8);
                return Ok(());
            }
        };
        let mut ended = Vec::new();
        for (id, unit) in &self.units {
            let Some(job) = &unit.job else { continue };
            let sentinels_in = unit.pending.iter().all(|k| {
                self.cache
                    .files()
                    .work(k)
                    .sentinel()
                    .ok()
                    .flatten()
                    .is_some()
            });
            match states.get(job) {
                Some(info) if info.ended() => {
                    self.jobs.unknown_since.remove(job);
                    let since = *self
                        .jobs
                        .ended_at
                        .entry(job.clone())
                        .or_insert_with(Instant::now);
                    if sentinels_in || since.elapsed() >= latency {
                        ended.push((*id, Some(info.clone())));
                    }
                }
                Some(info) => {
                    self.jobs.unknown_since.remove(job);
                    for k in &unit.pending {
                        if let Some(mut r) = self.cache.record(k)?
                            && r.status == RecordStatus::Running
                            && r.job_state.as_deref() != Some(info.state.as_str())
                        {
                            r.job_state = Some(info.state.clone());
                            self.cache.put_record(&r)?;
                        }
                    }
                }
                None => {
                    // Slurm forgot the job (and has no accounting to ask): once its sentinels
                    // are in, or after a long wait, it has ended.
                    let since = *self
                        .jobs
                        .unknown_since
                        .entry(job.clone())
                        .or_insert_with(Instant::now);
                    let lost =
                        since.elapsed() >= (poll * 10).max(Duration::from_secs(60)) + latency;
                    if sentinels_in || lost {
                        ended.push((*id, None));
                    }
                }
            }
        }
        self.cache.write_snapshot_soon()?;
        for (id, info) in ended {
            self.unit_ended(id, super::Ended::Job(info))?;
        }
        Ok(())
    }

    /// A job left the queue: ingest what it finished, and decide about the rest.
    pub(super) fn job_ended(
        &mut self,
        unit: Unit,
        info: Option<JobInfo>,
    ) -> Result<(), CacheError> {
        let job = unit.job.clone().unwrap_or_default();
        self.jobs.ended_at.remove(&job);
        self.jobs.unknown_since.remove(&job);
        let mut state = info
            .as_ref()
            .map_or("UNKNOWN", |i| i.state.as_str())
            .to_string();
        // Without cgroups, Slurm kills a job over its memory from its accounting poll and
        // calls it FAILED or CANCELLED; its log says why.
        if (state == "FAILED" || state == "CANCELLED")
            && slurm::log_tail(self.cache.root(), &job, 50)
                .is_some_and(|t| slurm::out_of_memory(&t))
        {
            state = "OUT_OF_MEMORY".into();
        }
        let max_memory = self.slurm().map_or(0, |l| l.profile.max_memory_mb);
        for key in &unit.pending {
            let Some(spec) = self.spec(key) else { continue };
            let work = self.cache.files().work(key);
            if let Some(sentinel) = work.sentinel()? {
                self.ingest(spec, &work, sentinel, None)?;
                continue;
            }
            let started = self.begun.contains_key(key) || work.item_count() > 0;
            if self.stopping {
                if started {
                    self.interrupted(spec, &work)?;
                } else {
                    self.waiting.insert(key.clone());
                }
                continue;
            }
            let saved_more =
                work.item_count() > self.jobs.items_at_submit.get(key).copied().unwrap_or(0);
            let shape_memory = self
                .slurm()
                .map_or(0, |l| l.profile.shape(spec.kind).memory_mb);
            let adjust = self.jobs.adjust.entry(key.clone()).or_default();
            let counts = match state.as_str() {
                // Not the stage's doing; and a stage that saved items made progress.
                "PREEMPTED" => false,
                "TIMEOUT" | "CANCELLED" | "COMPLETED" => !saved_more,
                "OUT_OF_MEMORY" => {
                    let now = adjust.memory_mb.unwrap_or(shape_memory);
                    if now >= max_memory {
                        true
                    } else {
                        adjust.memory_mb = Some((now * 2).min(max_memory));
                        false
                    }
                }
                "NODE_FAIL" => {
                    if let Some(node) = info.as_ref().and_then(|i| i.node.clone())
                        && !adjust.exclude.contains(&node)
                    {
                        adjust.exclude.push(node);
                    }
                    false
                }
                _ => true,
            };
            let deaths = if counts {
                self.count_death(key)
            } else {
                self.deaths.get(key).copied().unwrap_or(0)
            };
            if deaths > self.options.retries {
                let root = self.cache.root().to_path_buf();
                let tail = slurm::log_tail(&root, &job, 20)
                    .map(|t| format!("; the end of its log (log/slurm/{job}.log):\n{t}"))
                    .unwrap_or_default();
                let error = format!(
                    "its Slurm job {job} ended {state} without finishing the stage, {deaths} times{tail}"
                );
                self.fail(spec, &work, error, Fault::Defect)?;
            } else {
                self.begun.remove(key);
                self.waiting.insert(key.clone());
            }
        }
        Ok(())
    }

    /// Ctrl-C: the run's jobs are cancelled (unless `--detach`); their stages are interrupted
    /// and resume from their saved items next time.
    pub(super) fn cancel_jobs(&mut self) -> Result<(), CacheError> {
        let Some(l) = self.slurm() else {
            return Ok(());
        };
        if l.detach {
            return Ok(());
        }
        let mut ids: Vec<String> = self.units.values().filter_map(|u| u.job.clone()).collect();
        // And any job of this run the queue shows that no unit holds (one submitted as the
        // interruption came): every job this coordinator submits is named after its run.
        if let Ok(named) = slurm::client::jobs_named(&format!("cft-{}-", l.run_id)) {
            for id in named {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let within = l.profile.cancel_timeout;
        self.summary.uncancelled =
            slurm::client::cancel_until_gone(&ids, within, Duration::from_secs(3));
        let units: Vec<usize> = self.units.keys().copied().collect();
        for id in units {
            if let Some(unit) = self.units.remove(&id) {
                self.job_ended(unit, None)?;
            }
        }
        Ok(())
    }

    /// A coordinator that died left jobs in the queue: the stages whose records name a job
    /// Slurm still runs are adopted, not submitted again.
    pub(super) fn reattach(&mut self) -> Result<(), CacheError> {
        if self.slurm().is_none() {
            return Ok(());
        }
        let mut by_job: HashMap<String, Vec<String>> = HashMap::new();
        for spec in &self.order {
            if let Some(r) = self.cache.record(&spec.key)?
                && r.status == RecordStatus::Running
                && let Some(job) = r.job
            {
                by_job.entry(job).or_default().push(spec.key.clone());
            }
        }
        if by_job.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = by_job.keys().cloned().collect();
        let Ok(states) = slurm::client::query(&ids) else {
            return Ok(());
        };
        for (job, keys) in by_job {
            let alive = states.get(&job).is_some_and(|i| !i.ended());
            if !alive {
                continue;
            }
            let Some(kind) = keys.first().and_then(|k| self.spec(k)).map(|s| s.kind) else {
                continue;
            };
            let device = self
                .slurm()
                .map_or(super::Devices::default(), |l| l.devices(kind));
            for k in &keys {
                self.waiting.remove(k);
                let items = self.cache.files().work(k).item_count();
                self.jobs.items_at_submit.insert(k.clone(), items);
            }
            let id = self.next_unit;
            self.next_unit += 1;
            self.units.insert(
                id,
                Unit {
                    keys: keys.clone(),
                    pending: keys,
                    device,
                    pid: 0,
                    is_process: false,
                    job: Some(job),
                },
            );
        }
        Ok(())
    }
}
