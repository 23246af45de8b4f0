//! `cft compare A.toml B.toml ...`: the same methods across manifests (full vs LoRA, model
//! families) in one table per model family, each experiment's rows against its own baseline.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cft::report::{Format, compare::merge, plots::plots, render};

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Two or more manifests.
    #[arg(required = true, num_args = 2..)]
    pub files: Vec<PathBuf>,
    #[arg(long, default_value = "md", value_name = "md|csv|json|html")]
    pub format: Format,
}

pub fn run(cache: &Path, args: CompareArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for file in &args.files {
        let (_, view, plan, _) = super::plan::resolve(cache, file)?;
        reports.push(super::report::report_of(&view, &plan)?);
        // Release the database before opening it for the next manifest.
        drop(view);
    }
    let merged = merge(&reports);
    let figures = match args.format {
        Format::Md | Format::Html => plots(&merged)?,
        _ => Vec::new(),
    };
    print!("{}", render(&merged, args.format, &figures));
    Ok(ExitCode::SUCCESS)
}
