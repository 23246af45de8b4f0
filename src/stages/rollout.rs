//! `rollout` (paper Eq. 5-7), one stage per model and alternative rank j: for every position
//! of every correct greedy response, substitute the j-th most likely token, continue greedily
//! until the branch ends by the greedy response's own end rule ([`Ending`]: end token, stop
//! string, budget; or, opted into, a settled answer), and record whether the branch's graded
//! text is still correct under the training data's benchmark.
//!
//! Under the Strict-only shortcut (`only_where_previous_failed`), rank j runs only where rank
//! j-1 failed: a success already makes the token non-critical. Examples run in chunks through
//! the batched engine ([`crate::cft::rollout::batched`]); each chunk is saved, so a killed run
//! loses at most the chunk in flight.

use std::collections::HashMap;
use std::time::Instant;

use burn::prelude::Backend;
use serde_json::json;

use crate::cft::rollout::{Example, Settings, batched};
use crate::contract::RolloutParams;
use crate::generate::Ending;

use super::annotate::{
    Branches, GradeJudge, Response, correct_responses, load_model, read_lines, write_lines,
};
use super::eval::benchmark_of;
use super::prompt::stop_strings;
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};

/// Examples per saved chunk.
const CHUNK: usize = crate::generate::rows::ROLLOUT_CHUNK;
pub use crate::generate::rows::{ROLLOUT_CPU as CPU_MAX_BATCH, ROLLOUT_GPU as GPU_MAX_BATCH};

pub struct Rollout;

impl StageImpl for Rollout {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, run)
    }
}

fn run<B: Backend>(ctx: &mut StageCtx<'_>, device: &B::Device) -> Result<StageOutput, StageError> {
    let started = Instant::now();
    let params: RolloutParams = ctx.params_as()?;
    let rank = params.j as usize;
    let max_new = params.max_new_tokens as usize;
    let template = params.template;
    let benchmark = benchmark_of(&params.benchmark);
    let early_stop = params.early_stop;
    let responses = correct_responses(ctx)?;
    let previous: Option<HashMap<u64, Branches>> = if params.only_where_previous_failed {
        let prev = ctx.input("rollout")?;
        let lines: Vec<Branches> =
            read_lines(&ctx.read(prev, "branches.jsonl")?, "branches.jsonl")?;
        Some(lines.into_iter().map(|b| (b.idx, b)).collect())
    } else {
        None
    };
    let model = load_model::<B>(&ctx.input_model_dir()?, device, ctx.device().load_options())?;
    let settings = Settings {
        rank,
        max_new_tokens: max_new,
        max_batch: match ctx.device() {
            super::Device::Cpu => CPU_MAX_BATCH,
            // As many rows as the GPU's free memory holds beside the weights and the
            // chunk's encoded sequences; 64 when that is not known.
            super::Device::Cuda(_) => {
                let work = crate::plan::resources::GenerateWork {
                    dtype: crate::plan::resources::Dtype::Bf16,
                    rows: GPU_MAX_BATCH as u64,
                    prompt: 512,
                    new_tokens: max_new as u64,
                    encoded: CHUNK as u64,
                    encoded_while_decoding: true,
                };
                let cap = crate::generate::rows::ROLLOUT_GPU_MAX;
                super::greedy::rows_from_free_memory(ctx, work, GPU_MAX_BATCH, cap)?
                    .unwrap_or(GPU_MAX_BATCH)
            }
        },
        threads: match ctx.device() {
            super::Device::Cpu => crate::cft::rollout::cpu_threads(),
            super::Device::Cuda(_) => 1,
        },
        // How the branches decode, not what they say: a binding, never in the key.
        draft: ctx
            .bindings()
            .get("draft_tokens")
            .and_then(|v| v.as_u64())
            .map_or(crate::cft::rollout::DRAFT, |n| n as usize),
    };

    // The end rule of the greedy responses the branches perturb.
    let ending = Ending::new(
        &model.tokenizer,
        &model.eos_token_ids,
        stop_strings(template),
        max_new,
    );

    // One copy of the model per GPU the worker holds; on the CPU the `engines` binding
    // (default 1) splits each chunk that many ways on the one model.
    let replicas = super::device::replicas::<B>(ctx.devices(), &model.lm, device);
    let lms = super::device::engine_models(ctx, &model.lm, &replicas);

    ctx.set_total(responses.len() as u64);
    let mut out: Vec<Branches> = Vec::with_capacity(responses.len());
    let mut branches = 0usize;
    for (c, chunk) in responses.chunks(CHUNK).enumerate() {
        let done: Vec<Branches> = ctx.item(&format!("chunk-{c}"), chunk.len() as u64, || {
            let examples = chunk
                .iter()
                .map(|r| example(r, previous.as_ref()))
                .collect::<Result<Vec<_>, _>>()?;
            // The chunk's examples in contiguous shares, one per model copy; each share is
            // encoded and branched on its own device (an example's outcomes do not depend
            // on the others).
            let share = examples.len().div_ceil(lms.len()).max(1);
            let run = |(lm, start): (&crate::model::CausalLm<B>, usize)| {
                let end = (start + share).min(examples.len());
                let judge = GradeJudge {
                    ending: ending.clone(),
                    early_stop,
                    benchmark,
                    golds: chunk[start..end].iter().map(|r| r.gold.clone()).collect(),
                };
                batched(
                    lm,
                    &examples[start..end],
                    ending.end_ids(),
                    &judge,
                    settings,
                )
                .map_err(|e| StageError::Failed(e.to_string()))
            };
            let parts: Vec<(&crate::model::CausalLm<B>, usize)> = lms
                .iter()
                .copied()
                .zip((0..examples.len()).step_by(share))
                .collect();
            let outcomes: Vec<_> = super::device::in_parallel(parts, run)?
                .into_iter()
                .flatten()
                .collect();
            Ok(chunk
                .iter()
                .zip(outcomes)
                .map(|(r, o)| Branches {
                    idx: r.idx,
                    alt: o.alt,
                    fail: o.fail,
                })
                .collect())
        })?;
        branches += done
            .iter()
            .map(|b| b.alt.iter().flatten().count())
            .sum::<usize>();
        out.extend(done);
    }
    Ok(StageOutput {
        outputs: vec![("branches.jsonl".into(), Output::Bytes(write_lines(&out)?))],
        metrics: json!({
            "j": rank,
            "branches": branches,
            "examples": out.len(),
            "seconds": started.elapsed().as_secs_f64(),
        }),
    })
}

/// The example to branch from: every position, or under the Strict shortcut those where the
/// previous rank failed.
fn example(r: &Response, previous: Option<&HashMap<u64, Branches>>) -> Result<Example, StageError> {
    let open = match previous {
        None => vec![true; r.response_ids.len()],
        Some(prev) => {
            let b = prev.get(&r.idx).ok_or_else(|| {
                StageError::Failed(format!(
                    "the previous rank has no outcome for example {}",
                    r.idx
                ))
            })?;
            if b.fail.len() != r.response_ids.len() {
                return Err(StageError::Failed(format!(
                    "example {}: previous rank has {} positions, the response {}",
                    r.idx,
                    b.fail.len(),
                    r.response_ids.len()
                )));
            }
            b.fail.iter().map(|f| *f == Some(true)).collect()
        }
    };
    Ok(Example {
        prompt: r.prompt_ids.clone(),
        response: r.response_ids.clone(),
        open,
    })
}
