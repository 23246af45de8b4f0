//! `cft bench memory`: one real training step (or one generation batch) on the CPU, its
//! peak resident memory next to the memory model's estimate (`plan::resources`).
//!
//! The measurement is the process's high-water mark (`VmHWM`) minus its resident memory
//! just before the model loads: the high-water mark is reset there (`/proc/self/clear_refs`,
//! "5"), so writing a random model first does not count. Each invocation is one
//! measurement in a fresh process, so peaks of different runs never mix.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::flex::FlexDevice;
use burn::backend::{Autodiff, Flex};
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};
use serde_json::json;

use cft::generate::{Engine, EngineOptions, Request};
use cft::model::{LanguageModel, LoadOptions};
use cft::plan::resources::memory::{self, GenerateWork, Strategy, TrainWork};
use cft::plan::resources::{Dtype, Estimate, ModelShape, human};
use cft::rng::Rng;
use cft::train::optim::AdamConfig;
use cft::train::scratch::{EOS, PAD, ToyArch, write_random_model, write_tokenizer};
use cft::train::{LastBatch, Normalization, Objective, Schedule, TrainSettings, Trainer};

#[derive(Args, Debug)]
pub struct BenchMemoryArgs {
    /// The model directory; or `--random`.
    #[arg(long, value_name = "DIR", required_unless_present = "random")]
    pub model: Option<PathBuf>,
    /// A random-weight model written to a temporary directory (removed afterwards): `toy`,
    /// the quickstart's (0.9M parameters), or `135m`, a Llama-shape model of 135M (hidden 576,
    /// 30 layers, 9 heads / 3 KV heads, intermediate 1536, vocabulary 49152).
    #[arg(long, conflicts_with = "model")]
    pub random: Option<RandomModel>,
    /// The random model's layout: llama, qwen2 (QKV biases), qwen3 (per-head QK norms) or
    /// olmo2 (whole-projection QK norms, norms after each sublayer).
    #[arg(long, default_value = "llama")]
    pub family: String,
    #[arg(long, value_name = "train|generate")]
    pub stage: MeasuredStage,
    /// Training: sequences per micro-batch; generation: rows decoded together.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Training: tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Training: micro-batches per optimiser step.
    #[arg(long, default_value_t = 1)]
    pub accumulate: usize,
    /// Training: the dtype the weights train in.
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub precision: PrecisionArg,
    /// Training: where the optimiser state lives: single or offload (on the CPU the host's
    /// share and the device's are the same memory, so the estimate is their sum). zero1's
    /// per-GPU memory needs GPUs: on the CPU its simulated ranks share one copy of the weights.
    #[arg(long, default_value = "single")]
    pub strategy: String,
    /// Training: on burn's `BalancedCheckpointing` autodiff, which recomputes memory-bound
    /// activations in the backward pass (what it saves; no stage trains this way).
    #[arg(long)]
    pub recompute: bool,
    /// Generation: prompt tokens per row.
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// Generation: new tokens per row (EOS ignored).
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// One JSON object: `{"model", "params", "stage", "estimate", "measured", "ratio",
    /// "terms"}` (bytes).
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RandomModel {
    Toy,
    #[value(name = "135m")]
    M135,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MeasuredStage {
    Train,
    Generate,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PrecisionArg {
    F32,
    Bf16,
}

pub fn run(args: BenchMemoryArgs) -> anyhow::Result<()> {
    if let Some(kind) = args.random {
        // Writing the model leaves freed memory resident that the load would reuse unseen:
        // the measurement runs in a fresh process of its own.
        let dir = write_random(kind, &args.family)?;
        let result = measure_in_child(&dir);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        return result;
    }
    let Some(dir) = args.model.clone() else {
        bail!("--model DIR or --random toy|135m");
    };
    let result = measure(&dir, &args);
    let (shape, estimate, measured) = result?;
    let estimated = estimate.host_peak(true);
    let ratio = estimated as f64 / measured.max(1) as f64;
    let stage = match args.stage {
        MeasuredStage::Train => "train",
        MeasuredStage::Generate => "generate",
    };
    let mut terms: Vec<(String, u64)> = estimate
        .device
        .iter()
        .map(|t| (t.name.to_string(), t.bytes))
        .collect();
    terms.push(("loading (host)".into(), estimate.load));
    if args.json {
        let terms: serde_json::Map<String, serde_json::Value> =
            terms.into_iter().map(|(k, v)| (k, json!(v))).collect();
        println!(
            "{}",
            json!({"model": dir.display().to_string(), "params": shape.params(), "stage": stage,
                   "estimate": estimated, "measured": measured, "ratio": ratio, "terms": terms})
        );
        return Ok(());
    }
    println!(
        "{stage}: {} parameters; estimate {} ({estimated} B), measured peak {} ({measured} B): estimate / measured = {ratio:.3}",
        shape.params(),
        human(estimated),
        human(measured)
    );
    for (name, bytes) in terms {
        println!("  {name:<24} {:>12}", human(bytes));
    }
    Ok(())
}

/// This command again, on `dir` instead of `--random`, in a process of its own.
fn measure_in_child(dir: &Path) -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let Some(at) = args.iter().position(|a| a == "--random") else {
        bail!("--random is not on the command line");
    };
    args.splice(
        at..at + 2,
        ["--model".to_string(), dir.display().to_string()],
    );
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(&args)
        .status()
        .context("starting the measuring process")?;
    match status.success() {
        true => Ok(()),
        false => bail!("the measuring process failed ({status})"),
    }
}

/// Loads the model and runs the work, returning the estimate and the measured peak increase.
fn measure(dir: &Path, args: &BenchMemoryArgs) -> anyhow::Result<(ModelShape, Estimate, u64)> {
    let shape = ModelShape::from_dir(dir)
        .map_err(anyhow::Error::msg)?
        .with_context(|| format!("{}: no config.json", dir.display()))?;
    let file = cft::model::load::weight_files(dir)?
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
        .max();
    let device = Default::default();
    let baseline = reset_peak()?;
    let estimate = match args.stage {
        MeasuredStage::Train => {
            let (precision, dtype) = match args.precision {
                PrecisionArg::F32 => (Dtype::F32, DType::F32),
                PrecisionArg::Bf16 => (Dtype::Bf16, DType::BF16),
            };
            let load = LoadOptions {
                keep_half: false,
                dtype: Some(dtype),
            };
            let strategy = match args.strategy.as_str() {
                "single" => Strategy::Single,
                "offload" => Strategy::Offload,
                other => bail!("--strategy {other:?}: expected single or offload"),
            };
            match args.recompute {
                true => train_steps(
                    LanguageModel::<Autodiff<Flex, BalancedCheckpointing>>::load(
                        dir, &device, load,
                    )
                    .with_context(|| format!("loading {}", dir.display()))?,
                    args,
                )?,
                false => train_steps(
                    LanguageModel::<Autodiff<Flex>>::load(dir, &device, load)
                        .with_context(|| format!("loading {}", dir.display()))?,
                    args,
                )?,
            }
            let work = TrainWork {
                precision,
                micro_batch: args.batch as u64,
                tokens: args.seq_len as u64,
                accumulation: args.accumulate as u64,
                lora: None,
                strategy,
            };
            let mut e = memory::train(&shape, &work);
            e.load = memory::load_bytes(&shape, precision, file);
            e
        }
        MeasuredStage::Generate => {
            let lm = LanguageModel::<Flex>::load(dir, &device, LoadOptions::default())
                .with_context(|| format!("loading {}", dir.display()))?;
            generate_batch(&lm, args)?;
            let work = GenerateWork {
                dtype: Dtype::F32,
                rows: args.batch as u64,
                prompt: args.prompt_len as u64,
                new_tokens: args.new_tokens as u64,
                encoded: 0,
                encoded_while_decoding: false,
            };
            let mut e = memory::generate(&shape, &work);
            e.load = memory::load_bytes(&shape, Dtype::F32, file);
            e
        }
    };
    let peak = status_kib("VmHWM:")? * 1024;
    Ok((shape, estimate, peak.saturating_sub(baseline)))
}

/// Two optimiser steps (the second runs with Adam's moments allocated) of `batch ×
/// accumulate` random sequences of `seq_len` tokens.
fn train_steps<B: AutodiffBackend<Device = FlexDevice>>(
    lm: LanguageModel<B>,
    args: &BenchMemoryArgs,
) -> anyhow::Result<()> {
    let vocab = lm.lm.config.vocab_size as u64;
    let n = args.batch * args.accumulate;
    let examples = super::bench_train::random_examples(n, args.seq_len, vocab)?;
    let settings = TrainSettings {
        objective: Objective::Sft,
        batch_size: n,
        micro_batch_size: args.batch,
        normalization: Normalization::Batch,
        last_batch: LastBatch::Short,
        total_steps: 2,
        schedule: Schedule::new("constant", 1e-4, 0.0, 2, 0.0)?,
        adam: AdamConfig::torch_adamw(),
        grad_clip: 1.0,
        seed: 0,
        pad_id: lm.pad_token_id,
    };
    let strategy = match args.strategy.as_str() {
        "offload" => cft::train::Strategy::Offload,
        _ => cft::train::Strategy::Single,
    };
    let mut trainer =
        Trainer::new(lm.lm, settings, examples, FlexDevice)?.with_strategy(strategy)?;
    while !trainer.is_done() {
        trainer.step();
    }
    Ok(())
}

/// One batch of `batch` rows: `prompt_len` random ids each, `new_tokens` greedy steps.
fn generate_batch(lm: &LanguageModel<Flex>, args: &BenchMemoryArgs) -> anyhow::Result<()> {
    let vocab = lm.lm.config.vocab_size as u64;
    let mut rng = Rng::new(0);
    let requests: Vec<Request<'_, Flex>> = (0..args.batch)
        .map(|_| {
            let prompt = (0..args.prompt_len.max(1))
                .map(|_| (rng.next_u64() % vocab) as u32)
                .collect();
            Request::greedy(prompt, args.new_tokens)
        })
        .collect();
    let engine = Engine::new(
        &lm.lm,
        EngineOptions {
            max_batch: args.batch.max(1),
            ..Default::default()
        },
    );
    engine.generate(requests)?;
    Ok(())
}

/// Resets the high-water mark to the current resident memory and returns that (bytes).
pub(crate) fn reset_peak() -> anyhow::Result<u64> {
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting the peak resident memory (/proc/self/clear_refs)")?;
    Ok(status_kib("VmRSS:")? * 1024)
}

/// A `kB` line of `/proc/self/status`.
pub(crate) fn status_kib(key: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("/proc/self/status has no {key}"))
}

/// Writes a random-weight model of `kind` with a small tokenizer into a temporary directory.
fn write_random(kind: RandomModel, family: &str) -> anyhow::Result<PathBuf> {
    let arch = |hidden, layers, heads, kv_heads, intermediate, vocab_size| ToyArch {
        architecture: family.into(),
        hidden_size: hidden,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        intermediate_size: intermediate,
        max_position: 2048,
        vocab_size,
    };
    let arch = match kind {
        RandomModel::Toy => arch(128, 4, 4, 4, 384, 512),
        RandomModel::M135 => arch(576, 30, 9, 3, 1536, 49_152),
    };
    let dir = std::env::temp_dir().join(format!("cft-bench-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let texts = vec!["Question: 12 apples and 30 pears.\nAnswer: 42 #### 42".to_string()];
    write_tokenizer(&dir, &texts, 300)?;
    let tokenizer = cft::model::TextTokenizer::from_dir(&dir)?;
    let id = |t: &str| {
        tokenizer
            .token_id(t)
            .with_context(|| format!("the tokenizer lacks {t}"))
    };
    let (eos, pad) = (id(EOS)?, id(PAD)?);
    write_random_model(&dir, &arch, arch.vocab_size, (eos, pad), 0)?;
    Ok(dir)
}
