//! The artifacts stages exchange and reports read: one JSON line per example or question, so
//! stages can save and resume item by item and a person can read the files.

use serde::{Deserialize, Serialize};

/// A JSONL artifact that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{file} line {line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("writing JSONL: {0}")]
    Write(String),
}

/// One greedy response (`responses.jsonl` of the `greedy` stage).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub idx: u64,
    pub prompt_ids: Vec<u32>,
    pub response_ids: Vec<u32>,
    pub text: String,
    /// The gold answer the response was graded against.
    #[serde(default)]
    pub gold: String,
    pub pred: String,
    pub correct: bool,
    /// Each response token decoded on its own (for token categories and `annotate show`).
    #[serde(default)]
    pub pieces: Vec<String>,
}

/// One example's branches at rank j (`branches.jsonl` of a `rollout` stage): per response
/// position, the substituted token and whether the branch ended wrong; `None` where the
/// Strict shortcut did not roll out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Branches {
    pub idx: u64,
    pub alt: Vec<Option<u32>>,
    pub fail: Vec<Option<bool>>,
}

/// Per-token weights of one correct example (`weights.jsonl` of criticality and selection).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub idx: u64,
    pub weights: Vec<f32>,
}

/// One line of `outputs.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionOutput {
    pub idx: u64,
    pub response: String,
    pub tokens: u64,
    pub pred: String,
    pub correct: bool,
    /// Mean entropy (nats) of the greedy response's token distributions.
    pub entropy: Option<f64>,
    /// With sampling: each sample's prediction and correctness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Samples>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    pub preds: Vec<String>,
    pub correct: Vec<bool>,
}

/// Parses a JSONL output, naming the file and line of a bad line.
pub fn read_lines<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &str,
) -> Result<Vec<T>, ArtifactError> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l).map_err(|e| ArtifactError::Line {
                file: what.to_string(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

pub fn write_lines<T: Serialize>(items: &[T]) -> Result<Vec<u8>, ArtifactError> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item).map_err(|e| ArtifactError::Write(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Reads `outputs.jsonl`.
pub fn parse_outputs(bytes: &[u8]) -> Result<Vec<QuestionOutput>, ArtifactError> {
    read_lines(bytes, "outputs.jsonl")
}
