//! `pretrain`: the built-in toy family, trained from scratch on the synthetic corpus so that
//! the whole pipeline runs on a fresh CPU-only machine. A tokenizer is trained on the corpus,
//! a decoder of the manifest's architecture is initialised at random, and the fine-tuning
//! loop (SFT on `" {solution}<|endoftext|>"` after the `plain` template's
//! `"Question: {question}\nAnswer:"`) runs for the configured steps. The output is an HF directory
//! (`model/...`) like any checkpoint. Resumes like `train` (progress item `state`).

use super::dataset::parse_problems;
use super::train::{model_outputs, run_loop};
use super::{StageCtx, StageError, StageImpl, StageOutput};
use crate::train::checkpoint::StoreDtype;
use burn::backend::Autodiff;
use burn::prelude::Backend;

use crate::contract::PretrainParams;
use crate::model::LanguageModel;
use crate::train::data::Example;
use crate::train::optim::AdamConfig;
use crate::train::scratch::{EOS, PAD, ToyArch, write_random_model, write_tokenizer};
use crate::train::{LastBatch, Normalization, Objective, Schedule, TrainSettings, Trainer};

/// Sequences per forward and backward: a toy model's operations are too small to use more
/// than one core, so a step's micro-batches run side by side instead (`Trainer::with_lanes`,
/// one per core). Fixed, not taken from the machine, so the bytes are the same on any.
const MICRO_BATCH: usize = 8;

pub struct Pretrain;

fn fail(e: impl std::fmt::Display) -> StageError {
    StageError::Failed(e.to_string())
}

/// The `plain` template's prompt and the solution that follows it (with its leading space).
fn document(question: &str, solution: &str) -> (String, String) {
    (
        super::prompt::PLAIN.replace("{question}", question),
        format!(" {solution}"),
    )
}

impl StageImpl for Pretrain {
    fn run(&self, ctx: &mut StageCtx<'_>) -> Result<StageOutput, StageError> {
        crate::on_device!(ctx, pretrain_on)
    }
}

/// The stage on backend `B` (training on `Autodiff<B>`; `cft run --device` picks `B`).
fn pretrain_on<B: Backend>(
    ctx: &mut StageCtx<'_>,
    device: &B::Device,
) -> Result<StageOutput, StageError> {
    let PretrainParams { toy } = ctx.params_as()?;
    let arch = ToyArch {
        architecture: toy.architecture,
        hidden_size: toy.hidden_size as usize,
        num_layers: toy.num_layers as usize,
        num_heads: toy.num_heads as usize,
        num_kv_heads: toy.num_kv_heads as usize,
        intermediate_size: toy.intermediate_size as usize,
        max_position: toy.max_position as usize,
        vocab_size: toy.vocab_size as usize,
    };
    let p = toy.pretrain;

    // 1. the corpus
    let corpus = ctx.input("dataset")?.clone();
    let problems = parse_problems(&ctx.read(&corpus, "problems.jsonl")?)?;
    let documents: Vec<(String, String)> = problems
        .iter()
        .map(|q| document(&q.question, q.solution.as_deref().unwrap_or(&q.gold)))
        .collect();
    let texts: Vec<String> = documents.iter().map(|(p, a)| format!("{p}{a}")).collect();

    // 2. tokenizer, config and random weights, written as an HF directory
    let base = ctx.temp_path();
    std::fs::create_dir_all(&base).map_err(fail)?;
    let vocab = write_tokenizer(&base, &texts, arch.vocab_size).map_err(fail)?;
    let tokenizer = crate::model::TextTokenizer::from_dir(&base).map_err(fail)?;
    let id = |t: &str| {
        tokenizer
            .token_id(t)
            .ok_or_else(|| fail(format!("tokenizer lacks {t}")))
    };
    let (eos, pad) = (id(EOS)?, id(PAD)?);
    write_random_model(&base, &arch, vocab, (eos, pad), p.seed).map_err(fail)?;
    let device = device.clone();
    let lm = LanguageModel::<Autodiff<B>>::load(&base, &device, ctx.device().load_options())
        .map_err(fail)?;

    // 3. the solution's tokens carry the loss, given the question (as in fine-tuning); the
    // questions' names and numbers are unpredictable, and fitting them slows learning to answer
    let mut examples = Vec::with_capacity(texts.len());
    for (q, (prompt, answer)) in problems.iter().zip(&documents) {
        let prompt = lm.tokenizer.encode(prompt, false).map_err(fail)?;
        let mut answer = lm.tokenizer.encode(answer, false).map_err(fail)?;
        answer.push(eos);
        examples.push(
            Example::new(q.idx, &prompt, &answer, None, None, arch.max_position).map_err(fail)?,
        );
    }
    let settings = TrainSettings {
        objective: Objective::Sft,
        batch_size: p.batch_size as usize,
        micro_batch_size: (p.batch_size as usize).min(MICRO_BATCH),
        normalization: Normalization::Batch,
        last_batch: LastBatch::Short,
        total_steps: p.steps,
        schedule: Schedule::new("cosine", p.learning_rate, p.warmup_ratio, p.steps, 0.0)
            .map_err(fail)?,
        adam: AdamConfig::torch_adamw(),
        grad_clip: 1.0,
        seed: p.seed,
        pad_id: pad,
    };
    let mut trainer = Trainer::new(lm.lm, settings, examples, device)
        .map_err(fail)?
        .with_lanes(super::device::cpu_lanes(ctx));
    let mut metrics = run_loop(ctx, &mut trainer)?;
    metrics["vocab_size"] = vocab.into();
    let outputs = model_outputs(ctx, &base, &trainer.model, StoreDtype::F32)?;
    std::fs::remove_dir_all(&base).map_err(fail)?;
    Ok(StageOutput { outputs, metrics })
}
