//! `report`: the paper's tables and figures from cached records only; it never runs a stage.
//!
//! [`build`] turns the report params and the finished records ([`inputs`]) into one
//! [`Report`] value; the renderers ([`markdown`], [`csv`], [`html`], JSON through serde and
//! [`plots`]) only format it. Keeping the numbers in one serialisable value is what makes the
//! four formats agree and a regenerated report byte-identical: everything is ordered by the
//! manifest (models, methods, cells, benchmarks), and every random choice (the bootstrap)
//! draws from the experiment seed.
//!
//! Whatever a stage has not produced yet is `None` and shows as "—".

pub mod analysis;
pub mod assemble;
pub mod bootstrap;
pub mod compare;
pub mod csv;
pub mod files;
pub mod html;
pub mod inputs;
pub mod load;
pub mod markdown;
pub mod plots;
pub mod sections;
pub mod select;
pub mod tensorboard;
pub mod tfevents;

#[cfg(test)]
mod responses_tests;

use serde::Serialize;

pub use assemble::build;
pub use bootstrap::Interval;
pub use files::{Format, render, write_files};
pub use inputs::{Params, Records};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("report params: {0}")]
    Params(String),
    #[error("plot `{name}`: {message}")]
    Plot { name: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Everything a report shows.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub experiment: String,
    /// The baseline method's label (the delta column is measured against it).
    pub baseline: String,
    /// `report.select` as written in the manifest.
    pub select: String,
    pub confidence: f64,
    pub bootstrap: u64,
    /// `report.timings`: whether wall-clock columns are shown (without them the report's
    /// bytes do not depend on how the run went).
    pub timings: bool,
    /// Column order of every row's per-benchmark values.
    pub benchmarks: Vec<String>,
    /// Table 1/2/6: one block per model family.
    pub blocks: Vec<Block>,
    /// Table 4.
    pub annotation: Vec<AnnotationRow>,
    /// Table 5.
    pub token_stats: Vec<TokenStatsRow>,
    /// Figure 5.
    pub categories: Vec<CategoryRow>,
    /// Tokens trained on, final loss and loss curves of each chosen cell.
    pub training: Vec<TrainingRow>,
    /// Figure 2.
    pub pass_at: Vec<PassCurve>,
    /// Figure 6 (App. C.3): per model, the number-only methods beside the methods they
    /// restrict; empty when the manifest has no `number` method.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub number_only: Vec<NumberOnly>,
    /// Table 3: per model, each method kind's average under each adapter, where the
    /// manifest trains methods both fully and with LoRA; empty otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<AdapterTable>,
    /// Figure 4 (§5.1-5.2): per model, each method kind's average on each set of training
    /// responses (the model's own greedy ones, those plus sampled ones, another model's);
    /// empty when every method trains on the model's own greedy responses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub responses: Vec<ResponsesTable>,
    /// Figure 3: the GRPO runs (`[rl]`), in the manifest's order of models and starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rl: Vec<RlRun>,
    /// How many of the records read ran with each kernel set other than the default one
    /// (`Record::kernels`), whose bytes depend on the CPU.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu_dependent: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Block {
    pub model: String,
    pub rows: Vec<Row>,
}

/// One method (its chosen cell) or the base model. Accuracies are in percent.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The method's name; `base` for the model before fine-tuning.
    pub method: String,
    pub label: String,
    pub cell: Option<String>,
    pub scores: Vec<Option<f64>>,
    pub average: Option<f64>,
    /// Average minus the baseline's average, in points; `None` on the baseline row itself.
    pub delta: Option<f64>,
    pub delta_ci: Option<Interval>,
    pub bench_delta: Vec<Option<f64>>,
    pub bench_ci: Vec<Option<Interval>>,
}

/// Table 4: greedy decoding on the training set and the cost of annotating it.
#[derive(Clone, Debug, Serialize)]
pub struct AnnotationRow {
    pub model: String,
    /// The CFT method whose criticality this row reports.
    pub method: Option<String>,
    pub greedy_correct: Option<u64>,
    pub total: Option<u64>,
    pub accuracy: Option<f64>,
    pub mean_tokens: Option<f64>,
    pub critical_ratio: Option<f64>,
    pub seconds_per_1k: Option<f64>,
}

/// Table 5: confidence, perplexity and entropy of critical vs normal tokens.
#[derive(Clone, Debug, Serialize)]
pub struct TokenStatsRow {
    pub model: String,
    pub method: String,
    pub critical: Option<TokenStats>,
    pub normal: Option<TokenStats>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TokenStats {
    pub tokens: u64,
    /// Mean probability of the chosen token.
    pub confidence: f64,
    /// `exp(mean(-log p))`.
    pub perplexity: f64,
    /// Mean entropy (nats).
    pub entropy: f64,
}

/// Figure 5: each category's share of the critical and of the normal tokens.
#[derive(Clone, Debug, Serialize)]
pub struct CategoryRow {
    pub model: String,
    pub method: String,
    /// `(category, share)` in the fixed order of `cft::categories::ALL`.
    pub critical: Vec<(String, f64)>,
    pub normal: Vec<(String, f64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainingRow {
    pub model: String,
    pub method: String,
    pub cell: String,
    /// Share of the annotated response tokens with non-zero weight (SFT: 1); see
    /// [`analysis::trained_share`].
    pub fraction: Option<f64>,
    pub final_loss: Option<f64>,
    /// Tokens processed: every token of every batch, prompts included, over all epochs.
    pub train_tokens: Option<u64>,
    pub seconds: Option<f64>,
    /// `(step, loss)`.
    pub curve: Vec<(f64, f64)>,
}

/// Figure 6 for one model: in the manifest's order, every SFT method, every CFT method a
/// `number` method restricts (`within`), and every `number` method (SFT-Number, CFT-Number),
/// each at its chosen cell.
#[derive(Clone, Debug, Serialize)]
pub struct NumberOnly {
    pub model: String,
    pub bars: Vec<NumberBar>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NumberBar {
    pub method: String,
    pub label: String,
    pub cell: Option<String>,
    /// Accuracy (%) per benchmark, in `Report::benchmarks`' order, and their average.
    pub scores: Vec<Option<f64>>,
    pub average: Option<f64>,
    /// Share of the annotated response tokens trained on.
    pub fraction: Option<f64>,
}

/// Table 3 for one model: methods of the same kind and settings side by side, one column per
/// adapter (`Full FT`, `LoRA`), each at its chosen cell.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterTable {
    pub model: String,
    /// Adapter titles, the experiment's own `[adapter]` first.
    pub columns: Vec<String>,
    pub rows: Vec<AdapterRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AdapterRow {
    /// The label of the row's first method.
    pub label: String,
    /// Per column: the method trained that way, its chosen cell and average accuracy (%).
    pub cells: Vec<Option<AdapterCell>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AdapterCell {
    pub method: String,
    pub cell: Option<String>,
    pub average: Option<f64>,
}

/// Figure 4 for one model: one row per kind of method (with its settings) that some method
/// trains on sampled or transferred responses, one column per set of responses, in the
/// manifest's order of first appearance; each cell the first method of that kind and
/// responses, at its chosen cell.
#[derive(Clone, Debug, Serialize)]
pub struct ResponsesTable {
    pub model: String,
    /// Column titles: `Greedy`, `Greedy + sampled`, `Transferred from <model>`.
    pub columns: Vec<String>,
    /// Each column's `responses` as the report params name it (`null`: the model's own greedy
    /// responses, `greedy+sampled`, `from:<model>`).
    pub responses: Vec<Option<String>>,
    /// Labelled by the first method of the kind, as Table 3's rows; a cell is `null` where no
    /// method of the kind trains on those responses, or where the method does not train this
    /// model (its own responses transferred to itself).
    pub rows: Vec<AdapterRow>,
    /// §5.1: the `sample` stage's resampling of the questions greedy decoding got wrong.
    pub sampling: Option<Sampling>,
}

/// What the `sample` stage of one model measured (paper §5.1: 1,334 of 1,459 for
/// Qwen2.5-7B).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sampling {
    /// Training questions greedy decoding got wrong.
    pub questions: Option<u64>,
    /// Those a sample answered correctly within `limit` attempts.
    pub solved: Option<u64>,
    /// Mean attempts up to the first correct one, over the solved questions.
    pub attempts_mean: Option<f64>,
    pub limit: Option<u64>,
    /// Samples drawn in all.
    pub samples: Option<u64>,
    pub seconds: Option<f64>,
}

/// Figure 3: one GRPO run, one model from one starting point.
#[derive(Clone, Debug, Serialize)]
pub struct RlRun {
    pub model: String,
    /// The starting method's name (`base`: the model before fine-tuning).
    pub start: String,
    /// Its label (`base` for the base model).
    pub label: String,
    pub cell: Option<String>,
    pub steps: u64,
    /// `(step, value)`: the policy's entropy over the generated tokens, the mean reward.
    pub entropy: Vec<(f64, f64)>,
    pub reward: Vec<(f64, f64)>,
    /// Per evaluated benchmark (`benchmarks` order): `(step, accuracy %)`.
    pub benchmarks: Vec<String>,
    pub accuracy: Vec<Vec<(f64, f64)>>,
    /// The mean reward of the first and of the last fifth of the steps.
    pub reward_first: Option<f64>,
    pub reward_last: Option<f64>,
}

/// Pass@N for N = 1..n of one model (method cell or base) on one benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct PassCurve {
    pub model: String,
    pub benchmark: String,
    pub method: String,
    pub cell: Option<String>,
    pub values: Vec<f64>,
}

/// "—" for what is absent, else the value with `decimals`.
pub fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "—".into(),
    }
}

/// A count with thousands separators: `1,334`.
pub fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A signed delta: `+1.8`, `-0.4`.
pub fn fmt_delta(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:+.1}"),
        _ => "—".into(),
    }
}

/// `[+0.3, +3.4]`
pub fn fmt_interval(i: Option<Interval>) -> String {
    match i {
        Some(i) => format!("[{:+.1}, {:+.1}]", i.low, i.high),
        None => "—".into(),
    }
}
