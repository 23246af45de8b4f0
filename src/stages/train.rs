//! `train`: fine-tunes the model on D_correct with SFT (Eq. 1), a weighted objective (CFT,
//! Eq. 8, or a selection baseline's mask) or DFT, full or LoRA, and outputs an HF model
//! directory (`model/...`; for LoRA also the PEFT adapter under `adapter/...`).
//!
//! Reads the `responses.jsonl` of its `greedy`, `sample` (§5.1) or `transfer` (§5.2) inputs
//! (the lines with `correct == true`, in input and file order) and, for the weighted
//! objective, the `weights.jsonl` of its `criticality`, `selection` or `score` inputs, matched
//! by `idx` (an example weighed twice is an error). How OpenRLHF's SFT trainer (the paper's) differs from
//! the defaults is a setting each: the cosine's floor, Adam's betas, the loss normalisation,
//! the dropped last batch and the appended EOS (see README, "Training as OpenRLHF runs it").
//!
//! Resumes: every `save_every_steps` optimiser steps or `save_every_minutes` (bindings from
//! `[train]`: they change when progress is saved, not what is computed) the training state is
//! streamed into a safetensors file of the work folder and the progress item `state` names it;
//! a restarted run continues from it, on the CPU bit for bit as an uninterrupted run.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::prelude::Backend;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use serde_json::{Value, json};

use super::annotate::{Response, Weights, read_lines};
use super::{Output, StageCtx, StageError, StageImpl, StageOutput};
use crate::contract::{TrainObjective, TrainStageParams};
use crate::manifest::{
    Adapter, LastBatchRule, LossNormalization, Precision, Strategy as Strategy_,
};
use crate::model::{LanguageModel, LoadOptions};
use crate::train::checkpoint::{StoreDtype, write_model_dir};
use crate::train::data::{EndOfSequence, Example, LastBatch};
use crate::train::lora::{self, LoraSpec};
use crate::train::optim::AdamConfig;
use crate::train::params::named_values;
use crate::train::{
    Normalization, Objective, Schedule, StepMetrics, Strategy, TrainError, TrainSettings, Trainer,
};

pub struct Train;

/// The inputs whose `responses.jsonl` are trained on, in input order: the greedy pass, the
/// sampled answers (§5.1), another model's responses (§5.2).
const RESPONSES: [&str; 3] = ["greedy", "sample", "transfer"];

/// The inputs whose `weights.jsonl` weigh them: rollouts' criticality, a baseline's
/// selection, scores by s_t (or reused masks).
const WEIGHTS: [&str; 3] = ["criticality", "selection", "score"];

fn fail(e: impl std::fmt::Display) -> StageError {
    StageError::Failed(e.to_string())
}

impl StageImpl for Train {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, train_on)
    }
}

/// The stage on backend `B` (training on `Autodiff<B>`; `cft run --device` picks `B`).
fn train_on<B: Backend>(
    ctx: &mut StageCtx<'_>,
    device: &B::Device,
) -> Result<StageOutput, StageError> {
    let params: TrainStageParams = ctx.params_as()?;
    let objective = match params.objective {
        TrainObjective::Sft => Objective::Sft,
        TrainObjective::Dft => Objective::Dft,
        TrainObjective::Weighted => Objective::Weighted,
    };
    let adapter = params.adapter;
    let hp = params.hparams;

    // 1. the model
    let base = ctx.input_model_dir()?;
    let device = device.clone();
    let dtype = training_dtype(hp.precision);
    let load = LoadOptions {
        keep_half: false,
        dtype: Some(dtype),
    };
    let lm = LanguageModel::<Autodiff<B>>::load(&base, &device, load).map_err(fail)?;

    // 2. the data: D_correct (and the sampled or transferred responses of §5), with weights
    // matched by idx
    let mut responses: Vec<Response> = Vec::new();
    for record in ctx
        .inputs()
        .iter()
        .filter(|r| RESPONSES.contains(&r.kind.as_str()))
    {
        let lines: Vec<Response> =
            read_lines(&ctx.read(record, "responses.jsonl")?, "responses.jsonl")?;
        responses.extend(lines);
    }
    let weights: Option<HashMap<u64, Vec<f32>>> = match objective {
        Objective::Weighted => {
            let mut map = HashMap::new();
            for record in ctx
                .inputs()
                .iter()
                .filter(|r| WEIGHTS.contains(&r.kind.as_str()))
            {
                let lines: Vec<Weights> =
                    read_lines(&ctx.read(record, "weights.jsonl")?, "weights.jsonl")?;
                for w in lines {
                    if map.insert(w.idx, w.weights).is_some() {
                        return Err(fail(format!(
                            "example {} has weights from two inputs",
                            w.idx
                        )));
                    }
                }
            }
            if !ctx
                .inputs()
                .iter()
                .any(|r| WEIGHTS.contains(&r.kind.as_str()))
            {
                return Err(fail(
                    "the weighted objective needs a criticality, selection or score input",
                ));
            }
            Some(map)
        }
        _ => None,
    };
    let eos = match hp.append_eos {
        true => Some(end_of_sequence(&lm)?),
        false => None,
    };
    let examples = d_correct(&responses, weights.as_ref(), eos.as_ref(), hp.max_length)?;

    // 3. the settings
    let lora = match &adapter {
        Adapter::Full => None,
        Adapter::Lora {
            rank,
            alpha,
            dropout,
            target_modules,
        } => Some(LoraSpec {
            rank: *rank as usize,
            alpha: *alpha,
            dropout: *dropout,
            target_modules: target_modules.clone(),
        }),
    };
    let model = match &lora {
        None => lm.lm,
        Some(spec) => lora::attach(lm.lm, spec, hp.seed).map_err(fail)?,
    };
    let batch_size = hp.batch_size as usize;
    let last_batch = match hp.last_batch {
        LastBatchRule::Short => LastBatch::Short,
        LastBatchRule::Drop => LastBatch::Drop,
    };
    let normalization = match hp.loss_normalization {
        LossNormalization::MicroBatch => Normalization::MicroBatch,
        LossNormalization::Batch => Normalization::Batch,
        LossNormalization::Dataset => Normalization::Dataset,
    };
    // OpenRLHF cli/train_sft.py: max_steps = epochs * num_update_steps_per_epoch, and the
    // warmup is math.ceil(max_steps * lr_warmup_ratio) of them (Schedule::new).
    let total_steps = hp.epochs * last_batch.steps_per_epoch(examples.len(), batch_size);
    let settings = TrainSettings {
        objective,
        batch_size,
        micro_batch_size: hp.micro_batch_size.min(hp.batch_size) as usize,
        normalization,
        last_batch,
        total_steps,
        schedule: Schedule::new(
            hp.schedule.name(),
            hp.learning_rate,
            hp.warmup_ratio,
            total_steps,
            hp.min_lr_ratio,
        )
        .map_err(fail)?,
        adam: AdamConfig::new(
            hp.optimizer.name(),
            hp.adam_beta1,
            hp.adam_beta2,
            hp.adam_eps,
            hp.weight_decay,
        )
        .map_err(fail)?,
        grad_clip: hp.grad_clip,
        seed: hp.seed,
        pad_id: lm.pad_token_id,
    };
    // A setting that cannot work with this data (batch_size above |D_correct| under
    // last_batch = "drop") is the manifest's to fix.
    let strategy = strategy::<B>(ctx, &device)?;
    let lanes = super::device::cpu_lanes(ctx);
    let mut trainer = Trainer::new(model, settings, examples, device)
        .and_then(|t| t.with_strategy(strategy))
        .map(|t| t.with_lanes(lanes))
        .map_err(|e| match e {
            TrainError::Setting { .. } => StageError::Input(e.to_string()),
            other => fail(other),
        })?;
    let steps = run_loop(ctx, &mut trainer)?;

    // 4. the checkpoint
    let store = match dtype {
        DType::BF16 => StoreDtype::Bf16,
        _ => StoreDtype::F32,
    };
    let mut outputs = model_outputs(ctx, &base, &trainer.model, store)?;
    if let Some(spec) = &lora {
        let dir = ctx.temp_path();
        let names = lora::write_peft(&dir, &named_values(&trainer.model), spec).map_err(fail)?;
        outputs.extend(move_outputs(ctx, &dir, names, "adapter")?);
    }
    Ok(StageOutput {
        outputs,
        metrics: steps,
    })
}

/// The stage's `strategy` binding (`[train] strategy`) on its devices. `zero1`'s ranks are
/// the GPUs its worker holds (the executor gives it `gpus` of them); on the CPU, `gpus`
/// simulated ranks share it (the same update, slower: a check of the sharding, not a
/// speed-up).
fn strategy<B: Backend>(
    ctx: &StageCtx<'_>,
    device: &B::Device,
) -> Result<Strategy<B::Device>, StageError> {
    let name = ctx.bindings()["strategy"].as_str().unwrap_or("single");
    match Strategy_::parse(name) {
        Some(Strategy_::Single) => Ok(Strategy::Single),
        Some(Strategy_::Offload) => Ok(Strategy::Offload),
        Some(Strategy_::Zero1) => {
            let gpus = super::device::gpus::<B>(ctx.devices(), device);
            if gpus.len() > 1 {
                return Ok(Strategy::Zero1(gpus));
            }
            let ranks = ctx.bindings()["gpus"].as_u64().unwrap_or(1).max(1) as usize;
            Ok(Strategy::Zero1(vec![device.clone(); ranks]))
        }
        None => Err(StageError::Input(format!(
            "train.strategy {name:?} is not one of {}",
            Strategy_::NAMES.join(", ")
        ))),
    }
}

/// The training sequences: the correct greedy responses in file order, each with its weights
/// (`weights`: by idx, for the weighted objective) and, under `append_eos`, ending with `eos`.
fn d_correct(
    responses: &[Response],
    weights: Option<&HashMap<u64, Vec<f32>>>,
    eos: Option<&EndOfSequence>,
    max_length: u64,
) -> Result<Vec<Example>, StageError> {
    let mut examples = Vec::new();
    for r in responses.iter().filter(|r| r.correct) {
        let w = match weights {
            Some(map) => Some(
                map.get(&r.idx)
                    .ok_or(TrainError::MissingWeights(r.idx))
                    .map_err(fail)?
                    .as_slice(),
            ),
            None => None,
        };
        let example = Example::new(
            r.idx,
            &r.prompt_ids,
            &r.response_ids,
            w,
            eos,
            max_length as usize,
        );
        examples.push(example.map_err(fail)?);
    }
    if examples.is_empty() {
        return Err(StageError::Input(
            "D_correct is empty: the model answered none of the training questions correctly"
                .into(),
        ));
    }
    Ok(examples)
}

/// What `append_eos` appends: the tokenizer's `eos_token`, which OpenRLHF's SFTDataset appends
/// (`text += " " + tokenizer.eos_token`), else the model's first EOS id; every EOS id of the
/// model counts as an end already there.
fn end_of_sequence<B: Backend>(lm: &LanguageModel<B>) -> Result<EndOfSequence, StageError> {
    let id = lm
        .tokenizer
        .eos_token_id()
        .or_else(|| lm.eos_token_ids.first().copied())
        .ok_or_else(|| {
            StageError::Input(
                "append_eos = true, but the model names no EOS token (tokenizer_config.json \
                 eos_token, config.json or generation_config.json eos_token_id)"
                    .into(),
            )
        })?;
    Ok(EndOfSequence {
        id,
        stops: lm.eos_token_ids.clone(),
    })
}

/// The manifest's `precision`: the dtype the weights train in, on every device. The CPU
/// backend computes half precision by way of f32 (slowly), with the same rounding of weights
/// and activations as a GPU. Softmax, norms, the loss and the optimiser run in f32 either way.
pub(crate) fn training_dtype(precision: Precision) -> DType {
    match precision {
        Precision::F32 => DType::F32,
        Precision::Bf16 => DType::BF16,
        Precision::F16 => DType::F16,
    }
}

/// When a training run saves its resumable state: after `steps` optimiser steps or `minutes`
/// of training since the last save, whichever comes first (0 turns either off). The stage's
/// `save_every_steps` and `save_every_minutes` bindings (`[train]`, never in the key).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cadence {
    pub steps: u64,
    pub minutes: f64,
}

impl Cadence {
    pub fn from_bindings(bindings: &Value) -> Cadence {
        let defaults = crate::manifest::TrainRun::default();
        Cadence {
            steps: bindings["save_every_steps"]
                .as_u64()
                .unwrap_or(defaults.save_every_steps),
            minutes: bindings["save_every_minutes"]
                .as_f64()
                .unwrap_or(defaults.save_every_minutes),
        }
    }

    pub fn due(&self, steps: u64, elapsed: std::time::Duration) -> bool {
        (self.steps > 0 && steps >= self.steps)
            || (self.minutes > 0.0 && elapsed.as_secs_f64() >= self.minutes * 60.0)
    }
}

/// The progress item `state`: which file of the work folder's `state/` holds the state.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedState {
    file: String,
    step: u64,
    bytes: u64,
}

/// Trains to the end, resuming from and saving to the progress item `state` (a small JSON
/// naming a state file, [`crate::train::state`]); returns the metrics for the record.
pub(crate) fn run_loop<B: AutodiffBackend>(
    ctx: &mut StageCtx<'_>,
    trainer: &mut Trainer<B>,
) -> Result<Value, StageError> {
    let cadence = Cadence::from_bindings(ctx.bindings());
    let dir = ctx.state_dir()?;
    let mut log: Vec<StepMetrics> = Vec::new();
    if let Some(bytes) = ctx.saved("state")? {
        let path = match serde_json::from_slice::<SavedState>(&bytes) {
            Ok(saved) => dir.join(saved.file),
            // An item saved by a build that kept the whole state in it: the same safetensors
            // layout, so it is read from a file like any other.
            Err(_) => {
                let path = dir.join("legacy.safetensors");
                crate::cache::work::write_durably(&path, &bytes)?;
                path
            }
        };
        let note = trainer.restore_state(&path).map_err(fail)?;
        log = serde_json::from_str(&note).map_err(fail)?;
    }
    ctx.set_total(trainer.settings.total_steps);
    ctx.advance(trainer.step);
    let start = Instant::now();
    let (mut saved_at, mut saved_step) = (Instant::now(), trainer.step);
    while !trainer.is_done() {
        ctx.check_stop()?;
        log.push(trainer.step());
        ctx.advance(1);
        if cadence.due(trainer.step - saved_step, saved_at.elapsed()) && !trainer.is_done() {
            let file = format!("state-{:08}.safetensors", trainer.step);
            let note = serde_json::to_string(&log).map_err(fail)?;
            let bytes = trainer.save_state(&dir.join(&file), &note).map_err(fail)?;
            let item = SavedState {
                file: file.clone(),
                step: trainer.step,
                bytes,
            };
            ctx.save("state", &serde_json::to_vec(&item).map_err(fail)?)?;
            remove_other_states(&dir, &file);
            (saved_at, saved_step) = (Instant::now(), trainer.step);
        }
    }
    Ok(summarise(&log, start.elapsed().as_secs_f64()))
}

/// Removes the state files the item no longer names (best effort: one left behind is
/// removed with the work folder).
pub(crate) fn remove_other_states(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy() != keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Step metrics thinned to at most 200 entries, plus totals.
pub(crate) fn summarise(log: &[StepMetrics], seconds: f64) -> Value {
    let every = log.len().div_ceil(200).max(1);
    let steps: Vec<Value> = log
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0 || i + 1 == log.len())
        .map(|(_, m)| {
            json!({"step": m.step, "loss": m.loss, "lr": m.lr, "grad_norm": m.grad_norm,
                   "tokens_per_s": m.tokens_per_s, "weighted_fraction": m.weighted_fraction})
        })
        .collect();
    json!({
        "steps": steps,
        "final_loss": log.last().map(|m| m.loss),
        // Every token of every batch, prompts included: the work done, not the share trained
        // on, which is weighted_tokens / response_tokens (`report::analysis::trained_share`).
        "train_tokens": log.iter().map(|m| m.tokens).sum::<u64>(),
        "weighted_tokens": log.iter().map(|m| m.weighted_tokens).sum::<u64>(),
        "response_tokens": log.iter().map(|m| m.response_tokens).sum::<Option<u64>>(),
        "seconds": seconds,
    })
}

/// Writes the trained model as `model/<file>` outputs, one blob per file; LoRA adapters
/// are merged into their weights.
pub(crate) fn model_outputs<B: Backend>(
    ctx: &StageCtx<'_>,
    base: &Path,
    model: &crate::model::CausalLm<B>,
    store: StoreDtype,
) -> Result<Vec<(String, Output)>, StageError> {
    let dir = ctx.temp_path();
    let tensors = lora::merged_values(model);
    let names = write_model_dir(&dir, base, &tensors, store).map_err(fail)?;
    move_outputs(ctx, &dir, names, "model")
}

/// Moves each file of `dir` to its own temporary blob path, as output `<prefix>/<name>`.
pub(crate) fn move_outputs(
    ctx: &StageCtx<'_>,
    dir: &Path,
    names: Vec<String>,
    prefix: &str,
) -> Result<Vec<(String, Output)>, StageError> {
    let mut outputs = Vec::new();
    for name in names {
        let path = ctx.temp_path();
        std::fs::rename(dir.join(&name), &path).map_err(fail)?;
        outputs.push((format!("{prefix}/{name}"), Output::File(path)));
    }
    std::fs::remove_dir(dir).map_err(fail)?;
    Ok(outputs)
}
