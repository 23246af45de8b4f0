//! `cft bench annotate --manifest FILE [--examples N] [--json]`: the naive sequential
//! rollouts against the batched engine on the same correct examples of the manifest's first
//! model, checking that both give identical annotations, and timing both (paper Table 4:
//! sequential vs batched annotation time); then the batched engine again under the opt-in
//! early stop (`early_stop = "answer"`), with the share of branches whose verdict it changes.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::prelude::Backend;
use serde_json::json;

use cft::cache::{Cache, RecordStatus, Store};
use cft::cft::criticality::weights;
use cft::cft::rollout::{Example, Settings, batched, batched_with_stats, sequential};
use cft::exec::{self, NoEvents, Options};
use cft::generate::Ending;
use cft::manifest::{EarlyStop, MethodKind, Rule};
use cft::model::decoder::token_rows_run;
use cft::model::{LanguageModel, LoadOptions};
use cft::plan;
use cft::stages::annotate::{GradeJudge, Response, read_lines};

use super::device::{DeviceArg, OnDevice, dispatch};

#[derive(clap::Args, Debug)]
pub struct BenchAnnotateArgs {
    /// The manifest whose first model and training data to use.
    #[arg(long)]
    pub manifest: PathBuf,
    /// How many correct greedy responses to annotate.
    #[arg(long, default_value_t = 8)]
    pub examples: usize,
    /// One JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the examples (prompt and response ids, gold answers), the model directory
    /// and the settings to this JSON file, for `scripts/bench_annotate_transformers.py` to run
    /// the paper's Eq. 7 batches on the same examples.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    #[arg(long, default_value = "cpu", value_name = "cpu|cuda[:N]")]
    pub device: DeviceArg,
    /// Most tokens a branch drafts from the response it perturbs per step
    /// (`[annotate] draft_tokens`); the batched path also runs without drafts, for comparison.
    #[arg(long, default_value_t = 8)]
    pub draft: usize,
}

struct Prepared {
    model_dir: PathBuf,
    responses: Vec<Response>,
    rule: Rule,
    k: usize,
    max_new_tokens: usize,
    template: cft::manifest::Template,
    benchmark: cft::eval::Benchmark,
    json: bool,
    /// Engines the batched path runs side by side (one per core on the CPU).
    threads: usize,
    /// Rows each engine decodes together.
    max_batch: usize,
    draft: usize,
}

pub fn run(cache_dir: &Path, args: BenchAnnotateArgs) -> anyhow::Result<()> {
    let exp = super::load(&args.manifest)?;
    let model = &exp.models[0];
    let (rule, k) = exp
        .methods
        .iter()
        .find_map(|m| match m.kind {
            MethodKind::Cft { rule, k } => Some((rule, k as usize)),
            _ => None,
        })
        .unwrap_or((Rule::Strict, 3));

    // The greedy pass of the first model, built through the DAG if it is not cached.
    let cache = Cache::open(cache_dir, &super::command_line())?;
    let label = cft::contract::label::greedy(&model.name);
    let plan = plan::build(&exp, &cache)?.restricted(|s| s.label == label);
    let stop = AtomicBool::new(false);
    let summary = exec::run(
        &plan,
        &cache,
        &exec::Launcher::Threads(&cft::stages::registry()),
        &NoEvents,
        &stop,
        &Options::default(),
    )?;
    if let Some((stage, error, _)) = summary.failed.first() {
        bail!("{stage}: {error}");
    }
    let spec = plan
        .graph
        .node_weights()
        .find(|s| s.label == label)
        .context("no greedy stage")?;
    let record = cache
        .record(&spec.key)?
        .filter(|r| r.status == RecordStatus::Done)
        .context("the greedy stage did not finish")?;
    let bytes = cache.output(&record, "responses.jsonl")?;
    let responses: Vec<Response> = read_lines::<Response>(&bytes, "responses.jsonl")?
        .into_iter()
        .filter(|r| r.correct)
        .take(args.examples)
        .collect();
    if responses.is_empty() {
        bail!("the model answered none of the training questions correctly; nothing to annotate");
    }
    let model_dir = match spec.bindings.get("model_dir").and_then(|v| v.as_str()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let pretrain = spec
                .inputs
                .iter()
                .filter_map(|k| cache.record(k).ok().flatten())
                .find(|r| r.kind == "pretrain")
                .context("no model")?;
            cache.model_dir(&pretrain)?
        }
    };
    drop(cache);
    if let Some(path) = &args.dump {
        let examples: Vec<serde_json::Value> = responses
            .iter()
            .map(|r| json!({"idx": r.idx, "prompt_ids": r.prompt_ids, "response_ids": r.response_ids, "gold": r.gold}))
            .collect();
        let dump = json!({
            "model_dir": model_dir.canonicalize().unwrap_or_else(|_| model_dir.clone()),
            "ranks": (2..=k).collect::<Vec<_>>(),
            "max_new_tokens": exp.annotate.max_new_tokens,
            "examples": examples,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&dump)?)
            .with_context(|| format!("--dump {}", path.display()))?;
    }
    let prepared = Prepared {
        model_dir,
        responses,
        rule,
        k,
        max_new_tokens: exp.annotate.max_new_tokens as usize,
        template: model.templates.annotate,
        benchmark: cft::stages::eval::benchmark_of(exp.train_data.benchmark()),
        json: args.json,
        threads: match args.device {
            DeviceArg::Cpu => cft::cft::rollout::cpu_threads(),
            DeviceArg::Cuda(_) => 1,
        },
        // as the rollout stage does
        max_batch: match args.device {
            DeviceArg::Cpu => cft::stages::rollout::CPU_MAX_BATCH,
            DeviceArg::Cuda(_) => cft::stages::rollout::GPU_MAX_BATCH,
        },
        draft: args.draft,
    };
    dispatch(args.device, prepared)
}

impl OnDevice for Prepared {
    fn run<B: Backend>(self, device: B::Device, load: LoadOptions) -> anyhow::Result<()> {
        let model = LanguageModel::<B>::load(&self.model_dir, &device, load)
            .with_context(|| format!("loading {}", self.model_dir.display()))?;
        let examples: Vec<Example> = self
            .responses
            .iter()
            .map(|r| Example {
                prompt: r.prompt_ids.clone(),
                response: r.response_ids.clone(),
                open: vec![true; r.response_ids.len()],
            })
            .collect();
        // The rollout stage's end rule and grader.
        let ending = Ending::new(
            &model.tokenizer,
            &model.eos_token_ids,
            cft::stages::prompt::stop_strings(self.template),
            self.max_new_tokens,
        );
        let judge_with = |early_stop| GradeJudge {
            ending: ending.clone(),
            early_stop,
            benchmark: self.benchmark,
            golds: self.responses.iter().map(|r| r.gold.clone()).collect(),
        };
        let judge = judge_with(EarlyStop::None);
        let early = judge_with(EarlyStop::Answer);
        let settings_with = |rank, draft| Settings {
            rank,
            max_new_tokens: self.max_new_tokens,
            max_batch: self.max_batch,
            threads: self.threads,
            draft,
        };
        let settings = |rank| settings_with(rank, self.draft);
        let eos = ending.end_ids();

        // Seconds, token rows run through the model, outcomes per rank.
        type Timed = (f64, u64, Vec<Vec<cft::cft::rollout::Outcome>>);
        let time = |f: &dyn Fn(usize) -> anyhow::Result<Vec<cft::cft::rollout::Outcome>>| -> anyhow::Result<Timed> {
            let (start, rows) = (Instant::now(), token_rows_run());
            let ranks = (2..=self.k).map(f).collect::<anyhow::Result<Vec<_>>>()?;
            Ok((start.elapsed().as_secs_f64(), token_rows_run() - rows, ranks))
        };
        let (sequential_s, sequential_rows, slow) = time(&|rank| {
            Ok(sequential(
                &model.lm,
                &examples,
                eos,
                &judge,
                settings(rank),
            )?)
        })?;
        let plain_steps = std::cell::Cell::new(0usize);
        let (plain_s, plain_rows, plain) = time(&|rank| {
            let (o, s) =
                batched_with_stats(&model.lm, &examples, eos, &judge, settings_with(rank, 0))?;
            plain_steps.set(plain_steps.get() + s.steps);
            Ok(o)
        })?;
        let plain_steps = plain_steps.get();
        let stats = std::cell::Cell::new(cft::generate::DraftStats::default());
        let (batched_s, batched_rows, fast) = time(&|rank| {
            let (o, s) = batched_with_stats(&model.lm, &examples, eos, &judge, settings(rank))?;
            let mut all = stats.get();
            all += s;
            stats.set(all);
            Ok(o)
        })?;
        let stats = stats.get();
        if slow != fast || slow != plain {
            bail!("the batched rollouts differ from the sequential ones: a bug, please report it");
        }
        let (early_s, early_rows, stopped) =
            time(&|rank| Ok(batched(&model.lm, &examples, eos, &early, settings(rank))?))?;
        // Branches whose verdict the early stop changed (the same branches: the alternatives
        // do not depend on how branches end).
        let verdicts = |ranks: &[Vec<cft::cft::rollout::Outcome>]| -> Vec<Option<bool>> {
            ranks
                .iter()
                .flatten()
                .flat_map(|o| o.fail.iter().copied())
                .collect()
        };
        let early_changed = verdicts(&fast)
            .iter()
            .zip(verdicts(&stopped))
            .filter(|(a, b)| **a != *b)
            .count();
        let mut critical = 0usize;
        for i in 0..examples.len() {
            let fails: Vec<Vec<Option<bool>>> =
                fast.iter().map(|rank| rank[i].fail.clone()).collect();
            critical += weights(self.rule, self.k, &fails)?
                .iter()
                .filter(|w| **w != 0.0)
                .count();
        }
        let branches: usize = fast
            .iter()
            .flatten()
            .map(|o| o.alt.iter().flatten().count())
            .sum();
        // Failed branches per rank (what `scripts/bench_annotate_transformers.py` prints too).
        let failed: Vec<usize> = fast
            .iter()
            .map(|rank| {
                rank.iter()
                    .flat_map(|o| &o.fail)
                    .filter(|f| **f == Some(true))
                    .count()
            })
            .collect();
        let tokens: usize = examples.iter().map(|e| e.response.len()).sum();
        let speedup = sequential_s / batched_s.max(1e-9);
        let changed_share = early_changed as f64 / branches.max(1) as f64;
        if self.json {
            println!(
                "{}",
                json!({"sequential_s": sequential_s, "batched_s": batched_s, "speedup": speedup, "branches": branches, "tokens": tokens,
                       "sequential_token_rows": sequential_rows, "batched_token_rows": batched_rows,
                       "no_draft_s": plain_s, "no_draft_token_rows": plain_rows, "no_draft_steps": plain_steps, "draft": self.draft,
                       "draft_steps": stats.steps, "drafted_steps": stats.drafted_steps,
                       "draft_proposed": stats.proposed, "draft_accepted": stats.accepted,
                       "early_stop_s": early_s, "early_stop_token_rows": early_rows,
                       "early_stop_changed": early_changed, "early_stop_changed_share": changed_share,
                       "failed_per_rank": failed})
            );
        } else {
            println!(
                "{} examples, {tokens} response tokens, ranks 2..={}, {branches} branches; identical annotations ({critical} critical tokens; failed branches per rank from 2: {failed:?})",
                examples.len(),
                self.k
            );
            println!(
                "sequential (one branch at a time, full prefill): {sequential_s:.2} s, {sequential_rows} token rows run"
            );
            println!(
                "batched (shared prefixes, continuous batching, {} engine{}), no drafts: {plain_s:.2} s, {plain_rows} token rows run, {plain_steps} decoding steps",
                self.threads,
                if self.threads == 1 { "" } else { "s" }
            );
            println!(
                "batched with drafts of up to {} tokens from the perturbed response: {batched_s:.2} s, {batched_rows} token rows run; \
                 {} decoding steps ({} with drafts), {} draft tokens proposed, {} stood ({:.1}%)",
                self.draft,
                stats.steps,
                stats.drafted_steps,
                stats.proposed,
                stats.accepted,
                100.0 * stats.accepted as f64 / stats.proposed.max(1) as f64
            );
            println!(
                "speedup: {speedup:.1}x; the sequential path runs {:.1}x the token rows, at {:.0} vs {:.0} token rows/s",
                sequential_rows as f64 / batched_rows.max(1) as f64,
                sequential_rows as f64 / sequential_s.max(1e-9),
                batched_rows as f64 / batched_s.max(1e-9)
            );
            println!(
                "batched with early_stop = \"answer\": {early_s:.2} s, {early_rows} token rows run; \
                 verdicts changed: {early_changed} of {branches} branches ({:.2}%)",
                100.0 * changed_share
            );
        }
        Ok(())
    }
}
