//! What the annotation stages exchange: the greedy responses (D_correct, Eq. 3-4), rollout
//! outcomes per alternative rank, per-token weights. One JSON line per example, so stages can
//! save and resume example by example and a person can read the files.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use burn::prelude::Backend;

use crate::eval::Benchmark;
use crate::generate::Ending;
use crate::manifest::EarlyStop;
use crate::model::{LanguageModel, LoadOptions};

use super::StageError;
pub use crate::contract::artifacts::{Branches, Response, Weights, read_lines, write_lines};

/// Loads the model a stage works on. In a worker that runs several stages on one model
/// ([`share_model_loads`]), the last model loaded is kept and handed out again: a load of a
/// 7B checkpoint takes longer than many of the evaluations that follow it.
pub fn load_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
    options: LoadOptions,
) -> Result<LanguageModel<B>, StageError> {
    let load = || {
        LOADS.fetch_add(1, Ordering::SeqCst);
        LanguageModel::load(dir, device, options)
            .map_err(|e| StageError::Input(format!("model {}: {e}", dir.display())))
    };
    if !SHARING.load(Ordering::SeqCst) {
        return load();
    }
    let id = format!("{} {device:?} {options:?}", dir.display());
    let Ok(mut shared) = SHARED.lock() else {
        return load();
    };
    if let Some((held, model)) = shared.as_ref()
        && *held == id
        && let Some(model) = model.downcast_ref::<LanguageModel<B>>()
    {
        return Ok(model.clone());
    }
    // The previous model goes before the next one loads: never two in memory.
    *shared = None;
    let model = load()?;
    *shared = Some((id, Box::new(model.clone())));
    Ok(model)
}

static SHARING: AtomicBool = AtomicBool::new(false);
static LOADS: AtomicUsize = AtomicUsize::new(0);
type SharedModel = (String, Box<dyn std::any::Any + Send>);
static SHARED: Mutex<Option<SharedModel>> = Mutex::new(None);

/// How many times this process read a model from disk through [`load_model`] (a worker's
/// journal lines carry it, so a group's shared load can be seen).
pub fn model_loads() -> usize {
    LOADS.load(Ordering::SeqCst)
}

/// Keeps the last loaded model for the next stage of this process (`cft worker` given a group
/// of stages on one model). A model is read-only to the stages that share it (greedy,
/// rollout, token statistics, evaluation), so each gets the same weights a fresh load gives.
pub fn share_model_loads(on: bool) {
    SHARING.store(on, Ordering::SeqCst);
    if !on && let Ok(mut shared) = SHARED.lock() {
        *shared = None;
    }
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
        // A multiple-choice answer never settles: the harness reads it from the text after
        // the last "answer is" or "choice is", or from the whole text, not from a box.
        self.ending.stopped(kept, generated)
            || (self.early_stop == EarlyStop::Answer
                && !self.benchmark.multiple_choice()
                && self.settled(kept, generated))
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
