//! Gradient parity with transformers (`scripts/make_train_fixtures.py`): on each tiny fixture
//! family, the loss of a right-padded batch under SFT (Eq. 1), Graded CFT (Eq. 8) and DFT,
//! and the gradient norms of the embedding and of a `q_proj` weight, within 1e-4 relative;
//! the same for a LoRA-wrapped model (peft), on the adapter matrices of a `q_proj`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use cft::model::{CausalLm, LoadOptions, load_causal_lm};
use cft::train::data::{Batch, Example};
use cft::train::lora;
use cft::train::objective::target_log_probs;
use cft::train::params::accumulate_grads;
use cft::train::{Normalization, Objective};
use serde::Deserialize;

type AB = Autodiff<Flex>;

const TOLERANCE: f64 = 1e-4;

#[derive(Deserialize)]
struct Sequence {
    ids: Vec<u32>,
    prompt_len: usize,
    graded: Vec<f32>,
}

#[derive(Deserialize)]
struct Case {
    loss: f64,
    grad_norms: BTreeMap<String, f64>,
}

type Cases = BTreeMap<String, BTreeMap<String, Case>>;

#[derive(Deserialize)]
struct Fixture {
    sequences: Vec<Sequence>,
    families: Cases,
    lora: Cases,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(root().join("train/parity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(family: &str) -> CausalLm<AB> {
    load_causal_lm(
        &root().join("models").join(family),
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Loss and the flattened gradients of every trainable parameter.
fn loss_and_grads(
    lm: &CausalLm<AB>,
    sequences: &[Sequence],
    objective: Objective,
) -> (f64, BTreeMap<String, Tensor<Flex, 1>>) {
    let examples: Vec<Example> = sequences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (prompt, response) = s.ids.split_at(s.prompt_len);
            let weights = (objective == Objective::Weighted).then_some(s.graded.as_slice());
            Example::new(i as u64, prompt, response, weights, None, 1024).unwrap()
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    // one micro-batch: the batch's weight sum (Eq. 1 / Eq. 8)
    let weight_sum: f32 = examples.iter().flat_map(|e| &e.weights).sum();
    let denominator = Normalization::Batch.denominators(&[weight_sum], weight_sum)[0];
    let batch = Batch::<AB>::new(&refs, 0, &Default::default());
    let logits = lm.forward(batch.inputs, batch.valid);
    let loss = objective.loss(
        target_log_probs(logits, batch.targets),
        batch.weights,
        denominator,
    );
    let value = loss.clone().into_scalar().elem::<f32>() as f64;
    let mut grads = BTreeMap::new();
    accumulate_grads(lm, &loss.backward(), &mut grads);
    (value, grads)
}

/// Checks one family's cases; returns the worst relative difference.
fn check(
    lm: &CausalLm<AB>,
    sequences: &[Sequence],
    label: &str,
    cases: &BTreeMap<String, Case>,
) -> f64 {
    let mut worst = 0.0f64;
    for (name, case) in cases {
        let (value, grads) = loss_and_grads(lm, sequences, Objective::parse(name).unwrap());
        let r = relative(value, case.loss);
        worst = worst.max(r);
        assert!(
            r < TOLERANCE,
            "{label} {name}: loss {value} vs {}",
            case.loss
        );
        for (param, expected) in &case.grad_norms {
            let g = grads
                .get(param)
                .unwrap_or_else(|| panic!("{label} {param}: no gradient"));
            let norm = (g.clone().square().sum().into_scalar().elem::<f32>() as f64).sqrt();
            let r = relative(norm, *expected);
            worst = worst.max(r);
            assert!(
                r < TOLERANCE,
                "{label} {name} {param}: {norm} vs {expected}"
            );
        }
    }
    worst
}

#[test]
fn loss_and_gradient_norms_match_transformers() {
    let f = fixture();
    let mut worst = 0.0f64;
    for (family, cases) in &f.families {
        worst = worst.max(check(&load(family), &f.sequences, family, cases));
    }
    eprintln!("full: worst relative difference {worst:.2e}");
}

#[test]
fn lora_loss_and_adapter_gradients_match_peft() {
    let f = fixture();
    let mut worst = 0.0f64;
    for (family, cases) in &f.lora {
        let dir = root().join("train").join(format!("lora-{family}"));
        let lm = lora::load_peft(load(family), &dir).unwrap();
        // The base is frozen: only adapter matrices get gradients.
        let (_, grads) = loss_and_grads(&lm, &f.sequences, Objective::Weighted);
        assert!(
            grads.keys().all(|k| k.contains(".lora.")),
            "{:?}",
            grads.keys()
        );
        assert_eq!(grads.len(), 2 * 3 * lm.model.layers.len());
        worst = worst.max(check(&lm, &f.sequences, &format!("lora {family}"), cases));
    }
    eprintln!("lora: worst relative difference {worst:.2e}");
}

/// The merged checkpoint computes what base + adapter computes, and PEFT files round-trip.
#[test]
fn merged_lora_weights_give_the_adapted_logits() {
    let dir = root().join("train/lora-llama");
    let adapted = lora::load_peft(load("llama"), &dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let values = lora::merged_values(&adapted);
    assert!(values.keys().all(|k| !k.contains("lora")));
    let base = root().join("models/llama");
    cft::train::checkpoint::write_model_dir(
        tmp.path(),
        &base,
        &values,
        cft::train::checkpoint::StoreDtype::F32,
    )
    .unwrap();
    let merged =
        load_causal_lm::<AB>(tmp.path(), &Default::default(), LoadOptions::default()).unwrap();
    let ids = Tensor::<AB, 2, Int>::from_data(
        TensorData::new(vec![5i64, 17, 33, 2, 90, 11], [1, 6]),
        &Default::default(),
    );
    let valid = Tensor::<AB, 2, Bool>::from_data(
        TensorData::new(vec![true; 6], [1, 6]),
        &Default::default(),
    );
    let a = adapted
        .forward(ids.clone(), valid.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let b = merged
        .forward(ids, valid)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max < 1e-4, "merged logits differ by {max}");

    let out = tmp.path().join("adapter");
    let spec = lora::LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: vec!["q_proj".into(), "v_proj".into(), "up_proj".into()],
    };
    lora::write_peft(&out, &cft::train::params::named_values(&adapted), &spec).unwrap();
    let again = lora::load_peft(load("llama"), &out).unwrap();
    assert_eq!(
        cft::train::params::named_values(&again),
        cft::train::params::named_values(&adapted)
    );
}
