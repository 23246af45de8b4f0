//! Command-line interface: clap commands, exit codes, progress display.

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
pub enum Command {}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {}
}
