//! `cft check bytes`: digests of what the CPU backend computes for a model directory: the
//! logits of an encoded batch, greedy decoding with its alternatives, seeded sampling, and
//! the weights after a few training steps (full fine-tuning, f32, AdamW with clipping). Two
//! machines, or one machine at two thread counts, that print the same digests compute the
//! same bytes. `scripts/isa-check.sh` and `tests/isa.rs` run it natively and under
//! `qemu-x86_64` emulating CPUs without AVX-512 or with other cache geometries.

use std::path::PathBuf;

use anyhow::Context;
use burn::backend::{Autodiff, Flex};
use clap::Args;

use cft::generate::{Completion, Decoding, Engine, EngineOptions, Request, encode};
use cft::model::{LanguageModel, LoadOptions};
use cft::rng::Rng;
use cft::train::optim::AdamConfig;
use cft::train::{LastBatch, Normalization, Objective, Schedule, TrainSettings, Trainer};

use super::bench_train::random_examples;

#[derive(Args, Debug)]
pub struct CheckBytesArgs {
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Prompts decoded (and sequences trained on).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per training sequence; above 512 tokens a batch makes the weight gradients'
    /// matrix products sum over more than 512 terms (where a CPU's cache geometry can change
    /// how they are blocked).
    #[arg(long, default_value_t = 160)]
    pub seq_len: usize,
    /// New tokens per decoded prompt.
    #[arg(long, default_value_t = 12)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 2)]
    pub steps: u64,
}

pub fn run(args: CheckBytesArgs) -> anyhow::Result<()> {
    let device = Default::default();
    let lm = LanguageModel::<Flex>::load(&args.model, &device, LoadOptions::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let vocab = lm.lm.config.vocab_size as u64;
    let mut rng = Rng::new(7);
    let prompts: Vec<Vec<u32>> = (0..args.batch)
        .map(|i| {
            (0..16 + 3 * i)
                .map(|_| (rng.next_u64() % vocab) as u32)
                .collect()
        })
        .collect();
    let mut all = blake3::Hasher::new();
    let mut line = |what: &str, bytes: &[u8]| {
        all.update(what.as_bytes());
        all.update(bytes);
        println!("{what:<10} {}", &blake3::hash(bytes).to_hex()[..16]);
    };

    let encoded = encode(&lm.lm, &prompts)?;
    let mut logits = Vec::new();
    for e in encoded {
        logits.extend(f32_bytes(&e.logits.into_data().to_vec::<f32>()?));
    }
    line("logits", &logits);

    let options = EngineOptions {
        max_batch: args.batch,
        top_alternatives: 3,
        ..Default::default()
    };
    let engine = Engine::new(&lm.lm, options);
    let greedy: Vec<Request<'_, Flex>> = prompts
        .iter()
        .map(|p| Request::greedy(p.clone(), args.new_tokens))
        .collect();
    line("greedy", &completion_bytes(&engine.generate(greedy)?));
    let sampled: Vec<Request<'_, Flex>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut r = Request::greedy(p.clone(), args.new_tokens);
            r.decoding = Decoding::Sample {
                temperature: 1.0,
                top_p: 0.95,
                top_k: 0,
                seed: 100 + i as u64,
            };
            r
        })
        .collect();
    line("sampled", &completion_bytes(&engine.generate(sampled)?));

    let train =
        LanguageModel::<Autodiff<Flex>>::load(&args.model, &device, LoadOptions::default())?;
    let total = args.steps;
    let settings = TrainSettings {
        objective: Objective::Sft,
        batch_size: args.batch,
        micro_batch_size: args.batch,
        normalization: Normalization::Batch,
        last_batch: LastBatch::Short,
        total_steps: total,
        schedule: Schedule::new("constant", 1e-3, 0.0, total, 0.0)?,
        adam: AdamConfig::torch_adamw(),
        grad_clip: 1.0,
        seed: 0,
        pad_id: train.pad_token_id,
    };
    let examples = random_examples(args.batch, args.seq_len, vocab)?;
    let mut trainer = Trainer::new(train.lm, settings, examples, device)?;
    let mut losses = Vec::new();
    while !trainer.is_done() {
        let m = trainer.step();
        losses.extend(m.loss.to_le_bytes());
        losses.extend(m.grad_norm.to_le_bytes());
    }
    line("losses", &losses);
    let mut weights = Vec::new();
    for (name, (_, values)) in cft::train::params::named_values(&trainer.model) {
        weights.extend(name.as_bytes());
        weights.extend(f32_bytes(&values));
    }
    line("weights", &weights);
    println!("{:<10} {}", "all", &all.finalize().to_hex()[..16]);
    Ok(())
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Tokens, log-probabilities and alternatives, as bits.
fn completion_bytes(completions: &[Completion]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in completions {
        for t in &c.tokens {
            out.extend(t.to_le_bytes());
        }
        out.extend(f32_bytes(&c.logprobs));
        for step in &c.alternatives {
            for (id, p) in step {
                out.extend(id.to_le_bytes());
                out.extend(p.to_le_bytes());
            }
        }
    }
    out
}
