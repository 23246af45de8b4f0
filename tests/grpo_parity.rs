//! GRPO's objective against verl's formulas in torch (`scripts/make_grpo_fixtures.py`): on each
//! tiny fixture family, two prompts with three responses each, group-normalised advantages,
//! old and reference log-probs shifted so that every clip binds somewhere; the loss, its
//! metrics and the gradient norms of the embedding and a `q_proj` weight within 1e-4 relative,
//! in the paper's setting and with the entropy term and a temperature on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use cft::model::{CausalLm, LoadOptions, load_causal_lm};
use cft::train::data::{Batch, Example};
use cft::train::grpo::{
    GrpoInputs, GrpoSettings, group_advantages, grpo_loss, log_probs_and_entropy,
};
use cft::train::params::accumulate_grads;
use serde::Deserialize;

type AB = Autodiff<Flex>;

const TOLERANCE: f64 = 1e-4;

#[derive(Deserialize)]
struct Sequence {
    prompt: Vec<u32>,
    response: Vec<u32>,
    group: u64,
    reward: f32,
    old_offset: Vec<f32>,
    ref_offset: Vec<f32>,
}

#[derive(Deserialize)]
struct Settings {
    temperature: f32,
    kl_coef: f32,
    entropy_coeff: f32,
}

#[derive(Deserialize)]
struct Expected {
    loss: f64,
    pg_loss: f64,
    clip_fraction: f64,
    clip_fraction_lower: f64,
    ppo_kl: f64,
    kl: f64,
    entropy: f64,
    grad_norms: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct Fixture {
    sequences: Vec<Sequence>,
    advantages: Vec<f32>,
    cases: BTreeMap<String, Settings>,
    families: BTreeMap<String, BTreeMap<String, Expected>>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(family: &str) -> CausalLm<AB> {
    load_causal_lm(
        &root().join("models").join(family),
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap()
}

/// `[b, t]` from per-sequence values at the response positions (0 elsewhere).
fn at_response(seqs: &[Sequence], t: usize, value: impl Fn(usize, usize) -> f32) -> Tensor<AB, 2> {
    let mut out = vec![0.0f32; seqs.len() * t];
    for (row, s) in seqs.iter().enumerate() {
        let p = s.prompt.len() - 1;
        for j in 0..s.response.len() {
            out[row * t + p + j] = value(row, j);
        }
    }
    Tensor::from_data(TensorData::new(out, [seqs.len(), t]), &Default::default())
}

#[test]
fn grpo_loss_and_gradients_match_verl_in_torch() {
    let text = std::fs::read_to_string(root().join("train/grpo.json")).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    let seqs = &fixture.sequences;
    let rewards: Vec<f32> = seqs.iter().map(|s| s.reward).collect();
    let groups: Vec<u64> = seqs.iter().map(|s| s.group).collect();
    let advantages = group_advantages(&rewards, &groups, true);
    for (a, b) in advantages.iter().zip(&fixture.advantages) {
        assert!(
            (a - b).abs() < 1e-6,
            "advantages {advantages:?} vs {:?}",
            fixture.advantages
        );
    }
    let examples: Vec<Example> = seqs
        .iter()
        .enumerate()
        .map(|(i, s)| Example::new(i as u64, &s.prompt, &s.response, None, None, 1024).unwrap())
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let mut checked = 0;
    for (family, cases) in &fixture.families {
        let lm = load(family);
        for (name, expected) in cases {
            let c = &fixture.cases[name];
            let settings = GrpoSettings {
                temperature: c.temperature,
                kl_coef: c.kl_coef,
                entropy_coeff: c.entropy_coeff,
                ..GrpoSettings::default()
            };
            let batch = Batch::<AB>::new(&refs, 0, &Default::default());
            let [_, t] = batch.targets.dims();
            let mask = at_response(seqs, t, |_, _| 1.0);
            // The batch's own response weights are the same mask.
            let same: f32 = (batch.weights.clone() - mask.clone())
                .abs()
                .sum()
                .into_scalar();
            assert_eq!(same, 0.0);
            let logits = lm.forward(batch.inputs, batch.valid);
            let (log_probs, entropy) =
                log_probs_and_entropy(logits, batch.targets, settings.temperature);
            let current = log_probs.clone().detach();
            let inputs = GrpoInputs {
                old_log_probs: current.clone()
                    + at_response(seqs, t, |row, j| seqs[row].old_offset[j]),
                ref_log_probs: current + at_response(seqs, t, |row, j| seqs[row].ref_offset[j]),
                advantages: at_response(seqs, t, |row, _| advantages[row]),
                log_probs,
                entropy,
                mask,
            };
            let (loss, m) = grpo_loss(inputs, &settings, 1.0);
            let label = format!("{family} {name}");
            let close = |what: &str, got: f64, want: f64| {
                let r = (got - want).abs() / want.abs().max(1e-6);
                assert!(r < TOLERANCE, "{label} {what}: {got} vs {want}");
            };
            close("loss", m.loss as f64, expected.loss);
            close("pg_loss", m.pg_loss as f64, expected.pg_loss);
            close("kl", m.kl as f64, expected.kl);
            close("ppo_kl", m.ppo_kl as f64, expected.ppo_kl);
            close("entropy", m.entropy as f64, expected.entropy);
            assert_eq!(
                m.clip_fraction as f64, expected.clip_fraction as f32 as f64,
                "{label}"
            );
            assert_eq!(
                m.clip_fraction_lower as f64, expected.clip_fraction_lower as f32 as f64,
                "{label}"
            );
            assert!(
                m.clip_fraction > 0.0 && m.clip_fraction_lower > 0.0,
                "{label}: {m:?}"
            );
            let mut grads = BTreeMap::new();
            accumulate_grads(&lm, &loss.backward(), &mut grads);
            for (param, want) in &expected.grad_norms {
                let g = grads
                    .get(param)
                    .unwrap_or_else(|| panic!("{label} {param}: no gradient"));
                let norm = (g.clone().square().sum().into_scalar().elem::<f32>() as f64).sqrt();
                close(param, norm, *want);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8, "four families, two cases each");
}
