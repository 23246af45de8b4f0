//! Hyper-parameter sweeps: any `[train]` value may be a list; lists expand into the cartesian
//! product, in the order the fields are declared below, so cell order is stable.

use super::error::{Loc, ManifestError};
use super::node::{Node, Table, Value};
use super::read::as_float;
use super::types::{
    LastBatchRule, LossNormalization, Optimizer, Precision, Schedule, Strategy, TrainCell,
    TrainParams, TrainRun,
};

type Result<T> = std::result::Result<T, ManifestError>;

#[derive(Clone, Debug, PartialEq)]
enum V {
    Int(u64),
    Float(f64),
    Str(String),
    Bool(bool),
}

enum Check {
    /// An integer at least this large.
    Int(u64),
    Positive,
    /// In [0, 1).
    Ratio,
    NonNegative,
    Choice(&'static [&'static str]),
    Bool,
}

/// (key, short name used in cell labels, check, default).
fn fields(seed: u64) -> Vec<(&'static str, &'static str, Check, V)> {
    vec![
        ("epochs", "ep", Check::Int(1), V::Int(3)),
        ("learning_rate", "lr", Check::Positive, V::Float(1e-5)),
        ("batch_size", "bs", Check::Int(1), V::Int(32)),
        ("micro_batch_size", "mbs", Check::Int(1), V::Int(4)),
        ("warmup_ratio", "wu", Check::Ratio, V::Float(0.03)),
        (
            "schedule",
            "",
            Check::Choice(&["cosine", "linear", "constant"]),
            V::Str("cosine".into()),
        ),
        (
            "precision",
            "",
            Check::Choice(&["f32", "bf16", "f16"]),
            V::Str("bf16".into()),
        ),
        ("max_length", "len", Check::Int(8), V::Int(1024)),
        (
            "optimizer",
            "",
            Check::Choice(&["adamw", "adam"]),
            V::Str("adamw".into()),
        ),
        ("weight_decay", "wd", Check::NonNegative, V::Float(0.0)),
        ("grad_clip", "clip", Check::NonNegative, V::Float(1.0)),
        ("adam_beta1", "b1", Check::Ratio, V::Float(0.9)),
        ("adam_beta2", "b2", Check::Ratio, V::Float(0.999)),
        ("adam_eps", "eps", Check::Positive, V::Float(1e-8)),
        // The floor of the cosine decay as a fraction of the peak (transformers'
        // `min_lr_rate`); 0 decays to 0.
        ("min_lr_ratio", "minlr", Check::Ratio, V::Float(0.0)),
        (
            "loss_normalization",
            "",
            Check::Choice(&["batch", "micro-batch", "dataset"]),
            V::Str("batch".into()),
        ),
        (
            "last_batch",
            "",
            Check::Choice(&["short", "drop"]),
            V::Str("short".into()),
        ),
        ("append_eos", "eos", Check::Bool, V::Bool(false)),
        ("seed", "seed", Check::Int(0), V::Int(seed)),
    ]
}

/// The `[train]` keys that say how a cell runs rather than what it computes: one value each
/// (not a sweep axis) and never in a stage key, so changing them reuses what is cached.
const RUN_KEYS: [&str; 4] = ["strategy", "gpus", "save_every_steps", "save_every_minutes"];

/// Reads the run keys ([`RUN_KEYS`]) of a (merged) `[train]` table.
fn run_settings(table: &Table) -> Result<TrainRun> {
    let one = |key: &str, check: Check| -> Result<Option<V>> {
        let Some(entry) = table.get(key) else {
            return Ok(None);
        };
        if let Value::Array(_) = entry.node.value {
            return Err(ManifestError::invalid(
                &entry.node.loc,
                &format!("train.{key}"),
                "takes one value, not a list: it says how a cell runs, not what it computes, \
                 so it is not a sweep axis",
            ));
        }
        read_value(&entry.node, &check, &format!("train.{key}")).map(Some)
    };
    let defaults = TrainRun::default();
    let strategy = match one("strategy", Check::Choice(Strategy::NAMES))? {
        Some(v) => Strategy::parse(&string(&v)).unwrap_or(defaults.strategy),
        None => defaults.strategy,
    };
    let gpus = one("gpus", Check::Int(1))?.map(|v| int(&v));
    if let (Some(entry), false) = (table.get("gpus"), strategy == Strategy::Zero1) {
        return Err(ManifestError::invalid(
            &entry.node.loc,
            "train.gpus",
            format!(
                "only strategy = \"zero1\" spreads a cell over several GPUs (this one is {:?})",
                strategy.name()
            ),
        ));
    }
    Ok(TrainRun {
        strategy,
        gpus,
        save_every_steps: one("save_every_steps", Check::Int(0))?
            .map_or(defaults.save_every_steps, |v| int(&v)),
        save_every_minutes: one("save_every_minutes", Check::NonNegative)?
            .map_or(defaults.save_every_minutes, |v| float(&v)),
    })
}

/// Expands a (merged) `[train]` table into sweep cells.
pub fn expand(table: &Table, owner: &Loc, seed: u64) -> Result<Vec<TrainCell>> {
    let fields = fields(seed);
    // Every unknown key and every wrong value of the table, not only the first.
    let mut errors = Vec::new();
    let run = run_settings(table).map_err(|e| errors.push(e)).ok();
    for entry in &table.entries {
        if !fields.iter().any(|f| f.0 == entry.key) && !RUN_KEYS.contains(&entry.key.as_str()) {
            let mut known: Vec<&str> = fields.iter().map(|f| f.0).collect();
            known.extend(RUN_KEYS);
            let hint = super::error::did_you_mean(&entry.key, &known).map_or_else(
                || format!("; known keys here: {}", known.join(", ")),
                |m| format!("; did you mean `{m}`?"),
            );
            errors.push(ManifestError::invalid(
                &entry.key_loc,
                &format!("train.{}", entry.key),
                format!("unknown key{hint}"),
            ));
        }
    }
    let mut axes: Vec<Vec<V>> = Vec::with_capacity(fields.len());
    for (key, _, check, default) in &fields {
        let values = match table.get(key) {
            None => vec![default.clone()],
            Some(entry) => {
                let name = format!("train.{key}");
                let items: Vec<&Node> = match &entry.node.value {
                    Value::Array(items) if items.is_empty() => {
                        errors.push(ManifestError::invalid(
                            &entry.node.loc,
                            &name,
                            "empty grid: give a value or a non-empty list",
                        ));
                        Vec::new()
                    }
                    Value::Array(items) => items.iter().collect(),
                    _ => vec![&entry.node],
                };
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    let v = match read_value(item, check, &name) {
                        Ok(v) => v,
                        Err(e) => {
                            errors.push(e);
                            continue;
                        }
                    };
                    if values.contains(&v) {
                        errors.push(ManifestError::invalid(
                            &item.loc,
                            &name,
                            "value listed twice in the grid",
                        ));
                    }
                    values.push(v);
                }
                values
            }
        };
        axes.push(values);
    }
    let run = match (run, errors.len()) {
        (Some(run), 0) => run,
        (_, 1) => return Err(errors.remove(0)),
        _ => return Err(ManifestError::Many(errors)),
    };

    let mut cells = Vec::new();
    let total: usize = axes.iter().map(Vec::len).product();
    for index in 0..total {
        // Mixed-radix decomposition, last field fastest.
        let mut rest = index;
        let mut pick = vec![0usize; axes.len()];
        for (i, axis) in axes.iter().enumerate().rev() {
            pick[i] = rest % axis.len();
            rest /= axis.len();
        }
        let value = |i: usize| &axes[i][pick[i]];
        let params = TrainParams {
            epochs: int(value(0)),
            learning_rate: float(value(1)),
            batch_size: int(value(2)),
            micro_batch_size: int(value(3)),
            warmup_ratio: float(value(4)),
            schedule: named(value(5), Schedule::parse, owner)?,
            precision: named(value(6), Precision::parse, owner)?,
            max_length: int(value(7)),
            optimizer: named(value(8), Optimizer::parse, owner)?,
            weight_decay: float(value(9)),
            grad_clip: float(value(10)),
            adam_beta1: float(value(11)),
            adam_beta2: float(value(12)),
            adam_eps: float(value(13)),
            min_lr_ratio: float(value(14)),
            loss_normalization: named(value(15), LossNormalization::parse, owner)?,
            last_batch: named(value(16), LastBatchRule::parse, owner)?,
            append_eos: matches!(value(17), V::Bool(true)),
            seed: int(value(18)),
        };
        if !params
            .batch_size
            .is_multiple_of(params.micro_batch_size.min(params.batch_size))
        {
            let loc = table.get("micro_batch_size").map_or(owner, |e| &e.node.loc);
            return Err(ManifestError::invalid(
                loc,
                "train.micro_batch_size",
                format!(
                    "batch_size {} is not a multiple of micro_batch_size {}",
                    params.batch_size, params.micro_batch_size
                ),
            ));
        }
        if params.min_lr_ratio > 0.0 && params.schedule != Schedule::Cosine {
            let loc = table.get("min_lr_ratio").map_or(owner, |e| &e.node.loc);
            return Err(ManifestError::invalid(
                loc,
                "train.min_lr_ratio",
                format!(
                    "a learning-rate floor needs schedule = \"cosine\" (transformers' \
                     cosine_with_min_lr), not {:?}",
                    params.schedule.name()
                ),
            ));
        }
        let label: Vec<String> = fields
            .iter()
            .enumerate()
            .filter(|(i, _)| axes[*i].len() > 1)
            .map(|(i, (key, short, _, _))| {
                let prefix = if short.is_empty() { *key } else { short };
                format!("{prefix}{}", show(value(i)))
            })
            .collect();
        cells.push(TrainCell {
            label: if label.is_empty() {
                "default".into()
            } else {
                label.join("-")
            },
            params,
            run: run.clone(),
        });
    }
    Ok(cells)
}

fn read_value(node: &Node, check: &Check, key: &str) -> Result<V> {
    let bad = |m: String| ManifestError::invalid(&node.loc, key, m);
    match check {
        Check::Int(min) => match node.value {
            Value::Integer(i) if i >= 0 && i as u64 >= *min => Ok(V::Int(i as u64)),
            Value::Integer(i) => Err(bad(format!("must be at least {min}, got {i}"))),
            _ => Err(bad(format!(
                "expected an integer or a list of integers, found {}",
                node.value.type_name()
            ))),
        },
        Check::Positive | Check::Ratio | Check::NonNegative => {
            let Some(x) = as_float(node) else {
                return Err(bad(format!(
                    "expected a number or a list of numbers, found {}",
                    node.value.type_name()
                )));
            };
            let ok = match check {
                Check::Positive => x > 0.0 && x.is_finite(),
                Check::Ratio => (0.0..1.0).contains(&x),
                _ => x >= 0.0 && x.is_finite(),
            };
            let rule = match check {
                Check::Positive => "a positive number",
                Check::Ratio => "in [0, 1)",
                _ => "a non-negative number",
            };
            if ok {
                Ok(V::Float(x))
            } else {
                Err(bad(format!("must be {rule}, got {x}")))
            }
        }
        Check::Choice(choices) => match &node.value {
            Value::String(s) if choices.contains(&s.as_str()) => Ok(V::Str(s.clone())),
            Value::String(s) => Err(bad(format!("`{s}` is not one of {}", choices.join(", ")))),
            _ => Err(bad(format!(
                "expected a string or a list of strings, found {}",
                node.value.type_name()
            ))),
        },
        Check::Bool => match node.value {
            Value::Boolean(b) => Ok(V::Bool(b)),
            _ => Err(bad(format!(
                "expected true or false (or a list of them), found {}",
                node.value.type_name()
            ))),
        },
    }
}

fn int(v: &V) -> u64 {
    match v {
        V::Int(i) => *i,
        V::Float(f) => *f as u64,
        V::Str(_) | V::Bool(_) => 0,
    }
}

fn float(v: &V) -> f64 {
    match v {
        V::Float(f) => *f,
        V::Int(i) => *i as f64,
        V::Str(_) | V::Bool(_) => 0.0,
    }
}

/// A choice's value as its enum (the value was checked against the choices when read).
fn named<E>(v: &V, parse: fn(&str) -> Option<E>, owner: &Loc) -> Result<E> {
    let name = string(v);
    parse(&name).ok_or_else(|| {
        ManifestError::invalid(
            owner,
            "train",
            format!("`{name}` is not one of its choices"),
        )
    })
}

fn string(v: &V) -> String {
    match v {
        V::Str(s) => s.clone(),
        V::Int(i) => i.to_string(),
        V::Float(f) => f.to_string(),
        V::Bool(b) => b.to_string(),
    }
}

fn show(v: &V) -> String {
    match v {
        V::Int(i) => i.to_string(),
        V::Float(f) => format!("{f:e}"),
        V::Str(s) => s.clone(),
        V::Bool(b) => b.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use super::*;
    use crate::manifest::node::parse;

    /// The sweep cells of a `[train]` table written as TOML.
    fn cells(train: &str) -> Result<Vec<TrainCell>> {
        let root = parse(Path::new("m.toml"), &format!("[train]\n{train}"))?;
        let table = match root.get("train").map(|e| &e.node.value) {
            Some(Value::Table(t)) => t.clone(),
            _ => Table::default(),
        };
        let owner = Loc {
            file: Arc::new(PathBuf::from("m.toml")),
            line: 1,
            col: 1,
        };
        expand(&table, &owner, 42)
    }

    fn labels(cells: &[TrainCell]) -> Vec<&str> {
        cells.iter().map(|c| c.label.as_str()).collect()
    }

    #[test]
    fn no_list_is_one_default_cell() {
        let grid = cells("epochs = 2").unwrap();
        assert_eq!(labels(&grid), ["default"]);
        assert_eq!(grid[0].params.epochs, 2);
        assert_eq!(grid[0].params.seed, 42, "the experiment's seed");
        assert_eq!(grid[0].params.learning_rate, 1e-5);
    }

    /// Fields vary in declaration order, the last fastest, whatever order the manifest
    /// writes them in; labels name only the fields that vary.
    #[test]
    fn lists_expand_into_the_cartesian_product_in_declared_order() {
        let grid =
            cells("batch_size = [16, 32, 128]\nepochs = 3\nlearning_rate = [2e-6, 5e-6]").unwrap();
        assert_eq!(
            labels(&grid),
            [
                "lr2e-6-bs16",
                "lr2e-6-bs32",
                "lr2e-6-bs128",
                "lr5e-6-bs16",
                "lr5e-6-bs32",
                "lr5e-6-bs128",
            ]
        );
        for cell in &grid {
            assert_eq!(cell.params.epochs, 3);
        }
        assert_eq!(grid[4].params.learning_rate, 5e-6);
        assert_eq!(grid[4].params.batch_size, 32);
        // A list of one value does not vary: it is not in the label.
        let one = cells("learning_rate = [2e-6]\nbatch_size = [16, 32]").unwrap();
        assert_eq!(labels(&one), ["bs16", "bs32"]);
    }

    #[test]
    fn fields_without_a_short_name_label_by_key() {
        let grid =
            cells("schedule = [\"cosine\", \"constant\"]\nappend_eos = [false, true]").unwrap();
        assert_eq!(
            labels(&grid),
            [
                "schedulecosine-eosfalse",
                "schedulecosine-eostrue",
                "scheduleconstant-eosfalse",
                "scheduleconstant-eostrue",
            ]
        );
    }

    #[test]
    fn the_same_table_gives_the_same_cells() {
        let text = "seed = [1, 2]\nlearning_rate = [1e-4, 3e-4]";
        let a = cells(text).unwrap();
        let b = cells(text).unwrap();
        assert_eq!(labels(&a), labels(&b));
        let params = |c: &[TrainCell]| c.iter().map(|c| c.params.clone()).collect::<Vec<_>>();
        assert_eq!(params(&a), params(&b));
    }

    #[test]
    fn empty_and_repeated_lists_are_errors() {
        let message = |text: &str| cells(text).unwrap_err().to_string();
        assert!(message("batch_size = []").contains("empty grid"));
        assert!(message("batch_size = [16, 16]").contains("listed twice"));
    }

    /// `strategy`, `gpus` and the save cadence say how a cell runs: one value each, the same
    /// for every cell, never in its params (so never in a stage key), and checked.
    #[test]
    fn run_keys_are_single_values_outside_the_params() {
        let plain = cells("learning_rate = [1e-5, 2e-5]").unwrap();
        let run = cells(
            "learning_rate = [1e-5, 2e-5]\nstrategy = \"zero1\"\ngpus = 8\n\
             save_every_steps = 25\nsave_every_minutes = 7.5",
        )
        .unwrap();
        assert_eq!(labels(&plain), labels(&run));
        for (a, b) in plain.iter().zip(&run) {
            assert_eq!(a.params, b.params);
            assert_eq!(a.run, TrainRun::default());
            assert_eq!(
                b.run,
                TrainRun {
                    strategy: Strategy::Zero1,
                    gpus: Some(8),
                    save_every_steps: 25,
                    save_every_minutes: 7.5,
                }
            );
        }
        let message = |text: &str| cells(text).unwrap_err().to_string();
        let list = message("strategy = [\"single\", \"offload\"]");
        assert!(
            list.contains("m.toml:2") && list.contains("train.strategy"),
            "{list}"
        );
        assert!(list.contains("not a sweep axis"), "{list}");
        let unknown = message("strategy = \"zero3\"");
        assert!(unknown.contains("single, offload, zero1"), "{unknown}");
        let gpus = message("gpus = 4");
        assert!(
            gpus.contains("train.gpus") && gpus.contains("zero1"),
            "{gpus}"
        );
        assert!(message("save_every_minutes = -1").contains("non-negative"));
    }
}
