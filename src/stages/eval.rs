//! `eval`: one model on one benchmark. Greedy accuracy; with sampling, `n` samples per
//! question and Pass@N for N = 1..n (paper §4.3, Figure 2); the mean entropy of the greedy
//! tokens. Every question's outputs are stored (`outputs.jsonl`), so the report can bootstrap
//! over questions and recompute anything without generating again.
//!
//! Questions run in batches of [`BATCH`]; each finished batch is saved, so an interrupted
//! evaluation resumes at the first unfinished batch. Sample `i` of question `idx` draws from
//! its own seed (the sampling seed, `idx` and `i` mixed), so results do not depend on batch
//! composition or on where a run was cut off. On a worker with several GPUs each decodes its
//! share of a wave of batches on its own copy of the model, and a GPU decodes as many batches
//! together as its free memory holds; the items and outputs are the same bytes.

use std::time::Instant;

use burn::prelude::Backend;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::annotate::{load_model, read_lines, write_lines};
use super::dataset::Problem;
use super::prompt::{prompt_ids, stop_strings};
use super::{Item, Output, StageCtx, StageError, StageImpl, StageOutput};
use crate::contract::EvalParams;
pub use crate::contract::artifacts::{QuestionOutput, Samples, parse_outputs};
use crate::eval::pass_at::pass_at_curve;
use crate::eval::{Benchmark, grade};
use crate::generate::{Decoding, Ending, Engine, EngineOptions, encode, score};
use crate::manifest::Sampling;

/// Questions per saved item.
pub const BATCH: usize = crate::generate::rows::EVAL_QUESTIONS;

pub struct Eval;

/// What a batch saves.
#[derive(Serialize, Deserialize)]
struct SavedBatch {
    outputs: Vec<QuestionOutput>,
    seconds: f64,
}

/// One JSON object (its time with it).
impl Item for SavedBatch {
    fn encode(&self) -> Result<Vec<u8>, StageError> {
        serde_json::to_vec(self).map_err(|e| StageError::Failed(e.to_string()))
    }

    fn decode(bytes: &[u8], name: &str) -> Result<Self, StageError> {
        serde_json::from_slice(bytes).map_err(|e| StageError::Failed(format!("saved {name}: {e}")))
    }
}

/// Everything a batch needs, resolved once from the params.
pub(crate) struct Setup {
    pub benchmark: Benchmark,
    pub template: crate::manifest::Template,
    pub max_new_tokens: usize,
    pub sampling: Option<Sampling>,
}

/// The grader's benchmark for a benchmark name ([`Benchmark::of_name`]).
pub fn benchmark_of(name: &str) -> Benchmark {
    Benchmark::of_name(name)
}

impl StageImpl for Eval {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, run)
    }
}

fn run<B: Backend>(ctx: &mut StageCtx<'_>, device: &B::Device) -> Result<StageOutput, StageError> {
    let params: EvalParams = ctx.params_as()?;
    let setup = Setup {
        benchmark: benchmark_of(params.grader.as_deref().unwrap_or(&params.benchmark)),
        template: params.template,
        max_new_tokens: params.max_new_tokens as usize,
        sampling: params.sampling,
    };
    let data = ctx.input("dataset")?.clone();
    let problems: Vec<Problem> = read_lines(&ctx.read(&data, "problems.jsonl")?, "problems.jsonl")?;
    let model = load_model::<B>(&ctx.input_model_dir()?, device, ctx.device().load_options())?;
    // The same end rule and prompts as the annotation stages, so a model is prompted and
    // graded the same way where it is annotated and where it is evaluated.
    let ending = Ending::new(
        &model.tokenizer,
        &model.eos_token_ids,
        stop_strings(setup.template),
        setup.max_new_tokens,
    );

    // A batch's rows: its questions' greedy requests and samples. Waves of `per_engine`
    // batches decode together on each engine (one per GPU, each on its own copy of the
    // model); items stay batches of BATCH questions whatever the rows and engines.
    let batch_rows = BATCH * (1 + setup.sampling.as_ref().map_or(0, |s| s.n as usize));
    let rows = decode_rows(ctx, batch_rows, setup.max_new_tokens)?;
    let options = EngineOptions {
        max_batch: rows.unwrap_or(crate::generate::rows::ENGINE),
        ..Default::default()
    };
    let per_engine = rows.map_or(1, |r| (r / batch_rows).max(1));
    let replicas = super::device::replicas::<B>(ctx.devices(), &model.lm, device);
    let engines: Vec<(&crate::model::CausalLm<B>, Engine<'_, B>)> =
        super::device::engine_models(ctx, &model.lm, &replicas)
            .into_iter()
            .map(|lm| (lm, Engine::new(lm, options)))
            .collect();

    let batches: Vec<&[Problem]> = problems.chunks(BATCH).collect();
    ctx.set_total(problems.len() as u64);
    // A share's time is split evenly among its batches.
    let run = |(lm, engine): &(&crate::model::CausalLm<B>, Engine<'_, B>), share: &[&[Problem]]| {
        let started = Instant::now();
        let questions: Vec<Problem> = share.iter().flat_map(|b| b.iter().cloned()).collect();
        let answered = run_batch(lm, engine, &ending, &setup, &questions)?;
        let seconds = started.elapsed().as_secs_f64() / share.len().max(1) as f64;
        Ok(super::device::split_as(answered, share)
            .into_iter()
            .map(|outputs| SavedBatch { outputs, seconds })
            .collect())
    };
    let saved: Vec<SavedBatch> =
        super::device::items_in_waves(ctx, "batch", &batches, &engines, per_engine, run)?;
    let seconds: f64 = saved.iter().map(|b| b.seconds).sum();
    let outputs: Vec<QuestionOutput> = saved.into_iter().flat_map(|b| b.outputs).collect();

    let bytes = write_lines(&outputs)?;
    Ok(StageOutput {
        outputs: vec![("outputs.jsonl".into(), Output::Bytes(bytes))],
        metrics: metrics(&outputs, seconds),
    })
}

/// Rows decoded together, in whole batches of `batch_rows`: a `decode_rows` binding (never in
/// the key) sets them; on a GPU as many as its free memory holds beside the loaded weights
/// (`memory::rows_within`, prompts taken at 512 tokens); `None` (the engine's default) on the
/// CPU. Outputs do not depend on it (each request decodes the same whatever shares its batch).
fn decode_rows(
    ctx: &StageCtx<'_>,
    batch_rows: usize,
    max_new: usize,
) -> Result<Option<usize>, StageError> {
    if let Some(rows) = ctx.bindings().get("decode_rows").and_then(|v| v.as_u64()) {
        return Ok(Some(
            (rows as usize).div_ceil(batch_rows).max(1) * batch_rows,
        ));
    }
    let work = crate::plan::resources::GenerateWork {
        dtype: crate::plan::resources::Dtype::Bf16,
        rows: batch_rows as u64,
        prompt: 512,
        new_tokens: max_new as u64,
        encoded: 0,
        encoded_while_decoding: false,
    };
    let cap = crate::generate::rows::GREEDY_GPU_MAX.max(batch_rows);
    super::greedy::rows_from_free_memory(ctx, work, batch_rows, cap)
}

/// The record's metrics from the per-question outputs.
pub fn metrics(outputs: &[QuestionOutput], seconds: f64) -> Value {
    let n = outputs.len();
    let correct = outputs.iter().filter(|o| o.correct).count();
    let ratio = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
    let entropies: Vec<f64> = outputs.iter().filter_map(|o| o.entropy).collect();
    let tokens: u64 = outputs.iter().map(|o| o.tokens).sum();
    let mut m = json!({
        "accuracy": ratio(correct as f64, n),
        "n_questions": n,
        "correct": correct,
        "mean_entropy": ratio(entropies.iter().sum(), entropies.len()),
        "mean_tokens": ratio(tokens as f64, n),
        "seconds": seconds,
    });
    let counts: Option<Vec<(u64, u64)>> = outputs
        .iter()
        .map(|o| {
            o.samples.as_ref().map(|s| {
                (
                    s.correct.len() as u64,
                    s.correct.iter().filter(|c| **c).count() as u64,
                )
            })
        })
        .collect();
    if let Some(counts) = counts.filter(|c| !c.is_empty()) {
        let curve: serde_json::Map<String, Value> = pass_at_curve(&counts)
            .into_iter()
            .enumerate()
            .map(|(i, p)| ((i + 1).to_string(), json!(p)))
            .collect();
        m["pass_at"] = Value::Object(curve);
    }
    m
}

/// The seed of sample `i` of question `idx`: SplitMix-style mixing, so neighbouring
/// questions do not share streams.
pub fn sample_seed(seed: u64, idx: u64, i: u64) -> u64 {
    let mut z =
        seed ^ idx.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^ (z >> 31)
}

/// Greedy (and sampled) responses of some questions, graded: one `generate` call on `engine`
/// (which decodes on `lm`), then one pass over each greedy response for its entropy.
pub(crate) fn run_batch<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    engine: &Engine<'_, B>,
    ending: &Ending<'_>,
    setup: &Setup,
    batch: &[Problem],
) -> Result<Vec<QuestionOutput>, StageError> {
    let fail = |e: crate::generate::GenerateError| StageError::Failed(format!("generate: {e}"));
    let graded = |tokens: &[u32]| {
        ending
            .graded_text(tokens)
            .map_err(|e| StageError::Failed(format!("decode: {e}")))
    };
    let prompts: Vec<Vec<u32>> = batch
        .iter()
        .map(|p| prompt_ids(setup.template, &p.question, ending.tokenizer()))
        .collect::<Result<_, _>>()?;
    let n_samples = setup.sampling.as_ref().map_or(0, |s| s.n as usize);
    let mut requests = Vec::new();
    for (p, ids) in batch.iter().zip(&prompts) {
        for i in 0..=n_samples {
            let decoding = match (&setup.sampling, i) {
                (Some(s), i) if i > 0 => Decoding::Sample {
                    temperature: s.temperature as f32,
                    top_p: s.top_p as f32,
                    top_k: s.top_k as usize,
                    seed: sample_seed(s.seed, p.idx, i as u64 - 1),
                },
                _ => Decoding::Greedy,
            };
            let mut r = ending.request(ids.clone());
            r.decoding = decoding;
            requests.push(r);
        }
    }
    let completions = engine.generate(requests).map_err(fail)?;

    // Entropy of each greedy token's distribution: one pass over prompt + response.
    let per_question = n_samples + 1;
    let sequences: Vec<Vec<u32>> = prompts
        .iter()
        .enumerate()
        .map(|(q, ids)| [ids.as_slice(), &completions[q * per_question].tokens].concat())
        .collect();
    let encoded = encode(lm, &sequences).map_err(fail)?;

    let mut out = Vec::with_capacity(batch.len());
    for (q, p) in batch.iter().enumerate() {
        let ids = &prompts[q];
        let greedy = &completions[q * per_question];
        let text = graded(&greedy.tokens)?;
        let verdict = grade(setup.benchmark, &text, &p.gold);
        let entropy = if greedy.tokens.is_empty() {
            None
        } else {
            let e = &encoded[q];
            let scores = score(e.logits.clone(), &sequences[q], 0, false).map_err(fail)?;
            let generated = &scores[ids.len() - 1..sequences[q].len() - 1];
            Some(generated.iter().map(|s| s.entropy as f64).sum::<f64>() / generated.len() as f64)
        };
        let samples = match setup.sampling {
            None => None,
            Some(_) => {
                let mut preds = Vec::with_capacity(n_samples);
                let mut correct = Vec::with_capacity(n_samples);
                for c in &completions[q * per_question + 1..(q + 1) * per_question] {
                    let v = grade(setup.benchmark, &graded(&c.tokens)?, &p.gold);
                    preds.push(v.pred);
                    correct.push(v.correct);
                }
                Some(Samples { preds, correct })
            }
        };
        out.push(QuestionOutput {
            idx: p.idx,
            response: text,
            tokens: greedy.tokens.len() as u64,
            pred: verdict.pred,
            correct: verdict.correct,
            entropy,
            samples,
        });
    }
    Ok(out)
}
