//! Manifest → DAG. For each model: its training data, one greedy pass, one rollout stage per
//! alternative rank j, one criticality stage per (rule, k), token statistics and selections
//! for the baselines, one train stage per method and sweep cell, one eval per checkpoint and
//! benchmark, and a report over all of them.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::cache::Store;
use std::collections::HashMap;

use crate::contract::{
    BaseModel, CheckpointModel, CriticalityParams, DatasetParams, EvalModel, EvalParams,
    GreedyParams, GrpoParams, GrpoStart, Kind, MethodStart, ModelParam, Params, PretrainParams,
    ReportMethod, ReportParams, RolloutParams, SampleParams, ScoreParams, SelectionParams,
    TokenStatsParams, TrainObjective, TrainStageParams, TransferParams, label,
};
use crate::manifest::{
    DataSource, Experiment, InputPath, Method, MethodKind, ModelSource, ModelSpec, Responses, Rule,
    Select,
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

/// A model evaluated: the base model (`name` none) or a method's cell.
struct EvalSubject {
    name: Option<(String, String)>,
    inputs: Vec<String>,
    model: EvalModel,
}

/// A model's annotation stages.
struct Annotation {
    m: ModelRef,
    greedy: String,
    /// Each CFT method's criticality stage.
    criticality: HashMap<String, String>,
    /// What the report reads of them.
    report: Vec<String>,
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
                responses: m.responses.report_name(),
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

    /// The evaluations of one subject (the base model or a checkpoint) on every benchmark.
    #[allow(clippy::too_many_arguments)]
    fn evals(
        &mut self,
        model: &ModelSpec,
        m: &ModelRef,
        subject: EvalSubject,
        benchmarks: &[(String, String)],
        evals: &mut HashMap<(String, String, String), String>,
        seen: &mut BTreeSet<String>,
        report: &mut Vec<String>,
    ) -> Result<(), PlanError> {
        let eval = &self.exp.eval;
        let name = &model.name;
        for (bench, data) in benchmarks {
            let sampling = eval
                .sampling
                .as_ref()
                .filter(|s| s.benchmarks.contains(bench));
            let mut all = subject.inputs.clone();
            all.push(data.clone());
            let label = match &subject.name {
                None => label::eval_base(name, bench),
                Some((method, cell)) => label::eval(name, method, cell, bench),
            };
            let key = self.add_typed(
                label,
                &EvalParams {
                    model: subject.model.clone(),
                    benchmark: bench.clone(),
                    template: model.templates.eval,
                    max_new_tokens: eval.max_new_tokens,
                    sampling: sampling.cloned(),
                    grader: self.grader(bench),
                },
                all,
                m.binding.clone(),
            )?;
            if let Some((method, cell)) = &subject.name {
                evals.insert((method.clone(), cell.clone(), bench.clone()), key.clone());
            }
            if seen.insert(key.clone()) {
                report.push(key);
            }
        }
        Ok(())
    }

    /// A method's checkpoint as another stage's starting point (GRPO's start, §5.1's M_cft):
    /// a named cell, the method's only cell, or the one `[report] select` picks, which the
    /// stage chooses at run time by the evaluations it is given. Returns the params and the
    /// inputs: the cells' train stages, then their evaluations.
    fn method_start(
        &self,
        method: &Method,
        cell: Option<&String>,
        checkpoints: &[(String, String, String)],
        evals: &HashMap<(String, String, String), String>,
        benchmarks: &[(String, String)],
    ) -> Result<(MethodStart, Vec<String>), PlanError> {
        let select = &self.exp.report.select;
        let cells: Vec<String> = match (cell, select) {
            (Some(c), _) => vec![c.clone()],
            (None, _) if method.cells.len() == 1 => vec![method.cells[0].label.clone()],
            (None, Select::Cell(c)) if method.cells.iter().any(|x| &x.label == c) => {
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
        let mut inputs = Vec::new();
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
                        "no evaluation of {} {cell} on {bench} to choose its cell by",
                        method.name
                    ))
                })?;
                inputs.push(key.clone());
            }
        }
        let start = MethodStart {
            method: method.name.clone(),
            cells,
            select: match select {
                Select::BestAverage => "best-average".into(),
                Select::BestOn(b) => format!("best:{b}"),
                Select::Cell(c) => format!("cell:{c}"),
            },
            select_on,
        };
        Ok((start, inputs))
    }

    /// `source`'s greedy-correct responses with `model`'s prompt and tokens (§5.2), and the
    /// source's annotation (its criticality stages are reused where the tokenizers agree).
    fn transfer(
        &mut self,
        model: &ModelSpec,
        m: &ModelRef,
        source: &ModelSpec,
        train_data: &str,
    ) -> Result<(String, Annotation), PlanError> {
        let src = self.annotation(source, train_data)?;
        let mut inputs: Vec<String> = m.inputs.clone();
        inputs.extend(src.m.inputs.iter().cloned());
        inputs.push(train_data.to_string());
        inputs.push(src.greedy.clone());
        // Where each model's files are: a directory, or the pretrain stage of a toy model.
        let mut bindings = serde_json::Map::new();
        for (what, r) in [("model", m), ("source", &src.m)] {
            if let Some(dir) = r.binding.get("model_dir") {
                bindings.insert(format!("{what}_dir"), dir.clone());
            }
            if let Some(key) = r.inputs.first() {
                bindings.insert(format!("{what}_pretrain"), json!(key));
            }
        }
        if let Some(dir) = m.binding.get("model_dir") {
            bindings.insert("model_dir".into(), dir.clone());
        }
        let key = self.add_typed(
            label::transfer(&model.name, &source.name),
            &TransferParams {
                model: m.param.clone(),
                source: src.m.param.clone(),
                template: model.templates.annotate,
            },
            inputs,
            Value::Object(bindings),
        )?;
        Ok((key, src))
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

    /// A model's greedy pass, rollouts and criticality stages (the same keys whoever asks:
    /// the model itself, or a model its responses are transferred to).
    fn annotation(&mut self, model: &ModelSpec, train_data: &str) -> Result<Annotation, PlanError> {
        let exp = self.exp;
        let name = &model.name;
        let m = self.model(model)?;
        let with_model =
            |extra: &[String]| -> Vec<String> { m.inputs.iter().chain(extra).cloned().collect() };
        let annotate = &exp.annotate;
        // Answers to the training questions are graded as their benchmark grades them.
        let benchmark = exp.train_data.benchmark();
        let mut report = Vec::new();

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
        report.push(greedy.clone());

        // Eq. 5-7: rollouts per alternative rank j, shared by every rule that needs rank j.
        // The rules of the CFT methods annotated by this model's rollouts: its own (on greedy,
        // or greedy and sampled responses), and those transferred from it to other models.
        let annotated = |me: &Method| match &me.responses {
            Responses::Greedy | Responses::GreedySampled => true,
            Responses::From(source) => source == name,
        };
        let cft_rules: Vec<(Rule, u64)> = exp
            .methods
            .iter()
            .filter(|me| annotated(me))
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

        let mut criticality = HashMap::new();
        for me in exp.methods.iter().filter(|me| annotated(me)) {
            if let MethodKind::Cft { rule, k } = me.kind {
                let mut inputs = vec![greedy.clone()];
                inputs.extend_from_slice(&rollouts[..(k as usize - 1)]);
                let key = self.add_typed(
                    label::criticality(name, &label::rule_k(rule.name(), k)),
                    &CriticalityParams { rule, k },
                    inputs,
                    Value::Null,
                )?;
                report.push(key.clone());
                criticality.insert(me.name.clone(), key);
            }
        }

        Ok(Annotation {
            m,
            greedy,
            criticality,
            report,
        })
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
        let Annotation {
            m,
            greedy,
            criticality,
            report: mut report_inputs,
        } = self.annotation(model, train_data)?;
        let with_model =
            |extra: &[String]| -> Vec<String> { m.inputs.iter().chain(extra).cloned().collect() };

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

        // §5.1: the training questions greedy decoding got wrong, sampled until correct.
        let benchmark = exp.train_data.benchmark();
        let sample = match exp
            .methods
            .iter()
            .any(|me| me.responses == Responses::GreedySampled)
        {
            true => {
                let key = self.add_typed(
                    label::sample(name),
                    &SampleParams {
                        model: m.param.clone(),
                        template: model.templates.annotate,
                        benchmark: benchmark.to_string(),
                        settings: exp.sample.clone(),
                    },
                    with_model(std::slice::from_ref(&greedy)),
                    m.binding.clone(),
                )?;
                report_inputs.push(key.clone());
                Some(key)
            }
            false => None,
        };
        // §5.2: another model's greedy-correct responses in this model's tokens, per source.
        let mut transfers: HashMap<String, (String, Annotation)> = HashMap::new();

        let mut checkpoints: Vec<(String, String, String)> = Vec::new(); // (method, cell, key)
        // (method, cell, benchmark) → its eval stage
        let mut evals: HashMap<(String, String, String), String> = HashMap::new();
        let mut seen = BTreeSet::new();
        // The evaluations the report reads, after every other stage it reads.
        let mut eval_report = Vec::new();
        if exp.eval.include_base {
            let subject = EvalSubject {
                name: None,
                inputs: m.inputs.clone(),
                model: EvalModel::Base(BaseModel {
                    base: m.param.clone(),
                }),
            };
            self.evals(
                model,
                &m,
                subject,
                benchmarks,
                &mut evals,
                &mut seen,
                &mut eval_report,
            )?;
        }
        // Methods that score their responses with another method's checkpoint come after the
        // others have trained and been evaluated (the scorer's cell is chosen by its evals).
        let (plain, scored): (Vec<&Method>, Vec<&Method>) =
            exp.methods.iter().partition(|me| me.score.is_none());
        for me in plain.into_iter().chain(scored) {
            // (responses, and their weights for the weighted objective)
            let mut responses: Vec<String> = Vec::new();
            let mut scored_weights: Option<String> = None;
            match &me.responses {
                Responses::Greedy => responses.push(greedy.clone()),
                Responses::GreedySampled => {
                    responses.push(greedy.clone());
                    responses.extend(sample.clone());
                }
                // A model is not trained on its own responses "transferred".
                Responses::From(source) if source == name => continue,
                Responses::From(source) => {
                    let spec = exp
                        .models
                        .iter()
                        .find(|x| &x.name == source)
                        .ok_or_else(|| {
                            PlanError::Invalid(format!(
                                "method {}: no model named `{source}`",
                                me.name
                            ))
                        })?;
                    if !transfers.contains_key(source) {
                        let t = self.transfer(model, &m, spec, train_data)?;
                        report_inputs.push(t.0.clone());
                        transfers.insert(source.clone(), t);
                    }
                    if let Some((key, _)) = transfers.get(source) {
                        responses.push(key.clone());
                    }
                }
            }
            if let Some(spec) = &me.score {
                let scorer = exp.method(&spec.by).ok_or_else(|| {
                    PlanError::Invalid(format!("method {}: no method `{}`", me.name, spec.by))
                })?;
                let (start, chosen) = self.method_start(
                    scorer,
                    spec.cell.as_ref(),
                    &checkpoints,
                    &evals,
                    benchmarks,
                )?;
                let mut inputs = with_model(&responses[responses.len() - 1..]);
                // Transferred with their token ids, the source's critical tokens are reused.
                if let Responses::From(source) = &me.responses
                    && let Some((_, src)) = transfers.get(source)
                {
                    inputs.extend(src.criticality.get(&me.name).cloned());
                }
                inputs.extend(chosen);
                let key = self.add_typed(
                    label::score(name, &me.name),
                    &ScoreParams {
                        base: m.param.clone(),
                        scorer: start,
                        top: spec.top,
                    },
                    inputs,
                    m.binding.clone(),
                )?;
                scored_weights = Some(key);
            }
            let (objective, weights) = match &me.kind {
                MethodKind::Sft => (TrainObjective::Sft, None),
                MethodKind::Dft => (TrainObjective::Dft, None),
                MethodKind::Cft { .. } => (
                    TrainObjective::Weighted,
                    match me.responses {
                        Responses::From(_) => None,
                        _ => criticality.get(&me.name).cloned(),
                    },
                ),
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
            let weights: Vec<String> = weights.into_iter().chain(scored_weights).collect();
            report_inputs.extend(weights.iter().cloned());
            let mut cells = Vec::new();
            for cell in &me.cells {
                let mut inputs = with_model(&responses);
                inputs.extend(weights.iter().cloned());
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
                checkpoints.push((me.name.clone(), cell.label.clone(), key.clone()));
                cells.push((cell.label.clone(), key));
            }
            // Evaluation of each checkpoint on each benchmark.
            for (cell, key) in cells {
                let subject = EvalSubject {
                    name: Some((me.name.clone(), cell)),
                    inputs: vec![key],
                    model: EvalModel::Checkpoint(CheckpointModel { checkpoint: true }),
                };
                self.evals(
                    model,
                    &m,
                    subject,
                    benchmarks,
                    &mut evals,
                    &mut seen,
                    &mut eval_report,
                )?;
            }
        }
        report_inputs.extend(eval_report);

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
                        let (start, chosen) = self.method_start(
                            method,
                            start.cell.as_ref(),
                            &checkpoints,
                            &evals,
                            benchmarks,
                        )?;
                        inputs.extend(chosen);
                        GrpoStart::Method(start)
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
                    eval_max_new_tokens: exp.eval.max_new_tokens,
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
