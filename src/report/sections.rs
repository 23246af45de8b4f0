//! The report as titled tables of display strings: built once, rendered as markdown and as
//! HTML, so the two formats always show the same numbers.

use super::{Report, fmt_count, fmt_delta, fmt_interval, fmt_opt};

pub struct Section {
    pub title: String,
    /// One paragraph under the title.
    pub note: String,
    pub tables: Vec<Table>,
}

pub struct Table {
    /// A caption above the table (a model's name), or empty.
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Rows to set in bold (the base model's row).
    pub strong: Vec<bool>,
    /// Columns from this index on are numbers (right-aligned).
    pub numeric_from: usize,
    /// Lines under the table (Figure 4's sampling counts), or none.
    pub footer: Vec<String>,
}

/// The display name of a benchmark, as in the paper's column headers.
pub fn bench_title(name: &str) -> String {
    match name {
        "gsm8k" => "GSM8K",
        "math" => "Math",
        "svamp" => "SVAMP",
        "asdiv" => "ASDiv",
        "mawps" => "MAWPS",
        "carp_en" => "CARP",
        "tabmwp" => "TabMWP",
        "minerva_math" => "Minerva",
        "gaokao2023en" => "Gaokao",
        "olympiadbench" => "Olympiad",
        "college_math" => "College",
        other => other,
    }
    .to_string()
}

/// The N at which the Pass@N table shows values: powers of two, and n itself.
pub fn pass_columns(n: usize) -> Vec<usize> {
    let mut cols: Vec<usize> = std::iter::successors(Some(1usize), |x| Some(x * 2))
        .take_while(|&x| x <= n)
        .collect();
    if n > 0 && cols.last() != Some(&n) {
        cols.push(n);
    }
    cols
}

pub fn sections(r: &Report) -> Vec<Section> {
    let conf = format!("{:.0}%", r.confidence * 100.0);
    let mut out = vec![
        accuracy(r, &conf),
        deltas(r, &conf),
        pass_at(r),
        annotation(r),
        token_stats(r),
        categories(r),
        training(r),
        number_only(r),
        adapters(r),
    ];
    // Only where some method trains on sampled or transferred responses.
    if !r.responses.is_empty() {
        out.push(responses(r));
    }
    out.push(rl(r));
    out
}

/// Figure 4: per model, each method kind's average on each set of training responses, and the
/// sampling of §5.1 under it.
fn responses(r: &Report) -> Section {
    let tables = r
        .responses
        .iter()
        .map(|t| {
            let mut header = strings(&["Method"]);
            header.extend(t.columns.iter().map(|c| format!("{c} (%)")));
            let rows: Vec<Vec<String>> = t
                .rows
                .iter()
                .map(|row| {
                    let mut cells = vec![row.label.clone()];
                    cells.extend(
                        row.cells
                            .iter()
                            .map(|c| fmt_opt(c.as_ref().and_then(|c| c.average), 1)),
                    );
                    cells
                })
                .collect();
            Table {
                caption: t.model.clone(),
                header,
                strong: vec![false; rows.len()],
                rows,
                numeric_from: 1,
                footer: t.sampling.as_ref().map(sampling_line).into_iter().collect(),
            }
        })
        .collect();
    Section {
        title: "Training responses (Figure 4)".into(),
        note: "Average accuracy (%) over the benchmarks of each method trained on the model's own greedy-correct responses (Greedy), on those and, for each training question greedy decoding got wrong, its first correct sample (Greedy + sampled, §5.1), or on another model's greedy-correct responses (Transferred, §5.2), each at its chosen sweep cell. — where no method of the kind trains on those responses, where a model's own responses would be transferred to itself, or where the method has not been evaluated.".into(),
        tables,
    }
}

/// `Sampling (§5.1): 1,334 of 1,459 questions greedy decoding got wrong solved within 100
/// attempts (mean 7.3 attempts); 12,345 samples drawn.`
pub fn sampling_line(s: &super::Sampling) -> String {
    let count = |n: Option<u64>| n.map_or("—".into(), fmt_count);
    let mean = match s.attempts_mean {
        Some(m) if m.is_finite() => format!(" (mean {m:.1} attempts)"),
        _ => String::new(),
    };
    let samples = match s.samples {
        Some(n) => format!("; {} samples drawn", fmt_count(n)),
        None => String::new(),
    };
    format!(
        "Sampling (§5.1): {} of {} questions greedy decoding got wrong solved within {} attempts{mean}{samples}.",
        count(s.solved),
        count(s.questions),
        count(s.limit),
    )
}

/// Table 3: each method under each adapter, at its chosen cell.
fn adapters(r: &Report) -> Section {
    let mut header = strings(&["Model", "Method"]);
    let columns: Vec<&String> = r
        .adapters
        .first()
        .map_or(Vec::new(), |t| t.columns.iter().collect());
    header.extend(columns.iter().map(|c| format!("{c} (%)")));
    let rows = r
        .adapters
        .iter()
        .flat_map(|t| {
            t.rows.iter().map(|row| {
                let mut cells = vec![t.model.clone(), row.label.clone()];
                cells.extend(
                    row.cells
                        .iter()
                        .map(|c| fmt_opt(c.as_ref().and_then(|c| c.average), 1)),
                );
                cells
            })
        })
        .collect();
    Section {
        title: "Full fine-tuning and LoRA (Table 3)".into(),
        note: "Average accuracy (%) over the benchmarks of each method trained fully and with LoRA, each at its chosen sweep cell.".into(),
        tables: vec![table(header, rows, 2)],
    }
}

/// Figure 6 as numbers: per model, the number-only methods beside SFT and the CFT methods they
/// restrict, each at its chosen cell.
fn number_only(r: &Report) -> Section {
    let mut header = strings(&["Model", "Method", "Cell", "Tokens trained on (%)", "Avg."]);
    header.extend(r.benchmarks.iter().map(|b| bench_title(b)));
    let rows = r
        .number_only
        .iter()
        .flat_map(|n| {
            n.bars.iter().map(|b| {
                let mut cells = vec![
                    n.model.clone(),
                    b.label.clone(),
                    b.cell.clone().unwrap_or_else(|| "—".into()),
                    fmt_opt(b.fraction.map(|f| f * 100.0), 1),
                    fmt_opt(b.average, 1),
                ];
                cells.extend(b.scores.iter().map(|s| fmt_opt(*s, 1)));
                cells
            })
        })
        .collect();
    Section {
        title: "Number-only fine-tuning (Figure 6)".into(),
        note: "Accuracy (%) of fine-tuning on every token (SFT), on the critical tokens (CFT), on the numeric tokens of the whole response (SFT-Number) and on the numeric tokens among the critical ones (CFT-Number), each at its chosen sweep cell.".into(),
        tables: vec![table(header, rows, 3)],
    }
}

/// Figure 3 as numbers: each GRPO run's rewards, entropy and accuracies before and after.
fn rl(r: &Report) -> Section {
    let mut benchmarks: Vec<&String> = Vec::new();
    for run in &r.rl {
        for b in &run.benchmarks {
            if !benchmarks.contains(&b) {
                benchmarks.push(b);
            }
        }
    }
    let mut header = strings(&[
        "Model",
        "Start",
        "Cell",
        "Steps",
        "Reward (first 20%)",
        "Reward (last 20%)",
        "Entropy (first)",
        "Entropy (last)",
    ]);
    for b in &benchmarks {
        header.push(format!("{} at 0", bench_title(b)));
        header.push(format!("{} final", bench_title(b)));
    }
    let rows =
        r.rl.iter()
            .map(|run| {
                let mut cells = vec![
                    run.model.clone(),
                    run.label.clone(),
                    run.cell.clone().unwrap_or_else(|| "—".into()),
                    run.steps.to_string(),
                    fmt_opt(run.reward_first.map(|x| x * 100.0), 1),
                    fmt_opt(run.reward_last.map(|x| x * 100.0), 1),
                    fmt_opt(run.entropy.first().map(|p| p.1), 3),
                    fmt_opt(run.entropy.last().map(|p| p.1), 3),
                ];
                for b in &benchmarks {
                    let curve = run
                        .benchmarks
                        .iter()
                        .position(|x| x == *b)
                        .and_then(|i| run.accuracy.get(i));
                    cells.push(fmt_opt(curve.and_then(|c| c.first()).map(|p| p.1), 1));
                    cells.push(fmt_opt(curve.and_then(|c| c.last()).map(|p| p.1), 1));
                }
                cells
            })
            .collect();
    Section {
        title: "Reinforcement learning (Figure 3)".into(),
        note: "GRPO from each starting checkpoint: the mean reward (% of responses graded correct) over the first and the last fifth of the steps, the policy's entropy (nats, over the generated tokens) at the first and the last step, and greedy accuracy (%) before the first step and after the last.".into(),
        tables: vec![table(header, rows, 3)],
    }
}

/// Tables 1, 2 and 6: each method's chosen cell per benchmark, with Δ against the baseline.
fn accuracy(r: &Report, conf: &str) -> Section {
    let mut header: Vec<String> = ["Method", "Cell", "Avg.", "Δ Avg.", &format!("{conf} CI")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(r.benchmarks.iter().map(|b| bench_title(b)));
    let tables = r
        .blocks
        .iter()
        .map(|b| Table {
            caption: b.model.clone(),
            header: header.clone(),
            strong: b.rows.iter().map(|row| row.method == "base").collect(),
            rows: b
                .rows
                .iter()
                .map(|row| {
                    let mut cells = vec![
                        row.label.clone(),
                        row.cell.clone().unwrap_or_else(|| "—".into()),
                        fmt_opt(row.average, 1),
                        match row.method == "base" {
                            true => String::new(),
                            false => fmt_delta(row.delta),
                        },
                        match row.method == "base" {
                            true => String::new(),
                            false => fmt_interval(row.delta_ci),
                        },
                    ];
                    cells.extend(row.scores.iter().map(|s| fmt_opt(*s, 1)));
                    cells
                })
                .collect(),
            numeric_from: 2,
            footer: Vec::new(),
        })
        .collect();
    Section {
        title: "Accuracy (Tables 1, 2, 6)".into(),
        note: format!(
            "Accuracy (%) per benchmark; Avg. is the mean over the {} benchmarks. Each method shows its sweep cell chosen by `{}`. Δ is against {}; the interval is a paired bootstrap over questions ({} resamples, {conf}).",
            r.benchmarks.len(),
            r.select,
            r.baseline,
            r.bootstrap
        ) + &cpu_dependent(r),
        tables,
    }
}

/// A sentence naming the stages computed with kernels whose bytes depend on the CPU (a build
/// with the `avx512` feature); empty when every record names the default kernels.
fn cpu_dependent(r: &Report) -> String {
    if r.cpu_dependent.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = r
        .cpu_dependent
        .iter()
        .map(|(kernels, n)| format!("{n} with `{kernels}`"))
        .collect();
    format!(
        " Of the stages read, {} ran with CPU kernels that choose AVX-512 where the CPU has it: their bytes, and so these numbers, may differ in the last bits on another CPU.",
        parts.join(", ")
    )
}

/// Δ per benchmark against the baseline, with paired bootstrap intervals.
fn deltas(r: &Report, conf: &str) -> Section {
    let mut header = vec!["Model".to_string(), "Method".to_string()];
    header.extend(r.benchmarks.iter().map(|b| bench_title(b)));
    let rows: Vec<Vec<String>> = r
        .blocks
        .iter()
        .flat_map(|b| {
            b.rows
                .iter()
                .filter(|row| row.method != "base" && row.delta.is_some())
                .map(move |row| {
                    let mut cells = vec![b.model.clone(), row.label.clone()];
                    cells.extend(row.bench_delta.iter().zip(&row.bench_ci).map(
                        |(d, ci)| match ci {
                            Some(_) => format!("{} {}", fmt_delta(*d), fmt_interval(*ci)),
                            None => fmt_delta(*d),
                        },
                    ));
                    cells
                })
        })
        .collect();
    Section {
        title: format!("Δ per benchmark against {} ({conf} CI)", r.baseline),
        note: "Points of accuracy; paired bootstrap over the questions of each benchmark.".into(),
        tables: vec![Table {
            caption: String::new(),
            header,
            strong: vec![false; rows.len()],
            rows,
            numeric_from: 2,
            footer: Vec::new(),
        }],
    }
}

/// Figure 2 as numbers: Pass@N at powers of two and at n.
fn pass_at(r: &Report) -> Section {
    let n = r.pass_at.iter().map(|c| c.values.len()).max().unwrap_or(0);
    let cols = pass_columns(n);
    let mut header: Vec<String> = ["Model", "Benchmark", "Method", "Cell"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(cols.iter().map(|c| format!("Pass@{c}")));
    let rows: Vec<Vec<String>> = r
        .pass_at
        .iter()
        .map(|c| {
            let mut cells = vec![
                c.model.clone(),
                bench_title(&c.benchmark),
                c.method.clone(),
                c.cell.clone().unwrap_or_else(|| "—".into()),
            ];
            cells.extend(
                cols.iter()
                    .map(|&k| fmt_opt(c.values.get(k - 1).copied(), 1)),
            );
            cells
        })
        .collect();
    Section {
        title: "Pass@N (Figure 2)".into(),
        note: "Unbiased estimator 1 − C(n−c, N)/C(n, N) over n samples per question, in %.".into(),
        tables: vec![table(header, rows, 4)],
    }
}

/// Table 4: the greedy pass and the annotation of each rule.
fn annotation(r: &Report) -> Section {
    let header = [
        "Model",
        "Rule",
        "Greedy correct",
        "Accuracy (%)",
        "Avg tokens",
        "Critical ratio (%)",
        "Rollouts s / 1k",
    ];
    let rows = r
        .annotation
        .iter()
        .map(|a| {
            vec![
                a.model.clone(),
                a.method.clone().unwrap_or_else(|| "—".into()),
                match (a.greedy_correct, a.total) {
                    (Some(c), Some(t)) => format!("{c} / {t}"),
                    (Some(c), None) => c.to_string(),
                    _ => "—".into(),
                },
                fmt_opt(a.accuracy, 1),
                fmt_opt(a.mean_tokens, 1),
                fmt_opt(a.critical_ratio, 2),
                fmt_opt(a.seconds_per_1k, 1),
            ]
        })
        .collect();
    Section {
        title: "Greedy decoding and annotation (Table 4)".into(),
        note: "Greedy pass over the training questions; the mean length of the correct responses and the critical tokens among them; rollout time per 1,000 examples.".into(),
        tables: vec![timed(r, table(strings(&header), rows, 2))],
    }
}

/// Table 5: confidence, perplexity and entropy of critical and normal tokens.
fn token_stats(r: &Report) -> Section {
    let header = [
        "Model",
        "Rule",
        "Confidence (critical)",
        "Confidence (normal)",
        "Perplexity (critical)",
        "Perplexity (normal)",
        "Entropy (critical)",
        "Entropy (normal)",
    ];
    let rows = r
        .token_stats
        .iter()
        .map(|t| {
            let f = |s: Option<super::TokenStats>, g: fn(&super::TokenStats) -> f64| {
                fmt_opt(s.as_ref().map(g), 3)
            };
            vec![
                t.model.clone(),
                t.method.clone(),
                f(t.critical, |s| s.confidence),
                f(t.normal, |s| s.confidence),
                f(t.critical, |s| s.perplexity),
                f(t.normal, |s| s.perplexity),
                f(t.critical, |s| s.entropy),
                f(t.normal, |s| s.entropy),
            ]
        })
        .collect();
    Section {
        title: "Critical vs normal tokens (Table 5)".into(),
        note: "Mean probability of the greedy token, exp(mean −log p), mean entropy (nats).".into(),
        tables: vec![table(strings(&header), rows, 2)],
    }
}

/// Figure 5 as numbers: token categories within the critical and the normal tokens.
fn categories(r: &Report) -> Section {
    let mut header = vec!["Model".to_string(), "Rule".to_string(), "Set".to_string()];
    header.extend(
        super::analysis::CATEGORIES
            .iter()
            .map(|c| format!("{c} (%)")),
    );
    let rows = r
        .categories
        .iter()
        .flat_map(|c| {
            [("critical", &c.critical), ("normal", &c.normal)].map(|(set, shares)| {
                let mut cells = vec![c.model.clone(), c.method.clone(), set.to_string()];
                cells.extend(shares.iter().map(|(_, s)| format!("{:.1}", s * 100.0)));
                cells
            })
        })
        .collect();
    Section {
        title: "Token categories (Figure 5)".into(),
        note: "Share of each category within the critical and within the normal tokens.".into(),
        tables: vec![table(header, rows, 3)],
    }
}

/// The chosen cell of each method: tokens trained on, final loss, time.
fn training(r: &Report) -> Section {
    let header = [
        "Model",
        "Method",
        "Cell",
        "Tokens trained on (%)",
        "Train tokens",
        "Final loss",
        "Time (s)",
    ];
    let rows = r
        .training
        .iter()
        .map(|t| {
            vec![
                t.model.clone(),
                t.method.clone(),
                t.cell.clone(),
                fmt_opt(t.fraction.map(|f| f * 100.0), 2),
                t.train_tokens.map_or("—".into(), |n| n.to_string()),
                fmt_opt(t.final_loss, 4),
                fmt_opt(t.seconds, 1),
            ]
        })
        .collect();
    Section {
        title: "Training".into(),
        note: "The chosen cell of each method: the share of the annotated response tokens it trained on (non-zero weight; prompts are not counted, so SFT is 100%), the tokens it processed (prompts included, every epoch), and its final loss.".into(),
        tables: vec![timed(r, table(strings(&header), rows, 3))],
    }
}

/// Drops a table's last column, its wall-clock one, when the report leaves timings out.
fn timed(r: &Report, mut t: Table) -> Table {
    if !r.timings {
        t.header.pop();
        t.rows.iter_mut().for_each(|row| {
            row.pop();
        });
    }
    t
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}

fn table(header: Vec<String>, rows: Vec<Vec<String>>, numeric_from: usize) -> Table {
    Table {
        caption: String::new(),
        header,
        strong: vec![false; rows.len()],
        rows,
        numeric_from,
        footer: Vec::new(),
    }
}
