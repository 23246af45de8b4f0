//! `cft bench generate`: tokens per second of batched greedy decoding.
//!
//! Each batch size runs `--batch` prompts of `--prompt-len` fixed pseudo-random ids for
//! `--new-tokens` steps (EOS ignored) after one untimed warm-up; the time includes prefill.
//! `scripts/bench_transformers.py` measures the same thing with transformers on the same
//! weights.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burn::prelude::Backend;
use clap::{Args, Subcommand};

use cft::generate::sampling::SplitMix64;
use cft::generate::{Engine, EngineOptions, Request, naive};
use cft::model::{LanguageModel, LoadOptions};

use super::device::{DeviceArg, OnDevice, dispatch};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Batched greedy decoding throughput.
    Generate(BenchGenerateArgs),
    /// Naive sequential vs batched counterfactual rollouts on the same examples.
    Annotate(super::bench_annotate::BenchAnnotateArgs),
    /// Training tokens per second (forward, backward, AdamW) on random ids.
    Train(super::bench_train::BenchTrainArgs),
    /// Pretrain the toy family and grade it greedily on held-out problems.
    Toy(super::bench_train::BenchToyArgs),
    /// Wall time of a whole manifest from a clean cache with 1, 2, ... workers.
    Jobs(super::bench_jobs::BenchJobsArgs),
    /// Peak resident memory of one training step or generation batch against the memory
    /// model's estimate.
    Memory(super::bench_memory::BenchMemoryArgs),
    /// The f32 matrix-product rate of the backend on this machine (square and decoding
    /// shapes), the peak the other benchmarks read against.
    Gemm(super::bench_gemm::BenchGemmArgs),
}

#[derive(Args, Debug)]
pub struct BenchGenerateArgs {
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,8,64", value_delimiter = ',')]
    pub batch: Vec<usize>,
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    pub new_tokens: usize,
    /// Also time the naive reference decoder (one sequence, full recomputation) at batch 1.
    #[arg(long)]
    pub naive: bool,
    /// Also decode again with drafts of up to N tokens looked up in each row's first output
    /// with every `--draft-error`-th token changed (as a branch that strays from the response
    /// it perturbs and comes back), checking the tokens are the same and timing it.
    #[arg(long, value_name = "N")]
    pub draft: Option<usize>,
    #[arg(long, default_value_t = 6, value_name = "K")]
    pub draft_error: usize,
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: DeviceArg,
}

pub fn run(cache: &std::path::Path, cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Generate(args) => dispatch(args.device, args),
        BenchCommand::Annotate(args) => super::bench_annotate::run(cache, args),
        BenchCommand::Train(args) => super::bench_train::train(args),
        BenchCommand::Toy(args) => super::bench_train::toy(args),
        BenchCommand::Jobs(args) => super::bench_jobs::run(args),
        BenchCommand::Memory(args) => super::bench_memory::run(args),
        BenchCommand::Gemm(args) => super::bench_gemm::run(args),
    }
}

impl OnDevice for BenchGenerateArgs {
    fn run<B: Backend>(self, device: B::Device, load: LoadOptions) -> anyhow::Result<()> {
        let model = LanguageModel::<B>::load(&self.model, &device, load)
            .with_context(|| format!("loading {}", self.model.display()))?;
        let vocab = model.lm.config.vocab_size as u64;
        let mut rng = SplitMix64::new(0);
        let mut prompt = || -> Vec<u32> {
            (0..self.prompt_len.max(1))
                .map(|_| (rng.next_u64() % vocab) as u32)
                .collect()
        };
        let params: usize = burn::module::Module::num_params(&model.lm);
        println!(
            "model {} ({params} parameters), prompt {} tokens, {} new tokens, greedy",
            self.model.display(),
            self.prompt_len,
            self.new_tokens
        );
        for &b in &self.batch {
            let prompts: Vec<Vec<u32>> = (0..b.max(1)).map(|_| prompt()).collect();
            let engine = Engine::new(
                &model.lm,
                EngineOptions {
                    max_batch: b.max(1),
                    top_alternatives: 0,
                    ..Default::default()
                },
            );
            let requests = |n: usize| {
                prompts
                    .iter()
                    .map(|p| Request::<B>::greedy(p.clone(), n))
                    .collect::<Vec<_>>()
            };
            engine.generate(requests(2))?; // warm-up
            let start = Instant::now();
            let out = engine.generate(requests(self.new_tokens))?;
            let seconds = start.elapsed().as_secs_f64();
            let tokens: usize = out.iter().map(|c| c.tokens.len()).sum();
            // Two FLOPs per weight per token (attention over the context not counted): the
            // rate to read against `cft bench gemm`.
            let rate = tokens as f64 / seconds;
            println!(
                "batch {b:>3}: {tokens:>6} tokens in {seconds:>7.3} s = {rate:>9.1} tokens/s \
                 (~{:.1} GFLOP/s)",
                rate * 2.0 * params as f64 / 1e9
            );
            if let Some(max_draft) = self.draft {
                let every = self.draft_error.max(2);
                let drafted = Engine::new(
                    &model.lm,
                    EngineOptions {
                        max_draft,
                        ..engine.options
                    },
                );
                let requests: Vec<Request<'_, B>> = prompts
                    .iter()
                    .zip(&out)
                    .map(|(p, c)| {
                        let mut source = c.tokens.clone();
                        for t in source.iter_mut().skip(every - 1).step_by(every) {
                            *t = (*t + 1) % vocab as u32;
                        }
                        let mut r = Request::<B>::greedy(p.clone(), self.new_tokens);
                        r.draft = Some(Box::new(move |generated: &[u32], max: usize| {
                            let at = generated.len() - 1;
                            cft::generate::draft::lookup(&source, generated, at, max).to_vec()
                        }));
                        r
                    })
                    .collect();
                let start = Instant::now();
                let again = drafted.generate(requests)?;
                let seconds = start.elapsed().as_secs_f64();
                let same = again.iter().zip(&out).all(|(a, c)| a.tokens == c.tokens);
                let s = drafted.draft_stats();
                println!(
                    "  with drafts of up to {max_draft} (every {every}th source token wrong): \
                     {seconds:>7.3} s = {:>9.1} tokens/s, {} steps ({} drafted), {} of {} \
                     draft tokens stood, same tokens: {same}",
                    tokens as f64 / seconds,
                    s.steps,
                    s.drafted_steps,
                    s.accepted,
                    s.proposed
                );
                if !same {
                    anyhow::bail!("drafts changed the greedy tokens: a bug, please report it");
                }
            }
        }
        if self.naive {
            let p = prompt();
            let start = Instant::now();
            let out = naive::greedy(&model.lm, &p, self.new_tokens, &[]);
            let seconds = start.elapsed().as_secs_f64();
            println!(
                "naive (batch 1, no cache): {} tokens in {seconds:.3} s = {:.1} tokens/s",
                out.len(),
                out.len() as f64 / seconds
            );
        }
        Ok(())
    }
}
