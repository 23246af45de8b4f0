//! The training loop, nanoGPT-style: every setting in [`TrainSettings`], one optimiser step
//! per call of [`Trainer::step`] (micro-batches → accumulated gradients → global-norm clip →
//! Adam), and the whole state (trainable weights, moments, step) in one safetensors blob so a
//! stage can save it every N steps and resume bit for bit after a `kill -9`.
//!
//! The data order is a function of `(seed, epoch)` (see [`super::data::epoch_order`]), so the
//! step number is all the data-order state there is.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::checkpoint::{StoreDtype, read_safetensors, safetensors_bytes};
use super::data::{Batch, Example, LastBatch, epoch_order};
use super::objective::{Normalization, Objective, target_log_probs};
use super::optim::{AdamConfig, AdamState, adam_step};
use super::params::{HostTensor, accumulate_grads, global_norm, load_values, named_values};
use super::schedule::Schedule;
use crate::model::CausalLm;

/// Every setting of a run, in one place.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    /// Which per-token loss (Eq. 1, Eq. 8, DFT).
    pub objective: Objective,
    /// Examples per optimiser step (the paper's batch size: 16, 32 or 128).
    pub batch_size: usize,
    /// Examples per forward/backward; `batch_size / micro_batch_size` micro-batches are
    /// accumulated into one step.
    pub micro_batch_size: usize,
    /// What each micro-batch's loss is divided by (OpenRLHF: its own weight sum).
    pub normalization: Normalization,
    /// Whether an epoch's last, incomplete batch is a step (OpenRLHF drops it).
    pub last_batch: LastBatch,
    /// Optimiser steps in the run (epochs × [`TrainSettings::steps_per_epoch`] for
    /// fine-tuning).
    pub total_steps: u64,
    /// Peak learning rate, warmup ratio and decay shape (HF's cosine with 3% warmup).
    pub schedule: Schedule,
    /// Adam or AdamW with PyTorch's defaults spelled out.
    pub adam: AdamConfig,
    /// Global-norm gradient clipping threshold (`max_grad_norm`); 0 disables.
    pub grad_clip: f64,
    /// Seeds the data order.
    pub seed: u64,
    /// Input id on padding positions (never attended, never predicted).
    pub pad_id: u32,
}

impl TrainSettings {
    /// Optimiser steps per pass over `n` examples (see [`LastBatch`]).
    pub fn steps_per_epoch(&self, n: usize) -> u64 {
        self.last_batch.steps_per_epoch(n, self.batch_size)
    }
}

/// What one optimiser step did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepMetrics {
    pub step: u64,
    /// The step's loss, summed over its micro-batches as `loss_normalization` divided them
    /// (under `dataset` it is the batch's share of Eq. 8, so much smaller than the others).
    pub loss: f64,
    pub lr: f64,
    /// Before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Response tokens with nonzero weight / response tokens.
    pub weighted_fraction: f64,
    /// Every token of the batch, prompts included (what `tokens_per_s` counts).
    pub tokens: u64,
    /// Annotated response tokens with a nonzero weight.
    pub weighted_tokens: u64,
    /// Annotated response tokens. `None` in a log saved by a build that did not count them,
    /// so a resumed run's total is never a partial sum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_tokens: Option<u64>,
}

pub struct Trainer<B: AutodiffBackend> {
    pub model: CausalLm<B>,
    pub settings: TrainSettings,
    examples: Vec<Example>,
    /// D_correct's weight sum, the denominator of `Normalization::Dataset`.
    dataset_weight: f32,
    adam: AdamState<B::InnerBackend>,
    /// Optimiser steps done.
    pub step: u64,
    device: B::Device,
}

impl<B: AutodiffBackend> Trainer<B> {
    pub fn new(
        model: CausalLm<B>,
        settings: TrainSettings,
        examples: Vec<Example>,
        device: B::Device,
    ) -> Result<Self, TrainError> {
        if examples.is_empty() {
            return Err(TrainError::Empty);
        }
        if settings.batch_size == 0 || settings.micro_batch_size == 0 {
            return Err(TrainError::Setting {
                name: "batch_size".into(),
                message: "batch and micro-batch sizes must be positive".into(),
            });
        }
        if settings.steps_per_epoch(examples.len()) == 0 {
            return Err(TrainError::Setting {
                name: "last_batch".into(),
                message: format!(
                    "{} examples are fewer than batch_size {}: with last_batch = \"drop\" an \
                     epoch has no step",
                    examples.len(),
                    settings.batch_size
                ),
            });
        }
        let dataset_weight = examples.iter().flat_map(|e| &e.weights).sum();
        Ok(Self {
            model,
            settings,
            examples,
            dataset_weight,
            adam: AdamState::default(),
            step: 0,
            device,
        })
    }

    pub fn is_done(&self) -> bool {
        self.step >= self.settings.total_steps
    }

    /// The example indices of optimiser step `step`.
    fn batch_indices(&self, step: u64) -> Vec<usize> {
        let n = self.examples.len();
        let per_epoch = self.settings.steps_per_epoch(n);
        let (epoch, k) = (step / per_epoch, (step % per_epoch) as usize);
        let order = epoch_order(n, self.settings.seed, epoch);
        let bs = self.settings.batch_size;
        // Under `LastBatch::Drop` k never reaches the short tail.
        order[k * bs..((k + 1) * bs).min(n)].to_vec()
    }

    /// One optimiser step over the next batch.
    pub fn step(&mut self) -> StepMetrics {
        let start = Instant::now();
        let s = &self.settings;
        let batch: Vec<&Example> = self
            .batch_indices(self.step)
            .into_iter()
            .map(|i| &self.examples[i])
            .collect();
        let micro_batches: Vec<&[&Example]> = batch.chunks(s.micro_batch_size).collect();
        let micro_sums: Vec<f32> = micro_batches
            .iter()
            .map(|micro| micro.iter().flat_map(|e| &e.weights).sum())
            .collect();
        let denominators = s
            .normalization
            .denominators(&micro_sums, self.dataset_weight);
        // LoRA dropout draws from the backend's generator: seeding it per step makes a
        // resumed run draw what an uninterrupted one would.
        B::seed(
            &self.device,
            s.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let mut grads = BTreeMap::new();
        let (mut loss, mut tokens) = (0.0f64, 0usize);
        for (micro, denominator) in micro_batches.into_iter().zip(denominators) {
            let mb = Batch::<B>::new(micro, s.pad_id, &self.device);
            tokens += mb.tokens;
            let logits = self.model.forward(mb.inputs, mb.valid); // [b, t, vocab]
            let log_probs = target_log_probs(logits, mb.targets); // [b, t]
            let l = s.objective.loss(log_probs, mb.weights, denominator);
            loss += l.clone().into_scalar().elem::<f32>() as f64;
            let g = l.backward();
            accumulate_grads(&self.model, &g, &mut grads);
        }
        let grad_norm = global_norm(&grads);
        // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above.
        let scale = match s.grad_clip > 0.0 {
            true => (s.grad_clip / (grad_norm + 1e-6)).min(1.0),
            false => 1.0,
        };
        let lr = s.schedule.lr(self.step);
        let model = self.model.clone();
        self.model = adam_step(model, &mut grads, &mut self.adam, s.adam, lr, scale);
        let response: usize = batch.iter().map(|e| e.response_tokens).sum();
        let weighted: usize = batch.iter().map(|e| e.weighted_tokens).sum();
        self.step += 1;
        StepMetrics {
            step: self.step,
            loss,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
            weighted_fraction: weighted as f64 / response.max(1) as f64,
            tokens: tokens as u64,
            weighted_tokens: weighted as u64,
            response_tokens: Some(response as u64),
        }
    }

    /// The trainable weights, Adam moments and step as safetensors bytes; `note` (the
    /// caller's metrics log) is kept in the metadata so it is saved atomically with them.
    pub fn state_bytes(&self, note: &str) -> Result<Vec<u8>, TrainError> {
        let values = named_values(&self.model);
        let mut tensors: BTreeMap<String, HostTensor> = BTreeMap::new();
        for (name, m) in &self.adam.m {
            let (Some(v), Some(p)) = (self.adam.v.get(name), values.get(name)) else {
                return Err(TrainError::State(format!(
                    "no moments or weight for {name}"
                )));
            };
            tensors.insert(format!("param.{name}"), p.clone());
            tensors.insert(format!("m.{name}"), host(m));
            tensors.insert(format!("v.{name}"), host(v));
            if let Some(master) = self.adam.master.get(name) {
                tensors.insert(format!("master.{name}"), host(master));
            }
        }
        let mut meta = HashMap::new();
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("adam_step".to_string(), self.adam.step.to_string());
        meta.insert("note".to_string(), note.to_string());
        safetensors_bytes(&tensors, StoreDtype::F32, Some(meta))
    }

    /// Restores what [`Trainer::state_bytes`] saved; returns its `note`.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<String, TrainError> {
        let (tensors, meta) = read_safetensors(bytes)?;
        let number = |key: &str| -> Result<u64, TrainError> {
            meta.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| TrainError::State(format!("metadata {key} missing")))
        };
        let mut params = BTreeMap::new();
        let mut adam = AdamState {
            step: number("adam_step")?,
            ..AdamState::default()
        };
        for (key, (shape, values)) in tensors {
            let n = values.len();
            let flat = || {
                Tensor::<B::InnerBackend, 1>::from_data(
                    TensorData::new(values.clone(), [n]),
                    &self.device,
                )
            };
            if let Some(name) = key.strip_prefix("param.") {
                params.insert(name.to_string(), (shape, values.clone()));
            } else if let Some(name) = key.strip_prefix("m.") {
                adam.m.insert(name.to_string(), flat());
            } else if let Some(name) = key.strip_prefix("v.") {
                adam.v.insert(name.to_string(), flat());
            } else if let Some(name) = key.strip_prefix("master.") {
                adam.master.insert(name.to_string(), flat());
            }
        }
        self.model = load_values(self.model.clone(), &params).map_err(TrainError::State)?;
        self.adam = adam;
        self.step = number("step")?;
        Ok(meta.get("note").cloned().unwrap_or_default())
    }
}

fn host<B: Backend>(t: &Tensor<B, 1>) -> HostTensor {
    let [n] = t.dims();
    let values = t.clone().into_data().convert::<f32>().to_vec::<f32>();
    (vec![n], values.unwrap_or_default())
}
