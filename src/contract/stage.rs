//! A stage: one node of the DAG, a pure function of its params and its inputs' outputs.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The stage kinds of DESIGN.md's table, by the names `cft plan --json` prints.
pub const KINDS: [&str; super::Kind::ALL.len()] = {
    let mut names = [""; super::Kind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = super::Kind::ALL[i].name();
        i += 1;
    }
    names
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageSpec {
    pub key: String,
    pub kind: super::Kind,
    pub version: u32,
    /// Human name, unique within a plan: `train qwen2.5-7b strict3 bs16-lr2e-6`.
    pub label: String,
    /// `experiment/label`: the role this stage fills, to explain staleness across edits.
    pub slot: String,
    /// Everything the output depends on, by value. Hashed into the key.
    pub params: Value,
    /// Keys of the stages whose outputs this one reads, in a fixed order. Hashed into the key.
    pub inputs: Vec<String>,
    /// Where to find external files at run time (model directories, data files). Not hashed:
    /// external inputs enter `params` by content fingerprint, so moving a file changes nothing.
    pub bindings: Value,
}

impl StageSpec {
    pub fn new(
        experiment: &str,
        kind: super::Kind,
        version: u32,
        label: String,
        params: Value,
        inputs: Vec<String>,
        bindings: Value,
    ) -> StageSpec {
        let key = stage_key(kind.name(), version, &params, &inputs);
        StageSpec {
            key,
            kind,
            version,
            slot: format!("{experiment}/{label}"),
            label,
            params,
            inputs,
            bindings,
        }
    }
}

/// The key: blake3 of the canonical JSON `{kind, version, params, inputs}` (sorted object
/// keys, no whitespace), shortened to 24 hex digits.
pub fn stage_key(kind: &str, version: u32, params: &Value, inputs: &[String]) -> String {
    let canonical = json!({
        "kind": kind,
        "version": version,
        "params": params,
        "inputs": inputs,
    });
    // serde_json's map is a BTreeMap (no `preserve_order`), so keys serialise sorted.
    let text = canonical.to_string();
    let hash = blake3::hash(text.as_bytes()).to_hex();
    hash[..24].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_object_key_order_but_not_values() {
        let a = serde_json::from_str::<Value>(r#"{"lr": 2e-6, "bs": 16}"#).unwrap();
        let b = serde_json::from_str::<Value>(r#"{"bs": 16, "lr": 2e-6}"#).unwrap();
        let c = serde_json::from_str::<Value>(r#"{"bs": 16, "lr": 5e-6}"#).unwrap();
        assert_eq!(
            stage_key("train", 1, &a, &[]),
            stage_key("train", 1, &b, &[])
        );
        assert_ne!(
            stage_key("train", 1, &a, &[]),
            stage_key("train", 1, &c, &[])
        );
        assert_ne!(
            stage_key("train", 1, &a, &[]),
            stage_key("train", 2, &a, &[])
        );
        assert_ne!(
            stage_key("train", 1, &a, &[]),
            stage_key("train", 1, &a, &["x".to_string()])
        );
    }
}
