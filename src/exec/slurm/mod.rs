//! The Slurm executor's pieces: the profile, the Slurm commands, and what a job of a group of
//! stages is (its `sbatch` arguments). The coordinator (`exec`) decides when to submit, polls,
//! and reads each finished job's outcome; the job runs `cft worker` on the shared cache
//! directory, exactly as a local worker process does, and completion is its sentinel file.

pub mod client;
pub mod profile;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use client::{JobInfo, SlurmError};
pub use profile::{JobShape, Profile, ProfileError};

use crate::contract::Kind;

/// How a run uses Slurm.
pub struct SlurmLauncher {
    /// The `cft` the jobs run.
    pub exe: PathBuf,
    pub profile: Profile,
    /// Names this coordinator's jobs (`cft-<run>-<key>`), so people can find them in `squeue`.
    pub run_id: String,
    /// Submit what is ready and exit; a later `cft run` re-attaches.
    pub detach: bool,
}

/// What a job is asked to be beyond its kind's shape: more memory after running out, nodes
/// to avoid after a node failed under it.
#[derive(Clone, Debug, Default)]
pub struct Adjust {
    pub memory_mb: Option<u64>,
    pub exclude: Vec<String>,
}

impl SlurmLauncher {
    /// `sbatch` arguments of a job that runs `cft worker` on `keys` (stages of `kind`) on the
    /// cache at `root` (absolute), its log in `log/slurm/<job id>.log`.
    pub fn sbatch_args(
        &self,
        root: &Path,
        kind: Kind,
        keys: &[String],
        adjust: &Adjust,
    ) -> Vec<String> {
        let shape = self.profile.shape(kind);
        let p = &self.profile;
        let mut a = Vec::new();
        let first = keys.first().map_or("", String::as_str);
        a.push(format!(
            "--job-name=cft-{}-{}",
            self.run_id,
            &first[..first.len().min(12)]
        ));
        a.extend(self.placement());
        if shape.gpus > 0 {
            a.push(format!("--gpus={}", shape.gpus));
        }
        a.push(format!("--cpus-per-task={}", shape.cpus));
        a.push(format!(
            "--mem={}M",
            adjust.memory_mb.unwrap_or(shape.memory_mb)
        ));
        a.push(format!("--time={}", shape.time));
        if let Some(c) = &shape.constraint {
            a.push(format!("--constraint={c}"));
        }
        if !adjust.exclude.is_empty() {
            a.push(format!("--exclude={}", adjust.exclude.join(",")));
        }
        // Before the time limit the worker is told to save its item and leave, so the stage
        // resumes in the next job instead of losing the item to SIGKILL.
        a.push(format!("--signal=B:USR2@{}", p.signal_seconds));
        a.push(format!(
            "--output={}",
            root.join("log/slurm/%j.log").display()
        ));
        a.push("--open-mode=append".into());
        a.extend(shape.sbatch.iter().cloned());
        let device = self.devices(kind);
        // `exec`: the worker is the job's batch process, so USR2 and scancel's SIGTERM reach
        // it directly.
        let mut wrap = format!(
            "exec {} --cache {} worker --device {device} --threads {}",
            shell_quote(&self.exe.display().to_string()),
            shell_quote(&root.display().to_string()),
            shape.cpus
        );
        for k in keys {
            wrap.push(' ');
            wrap.push_str(&shell_quote(k));
        }
        a.push(format!("--wrap={wrap}"));
        a
    }

    /// Where every job of the run goes: the profile's partition, account and qos.
    fn placement(&self) -> Vec<String> {
        let p = &self.profile;
        [
            ("partition", &p.partition),
            ("account", &p.account),
            ("qos", &p.qos),
        ]
        .into_iter()
        .filter_map(|(flag, v)| v.as_ref().map(|v| format!("--{flag}={v}")))
        .collect()
    }

    /// The devices a job's worker sees: Slurm gives it its GPUs as `cuda:0`, `cuda:1`, ...
    pub fn devices(&self, kind: Kind) -> crate::stages::Devices {
        use crate::stages::{Device, Devices};
        let gpus = (0..self.profile.shape(kind).gpus as usize).map(Device::Cuda);
        Devices::new(gpus.collect()).unwrap_or_default()
    }

    /// Checks, before anything is submitted, that the cache directory is on a filesystem the
    /// nodes share: a short job writes a probe file into it, which this machine must see.
    pub fn probe_shared_filesystem(&self, root: &Path) -> Result<(), String> {
        let token = format!("{}-{}", self.run_id, std::process::id());
        let probe = root.join(format!(".probe-{token}"));
        let _ = std::fs::remove_file(&probe);
        let mut args = Vec::new();
        let p = &self.profile;
        args.push(format!("--job-name=cft-{}-probe", self.run_id));
        args.extend(self.placement());
        args.extend([
            "--time=5".to_string(),
            "--mem=100M".into(),
            "--cpus-per-task=1".into(),
            "--output=/dev/null".into(),
            format!(
                "--wrap=echo {token} > {}",
                shell_quote(&probe.display().to_string())
            ),
        ]);
        let job = client::sbatch(&args).map_err(|e| format!("submitting the probe job: {e}"))?;
        let started = Instant::now();
        let mut ended_at: Option<Instant> = None;
        loop {
            if std::fs::read_to_string(&probe).is_ok_and(|t| t.trim() == token) {
                let _ = std::fs::remove_file(&probe);
                return Ok(());
            }
            if ended_at.is_none()
                && let Ok(states) = client::query(std::slice::from_ref(&job))
                && states.get(&job).is_some_and(JobInfo::ended)
            {
                ended_at = Some(Instant::now());
            }
            let gone = ended_at.is_some_and(|t| t.elapsed() > p.sentinel_latency);
            if gone || started.elapsed() > p.probe_timeout {
                let _ = client::scancel(std::slice::from_ref(&job));
                let why = if gone {
                    "the probe job ran but its file never appeared here"
                } else {
                    "the probe job did not write its file in time (still queued?)"
                };
                return Err(format!(
                    "{} does not look like a filesystem the cluster's nodes share: {why} \
                     (job {job} was to write {}). Put the cache on the shared filesystem \
                     (`--cache /shared/...`), or raise `probe_seconds` in the profile if the queue is slow.",
                    root.display(),
                    probe.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Single-quotes a word for the job's shell.
fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-:=+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Whether a job's log says it was killed for its memory (slurmstepd's words, with cgroups or
/// without, and the kernel's OOM killer's).
pub fn out_of_memory(log: &str) -> bool {
    let log = log.to_ascii_lowercase();
    [
        "exceeded job memory limit",
        "exceeded memory limit",
        "oom-kill",
        "out of memory",
    ]
    .iter()
    .any(|m| log.contains(m))
}

/// The last `lines` lines of a job's log.
pub fn log_tail(root: &Path, job: &str, lines: usize) -> Option<String> {
    let text = std::fs::read_to_string(root.join("log/slurm").join(format!("{job}.log"))).ok()?;
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    (!all.is_empty()).then(|| all[all.len().saturating_sub(lines)..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_kills_are_recognised_in_a_job_log() {
        assert!(out_of_memory(
            "slurmstepd-vm: error: StepId=242.batch exceeded memory limit (93937664 > 16777216), being killed"
        ));
        assert!(out_of_memory(
            "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=7.batch"
        ));
        assert!(!out_of_memory("stage abc failed: model x: no config.json"));
    }

    #[test]
    fn a_job_runs_the_worker_with_its_shape() {
        let profile = Profile::parse(
            Path::new("p.toml"),
            "partition = \"gpu\"\nsignal_seconds = 90\n[default]\ngpus = 1\ncpus = 4\nmemory = \"8G\"\ntime = \"10\"\nsbatch = [\"--exclusive\"]\n",
        )
        .unwrap();
        let l = SlurmLauncher {
            exe: PathBuf::from("/opt/cft bin/cft"),
            profile,
            run_id: "r1".into(),
            detach: false,
        };
        let args = l.sbatch_args(
            Path::new("/shared/cache"),
            Kind::Eval,
            &["aaaaaaaaaaaaaaaa".into(), "bbbb".into()],
            &Adjust {
                memory_mb: Some(16384),
                exclude: vec!["node3".into()],
            },
        );
        for want in [
            "--job-name=cft-r1-aaaaaaaaaaaa",
            "--partition=gpu",
            "--gpus=1",
            "--cpus-per-task=4",
            "--mem=16384M",
            "--time=10",
            "--exclude=node3",
            "--signal=B:USR2@90",
            "--output=/shared/cache/log/slurm/%j.log",
            "--exclusive",
            "--wrap=exec '/opt/cft bin/cft' --cache /shared/cache worker --device cuda:0 --threads 4 aaaaaaaaaaaaaaaa bbbb",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
        }
        // CPU kinds ask for no GPU and run on the CPU.
        let args = l.sbatch_args(
            Path::new("/c"),
            Kind::Criticality,
            &["k".into()],
            &Adjust::default(),
        );
        assert!(!args.iter().any(|a| a.starts_with("--gpus")));
        assert!(args.iter().any(|a| a.contains("--device cpu")));
    }
}
