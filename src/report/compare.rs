//! Several reports side by side (`cft compare`): Table 1's shape, one block per model family,
//! holding each experiment's rows. Every delta stays against its own experiment's baseline
//! (Table 6: Full rows against Full SFT, LoRA rows against LoRA SFT).

use super::{Block, Report};

/// One report whose blocks gather, per model, the rows of every input report (labelled with
/// their experiment); benchmark columns are the union, in order of first appearance.
pub fn merge(reports: &[Report]) -> Report {
    let mut benchmarks: Vec<String> = Vec::new();
    for r in reports {
        for b in &r.benchmarks {
            if !benchmarks.contains(b) {
                benchmarks.push(b.clone());
            }
        }
    }
    let tag = |r: &Report, s: &str| format!("{}: {s}", r.experiment);
    let remap = |r: &Report, v: &[Option<f64>]| -> Vec<Option<f64>> {
        benchmarks
            .iter()
            .map(|b| r.benchmarks.iter().position(|x| x == b).and_then(|i| v[i]))
            .collect()
    };
    let remap_ci = |r: &Report, v: &[Option<super::Interval>]| -> Vec<Option<super::Interval>> {
        benchmarks
            .iter()
            .map(|b| r.benchmarks.iter().position(|x| x == b).and_then(|i| v[i]))
            .collect()
    };
    let mut blocks: Vec<Block> = Vec::new();
    for r in reports {
        for b in &r.blocks {
            let at = match blocks.iter().position(|x| x.model == b.model) {
                Some(i) => i,
                None => {
                    blocks.push(Block {
                        model: b.model.clone(),
                        rows: Vec::new(),
                    });
                    blocks.len() - 1
                }
            };
            for row in &b.rows {
                // The base model is the same in every experiment: show it once.
                if row.method == "base" && blocks[at].rows.iter().any(|x| x.method == "base") {
                    continue;
                }
                let mut row = row.clone();
                if row.method != "base" {
                    row.label = tag(r, &row.label);
                }
                row.scores = remap(r, &row.scores);
                row.bench_delta = remap(r, &row.bench_delta);
                row.bench_ci = remap_ci(r, &row.bench_ci);
                row.average = super::select::complete_average(&row.scores).or(row.average);
                blocks[at].rows.push(row);
            }
        }
    }
    // Table 3: each experiment's tables, its labels tagged (their columns are its own).
    let adapters: Vec<super::AdapterTable> = reports
        .iter()
        .flat_map(|r| {
            r.adapters.iter().cloned().map(|mut t| {
                t.rows
                    .iter_mut()
                    .for_each(|row| row.label = tag(r, &row.label));
                t
            })
        })
        .collect();
    // Figure 4: likewise.
    let responses: Vec<super::ResponsesTable> = reports
        .iter()
        .flat_map(|r| {
            r.responses.iter().cloned().map(|mut t| {
                t.rows
                    .iter_mut()
                    .for_each(|row| row.label = tag(r, &row.label));
                t
            })
        })
        .collect();
    let number_only = {
        let mut out: Vec<super::NumberOnly> = Vec::new();
        for r in reports {
            for n in &r.number_only {
                let at = match out.iter().position(|x| x.model == n.model) {
                    Some(i) => i,
                    None => {
                        out.push(super::NumberOnly {
                            model: n.model.clone(),
                            bars: Vec::new(),
                        });
                        out.len() - 1
                    }
                };
                out[at].bars.extend(n.bars.iter().cloned().map(|mut b| {
                    b.label = tag(r, &b.label);
                    b.scores = remap(r, &b.scores);
                    b
                }));
            }
        }
        out
    };
    let join = |f: &dyn Fn(&Report) -> String| {
        let mut v: Vec<String> = reports.iter().map(f).collect();
        v.dedup();
        v.join(", ")
    };
    Report {
        experiment: join(&|r| r.experiment.clone()),
        baseline: join(&|r| r.baseline.clone()),
        select: join(&|r| r.select.clone()),
        confidence: reports.first().map_or(0.95, |r| r.confidence),
        bootstrap: reports.first().map_or(0, |r| r.bootstrap),
        timings: reports.iter().any(|r| r.timings),
        cpu_dependent: {
            let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
            for (k, n) in reports.iter().flat_map(|r| &r.cpu_dependent) {
                *counts.entry(k.clone()).or_default() += n;
            }
            counts.into_iter().collect()
        },
        benchmarks,
        blocks,
        annotation: reports
            .iter()
            .flat_map(|r| {
                r.annotation.iter().cloned().map(|mut a| {
                    a.method = a.method.map(|m| tag(r, &m));
                    a
                })
            })
            .collect(),
        token_stats: reports
            .iter()
            .flat_map(|r| {
                r.token_stats.iter().cloned().map(|mut t| {
                    t.method = tag(r, &t.method);
                    t
                })
            })
            .collect(),
        number_only,
        adapters,
        responses,
        rl: reports
            .iter()
            .flat_map(|r| {
                r.rl.iter().cloned().map(|mut x| {
                    x.label = tag(r, &x.label);
                    x
                })
            })
            .collect(),
        categories: reports
            .iter()
            .flat_map(|r| {
                r.categories.iter().cloned().map(|mut c| {
                    c.method = tag(r, &c.method);
                    c
                })
            })
            .collect(),
        training: reports
            .iter()
            .flat_map(|r| {
                r.training.iter().cloned().map(|mut t| {
                    t.method = tag(r, &t.method);
                    t
                })
            })
            .collect(),
        pass_at: {
            let mut curves: Vec<super::PassCurve> = Vec::new();
            for r in reports {
                for c in &r.pass_at {
                    let mut c = c.clone();
                    match c.cell.is_some() {
                        true => c.method = tag(r, &c.method),
                        // The base model's curve is the same in every experiment.
                        false
                            if curves.iter().any(|x| {
                                x.cell.is_none() && x.model == c.model && x.benchmark == c.benchmark
                            }) =>
                        {
                            continue;
                        }
                        false => {}
                    }
                    curves.push(c);
                }
            }
            curves
        },
    }
}
