//! The `pretrain` stage: a toy model trained from scratch on synthetic problems is an HF
//! directory that `cft` loads, and its loss falls.

use std::sync::atomic::AtomicBool;

use cft::cache::{Cache, RecordStatus, Store};
use cft::exec::{self, NoEvents, Options};
use cft::model::{LanguageModel, LoadOptions};
use cft::plan::{Plan, StageSpec};
use serde_json::{Value, json};

#[test]
fn pretrain_writes_a_loadable_model_and_learns() {
    let mut plan = Plan::default();
    let corpus = plan.add(StageSpec::new(
        "test",
        cft::contract::Kind::Dataset,
        cft::contract::Kind::Dataset.version(),
        "corpus".into(),
        json!({"source": "synthetic", "synthetic":
               {"split": "train", "n": 64, "seed": 1, "min_steps": 1, "max_steps": 2}}),
        vec![],
        Value::Null,
    ));
    let toy = json!({"architecture": "qwen2", "hidden_size": 32, "num_layers": 1,
        "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64, "max_position": 256,
        "vocab_size": 300, "pretrain": {"steps": 12, "batch_size": 8, "learning_rate": 3e-3,
        "warmup_ratio": 0.1, "seed": 5}});
    plan.add(StageSpec::new(
        "test",
        cft::contract::Kind::Pretrain,
        cft::contract::Kind::Pretrain.version(),
        "pretrain".into(),
        json!({"toy": toy}),
        vec![corpus],
        Value::Null,
    ));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), "test").unwrap();
    let stop = AtomicBool::new(false);
    let run = |cache: &Cache| {
        let registry = cft::stages::registry();
        let options = Options::default();
        let summary = exec::run(
            &plan,
            cache,
            &exec::Launcher::Threads(&registry),
            &NoEvents,
            &stop,
            &options,
        )
        .unwrap();
        assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    };
    run(&cache);
    // Determinism: a second cache gets the same tokenizer and weights, byte for byte.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Cache::open(other_dir.path(), "test").unwrap();
    run(&other);
    assert!(
        pretrain_outputs(&cache) == pretrain_outputs(&other),
        "pretrain is not deterministic"
    );
    let record = cache
        .records()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "pretrain")
        .unwrap();
    assert_eq!(record.status, RecordStatus::Done);
    let steps = record.metrics["steps"].as_array().unwrap();
    let loss = |i: usize| steps[i]["loss"].as_f64().unwrap();
    assert!(loss(steps.len() - 1) < loss(0) - 0.5, "{steps:?}");

    // The checkpoint loads as an HF directory, and digits are single tokens.
    let model_dir = dir.path().join("models").join(&record.key);
    for (name, out) in &record.outputs {
        let rel = name.strip_prefix("model/").unwrap();
        let cft::cache::OutputRef::Blob { hash, .. } = out else {
            panic!()
        };
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::copy(cache.blobs().path(hash), model_dir.join(rel)).unwrap();
    }
    let lm = LanguageModel::<burn::backend::Flex>::load(
        &model_dir,
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap();
    let ids = lm.tokenizer.encode("Answer: 1234", false).unwrap();
    let text = lm.tokenizer.decode(&ids, false).unwrap();
    assert_eq!(text, "Answer: 1234");
    let digits: Vec<u32> = lm.tokenizer.encode("1234", false).unwrap();
    assert_eq!(digits.len(), 4, "digits are single tokens");
    assert!(
        lm.eos_token_ids
            .contains(&lm.tokenizer.token_id("<|endoftext|>").unwrap())
    );
}

/// The pretrain record's outputs as (name, bytes).
fn pretrain_outputs(cache: &Cache) -> Vec<(String, Vec<u8>)> {
    let record = cache
        .records()
        .unwrap()
        .into_iter()
        .find(|r| r.kind == "pretrain")
        .unwrap();
    record
        .outputs
        .iter()
        .map(|(name, out)| {
            let cft::cache::OutputRef::Blob { hash, .. } = out else {
                panic!("{name}")
            };
            (
                name.clone(),
                std::fs::read(cache.blobs().path(hash)).unwrap(),
            )
        })
        .collect()
}
