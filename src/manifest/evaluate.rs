//! `[eval]` (benchmarks, templates, decoding, Pass@N sampling) and `[report]` (baseline,
//! best-cell selection, bootstrap).

use super::error::{ManifestError, did_you_mean};
use super::node::Value;
use super::read::Reader;
use super::resolve::{BENCHMARKS, check_name, positive, read_source};
use super::types::*;

type Result<T> = std::result::Result<T, ManifestError>;

/// `[eval]`, and its `template` (the default of every model that does not set its own).
pub(super) fn read_eval(t: Option<Reader<'_>>, seed: u64) -> Result<(Eval, Template)> {
    let Some(mut t) = t else {
        let eval = Eval {
            benchmarks: Vec::new(),
            max_new_tokens: 1024,
            limit: None,
            include_base: true,
            sampling: None,
        };
        return Ok((eval, Template::Qwen25MathCot));
    };
    let data_dir = t.path("data_dir")?;
    let data_dir_written = t.string("data_dir")?;
    let limit = t.count("limit", 1)?.map(|v| v.value);
    let mut benchmarks: Vec<BenchmarkSpec> = Vec::new();
    if let Some(node) = t.node("benchmarks") {
        let Value::Array(items) = &node.value else {
            return Err(ManifestError::invalid(
                &node.loc,
                &t.key_path("benchmarks"),
                format!("expected an array, found {}", node.value.type_name()),
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let key = format!("{}[{i}]", t.key_path("benchmarks"));
            let one = || -> Result<BenchmarkSpec> {
                Ok(match &item.value {
                    Value::String(name) => {
                        if !BENCHMARKS.contains(&name.as_str()) {
                            let hint = did_you_mean(name, &BENCHMARKS)
                                .map_or(String::new(), |s| format!(" (did you mean `{s}`?)"));
                            return Err(ManifestError::invalid(
                                &item.loc,
                                &key,
                                format!(
                                    "`{name}` is not one of the eleven benchmarks or medqa{hint}; for other data use a table `{{ name = \"...\", path = \"...\" }}` or `{{ name = \"...\", synthetic = {{...}} }}` for others"
                                ),
                            ));
                        }
                        let (Some(dir), Some(written)) = (&data_dir, &data_dir_written) else {
                            return Err(ManifestError::invalid(
                                &item.loc,
                                &key,
                                format!(
                                    "benchmark `{name}` is read from `eval.data_dir`, which is not set"
                                ),
                            ));
                        };
                        let file = if name == "tabmwp" {
                            "problems_test1k.json"
                        } else {
                            "test.jsonl"
                        };
                        BenchmarkSpec {
                            name: name.clone(),
                            source: DataSource::File {
                                input: InputPath {
                                    path: dir.value.join(name).join(file),
                                    written: format!(
                                        "{}/{name}/{file}",
                                        super::node::expanded(&written.value).trim_end_matches('/')
                                    ),
                                    loc: item.loc.clone(),
                                    key: key.clone(),
                                },
                                format: name.clone(),
                                limit,
                            },
                        }
                    }
                    Value::Table(table) => {
                        let mut spec =
                            named_source(&t, table, &key, item.loc.clone(), seed, "test")?;
                        if let DataSource::File { limit: own, .. } = &mut spec.source {
                            *own = own.or(limit);
                        }
                        spec
                    }
                    other => {
                        return Err(ManifestError::invalid(
                            &item.loc,
                            &key,
                            format!(
                                "expected a benchmark name or a table, found {}",
                                other.type_name()
                            ),
                        ));
                    }
                })
            };
            let sink = t.sink().clone();
            let Some(spec) = sink.recover(one()) else {
                continue;
            };
            if benchmarks.iter().any(|b| b.name == spec.name) {
                return Err(ManifestError::invalid(
                    &item.loc,
                    &key,
                    format!("benchmark `{}` is listed twice", spec.name),
                ));
            }
            benchmarks.push(spec);
        }
    }
    let template = t.template("template")?.unwrap_or(Template::Qwen25MathCot);
    let max_new_tokens = t.count("max_new_tokens", 1)?.map_or(1024, |v| v.value);
    let include_base = t.boolean("include_base")?.unwrap_or(true);
    let names: Vec<&str> = benchmarks.iter().map(|b| b.name.as_str()).collect();
    let sampling = match t.table("sampling")? {
        Some(mut s) => {
            let n = s.count("n", 1)?.map_or(20, |v| v.value);
            let temperature = positive(s.float("temperature")?)?.unwrap_or(0.7);
            let top_p = s.float("top_p")?;
            let top_p = match top_p {
                Some(p) if !(p.value > 0.0 && p.value <= 1.0) => {
                    return Err(ManifestError::invalid(
                        &p.loc,
                        &p.key,
                        format!("top_p must be in (0, 1], got {}", p.value),
                    ));
                }
                Some(p) => p.value,
                None => 1.0,
            };
            let top_k = s.count("top_k", 0)?.map_or(0, |v| v.value);
            let chosen = benchmark_names(&mut s, &names)?;
            let pass_at = match s.node("pass_at") {
                Some(node) => {
                    let Value::Array(items) = &node.value else {
                        return Err(ManifestError::invalid(
                            &node.loc,
                            &s.key_path("pass_at"),
                            "expected an array of integers",
                        ));
                    };
                    let mut out = Vec::new();
                    for item in items {
                        match item.value {
                            Value::Integer(v) if v >= 1 && (v as u64) <= n => out.push(v as u64),
                            Value::Integer(v) => {
                                return Err(ManifestError::invalid(
                                    &item.loc,
                                    &s.key_path("pass_at"),
                                    format!("Pass@{v} needs 1 <= N <= n = {n}"),
                                ));
                            }
                            _ => {
                                return Err(ManifestError::invalid(
                                    &item.loc,
                                    &s.key_path("pass_at"),
                                    format!(
                                        "expected an integer, found {}",
                                        item.value.type_name()
                                    ),
                                ));
                            }
                        }
                    }
                    out
                }
                None => (1..=n).collect(),
            };
            let out = Sampling {
                n,
                temperature,
                top_p,
                top_k,
                seed: s.count("seed", 0)?.map_or(seed, |v| v.value),
                benchmarks: chosen,
                pass_at,
            };
            s.finish()?;
            Some(out)
        }
        None => None,
    };
    t.finish()?;
    let eval = Eval {
        benchmarks,
        max_new_tokens,
        limit,
        include_base,
        sampling,
    };
    Ok((eval, template))
}

pub(super) fn read_report(
    t: Option<Reader<'_>>,
    methods: &[Method],
    eval: &Eval,
) -> Result<Report> {
    let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
    let default_baseline = methods
        .iter()
        .find(|m| m.kind == MethodKind::Sft)
        .unwrap_or(&methods[0])
        .name
        .clone();
    let Some(mut t) = t else {
        return Ok(Report {
            baseline: default_baseline,
            select: Select::BestAverage,
            bootstrap: 1000,
            timings: true,
            confidence: 0.95,
        });
    };
    let baseline = match t.string("baseline")? {
        Some(b) if !names.contains(&b.value.as_str()) => {
            let hint = did_you_mean(&b.value, &names)
                .map_or(String::new(), |m| format!("; did you mean `{m}`?"));
            return Err(ManifestError::invalid(
                &b.loc,
                &b.key,
                format!("no method named `{}`{hint}", b.value),
            ));
        }
        Some(b) => b.value,
        None => default_baseline,
    };
    let select = match t.string("select")? {
        None => Select::BestAverage,
        Some(s) if s.value == "best-average" => Select::BestAverage,
        Some(s) => match s.value.split_once(':') {
            Some(("best", bench)) if eval.benchmarks.iter().any(|b| b.name == bench) => {
                Select::BestOn(bench.to_string())
            }
            Some(("best", bench)) => {
                return Err(ManifestError::invalid(
                    &s.loc,
                    &s.key,
                    format!("`{bench}` is not in `eval.benchmarks`"),
                ));
            }
            Some(("cell", label)) => {
                if !methods
                    .iter()
                    .any(|m| m.cells.iter().any(|c| c.label == label))
                {
                    let labels: Vec<&str> =
                        methods[0].cells.iter().map(|c| c.label.as_str()).collect();
                    return Err(ManifestError::invalid(
                        &s.loc,
                        &s.key,
                        format!(
                            "no sweep cell is labelled `{label}` (cells: {})",
                            labels.join(", ")
                        ),
                    ));
                }
                Select::Cell(label.to_string())
            }
            _ => {
                return Err(ManifestError::invalid(
                    &s.loc,
                    &s.key,
                    format!(
                        "`{}` is not `best-average`, `best:<benchmark>` or `cell:<label>`",
                        s.value
                    ),
                ));
            }
        },
    };
    let bootstrap = t.count("bootstrap", 0)?.map_or(1000, |v| v.value);
    let confidence = match t.float("confidence")? {
        Some(c) if !(c.value > 0.0 && c.value < 1.0) => {
            return Err(ManifestError::invalid(
                &c.loc,
                &c.key,
                format!("must be in (0, 1), got {}", c.value),
            ));
        }
        Some(c) => c.value,
        None => 0.95,
    };
    let timings = t.boolean("timings")?.unwrap_or(true);
    t.finish()?;
    Ok(Report {
        baseline,
        select,
        bootstrap,
        confidence,
        timings,
    })
}

/// `benchmarks`: names from `eval.benchmarks` (`known`), each checked; absent: all of them.
pub(super) fn benchmark_names(t: &mut Reader<'_>, known: &[&str]) -> Result<Vec<String>> {
    let Some(list) = t.strings("benchmarks")? else {
        return Ok(known.iter().map(|s| s.to_string()).collect());
    };
    let mut out = Vec::new();
    for b in list {
        if !known.contains(&b.value.as_str()) {
            let hint = did_you_mean(&b.value, known)
                .map_or(String::new(), |m| format!("; did you mean `{m}`?"));
            return Err(ManifestError::invalid(
                &b.loc,
                &b.key,
                format!("`{}` is not in `eval.benchmarks`{hint}", b.value),
            ));
        }
        out.push(b.value);
    }
    Ok(out)
}

/// A table `{ name = "...", path = "...", format = "..." }` or `{ name = "...", synthetic =
/// {...} }`: a named data source (a benchmark, RL prompts).
pub(super) fn named_source(
    t: &Reader<'_>,
    table: &super::node::Table,
    key: &str,
    loc: super::Loc,
    seed: u64,
    default_split: &str,
) -> Result<BenchmarkSpec> {
    let mut b = t.sub(table, key, loc.clone());
    let name = b.require_string("name")?;
    check_name(&name)?;
    // The source keys live beside `name` in the same table.
    let mut rest = table.clone();
    rest.remove("name");
    let source = read_source(t.sub(&rest, key, loc), seed, default_split)?;
    let _ = b.node("path");
    let _ = b.node("format");
    let _ = b.node("synthetic");
    let _ = b.node("limit");
    b.finish()?;
    Ok(BenchmarkSpec {
        name: name.value,
        source,
    })
}
