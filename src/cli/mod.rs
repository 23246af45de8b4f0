//! Command-line interface: clap commands, exit codes, progress display.

mod grade;

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
    /// Grade JSONL responses from stdin: {"benchmark", "response", "answer"} -> {"pred", "correct"}.
    Grade(grade::GradeArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Grade(args) => grade::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
