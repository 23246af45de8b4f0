//! Counterfactual rollouts (paper Eq. 5-7): for a correct response y and each position t, put
//! the j-th most likely token y_t^(j) in place of y_t, continue greedily, and record whether
//! the branch still ends correct.
//!
//! Two paths compute the same outcomes:
//! - [`batched`]: `[Q, y]` is encoded once per example; every branch starts from the KV state
//!   of its prefix `[Q, y_<t]` (a slice, nothing recomputed), branches of many positions and
//!   examples decode together with continuous batching (Eq. 7);
//! - [`sequential`]: one branch at a time, its whole prefix prefilled, nothing shared — the
//!   correctness oracle and the baseline of `cft bench annotate`.
//!
//! Every branch ends as the greedy response it perturbs ended: at an end token (`eos`), when
//! the [`Judge`] says it has ended (a stop string; under the opt-in early stop, a settled
//! answer), or when the whole response reaches `max_new_tokens`. The judge then grades it.
//!
//! The alternative at t is taken from P(· | Q, y_<t) computed on the encoded sequence: the
//! j-th most likely token among those other than y_t (y_t is the greedy choice, so normally
//! the rank-1 token; excluding it keeps the definition exact under ties).
//!
//! A branch usually returns to the wording of the response it perturbs, so the batched path
//! lets each branch draft its next tokens from that response ([`crate::generate::draft`]):
//! verified in one wide step, kept only where greedy decoding would have chosen them, so the
//! outcomes are the same and only the number of decoding steps falls.

use burn::prelude::*;

use crate::generate::draft::lookup;
use crate::generate::{DraftStats, Engine, EngineOptions, GenerateError, Request, encode, score};

/// One correct response to branch from.
#[derive(Clone, Debug)]
pub struct Example {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    /// Positions to roll out (all, or, under the Strict shortcut, where every earlier rank
    /// failed).
    pub open: Vec<bool>,
}

/// Per position: the substituted token and whether the branch ended wrong (`None`: closed).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub alt: Vec<Option<u32>>,
    pub fail: Vec<Option<bool>>,
}

/// Decides branches: when one has ended (besides its end tokens and its budget, which the
/// engine applies), and whether it is correct. A branch's response is
/// `y_<t ++ [alternative] ++ continuation`; `ended` sees it in two parts, the tokens kept
/// (`y_<t ++ [alternative]`) and those generated so far, so it can read only the tail.
pub trait Judge: Sync {
    fn ended(&self, kept: &[u32], generated: &[u32]) -> bool;
    fn correct(&self, example: usize, response: &[u32]) -> bool;
}

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The alternative rank j >= 2.
    pub rank: usize,
    /// A branch's response is at most this long (as the greedy response was).
    pub max_new_tokens: usize,
    /// Rows decoded together by the batched path.
    pub max_batch: usize,
    /// Engines the batched path runs side by side, each on its share of the branches (the
    /// CPU backend computes a decoding step of a small model on about one core). 1 on a GPU.
    pub threads: usize,
    /// Most tokens a branch drafts from the response it perturbs per step (0: no drafts).
    pub draft: usize,
}

/// Draft tokens per step unless a manifest says otherwise (`[annotate] draft_tokens`).
pub const DRAFT: usize = crate::manifest::DRAFT_TOKENS as usize;

/// Engines to run side by side on the CPU: one per core.
pub fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A branch waiting to run.
struct Branch {
    example: usize,
    position: usize,
    alt: u32,
}

/// The alternatives of every open position of `examples`, from one encoding of each.
fn alternatives<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    examples: &[Example],
    rank: usize,
) -> Result<(Vec<Branch>, Vec<crate::generate::Encoded<B>>), GenerateError> {
    let sequences: Vec<Vec<u32>> = examples
        .iter()
        .map(|e| [e.prompt.clone(), e.response.clone()].concat())
        .collect();
    let encoded = encode(lm, &sequences)?;
    let mut branches = Vec::new();
    for (i, (e, enc)) in examples.iter().zip(&encoded).enumerate() {
        if !e.open.iter().any(|o| *o) {
            continue;
        }
        // Row p of the logits is P(· | tokens[..=p]); y_t sits at p + 1 = len(Q) + t.
        let scores = score(enc.logits.clone(), &sequences[i], rank + 1, false)?;
        for (t, &y) in e.response.iter().enumerate() {
            if !e.open.get(t).copied().unwrap_or(false) {
                continue;
            }
            let Some(row) = (e.prompt.len() + t)
                .checked_sub(1)
                .and_then(|p| scores.get(p))
            else {
                continue;
            };
            if let Some(&(alt, _)) = row.top.iter().filter(|(id, _)| *id != y).nth(rank - 2) {
                branches.push(Branch {
                    example: i,
                    position: t,
                    alt,
                });
            }
        }
    }
    Ok((branches, encoded))
}

fn empty_outcomes(examples: &[Example]) -> Vec<Outcome> {
    examples
        .iter()
        .map(|e| Outcome {
            alt: vec![None; e.response.len()],
            fail: vec![None; e.response.len()],
        })
        .collect()
}

/// The branch's response: the kept prefix, the alternative, the continuation.
fn branch_response(e: &Example, b: &Branch, continuation: &[u32]) -> Vec<u32> {
    let mut r = e.response[..b.position].to_vec();
    r.push(b.alt);
    r.extend_from_slice(continuation);
    r
}

/// Tokens the branch may still generate after its alternative: none when the alternative
/// already ended it (an end token, or a stop string completed by it).
pub fn budget(max_new_tokens: usize, kept: &[u32], eos: &[u32], judge: &dyn Judge) -> usize {
    if kept.last().is_some_and(|t| eos.contains(t)) || judge.ended(kept, &[]) {
        0
    } else {
        max_new_tokens.saturating_sub(kept.len())
    }
}

/// All branches of `examples`, batched across positions and examples, from shared prefixes.
pub fn batched<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    examples: &[Example],
    eos: &[u32],
    judge: &dyn Judge,
    settings: Settings,
) -> Result<Vec<Outcome>, GenerateError> {
    batched_with_stats(lm, examples, eos, judge, settings).map(|(o, _)| o)
}

/// [`batched`], and what its drafts did (summed over its engines).
pub fn batched_with_stats<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    examples: &[Example],
    eos: &[u32],
    judge: &dyn Judge,
    settings: Settings,
) -> Result<(Vec<Outcome>, DraftStats), GenerateError> {
    let (branches, encoded) = alternatives(lm, examples, settings.rank)?;
    // A branch's continuation does not depend on the rows beside it, so the branches can be
    // split between engines without changing any outcome.
    let threads = settings
        .threads
        .clamp(1, branches.len().div_ceil(settings.max_batch).max(1));
    let share = branches.len().div_ceil(threads).max(1);
    type Part = (Vec<crate::generate::Completion>, DraftStats);
    let run = |part: &[Branch]| -> Result<Part, GenerateError> {
        let engine = Engine::new(
            lm,
            EngineOptions {
                max_batch: settings.max_batch,
                top_alternatives: 0,
                max_draft: settings.draft,
                ..Default::default()
            },
        );
        let requests: Vec<Request<'_, B>> = part
            .iter()
            .map(|b| {
                let e = &examples[b.example];
                let kept: Vec<u32> = branch_response(e, b, &[]);
                let mut r = Request::greedy(
                    vec![b.alt],
                    budget(settings.max_new_tokens, &kept, eos, judge),
                );
                r.prefix = Some(encoded[b.example].state.prefix(e.prompt.len() + b.position));
                r.eos_token_ids = eos.to_vec();
                r.draft = Some(Box::new(move |generated: &[u32], max: usize| {
                    draft_from_response(e, b, generated, max)
                }));
                r.stop = Some(Box::new(move |generated: &[u32]| {
                    judge.ended(&kept, generated)
                }));
                r
            })
            .collect();
        let completions = engine.generate(requests)?;
        Ok((completions, engine.draft_stats()))
    };
    let (completions, stats) = match threads {
        1 => run(&branches)?,
        _ => std::thread::scope(|scope| {
            let handles: Vec<_> = branches
                .chunks(share)
                .map(|part| scope.spawn(move || run(part)))
                .collect();
            let mut all = Vec::with_capacity(branches.len());
            let mut stats = DraftStats::default();
            for handle in handles {
                let (part, s) = handle
                    .join()
                    .map_err(|_| GenerateError::Device("a rollout thread panicked".into()))??;
                all.extend(part);
                stats += s;
            }
            Ok::<_, GenerateError>((all, stats))
        })?,
    };
    let mut out = empty_outcomes(examples);
    for (b, c) in branches.iter().zip(completions) {
        let response = branch_response(&examples[b.example], b, &c.tokens);
        out[b.example].alt[b.position] = Some(b.alt);
        out[b.example].fail[b.position] = Some(!judge.correct(b.example, &response));
    }
    Ok((out, stats))
}

/// A branch's draft: what follows, in the response it perturbs, the match of the branch's
/// last tokens nearest to where they would sit had nothing shifted. The branch is
/// `y_<t ++ [alternative] ++ generated`, its newest token at `t + generated.len()`.
fn draft_from_response(e: &Example, b: &Branch, generated: &[u32], max: usize) -> Vec<u32> {
    // Its last three tokens (all the lookup matches).
    let kept = &e.response[b.position.saturating_sub(2)..b.position];
    let branch = [kept, &[b.alt], generated].concat();
    let tail = &branch[branch.len().saturating_sub(3)..];
    lookup(&e.response, tail, b.position + generated.len(), max).to_vec()
}

/// The same outcomes, one branch at a time with a full prefill and nothing shared.
pub fn sequential<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    examples: &[Example],
    eos: &[u32],
    judge: &dyn Judge,
    settings: Settings,
) -> Result<Vec<Outcome>, GenerateError> {
    let mut out = empty_outcomes(examples);
    let engine = Engine::new(
        lm,
        EngineOptions {
            max_batch: 1,
            top_alternatives: 0,
            ..Default::default()
        },
    );
    for (i, e) in examples.iter().enumerate() {
        // The alternatives come from this example alone.
        let (branches, _) = alternatives(lm, std::slice::from_ref(e), settings.rank)?;
        for b in branches {
            let kept = branch_response(e, &b, &[]);
            let mut r = Request::greedy(
                [e.prompt.as_slice(), kept.as_slice()].concat(),
                budget(settings.max_new_tokens, &kept, eos, judge),
            );
            r.eos_token_ids = eos.to_vec();
            let judge_kept = kept.clone();
            r.stop = Some(Box::new(move |generated: &[u32]| {
                judge.ended(&judge_kept, generated)
            }));
            let c = engine
                .generate(vec![r])?
                .into_iter()
                .next()
                .map(|c| c.tokens)
                .unwrap_or_default();
            let response = branch_response(e, &b, &c);
            out[i].alt[b.position] = Some(b.alt);
            out[i].fail[b.position] = Some(!judge.correct(i, &response));
        }
    }
    Ok(out)
}
