//! `greedy` (paper Eq. 3-4): the base model answers every training question greedily; each
//! response is graded against the gold answer; the correct ones form D_correct.
//!
//! Questions run in chunks through the batched engine; each chunk's responses are saved as
//! items, so a killed run loses at most the chunk in flight.

use std::time::Instant;

use burn::prelude::Backend;
use serde_json::json;

use crate::eval::grade;
use crate::generate::{Ending, Engine, EngineOptions};

use super::annotate::{Response, decode_each, load_model, read_lines, write_lines};
use super::dataset::Problem;
use super::eval::benchmark_of;
use super::prompt::{prompt_ids, stop_strings};
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};
use crate::contract::GreedyParams;

/// Questions per saved chunk.
const CHUNK: usize = crate::generate::rows::GREEDY;

pub struct Greedy;

impl StageImpl for Greedy {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, run)
    }
}

fn run<B: Backend>(ctx: &mut StageCtx<'_>, device: &B::Device) -> Result<StageOutput, StageError> {
    let started = Instant::now();
    let params: GreedyParams = ctx.params_as()?;
    let template = params.template;
    let max_new = params.max_new_tokens as usize;
    let benchmark = benchmark_of(&params.benchmark);
    let mut problems: Vec<Problem> = read_lines(
        &ctx.read(ctx.input("dataset")?, "problems.jsonl")?,
        "problems.jsonl",
    )?;
    if let Some(limit) = params.limit {
        problems.truncate(limit as usize);
    }
    let model = load_model::<B>(&ctx.input_model_dir()?, device, ctx.device().load_options())?;
    let tokenizer = &model.tokenizer;
    let ending = Ending::new(
        tokenizer,
        &model.eos_token_ids,
        stop_strings(template),
        max_new,
    );
    let rows = decode_rows(ctx, max_new)?;
    let options = EngineOptions {
        max_batch: rows,
        top_alternatives: 0,
        ..Default::default()
    };
    let replicas = super::device::replicas::<B>(ctx.devices(), &model.lm, device);
    let engines: Vec<Engine<'_, B>> = super::device::engine_models(ctx, &model.lm, &replicas)
        .into_iter()
        .map(|lm| Engine::new(lm, options))
        .collect();

    ctx.set_total(problems.len() as u64);
    // Items stay chunks of CHUNK questions whatever the rows and engines: a wave of
    // rows / CHUNK chunks per engine decodes together.
    let chunks: Vec<&[Problem]> = problems.chunks(CHUNK).collect();
    let per_engine = (rows / CHUNK).max(1);
    let run = |engine: &Engine<'_, B>, share: &[&[Problem]]| {
        let questions: Vec<Problem> = share.iter().flat_map(|c| c.iter().cloned()).collect();
        let answered = answer(&questions, template, engine, &ending, benchmark)?;
        Ok(super::device::split_as(answered, share))
    };
    let done: Vec<Vec<Response>> =
        super::device::items_in_waves(ctx, "chunk", &chunks, &engines, per_engine, run)?;
    let responses: Vec<Response> = done.into_iter().flatten().collect();

    let correct = responses.iter().filter(|r| r.correct).count();
    let tokens: usize = responses.iter().map(|r| r.response_ids.len()).sum();
    let correct_tokens: usize = responses
        .iter()
        .filter(|r| r.correct)
        .map(|r| r.response_ids.len())
        .sum();
    let total = responses.len().max(1);
    Ok(StageOutput {
        outputs: vec![(
            "responses.jsonl".into(),
            Output::Bytes(write_lines(&responses)?),
        )],
        metrics: json!({
            "accuracy": correct as f64 / total as f64,
            "correct": correct,
            "total": responses.len(),
            "mean_response_tokens": tokens as f64 / total as f64,
            // Table 4's "Avg Tokens": the length of the solutions that form D_correct, the
            // ones annotated and trained on (a wrong answer is often a long, looping one).
            "mean_correct_response_tokens": (correct > 0).then(|| correct_tokens as f64 / correct as f64),
            "seconds": started.elapsed().as_secs_f64(),
        }),
    })
}

/// Rows decoded together: a chunk on the CPU; on a GPU as many whole chunks as its free
/// memory holds beside the loaded weights (`memory::rows_within`, prompts taken at 512
/// tokens), up to `rows::GREEDY_GPU_MAX`. Items and outputs do not depend on it (each
/// request decodes the same whatever shares its batch).
fn decode_rows(ctx: &StageCtx<'_>, max_new: usize) -> Result<usize, StageError> {
    // A `decode_rows` binding (never in the key) sets them, in whole chunks.
    if let Some(rows) = ctx.bindings().get("decode_rows").and_then(|v| v.as_u64()) {
        return Ok((rows as usize).div_ceil(CHUNK).max(1) * CHUNK);
    }
    let work = crate::plan::resources::GenerateWork {
        dtype: crate::plan::resources::Dtype::Bf16,
        rows: CHUNK as u64,
        prompt: 512,
        new_tokens: max_new as u64,
        encoded: 0,
        encoded_while_decoding: false,
    };
    let cap = crate::generate::rows::GREEDY_GPU_MAX;
    Ok(rows_from_free_memory(ctx, work, CHUNK, cap)?.unwrap_or(CHUNK))
}

/// On a GPU, the most rows (a multiple of `step`, at most `cap`) that `work` can decode in the
/// device's free memory beside the loaded weights, by the memory model
/// (`memory::rows_within`, with the model's stored dtype); `None` on the CPU or when the free
/// memory or the model's shape is not known.
pub(super) fn rows_from_free_memory(
    ctx: &StageCtx<'_>,
    work: crate::plan::resources::GenerateWork,
    step: usize,
    cap: usize,
) -> Result<Option<usize>, StageError> {
    use crate::plan::resources::{GenerateWork, ModelShape, memory};
    let Some(free) = ctx.device().free_memory() else {
        return Ok(None);
    };
    let Ok(Some(shape)) = ModelShape::from_dir(&ctx.input_model_dir()?) else {
        return Ok(None);
    };
    let work = GenerateWork {
        dtype: shape.stored,
        ..work
    };
    Ok(Some(
        memory::rows_within(&shape, &work, free, step as u64, cap as u64) as usize,
    ))
}

/// Questions answered greedily and graded.
fn answer<B: Backend>(
    chunk: &[Problem],
    template: crate::manifest::Template,
    engine: &Engine<'_, B>,
    ending: &Ending<'_>,
    benchmark: crate::eval::Benchmark,
) -> Result<Vec<Response>, StageError> {
    let tokenizer = ending.tokenizer();
    let mut prompts = Vec::with_capacity(chunk.len());
    let mut requests = Vec::with_capacity(chunk.len());
    for p in chunk {
        let ids = prompt_ids(template, &p.question, tokenizer)?;
        prompts.push(ids.clone());
        requests.push(ending.request(ids));
    }
    let completions = engine
        .generate(requests)
        .map_err(|e| StageError::Failed(e.to_string()))?;
    let mut done = Vec::with_capacity(chunk.len());
    for ((p, prompt), completion) in chunk.iter().zip(prompts).zip(completions) {
        let response_ids = ending.kept(&completion.tokens);
        let text = ending
            .graded_text(&completion.tokens)
            .map_err(|e| StageError::Failed(e.to_string()))?;
        let verdict = grade(benchmark, &text, &p.gold);
        done.push(Response {
            idx: p.idx,
            prompt_ids: prompt,
            pieces: decode_each(&response_ids, tokenizer),
            response_ids,
            text,
            gold: p.gold.clone(),
            pred: verdict.pred,
            correct: verdict.correct,
        });
    }
    Ok(done)
}
