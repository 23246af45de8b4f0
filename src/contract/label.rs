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

pub fn report(experiment: &str) -> String {
    format!("report {experiment}")
}
