//! The Slurm executor against a real single-node Slurm cluster (`scripts/slurm-up.sh`): the
//! reduced quickstart gives the local executor's bytes; a cancelled training job is
//! submitted again and resumes from its saved items; Slurm's queries failing for a while do
//! not fail the run; a coordinator killed with SIGKILL re-attaches to its jobs and submits
//! nothing twice; a job that hits its time limit resumes in the next; a failing stage shows
//! its error and its job's log in `cft status`.
//!
//! Every test here needs the cluster, so each is `#[ignore]` with the reason (nextest lists
//! them as skipped); CI starts the cluster and runs them with `--run-ignored only`.

mod reduced;
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reduced::{cft, output, reduced_manifest};
use serde_json::Value;

/// Fails, saying what to do, when no cluster answers (these tests are run on purpose).
fn require_slurm() {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            // Any state a node takes jobs in: idle, mixed, allocated, completing ...
            o.status.success() && {
                let s = String::from_utf8_lossy(&o.stdout);
                s.lines().any(|l| {
                    let l = l.trim();
                    !l.is_empty()
                        && !["down", "drain", "unk", "fail", "maint"]
                            .iter()
                            .any(|bad| l.contains(bad))
                })
            }
        });
    assert!(
        up,
        "no Slurm cluster answers `sinfo` here: start one with `sudo scripts/slurm-up.sh`"
    );
}

/// A profile for the one-node test cluster: quick polls, small jobs; `top` goes before the
/// tables, `extra` after them.
fn profile_with(dir: &Path, top: &str, extra: &str) -> PathBuf {
    support::write(
        dir,
        "cluster.toml",
        &format!(
            r#"
{top}
poll_seconds = 0.5
sentinel_latency_seconds = 5
submit_per_second = 50
probe_seconds = 120
[default]
cpus = 1
memory = "1G"
time = "30"
{extra}
"#
        ),
    )
}

fn profile(dir: &Path, extra: &str) -> PathBuf {
    profile_with(dir, "signal_seconds = 20", extra)
}

/// `sbatch` and `squeue` wrappers in front of the real ones: every submission is logged, and
/// `squeue` fails while the file `squeue-down` exists.
fn wrappers(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    let real = |name: &str| -> String {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let sbatch = support::write(
        &bin,
        "sbatch",
        &format!(
            "#!/bin/sh\necho \"$*\" >> {log}\nexec {real} \"$@\"\n",
            log = dir.join("submitted.log").display(),
            real = real("sbatch")
        ),
    );
    let squeue = support::write(
        &bin,
        "squeue",
        &format!(
            "#!/bin/sh\nif [ -e {flag} ]; then echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1; fi\nexec {real} \"$@\"\n",
            flag = dir.join("squeue-down").display(),
            real = real("squeue")
        ),
    );
    for f in [sbatch, squeue] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn with_path(mut cmd: Command, bin: &Path) -> Command {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env("PATH", path);
    cmd
}

/// Every stage output, as `support::results` reads them.
fn outputs(cache: &Path) -> Vec<(String, String, Vec<u8>)> {
    support::results(&cft::cache::Cache::open(cache, "test").unwrap())
}

fn journal(cache: &Path) -> Vec<Value> {
    std::fs::read_to_string(cache.join("log/workers.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The running Slurm job whose worker runs a stage of `kind` that has saved an item, with the
/// stage's key.
fn running_job(cache: &Path, kind: &str) -> Option<(String, String)> {
    let files = cft::cache::Files::at(cache);
    let key = files.work_keys().into_iter().find(|k| {
        let work = files.work(k);
        work.lease_holder().is_some()
            && work.item_count() > 0
            && work.task().is_ok_and(|t| t.spec.kind == kind)
    })?;
    let out = Command::new("squeue")
        .args(["--me", "-h", "-t", "running", "-o", "%i|%j"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let (id, name) = l.split_once('|')?;
        name.ends_with(&key[..12])
            .then(|| (id.to_string(), key.clone()))
    })
}

#[test]
#[ignore = "needs a running Slurm cluster: `sudo scripts/slurm-up.sh`, then `cargo nextest run --run-ignored only -E 'binary(slurm)'`"]
fn slurm_gives_the_local_bytes_through_scancel_query_failures_and_a_killed_coordinator() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced_manifest(dir.path());
    // The reference: the local executor.
    let local = dir.path().join("cache-local");
    output(cft(&["run", "--quiet", "--jobs", "2"], &manifest, &local));
    let reference = outputs(&local);
    let report = output(cft(&["report", "--format", "md"], &manifest, &local)).stdout;

    let cache = dir.path().join("cache-slurm");
    let bin = wrappers(dir.path());
    let profile = profile(dir.path(), "");
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--executor", "slurm", "--profile"];
        all.push(profile.to_str().unwrap());
        all.extend_from_slice(args);
        with_path(cft(&all, &manifest, &cache), &bin)
    };
    let mut child = run(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // The pretraining (the run's longest training job) is cancelled once it has saved its
    // state, as a user (or an admin) would cancel it.
    let begun = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with('[') && l.contains("] pretrain "));
    assert!(begun, "the pretraining did not begin");
    let deadline = Instant::now() + Duration::from_secs(300);
    let (job, key) = loop {
        if let Some(found) = running_job(&cache, "pretrain") {
            break found;
        }
        assert!(Instant::now() < deadline, "the pretraining saved no item");
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = Command::new("scancel").arg(&job).status().unwrap();
    assert!(status.success());
    // Slurm stops answering for a while: the run waits.
    std::fs::write(dir.path().join("squeue-down"), b"").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    std::fs::remove_file(dir.path().join("squeue-down")).unwrap();
    let again = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with('[') && l.contains("] pretrain ") && l.contains("resumed"));
    assert!(again, "the cancelled pretraining was not started again");
    // The coordinator is killed while rollout jobs run.
    let rollouts = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with('[') && l.contains("] rollout "));
    assert!(rollouts, "no rollout began");
    child.kill().unwrap();
    child.wait().unwrap();
    // A new coordinator re-attaches to the jobs in the queue and finishes.
    output(run(&["--quiet"]));

    assert!(
        outputs(&cache) == reference,
        "Slurm outputs differ from local ones"
    );
    let slurm_report = output(cft(&["report", "--format", "md"], &manifest, &cache)).stdout;
    assert!(slurm_report == report, "the report differs");

    // The cancelled stage resumed from its saved items.
    let events = journal(&cache);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "start" && e["key"] == key.as_str())
        .collect();
    assert!(starts.len() >= 2, "{starts:?}");
    assert!(
        starts[1]["saved_items"].as_u64().unwrap() > 0,
        "resumed without saved items: {starts:?}"
    );
    // Nothing was submitted twice but the cancelled stage: every job names its first stage.
    let submitted = std::fs::read_to_string(dir.path().join("submitted.log")).unwrap();
    let mut per_key: std::collections::HashMap<String, usize> = Default::default();
    for line in submitted.lines().filter(|l| !l.contains("-probe")) {
        let name = line
            .split_whitespace()
            .find_map(|a| a.strip_prefix("--job-name="))
            .unwrap()
            .to_string();
        *per_key.entry(name).or_default() += 1;
    }
    let twice: Vec<_> = per_key
        .iter()
        .filter(|(name, n)| **n > 1 && !name.ends_with(&key[..12]))
        .collect();
    assert!(twice.is_empty(), "submitted twice: {twice:?}");
}

#[test]
#[ignore = "needs a running Slurm cluster: `sudo scripts/slurm-up.sh`, then `cargo nextest run --run-ignored only -E 'binary(slurm)'`"]
fn slurm_a_job_that_hits_its_time_limit_resumes_in_the_next() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced_manifest(dir.path());
    // Only the pretraining, in one-minute jobs whose worker is told (SIGUSR2) 50 s before the
    // limit that its time is up: every job leaves early with its state saved, however fast
    // the machine, and the next one resumes.
    let cache = dir.path().join("cache");
    let profile = profile_with(
        dir.path(),
        "signal_seconds = 50",
        "[kind.pretrain]\ntime = \"1\"\n",
    );
    let started = Instant::now();
    output(cft(
        &[
            "run",
            "--quiet",
            "--only",
            "pretrain",
            "--executor",
            "slurm",
            "--profile",
            profile.to_str().unwrap(),
        ],
        &manifest,
        &cache,
    ));
    let events = journal(&cache);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "start" && e["label"] == "pretrain toy")
        .collect();
    assert!(
        starts.len() >= 2,
        "the pretraining ran in one job ({:.0}s): {starts:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(starts.last().unwrap()["saved_items"].as_u64().unwrap() > 0);
    // The same checkpoint as the local executor's.
    let local = dir.path().join("local");
    output(cft(
        &["run", "--quiet", "--only", "pretrain"],
        &manifest,
        &local,
    ));
    let pick = |c: &Path| -> Vec<_> {
        outputs(c)
            .into_iter()
            .filter(|(label, _, _)| label.starts_with("pretrain"))
            .collect()
    };
    assert!(pick(&cache) == pick(&local), "checkpoints differ");
}

#[test]
#[ignore = "needs a running Slurm cluster: `sudo scripts/slurm-up.sh`, then `cargo nextest run --run-ignored only -E 'binary(slurm)'`"]
fn slurm_a_failing_stage_shows_its_error_and_job_log_in_status() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("config.json"), "{}").unwrap();
    let manifest = support::write(
        dir.path(),
        "m.toml",
        "[experiment]\nname = \"broken\"\n[[model]]\nname = \"broken\"\npath = \"model\"\n[data.train]\nsynthetic = { split = \"train\", n = 4 }\n[[method]]\nname = \"sft\"\nkind = \"sft\"\n[eval]\ninclude_base = false\nbenchmarks = [{ name = \"toy\", synthetic = { n = 5 } }]\n",
    );
    let cache = dir.path().join("cache");
    let profile = profile(dir.path(), "");
    let out = cft(
        &[
            "run",
            "--quiet",
            "--keep-going",
            "--executor",
            "slurm",
            "--profile",
            profile.to_str().unwrap(),
        ],
        &manifest,
        &cache,
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = cft(&["status"], &manifest, &cache).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("greedy broken") && text.contains("model") && text.contains("log/slurm/"),
        "{text}"
    );
}

#[test]
#[ignore = "needs a running Slurm cluster: `sudo scripts/slurm-up.sh`, then `cargo nextest run --run-ignored only -E 'binary(slurm)'`"]
fn slurm_detach_submits_and_leaves_ctrl_c_cancels() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced_manifest(dir.path());
    let profile = profile(dir.path(), "");
    let slurm = |only: &str, extra: &[&str], cache: &Path| {
        let mut args = vec![
            "run",
            "--only",
            only,
            "--executor",
            "slurm",
            "--profile",
            profile.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cft(&args, &manifest, cache)
    };
    // --detach: the datasets are submitted, the coordinator leaves; the next run picks up.
    let cache = dir.path().join("detached");
    let out = output(slurm("dataset", &["--detach"], &cache));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("detached"), "{stdout}");
    let status = output(cft(&["plan", "--json"], &manifest, &cache));
    let plan: Value = serde_json::from_slice(&status.stdout).unwrap();
    let submitted = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["job"].is_array() || s["status"] == "cached")
        .count();
    assert!(submitted > 0, "{plan}");
    output(slurm("dataset", &["--quiet"], &cache));
    let status = output(cft(&["plan", "--json"], &manifest, &cache));
    let plan: Value = serde_json::from_slice(&status.stdout).unwrap();
    for s in plan["stages"].as_array().unwrap() {
        if s["kind"] == "dataset" {
            assert_eq!(s["status"], "cached", "{s}");
        }
    }

    // Ctrl-C: the run's jobs are cancelled, and it exits 130.
    let cache = dir.path().join("interrupted");
    let mut child = slurm("pretrain", &[], &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let begun = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.starts_with('[') && l.contains("] pretrain "));
    assert!(begun);
    // Keep reading its stderr, or its next line would die of SIGPIPE; kept for a failure.
    let said = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let files = cft::cache::Files::at(&cache);
    let job_of_pretrain = || {
        let out = Command::new("squeue")
            .args(["--me", "-h", "-t", "pending,running", "-o", "%i|%j"])
            .output()
            .unwrap();
        let keys = files.work_keys();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_once('|')
                    .map(|(i, n)| (i.to_string(), n.to_string()))
            })
            .find(|(_, n)| keys.iter().any(|k| n.ends_with(&k[..12])))
    };
    assert!(job_of_pretrain().is_some(), "the pretraining job is queued");
    // SAFETY: kill(2) of the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    let said = said.join().unwrap_or_default().join("\n");
    assert_eq!(status.code(), Some(130), "{said}");
    // The coordinator leaves once the queue shows its jobs ended.
    let left = job_of_pretrain();
    let queue = Command::new("squeue")
        .args(["--me", "-h", "-t", "all", "-o", "%i|%j|%T"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        left.is_none(),
        "the job was not cancelled: {left:?}\nqueue:\n{queue}\ncoordinator:\n{said}"
    );
}

#[test]
#[ignore = "needs a running Slurm cluster: `sudo scripts/slurm-up.sh`, then `cargo nextest run --run-ignored only -E 'binary(slurm)'`"]
fn slurm_an_out_of_memory_job_is_submitted_again_with_more_memory() {
    require_slurm();
    let dir = tempfile::tempdir().unwrap();
    let manifest = reduced_manifest(dir.path());
    let cache = dir.path().join("cache");
    // A pretraining worker needs about 100 MB; its job is given 16 MB.
    let profile = profile_with(
        dir.path(),
        "max_memory = \"2G\"",
        "[kind.pretrain]\nmemory = \"16M\"\n",
    );
    let submitted = dir.path().join("submitted.log");
    let bin = wrappers(dir.path());
    output(with_path(
        cft(
            &[
                "run",
                "--quiet",
                "--only",
                "pretrain",
                "--executor",
                "slurm",
                "--profile",
                profile.to_str().unwrap(),
            ],
            &manifest,
            &cache,
        ),
        &bin,
    ));
    let log = std::fs::read_to_string(&submitted).unwrap();
    let memories: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("-probe"))
        .filter_map(|l| l.split_whitespace().find_map(|a| a.strip_prefix("--mem=")))
        .collect();
    // The job is submitted again with twice the memory after each OUT_OF_MEMORY, until it fits.
    assert!(memories.contains(&"16M"), "{memories:?}");
    assert!(memories.contains(&"32M"), "{memories:?}");
    let status = output(cft(&["plan", "--json"], &manifest, &cache));
    let plan: Value = serde_json::from_slice(&status.stdout).unwrap();
    for s in plan["stages"].as_array().unwrap() {
        if s["kind"] == "pretrain" {
            assert_eq!(s["status"], "cached", "{s}");
        }
    }
}
