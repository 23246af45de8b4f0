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
        let cells = grid::expand(&train, p.reader.loc(), seed);
        p.reader.finish()?;
        let Some(cells) = sink.recover(cells) else {
            continue;
        };
        methods.push(Method {
            name: p.name.value,
            label,
            kind: p.kind,
            cells,
            adapter,
        });
    }
    Ok(methods)
}

/// The keys of a `[[method]]` table.
const METHOD_KEYS: [&str; 10] = [
    "adapter",
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
