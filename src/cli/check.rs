//! `cft check`: what `scripts/gpu-check.sh` runs on a machine that has the release binary and
//! the repository's fixtures but neither the test binaries nor (perhaps) Python.
//!
//! - `cft check parity --fixtures DIR --device D`: the comparisons of `tests/model_parity.rs`
//!   and `tests/generate_parity.rs` (the same `cft::parity` code, the same tolerances) on any
//!   device, one line per family and check, exit 1 if any fails.
//! - `cft check make-model DIR --shape S`: a random model of a benchmark shape written without
//!   transformers, for machines that lack it (the script prefers transformers' own).
//! - `cft check bytes --model DIR`: digests of the CPU backend's logits, decoding and training
//!   on that model, which must not depend on the CPU's instruction-set extensions or on the
//!   thread count ([`super::check_bytes`]).

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::prelude::Backend;
use clap::{Args, Subcommand, ValueEnum};

use cft::model::LoadOptions;
use cft::parity::{CHECKS, FAMILIES, check_family};
use cft::train::scratch::{ToyArch, write_random_model};

use super::device::{DeviceArg, OnDevice, dispatch};

#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// Logits, greedy and batched generation and scores of the fixture models against
    /// transformers' saved outputs, on the chosen device.
    Parity(CheckParityArgs),
    /// Write a random model of a benchmark shape (tokenizer copied from a fixture).
    MakeModel(MakeModelArgs),
    /// Digests of the logits, decoding and training steps the CPU computes for a model:
    /// equal digests on two machines mean equal bytes.
    Bytes(super::check_bytes::CheckBytesArgs),
}

pub fn run(cmd: CheckCommand) -> anyhow::Result<()> {
    match cmd {
        CheckCommand::Parity(args) => dispatch(args.device, args),
        CheckCommand::MakeModel(args) => make_model(&args),
        CheckCommand::Bytes(args) => super::check_bytes::run(args),
    }
}

#[derive(Args, Debug)]
pub struct CheckParityArgs {
    /// The fixture directories' parent (one sub-directory per family).
    #[arg(long, value_name = "DIR", default_value = "tests/fixtures/models")]
    pub fixtures: PathBuf,
    /// Families to check, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = FAMILIES.map(String::from))]
    pub families: Vec<String>,
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: DeviceArg,
}

impl OnDevice for CheckParityArgs {
    fn run<B: Backend>(self, device: B::Device, load: LoadOptions) -> anyhow::Result<()> {
        if !self.fixtures.is_dir() {
            bail!(
                "--fixtures {}: no such directory (run from the repository root, or give the \
                 path of tests/fixtures/models)",
                self.fixtures.display()
            );
        }
        println!(
            "parity with transformers on {} ({}), tolerance {:.0e} (top-k probabilities {:.0e})",
            self.device,
            self.fixtures.display(),
            cft::parity::TOLERANCE,
            cft::parity::PROB_TOLERANCE
        );
        let mut failed = 0;
        for family in &self.families {
            let dir = self.fixtures.join(family);
            match check_family::<B>(&dir, &device, load) {
                Ok(checks) => {
                    for (name, c) in checks {
                        let verdict = if c.passed() { "PASS" } else { "FAIL" };
                        println!(
                            "{family:<8} {name:<8} max |diff| {:.2e}  {verdict}",
                            c.worst
                        );
                        for m in c.mismatches.iter().take(5) {
                            println!("    {m}");
                        }
                        if c.mismatches.len() > 5 {
                            println!("    ... {} more", c.mismatches.len() - 5);
                        }
                        failed += usize::from(!c.passed());
                    }
                }
                Err(e) => {
                    for name in CHECKS {
                        println!("{family:<8} {name:<8} error  FAIL");
                    }
                    println!("    {:#}", anyhow::Error::from(e));
                    failed += CHECKS.len();
                }
            }
        }
        if failed > 0 {
            bail!("{failed} parity check(s) failed on {}", self.device);
        }
        Ok(())
    }
}

/// The benchmark shapes. `scripts/bench_transformers.py --make DIR --shape S` writes the same
/// ones with transformers.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum Shape {
    /// The quickstart's toy model: Llama layout, hidden 128, 4 layers, 4 heads, intermediate
    /// 384, vocab 512 (~0.9M parameters; the fixture's tokenizer is copied, so only random ids
    /// below 512 make sense: `cft bench train` uses those).
    Toy,
    /// Qwen2 layout, hidden 256, 4 layers, 8 heads / 4 KV heads, vocab 2048 (~3.7M parameters).
    Tiny,
    /// Qwen2.5-0.5B's shape: hidden 896, 24 layers, 14 heads / 2 KV heads, intermediate 4864,
    /// vocab 151936, tied embeddings (~494M parameters).
    #[value(name = "qwen2.5-0.5b")]
    Qwen25_05b,
    /// A Llama layout of ~135M parameters (SmolLM-135M's shape): hidden 576, 30 layers, 9 heads
    /// / 3 KV heads, intermediate 1536, vocab 49152, tied embeddings.
    #[value(name = "135m")]
    M135,
}

#[derive(Args, Debug)]
pub struct MakeModelArgs {
    /// Where to write the model (created; files in it are overwritten).
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value = "tiny")]
    pub shape: Shape,
    /// The fixture whose tokenizer files are copied.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "tests/fixtures/models/qwen2"
    )]
    pub tokenizer: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn make_model(args: &MakeModelArgs) -> anyhow::Result<()> {
    let (family, hidden, layers, heads, kv, intermediate, vocab) = match args.shape {
        Shape::Toy => ("llama", 128, 4, 4, 4, 384, 512),
        Shape::Tiny => ("qwen2", 256, 4, 8, 4, 768, 2048),
        Shape::Qwen25_05b => ("qwen2", 896, 24, 14, 2, 4864, 151_936),
        Shape::M135 => ("llama", 576, 30, 9, 3, 1536, 49_152),
    };
    let arch = ToyArch {
        architecture: family.into(),
        hidden_size: hidden,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        intermediate_size: intermediate,
        max_position: 2048,
        vocab_size: vocab,
    };
    std::fs::create_dir_all(&args.dir).with_context(|| format!("{}", args.dir.display()))?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        let from = args.tokenizer.join(name);
        std::fs::copy(&from, args.dir.join(name))
            .with_context(|| format!("--tokenizer {}: copying {name}", args.tokenizer.display()))?;
    }
    // The fixture's EOS and padding ids (2 and 0), as transformers' benchmark model has them.
    write_random_model(&args.dir, &arch, vocab, (2, 0), args.seed)
        .with_context(|| format!("writing {}", args.dir.display()))?;
    let shape = args
        .shape
        .to_possible_value()
        .map(|v| v.get_name().to_string());
    println!(
        "wrote {}: {} shape, random weights (seed {})",
        args.dir.display(),
        shape.unwrap_or_default(),
        args.seed
    );
    Ok(())
}
