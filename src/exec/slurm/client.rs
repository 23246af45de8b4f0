//! The Slurm commands cft uses: `sbatch --parsable` to submit, one `squeue` call per poll for
//! every job of the user (never one call per job), `sacct` only for jobs that have left the
//! controller's memory, and `scancel`. A failing query is "unknown", never "failed": the
//! controller or the accounting daemon being down must not fail a run.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("`{command}` could not run: {source} (is Slurm installed and on PATH?)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

/// What the queue says of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    /// Slurm's state name: PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, PREEMPTED,
    /// OUT_OF_MEMORY, NODE_FAIL, CANCELLED, ...
    pub state: String,
    /// The node it ran on, when it ran.
    pub node: Option<String>,
}

impl JobInfo {
    /// The job will not run any more.
    pub fn ended(&self) -> bool {
        matches!(
            self.state.as_str(),
            "COMPLETED"
                | "CANCELLED"
                | "FAILED"
                | "TIMEOUT"
                | "NODE_FAIL"
                | "PREEMPTED"
                | "BOOT_FAIL"
                | "DEADLINE"
                | "OUT_OF_MEMORY"
                | "SPECIAL_EXIT"
                | "REVOKED"
        )
    }
}

fn run(program: &str, args: &[String]) -> Result<String, SlurmError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| SlurmError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(SlurmError::Failed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits a job; returns its id.
pub fn sbatch(args: &[String]) -> Result<String, SlurmError> {
    let mut all = vec!["--parsable".to_string()];
    all.extend(args.iter().cloned());
    let out = run("sbatch", &all)?;
    // `--parsable` prints `id` or `id;cluster`.
    let id = out
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return Err(SlurmError::Failed {
            command: format!("sbatch {}", all.join(" ")),
            status: "no job id".into(),
            stderr: out,
        });
    }
    Ok(id)
}

/// The state of each of `ids` that Slurm still knows: one `squeue` for the user's jobs in
/// every state, then one `sacct` for those the controller has forgotten (its accounting may
/// be off; then they stay unknown). Ids missing from the answer are unknown.
pub fn query(ids: &[String]) -> Result<HashMap<String, JobInfo>, SlurmError> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    let text = run(
        "squeue",
        &[
            "--me".into(),
            "--noheader".into(),
            "--states=all".into(),
            "--format=%i|%T|%N".into(),
        ],
    )?;
    for (id, info) in parse_table(&text) {
        if ids.contains(&id) {
            out.insert(id, info);
        }
    }
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !out.contains_key(*id))
        .cloned()
        .collect();
    if !missing.is_empty()
        && let Ok(text) = run(
            "sacct",
            &[
                "--noheader".into(),
                "--parsable2".into(),
                "--format=JobID,State,NodeList".into(),
                format!("--jobs={}", missing.join(",")),
            ],
        )
    {
        for (id, info) in parse_table(&text) {
            // Steps (`123.batch`) are not the job.
            if missing.contains(&id) {
                out.insert(id, info);
            }
        }
    }
    Ok(out)
}

/// `id|STATE|node` lines (squeue's format above, sacct's `--parsable2`); sacct writes
/// `CANCELLED by 0`, of which the state is the first word.
fn parse_table(text: &str) -> Vec<(String, JobInfo)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.trim().split('|');
            let id = fields.next()?.trim().to_string();
            let state = fields.next()?.split_whitespace().next()?.to_string();
            let node = fields
                .next()
                .map(str::trim)
                .filter(|n| !n.is_empty() && *n != "None assigned" && *n != "(null)")
                .map(str::to_string);
            (!id.is_empty()).then_some((id, JobInfo { state, node }))
        })
        .collect()
}

/// The pending or running jobs of this user whose name begins with `prefix` (a run's jobs
/// are named `cft-<run id>-...`).
pub fn jobs_named(prefix: &str) -> Result<Vec<String>, SlurmError> {
    let text = run(
        "squeue",
        &[
            "--me".into(),
            "--noheader".into(),
            "--states=pending,running,suspended,requeued".into(),
            "--format=%i|%j".into(),
        ],
    )?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().split_once('|'))
        .filter(|(_, name)| name.trim().starts_with(prefix))
        .map(|(id, _)| id.trim().to_string())
        .collect())
}

/// Cancels jobs (best effort: a job that ended meanwhile is no error worth stopping for).
pub fn scancel(ids: &[String]) -> Result<(), SlurmError> {
    if ids.is_empty() {
        return Ok(());
    }
    run("scancel", ids).map(|_| ())
}

/// Cancels jobs and waits until the queue shows each of them ended (or forgotten), asking
/// again every `every` while some are still pending or running: a busy controller may time
/// out an `scancel` or take a while to act on it, and a coordinator that leaves on Ctrl-C
/// must not leave its jobs running. Returns the jobs still alive at `within`.
pub fn cancel_until_gone(ids: &[String], within: Duration, every: Duration) -> Vec<String> {
    let started = Instant::now();
    let mut alive: Vec<String> = ids.to_vec();
    let mut asked: Option<Instant> = None;
    while !alive.is_empty() {
        if asked.is_none_or(|t| t.elapsed() >= every) {
            let _ = scancel(&alive);
            asked = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
        // A failing query leaves every job in doubt: look again.
        if let Ok(states) = query(&alive) {
            alive.retain(|id| states.get(id).is_some_and(|i| !i.ended()));
        }
        if started.elapsed() >= within {
            break;
        }
    }
    alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_and_sacct_lines() {
        let rows = parse_table(
            "12|RUNNING|node1\n13|PENDING|\n14.batch|COMPLETED|node1\n15|CANCELLED by 0|node2\n",
        );
        let get = |id: &str| rows.iter().find(|(i, _)| i == id).map(|(_, j)| j.clone());
        assert_eq!(
            get("12"),
            Some(JobInfo {
                state: "RUNNING".into(),
                node: Some("node1".into())
            })
        );
        assert_eq!(get("13").map(|j| j.node), Some(None));
        assert_eq!(get("15").map(|j| j.state), Some("CANCELLED".into()));
        assert!(get("15").is_some_and(|j| j.ended()));
        assert!(!get("12").is_some_and(|j| j.ended()));
    }
}
