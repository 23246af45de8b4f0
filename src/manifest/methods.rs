//! `[[method]]` tables: the method kinds (SFT, DFT, CFT with its rule and k, the selection
//! baselines), their cross-references (`match`, `within` name a CFT method) and each
//! method's sweep cells (the global `[train]` merged with its own `[method.train]`).

use super::error::{ManifestError, did_you_mean};
use super::grid;
use super::node::{Table, Value};
use super::read::{At, Reader};
use super::resolve::check_name;
use super::types::*;

type Result<T> = std::result::Result<T, ManifestError>;

pub(super) fn read_methods(
    r: &mut Reader<'_>,
    global_train: &Table,
    seed: u64,
    models: &[String],
) -> Result<Vec<Method>> {
    let tables = r.tables("method")?;
    if tables.is_empty() {
        r.sink()
            .push(r.error("method", "at least one `[[method]]` is required"));
    }
    struct Pending<'a> {
        name: At<String>,
        matched: Option<At<String>>,
        kind: MethodKind,
        reader: Reader<'a>,
    }
    let sink = r.sink().clone();
    let mut pending = Vec::new();
    // Methods that could not be read: references to them are not reported again.
    let mut failed: Vec<String> = Vec::new();
    let mut unnamed = false;
    for mut t in tables {
        // Its unknown keys are reported even when a value stops the reading.
        t.reject_unknown(&METHOD_KEYS)?;
        let name = t
            .require_string("name")
            .and_then(|n| check_name(&n).map(|()| n));
        let Some(name) = sink.recover(name) else {
            unnamed = true;
            continue;
        };
        match read_kind(&mut t) {
            Ok((matched, kind)) => pending.push(Pending {
                name,
                matched,
                kind,
                reader: t,
            }),
            Err(e) => {
                sink.push(e);
                failed.push(name.value);
            }
        }
    }

    // Cross-references: names unique, `match`/`within` name a CFT method.
    let names: Vec<&str> = pending.iter().map(|p| p.name.value.as_str()).collect();
    for (i, p) in pending.iter().enumerate() {
        if names[..i].contains(&p.name.value.as_str()) {
            sink.push(ManifestError::invalid(
                &p.name.loc,
                &p.name.key,
                format!("method `{}` is defined twice", p.name.value),
            ));
        }
        if let Some(m) = &p.matched {
            match pending.iter().find(|q| q.name.value == m.value) {
                None if unnamed || failed.contains(&m.value) => {}
                None => {
                    let hint = did_you_mean(&m.value, &names)
                        .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                    sink.push(ManifestError::invalid(
                        &m.loc,
                        &m.key,
                        format!("no method named `{}`{hint}", m.value),
                    ));
                }
                Some(q) if !matches!(q.kind, MethodKind::Cft { .. }) => {
                    sink.push(ManifestError::invalid(
                        &m.loc,
                        &m.key,
                        format!(
                            "`{}` is not a `cft` method, so it has no critical tokens to match",
                            m.value
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }

    let mut methods = Vec::new();
    // (method, its score table's `by` and `cell`), checked once every method is read.
    let mut scorers: Vec<(String, At<String>, Option<At<String>>)> = Vec::new();
    for mut p in pending {
        let label = p
            .reader
            .string("label")?
            .map_or_else(|| p.name.value.clone(), |l| l.value);
        let mut train = global_train.clone();
        if let Some(node) = p.reader.node("train") {
            match &node.value {
                Value::Table(over) => train.merge(over.clone()),
                other => {
                    sink.push(ManifestError::invalid(
                        &node.loc,
                        &p.reader.key_path("train"),
                        format!("expected a table, found {}", other.type_name()),
                    ));
                    continue;
                }
            }
        }
        let adapter = match p.reader.table("adapter")? {
            Some(t) => sink.recover(super::resolve::read_adapter(Some(t))),
            None => None,
        };
        let responses = sink.recover(read_responses(&mut p.reader, &p.kind, models));
        let score = match p.reader.table("score")? {
            Some(t) => sink.recover(read_score(t)),
            None => None,
        };
        let cells = grid::expand(&train, p.reader.loc(), seed);
        let score_error = |message: &str| p.reader.error("score", message);
        let (Some(cells), Some(responses)) = (sink.recover(cells), responses) else {
            p.reader.finish()?;
            continue;
        };
        let needs_score =
            matches!(p.kind, MethodKind::Cft { .. }) && responses != Responses::Greedy;
        let score = match (score, needs_score) {
            (Some(_), false) => {
                sink.push(score_error(
                    "only a `cft` method trained on sampled or transferred responses \
                     (`responses = \"greedy+sampled\"` or `responses_from`) takes `score`",
                ));
                p.reader.finish()?;
                continue;
            }
            (None, true) => {
                sink.push(score_error(
                    "a `cft` method on sampled or transferred responses needs \
                     `score = { by = \"<cft method>\" }`: the CFT checkpoint whose probability \
                     gap to the base model marks the critical tokens of responses without \
                     rollouts (paper §5.1)",
                ));
                p.reader.finish()?;
                continue;
            }
            (Some((spec, by, cell)), true) => {
                scorers.push((p.name.value.clone(), by, cell));
                Some(spec)
            }
            (None, false) => None,
        };
        p.reader.finish()?;
        methods.push(Method {
            name: p.name.value,
            label,
            kind: p.kind,
            cells,
            adapter,
            responses,
            score,
        });
    }
    // `score.by` names a CFT method trained on the model's own greedy responses, `cell` one
    // of its cells.
    let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
    for (_, by, cell) in &scorers {
        let Some(target) = methods.iter().find(|m| m.name == by.value) else {
            if !(unnamed || failed.contains(&by.value)) {
                let hint = did_you_mean(&by.value, &names)
                    .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                sink.push(ManifestError::invalid(
                    &by.loc,
                    &by.key,
                    format!("no method named `{}`{hint}", by.value),
                ));
            }
            continue;
        };
        if !matches!(target.kind, MethodKind::Cft { .. }) || target.responses != Responses::Greedy {
            sink.push(ManifestError::invalid(
                &by.loc,
                &by.key,
                format!(
                    "`{}` must be a `cft` method trained on the model's own greedy responses \
                     (M_cft of paper §5.1)",
                    by.value
                ),
            ));
            continue;
        }
        if let Some(c) = cell
            && !target.cells.iter().any(|x| x.label == c.value)
        {
            let labels: Vec<&str> = target.cells.iter().map(|x| x.label.as_str()).collect();
            sink.push(ManifestError::invalid(
                &c.loc,
                &c.key,
                format!(
                    "`{}` has no cell `{}` (its cells: {})",
                    by.value,
                    c.value,
                    labels.join(", ")
                ),
            ));
        }
    }
    Ok(methods)
}

/// `responses` and `responses_from`: the responses a method trains on.
fn read_responses(t: &mut Reader<'_>, kind: &MethodKind, models: &[String]) -> Result<Responses> {
    let written = t.choice("responses", &["greedy", "greedy+sampled"])?;
    let from = t.string("responses_from")?;
    let responses = match (&written, &from) {
        (Some(_), Some(f)) => {
            return Err(ManifestError::invalid(
                &f.loc,
                &f.key,
                "a method takes `responses` or `responses_from`, not both",
            ));
        }
        (Some(w), None) if w.value == "greedy+sampled" => Responses::GreedySampled,
        (_, None) => Responses::Greedy,
        (None, Some(f)) => {
            if !models.contains(&f.value) {
                let names: Vec<&str> = models.iter().map(String::as_str).collect();
                let hint = did_you_mean(&f.value, &names)
                    .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                return Err(ManifestError::invalid(
                    &f.loc,
                    &f.key,
                    format!("no model named `{}`{hint}", f.value),
                ));
            }
            Responses::From(f.value.clone())
        }
    };
    let trains_on_responses = matches!(
        kind,
        MethodKind::Sft | MethodKind::Dft | MethodKind::Cft { .. }
    );
    if responses != Responses::Greedy && !trains_on_responses {
        let key = if from.is_some() {
            "responses_from"
        } else {
            "responses"
        };
        return Err(t.error(
            key,
            "only sft, dft and cft methods train on sampled or transferred responses (the \
             selection baselines rank the model's own greedy responses)",
        ));
    }
    Ok(responses)
}

/// `score = { by = "...", cell = "...", top = 0.15 }`.
type ScoreRead = (ScoreSpec, At<String>, Option<At<String>>);

fn read_score(mut t: Reader<'_>) -> Result<ScoreRead> {
    let by = t.require_string("by");
    let cell = t.string("cell")?;
    let top = t.float("top")?;
    t.finish()?;
    let by = by?;
    let top = match top {
        None => SCORE_TOP,
        Some(v) if v.value > 0.0 && v.value <= 1.0 => v.value,
        Some(v) => {
            return Err(ManifestError::invalid(
                &v.loc,
                &v.key,
                format!(
                    "the share of tokens marked must be in (0, 1], got {}",
                    v.value
                ),
            ));
        }
    };
    Ok((
        ScoreSpec {
            by: by.value.clone(),
            cell: cell.as_ref().map(|c| c.value.clone()),
            top,
        },
        by,
        cell,
    ))
}

/// The paper's share: "We mark the top 15% of tokens with the highest s_t values".
pub const SCORE_TOP: f64 = 0.15;

/// The keys of a `[[method]]` table.
const METHOD_KEYS: [&str; 13] = [
    "adapter",
    "responses",
    "responses_from",
    "score",
    "name",
    "kind",
    "rule",
    "k",
    "match",
    "match_scope",
    "within",
    "label",
    "train",
];

/// A method's kind and its settings, and the method it names (`match` or `within`).
fn read_kind(t: &mut Reader<'_>) -> Result<(Option<At<String>>, MethodKind)> {
    let kind = t.choice(
        "kind",
        &[
            "sft",
            "dft",
            "cft",
            "entropy",
            "attention",
            "number",
            "random",
        ],
    )?;
    let Some(kind) = kind else {
        return Err(t.error(
            "kind",
            "missing required key (one of sft, dft, cft, entropy, attention, number, random)",
        ));
    };
    let rule = t.choice("rule", &["strict", "union", "graded"])?;
    let k = t.integer("k")?;
    let matched = t.string("match")?;
    let scope = t.choice("match_scope", &["example", "global"])?;
    let within = t.string("within")?;
    if kind.value != "cft" {
        for (key, present) in [("rule", rule.is_some()), ("k", k.is_some())] {
            if present {
                return Err(t.error(
                    key,
                    format!(
                        "only `cft` methods take `{key}` (this one is `{}`)",
                        kind.value
                    ),
                ));
            }
        }
    }
    let needs_match = ["entropy", "attention", "random"].contains(&kind.value.as_str());
    if matched.is_some() && !needs_match {
        return Err(t.error(
            "match",
            format!(
                "only entropy, attention and random selections take `match` (this one is `{}`)",
                kind.value
            ),
        ));
    }
    if let Some(s) = &scope
        && !["entropy", "attention"].contains(&kind.value.as_str())
    {
        return Err(ManifestError::invalid(
            &s.loc,
            &s.key,
            format!(
                "only entropy and attention selections rank tokens by a score and take `match_scope` (this one is `{}`)",
                kind.value
            ),
        ));
    }
    // Absent: per example, what every selection did before `match_scope` existed.
    let scope = match scope.as_ref().map(|s| s.value.as_str()) {
        Some("global") => MatchScope::Global,
        _ => MatchScope::Example,
    };
    if within.is_some() && kind.value != "number" {
        return Err(t.error("within", "only `number` methods take `within`"));
    }
    let kind_value = match kind.value.as_str() {
        "sft" => MethodKind::Sft,
        "dft" => MethodKind::Dft,
        "cft" => {
            let Some(rule) = rule else {
                return Err(t.error(
                    "rule",
                    "a `cft` method needs `rule` (strict, union or graded) and `k`",
                ));
            };
            let Some(k) = k else {
                return Err(ManifestError::invalid(
                    &rule.loc,
                    &t.key_path("k"),
                    format!(
                        "rule `{}` needs `k`, the number of ranks tried (2..k)",
                        rule.value
                    ),
                ));
            };
            if k.value < 2 {
                return Err(ManifestError::invalid(
                    &k.loc,
                    &k.key,
                    format!(
                        "k must be at least 2 (alternatives are ranks 2..k), got {}",
                        k.value
                    ),
                ));
            }
            let rule = match rule.value.as_str() {
                "strict" => Rule::Strict,
                "union" => Rule::Union,
                _ => Rule::Graded,
            };
            MethodKind::Cft {
                rule,
                k: k.value as u64,
            }
        }
        "number" => MethodKind::Number {
            within: within.as_ref().map(|w| w.value.clone()),
        },
        other => {
            let Some(m) = &matched else {
                return Err(t.error("match", format!("a `{other}` selection needs `match`, the CFT method whose token fraction it copies")));
            };
            let matched = m.value.clone();
            match other {
                "entropy" => MethodKind::Entropy { matched, scope },
                "attention" => MethodKind::Attention { matched, scope },
                _ => MethodKind::Random { matched },
            }
        }
    };
    Ok((matched.or(within), kind_value))
}
