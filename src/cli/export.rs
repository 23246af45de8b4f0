//! `cft export FILE [--model M] (--method X [--cell C | --best] | --base | --rl START) --out DIR
//! [--force]`:
//! a trained checkpoint out of the cache as a self-contained HF directory (its weights, the
//! base model's config, generation config and tokenizer files; for LoRA also the PEFT
//! adapter under `adapter/`), which transformers and vLLM load as it is. `--best` takes the
//! cell the report chooses (`report.select`); with one cell it is taken without asking.
//! `--base` exports the model before fine-tuning (the pretrained toy, or the manifest's
//! directory). `--rl START` exports the policy the GRPO run from START (a method, or `base`)
//! ended with. Reads the cache only; a run may hold it meanwhile.
//!
//! `--annotations [--method X] --out FILE.jsonl`: the annotated data instead, one line per
//! D_correct example (question, gold, prompt and response ids, response text and pieces) with
//! each method's per-token weights (the criticality or selection stage's; 1 on every token
//! for SFT and DFT), a dataset another trainer can read. `--format parquet` (or an `--out`
//! ending in `.parquet`) writes the same records as one parquet file, snappy-compressed as HF
//! datasets' are: one column per field, `weights` a struct of one list per method, which
//! `datasets.load_dataset("parquet", ...)` reads with the same features as the JSONL.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use cft::cache::{Files, Record, RecordStatus};
use cft::contract::label;
use cft::manifest::ModelSource;
use cft::train::checkpoint::CARRIED_FILES;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The manifest.
    pub file: PathBuf,
    /// Which model (its `name`); may be left out when the manifest has one.
    #[arg(long)]
    pub model: Option<String>,
    /// The method whose fine-tuned checkpoint to export (its `name`).
    #[arg(long, conflicts_with = "base")]
    pub method: Option<String>,
    /// The sweep cell (as the report names it, e.g. `lr1e-4`).
    #[arg(long, conflicts_with = "best")]
    pub cell: Option<String>,
    /// The cell the report chooses for the method.
    #[arg(long)]
    pub best: bool,
    /// The model before fine-tuning instead.
    #[arg(long)]
    pub base: bool,
    /// The policy a GRPO run (`[rl]`) ended with, by its start: a method's name or `base`.
    #[arg(long, value_name = "START", conflicts_with_all = ["method", "base", "cell", "best", "annotations"])]
    pub rl: Option<String>,
    /// The annotated examples and each method's per-token weights (`--out` a file).
    #[arg(long, conflicts_with_all = ["base", "best", "cell"])]
    pub annotations: bool,
    /// The annotations' file format; by default parquet for an `--out` ending in `.parquet`,
    /// JSONL otherwise.
    #[arg(long, value_enum, requires = "annotations")]
    pub format: Option<DataFormat>,
    /// Where to write the directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write into a non-empty folder.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cache: &Path, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let (exp, view, plan, _) = super::plan::resolve(cache, &args.file)?;
    let names: Vec<&str> = exp.models.iter().map(|m| m.name.as_str()).collect();
    let model = match (&args.model, names.as_slice()) {
        (Some(m), _) => exp.models.iter().find(|s| s.name == *m).with_context(|| {
            format!(
                "--model {m}: not a model of the manifest ({})",
                names.join(", ")
            )
        })?,
        (None, [_]) => &exp.models[0],
        (None, _) => bail!("--model: the manifest has several ({})", names.join(", ")),
    };
    if args.out.is_dir()
        && !args.force
        && std::fs::read_dir(&args.out)
            .with_context(|| args.out.display().to_string())?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: give another --out, or --force to write into it",
            args.out.display()
        );
    }
    let files = Files::at(cache);
    let record_of = |stage: &str| -> anyhow::Result<Record> {
        let spec = plan
            .graph
            .node_weights()
            .find(|s| s.label == stage)
            .with_context(|| format!("the manifest has no stage `{stage}`"))?;
        match view.store().record(&spec.key)? {
            Some(r) if r.status == RecordStatus::Done => Ok(r),
            _ => bail!(
                "`{stage}` has not finished: `cft run {}` first (`cft status` shows where it is)",
                args.file.display()
            ),
        }
    };
    if args.annotations {
        if args.out.is_file() && !args.force {
            bail!(
                "{} exists: give another --out, or --force to replace it",
                args.out.display()
            );
        }
        // D_correct's weights: the methods that train on the model's own greedy responses
        // (a sampled or transferred method's other responses are its train stage's inputs).
        let own = |m: &&cft::manifest::Method| m.responses == cft::manifest::Responses::Greedy;
        let methods: Vec<&cft::manifest::Method> = match &args.method {
            Some(name) => {
                let m = exp
                    .methods
                    .iter()
                    .find(|m| m.name == *name)
                    .with_context(|| format!("--method {name}: not a method of the manifest"))?;
                if !own(&m) {
                    anyhow::bail!(
                        "--method {name}: it trains on sampled or transferred responses, and \
                         --annotations exports D_correct, the model's own greedy-correct ones"
                    );
                }
                vec![m]
            }
            None => exp.methods.iter().filter(own).collect(),
        };
        let lines = annotations(&files, &record_of, &model.name, &methods)?;
        let parquet = match args.format {
            Some(f) => f == DataFormat::Parquet,
            None => cft::eval::records::is_parquet(&args.out),
        };
        let bytes = if parquet {
            let names: Vec<&str> = methods.iter().map(|m| m.name.as_str()).collect();
            annotations_parquet(&lines, &names)?
        } else {
            let mut text = String::new();
            for line in &lines {
                text.push_str(&serde_json::to_string(line)?);
                text.push('\n');
            }
            text.into_bytes()
        };
        write(&args.out, &bytes)?;
        println!(
            "wrote {} ({} examples, weights of {})",
            args.out.display(),
            lines.len(),
            methods
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(start) = &args.rl {
        let mut starts: Vec<String> = plan
            .graph
            .node_weights()
            .filter_map(|s| s.label.strip_prefix(&format!("grpo {} ", model.name)))
            .map(String::from)
            .collect();
        starts.sort();
        if !starts.contains(start) {
            bail!(
                "--rl {start}: the manifest runs no GRPO of {} from `{start}` (its [rl] starts: {})",
                model.name,
                match starts.is_empty() {
                    true => "none".to_string(),
                    false => starts.join(", "),
                }
            );
        }
        let record = record_of(&label::grpo(&model.name, start))?;
        let written = copy_checkpoint(&files, &record, &args.out)?;
        println!(
            "wrote {} ({} files: {})",
            args.out.display(),
            written.len(),
            written.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let written = match (&args.method, args.base) {
        (None, false) => bail!("give --method X (with --cell C or --best), --base or --rl START"),
        (Some(_), true) => bail!("--method and --base exclude each other"),
        (None, true) => match &model.source {
            ModelSource::Toy { .. } => {
                let record = record_of(&label::pretrain(&model.name))?;
                copy_dir(&files.model_dir(&record)?, &args.out)?
            }
            ModelSource::Dir(input) => copy_dir(&input.path, &args.out)?,
        },
        (Some(method), false) => {
            let cells: Vec<String> = exp
                .methods
                .iter()
                .find(|m| m.name == *method)
                .map(|m| m.cells.iter().map(|c| c.label.clone()).collect())
                .with_context(|| {
                    let known: Vec<&str> = exp.methods.iter().map(|m| m.name.as_str()).collect();
                    format!(
                        "--method {method}: not a method of the manifest ({})",
                        known.join(", ")
                    )
                })?;
            let cell = match (&args.cell, args.best, cells.as_slice()) {
                (Some(c), _, _) if cells.contains(c) => c.clone(),
                (Some(c), _, _) => {
                    bail!("--cell {c}: not a cell of {method} ({})", cells.join(", "))
                }
                (None, _, [only]) => only.clone(),
                (None, true, _) => best_cell(&view, &plan, &model.name, method)?,
                (None, false, _) => bail!(
                    "{method} has {} cells ({}): give --cell C or --best",
                    cells.len(),
                    cells.join(", ")
                ),
            };
            let record = record_of(&label::train(&model.name, method, &cell))?;
            copy_checkpoint(&files, &record, &args.out)?
        }
    };
    println!(
        "wrote {} ({} files: {})",
        args.out.display(),
        written.len(),
        written.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

/// A trained stage's model directory into `out` and, for LoRA, its PEFT adapter beside the
/// merged weights under `adapter/`; returns the names written.
fn copy_checkpoint(files: &Files, record: &Record, out: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = copy_dir(&files.model_dir(record)?, out)?;
    for name in record.outputs.keys() {
        if let Some(rel) = name.strip_prefix("adapter/") {
            let bytes = files.output(record, name)?;
            write(&out.join("adapter").join(rel), &bytes)?;
            names.push(format!("adapter/{rel}"));
        }
    }
    Ok(names)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    Jsonl,
    Parquet,
}

/// The annotations as a parquet file: the columns of [`Annotated`], lists as parquet lists,
/// `weights` a struct with one `list<float>` per method (in `methods`' order).
fn annotations_parquet(lines: &[Annotated], methods: &[&str]) -> anyhow::Result<Vec<u8>> {
    use std::sync::Arc;

    use arrow_array::builder::{
        Float32Builder, ListBuilder, StringBuilder, UInt32Builder, UInt64Builder,
    };
    use arrow_array::{ArrayRef, RecordBatch, StructArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    let mut idx = UInt64Builder::new();
    let (mut question, mut gold, mut response) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut prompt_ids = ListBuilder::new(UInt32Builder::new());
    let mut response_ids = ListBuilder::new(UInt32Builder::new());
    let mut pieces = ListBuilder::new(StringBuilder::new());
    let mut weights: Vec<ListBuilder<Float32Builder>> = methods
        .iter()
        .map(|_| ListBuilder::new(Float32Builder::new()))
        .collect();
    for a in lines {
        idx.append_value(a.idx);
        question.append_value(&a.question);
        gold.append_value(&a.gold);
        response.append_value(&a.response);
        prompt_ids.values().append_slice(&a.prompt_ids);
        prompt_ids.append(true);
        response_ids.values().append_slice(&a.response_ids);
        response_ids.append(true);
        for p in &a.pieces {
            pieces.values().append_value(p);
        }
        pieces.append(true);
        for (name, b) in methods.iter().zip(weights.iter_mut()) {
            let w = a
                .weights
                .get(*name)
                .with_context(|| format!("{name}: no weights for example {}", a.idx))?;
            b.values().append_slice(w);
            b.append(true);
        }
    }
    let weight_columns: Vec<(Arc<Field>, ArrayRef)> = methods
        .iter()
        .zip(weights.iter_mut())
        .map(|(name, b)| {
            let array: ArrayRef = Arc::new(b.finish());
            (
                Arc::new(Field::new(*name, array.data_type().clone(), true)),
                array,
            )
        })
        .collect();
    let weights: ArrayRef = Arc::new(StructArray::from(weight_columns));
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("idx", Arc::new(idx.finish())),
        ("question", Arc::new(question.finish())),
        ("gold", Arc::new(gold.finish())),
        ("prompt_ids", Arc::new(prompt_ids.finish())),
        ("response_ids", Arc::new(response_ids.finish())),
        ("response", Arc::new(response.finish())),
        ("pieces", Arc::new(pieces.finish())),
        ("weights", weights),
    ];
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|c| c.1).collect())?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(bytes)
}

/// One line of `--annotations`.
#[derive(serde::Serialize)]
struct Annotated {
    idx: u64,
    question: String,
    gold: String,
    prompt_ids: Vec<u32>,
    response_ids: Vec<u32>,
    response: String,
    pieces: Vec<String>,
    /// Per method: one weight per response token.
    weights: std::collections::BTreeMap<String, Vec<f32>>,
}

/// D_correct of `model` with each method's weights.
fn annotations(
    files: &Files,
    record_of: &dyn Fn(&str) -> anyhow::Result<Record>,
    model: &str,
    methods: &[&cft::manifest::Method],
) -> anyhow::Result<Vec<Annotated>> {
    use cft::manifest::MethodKind;
    use cft::stages::annotate::{Response, Weights, read_lines};
    use cft::stages::dataset::Problem;
    let lines = |record: &Record, name: &str| -> anyhow::Result<Vec<u8>> {
        files
            .output(record, name)
            .with_context(|| format!("{name} of `{}`", record.label))
    };
    let greedy = record_of(&label::greedy(model))?;
    let responses: Vec<Response> =
        read_lines(&lines(&greedy, "responses.jsonl")?, "responses.jsonl")?;
    let data = record_of(&label::dataset("train"))?;
    let problems: Vec<Problem> = read_lines(&lines(&data, "problems.jsonl")?, "problems.jsonl")?;
    let questions: std::collections::HashMap<u64, String> =
        problems.into_iter().map(|p| (p.idx, p.question)).collect();
    let mut by_method = Vec::new();
    for m in methods {
        let stage = match &m.kind {
            MethodKind::Sft | MethodKind::Dft => None,
            MethodKind::Cft { rule, k } => {
                Some(label::criticality(model, &label::rule_k(rule.name(), *k)))
            }
            _ => Some(label::selection(model, &m.name)),
        };
        let weights = match stage {
            None => None,
            Some(stage) => {
                let record = record_of(&stage)?;
                let w: Vec<Weights> =
                    read_lines(&lines(&record, "weights.jsonl")?, "weights.jsonl")?;
                Some(
                    w.into_iter()
                        .map(|w| (w.idx, w.weights))
                        .collect::<std::collections::HashMap<_, _>>(),
                )
            }
        };
        by_method.push((m.name.clone(), weights));
    }
    let mut out = Vec::new();
    for r in responses.into_iter().filter(|r| r.correct) {
        let mut weights = std::collections::BTreeMap::new();
        for (name, w) in &by_method {
            let w = match w {
                None => vec![1.0; r.response_ids.len()],
                Some(w) => w
                    .get(&r.idx)
                    .cloned()
                    .with_context(|| format!("{name}: no weights for example {}", r.idx))?,
            };
            weights.insert(name.clone(), w);
        }
        out.push(Annotated {
            idx: r.idx,
            question: questions.get(&r.idx).cloned().unwrap_or_default(),
            gold: r.gold,
            prompt_ids: r.prompt_ids,
            response_ids: r.response_ids,
            response: r.text,
            pieces: r.pieces,
            weights,
        });
    }
    Ok(out)
}

/// The cell the report chooses for `method` of `model`, once its evaluations are in.
fn best_cell(
    view: &cft::cache::View,
    plan: &cft::plan::Plan,
    model: &str,
    method: &str,
) -> anyhow::Result<String> {
    let report = super::report::report_of(view, plan)?;
    report
        .blocks
        .iter()
        .filter(|b| b.model == model)
        .flat_map(|b| &b.rows)
        .find(|r| r.method == method)
        .and_then(|r| r.cell.clone())
        .with_context(|| {
            format!(
                "--best: the report has not chosen a cell of {method} yet (its evaluations are not \
                 all in: `cft status` shows them); give --cell C"
            )
        })
}

/// Copies an HF directory's weights and carried files (config, generation config, tokenizer).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(from).with_context(|| from.display().to_string())?;
    let mut files: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".safetensors")
                || n == "model.safetensors.index.json"
                || CARRIED_FILES.contains(&n.as_str())
        })
        .collect();
    files.sort();
    if !files.iter().any(|n| n.ends_with(".safetensors")) {
        bail!("{}: no weights (*.safetensors) to export", from.display());
    }
    for name in &files {
        let bytes = std::fs::read(from.join(name))
            .with_context(|| from.join(name).display().to_string())?;
        write(&to.join(name), &bytes)?;
        names.push(name.clone());
    }
    // transformers and vLLM read the end tokens from `generation_config.json`; a model
    // without one (the toy family) gets the one transformers would derive from its config.
    if !files.iter().any(|n| n == "generation_config.json") {
        let path = from.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let config: serde_json::Value =
            serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        let mut generation = serde_json::Map::new();
        generation.insert("_from_model_config".into(), serde_json::Value::Bool(true));
        for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
            if let Some(v) = config.get(key).filter(|v| !v.is_null()) {
                generation.insert(key.into(), v.clone());
            }
        }
        let bytes = serde_json::to_vec_pretty(&serde_json::Value::Object(generation))?;
        write(&to.join("generation_config.json"), &bytes)?;
        names.push("generation_config.json".into());
    }
    Ok(names)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    std::fs::write(path, bytes).with_context(|| path.display().to_string())
}
