//! `cft annotate show FILE --example N [--model NAME] [--method NAME]`: one greedy response
//! with the tokens a CFT method marks critical highlighted, so a person can see what the
//! method picked.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use cft::cache::{Record, View};
use cft::contract::label;
use cft::manifest::MethodKind;
use cft::stages::annotate::{Response, Weights, read_lines};

#[derive(clap::Subcommand, Debug)]
pub enum AnnotateCommand {
    /// Print a response with its critical tokens marked.
    Show {
        /// The manifest.
        file: PathBuf,
        /// The example's index in the training data.
        #[arg(long)]
        example: u64,
        /// The model (default: the manifest's first).
        #[arg(long)]
        model: Option<String>,
        /// The CFT method whose criticality to show (default: the first `cft` method).
        #[arg(long)]
        method: Option<String>,
    },
}

pub fn run(cache: &Path, cmd: AnnotateCommand) -> anyhow::Result<ExitCode> {
    let AnnotateCommand::Show {
        file,
        example,
        model,
        method,
    } = cmd;
    let (exp, view, plan, _) = super::plan::resolve(cache, &file)?;
    let model = match model {
        Some(m) => exp
            .models
            .iter()
            .find(|x| x.name == m)
            .with_context(|| format!("no model `{m}` in {}", file.display()))?,
        None => &exp.models[0],
    };
    let method = match method {
        Some(m) => exp
            .method(&m)
            .with_context(|| format!("no method `{m}` in {}", file.display()))?,
        None => exp
            .methods
            .iter()
            .find(|m| matches!(m.kind, MethodKind::Cft { .. }))
            .context("the manifest has no `cft` method")?,
    };
    let MethodKind::Cft { rule, k } = method.kind else {
        bail!("method `{}` is not a `cft` method", method.name);
    };
    let store = view.store();
    let record = |label: &str| -> anyhow::Result<Record> {
        let spec = plan
            .graph
            .node_weights()
            .find(|s| s.label == label)
            .with_context(|| format!("no stage `{label}` in the plan"))?;
        store
            .record(&spec.key)?
            .filter(|r| r.status == cft::cache::RecordStatus::Done)
            .with_context(|| format!("`{label}` has not run yet (cft run {})", file.display()))
    };
    let bytes = |r: &Record, name: &str| -> anyhow::Result<Vec<u8>> {
        match (r.outputs.get(name), &view) {
            (Some(_), View::Open(c)) => Ok(c.output(r, name)?),
            (Some(_), View::Snapshot(_)) => {
                bail!("the cache is in use by a run; try again when it finishes")
            }
            _ => bail!("`{}` has no output `{name}`", r.label),
        }
    };
    let greedy = record(&label::greedy(&model.name))?;
    let responses: Vec<Response> =
        read_lines(&bytes(&greedy, "responses.jsonl")?, "responses.jsonl")?;
    let response = responses
        .iter()
        .find(|r| r.idx == example)
        .with_context(|| format!("no example {example} (there are {})", responses.len()))?;
    println!(
        "example {example}: {} (pred {}, gold {})",
        if response.correct { "correct" } else { "wrong" },
        response.pred,
        response.gold
    );
    if !response.correct {
        println!("{}", response.text);
        println!("\n(only correct responses are annotated)");
        return Ok(ExitCode::SUCCESS);
    }
    let rule_name = rule.name();
    let crit = record(&label::criticality(
        &model.name,
        &label::rule_k(rule_name, k),
    ))?;
    let weights: Vec<Weights> = read_lines(&bytes(&crit, "weights.jsonl")?, "weights.jsonl")?;
    let w = weights
        .iter()
        .find(|w| w.idx == example)
        .context("no weights for this example")?;
    let color = std::io::stdout().is_terminal();
    let mut text = String::new();
    for (piece, weight) in response.pieces.iter().zip(&w.weights) {
        text.push_str(&match (*weight, color) {
            (0.0, _) => piece.clone(),
            (x, true) => format!(
                "\x1b[{}m{piece}\x1b[0m",
                if x >= 2.0 { "1;41" } else { "1;31" }
            ),
            (x, false) if x >= 2.0 => format!("[[{piece}]]"),
            _ => format!("[{piece}]"),
        });
    }
    println!("{text}");
    let marked = w.weights.iter().filter(|x| **x != 0.0).count();
    println!(
        "\n{} ({rule_name}, k = {k}): {marked} of {} tokens critical{}",
        method.label,
        w.weights.len(),
        if color {
            ""
        } else {
            ", shown [like this] ([[twice failed]] under Graded)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
