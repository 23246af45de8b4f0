//! `cft grade`: JSONL in, one verdict per line out, in order.
//!
//! Input lines are `{"benchmark", "response", "answer"}` with the gold answer as the
//! benchmark loaders produce it; output lines are `{"pred", "correct"}`. A line that is not
//! such an object stops the command with its line number (exit code 1).

use std::io::{BufRead, BufWriter, Write};

use anyhow::{Context, Result, bail};
use cft::eval::{self, Benchmark, Rules};

#[derive(clap::Args, Debug)]
pub struct GradeArgs {
    /// Fix the reference's quirks (50 = 0.5, open = closed interval ends) instead of keeping them.
    #[arg(long)]
    pub strict: bool,
}

#[derive(serde::Deserialize)]
struct Line {
    benchmark: String,
    response: String,
    answer: serde_json::Value,
}

pub fn run(args: &GradeArgs) -> Result<()> {
    let rules = Rules {
        strict: args.strict,
    };
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (i, line) in stdin.lines().enumerate() {
        let n = i + 1;
        let line = line.with_context(|| format!("reading line {n} of stdin"))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: Line = serde_json::from_str(&line).with_context(|| {
            format!("line {n}: expected {{\"benchmark\", \"response\", \"answer\"}}")
        })?;
        let benchmark: Benchmark = rec.benchmark.parse().with_context(|| format!("line {n}"))?;
        let gold = match rec.answer {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(x) => x.to_string(),
            other => bail!("line {n}: `answer` must be a string or a number, got {other}"),
        };
        let verdict = eval::grade_with(benchmark, &rec.response, &gold, rules);
        serde_json::to_writer(&mut out, &verdict)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
