//! The report's files: `report.md`, `report.csv`, `report.json`, `report.html` and
//! `plots/<name>.svg|png`, as bytes (the `report` stage's outputs) or written to a folder
//! (`cft report` writes them under `<cache>/reports/<experiment>/`).

use std::path::Path;
use std::str::FromStr;

use super::plots::{Plot, plots, to_png};
use super::{Report, ReportError, csv, html, markdown};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Md,
    Csv,
    Json,
    Html,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "md" | "markdown" => Ok(Format::Md),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            other => Err(format!("unknown format `{other}` (md, csv, json or html)")),
        }
    }
}

pub fn json(report: &Report) -> String {
    // Serialising plain structs of strings and numbers cannot fail.
    let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
    s.push('\n');
    s
}

/// The report in one format.
pub fn render(report: &Report, format: Format, figures: &[Plot]) -> String {
    match format {
        Format::Md => markdown::render(report, figures),
        Format::Csv => csv::render(report),
        Format::Json => json(report),
        Format::Html => html::render(report, figures),
    }
}

/// Every file of the report, by relative path, in a fixed order.
pub fn artifacts(report: &Report) -> Result<Vec<(String, Vec<u8>)>, ReportError> {
    let figures = plots(report)?;
    let mut out = vec![
        (
            "report.md".to_string(),
            render(report, Format::Md, &figures).into_bytes(),
        ),
        (
            "report.csv".to_string(),
            render(report, Format::Csv, &figures).into_bytes(),
        ),
        (
            "report.json".to_string(),
            render(report, Format::Json, &figures).into_bytes(),
        ),
        (
            "report.html".to_string(),
            render(report, Format::Html, &figures).into_bytes(),
        ),
    ];
    for p in &figures {
        out.push((format!("plots/{}.svg", p.name), p.svg.clone().into_bytes()));
        out.push((format!("plots/{}.png", p.name), to_png(p)?));
    }
    Ok(out)
}

/// Writes the files under `dir` (each to a temporary name, then renamed into place).
pub fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    for (name, bytes) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}
