//! `cft status FILE`: where a sweep stands, per model and per cell — annotation stages with
//! their item progress, each cell's training and evaluation, and every failure with its error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cft::contract::label;
use cft::plan::{StageSpec, StageStatus, Status};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The manifest.
    pub file: PathBuf,
}

pub fn run(cache: &Path, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (exp, view, plan, status) = super::plan::resolve(cache, &args.file)?;
    let by_label: HashMap<&str, &StageSpec> = plan
        .graph
        .node_weights()
        .map(|s| (s.label.as_str(), s))
        .collect();
    let show = |label: &str| -> String {
        match by_label.get(label).map(|s| &status[&s.key]) {
            Some(st) => describe(st),
            None => "-".into(),
        }
    };
    let done = status
        .values()
        .filter(|s| s.status == Status::Cached)
        .count();
    println!(
        "experiment `{}`: {done}/{} stages done (cache {})",
        exp.name,
        plan.len(),
        cache.display()
    );
    if let Some(owner) = view.live() {
        println!(
            "a run is in progress: pid {}, `{}`",
            owner.pid, owner.command
        );
    }
    for model in &exp.models {
        let name = &model.name;
        println!("\nmodel {name}");
        let mut annotation: Vec<String> = Vec::new();
        for spec in plan.order() {
            let is_model_stage = [
                "pretrain",
                "greedy",
                "rollout",
                "criticality",
                "token-stats",
                "selection",
                "sample",
                "transfer",
                "score",
            ]
            .contains(&spec.kind.name())
                && spec.label.split(' ').nth(1) == Some(name.as_str());
            if is_model_stage {
                let measured = match view.store().record(&spec.key)? {
                    Some(r) if r.status == cft::cache::RecordStatus::Done => measured(&r),
                    _ => String::new(),
                };
                annotation.push(format!(
                    "  {:<44} {:<14} {measured}",
                    spec.label,
                    describe(&status[&spec.key])
                ));
            }
        }
        for line in annotation {
            println!("{line}");
        }
        let benches: Vec<&str> = exp
            .eval
            .benchmarks
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        println!("  {:<12} {:<24} {:<28} eval", "method", "cell", "train");
        // A method transferred from this model has no stages on it.
        let own = |m: &&cft::manifest::Method| {
            m.responses != cft::manifest::Responses::From(name.clone())
        };
        for method in exp.methods.iter().filter(own) {
            for cell in &method.cells {
                let train_label = label::train(name, &method.name, &cell.label);
                let mut train = show(&train_label);
                // Training metrics of a finished cell: final loss and the share of tokens trained on.
                if let Some(spec) = by_label.get(train_label.as_str())
                    && let Some(r) = view.store().record(&spec.key)?
                    && r.status == cft::cache::RecordStatus::Done
                {
                    let m = &r.metrics;
                    if let Some(loss) = m["final_loss"].as_f64() {
                        train = match cft::report::analysis::trained_share(m) {
                            Some(share) => format!(
                                "done, loss {loss:.3}, {:.1}% of response tokens trained",
                                100.0 * share
                            ),
                            None => format!("done, loss {loss:.3}"),
                        };
                    }
                }
                let evals: Vec<&StageStatus> = benches
                    .iter()
                    .filter_map(|b| {
                        by_label.get(label::eval(name, &method.name, &cell.label, b).as_str())
                    })
                    .map(|s| &status[&s.key])
                    .collect();
                let evaluated = evals.iter().filter(|s| s.status == Status::Cached).count();
                let failed = evals.iter().filter(|s| s.status == Status::Failed).count();
                let eval = if failed > 0 {
                    format!("{evaluated}/{} done, {failed} failed", evals.len())
                } else {
                    format!("{evaluated}/{} done", evals.len())
                };
                println!(
                    "  {:<12} {:<24} {:<28} {eval}",
                    method.name, cell.label, train
                );
            }
        }
    }
    grpo_lines(&plan, &status, &view)?;
    let failures: Vec<(&StageSpec, &StageStatus)> = plan
        .order()
        .into_iter()
        .map(|s| (s, &status[&s.key]))
        .filter(|(_, st)| st.status == Status::Failed)
        .collect();
    if !failures.is_empty() {
        println!("\nfailures ({}):", failures.len());
        for (spec, st) in failures {
            println!(
                "  {}: {}",
                spec.label,
                st.why.trim_start_matches("failed: ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `grpo` stages: each start's steps done and, once finished, the cell it started from,
/// its mean reward over the first and the last fifth of its steps and its final accuracies.
fn grpo_lines(
    plan: &cft::plan::Plan,
    status: &HashMap<String, StageStatus>,
    view: &cft::cache::View,
) -> anyhow::Result<()> {
    let grpo: Vec<&StageSpec> = plan
        .order()
        .into_iter()
        .filter(|s| s.kind.name() == "grpo")
        .collect();
    if grpo.is_empty() {
        return Ok(());
    }
    println!(
        "
GRPO"
    );
    for spec in grpo {
        let mut line = describe(&status[&spec.key]);
        if let Some(r) = view.store().record(&spec.key)?
            && r.status == cft::cache::RecordStatus::Done
        {
            let m = &r.metrics;
            let pct = |k: &str| m[k].as_f64().map(|x| format!("{:.1}%", 100.0 * x));
            let mut parts = vec![format!(
                "{} steps",
                m["steps"]
                    .as_array()
                    .and_then(|s| s.last())
                    .and_then(|s| s["step"].as_u64())
                    .unwrap_or(0)
            )];
            if let Some(cell) = m["cell"].as_str() {
                parts.push(format!("from {cell}"));
            }
            if let (Some(a), Some(b)) = (pct("reward_first"), pct("reward_last")) {
                parts.push(format!("reward {a} -> {b}"));
            }
            if let Some(acc) = m["final"].as_object() {
                let accs: Vec<String> = acc
                    .iter()
                    .filter_map(|(b, a)| Some(format!("{b} {:.1}%", 100.0 * a.as_f64()?)))
                    .collect();
                parts.push(accs.join(", "));
            }
            line = format!("done, {}", parts.join(", "));
        }
        println!("  {:<44} {line}", spec.label);
    }
    Ok(())
}

/// What a finished annotation stage measured, in a few words.
fn measured(r: &cft::cache::Record) -> String {
    let m = &r.metrics;
    let num = |k: &str| m[k].as_f64();
    match r.kind.as_str() {
        "greedy" => match (num("accuracy"), m["correct"].as_u64(), m["total"].as_u64()) {
            (Some(a), Some(c), Some(t)) => format!(
                "{c}/{t} correct ({:.1}%), {:.0} tokens/response",
                a * 100.0,
                num("mean_response_tokens").unwrap_or(0.0)
            ),
            _ => String::new(),
        },
        "rollout" => format!(
            "{} branches, {:.1}s",
            m["branches"].as_u64().unwrap_or(0),
            num("seconds").unwrap_or(0.0)
        ),
        "criticality" => format!(
            "{:.2}% critical ({} of {} tokens)",
            num("critical_ratio").unwrap_or(0.0) * 100.0,
            m["critical_tokens"].as_u64().unwrap_or(0),
            m["tokens"].as_u64().unwrap_or(0)
        ),
        "selection" => format!("{:.2}% selected", num("fraction").unwrap_or(0.0) * 100.0),
        "sample" => format!(
            "{} of {} solved, {:.1} attempts on average",
            m["solved"].as_u64().unwrap_or(0),
            m["questions"].as_u64().unwrap_or(0),
            num("attempts_mean").unwrap_or(0.0)
        ),
        "transfer" => format!(
            "{} responses, {}",
            m["responses"].as_u64().unwrap_or(0),
            match m["same_tokenizer"].as_bool() {
                Some(true) => "same tokenizer: ids kept",
                _ => "another tokenizer: re-tokenised",
            }
        ),
        "score" => match m["reused"].as_bool() {
            Some(true) => format!(
                "source's masks reused, {:.2}% critical",
                num("fraction").unwrap_or(0.0) * 100.0
            ),
            _ => format!(
                "{:.2}% critical by s_t",
                num("fraction").unwrap_or(0.0) * 100.0
            ),
        },
        _ => String::new(),
    }
}

fn describe(st: &StageStatus) -> String {
    let progress = st
        .progress
        .map(|(d, t)| format!(" {d}/{t}"))
        .unwrap_or_default();
    match st.status {
        Status::Cached => "done".into(),
        Status::Running => match &st.job {
            Some((id, state)) => format!("running{progress} (Slurm job {id}, {state})"),
            None => format!("running{progress}"),
        },
        Status::Failed => "FAILED".into(),
        Status::Pending if st.why.starts_with("interrupted") => format!("interrupted{progress}"),
        Status::Pending if st.why.starts_with("submitted") => match &st.job {
            Some((id, state)) => format!("submitted{progress} (Slurm job {id}, {state})"),
            None => "submitted".into(),
        },
        Status::Pending if st.why.starts_with("stale") => "stale".into(),
        Status::Pending if st.why.starts_with("missing") => "missing input".into(),
        Status::Pending if st.why.starts_with("blocked") => "blocked by a failure".into(),
        Status::Pending => "pending".into(),
    }
}
