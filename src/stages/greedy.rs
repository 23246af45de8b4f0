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
    let engine = Engine::new(
        &model.lm,
        EngineOptions {
            max_batch: CHUNK,
            top_alternatives: 0,
            ..Default::default()
        },
    );

    ctx.set_total(problems.len() as u64);
    let mut responses: Vec<Response> = Vec::with_capacity(problems.len());
    for (c, chunk) in problems.chunks(CHUNK).enumerate() {
        let done: Vec<Response> = ctx.item(&format!("chunk-{c}"), chunk.len() as u64, || {
            answer(chunk, template, &engine, &ending, benchmark)
        })?;
        responses.extend(done);
    }

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

/// One chunk of questions answered greedily and graded.
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
