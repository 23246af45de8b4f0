//! `cft report FILE [--format md|csv|json|html]`: the experiment's tables and plots from the
//! cache alone (no stage runs). Prints one format to stdout and writes every file under
//! `<cache>/reports/<experiment>/`, with the TensorBoard event files of every training and
//! evaluation under its `tensorboard/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cft::cache::{Record, View};
use cft::plan::Plan;
use cft::report::load::{from_store, read_output, tensorboard_from_store};
use cft::report::{Format, Report, files::artifacts, tensorboard, write_files};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The manifest.
    pub file: PathBuf,
    /// What to print: md, csv, json or html (all four are written as files).
    #[arg(long, default_value = "md", value_name = "md|csv|json|html")]
    pub format: Format,
}

pub fn run(cache: &Path, args: ReportArgs) -> anyhow::Result<ExitCode> {
    let (exp, view, plan, _) = super::plan::resolve(cache, &args.file)?;
    let report = report_of(&view, &plan)?;
    let read = |r: &Record, name: &str| read_output(view.store(), r, name);
    let runs = tensorboard_from_store(&plan, view.store(), &read)?;
    drop(view);
    let mut files = artifacts(&report)?;
    files.extend(tensorboard::files(&runs));
    let dir = cache.join("reports").join(&exp.name);
    // Figures and runs of an earlier report that this one no longer has would otherwise
    // linger (an event file's name has its run's start, so a retrained cell gets a new one).
    for stale in ["plots", "tensorboard"] {
        match std::fs::remove_dir_all(dir.join(stale)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(anyhow::anyhow!("{}: {e}", dir.join(stale).display()));
            }
            _ => {}
        }
    }
    write_files(&dir, &files)?;
    let name = format!("report.{}", extension(args.format));
    if let Some((_, bytes)) = files.iter().find(|(n, _)| *n == name) {
        print!("{}", String::from_utf8_lossy(bytes));
    }
    eprintln!(
        "wrote {} files to {} ({} TensorBoard runs: `tensorboard --logdir {}`)",
        files.len(),
        dir.display(),
        runs.len(),
        dir.join("tensorboard").display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn extension(format: Format) -> &'static str {
    match format {
        Format::Md => "md",
        Format::Csv => "csv",
        Format::Json => "json",
        Format::Html => "html",
    }
}

/// The report of a planned experiment from the records its report stage would read.
pub fn report_of(view: &View, plan: &Plan) -> anyhow::Result<Report> {
    // While a run holds the database, outputs are read from their files (every artifact has
    // one), so a report during a run is the report of what has finished.
    let read = |r: &Record, name: &str| -> Option<Vec<u8>> { read_output(view.store(), r, name) };
    Ok(from_store(plan, view.store(), &read)?)
}
