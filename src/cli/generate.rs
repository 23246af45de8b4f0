//! `cft generate`: continue prompts with the batched engine.
//!
//! Several `--ids` / `--prompt` run as one batch (left-padded, continuous batching beyond
//! `--max-batch`). With `--json`, one line per prompt in input order:
//! `{"prompt_ids": [...], "ids": [generated ids], "text": "..."}`.

use std::path::PathBuf;

use anyhow::Context;
use burn::prelude::Backend;
use clap::Args;
use serde::Serialize;

use cft::generate::{Decoding, Ending, Engine, EngineOptions, Request};
use cft::model::{ChatMessage, LanguageModel, LoadOptions};

use super::device::{DeviceArg, OnDevice, dispatch};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// HF model directory (config.json, safetensors weights, tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// A prompt as comma-separated token ids; repeatable.
    #[arg(long, value_name = "CSV")]
    pub ids: Vec<String>,
    /// A prompt as text (tokenized with the model's tokenizer); repeatable.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Vec<String>,
    /// Wrap each text prompt as a user turn of the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, value_name = "N")]
    pub max_new_tokens: usize,
    /// Greedy decoding (the default when no --temperature is given).
    #[arg(long, conflicts_with_all = ["temperature", "top_p", "top_k"])]
    pub greedy: bool,
    /// Sample with this temperature.
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    #[arg(
        long,
        value_name = "P",
        default_value_t = 1.0,
        requires = "temperature"
    )]
    pub top_p: f32,
    #[arg(long, value_name = "K", default_value_t = 0, requires = "temperature")]
    pub top_k: usize,
    /// Seed of each prompt's sampler (prompt i uses seed + i).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Do not stop at the model's end-of-sequence ids.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Stop once the generated text contains this string; repeatable.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Rows decoded together.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: DeviceArg,
    /// One JSON line per prompt.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Line<'a> {
    prompt_ids: &'a [u32],
    ids: &'a [u32],
    text: String,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    if args.ids.is_empty() && args.prompt.is_empty() {
        anyhow::bail!("give at least one --ids or --prompt");
    }
    dispatch(args.device, args)
}

/// A prompt as given on the command line.
enum Input<'a> {
    Ids(&'a str),
    Text(&'a str),
}

/// `--ids` and `--prompt` in the order they were written (clap keeps each list's own order).
fn inputs_in_order(args: &GenerateArgs) -> Vec<Input<'_>> {
    let mut ids = args.ids.iter();
    let mut texts = args.prompt.iter();
    let mut out = Vec::new();
    for arg in std::env::args() {
        let next = match arg.split('=').next() {
            Some("--ids") => ids.next().map(|s| Input::Ids(s)),
            Some("--prompt") => texts.next().map(|s| Input::Text(s)),
            _ => None,
        };
        out.extend(next);
    }
    // Anything not seen in argv (e.g. parsed from elsewhere) keeps clap's order.
    out.extend(ids.map(|s| Input::Ids(s)));
    out.extend(texts.map(|s| Input::Text(s)));
    out
}

pub fn parse_ids(csv: &str) -> anyhow::Result<Vec<u32>> {
    csv.split(',')
        .map(|t| {
            t.trim()
                .parse::<u32>()
                .with_context(|| format!("bad token id {t:?} in {csv:?}"))
        })
        .collect()
}

impl OnDevice for GenerateArgs {
    fn run<B: Backend>(self, device: B::Device, load: LoadOptions) -> anyhow::Result<()> {
        let model = LanguageModel::<B>::load(&self.model, &device, load)
            .with_context(|| format!("loading {}", self.model.display()))?;
        let vocab = model.lm.config.vocab_size as u32;
        let mut prompts = Vec::new();
        for input in inputs_in_order(&self) {
            let ids = match input {
                Input::Ids(csv) => parse_ids(csv)?,
                Input::Text(text) if self.chat => {
                    let messages = [ChatMessage {
                        role: "user".into(),
                        content: text.into(),
                    }];
                    let rendered = model.tokenizer.apply_chat_template(&messages, true)?;
                    model.tokenizer.encode(&rendered, false)?
                }
                Input::Text(text) => model.tokenizer.encode(text, true)?,
            };
            if ids.is_empty() {
                anyhow::bail!("prompt {} is empty", prompts.len());
            }
            if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
                anyhow::bail!("token id {bad} is outside the vocabulary (size {vocab})");
            }
            prompts.push(ids);
        }
        // `--stop` strings end a response as a template's do (a special token among them ends
        // it as an end token).
        let eos: &[u32] = match self.ignore_eos {
            true => &[],
            false => &model.eos_token_ids,
        };
        let ending = Ending::new(
            &model.tokenizer,
            eos,
            self.stop.clone(),
            self.max_new_tokens,
        );
        let requests = prompts
            .iter()
            .enumerate()
            .map(|(i, ids)| Request {
                prefix: None,
                tokens: ids.clone(),
                max_new_tokens: self.max_new_tokens,
                decoding: match self.temperature {
                    Some(temperature) => Decoding::Sample {
                        temperature,
                        top_p: self.top_p,
                        top_k: self.top_k,
                        seed: self.seed.wrapping_add(i as u64),
                    },
                    None => Decoding::Greedy,
                },
                eos_token_ids: ending.end_ids().to_vec(),
                stop: ending.stop_predicate(Vec::new()),
                draft: None,
            })
            .collect();
        let options = EngineOptions {
            max_batch: self.max_batch,
            top_alternatives: 0,
            ..Default::default()
        };
        let completions = Engine::new(&model.lm, options).generate(requests)?;
        for (prompt, c) in prompts.iter().zip(&completions) {
            let text = model.tokenizer.decode(&c.tokens, true)?;
            if self.json {
                let line = Line {
                    prompt_ids: prompt,
                    ids: &c.tokens,
                    text,
                };
                println!("{}", serde_json::to_string(&line)?);
            } else {
                println!("{text}");
            }
        }
        Ok(())
    }
}
