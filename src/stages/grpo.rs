//! `grpo` (paper §4.4, App. B.2): GRPO from a checkpoint, as verl's trainer runs it. Each
//! step takes `prompt_batch` prompts (a seeded shuffle per epoch, the last short batch
//! dropped, as verl's dataloader does), samples `n` responses per prompt on the batched engine
//! ([`crate::cft::rl`]), rewards each by its data's grader, and updates the policy with
//! [`crate::train::grpo::grpo_step`] (old and reference log-probs once per step, one AdamW
//! step per mini-batch). Before the first step, every `eval_every` steps and after the last,
//! the policy answers the evaluated benchmarks greedily (verl's `test_freq`, with
//! `val_before_train`).
//!
//! Reads its RL datasets' and benchmarks' `problems.jsonl`, and the start: the base model (a
//! `model_dir` binding or a `pretrain` input) or a method's `train` checkpoints, of which it
//! takes the cell `[report] select` picks by the inputs' eval records (one cell: that one).
//! Writes `steps.jsonl` (one line per step: mean reward, entropy, KL, response length, clip
//! fraction, gradient norm), `evals.jsonl` (one line per evaluation) and the final policy
//! as `model/...` (LoRA merged).
//!
//! Resumes per step: every `save_every_steps` steps or `save_every_minutes` (bindings) the
//! policy's trainable weights, Adam's state and the records are streamed into a safetensors
//! file of the work folder; samples are seeded by (seed, step, prompt, sample), so a resumed
//! run is, on the CPU, byte for byte the uninterrupted one.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::prelude::Backend;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::annotate::{read_lines, write_lines};
use super::dataset::Problem;
use super::eval::{Setup, benchmark_of, run_batch};
use super::prompt::{prompt_ids, stop_strings};
use super::train::{Cadence, model_outputs, training_dtype};
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};
use crate::cache::Record;
use crate::cft::rl::{Reward, Sampling, sample_groups, sample_seed};
use crate::contract::{GrpoParams, GrpoStart};
use crate::eval::{Benchmark, grade};
use crate::generate::{Ending, Engine, EngineOptions};
use crate::manifest::Adapter;
use crate::model::{CausalLm, LanguageModel, LoadOptions};
use crate::train::checkpoint::StoreDtype;
use crate::train::grpo::{GrpoSample, GrpoSettings, GrpoUpdate, grpo_step};
use crate::train::lora::{self, LoraSpec};
use crate::train::optim::{AdamConfig, AdamState};

pub struct Grpo;

fn fail(e: impl std::fmt::Display) -> StageError {
    StageError::Failed(e.to_string())
}

impl StageImpl for Grpo {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, grpo_on)
    }
}

/// One line of `steps.jsonl`: a step's records, as verl logs them (token means over the
/// response tokens; `reward`, `response_length`: means over the step's responses).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: u64,
    /// `critic/score/mean`: the share of responses graded correct.
    pub reward: f64,
    /// `actor/entropy`: the policy's entropy over the generated tokens.
    pub entropy: f64,
    /// `actor/kl_loss`: k3 to the starting policy.
    pub kl: f64,
    /// `actor/ppo_kl`.
    pub ppo_kl: f64,
    pub pg_loss: f64,
    /// `actor/pg_clipfrac`.
    pub clip_fraction: f64,
    pub clip_fraction_lower: f64,
    /// `actor/grad_norm` before clipping, the mean over the step's optimiser steps.
    pub grad_norm: f64,
    /// `response_length/mean`, in tokens.
    pub response_length: f64,
    /// Prompts whose responses were all right or all wrong (advantage 0 for each).
    pub solved_or_unsolved: u64,
    pub optimiser_steps: u64,
}

/// One line of `evals.jsonl`: greedy accuracy per evaluated benchmark after `step` steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    /// Benchmark → share correct.
    pub accuracy: BTreeMap<String, f64>,
    /// Benchmark → mean entropy (nats) of the greedy responses' tokens.
    pub entropy: BTreeMap<String, f64>,
}

/// What the state file's note holds: the records so far.
#[derive(Default, Serialize, Deserialize)]
struct Log {
    steps: Vec<StepRecord>,
    evals: Vec<EvalPoint>,
}

/// The progress item `state`: which file of the work folder's `state/` holds the state.
#[derive(Serialize, Deserialize)]
struct SavedState {
    file: String,
    step: u64,
    bytes: u64,
}

/// One RL prompt: its template applied, its grader and gold answer.
struct Prompt {
    ids: Vec<u32>,
    benchmark: Benchmark,
    gold: String,
}

/// The reward of a step's prompts: 1 when the data's grader says the graded text is right.
struct Graders<'a> {
    ending: &'a Ending<'a>,
    prompts: Vec<&'a Prompt>,
}

impl Reward for Graders<'_> {
    fn correct(&self, prompt: usize, response: &[u32]) -> bool {
        let (Ok(text), Some(p)) = (self.ending.graded_text(response), self.prompts.get(prompt))
        else {
            return false;
        };
        grade(p.benchmark, &text, &p.gold).correct
    }
}

/// The start's model directory and, for a method, the chosen cell
/// ([`super::start::chosen_checkpoint`]).
fn start_dir(
    ctx: &StageCtx<'_>,
    params: &GrpoParams,
    rest: &[Record],
) -> Result<(std::path::PathBuf, Option<String>), StageError> {
    match &params.start {
        GrpoStart::Base(_) => Ok((ctx.input_model_dir()?, None)),
        GrpoStart::Method(m) => {
            let (dir, cell) = super::start::chosen_checkpoint(ctx, m, rest)?;
            Ok((dir, Some(cell)))
        }
    }
}

/// The stage on backend `B` (training on `Autodiff<B>`).
fn grpo_on<B: Backend>(
    ctx: &mut StageCtx<'_>,
    device: &B::Device,
) -> Result<StageOutput, StageError> {
    let params: GrpoParams = ctx.params_as()?;
    let s = params.settings.clone();
    let inputs: Vec<Record> = ctx.inputs().to_vec();
    let (nd, ne) = (params.data.len(), params.eval_benchmarks.len());
    if inputs.len() < nd + ne {
        return Err(fail(format!(
            "stage `{}` has {} inputs, fewer than its {} datasets",
            ctx.spec.label,
            inputs.len(),
            nd + ne
        )));
    }
    let problems = |r: &Record| -> Result<Vec<Problem>, StageError> {
        Ok(read_lines(
            &ctx.read(r, "problems.jsonl")?,
            "problems.jsonl",
        )?)
    };
    let mut data: Vec<(Benchmark, Vec<Problem>)> = Vec::new();
    for ((_, bench), r) in params.data.iter().zip(&inputs[..nd]) {
        data.push((benchmark_of(bench), problems(r)?));
    }
    let mut benches: Vec<(String, Benchmark, Vec<Problem>)> = Vec::new();
    for (name, r) in params.eval_benchmarks.iter().zip(&inputs[nd..nd + ne]) {
        let grader = params.eval_graders.get(name).unwrap_or(name);
        benches.push((name.clone(), benchmark_of(grader), problems(r)?));
    }
    let (dir, cell) = start_dir(ctx, &params, &inputs[nd + ne..])?;

    // The policy, and the reference: the starting policy, frozen.
    let dtype = training_dtype(s.precision);
    let load = LoadOptions {
        keep_half: false,
        dtype: Some(dtype),
    };
    let lm = LanguageModel::<Autodiff<B>>::load(&dir, device, load).map_err(fail)?;
    let reference: CausalLm<B> = lm.lm.valid();
    let tokenizer = lm.tokenizer;
    let (eos, pad_id) = (lm.eos_token_ids, lm.pad_token_id);
    let mut policy = match &params.adapter {
        Adapter::Full => lm.lm,
        Adapter::Lora {
            rank,
            alpha,
            dropout,
            target_modules,
        } => {
            let spec = LoraSpec {
                rank: *rank as usize,
                alpha: *alpha,
                dropout: *dropout,
                target_modules: target_modules.clone(),
            };
            lora::attach(lm.lm, &spec, s.seed).map_err(fail)?
        }
    };

    // The prompts, in data order; those longer than max_prompt_length are left out.
    let mut prompts: Vec<Prompt> = Vec::new();
    let mut dropped = 0u64;
    for (benchmark, problems) in &data {
        for p in problems {
            let ids = prompt_ids(params.template, &p.question, &tokenizer)?;
            if ids.len() as u64 > s.max_prompt_length {
                dropped += 1;
                continue;
            }
            prompts.push(Prompt {
                ids,
                benchmark: *benchmark,
                gold: p.gold.clone(),
            });
        }
    }
    let per_epoch = prompts.len() as u64 / s.prompt_batch;
    if per_epoch == 0 {
        return Err(StageError::Input(format!(
            "rl: {} prompts ({dropped} longer than max_prompt_length {} left out) make no batch of prompt_batch = {}",
            prompts.len(),
            s.max_prompt_length,
            s.prompt_batch
        )));
    }
    let mut total = s.epochs * per_epoch;
    if let Some(max) = s.max_steps {
        total = total.min(max);
    }

    let ending = Ending::new(
        &tokenizer,
        &eos,
        stop_strings(params.template),
        s.max_response_length as usize,
    );
    let eval_ending = Ending::new(
        &tokenizer,
        &eos,
        stop_strings(params.eval_template),
        params.eval_max_new_tokens as usize,
    );
    let settings = GrpoSettings {
        clip_low: s.clip_ratio_low as f32,
        clip_high: s.clip_ratio_high as f32,
        clip_c: s.clip_ratio_c as f32,
        kl_coef: s.kl_coef as f32,
        entropy_coeff: s.entropy_coeff as f32,
        temperature: s.temperature as f32,
        norm_by_std: s.norm_adv_by_std,
    };
    let update = GrpoUpdate {
        micro_batch: s.micro_batch as usize,
        mini_batch: (s.mini_batch * s.n) as usize,
        lr: s.learning_rate,
        max_grad_norm: s.grad_clip,
        adam: AdamConfig {
            weight_decay: s.weight_decay,
            ..AdamConfig::torch_adamw()
        },
        max_length: (s.max_prompt_length + s.max_response_length) as usize,
        pad_id,
    };
    let rows = ctx
        .bindings()
        .get("decode_rows")
        .and_then(|v| v.as_u64())
        .map_or(crate::generate::rows::ENGINE, |r| r as usize);
    let sampling = Sampling {
        n: s.n as usize,
        temperature: s.temperature as f32,
        top_p: s.top_p as f32,
        top_k: s.top_k as usize,
        seed: s.seed,
        max_batch: rows,
    };
    let evaluate = |lm: &CausalLm<B>, step: u64| -> Result<EvalPoint, StageError> {
        let engine = Engine::new(
            lm,
            EngineOptions {
                max_batch: rows,
                ..Default::default()
            },
        );
        let mut point = EvalPoint {
            step,
            accuracy: BTreeMap::new(),
            entropy: BTreeMap::new(),
        };
        for (name, benchmark, problems) in &benches {
            let setup = Setup {
                benchmark: *benchmark,
                template: params.eval_template,
                max_new_tokens: params.eval_max_new_tokens as usize,
                sampling: None,
            };
            let mut correct = 0usize;
            let mut entropies = Vec::new();
            for chunk in problems.chunks(super::eval::BATCH) {
                for o in run_batch(lm, &engine, &eval_ending, &setup, chunk)? {
                    correct += usize::from(o.correct);
                    entropies.extend(o.entropy);
                }
            }
            let share = |a: f64, n: usize| if n == 0 { 0.0 } else { a / n as f64 };
            point
                .accuracy
                .insert(name.clone(), share(correct as f64, problems.len()));
            point
                .entropy
                .insert(name.clone(), share(entropies.iter().sum(), entropies.len()));
        }
        Ok(point)
    };

    // Resume.
    let cadence = Cadence::from_bindings(ctx.bindings());
    let state_dir = ctx.state_dir()?;
    let mut log = Log::default();
    let mut adam: AdamState<B> = AdamState::default();
    let mut step = 0u64;
    if let Some(bytes) = ctx.saved("state")? {
        let saved: SavedState = serde_json::from_slice(&bytes).map_err(fail)?;
        let (p, a, at, note) =
            crate::train::grpo::restore_state(&state_dir.join(&saved.file), policy)
                .map_err(fail)?;
        (policy, adam, step) = (p, a, at);
        log = serde_json::from_str(&note).map_err(fail)?;
    }
    ctx.set_total(total);
    ctx.advance(step);
    let started = Instant::now();
    if log.evals.is_empty() && !benches.is_empty() {
        log.evals.push(evaluate(&policy.valid(), 0)?);
    }
    let (mut saved_at, mut saved_step) = (Instant::now(), step);
    while step < total {
        ctx.check_stop()?;
        let epoch = step / per_epoch;
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        crate::rng::Rng::new(sample_seed(s.seed, epoch, u64::MAX, 0)).shuffle(&mut order);
        let at = ((step % per_epoch) * s.prompt_batch) as usize;
        let batch: Vec<&Prompt> = order[at..at + s.prompt_batch as usize]
            .iter()
            .map(|&i| &prompts[i])
            .collect();
        let ids: Vec<Vec<u32>> = batch.iter().map(|p| p.ids.clone()).collect();
        let reward = Graders {
            ending: &ending,
            prompts: batch,
        };
        let groups = sample_groups(
            &policy.valid(),
            &ids,
            &ending,
            &reward,
            sampling,
            step,
            s.norm_adv_by_std,
        )
        .map_err(|e| fail(format!("generate: {e}")))?;
        let mut samples = Vec::new();
        let (mut rewards, mut lengths, mut flat) = (0.0f64, 0usize, 0u64);
        for g in &groups {
            if g.rewards.iter().all(|r| *r == g.rewards[0]) {
                flat += 1;
            }
            for ((response, r), a) in g.responses.iter().zip(&g.rewards).zip(&g.advantages) {
                rewards += *r as f64;
                lengths += response.len();
                samples.push(GrpoSample {
                    prompt: ids[g.prompt].clone(),
                    response: response.clone(),
                    advantage: *a,
                });
            }
        }
        // LoRA's dropout draws from the backend's generator: seeded per step.
        Autodiff::<B>::seed(device, sample_seed(s.seed, step, u64::MAX - 1, 0));
        let (next, m) =
            grpo_step(policy, &reference, &samples, &settings, &update, &mut adam).map_err(fail)?;
        policy = next;
        step += 1;
        let n = samples.len().max(1) as f64;
        let o = m.objective;
        log.steps.push(StepRecord {
            step,
            epoch,
            reward: rewards / n,
            entropy: o.entropy as f64,
            kl: o.kl as f64,
            ppo_kl: o.ppo_kl as f64,
            pg_loss: o.pg_loss as f64,
            clip_fraction: o.clip_fraction as f64,
            clip_fraction_lower: o.clip_fraction_lower as f64,
            grad_norm: m.grad_norm,
            response_length: lengths as f64 / n,
            solved_or_unsolved: flat,
            optimiser_steps: m.optimiser_steps as u64,
        });
        if !benches.is_empty() && (step.is_multiple_of(params.eval_every.max(1)) || step == total) {
            log.evals.push(evaluate(&policy.valid(), step)?);
        }
        ctx.advance(1);
        if step < total && cadence.due(step - saved_step, saved_at.elapsed()) {
            let file = format!("state-{step:08}.safetensors");
            let note = serde_json::to_string(&log).map_err(fail)?;
            let bytes =
                crate::train::grpo::save_state(&state_dir.join(&file), &policy, &adam, step, &note)
                    .map_err(fail)?;
            let item = SavedState {
                file: file.clone(),
                step,
                bytes,
            };
            ctx.save("state", &serde_json::to_vec(&item).map_err(fail)?)?;
            super::train::remove_other_states(&state_dir, &file);
            (saved_at, saved_step) = (Instant::now(), step);
        }
    }

    let store = match dtype {
        DType::BF16 => StoreDtype::Bf16,
        _ => StoreDtype::F32,
    };
    let mut outputs = model_outputs(ctx, &dir, &policy, store)?;
    outputs.push((
        "steps.jsonl".into(),
        Output::Bytes(write_lines(&log.steps)?),
    ));
    outputs.push((
        "evals.jsonl".into(),
        Output::Bytes(write_lines(&log.evals)?),
    ));
    Ok(StageOutput {
        outputs,
        metrics: metrics(
            &log,
            cell,
            prompts.len(),
            dropped,
            started.elapsed().as_secs_f64(),
        ),
    })
}

/// The record's metrics: the steps (thinned to at most 200), every evaluation, the chosen
/// cell, the prompts used.
fn metrics(log: &Log, cell: Option<String>, prompts: usize, dropped: u64, seconds: f64) -> Value {
    let every = log.steps.len().div_ceil(200).max(1);
    let steps: Vec<&StepRecord> = log
        .steps
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0 || i + 1 == log.steps.len())
        .map(|(_, r)| r)
        .collect();
    let mean = |rs: &[StepRecord]| -> Option<f64> {
        (!rs.is_empty()).then(|| rs.iter().map(|r| r.reward).sum::<f64>() / rs.len() as f64)
    };
    // The mean reward of the first and the last fifth of the steps.
    let fifth = log.steps.len().div_ceil(5);
    json!({
        "cell": cell,
        "steps": steps,
        "evals": log.evals,
        "final": log.evals.last().map(|e| &e.accuracy),
        "reward_first": mean(&log.steps[..fifth.min(log.steps.len())]),
        "reward_last": mean(&log.steps[log.steps.len().saturating_sub(fifth)..]),
        "prompts": prompts,
        "dropped_prompts": dropped,
        "seconds": seconds,
    })
}
