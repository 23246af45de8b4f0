//! Manifest → DAG. For each model: its training data, one greedy pass, one rollout stage per
//! alternative rank j, one criticality stage per (rule, k), token statistics and selections
//! for the baselines, one train stage per method and sweep cell, one eval per checkpoint and
//! benchmark, and a report over all of them.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::cache::Store;
use crate::contract::{
    BaseModel, CheckpointModel, CriticalityParams, DatasetParams, EvalModel, EvalParams,
    GreedyParams, GrpoParams, GrpoStart, Kind, MethodStart, ModelParam, Params, PretrainParams,
    ReportMethod, ReportParams, RolloutParams, SelectionParams, TokenStatsParams, TrainObjective,
    TrainStageParams, label,
};
use crate::manifest::{
    DataSource, Experiment, InputPath, MethodKind, ModelSource, ModelSpec, Rule, Select,
};

use super::{MissingInput, Plan, PlanError, StageSpec};

struct Builder<'a> {
    exp: &'a Experiment,
    store: &'a dyn Store,
    plan: Plan,
}

/// One source of RL prompts: its name, the benchmark that grades it, its dataset stage.
struct RlData {
    name: String,
    benchmark: String,
    key: String,
}

/// How a model enters the stages that use it.
struct ModelRef {
    /// In params: the content fingerprint, or the pretrain stage for the toy family.
    param: ModelParam,
    /// Stage inputs (the pretrain stage, for the toy family).
    inputs: Vec<String>,
    binding: Value,
}

pub fn build(exp: &Experiment, store: &dyn Store) -> Result<Plan, PlanError> {
    let mut b = Builder {
        exp,
        store,
        plan: Plan::default(),
    };
    let train_data = b.dataset("train", &exp.train_data)?;
    let benchmarks: Vec<(String, String)> = exp
        .eval
        .benchmarks
        .iter()
        .map(|bench| Ok((bench.name.clone(), b.dataset(&bench.name, &bench.source)?)))
        .collect::<Result<_, PlanError>>()?;
    // The RL prompts: `train` is the training data's stage; others are datasets of their own.
    let mut rl_data: Vec<RlData> = Vec::new();
    if let Some(rl) = &exp.rl {
        for d in &rl.data {
            let key = match d.name == "train" {
                true => train_data.clone(),
                false => b.dataset(&format!("rl-{}", d.name), &d.source)?,
            };
            rl_data.push(RlData {
                name: d.name.clone(),
                benchmark: d.source.benchmark().to_string(),
                key,
            });
        }
    }
    let mut report_inputs = Vec::new();
    for model in &exp.models {
        report_inputs.extend(b.model_stages(model, &train_data, &benchmarks, &rl_data)?);
    }
    let mixed_adapters = exp.methods.iter().any(|m| {
        m.adapter
            .as_ref()
            .is_some_and(|a| a.title() != exp.adapter.title())
    });
    let params = ReportParams {
        experiment: exp.name.clone(),
        seed: exp.seed,
        models: exp.models.iter().map(|m| m.name.clone()).collect(),
        methods: exp
            .methods
            .iter()
            .map(|m| ReportMethod {
                name: m.name.clone(),
                label: m.label.clone(),
                kind: m.kind.clone(),
                cells: m.cells.iter().map(|c| c.label.clone()).collect(),
                adapter: mixed_adapters.then(|| m.adapter.as_ref().unwrap_or(&exp.adapter).title()),
            })
            .collect(),
        benchmarks: benchmarks.iter().map(|(n, _)| n.clone()).collect(),
        report: exp.report.clone(),
    };
    b.add_typed(
        label::report(&exp.name),
        &params,
        report_inputs,
        Value::Null,
    )?;
    Ok(b.plan)
}

impl Builder<'_> {
    fn add(
        &mut self,
        kind: Kind,
        label: String,
        params: Value,
        inputs: Vec<String>,
        bindings: Value,
    ) -> String {
        let spec = StageSpec::new(
            &self.exp.name,
            kind,
            kind.version(),
            label,
            params,
            inputs,
            bindings,
        );
        self.plan.add(spec)
    }

    /// Adds a stage whose params are its kind's struct.
    fn add_typed<P: Params>(
        &mut self,
        label: String,
        params: &P,
        inputs: Vec<String>,
        bindings: Value,
    ) -> Result<String, PlanError> {
        let value = params
            .to_value()
            .map_err(|e| PlanError::Invalid(e.to_string()))?;
        Ok(self.add(P::KIND, label, value, inputs, bindings))
    }

    /// The fingerprint of an external input, or a marker naming it as missing.
    fn fingerprint(&mut self, what: String, input: &InputPath) -> Result<String, PlanError> {
        match self.store.fingerprint(&input.path)? {
            Some(fp) => Ok(fp),
            None => {
                if !self.plan.missing.iter().any(|m| m.written == input.written) {
                    self.plan.missing.push(MissingInput {
                        what,
                        written: input.written.clone(),
                        at: format!("{} `{}`", input.loc, input.key),
                    });
                }
                Ok(format!("missing:{}", input.written))
            }
        }
    }

    /// The grader an evaluated benchmark needs beyond its name
    /// ([`crate::eval::Benchmark::grader_beyond_name`]).
    fn grader(&self, bench: &str) -> Option<String> {
        let spec = self.exp.eval.benchmarks.iter().find(|b| b.name == bench)?;
        crate::eval::Benchmark::grader_beyond_name(bench, spec.source.benchmark())
    }

    fn dataset(&mut self, name: &str, source: &DataSource) -> Result<String, PlanError> {
        let (params, bindings) = match source {
            DataSource::File {
                input,
                format,
                limit,
            } => (
                DatasetParams::File {
                    format: format.clone(),
                    fingerprint: self.fingerprint(format!("data `{name}`"), input)?,
                    limit: *limit,
                },
                json!({"path": input.path}),
            ),
            DataSource::Synthetic(s) => (
                DatasetParams::Synthetic {
                    synthetic: s.clone(),
                },
                Value::Null,
            ),
        };
        self.add_typed(label::dataset(name), &params, Vec::new(), bindings)
    }

    fn model(&mut self, model: &ModelSpec) -> Result<ModelRef, PlanError> {
        match &model.source {
            ModelSource::Dir(input) => {
                let fp = self.fingerprint(format!("model `{}`", model.name), input)?;
                Ok(ModelRef {
                    param: ModelParam::dir(fp),
                    inputs: Vec::new(),
                    binding: json!({"model_dir": input.path}),
                })
            }
            ModelSource::Toy { model: toy, corpus } => {
                let corpus = self.dataset(&format!("{} corpus", model.name), corpus)?;
                let params = PretrainParams { toy: toy.clone() };
                let key = self.add_typed(
                    label::pretrain(&model.name),
                    &params,
                    vec![corpus],
                    Value::Null,
                )?;
                Ok(ModelRef {
                    param: ModelParam::pretrained(),
                    inputs: vec![key],
                    binding: Value::Null,
                })
            }
        }
    }

    /// Every stage of one model; returns the keys the report reads.
    fn model_stages(
        &mut self,
        model: &ModelSpec,
        train_data: &str,
        benchmarks: &[(String, String)],
        rl_data: &[RlData],
    ) -> Result<Vec<String>, PlanError> {
        let exp = self.exp;
        let name = &model.name;
        let m = self.model(model)?;
        let with_model =
            |extra: &[String]| -> Vec<String> { m.inputs.iter().chain(extra).cloned().collect() };
        let annotate = &exp.annotate;
        // Answers to the training questions are graded as their benchmark grades them.
        let benchmark = exp.train_data.benchmark();
        let mut report_inputs = Vec::new();

        // Eq. 3-4: one greedy pass over the training questions.
        let greedy = self.add_typed(
            label::greedy(name),
            &GreedyParams {
                model: m.param.clone(),
                template: model.templates.annotate,
                benchmark: benchmark.to_string(),
                max_new_tokens: annotate.max_new_tokens,
                limit: annotate.limit,
            },
            with_model(&[train_data.to_string()]),
            m.binding.clone(),
        )?;
        report_inputs.push(greedy.clone());

        // Eq. 5-7: rollouts per alternative rank j, shared by every rule that needs rank j.
        let cft_rules: Vec<(Rule, u64)> = exp
            .methods
            .iter()
            .filter_map(|me| match me.kind {
                MethodKind::Cft { rule, k } => Some((rule, k)),
                _ => None,
            })
            .collect();
        let max_k = cft_rules.iter().map(|(_, k)| *k).max().unwrap_or(1);
        // A success at rank j already makes a token non-critical under Strict, so when only
        // Strict rules are asked for, rank j+1 runs only where rank j failed.
        let strict_only = cft_rules.iter().all(|(r, _)| *r == Rule::Strict);
        let mut rollouts: Vec<String> = Vec::new();
        for j in 2..=max_k {
            let mut inputs = with_model(std::slice::from_ref(&greedy));
            if strict_only && let Some(prev) = rollouts.last() {
                inputs.push(prev.clone());
            }
            let key = self.add_typed(
                label::rollout(name, j),
                &RolloutParams {
                    model: m.param.clone(),
                    j,
                    only_where_previous_failed: strict_only && j > 2,
                    template: model.templates.annotate,
                    benchmark: benchmark.to_string(),
                    early_stop: annotate.early_stop,
                    max_new_tokens: annotate.max_new_tokens,
                },
                inputs,
                with_draft(&m.binding, annotate.draft_tokens),
            )?;
            rollouts.push(key);
        }

        let mut criticality = std::collections::HashMap::new();
        for me in &exp.methods {
            if let MethodKind::Cft { rule, k } = me.kind {
                let mut inputs = vec![greedy.clone()];
                inputs.extend_from_slice(&rollouts[..(k as usize - 1)]);
                let key = self.add_typed(
                    label::criticality(name, &label::rule_k(rule.name(), k)),
                    &CriticalityParams { rule, k },
                    inputs,
                    Value::Null,
                )?;
                report_inputs.push(key.clone());
                criticality.insert(me.name.clone(), key);
            }
        }

        // Entropy and attention select by one shared token-statistics pass, which also gives
        // Table 5 (critical vs normal tokens) for CFT methods.
        let needs_stats = exp.methods.iter().any(|me| {
            matches!(
                me.kind,
                MethodKind::Entropy { .. } | MethodKind::Attention { .. } | MethodKind::Cft { .. }
            )
        });
        let token_stats = if needs_stats {
            let key = self.add_typed(
                label::token_stats(name),
                &TokenStatsParams {
                    model: m.param.clone(),
                },
                with_model(std::slice::from_ref(&greedy)),
                m.binding.clone(),
            )?;
            report_inputs.push(key.clone());
            Some(key)
        } else {
            None
        };

        let mut checkpoints: Vec<(String, String, String)> = Vec::new(); // (method, cell, key)
        for me in &exp.methods {
            let (objective, weights) = match &me.kind {
                MethodKind::Sft => (TrainObjective::Sft, None),
                MethodKind::Dft => (TrainObjective::Dft, None),
                MethodKind::Cft { .. } => {
                    (TrainObjective::Weighted, criticality.get(&me.name).cloned())
                }
                MethodKind::Entropy { matched, .. }
                | MethodKind::Attention { matched, .. }
                | MethodKind::Random { matched } => {
                    let (params, stats) = match &me.kind {
                        MethodKind::Entropy { scope, .. } => (
                            SelectionParams::Entropy {
                                match_scope: *scope,
                            },
                            token_stats.clone(),
                        ),
                        MethodKind::Attention { scope, .. } => (
                            SelectionParams::Attention {
                                match_scope: *scope,
                            },
                            token_stats.clone(),
                        ),
                        _ => (SelectionParams::Random { seed: exp.seed }, None),
                    };
                    let mut inputs = vec![greedy.clone()];
                    inputs.extend(stats);
                    inputs.extend(criticality.get(matched).cloned());
                    let key = self.add_typed(
                        label::selection(name, &me.name),
                        &params,
                        inputs,
                        Value::Null,
                    )?;
                    (TrainObjective::Weighted, Some(key))
                }
                MethodKind::Number { within } => {
                    let mut inputs = with_model(std::slice::from_ref(&greedy));
                    if let Some(w) = within {
                        inputs.extend(criticality.get(w).cloned());
                    }
                    let key = self.add_typed(
                        label::selection(name, &me.name),
                        &SelectionParams::Number {
                            model: m.param.clone(),
                            within_critical: within.is_some(),
                        },
                        inputs,
                        m.binding.clone(),
                    )?;
                    (TrainObjective::Weighted, Some(key))
                }
            };
            if let Some(w) = &weights {
                report_inputs.push(w.clone());
            }
            for cell in &me.cells {
                let mut inputs = with_model(std::slice::from_ref(&greedy));
                inputs.extend(weights.clone());
                let key = self.add_typed(
                    label::train(name, &me.name, &cell.label),
                    &TrainStageParams {
                        model: m.param.clone(),
                        objective,
                        adapter: me.adapter.clone().unwrap_or_else(|| exp.adapter.clone()),
                        hparams: cell.params.clone(),
                    },
                    inputs,
                    with_run(&m.binding, &cell.run),
                )?;
                report_inputs.push(key.clone());
                checkpoints.push((me.name.clone(), cell.label.clone(), key));
            }
        }

        // Evaluation of each checkpoint (and of the base model) on each benchmark.
        let eval = &exp.eval;
        // (method and cell, or none for the base model; inputs; the model param)
        type Subject = (Option<(String, String)>, Vec<String>, EvalModel);
        let mut subjects: Vec<Subject> = Vec::new();
        if eval.include_base {
            subjects.push((
                None,
                m.inputs.clone(),
                EvalModel::Base(BaseModel {
                    base: m.param.clone(),
                }),
            ));
        }
        for (method, cell, key) in &checkpoints {
            subjects.push((
                Some((method.clone(), cell.clone())),
                vec![key.clone()],
                EvalModel::Checkpoint(CheckpointModel { checkpoint: true }),
            ));
        }
        let mut seen = BTreeSet::new();
        // (method, cell, benchmark) → its eval stage
        let mut evals: std::collections::HashMap<(String, String, String), String> =
            Default::default();
        for (subject, inputs, model_param) in subjects {
            for (bench, data) in benchmarks {
                let sampling = eval
                    .sampling
                    .as_ref()
                    .filter(|s| s.benchmarks.contains(bench));
                let mut all = inputs.clone();
                all.push(data.clone());
                let label = match &subject {
                    None => label::eval_base(name, bench),
                    Some((method, cell)) => label::eval(name, method, cell, bench),
                };
                let key = self.add_typed(
                    label,
                    &EvalParams {
                        model: model_param.clone(),
                        benchmark: bench.clone(),
                        template: model.templates.eval,
                        max_new_tokens: eval.max_new_tokens,
                        sampling: sampling.cloned(),
                        grader: self.grader(bench),
                    },
                    all,
                    m.binding.clone(),
                )?;
                if let Some((method, cell)) = &subject {
                    evals.insert((method.clone(), cell.clone(), bench.clone()), key.clone());
                }
                if seen.insert(key.clone()) {
                    report_inputs.push(key);
                }
            }
        }

        // GRPO from each starting point (paper §4.4).
        if let Some(rl) = &exp.rl {
            let data_keys: Vec<String> = rl_data.iter().map(|d| d.key.clone()).collect();
            let bench_keys: Vec<String> = rl
                .benchmarks
                .iter()
                .filter_map(|name| benchmarks.iter().find(|(n, _)| n == name))
                .map(|(_, key)| key.clone())
                .collect();
            for start in &rl.starts {
                let mut inputs: Vec<String> =
                    data_keys.iter().chain(&bench_keys).cloned().collect();
                let start_param = match exp.method(&start.method) {
                    None => {
                        inputs.extend(m.inputs.iter().cloned());
                        GrpoStart::Base(BaseModel {
                            base: m.param.clone(),
                        })
                    }
                    Some(method) => {
                        let select = &exp.report.select;
                        // A named cell, the method's only cell, or the report's rule: then
                        // every cell is an input, with the evals the rule reads.
                        let cells: Vec<String> = match (&start.cell, select) {
                            (Some(c), _) => vec![c.clone()],
                            (None, _) if method.cells.len() == 1 => {
                                vec![method.cells[0].label.clone()]
                            }
                            (None, Select::Cell(c))
                                if method.cells.iter().any(|x| &x.label == c) =>
                            {
                                vec![c.clone()]
                            }
                            _ => method.cells.iter().map(|c| c.label.clone()).collect(),
                        };
                        let select_on: Vec<String> = match cells.len() {
                            1 => Vec::new(),
                            _ => match select {
                                Select::BestOn(b) => vec![b.clone()],
                                _ => benchmarks.iter().map(|(n, _)| n.clone()).collect(),
                            },
                        };
                        for cell in &cells {
                            if let Some((_, _, key)) = checkpoints
                                .iter()
                                .find(|(me, c, _)| me == &method.name && c == cell)
                            {
                                inputs.push(key.clone());
                            }
                        }
                        for cell in &cells {
                            for bench in &select_on {
                                let at = (method.name.clone(), cell.clone(), bench.clone());
                                let key = evals.get(&at).ok_or_else(|| {
                                    PlanError::Invalid(format!(
                                        "rl: no evaluation of {} {cell} on {bench} to choose its cell by",
                                        method.name
                                    ))
                                })?;
                                inputs.push(key.clone());
                            }
                        }
                        GrpoStart::Method(MethodStart {
                            method: method.name.clone(),
                            cells,
                            select: match select {
                                Select::BestAverage => "best-average".into(),
                                Select::BestOn(b) => format!("best:{b}"),
                                Select::Cell(c) => format!("cell:{c}"),
                            },
                            select_on,
                        })
                    }
                };
                let params = GrpoParams {
                    start: start_param,
                    template: model.templates.annotate,
                    data: rl_data
                        .iter()
                        .map(|d| (d.name.clone(), d.benchmark.clone()))
                        .collect(),
                    eval_benchmarks: rl.benchmarks.clone(),
                    eval_graders: rl
                        .benchmarks
                        .iter()
                        .filter_map(|b| Some((b.clone(), self.grader(b)?)))
                        .collect(),
                    eval_template: model.templates.eval,
                    eval_max_new_tokens: eval.max_new_tokens,
                    eval_every: rl.eval_every,
                    adapter: exp.adapter.clone(),
                    settings: rl.settings.clone(),
                };
                let bindings = with_bindings(
                    &m.binding,
                    json!({
                        "save_every_steps": rl.save_every_steps,
                        "save_every_minutes": rl.save_every_minutes,
                    }),
                );
                let key =
                    self.add_typed(label::grpo(name, &start.method), &params, inputs, bindings)?;
                report_inputs.push(key);
            }
        }
        Ok(report_inputs)
    }
}

/// A rollout stage's bindings: its model's (`model_dir`) and how many tokens its branches
/// draft per step (`[annotate] draft_tokens`), which changes how they decode, not what they say.
fn with_draft(binding: &Value, draft_tokens: u64) -> Value {
    with_bindings(binding, json!({ "draft_tokens": draft_tokens }))
}

/// A train stage's bindings: its model's (`model_dir`) and how the cell runs
/// ([`crate::manifest::TrainRun`]), neither of which enters its key.
fn with_run(binding: &Value, run: &crate::manifest::TrainRun) -> Value {
    with_bindings(binding, serde_json::to_value(run).unwrap_or(Value::Null))
}

/// The model's bindings with the fields of `extra` (an object) added.
fn with_bindings(binding: &Value, extra: Value) -> Value {
    let mut map = match binding {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    if let Value::Object(extra) = extra {
        map.extend(extra);
    }
    Value::Object(map)
}
