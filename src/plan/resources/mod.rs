//! The memory model: for every stage of a plan that holds a model, its peak device and host
//! memory, and whether it fits the memory it is given (`cft plan --resources`, and the check
//! `cft run` makes before it starts anything).
//!
//! Three parts, one concern each: `shape.rs` finds the model's sizes (its `config.json`, the
//! toy family's params, or a built-in table of the paper's models when the weights are not
//! here), `memory.rs` holds the formulas, and this file maps each stage kind to the work it
//! does (its batch rows, lengths, precision and strategy, read from its params and
//! bindings) and judges the result against a [`Budget`].

pub mod memory;
pub mod shape;

use std::path::Path;

use serde_json::Value;

use super::Plan;
use crate::contract::{Kind, PretrainParams, StageSpec, TrainStageParams};
use crate::manifest::{Adapter, Precision};
pub use memory::{Backend, Estimate, GenerateWork, Strategy, Term, TrainWork};
pub use shape::{Dtype, ModelShape, ShapeSource};

/// Prompt tokens the plan assumes for a generating stage: prompts are known only when the
/// stage runs. The Qwen2.5-Math prompt around a GSM8K or MATH question is 100-300 tokens.
pub const PROMPT_TOKENS: u64 = 512;

/// Host memory a worker process holds besides its stage: the binary, the tokenizer, the
/// runtime (measured about 40 MB resident for `cft worker` before a model loads).
pub const PROCESS_BYTES: u64 = 128 << 20;

/// The memory a run has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    pub backend: Backend,
    /// Memory of one GPU (`--gpu-memory`); `None` on the CPU, or when unknown.
    pub device: Option<u64>,
    /// GPUs given (`--gpus`); `zero1` shards over them unless the stage names fewer.
    pub gpus: u64,
    /// Host memory (`--host-memory`, default this machine's `MemTotal`).
    pub host: u64,
}

/// A stage's estimate and its verdict.
#[derive(Clone, Debug)]
pub struct StageMemory {
    pub key: String,
    pub label: String,
    pub kind: Kind,
    /// The model's shape and where it came from, or why it is unknown.
    pub shape: Result<(ModelShape, ShapeSource), String>,
    /// What the stage runs, in words: `bf16, 4 x 2048 tokens, single`.
    pub work: String,
    pub estimate: Option<Estimate>,
    /// Device and host peaks as checked (host includes [`PROCESS_BYTES`]).
    pub device_peak: Option<u64>,
    pub host_peak: Option<u64>,
    /// Empty when it fits; else one line per budget it exceeds.
    pub over: Vec<String>,
    /// What to change, when it does not fit.
    pub advice: Vec<String>,
}

impl StageMemory {
    pub fn fits(&self) -> bool {
        self.over.is_empty()
    }
}

/// Every model-holding stage of `plan` for which `include` is true, in plan order.
pub fn estimate_plan(
    plan: &Plan,
    budget: &Budget,
    include: impl Fn(&StageSpec) -> bool,
) -> Vec<StageMemory> {
    plan.order()
        .into_iter()
        .filter(|s| s.kind.uses_model() && include(s))
        .map(|s| estimate_stage(plan, s, budget))
        .collect()
}

/// One stage's estimate against `budget`.
pub fn estimate_stage(plan: &Plan, spec: &StageSpec, budget: &Budget) -> StageMemory {
    let mut out = StageMemory {
        key: spec.key.clone(),
        label: spec.label.clone(),
        kind: spec.kind,
        shape: model_shape(plan, spec),
        work: String::new(),
        estimate: None,
        device_peak: None,
        host_peak: None,
        over: Vec::new(),
        advice: Vec::new(),
    };
    let Ok((shape, _)) = &out.shape else {
        return out;
    };
    let (estimate, work) = match work_of(plan, spec, shape, budget) {
        Ok(found) => found,
        Err(e) => {
            out.shape = Err(e);
            return out;
        }
    };
    let unified = budget.backend == Backend::Cpu;
    let device = estimate.device_peak();
    let host = estimate.host_peak(unified) + PROCESS_BYTES;
    if let Some(limit) = budget.device.filter(|_| !unified)
        && device > limit
    {
        out.over.push(format!(
            "device: needs {} of the GPU's {}",
            human(device),
            human(limit)
        ));
    }
    if host > budget.host {
        out.over.push(format!(
            "host: needs {} of {} host memory",
            human(host),
            human(budget.host)
        ));
    }
    if !out.over.is_empty() {
        out.advice = advice(spec.kind, &work, budget);
    }
    out.work = work.describe;
    out.device_peak = (!unified).then_some(device);
    out.host_peak = Some(host);
    out.estimate = Some(estimate);
    out
}

/// What a stage's work is, in words and in the terms [`advice`] needs.
struct Work {
    describe: String,
    full_training: bool,
    strategy: Option<Strategy>,
}

/// The model's shape for `spec`: its `model_dir` binding's `config.json` (else a built-in
/// shape), or the toy family's params of its `pretrain` stage (directly, or through the
/// `train` stage whose checkpoint it evaluates).
pub fn model_shape(plan: &Plan, spec: &StageSpec) -> Result<(ModelShape, ShapeSource), String> {
    if let Some(dir) = spec.bindings.get("model_dir").and_then(Value::as_str) {
        let dir = Path::new(dir);
        if let Some(shape) = ModelShape::from_dir(dir)? {
            return Ok((shape, ShapeSource::Config));
        }
        return match ModelShape::builtin(dir) {
            Some((name, shape)) => Ok((shape, ShapeSource::BuiltIn(name))),
            None => Err(format!(
                "model config not found: {}",
                dir.join("config.json").display()
            )),
        };
    }
    if spec.kind == Kind::Pretrain {
        let params = PretrainParams::from_params_value(&spec.label, &spec.params)?;
        return Ok((ModelShape::toy(&params.toy), ShapeSource::Toy));
    }
    for input in spec.inputs.iter().filter_map(|k| plan.get(k)) {
        if matches!(input.kind, Kind::Pretrain | Kind::Train) {
            return model_shape(plan, input);
        }
    }
    Err(format!("stage `{}` names no model", spec.label))
}

/// Reads a stage's params as its kind's struct, the error naming the stage.
trait FromValue: Sized {
    fn from_params_value(label: &str, params: &Value) -> Result<Self, String>;
}

impl<P: crate::contract::Params> FromValue for P {
    fn from_params_value(label: &str, params: &Value) -> Result<Self, String> {
        P::from_params(label, params).map_err(|e| e.to_string())
    }
}

/// `[train] strategy` and `gpus` as the train stage's bindings carry them; absent is
/// `single`, and `zero1` without `gpus` shards over every GPU given.
fn strategy(spec: &StageSpec, budget: &Budget) -> Result<Strategy, String> {
    let named = spec.bindings.get("strategy").and_then(Value::as_str);
    match named.unwrap_or("single") {
        "single" => Ok(Strategy::Single),
        "offload" => Ok(Strategy::Offload),
        "zero1" => {
            let gpus = spec
                .bindings
                .get("gpus")
                .and_then(Value::as_u64)
                .unwrap_or(budget.gpus);
            Ok(Strategy::Zero1 { gpus: gpus.max(1) })
        }
        other => Err(format!(
            "stage `{}`: strategy {other:?} (single, offload, zero1)",
            spec.label
        )),
    }
}

fn precision_dtype(p: Precision) -> Dtype {
    match p {
        Precision::F32 => Dtype::F32,
        Precision::Bf16 => Dtype::Bf16,
        Precision::F16 => Dtype::F16,
    }
}

/// The stored dtype of the model `spec` loads: a trained checkpoint is written in bf16 when
/// it trained in bf16 and in f32 otherwise (`StoreDtype`); a pretrained toy in f32.
fn stored_dtype(plan: &Plan, spec: &StageSpec, shape: &ModelShape) -> Dtype {
    for input in spec.inputs.iter().filter_map(|k| plan.get(k)) {
        match input.kind {
            Kind::Train => {
                return match TrainStageParams::from_params_value(&input.label, &input.params) {
                    Ok(p) if p.hparams.precision == Precision::Bf16 => Dtype::Bf16,
                    _ => Dtype::F32,
                };
            }
            Kind::Pretrain => return Dtype::F32,
            _ => {}
        }
    }
    shape.stored
}

/// The largest weight file of the stage's model directory, when it is there.
fn largest_file(spec: &StageSpec) -> Option<u64> {
    let dir = spec.bindings.get("model_dir").and_then(Value::as_str)?;
    let files = crate::model::load::weight_files(Path::new(dir)).ok()?;
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
        .max()
}

fn param_u64(spec: &StageSpec, key: &str) -> Result<u64, String> {
    spec.params
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("stage `{}`: params have no `{key}`", spec.label))
}

/// The max_new_tokens of the greedy stage `spec` reads (token statistics run over its
/// responses).
fn greedy_new_tokens(plan: &Plan, spec: &StageSpec) -> Result<u64, String> {
    spec.inputs
        .iter()
        .filter_map(|k| plan.get(k))
        .find(|s| s.kind == Kind::Greedy)
        .ok_or_else(|| format!("stage `{}` has no greedy input", spec.label))
        .and_then(|g| param_u64(g, "max_new_tokens"))
}

/// The longest response a `score` stage reads: its sample stage's budget, or the greedy pass
/// its transfer stage reads.
fn scored_new_tokens(plan: &Plan, spec: &StageSpec) -> Result<u64, String> {
    for input in spec.inputs.iter().filter_map(|k| plan.get(k)) {
        match input.kind {
            Kind::Sample => {
                if let Some(n) = input
                    .params
                    .get("settings")
                    .and_then(|s| s.get("max_new_tokens"))
                    .and_then(Value::as_u64)
                {
                    return Ok(n);
                }
            }
            Kind::Transfer => return greedy_new_tokens(plan, input),
            _ => {}
        }
    }
    Err(format!(
        "stage `{}` has no sample or transfer input",
        spec.label
    ))
}

/// Maps a stage to its work and estimates it.
fn work_of(
    plan: &Plan,
    spec: &StageSpec,
    shape: &ModelShape,
    budget: &Budget,
) -> Result<(Estimate, Work), String> {
    use crate::generate::rows;
    let backend = budget.backend;
    let inference = backend.inference_dtype(stored_dtype(plan, spec, shape));
    let file = largest_file(spec);
    let generation = |rows: u64, new_tokens: u64, encoded: u64| {
        let work = GenerateWork {
            dtype: inference,
            rows,
            prompt: PROMPT_TOKENS,
            new_tokens,
            encoded,
            encoded_while_decoding: spec.kind == Kind::Rollout,
        };
        let mut e = memory::generate(shape, &work);
        e.load = memory::load_bytes(shape, inference, file);
        let describe = format!(
            "{}, {rows} rows x ({PROMPT_TOKENS} + {new_tokens}) tokens",
            inference.name()
        );
        (
            e,
            Work {
                describe,
                full_training: false,
                strategy: None,
            },
        )
    };
    Ok(match spec.kind {
        Kind::Greedy => generation(rows::GREEDY as u64, param_u64(spec, "max_new_tokens")?, 0),
        Kind::Rollout => {
            let rows = match backend {
                Backend::Cpu => (rows::ROLLOUT_CPU * crate::cft::rollout::cpu_threads()) as u64,
                Backend::Cuda => rows::ROLLOUT_GPU as u64,
            };
            generation(
                rows,
                param_u64(spec, "max_new_tokens")?,
                rows::ROLLOUT_CHUNK as u64,
            )
        }
        Kind::Eval => {
            let samples = spec
                .params
                .get("sampling")
                .and_then(|s| s.get("n"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let questions = rows::EVAL_QUESTIONS as u64;
            let rows = (questions * (samples + 1)).min(rows::ENGINE as u64);
            generation(rows, param_u64(spec, "max_new_tokens")?, questions)
        }
        Kind::TokenStats => {
            let t = PROMPT_TOKENS + greedy_new_tokens(plan, spec)?;
            let mut e = memory::token_stats(shape, inference, t);
            e.load = memory::load_bytes(shape, inference, file);
            (
                e,
                Work {
                    describe: format!("{}, 1 x {t} tokens", inference.name()),
                    full_training: false,
                    strategy: None,
                },
            )
        }
        Kind::Pretrain => {
            let p = PretrainParams::from_params_value(&spec.label, &spec.params)?;
            let strategy = strategy(spec, budget)?;
            let work = TrainWork {
                precision: backend.inference_dtype(Dtype::F32),
                micro_batch: p.toy.pretrain.batch_size,
                tokens: p.toy.max_position,
                accumulation: 1,
                lora: None,
                strategy,
            };
            train_estimate(shape, work, None)
        }
        Kind::Train => {
            let p = TrainStageParams::from_params_value(&spec.label, &spec.params)?;
            let hp = &p.hparams;
            let micro = hp.micro_batch_size.min(hp.batch_size).max(1);
            let work = TrainWork {
                precision: precision_dtype(hp.precision),
                micro_batch: micro,
                tokens: hp.max_length,
                accumulation: hp.batch_size.div_ceil(micro),
                lora: match &p.adapter {
                    Adapter::Full => None,
                    Adapter::Lora {
                        rank,
                        target_modules,
                        ..
                    } => Some((*rank, target_modules.clone())),
                },
                strategy: strategy(spec, budget)?,
            };
            train_estimate(shape, work, file)
        }
        Kind::Grpo => grpo_estimate(spec, shape, file)?,
        // §5.1: waves of the engine's rows of samples.
        Kind::Sample => {
            let new_tokens = spec
                .params
                .get("settings")
                .and_then(|s| s.get("max_new_tokens"))
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("stage `{}`: params have no max_new_tokens", spec.label))?;
            generation(rows::ENGINE as u64, new_tokens, 0)
        }
        // One model at a time (base, then M_cft), one forward pass per response: bounded by
        // the token statistics' pass, which also keeps every layer's attention map.
        Kind::Score => {
            let t = PROMPT_TOKENS + scored_new_tokens(plan, spec)?;
            let mut e = memory::token_stats(shape, inference, t);
            e.load = memory::load_bytes(shape, inference, file);
            (
                e,
                Work {
                    describe: format!("{}, 1 x {t} tokens, one model at a time", inference.name()),
                    full_training: false,
                    strategy: None,
                },
            )
        }
        other => return Err(format!("{other} stages hold no model")),
    })
}

/// A GRPO run holds the policy as a training does (weights, gradients, Adam's state, the
/// activations of a micro-batch of prompt + response) and beside it the reference policy, a
/// second copy of the weights; its rollouts decode with the engine's rows of KV cache while
/// the optimiser state stays. The peak is the larger of the update and the rollout.
fn grpo_estimate(
    spec: &StageSpec,
    shape: &ModelShape,
    file: Option<u64>,
) -> Result<(Estimate, Work), String> {
    let p = crate::contract::GrpoParams::from_params_value(&spec.label, &spec.params)?;
    let s = &p.settings;
    let precision = precision_dtype(s.precision);
    let micro = s.micro_batch.max(1);
    let lora = match &p.adapter {
        Adapter::Full => None,
        Adapter::Lora {
            rank,
            target_modules,
            ..
        } => Some((*rank, target_modules.clone())),
    };
    let trainable = match &lora {
        None => shape.params(),
        Some((rank, targets)) => memory::lora_params(shape, *rank, targets),
    };
    let optimiser = trainable
        * 4
        * if precision == Dtype::F32 || lora.is_some() {
            2
        } else {
            3
        };
    let work = TrainWork {
        precision,
        micro_batch: micro,
        tokens: s.max_prompt_length + s.max_response_length,
        accumulation: (s.mini_batch * s.n).div_ceil(micro),
        lora,
        strategy: Strategy::Single,
    };
    let (mut update, mut described) = train_estimate(shape, work, file);
    let reference = memory::Term {
        name: "reference policy weights",
        bytes: shape.params() * precision.bytes(),
    };
    update.device.push(reference.clone());
    let rows = crate::generate::rows::ENGINE as u64;
    let mut rollout = memory::generate(
        shape,
        &GenerateWork {
            dtype: precision,
            rows,
            prompt: s.max_prompt_length,
            new_tokens: s.max_response_length,
            encoded: 0,
            encoded_while_decoding: false,
        },
    );
    rollout.device.push(reference);
    rollout.device.push(memory::Term {
        name: "Adam m, v (+ f32 master)",
        bytes: optimiser,
    });
    let e = match rollout.device_peak() > update.device_peak() {
        true => {
            rollout.load = update.load;
            rollout.phase = "rollout";
            rollout
        }
        false => update,
    };
    described.describe = format!(
        "{}; rollouts of {rows} rows x ({} + {}) tokens",
        described.describe, s.max_prompt_length, s.max_response_length
    );
    Ok((e, described))
}

fn train_estimate(shape: &ModelShape, work: TrainWork, file: Option<u64>) -> (Estimate, Work) {
    let mut e = memory::train(shape, &work);
    e.load = memory::load_bytes(shape, work.precision, file);
    let adapter = match &work.lora {
        None => "full".to_string(),
        Some((rank, _)) => format!("LoRA r{rank}"),
    };
    let describe = format!(
        "{} {adapter}, {} x {} tokens, {}",
        work.precision.name(),
        work.micro_batch,
        work.tokens,
        work.strategy.name()
    );
    (
        e,
        Work {
            describe,
            full_training: work.lora.is_none(),
            strategy: Some(work.strategy),
        },
    )
}

/// What to change so that a stage fits.
fn advice(kind: Kind, work: &Work, budget: &Budget) -> Vec<String> {
    let mut out = Vec::new();
    match kind {
        Kind::Train | Kind::Pretrain => {
            out.push("a smaller [train] micro_batch_size or max_length".into());
            if work.full_training {
                match work.strategy {
                    Some(Strategy::Single) => out.push(
                        "[train] strategy = \"offload\" (optimiser state in host memory) or \
                         \"zero1\" (sharded over the GPUs)"
                            .into(),
                    ),
                    Some(Strategy::Zero1 { gpus }) => out.push(format!(
                        "more GPUs for zero1 (now {gpus}; --gpus, --devices) or strategy = \"offload\""
                    )),
                    Some(Strategy::Offload) => {
                        out.push("more host memory, or strategy = \"zero1\"".into())
                    }
                    None => {}
                }
                out.push("[adapter] kind = \"lora\"".into());
            }
        }
        Kind::Grpo => {
            out.push("a smaller [rl] micro_batch, max_prompt_length or max_response_length".into());
            if work.full_training {
                out.push("[adapter] kind = \"lora\"".into());
            }
        }
        _ => out.push(
            "a smaller max_new_tokens ([annotate] or [eval]), or a device with more memory".into(),
        ),
    }
    if budget.backend == Backend::Cpu {
        out.push("a GPU (--devices cuda:N)".into());
    }
    out
}

/// Bytes as `1.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// `80GiB`, `512 GB`, `1.5TiB`, `4096` (bytes) → bytes. Binary units (KiB, MiB, GiB, TiB, and
/// the bare K, M, G, T) are powers of 1024; KB, MB, GB, TB powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a size such as 80GiB or 512GB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ));
        }
    };
    Ok((value * scale) as u64)
}

/// This machine's `MemTotal` (`/proc/meminfo`).
pub fn host_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_size("80GiB"), Ok(80 << 30));
        assert_eq!(parse_size("512 GB"), Ok(512_000_000_000));
        assert_eq!(parse_size("1.5TiB"), Ok(3 << 39));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("80 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_size("GiB").is_err());
        assert_eq!(human(80 << 30), "80.0 GiB");
    }
}
