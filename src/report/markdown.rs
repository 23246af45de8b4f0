//! The report as GitHub-flavoured markdown.

use super::Report;
use super::plots::Plot;
use super::sections::{Section, Table, sections};

pub fn render(report: &Report, plots: &[Plot]) -> String {
    let mut out = format!("# Report: {}\n", report.experiment);
    render_sections(&mut out, sections(report));
    if !plots.is_empty() {
        out.push_str("\n## Plots\n\n");
        for p in plots {
            out.push_str(&format!(
                "- [{}](plots/{}.svg) ([PNG](plots/{}.png))\n",
                p.title, p.name, p.name
            ));
        }
    }
    out
}

/// What `cft run` prints when it finishes: the accuracy table, Pass@N and the annotation
/// summary (Table 4); `cft report` has the rest.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let wanted = ["Accuracy", "Pass@N", "Greedy decoding"];
    render_sections(
        &mut out,
        sections(report)
            .into_iter()
            .filter(|s| wanted.iter().any(|w| s.title.starts_with(w))),
    );
    out
}

fn render_sections(out: &mut String, sections: impl IntoIterator<Item = Section>) {
    for s in sections {
        out.push_str(&format!("\n## {}\n\n{}\n", s.title, s.note));
        let empty = s.tables.iter().all(|t| t.rows.is_empty());
        if empty {
            out.push_str("\n—\n");
            continue;
        }
        for t in &s.tables {
            out.push('\n');
            if !t.caption.is_empty() {
                out.push_str(&format!("**{}**\n\n", escape(&t.caption)));
            }
            table(out, t);
            for line in &t.footer {
                out.push_str(&format!("\n{line}\n"));
            }
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn table(out: &mut String, t: &Table) {
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(t.header.iter().map(|h| escape(h)).collect()));
    out.push_str(&line(
        (0..t.header.len())
            .map(|i| {
                if i >= t.numeric_from {
                    "---:".into()
                } else {
                    "---".into()
                }
            })
            .collect(),
    ));
    for (row, strong) in t.rows.iter().zip(&t.strong) {
        out.push_str(&line(
            row.iter()
                .enumerate()
                .map(|(i, c)| match *strong && i == 0 && !c.is_empty() {
                    true => format!("**{}**", escape(c)),
                    false => escape(c),
                })
                .collect(),
        ));
    }
}
