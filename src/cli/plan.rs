//! `cft plan FILE [--json | --dot]`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use cft::cache::View;
use cft::plan::{self, Plan, StageStatus, Status};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The manifest.
    pub file: PathBuf,
    /// Print one JSON object: `{"stages": [{"key", "kind", "label", "status", "deps", "why",
    /// "progress", "job"}], ...}` (`job`: the Slurm job id and its last state, or null).
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print the DAG in Graphviz format.
    #[arg(long)]
    pub dot: bool,
    /// List every stage, not only the first 40 that are not cached (with `--resources`,
    /// one line per stage instead of per group of alike stages).
    #[arg(long)]
    pub all: bool,
    /// Estimate each model stage's peak device and host memory and flag those that cannot
    /// fit (see README, "Memory model").
    #[arg(long)]
    pub resources: bool,
    #[command(flatten)]
    pub memory: super::memory::MemoryArgs,
}

/// Loads the manifest, opens the cache for reading and plans.
pub fn resolve(
    cache: &Path,
    file: &Path,
) -> anyhow::Result<(
    cft::manifest::Experiment,
    View,
    Plan,
    HashMap<String, StageStatus>,
)> {
    let exp = super::load(file)?;
    let view = View::open(cache, &super::command_line())?;
    let plan = plan::build(&exp, view.store())?;
    let status = plan::statuses(&plan, view.store(), view.live().is_some())?;
    Ok((exp, view, plan, status))
}

pub fn run(cache: &Path, args: PlanArgs) -> anyhow::Result<ExitCode> {
    let (exp, view, plan, status) = resolve(cache, &args.file)?;
    if args.json {
        let stages: Vec<_> = plan
            .order()
            .iter()
            .map(|s| {
                let st = &status[&s.key];
                json!({"key": s.key, "kind": s.kind, "label": s.label, "status": st.status, "deps": s.inputs, "why": st.why, "progress": st.progress, "job": st.job})
            })
            .collect();
        let missing: Vec<_> = plan
            .missing
            .iter()
            .map(|m| json!({"what": m.what, "path": m.written, "at": m.at}))
            .collect();
        println!(
            "{}",
            json!({"experiment": exp.name, "stages": stages, "missing": missing})
        );
        return Ok(ExitCode::SUCCESS);
    }
    if args.dot {
        let simple: HashMap<String, Status> =
            status.iter().map(|(k, v)| (k.clone(), v.status)).collect();
        print!("{}", plan.dot(&simple));
        return Ok(ExitCode::SUCCESS);
    }

    if args.resources {
        let budget = args.memory.budget(None)?;
        let estimates = plan::resources::estimate_plan(&plan, &budget, |_| true);
        println!(
            "{}: experiment `{}`, {} stages",
            args.file.display(),
            exp.name,
            plan.len()
        );
        super::memory::print_table(&estimates, &budget, args.all);
        return Ok(ExitCode::SUCCESS);
    }
    let count = |s: Status| status.values().filter(|v| v.status == s).count();
    println!(
        "{}: experiment `{}`, {} stages: {} cached, {} pending, {} running, {} failed",
        args.file.display(),
        exp.name,
        plan.len(),
        count(Status::Cached),
        count(Status::Pending),
        count(Status::Running),
        count(Status::Failed)
    );
    if let Some(owner) = view.live() {
        println!(
            "live view: a run is in progress (pid {}, `{}`)",
            owner.pid, owner.command
        );
    }
    if !plan.missing.is_empty() {
        println!("\nmissing inputs (`cft run` needs them):");
        for m in &plan.missing {
            println!("  {}: {} ({})", m.what, m.written, m.at);
        }
    }
    let mut by_kind: BTreeMap<usize, (&str, usize, usize)> = BTreeMap::new();
    for s in plan.order() {
        let pos = plan::KINDS
            .iter()
            .position(|k| *k == s.kind.name())
            .unwrap_or(plan::KINDS.len());
        let e = by_kind.entry(pos).or_insert((s.kind.name(), 0, 0));
        e.1 += 1;
        if status[&s.key].status == Status::Cached {
            e.2 += 1;
        }
    }
    println!("\n{:<12} {:>7} {:>7}", "kind", "stages", "cached");
    for (kind, n, cached) in by_kind.values() {
        println!("{kind:<12} {n:>7} {cached:>7}");
    }
    let todo: Vec<_> = plan
        .order()
        .into_iter()
        .filter(|s| status[&s.key].status != Status::Cached)
        .collect();
    if todo.is_empty() {
        println!("\nnothing to run: every stage is cached");
        return Ok(ExitCode::SUCCESS);
    }
    println!("\n{:<8} {:<12} {:<50} why", "key", "status", "stage");
    let shown = if args.all {
        todo.len()
    } else {
        todo.len().min(40)
    };
    for s in &todo[..shown] {
        let st = &status[&s.key];
        let state = match st.status {
            Status::Pending if st.why.starts_with("stale") => "stale",
            Status::Pending if st.why.starts_with("blocked") => "blocked",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Failed => "failed",
            Status::Cached => "cached",
        };
        println!(
            "{:<8} {:<12} {:<50} {}",
            &s.key[..8],
            state,
            s.label,
            st.why
        );
    }
    if shown < todo.len() {
        println!(
            "... and {} more (--all lists every stage)",
            todo.len() - shown
        );
    }
    Ok(ExitCode::SUCCESS)
}
