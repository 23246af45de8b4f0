//! The one conversion from a merged manifest tree to an [`Experiment`]: defaults, validation
//! and sweep expansion happen here and nowhere else.

use std::collections::BTreeSet;

use super::error::{ManifestError, Sink, did_you_mean};
use super::node::{Table, Value};
use super::read::{At, Reader};
use super::types::*;

type Result<T> = std::result::Result<T, ManifestError>;

/// The eleven benchmarks of the paper, named as in the Qwen2.5-Math harness, and MedQA.
pub const BENCHMARKS: [&str; 12] = [
    "gsm8k",
    "math",
    "svamp",
    "asdiv",
    "mawps",
    "carp_en",
    "tabmwp",
    "minerva_math",
    "gaokao2023en",
    "olympiadbench",
    "college_math",
    "medqa",
];

/// The names of the prompt templates ([`Template`]).
pub const TEMPLATES: [&str; 6] = {
    let mut names = [""; 6];
    let mut i = 0;
    while i < 6 {
        names[i] = Template::ALL[i].name();
        i += 1;
    }
    names
};

/// The projections LoRA can wrap, by HF name (`train::lora` finds them in each layer).
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

pub(super) const SPLITS: [&str; 3] = ["train", "test", "hard"];

pub fn resolve(
    root: &Table,
    files: Vec<std::path::PathBuf>,
    root_loc: super::Loc,
) -> Result<Experiment> {
    let sink = Sink::default();
    let mut r = Reader::new(root, "", root_loc, &sink);
    r.reject_unknown(&ROOT_KEYS)?;
    r.node("include"); // consumed by the loader

    // Each section is read on its own: one that cannot be read records its error and the
    // others are still read, so that one pass reports every mistake.
    let experiment = sink.recover(read_experiment(&mut r));
    let seed = experiment.as_ref().map_or(0, |e| e.1);
    // `[annotate]` and `[eval]` first: their templates are the defaults of every model.
    let annotate = r.table("annotate")?;
    let (annotate, annotate_template) = sink
        .recover(read_annotate(annotate))
        .unwrap_or_else(|| (Annotate::default(), Template::Qwen25MathCot));
    let eval = r.table("eval")?;
    let before = sink.count();
    let eval = sink.recover(super::evaluate::read_eval(eval, seed));
    let eval_whole = sink.count() == before;
    let defaults = Templates {
        annotate: annotate_template,
        eval: eval.as_ref().map_or(Template::Qwen25MathCot, |e| e.1),
    };
    let models = read_models(&mut r, seed, &defaults)?;
    let train_data = sink.recover(read_data(&mut r, seed));
    let adapter = r.table("adapter")?;
    let adapter = sink.recover(read_adapter(adapter));
    let global_train = match r.node("train") {
        Some(n) => match &n.value {
            Value::Table(t) => t.clone(),
            other => {
                sink.push(ManifestError::invalid(
                    &n.loc,
                    "train",
                    format!("expected a table, found {}", other.type_name()),
                ));
                Table::default()
            }
        },
        None => Table::default(),
    };
    let before = sink.count();
    let model_names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let methods = super::methods::read_methods(&mut r, &global_train, seed, &model_names)?;
    let sample = r.table("sample")?;
    let sample = sink.recover(read_sample(sample, seed, &annotate));
    let methods_whole = sink.count() == before && !methods.is_empty();
    // The report names methods and benchmarks: read it only when both were read whole, or
    // every reference to what failed would be reported again.
    let report_table = r.table("report")?;
    let report = match (&eval, eval_whole && methods_whole) {
        (Some((eval, _)), true) => {
            sink.recover(super::evaluate::read_report(report_table, &methods, eval))
        }
        _ => None,
    };
    // `[rl]` names methods, their cells, benchmarks and the training data.
    let rl_table = r.table("rl")?;
    let rl = match (rl_table, &eval, &train_data, methods_whole) {
        (Some(t), Some((eval, _)), Some(train_data), true) => {
            sink.recover(super::rl::read_rl(t, seed, &methods, eval, train_data))
        }
        _ => None,
    };
    if let Some(error) = sink.take() {
        return Err(error);
    }
    match (experiment, eval, train_data, adapter, report, sample) {
        (
            Some((name, seed)),
            Some((eval, _)),
            Some(train_data),
            Some(adapter),
            Some(report),
            Some(sample),
        ) => Ok(Experiment {
            name,
            seed,
            files,
            models,
            train_data,
            annotate,
            methods,
            adapter,
            eval,
            report,
            rl,
            sample,
        }),
        // Every `None` above recorded its error, so `take` returned it; this is not reached.
        _ => Err(r.error("", "the manifest could not be read")),
    }
}

/// The top-level keys of a manifest.
const ROOT_KEYS: [&str; 12] = [
    "sample",
    "include",
    "experiment",
    "model",
    "data",
    "annotate",
    "method",
    "adapter",
    "train",
    "eval",
    "report",
    "rl",
];

/// `[experiment]`: its name and seed.
fn read_experiment(r: &mut Reader<'_>) -> Result<(String, u64)> {
    let Some(mut t) = r.table("experiment")? else {
        return Err(r.error(
            "experiment",
            "missing required table `[experiment]` (with `name`)",
        ));
    };
    let name = t.require_string("name");
    let seed = t.count("seed", 0)?.map_or(0, |s| s.value);
    t.finish()?;
    let name = name?;
    check_name(&name)?;
    Ok((name.value, seed))
}

/// `[data]`: the training source.
fn read_data(r: &mut Reader<'_>, seed: u64) -> Result<DataSource> {
    let Some(mut d) = r.table("data")? else {
        return Err(r.error("data", "missing required table `[data]` with `train`"));
    };
    let train = d.table("train")?;
    let missing = d.error("train", "missing required key");
    d.finish()?;
    match train {
        Some(t) => read_source(t, seed, "train"),
        None => Err(missing),
    }
}

/// Names become parts of labels and file names: keep them simple.
pub(super) fn check_name(name: &At<String>) -> Result<()> {
    let ok = !name.value.is_empty()
        && name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::invalid(
            &name.loc,
            &name.key,
            format!(
                "`{}` must be non-empty and use only letters, digits, `-`, `_` and `.`",
                name.value
            ),
        ))
    }
}

/// The keys of a `[[model]]` table.
const MODEL_KEYS: [&str; 4] = ["name", "path", "toy", "template"];

/// Every `[[model]]`; one that cannot be read records its error and the others are read.
fn read_models(r: &mut Reader<'_>, seed: u64, defaults: &Templates) -> Result<Vec<ModelSpec>> {
    let tables = r.tables("model")?;
    if tables.is_empty() {
        r.sink()
            .push(r.error("model", "at least one `[[model]]` is required"));
    }
    let mut seen = BTreeSet::new();
    let mut models = Vec::new();
    for t in tables {
        let sink = t.sink().clone();
        if let Some(model) = sink.recover(read_model(t, seed, defaults, &mut seen)) {
            models.push(model);
        }
    }
    Ok(models)
}

fn read_model(
    mut t: Reader<'_>,
    seed: u64,
    defaults: &Templates,
    seen: &mut BTreeSet<String>,
) -> Result<ModelSpec> {
    // Its unknown keys are reported even when a value stops the reading.
    t.reject_unknown(&MODEL_KEYS)?;
    {
        let name = t.require_string("name")?;
        check_name(&name)?;
        if !seen.insert(name.value.clone()) {
            return Err(ManifestError::invalid(
                &name.loc,
                &name.key,
                format!("model `{}` is defined twice", name.value),
            ));
        }
        let path = t.path("path")?;
        let written = t.string("path")?;
        let toy = t.table("toy")?;
        // One key for both: a model is evaluated with the prompt it was annotated, and so
        // fine-tuned, with.
        let templates = match t.template("template")? {
            Some(own) => Templates {
                annotate: own,
                eval: own,
            },
            None => defaults.clone(),
        };
        let source = match (path, written, toy) {
            (Some(p), Some(w), None) => ModelSource::Dir(InputPath {
                path: p.value,
                written: super::node::expanded(&w.value),
                loc: p.loc,
                key: p.key,
            }),
            (None, _, Some(toy)) => {
                let (model, corpus) = read_toy(toy, seed)?;
                ModelSource::Toy { model, corpus }
            }
            (Some(_), _, Some(_)) => {
                return Err(t.error("toy", "a model has either `path` or `toy`, not both"));
            }
            _ => {
                return Err(t.error(
                    "path",
                    "missing: give `path` (an HF model directory) or a `toy` table",
                ));
            }
        };
        t.finish()?;
        Ok(ModelSpec {
            name: name.value,
            source,
            templates,
        })
    }
}

fn read_toy(mut t: Reader<'_>, seed: u64) -> Result<(ToyModel, DataSource)> {
    let architecture = t
        .choice("architecture", &["llama", "qwen2"])?
        .map_or("llama".into(), |a| a.value);
    let hidden_size = t.count("hidden_size", 8)?.map_or(128, |v| v.value);
    let num_heads = t.count("num_heads", 1)?.map_or(4, |v| v.value);
    let heads_at = t.loc().clone();
    let num_kv_heads = t.count("num_kv_heads", 1)?.map_or(num_heads, |v| v.value);
    if hidden_size % num_heads != 0 || num_heads % num_kv_heads != 0 {
        return Err(ManifestError::invalid(
            &heads_at,
            &t.key_path("num_heads"),
            format!(
                "hidden_size {hidden_size} must divide by num_heads {num_heads}, which must divide by num_kv_heads {num_kv_heads}"
            ),
        ));
    }
    let mut corpus = default_corpus(seed);
    let model = ToyModel {
        architecture,
        hidden_size,
        num_layers: t.count("num_layers", 1)?.map_or(4, |v| v.value),
        num_heads,
        num_kv_heads,
        intermediate_size: t
            .count("intermediate_size", 1)?
            .map_or(hidden_size * 3, |v| v.value),
        max_position: t.count("max_position", 16)?.map_or(512, |v| v.value),
        vocab_size: t.count("vocab_size", 32)?.map_or(512, |v| v.value),
        pretrain: match t.table("pretrain")? {
            Some(mut p) => {
                if let Some(c) = p.table("corpus")? {
                    corpus = read_source(c, seed, "train")?;
                }
                let out = Pretrain {
                    steps: p.count("steps", 1)?.map_or(2000, |v| v.value),
                    batch_size: p.count("batch_size", 1)?.map_or(32, |v| v.value),
                    learning_rate: positive(p.float("learning_rate")?)?.unwrap_or(1e-3),
                    warmup_ratio: ratio(p.float("warmup_ratio")?)?.unwrap_or(0.03),
                    seed: p.count("seed", 0)?.map_or(seed, |v| v.value),
                };
                p.finish()?;
                out
            }
            None => Pretrain {
                steps: 2000,
                batch_size: 32,
                learning_rate: 1e-3,
                warmup_ratio: 0.03,
                seed,
            },
        },
    };
    t.finish()?;
    Ok((model, corpus))
}

fn default_corpus(seed: u64) -> DataSource {
    DataSource::Synthetic(Synthetic {
        split: "train".into(),
        n: 20_000,
        seed,
        min_steps: 1,
        max_steps: 4,
        choices: 0,
    })
}

/// `{ path = "...", format = "gsm8k" }` or `{ synthetic = { split = "train", n = 2000 } }`.
pub(super) fn read_source(mut t: Reader<'_>, seed: u64, default_split: &str) -> Result<DataSource> {
    let limit = t.count("limit", 1)?.map(|v| v.value);
    let path = t.path("path")?;
    let written = t.string("path")?;
    let synthetic = t.table("synthetic")?;
    let source = match (path, written, synthetic) {
        (Some(p), Some(w), None) => {
            let format = t
                .choice("format", &BENCHMARKS)?
                .map_or("gsm8k".into(), |f| f.value);
            DataSource::File {
                input: InputPath {
                    path: p.value,
                    written: super::node::expanded(&w.value),
                    loc: p.loc,
                    key: p.key,
                },
                format,
                limit,
            }
        }
        (None, _, Some(mut s)) => {
            let split = s
                .choice("split", &SPLITS)?
                .map_or(default_split.to_string(), |v| v.value);
            let hard = split == "hard";
            let min_steps = s.count("min_steps", 1)?;
            let max_steps = s.count("max_steps", 1)?;
            let (lo, hi) = (
                min_steps
                    .as_ref()
                    .map_or(if hard { 3 } else { 1 }, |v| v.value),
                max_steps
                    .as_ref()
                    .map_or(if hard { 4 } else { 2 }, |v| v.value),
            );
            if lo > hi {
                let at = max_steps.or(min_steps).map(|v| (v.loc, v.key));
                let (loc, key) = at.unwrap_or((s.loc().clone(), s.key_path("max_steps")));
                return Err(ManifestError::invalid(
                    &loc,
                    &key,
                    format!("min_steps {lo} exceeds max_steps {hi}"),
                ));
            }
            let out = Synthetic {
                // Splits draw from disjoint streams so test problems are not training problems.
                seed: s.count("seed", 0)?.map_or(seed, |v| v.value),
                n: s.count("n", 1)?.map_or(1000, |v| v.value),
                split,
                min_steps: lo,
                max_steps: hi,
                choices: match s.count("choices", 2)? {
                    Some(c) if c.value > 5 => {
                        return Err(ManifestError::invalid(
                            &c.loc,
                            &c.key,
                            format!("{} options, but letters A-E name at most 5", c.value),
                        ));
                    }
                    c => c.map_or(0, |c| c.value),
                },
            };
            s.finish()?;
            if let Some(n) = limit {
                return Err(t.error(
                    "limit",
                    format!("use `synthetic.n` instead of `limit` ({n}) for generated data"),
                ));
            }
            DataSource::Synthetic(out)
        }
        (Some(_), _, Some(_)) => {
            return Err(t.error(
                "synthetic",
                "a data source has either `path` or `synthetic`, not both",
            ));
        }
        _ => {
            return Err(t.error(
                "path",
                "missing: give `path` (a JSONL file) or a `synthetic` table",
            ));
        }
    };
    t.finish()?;
    Ok(source)
}

/// `[annotate]`, and its `template` (the default of every model that does not set its own).
fn read_annotate(t: Option<Reader<'_>>) -> Result<(Annotate, Template)> {
    let mut out = Annotate::default();
    let mut template = Template::Qwen25MathCot;
    if let Some(mut t) = t {
        if let Some(v) = t.template("template")? {
            template = v;
        }
        if let Some(v) = t.choice("early_stop", &["none", "answer"])? {
            out.early_stop = match v.value.as_str() {
                "answer" => EarlyStop::Answer,
                _ => EarlyStop::None,
            };
        }
        if let Some(v) = t.count("max_new_tokens", 1)? {
            out.max_new_tokens = v.value;
        }
        out.limit = t.count("limit", 1)?.map(|v| v.value);
        if let Some(v) = t.count("draft_tokens", 0)? {
            out.draft_tokens = v.value;
        }
        t.finish()?;
    }
    Ok((out, template))
}

/// `[sample]` (paper §5.1), its defaults the paper's: 100 attempts at temperature 1.
fn read_sample(t: Option<Reader<'_>>, seed: u64, annotate: &Annotate) -> Result<SampleSettings> {
    let mut out = SampleSettings {
        attempts: 100,
        temperature: 1.0,
        top_p: 1.0,
        seed,
        max_new_tokens: annotate.max_new_tokens,
    };
    let Some(mut t) = t else {
        return Ok(out);
    };
    if let Some(v) = t.count("attempts", 1)? {
        out.attempts = v.value;
    }
    if let Some(v) = t.float("temperature")? {
        if !(v.value > 0.0 && v.value.is_finite()) {
            return Err(ManifestError::invalid(
                &v.loc,
                &v.key,
                format!("must be above 0, got {}", v.value),
            ));
        }
        out.temperature = v.value;
    }
    if let Some(v) = t.float("top_p")? {
        if !(v.value > 0.0 && v.value <= 1.0) {
            return Err(ManifestError::invalid(
                &v.loc,
                &v.key,
                format!("must be in (0, 1], got {}", v.value),
            ));
        }
        out.top_p = v.value;
    }
    if let Some(v) = t.count("seed", 0)? {
        out.seed = v.value;
    }
    if let Some(v) = t.count("max_new_tokens", 1)? {
        out.max_new_tokens = v.value;
    }
    t.finish()?;
    Ok(out)
}

pub(super) fn read_adapter(t: Option<Reader<'_>>) -> Result<Adapter> {
    let Some(mut t) = t else {
        return Ok(Adapter::Full);
    };
    let kind = t
        .choice("kind", &["full", "lora"])?
        .map_or("full".into(), |k| k.value);
    let adapter = if kind == "full" {
        Adapter::Full
    } else {
        let rank = t.count("rank", 1)?.map_or(16, |v| v.value);
        let targets = match t.strings("target_modules")? {
            Some(list) => {
                if list.is_empty() {
                    return Err(t.error("target_modules", "must name at least one module"));
                }
                let mut names = Vec::new();
                for m in list {
                    if !LORA_TARGETS.contains(&m.value.as_str()) {
                        let hint = did_you_mean(&m.value, &LORA_TARGETS)
                            .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                        return Err(ManifestError::invalid(
                            &m.loc,
                            &m.key,
                            format!("`{}` is not a projection of the decoder{hint}", m.value),
                        ));
                    }
                    names.push(m.value);
                }
                names
            }
            None => LORA_TARGETS.iter().map(|s| s.to_string()).collect(),
        };
        Adapter::Lora {
            rank,
            alpha: positive(t.float("alpha")?)?.unwrap_or(2.0 * rank as f64),
            dropout: ratio(t.float("dropout")?)?.unwrap_or(0.05),
            target_modules: targets,
        }
    };
    t.finish()?;
    Ok(adapter)
}

pub(super) fn positive(v: Option<At<f64>>) -> Result<Option<f64>> {
    match v {
        Some(x) if !(x.value > 0.0 && x.value.is_finite()) => Err(ManifestError::invalid(
            &x.loc,
            &x.key,
            format!("must be a positive number, got {}", x.value),
        )),
        other => Ok(other.map(|x| x.value)),
    }
}

pub(super) fn ratio(v: Option<At<f64>>) -> Result<Option<f64>> {
    match v {
        Some(x) if !(0.0..1.0).contains(&x.value) => Err(ManifestError::invalid(
            &x.loc,
            &x.key,
            format!("must be in [0, 1), got {}", x.value),
        )),
        other => Ok(other.map(|x| x.value)),
    }
}
