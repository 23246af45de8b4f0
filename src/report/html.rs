//! One self-contained HTML page: the tables and the plots as inline SVG, a little CSS, no
//! scripts and no external resources, so it opens offline and can be attached to a message.

use super::Report;
use super::plots::Plot;
use super::sections::sections;

const STYLE: &str = "body{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;margin:2em auto;max-width:1400px;color:#222;padding:0 1em}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:.2em}\
p.note{color:#555;font-size:.9em}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.85em}\
caption{text-align:left;font-weight:bold;padding:.3em 0}th,td{border:1px solid #ddd;padding:.25em .55em;white-space:nowrap}\
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}tr.base td{font-weight:bold;background:#fafafa}\
tr:hover td{background:#eef5ff}.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0;border:1px solid #eee;flex:1 1 560px;max-width:680px}.plots svg{width:100%;height:auto;display:block}\
figcaption{font-size:.8em;color:#555;padding:.2em .5em}";

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn render(report: &Report, plots: &[Plot]) -> String {
    let title = format!("Report: {}", escape(&report.experiment));
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    for s in sections(report) {
        out.push_str(&format!(
            "<h2>{}</h2>\n<p class=\"note\">{}</p>\n",
            escape(&s.title),
            escape(&s.note)
        ));
        if s.tables.iter().all(|t| t.rows.is_empty()) {
            out.push_str("<p>—</p>\n");
            continue;
        }
        for t in &s.tables {
            out.push_str("<table>\n");
            if !t.caption.is_empty() {
                out.push_str(&format!("<caption>{}</caption>\n", escape(&t.caption)));
            }
            out.push_str("<tr>");
            for h in &t.header {
                out.push_str(&format!("<th>{}</th>", escape(h)));
            }
            out.push_str("</tr>\n");
            for (row, strong) in t.rows.iter().zip(&t.strong) {
                out.push_str(if *strong {
                    "<tr class=\"base\">"
                } else {
                    "<tr>"
                });
                for (i, c) in row.iter().enumerate() {
                    let class = if i >= t.numeric_from {
                        " class=\"n\""
                    } else {
                        ""
                    };
                    out.push_str(&format!("<td{class}>{}</td>", escape(c)));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</table>\n");
            for line in &t.footer {
                out.push_str(&format!("<p class=\"note\">{}</p>\n", escape(line)));
            }
        }
    }
    if !plots.is_empty() {
        out.push_str("<h2>Plots</h2>\n<div class=\"plots\">\n");
        for p in plots {
            // plotters writes an XML declaration-free <svg> element: inline it as is.
            out.push_str(&format!(
                "<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>\n",
                p.svg,
                escape(&p.title)
            ));
        }
        out.push_str("</div>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}
