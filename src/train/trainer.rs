//! The training loop, nanoGPT-style: every setting in [`TrainSettings`], one optimiser step
//! per call of [`Trainer::step`] (micro-batches → accumulated gradients → global-norm clip →
//! Adam), the optimiser state where the [`Strategy`] keeps it, and the whole state (trainable
//! weights, moments, step) streamed into one safetensors file so a stage can save it and
//! resume bit for bit after a `kill -9`.
//!
//! The data order is a function of `(seed, epoch)` (see [`super::data::epoch_order`]), so the
//! step number is all the data-order state there is.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use burn::tensor::DType;

use super::TrainError;
use super::data::{Batch, Example, LastBatch, epoch_order};
use super::objective::{Normalization, Objective, target_log_probs};
use super::optim::{AdamConfig, AdamState, HostAdam, adam_step, host_adam_step};
use super::params::{accumulate_grads, global_norm, load_trainable, param_data, trainable};
use super::schedule::Schedule;
use super::state::{self, Entry, write_f32s};
use super::zero::Sharded;
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

/// Where the optimiser state lives (the manifest's `train.strategy`).
#[derive(Debug, Clone)]
pub enum Strategy<D> {
    /// Weights, gradients, master weights and moments on the trainer's device.
    Single,
    /// f32 master weights and moments in host memory, updated by CPU threads.
    Offload,
    /// Data parallel over these devices (rank 0 first, the trainer's own), each rank owning
    /// the gradient sums, master weights and moments of a share of the parameters
    /// ([`super::zero`]).
    Zero1(Vec<D>),
}

impl<D> Strategy<D> {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Single => "single",
            Strategy::Offload => "offload",
            Strategy::Zero1(_) => "zero1",
        }
    }
}

/// The optimiser state, where the strategy keeps it.
enum Optim<B: AutodiffBackend> {
    Device(AdamState<B::InnerBackend>),
    Host(HostAdam),
    Sharded(Box<Sharded<B>>),
}

pub struct Trainer<B: AutodiffBackend> {
    pub model: CausalLm<B>,
    pub settings: TrainSettings,
    examples: Vec<Example>,
    /// D_correct's weight sum, the denominator of `Normalization::Dataset`.
    dataset_weight: f32,
    optim: Optim<B>,
    /// Optimiser steps done.
    pub step: u64,
    device: B::Device,
    /// Micro-batches run side by side on one device (threads; see [`Trainer::with_lanes`]).
    lanes: usize,
    /// Where this trainer's steps spent their time.
    pub timings: StepTimings,
}

/// Wall-clock seconds of a trainer's steps by phase, summed over steps.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTimings {
    /// The micro-batches' forward and backward passes, with the gradients added up.
    pub passes_s: f64,
    /// The gradient norm, clipping and the optimiser's update.
    pub update_s: f64,
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
            optim: Optim::Device(AdamState::default()),
            step: 0,
            device,
            lanes: 1,
            timings: StepTimings::default(),
        })
    }

    /// Keeps the optimiser state where `strategy` says; before the first step.
    pub fn with_strategy(mut self, strategy: Strategy<B::Device>) -> Result<Self, TrainError> {
        if self.step > 0 {
            return Err(TrainError::State(
                "the strategy is chosen before the first step".into(),
            ));
        }
        self.optim = match strategy {
            Strategy::Single => Optim::Device(AdamState::default()),
            Strategy::Offload => Optim::Host(HostAdam::default()),
            Strategy::Zero1(devices) => {
                Optim::Sharded(Box::new(Sharded::new(&self.model, devices)?))
            }
        };
        Ok(self)
    }

    /// Runs up to `lanes` micro-batches of a step at once, each forward and backward in a
    /// thread of its own on its own graph (the CPU's cores, which a small model's operations
    /// alone leave idle). The gradients are still added in micro-batch order, so the weights
    /// are the same bits as one at a time; the micro-batches, and so the arithmetic, are the
    /// manifest's whatever `lanes` is. Holds `lanes` micro-batches' activations at once.
    /// Ignored under `zero1` (its ranks run in parallel already) and when the model draws
    /// random numbers in the forward pass (LoRA dropout: the draws would interleave).
    pub fn with_lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes.max(1);
        self
    }

    pub fn strategy_name(&self) -> &'static str {
        match &self.optim {
            Optim::Device(_) => "single",
            Optim::Host(_) => "offload",
            Optim::Sharded(_) => "zero1",
        }
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
        let step_seed = s.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let micro: Vec<(&[&Example], f32)> = micro_batches.into_iter().zip(denominators).collect();
        let (mut grads, loss, tokens) = match &self.optim {
            Optim::Sharded(sharded) => sharded.gradients(&self.model, s, &micro, step_seed),
            _ => {
                // LoRA dropout draws from the backend's generator: seeding it per step makes
                // a resumed run draw what an uninterrupted one would.
                B::seed(&self.device, step_seed);
                let lanes = match crate::train::lora::has_dropout(&self.model) {
                    true => 1,
                    false => self.lanes.min(micro.len()),
                };
                // One copy of the model per lane with parameters of their own (the same
                // storage, fresh autodiff leaves), so each lane's graph is its own.
                let copies: Vec<CausalLm<B>> = match lanes > 1 {
                    true => (0..lanes).map(|_| own_leaves(self.model.clone())).collect(),
                    false => vec![self.model.clone()],
                };
                let mut grads = BTreeMap::new();
                let (mut loss, mut tokens) = (0.0f64, 0usize);
                for wave in micro.chunks(copies.len()) {
                    let run = |r: usize, (examples, denominator): &(&[&Example], f32)| {
                        micro_backward(&copies[r], s, examples, *denominator, &self.device)
                    };
                    let done: Vec<(f64, usize, B::Gradients)> = match wave.len() {
                        1 => vec![run(0, &wave[0])],
                        _ => super::zero::parallel(wave, &run),
                    };
                    for (copy, (l, t, g)) in copies.iter().zip(done) {
                        accumulate_grads(copy, &g, &mut grads);
                        loss += l;
                        tokens += t;
                    }
                }
                (grads, loss, tokens)
            }
        };
        let passes_done = Instant::now();
        let grad_norm = global_norm(&grads);
        // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above.
        let scale = match s.grad_clip > 0.0 {
            true => (s.grad_clip / (grad_norm + 1e-6)).min(1.0),
            false => 1.0,
        };
        let lr = s.schedule.lr(self.step);
        let (adam, model) = (s.adam, self.model.clone());
        self.model = match &mut self.optim {
            Optim::Device(state) => adam_step(model, &mut grads, state, adam, lr, scale),
            Optim::Host(state) => host_adam_step(model, &mut grads, state, adam, lr, scale),
            Optim::Sharded(sharded) => sharded.update(model, grads, adam, lr, scale),
        };
        self.timings.passes_s += (passes_done - start).as_secs_f64();
        self.timings.update_s += passes_done.elapsed().as_secs_f64();
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

    /// Writes the resumable state to the safetensors file `path`, one tensor at a time
    /// ([`super::state`]): the trainable weights in their dtype, and in f32 the Adam moments
    /// and the master weights, wherever the strategy keeps them. `note` (the caller's metrics
    /// log) goes into the metadata, so it is saved atomically with them. Returns the size.
    pub fn save_state(&self, path: &Path, note: &str) -> Result<u64, TrainError> {
        let mut entries: Vec<Entry> = trainable(&self.model)
            .into_iter()
            .map(|(name, shape, dtype)| Entry::new(format!("param.{name}"), dtype, shape))
            .collect();
        let moments = self.moments();
        for (name, n, has_master) in &moments {
            entries.push(Entry::new(format!("m.{name}"), DType::F32, vec![*n]));
            entries.push(Entry::new(format!("v.{name}"), DType::F32, vec![*n]));
            if *has_master {
                entries.push(Entry::new(format!("master.{name}"), DType::F32, vec![*n]));
            }
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), STATE_FORMAT.to_string());
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("adam_step".to_string(), self.adam_step().to_string());
        meta.insert("strategy".to_string(), self.strategy_name().to_string());
        meta.insert("note".to_string(), note.to_string());
        state::write(path, &entries, &meta, |entry, out| {
            let missing = || TrainError::State(format!("{} vanished while saving", entry.name));
            let failed = |e: std::io::Error| TrainError::Io {
                path: path.to_path_buf(),
                source: e,
            };
            let (kind, name) = entry.name.split_once('.').ok_or_else(missing)?;
            match kind {
                "param" => {
                    let data = param_data(&self.model, name).ok_or_else(missing)?;
                    out.write_all(data.as_bytes()).map_err(failed)
                }
                _ => self
                    .write_moment(kind, name, out)
                    .ok_or_else(missing)?
                    .map_err(failed),
            }
        })
    }

    /// (name, elements, has an f32 master copy) of every parameter with optimiser state.
    fn moments(&self) -> Vec<(String, usize, bool)> {
        let device = |state: &AdamState<B::InnerBackend>| -> Vec<(String, usize, bool)> {
            state
                .m
                .iter()
                .map(|(name, m)| (name.clone(), m.dims()[0], state.master.contains_key(name)))
                .collect()
        };
        let mut out = match &self.optim {
            Optim::Device(state) => device(state),
            Optim::Host(state) => state
                .m
                .iter()
                .map(|(name, m)| (name.clone(), m.len(), state.master.contains_key(name)))
                .collect(),
            Optim::Sharded(sharded) => sharded.states.iter().flat_map(device).collect(),
        };
        out.sort();
        out
    }

    fn adam_step(&self) -> u64 {
        match &self.optim {
            Optim::Device(state) => state.step,
            Optim::Host(state) => state.step,
            Optim::Sharded(sharded) => sharded.states.first().map_or(0, |s| s.step),
        }
    }

    /// Writes moment `kind` (`m`, `v`, `master`) of parameter `name` as f32 bytes from its
    /// one host copy; `None` when the state has no such moment.
    fn write_moment(
        &self,
        kind: &str,
        name: &str,
        out: &mut dyn std::io::Write,
    ) -> Option<std::io::Result<()>> {
        let on_device = |state: &AdamState<B::InnerBackend>| {
            state
                .by_kind(kind)
                .get(name)
                .map(|t| t.clone().into_data().convert::<f32>())
        };
        let data = match &self.optim {
            Optim::Device(state) => on_device(state),
            Optim::Sharded(sharded) => sharded.state_of(name).and_then(on_device),
            Optim::Host(state) => {
                let values = state.by_kind(kind).get(name);
                return values.map(|values| write_f32s(out, values));
            }
        };
        data.map(|d| out.write_all(d.as_bytes()))
    }

    /// Restores what [`Trainer::save_state`] wrote (under any strategy: the file does not
    /// depend on it), reading one tensor at a time; returns its `note`.
    pub fn restore_state(&mut self, path: &Path) -> Result<String, TrainError> {
        let mut reader = state::Reader::open(path)?;
        let number = |key: &str| -> Result<u64, TrainError> {
            reader
                .metadata
                .get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    TrainError::State(format!("{}: metadata {key} missing", path.display()))
                })
        };
        let (step, adam_step) = (number("step")?, number("adam_step")?);
        let note = reader.metadata.get("note").cloned().unwrap_or_default();
        let model = load_trainable(self.model.clone(), &mut reader)?;
        let names: Vec<String> = reader
            .entries()
            .filter_map(|e| e.name.strip_prefix("m.").map(str::to_string))
            .collect();
        let flat = |values: Vec<f32>, device: &B::Device| {
            let n = values.len();
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(values, [n]), device)
        };
        let mut read = |kind: &str, name: &str| -> Result<Option<Vec<f32>>, TrainError> {
            reader.f32s(&format!("{kind}.{name}"))
        };
        match &mut self.optim {
            Optim::Device(state) => {
                *state = AdamState {
                    step: adam_step,
                    ..AdamState::default()
                };
                for name in &names {
                    for kind in ["m", "v", "master"] {
                        if let Some(values) = read(kind, name)? {
                            state
                                .by_kind_mut(kind)
                                .insert(name.clone(), flat(values, &self.device));
                        }
                    }
                }
            }
            Optim::Host(state) => {
                *state = HostAdam {
                    step: adam_step,
                    ..HostAdam::default()
                };
                for name in &names {
                    for kind in ["m", "v", "master"] {
                        if let Some(values) = read(kind, name)? {
                            state.by_kind_mut(kind).insert(name.clone(), values);
                        }
                    }
                }
            }
            Optim::Sharded(sharded) => {
                sharded.reset(adam_step);
                for name in &names {
                    let rank = sharded.owner_of(name).ok_or_else(|| {
                        TrainError::State(format!(
                            "{}: state for {name}, which is not a trainable parameter",
                            path.display()
                        ))
                    })?;
                    let device = sharded.devices[rank].clone();
                    for kind in ["m", "v", "master"] {
                        if let Some(values) = read(kind, name)? {
                            let t = flat(values, &device);
                            sharded.states[rank]
                                .by_kind_mut(kind)
                                .insert(name.clone(), t);
                        }
                    }
                }
                sharded.broadcast_from(&model);
            }
        }
        self.model = model;
        self.step = step;
        Ok(note)
    }
}

/// The version of the state file's layout, in its metadata.
const STATE_FORMAT: &str = "cft-train-state-2";

/// `model` with every trainable parameter a new autodiff leaf of its own (a new id, the same
/// values and storage), so a forward pass on it builds a graph that no other copy shares: burn
/// merges the graphs of passes that share a leaf and runs their backward passes under one lock.
fn own_leaves<B: AutodiffBackend>(model: CausalLm<B>) -> CausalLm<B> {
    use burn::module::{Param, ParamId};
    struct Fresh;
    impl<B: AutodiffBackend> super::params::NamedMapper<B> for Fresh {
        fn map_param<const D: usize>(
            &mut self,
            _name: &str,
            param: Param<Tensor<B, D>>,
        ) -> Param<Tensor<B, D>> {
            let value = param.val();
            match value.is_require_grad() {
                true => Param::initialized(ParamId::new(), value.detach().require_grad()),
                false => param,
            }
        }
    }
    super::params::map_named(model, &mut Fresh)
}

/// One micro-batch's forward and backward on `model`; returns its loss, token count and
/// gradients (burn's, by parameter id).
pub(crate) fn micro_backward<B: AutodiffBackend>(
    model: &CausalLm<B>,
    s: &TrainSettings,
    examples: &[&Example],
    denominator: f32,
    device: &B::Device,
) -> (f64, usize, B::Gradients) {
    let start = Instant::now();
    let mb = Batch::<B>::new(examples, s.pad_id, device);
    let tokens = mb.tokens;
    let logits = model.forward(mb.inputs, mb.valid); // [b, t, vocab]
    let log_probs = target_log_probs(logits, mb.targets); // [b, t]
    let l = s.objective.loss(log_probs, mb.weights, denominator);
    let loss = l.clone().into_scalar().elem::<f32>() as f64;
    let forward = start.elapsed();
    let grads = l.backward();
    PASS_NANOS[0].fetch_add(forward.as_nanos() as u64, Ordering::Relaxed);
    PASS_NANOS[1].fetch_add(
        (start.elapsed() - forward).as_nanos() as u64,
        Ordering::Relaxed,
    );
    (loss, tokens, grads)
}

/// Nanoseconds spent in micro-batch forward passes (with the loss) and in backward passes.
static PASS_NANOS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Seconds this process has spent in micro-batches' forward passes (the loss included) and
/// in their backward passes, summed over threads (on the CPU, where operations finish before
/// they return; on a GPU they time the launches). `cft bench train` splits a step with them.
pub fn pass_seconds() -> (f64, f64) {
    let s = |i: usize| PASS_NANOS[i].load(Ordering::Relaxed) as f64 * 1e-9;
    (s(0), s(1))
}
