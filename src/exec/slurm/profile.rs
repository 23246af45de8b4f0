//! A Slurm profile: where and how big the jobs of a run are. It is separate from the manifest
//! and never enters a stage key — the same stages give the same bytes on a laptop and on a
//! cluster. Read in two levels: the TOML as written (every field optional, unknown keys
//! rejected), then one resolution into a [`Profile`] whose per-kind [`JobShape`]s have every
//! value filled in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::contract::Kind;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The profile as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    partition: Option<String>,
    account: Option<String>,
    qos: Option<String>,
    /// Jobs submitted and not yet finished, at most.
    max_jobs: Option<usize>,
    /// Submissions per second, at most.
    submit_per_second: Option<f64>,
    /// Seconds between two looks at the queue (one `squeue` call for all jobs).
    poll_seconds: Option<f64>,
    /// Seconds to wait for a finished job's sentinel to appear on a network filesystem.
    sentinel_latency_seconds: Option<f64>,
    /// Seconds before the time limit at which a job's worker is told (SIGUSR2) to save its
    /// item in flight and exit, so the stage resumes in the next job.
    signal_seconds: Option<u64>,
    /// An out-of-memory job is submitted again with twice the memory, up to this.
    max_memory: Option<String>,
    /// Seconds to wait for the shared-filesystem probe job.
    probe_seconds: Option<f64>,
    /// Ctrl-C: seconds to keep cancelling the run's jobs until the queue shows them ended.
    cancel_seconds: Option<f64>,
    /// The `cft` the jobs run (default: the coordinator's own executable).
    cft: Option<PathBuf>,
    /// Resources of every kind not named under `[kind.*]`.
    default: Option<WrittenShape>,
    #[serde(default)]
    kind: BTreeMap<String, WrittenShape>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenShape {
    gpus: Option<u32>,
    cpus: Option<u32>,
    memory: Option<String>,
    time: Option<String>,
    constraint: Option<String>,
    /// More `sbatch` arguments, as they are (`["--exclusive"]`).
    sbatch: Option<Vec<String>>,
}

/// What one job of a stage kind asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct JobShape {
    pub gpus: u32,
    pub cpus: u32,
    pub memory_mb: u64,
    /// Slurm's time format (`minutes`, `HH:MM:SS`, `D-HH:MM:SS`), as written.
    pub time: String,
    pub constraint: Option<String>,
    pub sbatch: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub max_jobs: usize,
    pub submit_interval: Duration,
    pub poll: Duration,
    pub sentinel_latency: Duration,
    pub signal_seconds: u64,
    pub max_memory_mb: u64,
    pub probe_timeout: Duration,
    pub cancel_timeout: Duration,
    pub cft: Option<PathBuf>,
    shapes: BTreeMap<Kind, JobShape>,
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Profile, ProfileError> {
        let invalid = |message: String| ProfileError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let written: Written = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let default = written.default.clone().unwrap_or_default();
        let mut shapes = BTreeMap::new();
        for name in written.kind.keys() {
            if name.parse::<Kind>().is_err() {
                let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                return Err(invalid(format!(
                    "[kind.{name}]: `{name}` is not a stage kind ({})",
                    kinds.join(", ")
                )));
            }
        }
        for kind in Kind::ALL {
            let own = written.kind.get(kind.name()).cloned().unwrap_or_default();
            let at = |field: &str| {
                if written.kind.contains_key(kind.name()) {
                    format!("[kind.{}] {field}", kind.name())
                } else {
                    format!("[default] {field}")
                }
            };
            let memory = own.memory.clone().or(default.memory.clone());
            let memory_mb = match memory {
                Some(m) => memory_mb(&m).ok_or_else(|| {
                    invalid(format!(
                        "{}: `{m}` is not a memory size (like 4000, 16G, 512M)",
                        at("memory")
                    ))
                })?,
                None => 4096,
            };
            let time = own
                .time
                .clone()
                .or(default.time.clone())
                .unwrap_or_else(|| "04:00:00".into());
            if time_seconds(&time).is_none() {
                return Err(invalid(format!(
                    "{}: `{time}` is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)",
                    at("time")
                )));
            }
            // Model stages ask for a GPU unless told otherwise; CPU stages never do.
            let gpus = if kind.uses_model() {
                own.gpus.or(default.gpus).unwrap_or(0)
            } else {
                own.gpus.unwrap_or(0)
            };
            shapes.insert(
                kind,
                JobShape {
                    gpus,
                    cpus: own.cpus.or(default.cpus).unwrap_or(1).max(1),
                    memory_mb,
                    time,
                    constraint: own.constraint.clone().or(default.constraint.clone()),
                    sbatch: own
                        .sbatch
                        .clone()
                        .or(default.sbatch.clone())
                        .unwrap_or_default(),
                },
            );
        }
        let max_memory_mb = match &written.max_memory {
            Some(m) => memory_mb(m)
                .ok_or_else(|| invalid(format!("max_memory: `{m}` is not a memory size")))?,
            None => shapes.values().map(|s| s.memory_mb).max().unwrap_or(4096) * 4,
        };
        let seconds =
            |v: Option<f64>, field: &str, default: f64| -> Result<Duration, ProfileError> {
                let v = v.unwrap_or(default);
                if !(v.is_finite() && v >= 0.0) {
                    return Err(invalid(format!("{field}: must be a number of seconds ≥ 0")));
                }
                Ok(Duration::from_secs_f64(v))
            };
        let rate = written.submit_per_second.unwrap_or(5.0);
        if !(rate.is_finite() && rate > 0.0) {
            return Err(invalid("submit_per_second: must be > 0".into()));
        }
        Ok(Profile {
            partition: written.partition,
            account: written.account,
            qos: written.qos,
            max_jobs: written.max_jobs.unwrap_or(100).max(1),
            submit_interval: Duration::from_secs_f64(1.0 / rate),
            poll: seconds(written.poll_seconds, "poll_seconds", 10.0)?,
            sentinel_latency: seconds(
                written.sentinel_latency_seconds,
                "sentinel_latency_seconds",
                30.0,
            )?,
            signal_seconds: written.signal_seconds.unwrap_or(120),
            max_memory_mb,
            probe_timeout: seconds(written.probe_seconds, "probe_seconds", 300.0)?,
            cancel_timeout: seconds(written.cancel_seconds, "cancel_seconds", 60.0)?,
            cft: written.cft,
            shapes,
        })
    }

    /// The job a stage of `kind` asks for.
    pub fn shape(&self, kind: Kind) -> JobShape {
        self.shapes.get(&kind).cloned().unwrap_or(JobShape {
            gpus: 0,
            cpus: 1,
            memory_mb: 4096,
            time: "04:00:00".into(),
            constraint: None,
            sbatch: Vec::new(),
        })
    }
}

/// Slurm's memory sizes: a number with an optional K, M, G or T suffix (megabytes without).
pub fn memory_mb(text: &str) -> Option<u64> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, 'M'),
    };
    let n: f64 = number.trim().parse().ok()?;
    if !(n.is_finite() && n > 0.0) {
        return None;
    }
    let mb = match unit {
        'K' => n / 1024.0,
        'M' => n,
        'G' => n * 1024.0,
        'T' => n * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(mb.ceil() as u64)
}

/// Seconds of a Slurm time: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
pub fn time_seconds(text: &str) -> Option<u64> {
    let (days, rest) = match text.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, text),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let has_days = text.contains('-');
    let secs = match (has_days, parts.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (false, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (true, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(days * 86400 + secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, ProfileError> {
        Profile::parse(Path::new("cluster.toml"), text)
    }

    #[test]
    fn kinds_inherit_the_default_and_cpu_kinds_ask_for_no_gpu() {
        let p = parse(
            r#"
partition = "gpu"
[default]
gpus = 1
cpus = 8
memory = "64G"
time = "04:00:00"
[kind.train]
time = "1-00:00:00"
memory = "200G"
"#,
        )
        .unwrap();
        assert_eq!(p.partition.as_deref(), Some("gpu"));
        let train = p.shape(Kind::Train);
        assert_eq!(
            (train.gpus, train.cpus, train.memory_mb),
            (1, 8, 200 * 1024)
        );
        assert_eq!(train.time, "1-00:00:00");
        assert_eq!(p.shape(Kind::Eval).memory_mb, 64 * 1024);
        assert_eq!(p.shape(Kind::Criticality).gpus, 0);
        assert_eq!(p.max_memory_mb, 4 * 200 * 1024);
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = parse("[kind.trian]\ngpus = 1\n").unwrap_err().to_string();
        assert!(
            e.contains("cluster.toml") && e.contains("[kind.trian]"),
            "{e}"
        );
        let e = parse("partion = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("partion"), "{e}");
        let e = parse("[default]\nmemory = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[default] memory") && e.contains("lots"), "{e}");
        let e = parse("[kind.eval]\ntime = \"4h\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[kind.eval] time"), "{e}");
    }

    #[test]
    fn slurm_sizes_and_times() {
        assert_eq!(memory_mb("4000"), Some(4000));
        assert_eq!(memory_mb("16G"), Some(16384));
        assert_eq!(memory_mb("512m"), Some(512));
        assert_eq!(memory_mb("1T"), Some(1 << 20));
        assert_eq!(memory_mb("x"), None);
        assert_eq!(time_seconds("30"), Some(1800));
        assert_eq!(time_seconds("01:00:00"), Some(3600));
        assert_eq!(time_seconds("2-12"), Some(2 * 86400 + 12 * 3600));
        assert_eq!(time_seconds("1-00:30:00"), Some(86400 + 1800));
        assert_eq!(time_seconds("4h"), None);
    }
}
