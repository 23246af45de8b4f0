//! `cft score`: per-position statistics of a token sequence, one JSON line per position:
//! `{"pos", "token", "next_logprob" (null at the last position), "entropy" (nats), "top":
//! [[id, prob], ...], "logits" (only with --logits)}`.

use std::path::PathBuf;

use anyhow::Context;
use burn::prelude::Backend;
use clap::Args;

use cft::generate::{encode, score};
use cft::model::{LanguageModel, LoadOptions};

use super::device::{DeviceArg, OnDevice, dispatch};
use super::generate::parse_ids;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The sequence as comma-separated token ids.
    #[arg(
        long,
        value_name = "CSV",
        conflicts_with = "text",
        required_unless_present = "text"
    )]
    pub ids: Option<String>,
    /// The sequence as text (tokenized with the model's tokenizer).
    #[arg(long, value_name = "TEXT")]
    pub text: Option<String>,
    /// How many most likely next tokens to list per position.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub top: usize,
    /// Also print the raw logits of every position.
    #[arg(long)]
    pub logits: bool,
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: DeviceArg,
    /// One JSON line per position.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    dispatch(args.device, args)
}

impl OnDevice for ScoreArgs {
    fn run<B: Backend>(self, device: B::Device, load: LoadOptions) -> anyhow::Result<()> {
        let model = LanguageModel::<B>::load(&self.model, &device, load)
            .with_context(|| format!("loading {}", self.model.display()))?;
        let ids = match (&self.ids, &self.text) {
            (Some(csv), _) => parse_ids(csv)?,
            (None, Some(text)) => model.tokenizer.encode(text, true)?,
            (None, None) => anyhow::bail!("give --ids or --text"),
        };
        if ids.is_empty() {
            anyhow::bail!("the sequence is empty");
        }
        let vocab = model.lm.config.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
            anyhow::bail!("token id {bad} is outside the vocabulary (size {vocab})");
        }
        let encoded = encode(&model.lm, std::slice::from_ref(&ids))?;
        let Some(first) = encoded.into_iter().next() else {
            anyhow::bail!("nothing was encoded");
        };
        for row in score(first.logits, &ids, self.top, self.logits)? {
            if self.json {
                println!("{}", serde_json::to_string(&row)?);
            } else {
                let next = row
                    .next_logprob
                    .map_or("-".to_string(), |l| format!("{l:.4}"));
                println!(
                    "{:>5} {:>8} next_logprob {next:>9} entropy {:.4}",
                    row.pos, row.token, row.entropy
                );
            }
        }
        Ok(())
    }
}
