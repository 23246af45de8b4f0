//! `sample` (paper §5.1): every training question the greedy pass answered wrongly is sampled
//! (`[sample]`: temperature 1, no truncation, by default) until an answer is correct or the
//! attempts run out (paper: 100). The first correct sample of each question joins the
//! training data of the methods with `responses = "greedy+sampled"`.
//!
//! Attempt `a` of question `idx` draws from its own seed (`[sample] seed`, `idx` and `a`
//! mixed, as the evaluation's samples do), and a question's answer is its lowest-numbered
//! correct attempt. Attempts decode in waves as wide as the engine's batch, so a wave may
//! draw attempts beyond the first correct one; they are not counted, and the outputs are the
//! same whatever the wave width, the batch or where a run was cut off. Questions run in items
//! of [`CHUNK`]; each finished item is saved.

use std::time::Instant;

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::contract::SampleParams;
use crate::eval::grade;
use crate::generate::{Decoding, Ending, Engine, EngineOptions};

use super::annotate::{Response, decode_each, load_model, read_lines, write_lines};
use super::eval::{benchmark_of, sample_seed};
use super::prompt::stop_strings;
use super::{Item, Output, StageCtx, StageError, StageImpl, StageOutput};

/// Questions per saved item.
pub const CHUNK: usize = 16;

/// Rows one wave decodes unless a `decode_rows` binding (never in the key) says otherwise:
/// the engine's default batch.
const ROWS: usize = crate::generate::rows::ENGINE;

pub struct Sample;

impl StageImpl for Sample {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, run)
    }
}

/// One question's resampling (`attempts.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempts {
    pub idx: u64,
    /// Attempts used: the number of the first correct one, or the limit.
    pub attempts: u64,
    pub solved: bool,
    /// The graded answer of each attempt counted, in order (the last one correct when solved).
    pub preds: Vec<String>,
}

/// What an item saves.
#[derive(Serialize, Deserialize)]
struct SavedChunk {
    responses: Vec<Response>,
    attempts: Vec<Attempts>,
    /// Samples decoded, counted or not.
    samples: u64,
}

impl Item for SavedChunk {
    fn encode(&self) -> Result<Vec<u8>, StageError> {
        serde_json::to_vec(self).map_err(|e| StageError::Failed(e.to_string()))
    }

    fn decode(bytes: &[u8], name: &str) -> Result<Self, StageError> {
        serde_json::from_slice(bytes).map_err(|e| StageError::Failed(format!("saved {name}: {e}")))
    }
}

fn run<B: Backend>(ctx: &mut StageCtx<'_>, device: &B::Device) -> Result<StageOutput, StageError> {
    let started = Instant::now();
    let params: SampleParams = ctx.params_as()?;
    let s = &params.settings;
    let benchmark = benchmark_of(&params.benchmark);
    let greedy: Vec<Response> = read_lines(
        &ctx.read(ctx.input("greedy")?, "responses.jsonl")?,
        "responses.jsonl",
    )?;
    let wrong: Vec<Response> = greedy.into_iter().filter(|r| !r.correct).collect();
    let model = load_model::<B>(&ctx.input_model_dir()?, device, ctx.device().load_options())?;
    let ending = Ending::new(
        &model.tokenizer,
        &model.eos_token_ids,
        stop_strings(params.template),
        s.max_new_tokens as usize,
    );
    let rows = decode_rows(ctx, s.max_new_tokens)?;
    let options = EngineOptions {
        max_batch: rows,
        top_alternatives: 0,
        ..Default::default()
    };
    // One engine per GPU the worker holds, each on its own copy of the model.
    let replicas = super::device::replicas::<B>(ctx.devices(), &model.lm, device);
    let engines: Vec<Engine<'_, B>> = super::device::engine_models(ctx, &model.lm, &replicas)
        .into_iter()
        .map(|lm| Engine::new(lm, options))
        .collect();
    let decoding = |idx: u64, a: u64| Decoding::Sample {
        temperature: s.temperature as f32,
        top_p: s.top_p as f32,
        top_k: 0,
        seed: sample_seed(s.seed, idx, a),
    };
    ctx.set_total(wrong.len() as u64);
    let chunks: Vec<&[Response]> = wrong.chunks(CHUNK).collect();
    let run = |engine: &Engine<'_, B>, share: &[&[Response]]| {
        share
            .iter()
            .map(|chunk| {
                resample(
                    chunk, s.attempts, rows, engine, &ending, benchmark, &decoding,
                )
            })
            .collect()
    };
    let saved: Vec<SavedChunk> =
        super::device::items_in_waves(ctx, "chunk", &chunks, &engines, 1, run)?;
    let mut responses = Vec::new();
    let mut attempts = Vec::new();
    let mut samples = 0;
    for chunk in saved {
        responses.extend(chunk.responses);
        attempts.extend(chunk.attempts);
        samples += chunk.samples;
    }
    let solved: Vec<&Attempts> = attempts.iter().filter(|a| a.solved).collect();
    let used: u64 = solved.iter().map(|a| a.attempts).sum();
    Ok(StageOutput {
        outputs: vec![
            (
                "responses.jsonl".into(),
                Output::Bytes(write_lines(&responses)?),
            ),
            (
                "attempts.jsonl".into(),
                Output::Bytes(write_lines(&attempts)?),
            ),
        ],
        metrics: json!({
            "questions": attempts.len(),
            "solved": solved.len(),
            "attempts_mean": (!solved.is_empty()).then(|| used as f64 / solved.len() as f64),
            "limit": s.attempts,
            "samples": samples,
            "seconds": started.elapsed().as_secs_f64(),
        }),
    })
}

/// Rows one wave decodes: a `decode_rows` binding; on a GPU as many as its free memory holds
/// beside the weights (by the memory model, prompts taken at 512 tokens, up to
/// `rows::GREEDY_GPU_MAX`); else the engine's default batch. Outputs do not depend on it.
fn decode_rows(ctx: &StageCtx<'_>, max_new: u64) -> Result<usize, StageError> {
    if let Some(rows) = ctx.bindings().get("decode_rows").and_then(|v| v.as_u64()) {
        return Ok((rows as usize).max(1));
    }
    let work = crate::plan::resources::GenerateWork {
        dtype: crate::plan::resources::Dtype::Bf16,
        rows: ROWS as u64,
        prompt: 512,
        new_tokens: max_new,
        encoded: 0,
        encoded_while_decoding: false,
    };
    let cap = crate::generate::rows::GREEDY_GPU_MAX;
    Ok(super::greedy::rows_from_free_memory(ctx, work, ROWS, cap)?.unwrap_or(ROWS))
}

/// Samples each question until its lowest-numbered correct attempt is known or `limit`
/// attempts have failed.
fn resample<B: Backend>(
    chunk: &[Response],
    limit: u64,
    rows: usize,
    engine: &Engine<'_, B>,
    ending: &Ending<'_>,
    benchmark: crate::eval::Benchmark,
    decoding: &dyn Fn(u64, u64) -> Decoding,
) -> Result<SavedChunk, StageError> {
    let tokenizer = ending.tokenizer();
    // Per question: the next attempt to draw, and the answer once found.
    let mut next = vec![0u64; chunk.len()];
    let mut found: Vec<Option<(u64, Response)>> = vec![None; chunk.len()];
    // Each attempt's graded answer, by attempt number.
    let mut preds: Vec<Vec<String>> = vec![Vec::new(); chunk.len()];
    let mut samples = 0;
    loop {
        let open: Vec<usize> = (0..chunk.len())
            .filter(|&q| found[q].is_none() && next[q] < limit)
            .collect();
        if open.is_empty() {
            break;
        }
        // The wave: the open questions share the rows evenly, each at least one attempt.
        let per = (rows / open.len()).max(1) as u64;
        let mut requests = Vec::new();
        let mut owners = Vec::new();
        for &q in &open {
            let r = &chunk[q];
            for a in next[q]..(next[q] + per).min(limit) {
                let mut request = ending.request(r.prompt_ids.clone());
                request.decoding = decoding(r.idx, a);
                requests.push(request);
                owners.push((q, a));
            }
        }
        samples += requests.len() as u64;
        let completions = engine
            .generate(requests)
            .map_err(|e| StageError::Failed(format!("generate: {e}")))?;
        for ((q, a), completion) in owners.into_iter().zip(completions) {
            next[q] = next[q].max(a + 1);
            // Attempts after the first correct one (drawn in its wave) do not count.
            if found[q].is_some() {
                continue;
            }
            let r = &chunk[q];
            let text = ending
                .graded_text(&completion.tokens)
                .map_err(|e| StageError::Failed(format!("decode: {e}")))?;
            let verdict = grade(benchmark, &text, &r.gold);
            preds[q].push(verdict.pred.clone());
            if verdict.correct {
                let response_ids = ending.kept(&completion.tokens);
                found[q] = Some((
                    a,
                    Response {
                        idx: r.idx,
                        prompt_ids: r.prompt_ids.clone(),
                        pieces: decode_each(&response_ids, tokenizer),
                        response_ids,
                        text,
                        gold: r.gold.clone(),
                        pred: verdict.pred,
                        correct: true,
                    },
                ));
            }
        }
    }
    let mut responses = Vec::new();
    let mut attempts = Vec::new();
    for ((r, f), preds) in chunk.iter().zip(found).zip(preds) {
        match f {
            Some((a, response)) => {
                attempts.push(Attempts {
                    idx: r.idx,
                    attempts: a + 1,
                    solved: true,
                    preds,
                });
                responses.push(response);
            }
            None => attempts.push(Attempts {
                idx: r.idx,
                attempts: limit,
                solved: false,
                preds,
            }),
        }
    }
    Ok(SavedChunk {
        responses,
        attempts,
        samples,
    })
}
