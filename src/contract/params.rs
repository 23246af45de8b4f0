//! One params struct per stage kind: the planner serialises it into the stage's key, the
//! stage reads it back. Every struct denies unknown fields and has no defaults, so a
//! misspelt or missing param is an error naming the stage, not a silently different run.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Kind;
use crate::manifest::{
    Adapter, EarlyStop, MatchScope, MethodKind, Report, Rule, SampleSettings, Sampling, Synthetic,
    Template, ToyModel, TrainParams,
};

/// A stage's params do not fit its kind's struct: a defect of the planner or a cache written
/// by another build, never something a manifest can cause (the manifest is validated first).
#[derive(Debug, thiserror::Error)]
#[error("stage `{label}` ({kind}): its params do not fit the {kind} stage's: {message}")]
pub struct ParamsError {
    pub label: String,
    pub kind: Kind,
    pub message: String,
}

/// The params of one kind.
pub trait Params: Serialize + DeserializeOwned {
    const KIND: Kind;

    /// The canonical JSON the key hashes.
    fn to_value(&self) -> Result<Value, ParamsError> {
        serde_json::to_value(self).map_err(|e| ParamsError {
            label: String::new(),
            kind: Self::KIND,
            message: e.to_string(),
        })
    }

    /// The params of stage `label`, read back.
    fn from_params(label: &str, params: &Value) -> Result<Self, ParamsError> {
        Self::deserialize(params).map_err(|e| ParamsError {
            label: label.to_string(),
            kind: Self::KIND,
            message: e.to_string(),
        })
    }
}

/// How a model enters a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelParam {
    /// An HF directory by content fingerprint (`missing:<path>` while it is absent); where it
    /// lives is the stage's `model_dir` binding.
    Dir(DirModel),
    /// The toy family's model: the output of the stage's `pretrain` input.
    Pretrained(PretrainedModel),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirModel {
    pub fingerprint: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainedModel {
    pub pretrained: bool,
}

impl ModelParam {
    pub fn dir(fingerprint: String) -> Self {
        ModelParam::Dir(DirModel { fingerprint })
    }

    pub fn pretrained() -> Self {
        ModelParam::Pretrained(PretrainedModel { pretrained: true })
    }
}

/// `dataset`: a training or benchmark source, normalised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum DatasetParams {
    /// A JSONL file by content fingerprint (`missing:<path>` while it is absent); where it
    /// lives is the stage's `path` binding.
    File {
        /// The benchmark layout the file is read as.
        format: String,
        fingerprint: String,
        /// Keep only the first N problems.
        limit: Option<u64>,
    },
    /// The built-in generator of GSM8K-format word problems.
    Synthetic { synthetic: Synthetic },
}

impl Params for DatasetParams {
    const KIND: Kind = Kind::Dataset;
}

/// `pretrain`: the toy family's model, trained from scratch on the corpus input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainParams {
    pub toy: ToyModel,
}

impl Params for PretrainParams {
    const KIND: Kind = Kind::Pretrain;
}

/// `greedy` (Eq. 3-4): the model answers the training questions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreedyParams {
    pub model: ModelParam,
    /// The prompt template (the model's annotation template).
    pub template: Template,
    /// The benchmark whose grader judges the answers (the training data's format).
    pub benchmark: String,
    pub max_new_tokens: u64,
    /// Answer only the first N questions.
    pub limit: Option<u64>,
}

impl Params for GreedyParams {
    const KIND: Kind = Kind::Greedy;
}

/// `rollout` (Eq. 5-7): the branches of alternative rank j.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutParams {
    pub model: ModelParam,
    /// The alternative rank j >= 2.
    pub j: u64,
    /// The Strict-only shortcut: branch only where rank j - 1 failed (the stage then reads
    /// that rank's rollout).
    pub only_where_previous_failed: bool,
    /// The greedy pass's template: its stop strings end the branches.
    pub template: Template,
    pub benchmark: String,
    pub early_stop: EarlyStop,
    pub max_new_tokens: u64,
}

impl Params for RolloutParams {
    const KIND: Kind = Kind::Rollout;
}

/// `criticality` (Eq. 6, Table 2): the rule applied to ranks 2..=k.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriticalityParams {
    pub rule: Rule,
    pub k: u64,
}

impl Params for CriticalityParams {
    const KIND: Kind = Kind::Criticality;
}

/// `token-stats`: per-token probability, entropy and attention received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenStatsParams {
    pub model: ModelParam,
}

impl Params for TokenStatsParams {
    const KIND: Kind = Kind::TokenStats;
}

/// `selection`: a baseline's per-token mask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "selection", rename_all = "lowercase", deny_unknown_fields)]
pub enum SelectionParams {
    /// The highest-entropy tokens, as many as the matched CFT method marks.
    Entropy { match_scope: MatchScope },
    /// The tokens that receive the most attention, as many as the matched CFT method marks.
    Attention { match_scope: MatchScope },
    /// Random tokens, as many per example as the matched CFT method marks.
    Random { seed: u64 },
    /// Numeric tokens (of the critical ones, with `within_critical`).
    Number {
        model: ModelParam,
        within_critical: bool,
    },
}

impl Params for SelectionParams {
    const KIND: Kind = Kind::Selection;
}

/// `sample` (paper §5.1): each training question the greedy pass got wrong is sampled until
/// an answer is correct or `settings.attempts` are spent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleParams {
    pub model: ModelParam,
    /// The greedy pass's template: the prompts are its, its stop strings end the samples.
    pub template: Template,
    /// The benchmark whose grader judges the samples (the training data's format).
    pub benchmark: String,
    pub settings: SampleSettings,
}

impl Params for SampleParams {
    const KIND: Kind = Kind::Sample;
}

/// `transfer` (paper §5.2): the source model's greedy-correct responses with this model's
/// prompt; their token ids kept when the two tokenizers tokenise alike (compared by their
/// files), the text re-tokenised otherwise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferParams {
    /// The model trained on them (its tokenizer).
    pub model: ModelParam,
    /// The model that wrote them (its tokenizer, compared).
    pub source: ModelParam,
    /// This model's annotation template.
    pub template: Template,
}

impl Params for TransferParams {
    const KIND: Kind = Kind::Transfer;
}

/// `score` (paper §5.1-5.2): per-token weights of responses the rollouts did not annotate:
/// the `top` share of each response's tokens by s_t = P_cft(y_t) − P_base(y_t), or, for
/// responses transferred with their token ids, the source model's critical tokens as they are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreParams {
    pub base: ModelParam,
    /// The CFT method whose checkpoint is M_cft, and how its cell is chosen.
    pub scorer: MethodStart,
    pub top: f64,
}

impl Params for ScoreParams {
    const KIND: Kind = Kind::Score;
}

/// What the train stage minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainObjective {
    /// Eq. 1: every response token.
    Sft,
    /// Each token's loss scaled by its (stopped) probability.
    Dft,
    /// Eq. 8: per-token weights from a criticality or selection input.
    Weighted,
}

/// `train`: one method's fine-tuning in one sweep cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainStageParams {
    pub model: ModelParam,
    pub objective: TrainObjective,
    pub adapter: Adapter,
    pub hparams: TrainParams,
}

impl Params for TrainStageParams {
    const KIND: Kind = Kind::Train;
}

/// The model an evaluation runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EvalModel {
    /// The base model.
    Base(BaseModel),
    /// The checkpoint of the stage's `train` input.
    Checkpoint(CheckpointModel),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModel {
    pub base: ModelParam,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointModel {
    pub checkpoint: bool,
}

/// `eval`: one model on one benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    pub model: EvalModel,
    pub benchmark: String,
    /// The model's evaluation template.
    pub template: Template,
    pub max_new_tokens: u64,
    /// `n` samples per question for Pass@N, on the benchmarks that ask for it.
    pub sampling: Option<Sampling>,
    /// The grader, where the benchmark's name does not say it (a manifest dataset in another
    /// format than GSM8K's, such as a multiple-choice one); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grader: Option<String>,
}

impl Params for EvalParams {
    const KIND: Kind = Kind::Eval;
}

/// `grpo` (paper §4.4, App. B.2): GRPO from a checkpoint, with greedy evaluations along the
/// way. Its inputs, in order: the RL data's datasets (`data`), the evaluated benchmarks'
/// datasets (`eval_benchmarks`), then the start: the base model's pretrain stage (the toy
/// family; an HF directory is the `model_dir` binding), or the start method's train stages
/// (one per cell in `cells`) followed by their evals (cell by cell, `select_on` in order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoParams {
    pub start: GrpoStart,
    /// The prompt template of the RL prompts (the model's annotation template, with which it
    /// was fine-tuned).
    pub template: Template,
    /// Each RL dataset's name and the benchmark whose grader gives its reward.
    pub data: Vec<(String, String)>,
    pub eval_benchmarks: Vec<String>,
    /// The graders of the evaluated benchmarks whose names do not say them (as
    /// [`EvalParams::grader`]); empty otherwise.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub eval_graders: std::collections::BTreeMap<String, String>,
    /// The model's evaluation template and budget.
    pub eval_template: Template,
    pub eval_max_new_tokens: u64,
    pub eval_every: u64,
    pub adapter: Adapter,
    pub settings: crate::manifest::RlSettings,
}

/// Where a GRPO run starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GrpoStart {
    Base(BaseModel),
    Method(MethodStart),
}

/// A method's checkpoint: the cell `select` picks among `cells` by their accuracies on
/// `select_on` (one cell: that one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodStart {
    pub method: String,
    pub cells: Vec<String>,
    /// `report.select` as written (`best-average`, `best:<bench>`, `cell:<label>`).
    pub select: String,
    pub select_on: Vec<String>,
}

impl Params for GrpoParams {
    const KIND: Kind = Kind::Grpo;
}

/// `report`: the paper's tables over every model, method, sweep cell and benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    pub experiment: String,
    /// The experiment seed (bootstrap resampling).
    pub seed: u64,
    pub models: Vec<String>,
    pub methods: Vec<ReportMethod>,
    pub benchmarks: Vec<String>,
    pub report: Report,
}

impl Params for ReportParams {
    const KIND: Kind = Kind::Report;
}

/// One method as the report sees it: its name, label, kind and sweep cells' labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportMethod {
    pub name: String,
    pub label: String,
    pub kind: MethodKind,
    pub cells: Vec<String>,
    /// How it trains (`Full FT`, `LoRA`: [`crate::manifest::Adapter::title`]), named only
    /// when the manifest's methods do not all train alike (Table 3's columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<String>,
    /// The responses it trains on beyond the model's own greedy ones
    /// ([`crate::manifest::Responses::report_name`]: `greedy+sampled`, `from:<model>`;
    /// Figure 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<String>,
}

impl ReportMethod {
    /// The criticality stage's label suffix of a CFT method: `strict-k3`.
    pub fn criticality(&self) -> Option<String> {
        match &self.kind {
            MethodKind::Cft { rule, k } => Some(super::label::rule_k(rule.name(), *k)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_misspelt_or_missing_param_names_the_stage() {
        let good = json!({"model": {"fingerprint": "ab"}, "j": 2, "only_where_previous_failed": false,
            "template": "plain", "benchmark": "gsm8k", "early_stop": "none", "max_new_tokens": 8});
        let p = RolloutParams::from_params("rollout toy j=2", &good).unwrap();
        assert_eq!(p.j, 2);
        assert_eq!(p.to_value().unwrap(), good);

        let mut misspelt = good.clone();
        let j = misspelt.as_object_mut().unwrap().remove("j").unwrap();
        misspelt["jj"] = j;
        let e = RolloutParams::from_params("rollout toy j=2", &misspelt).unwrap_err();
        assert!(e.to_string().contains("rollout toy j=2"), "{e}");
        assert!(e.to_string().contains("jj"), "{e}");

        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("template");
        let e = RolloutParams::from_params("rollout toy j=2", &missing).unwrap_err();
        assert!(e.to_string().contains("template"), "{e}");
    }

    #[test]
    fn models_and_selections_keep_their_json_shapes() {
        assert_eq!(
            serde_json::to_value(ModelParam::pretrained()).unwrap(),
            json!({"pretrained": true})
        );
        assert_eq!(
            serde_json::to_value(EvalModel::Base(BaseModel {
                base: ModelParam::dir("x".into())
            }))
            .unwrap(),
            json!({"base": {"fingerprint": "x"}})
        );
        let s = SelectionParams::Entropy {
            match_scope: MatchScope::Global,
        };
        let v = s.to_value().unwrap();
        assert_eq!(v, json!({"selection": "entropy", "match_scope": "global"}));
        assert_eq!(SelectionParams::from_params("s", &v).unwrap(), s);
        assert!(SelectionParams::from_params("s", &json!({"selection": "entropy"})).is_err());
    }
}
