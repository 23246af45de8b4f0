//! Stage labels: the names the planner gives stages (`cft plan` prints them, records keep
//! them) and the report looks records up by. One definition, so the two cannot drift apart.

pub fn dataset(name: &str) -> String {
    format!("dataset {name}")
}

pub fn pretrain(model: &str) -> String {
    format!("pretrain {model}")
}

pub fn greedy(model: &str) -> String {
    format!("greedy {model}")
}

pub fn rollout(model: &str, j: u64) -> String {
    format!("rollout {model} j={j}")
}

/// A CFT rule with its k, as criticality labels end: `strict-k3`.
pub fn rule_k(rule: &str, k: u64) -> String {
    format!("{rule}-k{k}")
}

/// `rule_k` as [`rule_k`] writes it.
pub fn criticality(model: &str, rule_k: &str) -> String {
    format!("criticality {model} {rule_k}")
}

pub fn token_stats(model: &str) -> String {
    format!("token-stats {model}")
}

pub fn selection(model: &str, method: &str) -> String {
    format!("selection {model} {method}")
}

pub fn train(model: &str, method: &str, cell: &str) -> String {
    format!("train {model} {method} {cell}")
}

/// The evaluation of a method's checkpoint in one sweep cell.
pub fn eval(model: &str, method: &str, cell: &str, bench: &str) -> String {
    format!("eval {model} {method} {cell} {bench}")
}

/// The evaluation of the base model.
pub fn eval_base(model: &str, bench: &str) -> String {
    format!("eval {model} base {bench}")
}

/// GRPO from `start` (a method's name, or `base`).
pub fn grpo(model: &str, start: &str) -> String {
    format!("grpo {model} {start}")
}

/// The resampling of the questions `model` got wrong under greedy decoding (paper §5.1).
pub fn sample(model: &str) -> String {
    format!("sample {model}")
}

/// `source`'s greedy-correct responses in `model`'s tokens and prompt (paper §5.2).
pub fn transfer(model: &str, source: &str) -> String {
    format!("transfer {model} from {source}")
}

/// Method `method`'s critical tokens of responses without rollouts, by s_t (paper §5.1).
pub fn score(model: &str, method: &str) -> String {
    format!("score {model} {method}")
}

pub fn report(experiment: &str) -> String {
    format!("report {experiment}")
}
