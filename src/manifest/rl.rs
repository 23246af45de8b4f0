//! `[rl]`: which checkpoints start GRPO, on which prompts, with which settings (paper §4.4,
//! App. B.2). Every setting is optional, with the paper's value (or verl's default where the
//! paper is silent) as its default.

use super::error::{ManifestError, did_you_mean};
use super::node::Value;
use super::read::Reader;
use super::resolve::positive;
use super::types::*;

type Result<T> = std::result::Result<T, ManifestError>;

/// The keys of `[rl]`.
const KEYS: [&str; 31] = [
    "start",
    "cell",
    "data",
    "benchmarks",
    "eval_every",
    "save_every_steps",
    "save_every_minutes",
    "epochs",
    "max_steps",
    "prompt_batch",
    "mini_batch",
    "micro_batch",
    "n",
    "temperature",
    "top_p",
    "top_k",
    "max_prompt_length",
    "max_response_length",
    "learning_rate",
    "weight_decay",
    "grad_clip",
    "clip_ratio",
    "clip_ratio_low",
    "clip_ratio_high",
    "clip_ratio_c",
    "kl_coef",
    "entropy_coeff",
    "norm_adv_by_std",
    "precision",
    "seed",
    "include_base",
];

/// `[rl]`, checked against the methods (with their sweep cells) and the benchmarks.
pub(super) fn read_rl(
    mut t: Reader<'_>,
    seed: u64,
    methods: &[Method],
    eval: &Eval,
    train_data: &DataSource,
) -> Result<Rl> {
    t.reject_unknown(&KEYS)?;
    let cell = t.string("cell")?;
    let cell = match cell {
        Some(c) if c.value == "best" => None,
        Some(c) => Some(c),
        None => None,
    };
    let mut starts: Vec<RlStart> = Vec::new();
    if t.boolean("include_base")?.unwrap_or(false) {
        starts.push(RlStart {
            method: "base".into(),
            cell: None,
        });
    }
    let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
    match t.node("start") {
        None => return Err(t.error("start", "missing required key: the methods whose checkpoints start RL, e.g. `start = [\"sft\", \"strict3\"]`")),
        Some(node) => {
            let Value::Array(items) = &node.value else {
                return Err(ManifestError::invalid(
                    &node.loc,
                    &t.key_path("start"),
                    format!("expected an array, found {}", node.value.type_name()),
                ));
            };
            for (i, item) in items.iter().enumerate() {
                let key = format!("{}[{i}]", t.key_path("start"));
                let (method, own_cell, at) = match &item.value {
                    Value::String(m) => (m.clone(), None, item.loc.clone()),
                    Value::Table(table) => {
                        let mut s = t.sub(table, &key, item.loc.clone());
                        let m = s.require_string("method")?;
                        let c = s.string("cell")?;
                        s.finish()?;
                        (m.value, c, m.loc)
                    }
                    other => {
                        return Err(ManifestError::invalid(
                            &item.loc,
                            &key,
                            format!(
                                "expected a method name or {{ method = \"...\", cell = \"...\" }}, found {}",
                                other.type_name()
                            ),
                        ));
                    }
                };
                if method != "base" && !names.contains(&method.as_str()) {
                    let hint = did_you_mean(&method, &names)
                        .map_or(String::new(), |m| format!("; did you mean `{m}`?"));
                    return Err(ManifestError::invalid(
                        &at,
                        &key,
                        format!("no method named `{method}` (or `base`){hint}"),
                    ));
                }
                let chosen = own_cell.or_else(|| cell.clone());
                let chosen = match (chosen, methods.iter().find(|m| m.name == method)) {
                    (Some(c), Some(m)) if c.value != "best" => {
                        if !m.cells.iter().any(|x| x.label == c.value) {
                            let labels: Vec<&str> =
                                m.cells.iter().map(|x| x.label.as_str()).collect();
                            return Err(ManifestError::invalid(
                                &c.loc,
                                &c.key,
                                format!(
                                    "method `{method}` has no sweep cell `{}` (cells: {})",
                                    c.value,
                                    labels.join(", ")
                                ),
                            ));
                        }
                        Some(c.value)
                    }
                    _ => None,
                };
                let start = RlStart {
                    method,
                    cell: chosen,
                };
                if starts.iter().any(|s| s.method == start.method) {
                    return Err(ManifestError::invalid(
                        &at,
                        &key,
                        format!("`{}` starts RL twice", start.method),
                    ));
                }
                starts.push(start);
            }
        }
    }

    let mut data: Vec<BenchmarkSpec> = Vec::new();
    match t.node("data") {
        None => data.push(BenchmarkSpec {
            name: "train".into(),
            source: train_data.clone(),
        }),
        Some(node) => {
            let Value::Array(items) = &node.value else {
                return Err(ManifestError::invalid(
                    &node.loc,
                    &t.key_path("data"),
                    format!("expected an array, found {}", node.value.type_name()),
                ));
            };
            for (i, item) in items.iter().enumerate() {
                let key = format!("{}[{i}]", t.key_path("data"));
                let spec = match &item.value {
                    Value::String(s) if s == "train" => BenchmarkSpec {
                        name: "train".into(),
                        source: train_data.clone(),
                    },
                    Value::Table(table) => super::evaluate::named_source(
                        &t,
                        table,
                        &key,
                        item.loc.clone(),
                        seed,
                        "train",
                    )?,
                    other => {
                        return Err(ManifestError::invalid(
                            &item.loc,
                            &key,
                            format!(
                                "expected `\"train\"` (the `[data.train]` questions) or a table {{ name = \"...\", path = \"...\", format = \"...\" }}, found {}",
                                other.type_name()
                            ),
                        ));
                    }
                };
                if data.iter().any(|d| d.name == spec.name) {
                    return Err(ManifestError::invalid(
                        &item.loc,
                        &key,
                        format!("RL data `{}` is listed twice", spec.name),
                    ));
                }
                data.push(spec);
            }
            if data.is_empty() {
                return Err(ManifestError::invalid(
                    &node.loc,
                    &t.key_path("data"),
                    "must name at least one source of prompts",
                ));
            }
        }
    }

    let known: Vec<&str> = eval.benchmarks.iter().map(|b| b.name.as_str()).collect();
    let benchmarks = super::evaluate::benchmark_names(&mut t, &known)?;

    let mut s = RlSettings::paper(seed);
    let count = |t: &mut Reader<'_>, key: &'static str, min: u64, into: &mut u64| -> Result<()> {
        if let Some(v) = t.count(key, min)? {
            *into = v.value;
        }
        Ok(())
    };
    count(&mut t, "epochs", 1, &mut s.epochs)?;
    s.max_steps = t.count("max_steps", 1)?.map(|v| v.value);
    count(&mut t, "prompt_batch", 1, &mut s.prompt_batch)?;
    count(&mut t, "mini_batch", 1, &mut s.mini_batch)?;
    count(&mut t, "micro_batch", 1, &mut s.micro_batch)?;
    count(&mut t, "n", 1, &mut s.n)?;
    count(&mut t, "top_k", 0, &mut s.top_k)?;
    count(&mut t, "max_prompt_length", 1, &mut s.max_prompt_length)?;
    count(&mut t, "max_response_length", 1, &mut s.max_response_length)?;
    count(&mut t, "seed", 0, &mut s.seed)?;
    let at = t.loc().clone();
    if s.mini_batch > s.prompt_batch {
        return Err(ManifestError::invalid(
            &at,
            &t.key_path("mini_batch"),
            format!(
                "mini_batch {} exceeds prompt_batch {}: a step's optimiser steps each take mini_batch of its prompts",
                s.mini_batch, s.prompt_batch
            ),
        ));
    }
    let float = |t: &mut Reader<'_>, key: &'static str, into: &mut f64| -> Result<()> {
        if let Some(v) = positive(t.float(key)?)? {
            *into = v;
        }
        Ok(())
    };
    let non_negative = |t: &mut Reader<'_>, key: &'static str, into: &mut f64| -> Result<()> {
        match t.float(key)? {
            Some(v) if !(v.value >= 0.0 && v.value.is_finite()) => Err(ManifestError::invalid(
                &v.loc,
                &v.key,
                format!("must be a number ≥ 0, got {}", v.value),
            )),
            Some(v) => {
                *into = v.value;
                Ok(())
            }
            None => Ok(()),
        }
    };
    float(&mut t, "temperature", &mut s.temperature)?;
    float(&mut t, "learning_rate", &mut s.learning_rate)?;
    match t.float("top_p")? {
        Some(p) if !(p.value > 0.0 && p.value <= 1.0) => {
            return Err(ManifestError::invalid(
                &p.loc,
                &p.key,
                format!("must be in (0, 1], got {}", p.value),
            ));
        }
        Some(p) => s.top_p = p.value,
        None => {}
    }
    non_negative(&mut t, "weight_decay", &mut s.weight_decay)?;
    non_negative(&mut t, "grad_clip", &mut s.grad_clip)?;
    let mut both = s.clip_ratio_low;
    non_negative(&mut t, "clip_ratio", &mut both)?;
    (s.clip_ratio_low, s.clip_ratio_high) = (both, both);
    non_negative(&mut t, "clip_ratio_low", &mut s.clip_ratio_low)?;
    non_negative(&mut t, "clip_ratio_high", &mut s.clip_ratio_high)?;
    float(&mut t, "clip_ratio_c", &mut s.clip_ratio_c)?;
    non_negative(&mut t, "kl_coef", &mut s.kl_coef)?;
    non_negative(&mut t, "entropy_coeff", &mut s.entropy_coeff)?;
    if let Some(b) = t.boolean("norm_adv_by_std")? {
        s.norm_adv_by_std = b;
    }
    if let Some(p) = t.choice("precision", Precision::NAMES)? {
        s.precision = Precision::parse(&p.value).unwrap_or(Precision::Bf16);
    }
    let eval_every = t.count("eval_every", 1)?.map_or(5, |v| v.value);
    let save_every_steps = t.count("save_every_steps", 0)?.map_or(1, |v| v.value);
    let mut save_every_minutes = 30.0;
    non_negative(&mut t, "save_every_minutes", &mut save_every_minutes)?;
    t.finish()?;
    Ok(Rl {
        starts,
        data,
        benchmarks,
        eval_every,
        settings: s,
        save_every_steps,
        save_every_minutes,
    })
}
