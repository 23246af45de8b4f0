//! The training recipe's loss normalisations on a real model: the first optimiser step's loss
//! under `micro-batch`, `batch` and `dataset` against the value assembled by hand from each
//! example's token log-probs (the objective-level test in `src/train/objective.rs` checks the
//! gradients on logits by hand).

mod common;

use burn::backend::Autodiff;
use cft::model::{LanguageModel, LoadOptions};
use cft::train::data::{Batch, Example, epoch_order};
use cft::train::objective::target_log_probs;
use cft::train::optim::AdamConfig;
use cft::train::{LastBatch, Normalization, Objective, Schedule, TrainSettings, Trainer};
use common::{B, fixture};

type AD = Autodiff<B>;

const SEED: u64 = 5;

/// Four CFT examples whose weight sums are 3, 1, 2 and 4 (D_correct: 10).
fn examples() -> Vec<Example> {
    let weights: [&[f32]; 4] = [
        &[1.0, 0.0, 1.0, 1.0],
        &[0.0, 1.0, 0.0],
        &[2.0, 0.0, 0.0, 0.0, 0.0],
        &[1.0, 1.0, 1.0, 1.0],
    ];
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let prompt: Vec<u32> = (0..4).map(|j| 3 + ((i * 7 + j * 3) % 40) as u32).collect();
            let response: Vec<u32> = (0..w.len())
                .map(|j| 3 + ((i * 11 + j * 5) % 40) as u32)
                .collect();
            Example::new(i as u64, &prompt, &response, Some(w), None, 64).unwrap()
        })
        .collect()
}

fn model() -> LanguageModel<AD> {
    LanguageModel::load(
        &fixture("qwen2"),
        &Default::default(),
        LoadOptions::default(),
    )
    .unwrap()
}

/// `Σ_t w_t · -log p(y_t)` of one example under the untrained model.
fn weighted_nll(lm: &LanguageModel<AD>, e: &Example) -> f64 {
    let batch = Batch::<AD>::new(&[e], lm.pad_token_id, &Default::default());
    let lp = target_log_probs(lm.lm.forward(batch.inputs, batch.valid), batch.targets);
    let lp = lp.into_data().to_vec::<f32>().unwrap();
    -lp.iter()
        .zip(&e.weights)
        .map(|(l, w)| (*l * *w) as f64)
        .sum::<f64>()
}

/// The first step's (loss, grad norm) under `normalization`: batches of 2, micro-batches of 1.
fn first_step(normalization: Normalization) -> (f64, f64) {
    let lm = model();
    let settings = TrainSettings {
        objective: Objective::Weighted,
        batch_size: 2,
        micro_batch_size: 1,
        normalization,
        last_batch: LastBatch::Short,
        total_steps: 2,
        schedule: Schedule::new("constant", 1e-3, 0.0, 2, 0.0).unwrap(),
        adam: AdamConfig::new("adam", 0.9, 0.95, 1e-8, 0.0).unwrap(),
        grad_clip: 0.0,
        seed: SEED,
        pad_id: lm.pad_token_id,
    };
    let mut trainer = Trainer::new(lm.lm, settings, examples(), Default::default()).unwrap();
    let m = trainer.step();
    (m.loss, m.grad_norm)
}

#[test]
fn the_three_normalisations_give_the_hand_losses() {
    let lm = model();
    let examples = examples();
    let nll: Vec<f64> = examples.iter().map(|e| weighted_nll(&lm, e)).collect();
    let weight: Vec<f64> = examples
        .iter()
        .map(|e| e.weights.iter().sum::<f32>() as f64)
        .collect();
    assert_eq!(weight, [3.0, 1.0, 2.0, 4.0]);
    // The first step's batch: the first two of epoch 0's order, one micro-batch each.
    let order = epoch_order(4, SEED, 0);
    let [x, y] = [order[0], order[1]];
    let hand_micro = 0.5 * (nll[x] / weight[x] + nll[y] / weight[y]);
    let hand_batch = (nll[x] + nll[y]) / (weight[x] + weight[y]);
    let hand_dataset = (nll[x] + nll[y]) / 10.0;

    let (micro, micro_norm) = first_step(Normalization::MicroBatch);
    let (batch, batch_norm) = first_step(Normalization::Batch);
    let (dataset, dataset_norm) = first_step(Normalization::Dataset);
    let close = |got: f64, want: f64| (got - want).abs() <= 1e-5 * want.abs();
    assert!(
        close(micro, hand_micro),
        "micro-batch: {micro} vs {hand_micro}"
    );
    assert!(close(batch, hand_batch), "batch: {batch} vs {hand_batch}");
    assert!(
        close(dataset, hand_dataset),
        "dataset: {dataset} vs {hand_dataset}"
    );
    // The micro-batches carry different weight sums, so the micro-batch mean is another loss.
    assert!(
        (micro - batch).abs() > 1e-3 * batch,
        "micro-batch {micro} vs batch {batch}"
    );
    // Batch and dataset differ by the constant W_batch / W_dataset, gradients included.
    let ratio = (weight[x] + weight[y]) / 10.0;
    assert!(
        (dataset_norm - batch_norm * ratio).abs() <= 1e-4 * dataset_norm,
        "grad norms: dataset {dataset_norm}, batch {batch_norm} x {ratio}"
    );
    assert!(
        (micro_norm - batch_norm).abs() > 1e-4 * batch_norm,
        "grad norms: micro-batch {micro_norm}, batch {batch_norm}"
    );
}
