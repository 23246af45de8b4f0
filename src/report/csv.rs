//! Table 1/2/6 as CSV: one line per model and method (its chosen cell), numbers unformatted
//! beyond fixed decimals so a spreadsheet reads them as numbers.

use super::Report;

pub fn render(report: &Report) -> String {
    let mut header: Vec<String> = [
        "model", "method", "label", "cell", "average", "delta", "ci_low", "ci_high",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(report.benchmarks.iter().cloned());
    header.extend(report.benchmarks.iter().map(|b| format!("{b}_delta")));
    header.extend(report.benchmarks.iter().map(|b| format!("{b}_ci_low")));
    header.extend(report.benchmarks.iter().map(|b| format!("{b}_ci_high")));
    let mut out = line(&header);
    let num = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.4}"));
    for block in &report.blocks {
        for row in &block.rows {
            let mut cells = vec![
                block.model.clone(),
                row.method.clone(),
                row.label.clone(),
                row.cell.clone().unwrap_or_default(),
                num(row.average),
                num(row.delta),
                num(row.delta_ci.map(|i| i.low)),
                num(row.delta_ci.map(|i| i.high)),
            ];
            cells.extend(row.scores.iter().map(|s| num(*s)));
            cells.extend(row.bench_delta.iter().map(|s| num(*s)));
            cells.extend(row.bench_ci.iter().map(|i| num(i.map(|i| i.low))));
            cells.extend(row.bench_ci.iter().map(|i| num(i.map(|i| i.high))));
            out.push_str(&line(&cells));
        }
    }
    out
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn line(cells: &[String]) -> String {
    let mut s = cells.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
    s.push('\n');
    s
}
