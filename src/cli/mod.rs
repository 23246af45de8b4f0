//! Command-line interface: clap commands, exit codes, progress display.
//!
//! Exit codes: 0 success, 1 a failed run or another runtime error, 2 a bad manifest (or bad
//! command line), 130 interrupted by Ctrl-C.

mod annotate;
mod bench;
mod bench_annotate;
mod bench_gemm;
mod bench_jobs;
mod bench_memory;
mod bench_train;
mod cache;
mod check;
mod check_bytes;
mod compare;
mod device;
mod export;
mod generate;
mod grade;
mod memory;
mod plan;
mod progress;
mod report;
mod run;
mod score;
mod status;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cft::manifest::{Experiment, ManifestError};

/// Declarative experiment orchestrator for Critical Token Fine-tuning.
#[derive(Parser, Debug)]
#[command(name = "cft", version, about)]
pub struct Cli {
    /// The cache directory (stage records, artifacts, checkpoints).
    #[arg(long, global = true, default_value = "cache", value_name = "DIR")]
    pub cache: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Resolve a manifest into its DAG of stages: what is cached, what will run, and why.
    Plan(plan::PlanArgs),
    /// Run every pending stage of a manifest, resuming what was cut off.
    Run(run::RunArgs),
    /// Progress of a manifest's sweep, per cell.
    Status(status::StatusArgs),
    /// Tables and plots of a manifest's results, from the cache alone.
    Report(report::ReportArgs),
    /// Several manifests' results side by side, one block per model family.
    Compare(compare::CompareArgs),
    /// Look at annotations: which tokens a CFT method marked critical.
    #[command(subcommand)]
    Annotate(annotate::AnnotateCommand),
    /// Inspect and maintain the cache.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// A trained checkpoint (or the base model) out of the cache as an HF directory.
    Export(export::ExportArgs),
    /// Grade JSONL responses from stdin: {"benchmark", "response", "answer"} -> {"pred", "correct"}.
    Grade(grade::GradeArgs),
    /// Continue prompts with a model (batched; greedy or sampled).
    Generate(generate::GenerateArgs),
    /// Per-position log-probs, entropies and top-k of a token sequence.
    Score(score::ScoreArgs),
    /// Speed measurements.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Checks a machine can run: parity with transformers on the fixtures, on any device.
    #[command(subcommand)]
    Check(check::CheckCommand),
    /// (Internal) run stages that `cft run` prepared under `<cache>/work/`; see the README.
    Worker(worker::WorkerArgs),
}

/// A bad manifest: exit code 2.
#[derive(Debug)]
pub struct BadManifest(pub String);

impl std::fmt::Display for BadManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadManifest {}

/// An interrupted run: exit code 130.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted; run the same command again to resume")
    }
}

impl std::error::Error for Interrupted {}

pub fn run(cli: Cli) -> ExitCode {
    let cache = cli.cache;
    let result = match cli.command {
        Command::Plan(args) => plan::run(&cache, args),
        Command::Run(args) => run::run(&cache, args),
        Command::Status(args) => status::run(&cache, args),
        Command::Report(args) => report::run(&cache, args),
        Command::Compare(args) => compare::run(&cache, args),
        Command::Cache(cmd) => cache::run(&cache, cmd),
        Command::Export(args) => export::run(&cache, args),
        Command::Annotate(cmd) => annotate::run(&cache, cmd),
        Command::Grade(args) => grade::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Generate(args) => generate::run(args).map(|()| ExitCode::SUCCESS),
        Command::Score(args) => score::run(args).map(|()| ExitCode::SUCCESS),
        Command::Bench(cmd) => bench::run(&cache, cmd).map(|()| ExitCode::SUCCESS),
        Command::Check(cmd) => check::run(cmd).map(|()| ExitCode::SUCCESS),
        Command::Worker(args) => worker::run(&cache, args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let code = if err.downcast_ref::<ManifestError>().is_some()
                || err.downcast_ref::<BadManifest>().is_some()
            {
                2
            } else if err.downcast_ref::<Interrupted>().is_some() {
                130
            } else {
                1
            };
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}

/// Loads a manifest; its errors keep their type so `run` maps them to exit code 2.
pub fn load(path: &Path) -> anyhow::Result<Experiment> {
    Ok(cft::manifest::load(path)?)
}

/// The command line as one string, for the lock file.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}
