//! What the annotation stages exchange: the greedy responses (D_correct, Eq. 3-4), rollout
//! outcomes per alternative rank, per-token weights. One JSON line per example, so stages can
//! save and resume example by example and a person can read the files.

use std::path::Path;

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};

use crate::eval::Benchmark;
use crate::generate::Ending;
use crate::manifest::EarlyStop;
use crate::model::{LanguageModel, LoadOptions};

use super::StageError;

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

/// Parses a JSONL output, naming the file and line of a bad line.
pub fn read_lines<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &str,
) -> Result<Vec<T>, StageError> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l)
                .map_err(|e| StageError::Failed(format!("{what} line {}: {e}", i + 1)))
        })
        .collect()
}

pub fn write_lines<T: Serialize>(items: &[T]) -> Result<Vec<u8>, StageError> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item).map_err(|e| StageError::Failed(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

pub fn load_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
    options: LoadOptions,
) -> Result<LanguageModel<B>, StageError> {
    LanguageModel::load(dir, device, options)
        .map_err(|e| StageError::Failed(format!("model {}: {e}", dir.display())))
}

/// The rollout judge of the real pipeline: a branch ends by the end rule of the greedy
/// response it perturbs (its stop strings; the engine applies the end tokens and the budget)
/// or, under the opt-in early stop, once its answer is settled
/// ([`crate::cft::answer::settled`]); it is correct when the benchmark's grader says so of
/// its graded text.
pub struct GradeJudge<'a> {
    pub ending: Ending<'a>,
    pub early_stop: EarlyStop,
    pub benchmark: Benchmark,
    pub golds: Vec<String>,
}

/// Tokens of the tail in which the early stop looks for a `boxed` before decoding the whole
/// response.
const SETTLED_TAIL: usize = 64;

impl crate::cft::rollout::Judge for GradeJudge<'_> {
    fn ended(&self, kept: &[u32], generated: &[u32]) -> bool {
        self.ending.stopped(kept, generated)
            || (self.early_stop == EarlyStop::Answer && self.settled(kept, generated))
    }

    fn correct(&self, example: usize, response: &[u32]) -> bool {
        let (Ok(text), Some(gold)) = (self.ending.graded_text(response), self.golds.get(example))
        else {
            return false;
        };
        crate::eval::grade(self.benchmark, &text, gold).correct
    }
}

impl GradeJudge<'_> {
    fn settled(&self, kept: &[u32], generated: &[u32]) -> bool {
        // Cheap first: a box closing now lies in the tail; only then decode everything (the
        // Minerva check needs the whole text).
        let tokenizer = self.ending.tokenizer();
        let tail = crate::generate::ending::tail(kept, generated, SETTLED_TAIL);
        if !tokenizer
            .decode(&tail, true)
            .is_ok_and(|t| t.contains("boxed"))
        {
            return false;
        }
        let whole = [kept, generated].concat();
        tokenizer
            .decode(&whole, true)
            .is_ok_and(|text| crate::cft::answer::settled(&text))
    }
}

/// The correct responses (D_correct, Eq. 4) of a greedy record, in order.
pub fn correct_responses(ctx: &super::StageCtx<'_>) -> Result<Vec<Response>, StageError> {
    let greedy = ctx.input("greedy")?;
    let all: Vec<Response> = read_lines(&ctx.read(greedy, "responses.jsonl")?, "responses.jsonl")?;
    Ok(all.into_iter().filter(|r| r.correct).collect())
}

pub fn decode_each(model_tokens: &[u32], tokenizer: &crate::model::TextTokenizer) -> Vec<String> {
    model_tokens
        .iter()
        .map(|t| tokenizer.decode(&[*t], false).unwrap_or_default())
        .collect()
}
