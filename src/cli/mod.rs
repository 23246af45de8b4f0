//! Command-line interface: clap commands, exit codes, progress display.

mod bench;
mod device;
mod generate;
mod score;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Declarative experiment orchestrator for Critical Token Fine-tuning.
#[derive(Parser, Debug)]
#[command(name = "cft", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Continue prompts with a model (batched; greedy or sampled).
    Generate(generate::GenerateArgs),
    /// Per-position log-probs, entropies and top-k of a token sequence.
    Score(score::ScoreArgs),
    /// Speed measurements.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Score(args) => score::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
