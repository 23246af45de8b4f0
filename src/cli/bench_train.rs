//! `cft bench train`: training tokens per second (forward + backward + AdamW step) of a model
//! directory on random token ids; `scripts/bench_train_transformers.py` times the same step
//! with transformers. `cft bench toy`: pretrains the toy family at a given scale through the
//! real `pretrain` stage and reports greedy accuracy on held-out synthetic problems.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::backend::{Autodiff, Flex};
use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde_json::{Value, json};

use cft::generate::{Engine, EngineOptions, Request};
use cft::model::{LanguageModel, LoadOptions};
use cft::rng::Rng;
use cft::train::data::Example;
use cft::train::optim::AdamConfig;
use cft::train::{LastBatch, Normalization, Objective, Schedule, Strategy, TrainSettings, Trainer};

use super::device::{DeviceArg, OnDevice, dispatch};

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Sequences per forward and backward (default: the whole batch).
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Micro-batches run side by side in threads (`Trainer::with_lanes`; default: the
    /// cores rayon uses, as the train and pretrain stages on the CPU).
    #[arg(long)]
    pub lanes: Option<usize>,
    /// Timed optimiser steps (after one untimed warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: u64,
    /// Where the optimiser state lives: single, offload, or zero1:N (N simulated ranks on the
    /// CPU).
    #[arg(long, default_value = "single")]
    pub strategy: String,
    /// Then save the training state to a file and read it back, reporting the time and how
    /// far the process's peak resident memory rose above its resident memory meanwhile.
    #[arg(long)]
    pub save_state: bool,
    /// Where to train (f32 on the CPU; a CUDA device keeps half-precision weights half).
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: DeviceArg,
}

pub fn train(args: BenchTrainArgs) -> anyhow::Result<()> {
    dispatch(args.device, args)
}

impl OnDevice for BenchTrainArgs {
    fn run<B: Backend>(self, device: B::Device, load: LoadOptions) -> anyhow::Result<()> {
        train_on::<Autodiff<B>>(self, device, load)
    }
}

fn train_on<AB: AutodiffBackend>(
    args: BenchTrainArgs,
    device: AB::Device,
    load: LoadOptions,
) -> anyhow::Result<()> {
    let lm = LanguageModel::<AB>::load(&args.model, &device, load)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let vocab = lm.lm.config.vocab_size as u64;
    let params = burn::module::Module::num_params(&lm.lm);
    let examples = random_examples(args.batch, args.seq_len, vocab)?;
    let total = args.steps + 1;
    let settings = TrainSettings {
        objective: Objective::Sft,
        batch_size: args.batch,
        micro_batch_size: args.micro_batch.unwrap_or(args.batch),
        normalization: Normalization::Batch,
        last_batch: LastBatch::Short,
        total_steps: total,
        schedule: Schedule::new("constant", 1e-4, 0.0, total, 0.0)?,
        adam: AdamConfig::torch_adamw(),
        grad_clip: 1.0,
        seed: 0,
        pad_id: lm.pad_token_id,
    };
    let strategy = match args.strategy.as_str() {
        "single" => Strategy::Single,
        "offload" => Strategy::Offload,
        other => match other.strip_prefix("zero1:").map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Strategy::Zero1(vec![device.clone(); n]),
            _ => bail!("--strategy {other:?}: expected single, offload or zero1:N"),
        },
    };
    let lanes = args.lanes.unwrap_or_else(rayon::current_num_threads);
    let mut trainer = Trainer::new(lm.lm, settings, examples, device)?
        .with_strategy(strategy)?
        .with_lanes(lanes);
    trainer.step(); // warm-up
    trainer.timings = Default::default();
    let passes_before = cft::train::pass_seconds();
    let start = Instant::now();
    let mut tokens = 0;
    while !trainer.is_done() {
        tokens += trainer.step().tokens;
    }
    let seconds = start.elapsed().as_secs_f64();
    let passes_after = cft::train::pass_seconds();
    println!(
        "model {} ({params} parameters), batch {} x {} tokens in micro-batches of {}, {lanes} lanes: {tokens} tokens in {seconds:.3} s = {:.1} training tokens/s ({:.1} ms/step)",
        args.model.display(),
        args.batch,
        args.seq_len + 1,
        args.micro_batch.unwrap_or(args.batch),
        tokens as f64 / seconds,
        seconds * 1000.0 / args.steps as f64
    );
    // The step's wall time by phase: the passes' share split between forward and backward
    // by their thread-seconds (with several lanes they overlap).
    let (forward, backward) = (
        passes_after.0 - passes_before.0,
        passes_after.1 - passes_before.1,
    );
    let t = trainer.timings;
    let total = (t.passes_s + t.update_s).max(1e-9);
    let passes = t.passes_s / total;
    let split = (forward + backward).max(1e-9);
    println!(
        "step profile: forward (with the loss) {:.0}%, backward {:.0}% (the passes, adding gradients included, {:.0}%), gradient norm + clip + AdamW {:.0}%",
        100.0 * passes * forward / split,
        100.0 * passes * backward / split,
        100.0 * passes,
        100.0 * t.update_s / total
    );
    if args.save_state {
        save_state(&mut trainer)?;
    }
    Ok(())
}

/// Saves and restores the trainer's state, measuring the rise of peak resident memory above
/// the resident memory before each (Linux: `/proc/self/clear_refs` resets the peak).
fn save_state<AB: AutodiffBackend>(trainer: &mut Trainer<AB>) -> anyhow::Result<()> {
    use super::bench_memory::{reset_peak, status_kib};
    let dir = tempdir()?;
    let path = dir.join("state.safetensors");
    let largest = cft::train::params::trainable(&trainer.model)
        .iter()
        .map(|(_, shape, _)| shape.iter().product::<usize>() * 4)
        .max()
        .unwrap_or(0);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let (before, start) = (reset_peak()?, Instant::now());
    let size = trainer.save_state(&path, "[]")?;
    let (save_s, save_peak) = (start.elapsed().as_secs_f64(), status_kib("VmHWM:")? * 1024);
    let (before_restore, start) = (reset_peak()?, Instant::now());
    trainer.restore_state(&path)?;
    let (restore_s, restore_peak) = (start.elapsed().as_secs_f64(), status_kib("VmHWM:")? * 1024);
    println!(
        "state file {:.1} MiB (largest tensor in f32 {:.1} MiB): save {save_s:.2} s, peak resident +{:.1} MiB over {:.1} MiB; restore {restore_s:.2} s, peak resident +{:.1} MiB over {:.1} MiB",
        mib(size),
        mib(largest as u64),
        mib(save_peak.saturating_sub(before)),
        mib(before),
        mib(restore_peak.saturating_sub(before_restore)),
        mib(before_restore),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `n` training sequences of `seq_len` random ids below `vocab` (seeded), every token
/// trained on.
pub fn random_examples(n: usize, seq_len: usize, vocab: u64) -> anyhow::Result<Vec<Example>> {
    let mut rng = Rng::new(0);
    let examples = (0..n)
        .map(|i| {
            let ids: Vec<u32> = (0..seq_len + 1)
                .map(|_| (rng.next_u64() % vocab) as u32)
                .collect();
            Example::new(i as u64, &[], &ids, None, None, seq_len + 1)
        })
        .collect::<Result<_, _>>()?;
    Ok(examples)
}

#[derive(Args, Debug)]
pub struct BenchToyArgs {
    #[arg(long, default_value_t = 128)]
    pub hidden: u64,
    #[arg(long, default_value_t = 4)]
    pub layers: u64,
    #[arg(long, default_value_t = 4)]
    pub heads: u64,
    #[arg(long, default_value_t = 2000)]
    pub problems: u64,
    #[arg(long, default_value_t = 700)]
    pub steps: u64,
    #[arg(long, default_value_t = 32)]
    pub batch: u64,
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Held-out problems graded.
    #[arg(long, default_value_t = 200)]
    pub eval: u64,
    #[arg(long, default_value_t = 2)]
    pub max_steps: u64,
    /// Cache directory (kept, so the model can be reused); a temporary one when absent.
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

pub fn toy(args: BenchToyArgs) -> anyhow::Result<()> {
    use cft::cache::{Cache, Store};
    use cft::plan::{Plan, StageSpec};
    let tmp = tempdir()?;
    let root = args.cache.clone().unwrap_or(tmp.clone());
    let cache = Cache::open(&root, "bench").context("opening the cache")?;
    let mut plan = Plan::default();
    let corpus = plan.add(StageSpec::new(
        "bench",
        cft::contract::Kind::Dataset,
        cft::contract::Kind::Dataset.version(),
        "corpus".into(),
        json!({"source": "synthetic", "synthetic": {"split": "train", "n": args.problems,
               "seed": 1, "min_steps": 1, "max_steps": args.max_steps}}),
        vec![],
        Value::Null,
    ));
    let toy = json!({"architecture": "llama", "hidden_size": args.hidden, "num_layers": args.layers,
        "num_heads": args.heads, "num_kv_heads": args.heads, "intermediate_size": args.hidden * 3,
        "max_position": 512, "vocab_size": 512, "pretrain": {"steps": args.steps,
        "batch_size": args.batch, "learning_rate": args.lr, "warmup_ratio": 0.03, "seed": 1}});
    plan.add(StageSpec::new(
        "bench",
        cft::contract::Kind::Pretrain,
        cft::contract::Kind::Pretrain.version(),
        "pretrain".into(),
        json!({"toy": toy}),
        vec![corpus],
        Value::Null,
    ));
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let summary = cft::exec::run(
        &plan,
        &cache,
        &cft::exec::Launcher::Threads(&cft::stages::registry()),
        &cft::exec::NoEvents,
        &stop,
        &cft::exec::Options::default(),
    )?;
    if let Some((label, error, _)) = summary.failed.first() {
        bail!("{label}: {error}");
    }
    let train_seconds = start.elapsed().as_secs_f64();
    let record = cache
        .records()?
        .into_iter()
        .find(|r| r.kind == "pretrain")
        .context("no pretrain record")?;
    let dir = root.join("models").join(&record.key);
    std::fs::create_dir_all(&dir)?;
    for (name, out) in &record.outputs {
        if let (Some(rel), cft::cache::OutputRef::Blob { hash, .. }) =
            (name.strip_prefix("model/"), out)
        {
            std::fs::copy(cache.blobs().path(hash), dir.join(rel))?;
        }
    }
    let model = LanguageModel::<Flex>::load(&dir, &Default::default(), LoadOptions::default())?;
    let held_out = cft::toy::problems::generate(1, "test", args.eval, 1, args.max_steps);
    let engine = Engine::new(
        &model.lm,
        EngineOptions {
            max_batch: 64,
            top_alternatives: 0,
            ..Default::default()
        },
    );
    let mut requests = Vec::new();
    for p in &held_out {
        let prompt = format!("Question: {}\nAnswer:", p.question);
        let mut r = Request::<Flex>::greedy(model.tokenizer.encode(&prompt, false)?, 256);
        r.eos_token_ids = model.eos_token_ids.clone();
        requests.push(r);
    }
    let gen_start = Instant::now();
    let completions = engine.generate(requests)?;
    let mut correct = 0;
    for (p, c) in held_out.iter().zip(&completions) {
        let text = model.tokenizer.decode(&c.tokens, true)?;
        let gold = p.answer.rsplit("#### ").next().unwrap_or("").trim();
        let pred = text
            .rsplit("#### ")
            .next()
            .map(|s| s.trim())
            .filter(|_| text.contains("####"));
        if pred == Some(gold) {
            correct += 1;
        }
    }
    println!(
        "toy llama hidden {} x {} layers, {} steps of {} on {} problems: {:.0} s training (final loss {}); greedy accuracy {correct}/{} = {:.1}% on held-out problems ({:.0} s decoding)",
        args.hidden,
        args.layers,
        args.steps,
        args.batch,
        args.problems,
        train_seconds,
        record.metrics["final_loss"],
        held_out.len(),
        100.0 * correct as f64 / held_out.len().max(1) as f64,
        gen_start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cft-bench-toy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
