//! The resolved experiment: what the planner sees. Every required value is present and
//! valid; sweeps are already expanded into cells. Serialisable, because stage parameters are
//! built from these values and hashed into stage keys.

use std::path::PathBuf;

use serde::Serialize;

use super::error::Loc;

#[derive(Clone, Debug)]
pub struct Experiment {
    pub name: String,
    pub seed: u64,
    /// The manifest and everything it includes, in load order.
    pub files: Vec<PathBuf>,
    pub models: Vec<ModelSpec>,
    pub train_data: DataSource,
    pub annotate: Annotate,
    pub methods: Vec<Method>,
    pub adapter: Adapter,
    pub eval: Eval,
    pub report: Report,
    /// `[rl]`: GRPO runs, when the manifest has the table.
    pub rl: Option<Rl>,
    /// `[sample]`: how the questions greedy decoding got wrong are resampled (paper §5.1), for
    /// the methods with `responses = "greedy+sampled"`.
    pub sample: SampleSettings,
}

/// `[sample]` (paper §5.1): each training question the model answered wrongly under greedy
/// decoding is sampled until an answer is correct or `attempts` are spent.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleSettings {
    /// The most samples drawn per question (paper: 100).
    pub attempts: u64,
    /// Paper: 1.
    pub temperature: f64,
    /// Nucleus; 1: the whole distribution (the paper names no truncation).
    pub top_p: f64,
    /// Sample `a` of question `idx` draws from a stream of its own, mixed from this seed.
    pub seed: u64,
    /// The budget of a sampled response (defaults to `[annotate] max_new_tokens`).
    pub max_new_tokens: u64,
}

/// Where a method's training responses come from (paper §4 and §5.1-5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Responses {
    /// The model's own greedy-correct responses, D_correct (§4).
    Greedy,
    /// D_correct and, for each question greedy decoding got wrong, its first correct sample
    /// (§5.1).
    GreedySampled,
    /// Another model's greedy-correct responses (§5.2, `responses_from`).
    From(String),
}

impl Responses {
    /// The name the report groups rows by: none for a model's own greedy responses.
    pub fn report_name(&self) -> Option<String> {
        match self {
            Responses::Greedy => None,
            Responses::GreedySampled => Some("greedy+sampled".into()),
            Responses::From(m) => Some(format!("from:{m}")),
        }
    }
}

/// `score = { by, top, cell }` (paper §5.1): the critical tokens of responses the rollouts did
/// not annotate are the `top` share of each response's tokens by
/// s_t = P_cft(y_t | Q, y_<t) − P_base(y_t | Q, y_<t), P_cft being CFT method `by`'s checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreSpec {
    pub by: String,
    /// Its cell; absent: its only cell, or the one `[report] select` picks.
    pub cell: Option<String>,
    pub top: f64,
}

#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub name: String,
    pub source: ModelSource,
    pub templates: Templates,
}

/// A prompt template: the harness's three, the model's own chat template, and a bare
/// `Question: …\nAnswer:` prompt for the toy family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Template {
    /// Few-shot "Question: … Answer:" blocks (the harness's `cot`).
    #[serde(rename = "cot")]
    Cot,
    /// ChatML with the boxed instruction as the system message.
    #[serde(rename = "qwen25-math-cot")]
    Qwen25MathCot,
    /// ChatML with the boxed instruction after the question.
    #[serde(rename = "qwen-boxed")]
    QwenBoxed,
    /// The model's own chat template.
    #[serde(rename = "chat")]
    Chat,
    /// `Question: {question}\nAnswer:`, what the toy family is trained on.
    #[serde(rename = "plain")]
    Plain,
    /// ChatML asking for the letter of the chosen option within `\boxed{}` (multiple choice,
    /// paper §5.3).
    #[serde(rename = "qwen25-choice-cot")]
    Qwen25ChoiceCot,
}

impl Template {
    pub const ALL: [Template; 6] = [
        Template::Cot,
        Template::Qwen25MathCot,
        Template::QwenBoxed,
        Template::Chat,
        Template::Plain,
        Template::Qwen25ChoiceCot,
    ];

    /// As the manifest writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Template::Cot => "cot",
            Template::Qwen25MathCot => "qwen25-math-cot",
            Template::QwenBoxed => "qwen-boxed",
            Template::Chat => "chat",
            Template::Plain => "plain",
            Template::Qwen25ChoiceCot => "qwen25-choice-cot",
        }
    }
}

/// The prompt templates of one model: the model's own `template` when it has one (a family
/// may need another prompt than the rest), else `[annotate].template` and `[eval].template`.
#[derive(Clone, Debug, PartialEq)]
pub struct Templates {
    /// The greedy pass and the rollouts (what D_correct's prompts are, and so training's).
    pub annotate: Template,
    /// Every evaluation of the model, base and fine-tuned.
    pub eval: Template,
}

#[derive(Clone, Debug)]
pub enum ModelSource {
    /// An HF-format directory (config.json, safetensors, tokenizer files).
    Dir(InputPath),
    /// The built-in toy family, trained from scratch by a `pretrain` stage on `corpus`.
    Toy { model: ToyModel, corpus: DataSource },
}

/// A file or directory the experiment reads, with where the manifest named it.
#[derive(Clone, Debug)]
pub struct InputPath {
    pub path: PathBuf,
    /// As written in the manifest (relative paths stay relative: keys never hold absolute paths).
    pub written: String,
    pub loc: Loc,
    pub key: String,
}

/// The toy model's shape and pretraining: the `pretrain` stage's params as they are.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToyModel {
    pub architecture: String,
    pub hidden_size: u64,
    pub num_layers: u64,
    pub num_heads: u64,
    pub num_kv_heads: u64,
    pub intermediate_size: u64,
    pub max_position: u64,
    pub vocab_size: u64,
    pub pretrain: Pretrain,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pretrain {
    pub steps: u64,
    pub batch_size: u64,
    pub learning_rate: f64,
    pub warmup_ratio: f64,
    pub seed: u64,
}

#[derive(Clone, Debug)]
pub enum DataSource {
    /// A JSONL file; `format` says how to read question and gold answer.
    File {
        input: InputPath,
        format: String,
        limit: Option<u64>,
    },
    /// The built-in generator of GSM8K-format arithmetic word problems.
    Synthetic(Synthetic),
}

impl DataSource {
    /// The benchmark whose grader judges answers to these questions: the file's format, or
    /// GSM8K for the generator's problems (MedQA for its multiple-choice ones).
    pub fn benchmark(&self) -> &str {
        match self {
            DataSource::File { format, .. } => format,
            DataSource::Synthetic(s) if s.choices > 0 => "medqa",
            DataSource::Synthetic(_) => "gsm8k",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synthetic {
    pub split: String,
    pub n: u64,
    pub seed: u64,
    pub min_steps: u64,
    pub max_steps: u64,
    /// Multiple choice with this many options (2-5; 0: free-form GSM8K answers): the
    /// question lists the options as MedQA is read (`Answer Choices: (A) …`), the gold
    /// answer is the letter and the grader MedQA's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub choices: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `[annotate]` without its `template`, which each model resolves ([`ModelSpec::templates`]).
#[derive(Clone, Debug, Serialize)]
pub struct Annotate {
    pub max_new_tokens: u64,
    pub limit: Option<u64>,
    pub early_stop: EarlyStop,
    /// Tokens a branch drafts from the response it perturbs per decoding step (0: none). How
    /// the branches decode, not what they say: a binding of the rollout stages.
    pub draft_tokens: u64,
}

impl Default for Annotate {
    /// What an absent `[annotate]` means.
    fn default() -> Self {
        Annotate {
            max_new_tokens: 512,
            limit: None,
            early_stop: EarlyStop::None,
            draft_tokens: DRAFT_TOKENS,
        }
    }
}

/// `[annotate] draft_tokens` unless set: none, since on the CPU backend wide steps cost more
/// than the steps they save (`cft bench annotate --draft N`, `cft bench generate --draft N`;
/// README, "Measured"); to be measured on a GPU (`scripts/gpu-check.sh`).
pub const DRAFT_TOKENS: u64 = 0;

/// When a counterfactual branch may stop before the end rule of the greedy response it
/// perturbs (`[annotate] early_stop`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EarlyStop {
    /// Never: each branch runs to its end token, stop string or budget (the paper's Eq. 5).
    #[default]
    None,
    /// Once its answer is settled: a closed final `\boxed{}` that only a new box could
    /// change (`cft::answer::settled`).
    Answer,
}

#[derive(Clone, Debug)]
pub struct Method {
    pub name: String,
    pub label: String,
    pub kind: MethodKind,
    pub cells: Vec<TrainCell>,
    /// The method's own `adapter` table, where it trains otherwise than the experiment's
    /// `[adapter]` (Table 3 trains SFT and CFT both fully and with LoRA in one manifest).
    pub adapter: Option<Adapter>,
    /// The responses it trains on (`responses`, `responses_from`).
    pub responses: Responses,
    /// How responses without rollouts get critical tokens (CFT on sampled or transferred
    /// responses).
    pub score: Option<ScoreSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum MethodKind {
    /// Eq. 1: every response token.
    Sft,
    /// Wu et al. 2025a: each token's loss scaled by its (stopped) probability.
    Dft,
    /// Eq. 6/8: tokens whose substitutions by ranks 2..k fail (Strict), any fails (Union),
    /// or weighted by the number of failures (Graded).
    Cft { rule: Rule, k: u64 },
    /// Highest-entropy tokens, as many as the matched CFT method selects.
    Entropy { matched: String, scope: MatchScope },
    /// Tokens receiving the most attention, as many as the matched CFT method selects.
    Attention { matched: String, scope: MatchScope },
    /// Random tokens, as many as the matched CFT method selects.
    Random { matched: String },
    /// Numeric tokens (SFT-Number), or numeric tokens among a CFT method's critical ones
    /// (CFT-Number), paper Appendix C.3.
    Number { within: Option<String> },
}

/// Where a score-ranked selection (Entropy, Attention) copies its CFT method's token count:
/// in each example (the same number of tokens per example as CFT marks there), or over the
/// whole of D_correct (the top share of all tokens, the share CFT marks overall). Paper §4.1
/// says only that "the fraction of tokens selected is matched".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchScope {
    Example,
    Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    Strict,
    Union,
    Graded,
}

impl Rule {
    /// As the manifest writes it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Strict => "strict",
            Rule::Union => "union",
            Rule::Graded => "graded",
        }
    }
}

/// One cell of a method's hyper-parameter sweep.
#[derive(Clone, Debug, Serialize)]
pub struct TrainCell {
    /// The varying values only, e.g. `bs16-lr2e-6`; `default` when nothing varies.
    pub label: String,
    pub params: TrainParams,
    /// How it runs (never in its key).
    pub run: TrainRun,
}

/// How a train cell runs: where its optimiser state lives and how often its state is saved.
/// None of it changes the trained weights (on the CPU, bit for bit), so none of it enters
/// the stage key: it reaches the stage as bindings.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct TrainRun {
    pub strategy: Strategy,
    /// `zero1`: how many of the stage's GPUs it shards over (all of them when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u64>,
    /// Save the resumable state every this many optimiser steps (0: not by steps) ...
    pub save_every_steps: u64,
    /// ... or once this many minutes passed since the last save (0: not by time).
    pub save_every_minutes: f64,
}

impl Default for TrainRun {
    fn default() -> Self {
        Self {
            strategy: Strategy::Single,
            gpus: None,
            save_every_steps: 100,
            save_every_minutes: 30.0,
        }
    }
}

/// Declares a manifest choice as an enum serialised by its manifest name.
macro_rules! choice {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The manifest's names, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// As the manifest writes it.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The value named `name`, if it is one.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }
    };
}

choice! {
    /// The learning-rate schedule after warmup (`train.schedule`).
    Schedule { Cosine = "cosine", Linear = "linear", Constant = "constant" }
}

choice! {
    /// Where a full fine-tuning keeps its optimiser state (`train.strategy`): all on one
    /// device; f32 master weights and Adam moments in host memory, updated by CPU threads
    /// (ZeRO-Offload); or data parallel over the GPUs of a node with the optimiser state
    /// sharded across them (ZeRO stage 1).
    Strategy { Single = "single", Offload = "offload", Zero1 = "zero1" }
}

choice! {
    /// The dtype the weights train in (`train.precision`).
    Precision { F32 = "f32", Bf16 = "bf16", F16 = "f16" }
}

choice! {
    /// `torch.optim.AdamW` (decoupled weight decay) or `torch.optim.Adam` (`train.optimizer`).
    Optimizer { Adamw = "adamw", Adam = "adam" }
}

choice! {
    /// What the loss is divided by (`train.loss_normalization`): each micro-batch's weighted
    /// mean averaged over the step's micro-batches (OpenRLHF), the optimiser batch's weight
    /// sum, or D_correct's (Eq. 8).
    LossNormalization { MicroBatch = "micro-batch", Batch = "batch", Dataset = "dataset" }
}

choice! {
    /// An epoch's last, incomplete batch (`train.last_batch`): one more, smaller step, or
    /// dropped (OpenRLHF: `len // train_batch_size` steps).
    LastBatchRule { Short = "short", Drop = "drop" }
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    pub epochs: u64,
    pub learning_rate: f64,
    pub batch_size: u64,
    pub micro_batch_size: u64,
    pub warmup_ratio: f64,
    pub schedule: Schedule,
    pub precision: Precision,
    pub max_length: u64,
    pub optimizer: Optimizer,
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Floor of the cosine decay as a fraction of `learning_rate` (OpenRLHF: 0.1).
    pub min_lr_ratio: f64,
    /// What the loss is divided by: `micro-batch` (each micro-batch's weighted mean, averaged
    /// over the step's micro-batches: OpenRLHF), `batch` (the optimiser batch's weight sum) or
    /// `dataset` (D_correct's weight sum, Eq. 8).
    pub loss_normalization: LossNormalization,
    /// An epoch's last, incomplete batch: `short` (one more, smaller step) or `drop`
    /// (OpenRLHF: `len // train_batch_size` steps).
    pub last_batch: LastBatchRule,
    /// End every training sequence with the tokenizer's EOS (OpenRLHF's SFTDataset).
    pub append_eos: bool,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Adapter {
    Full,
    Lora {
        rank: u64,
        alpha: f64,
        dropout: f64,
        target_modules: Vec<String>,
    },
}

impl Adapter {
    /// As Table 3's columns name it: `Full FT`, or `LoRA` (with its rank where it is not 16).
    pub fn title(&self) -> String {
        match self {
            Adapter::Full => "Full FT".into(),
            Adapter::Lora { rank: 16, .. } => "LoRA".into(),
            Adapter::Lora { rank, .. } => format!("LoRA r{rank}"),
        }
    }
}

/// `[eval]` without its `template`, which each model resolves ([`ModelSpec::templates`]).
#[derive(Clone, Debug)]
pub struct Eval {
    pub benchmarks: Vec<BenchmarkSpec>,
    pub max_new_tokens: u64,
    pub limit: Option<u64>,
    pub include_base: bool,
    pub sampling: Option<Sampling>,
}

#[derive(Clone, Debug)]
pub struct BenchmarkSpec {
    pub name: String,
    pub source: DataSource,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    pub n: u64,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u64,
    pub seed: u64,
    pub benchmarks: Vec<String>,
    pub pass_at: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The method every delta is measured against.
    pub baseline: String,
    pub select: Select,
    pub bootstrap: u64,
    pub confidence: f64,
    /// Wall-clock columns (rollout seconds per 1k examples, training seconds). Without them a
    /// report is a pure function of the manifest: the same bytes however the run went.
    pub timings: bool,
}

/// How the report picks one cell of a method's sweep (the paper reports each method's best).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(
    tag = "by",
    content = "value",
    rename_all = "kebab-case",
    deny_unknown_fields
)]
pub enum Select {
    BestAverage,
    BestOn(String),
    Cell(String),
}

/// `[rl]`: GRPO from fine-tuned checkpoints (paper §4.4, App. B.2), one run per model and
/// starting point.
#[derive(Clone, Debug)]
pub struct Rl {
    pub starts: Vec<RlStart>,
    /// The RL prompts (the paper: GSM8K's and MATH's training sets), each graded by its own
    /// format's grader.
    pub data: Vec<BenchmarkSpec>,
    /// `[eval]` benchmarks evaluated (greedy) before the first step, every `eval_every` steps
    /// and after the last (verl's `test_freq`).
    pub benchmarks: Vec<String>,
    pub eval_every: u64,
    pub settings: RlSettings,
    /// Save the resumable state every this many RL steps (0: not by steps) or minutes.
    pub save_every_steps: u64,
    pub save_every_minutes: f64,
}

/// Where one GRPO run starts: the base model or a method's checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct RlStart {
    /// A method's name, or `base` for the model before fine-tuning.
    pub method: String,
    /// The sweep cell: `None` picks the cell the report shows (`[report] select`).
    pub cell: Option<String>,
}

/// GRPO's hyper-parameters, verl's names in the comments, the paper's values as defaults.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlSettings {
    /// Passes over the RL prompts (`trainer.total_epochs`; the paper: 15).
    pub epochs: u64,
    /// Stop after this many steps (`trainer.total_training_steps`); none: every epoch.
    pub max_steps: Option<u64>,
    /// Prompts per step (`data.train_batch_size`; the paper: 1024).
    pub prompt_batch: u64,
    /// Prompts per optimiser step (`actor.ppo_mini_batch_size`; verl: 256).
    pub mini_batch: u64,
    /// Responses per forward and backward (`ppo_micro_batch_size_per_gpu`; the paper: 16).
    pub micro_batch: u64,
    /// Responses per prompt (`rollout.n`; the paper: 5).
    pub n: u64,
    pub temperature: f64,
    pub top_p: f64,
    /// 0: off (verl's -1).
    pub top_k: u64,
    /// Prompts longer are left out (`data.filter_overlong_prompts`; the paper: 1024).
    pub max_prompt_length: u64,
    /// New tokens per response (`data.max_response_length`; the paper: 1024).
    pub max_response_length: u64,
    /// `actor.optim.lr` (the paper: 1e-6), constant (verl's default: no warmup).
    pub learning_rate: f64,
    /// `actor.optim.weight_decay` (0.01), AdamW with betas (0.9, 0.999).
    pub weight_decay: f64,
    /// `actor.grad_clip` (1.0).
    pub grad_clip: f64,
    pub clip_ratio_low: f64,
    pub clip_ratio_high: f64,
    /// The dual clip's bound for negative advantages (`clip_ratio_c`, 3.0).
    pub clip_ratio_c: f64,
    /// `kl_loss_coef` with `kl_loss_type = "low_var_kl"` (the paper: 0.001).
    pub kl_coef: f64,
    /// `entropy_coeff` (0: entropy is recorded, not optimised).
    pub entropy_coeff: f64,
    /// `norm_adv_by_std_in_grpo` (true; false is Dr. GRPO).
    pub norm_adv_by_std: bool,
    pub precision: Precision,
    pub seed: u64,
}

impl RlSettings {
    /// What an absent key means: the paper's App. B.2, else verl's defaults.
    pub fn paper(seed: u64) -> Self {
        Self {
            epochs: 15,
            max_steps: None,
            prompt_batch: 1024,
            mini_batch: 256,
            micro_batch: 16,
            n: 5,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_prompt_length: 1024,
            max_response_length: 1024,
            learning_rate: 1e-6,
            weight_decay: 0.01,
            grad_clip: 1.0,
            clip_ratio_low: 0.2,
            clip_ratio_high: 0.2,
            clip_ratio_c: 3.0,
            kl_coef: 0.001,
            entropy_coeff: 0.0,
            norm_adv_by_std: true,
            precision: Precision::Bf16,
            seed,
        }
    }
}
