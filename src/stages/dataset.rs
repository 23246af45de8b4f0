//! `dataset`: reads a training or benchmark source into normalised problems
//! (`problems.jsonl`: one `{idx, question, gold, solution}` per line).
//!
//! A file enters the plan by content fingerprint; if it changed between planning and running,
//! the stage refuses rather than silently producing results under the wrong key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Output, StageCtx, StageError, StageImpl, StageOutput};
use crate::contract::DatasetParams;
use crate::manifest::Synthetic;
use crate::toy::problems;

/// One normalised problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub idx: u64,
    pub question: String,
    /// The gold final answer, as the harness takes it (GSM8K: the text after `####`).
    pub gold: String,
    /// The reference solution, when the source has one.
    #[serde(default)]
    pub solution: Option<String>,
}

pub struct Dataset;

impl StageImpl for Dataset {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        let params: DatasetParams = ctx.params_as()?;
        ctx.set_total(1);
        let problems = match &params {
            DatasetParams::Synthetic { synthetic: s } => synthetic(s)?,
            DatasetParams::File {
                format,
                fingerprint,
                limit,
            } => file(ctx, format, fingerprint, *limit)?,
        };
        let mut bytes = Vec::new();
        for p in &problems {
            let line = serde_json::to_string(p).map_err(|e| StageError::Failed(e.to_string()))?;
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        ctx.advance(1);
        Ok(StageOutput {
            outputs: vec![("problems.jsonl".into(), Output::Bytes(bytes))],
            metrics: json!({"count": problems.len()}),
        })
    }
}

/// Reads a dataset stage's output.
pub fn parse_problems(bytes: &[u8]) -> Result<Vec<Problem>, StageError> {
    Ok(super::annotate::read_lines(bytes, "problems.jsonl")?)
}

fn synthetic(s: &Synthetic) -> Result<Vec<Problem>, StageError> {
    if s.choices > 0 {
        let generated =
            problems::generate_choices(s.seed, &s.split, s.n, s.min_steps, s.max_steps, s.choices);
        return Ok(generated
            .into_iter()
            .enumerate()
            .map(|(i, c)| Problem {
                idx: i as u64,
                question: c.question,
                gold: c.letter,
                solution: Some(c.answer),
            })
            .collect());
    }
    let generated = problems::generate(s.seed, &s.split, s.n, s.min_steps, s.max_steps);
    generated
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(Problem {
                idx: i as u64,
                gold: gsm8k_gold(&p.answer).ok_or_else(|| {
                    StageError::Failed("generator produced no `####` line".into())
                })?,
                question: p.question,
                solution: Some(p.answer),
            })
        })
        .collect()
}

fn file(
    ctx: &StageCtx<'_>,
    format: &str,
    expected: &str,
    limit: Option<u64>,
) -> Result<Vec<Problem>, StageError> {
    let path: PathBuf = serde_json::from_value(ctx.bindings()["path"].clone())
        .map_err(|_| StageError::Failed("dataset stage has no file binding".into()))?;
    if let Some(missing) = expected.strip_prefix("missing:") {
        return Err(StageError::Input(format!(
            "data file `{missing}` does not exist"
        )));
    }
    let actual = ctx.fingerprint(&path)?;
    if actual.as_deref() != Some(expected) {
        return Err(StageError::Input(format!(
            "{} changed since the plan was made; run again to re-plan",
            path.display()
        )));
    }
    let mut out = match format {
        "gsm8k" => read_gsm8k(&path)?,
        other => crate::stages::benchmark::load(other, &path)?,
    };
    if let Some(n) = limit {
        out.truncate(n as usize);
    }
    Ok(out)
}

/// GSM8K: `{"question", "answer"}` per JSONL line or parquet row (HF's `openai/gsm8k`
/// `main/*.parquet`), the gold answer after `####`, commas removed.
fn read_gsm8k(path: &std::path::Path) -> Result<Vec<Problem>, StageError> {
    let records =
        crate::eval::records::read_records(path).map_err(|e| StageError::Input(e.to_string()))?;
    let mut out = Vec::new();
    for (place, v) in records {
        let at = |m: String| StageError::Input(format!("{place}: {m}"));
        let question = v["question"]
            .as_str()
            .ok_or_else(|| at("missing string `question`".into()))?;
        let answer = v["answer"]
            .as_str()
            .ok_or_else(|| at("missing string `answer`".into()))?;
        let gold = gsm8k_gold(answer).ok_or_else(|| at("`answer` has no `#### N` line".into()))?;
        out.push(Problem {
            idx: out.len() as u64,
            question: question.to_string(),
            gold,
            solution: Some(answer.to_string()),
        });
    }
    Ok(out)
}

/// The text after the last `####`, trimmed, with thousands separators removed.
pub fn gsm8k_gold(answer: &str) -> Option<String> {
    let (_, tail) = answer.rsplit_once("####")?;
    Some(tail.trim().replace(',', ""))
}
