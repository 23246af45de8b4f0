//! Gradient parity with transformers (`scripts/make_train_fixtures.py`): on each tiny fixture
//! family, the loss of a right-padded batch under SFT (Eq. 1), Graded CFT (Eq. 8) and DFT,
//! and the gradient norms of the embedding and of a `q_proj` weight, within 1e-4 relative.

use std::collections::BTreeMap;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use cft::model::{LoadOptions, load_causal_lm};
use cft::train::Objective;
use cft::train::data::{Batch, Example};
use cft::train::objective::target_log_probs;
use cft::train::params::accumulate_grads;
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

#[derive(Deserialize)]
struct Fixture {
    sequences: Vec<Sequence>,
    families: BTreeMap<String, BTreeMap<String, Case>>,
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

#[test]
fn loss_and_gradient_norms_match_transformers() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(root.join("train/parity.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    let device = Default::default();
    let mut worst = 0.0f64;
    for (family, cases) in &fixture.families {
        let lm = load_causal_lm::<AB>(
            &root.join("models").join(family),
            &device,
            LoadOptions::default(),
        )
        .unwrap();
        for (name, case) in cases {
            let objective = Objective::parse(name).unwrap();
            let examples: Vec<Example> = fixture
                .sequences
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let (prompt, response) = s.ids.split_at(s.prompt_len);
                    let weights = (objective == Objective::Weighted).then_some(s.graded.as_slice());
                    Example::new(i as u64, prompt, response, weights, 1024).unwrap()
                })
                .collect();
            let refs: Vec<&Example> = examples.iter().collect();
            let denominator =
                objective.denominator(examples.iter().flat_map(|e| e.weights.iter().copied()));
            let batch = Batch::<AB>::new(&refs, 0, &device);
            let logits = lm.forward(batch.inputs, batch.valid);
            let loss = objective.loss(
                target_log_probs(logits, batch.targets),
                batch.weights,
                denominator,
            );
            let value = loss.clone().into_scalar().elem::<f32>() as f64;
            let mut grads = BTreeMap::new();
            accumulate_grads(&lm, &loss.backward(), &mut grads);
            let r = relative(value, case.loss);
            worst = worst.max(r);
            assert!(
                r < TOLERANCE,
                "{family} {name}: loss {value} vs {}",
                case.loss
            );
            for (param, expected) in &case.grad_norms {
                let g = grads
                    .get(param)
                    .unwrap_or_else(|| panic!("{param}: no gradient"));
                let norm = (g.clone().square().sum().into_scalar().elem::<f32>() as f64).sqrt();
                let r = relative(norm, *expected);
                worst = worst.max(r);
                assert!(
                    r < TOLERANCE,
                    "{family} {name} {param}: {norm} vs {expected}"
                );
            }
        }
    }
    eprintln!("worst relative difference: {worst:.2e}");
}
