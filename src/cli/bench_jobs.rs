//! `cft bench jobs FILE --jobs 1,2`: the wall time of a whole manifest run from a clean cache
//! with each number of workers, and whether every run gave the same bytes.
//!
//! Each run is a real `cft run FILE --jobs N` (this executable) on a fresh cache in a
//! temporary folder, so it measures what a user sees: worker processes, model loads, the
//! coordinator's polling and ingestion. The digest is blake3 over every record's label,
//! output names and output bytes, in label order, the report's aside: a report with
//! `timings = true` shows seconds, which differ from run to run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;

use cft::cache::{Cache, Store};

#[derive(Args, Debug)]
pub struct BenchJobsArgs {
    /// The manifest to run.
    pub file: PathBuf,
    /// Worker counts to compare, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    pub jobs: Vec<usize>,
    /// Where the fresh caches go (default: a temporary folder, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,
}

pub fn run(args: BenchJobsArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let temp = std::env::temp_dir().join(format!("cft-bench-jobs-{}", std::process::id()));
    let base = args.work.clone().unwrap_or_else(|| temp.clone());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{} on {cores} cores; each run from a clean cache",
        args.file.display()
    );
    println!(
        "{:>5} {:>10} {:>8} {:>7} {:>14}  stage outputs, report",
        "jobs", "wall", "speedup", "stages", "stage-seconds"
    );
    let mut first: Option<(f64, String, String)> = None;
    for &jobs in &args.jobs {
        let cache = base.join(format!("cache-jobs{jobs}"));
        if cache.exists() {
            bail!("{} exists; give --work an empty folder", cache.display());
        }
        let started = Instant::now();
        let status = Command::new(&exe)
            .arg("run")
            .arg(&args.file)
            .arg("--cache")
            .arg(&cache)
            .args(["--quiet", "--jobs", &jobs.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {}", exe.display()))?;
        let wall = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!("`cft run --jobs {jobs}` failed: {status}");
        }
        let (stages, stage_seconds, digest, report) = summarise(&cache)?;
        let same = |a: &str, b: &str| if a == b { "identical" } else { "DIFFER" };
        let (speedup, outputs, reports) = match &first {
            None => {
                first = Some((wall, digest.clone(), report.clone()));
                (1.0, "reference", "reference")
            }
            Some((w, d, r)) => (w / wall, same(d, &digest), same(r, &report)),
        };
        println!(
            "{jobs:>5} {:>10} {speedup:>7.2}x {stages:>7} {stage_seconds:>14.1}  {outputs} ({}), {reports}",
            super::progress::human(wall),
            &digest[..12]
        );
    }
    if args.work.is_none() {
        std::fs::remove_dir_all(&temp).with_context(|| format!("removing {}", temp.display()))?;
    }
    Ok(())
}

/// Stages run, the sum of their elapsed seconds, the digest of every stage's outputs but the
/// report's, and the report's.
fn summarise(root: &std::path::Path) -> anyhow::Result<(usize, f64, String, String)> {
    let cache = Cache::open(root, "bench")?;
    let mut records = cache.records()?;
    records.sort_by(|a, b| a.label.cmp(&b.label));
    let (mut stages, mut report) = (blake3::Hasher::new(), blake3::Hasher::new());
    let mut seconds = 0.0;
    for r in &records {
        seconds += r.elapsed_s;
        let hasher = if r.kind == "report" {
            &mut report
        } else {
            &mut stages
        };
        hasher.update(r.label.as_bytes());
        for name in r.outputs.keys() {
            hasher.update(name.as_bytes());
            hasher.update(&cache.output(r, name)?);
        }
    }
    Ok((
        records.len(),
        seconds,
        stages.finalize().to_hex().to_string(),
        report.finalize().to_hex().to_string(),
    ))
}
