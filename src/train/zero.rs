//! `strategy = "zero1"`: data parallelism with the optimiser state sharded across the ranks
//! (ZeRO stage 1, with the gradient sums sharded too, as stage 2 does).
//!
//! Every rank holds a replica of the model on its device. Each trainable parameter is owned by
//! one rank (contiguous runs of parameters in name order, balanced by element count): the
//! owner keeps its gradient sum, its f32 master copy and both Adam moments. A step:
//!
//! 1. The step's micro-batches go to the ranks in waves: micro-batch `w·R + r` to rank `r`.
//!    Ranks on distinct devices run a wave in parallel threads; simulated ranks sharing one
//!    device (the CPU test) run in turn.
//! 2. Each micro-batch's gradients are added into the owners' sums **in micro-batch order**,
//!    exactly the additions one device makes, so the sums are the same bits.
//! 3. The global norm adds each owner's square sums on rank 0, in name order.
//! 4. Each owner runs Adam on its parameters; the updated weights are copied to every other
//!    replica (the all-gather of ZeRO).
//!
//! Per rank that is weights + a micro-batch's gradients (in their dtype) of the whole model,
//! but f32 gradient sums, master weights and moments of 1/R of it: 7.6B parameters in bf16 on
//! 8 GPUs hold 2 + 2 + (4 + 4 + 4 + 4)/8 = 6 bytes per parameter each (46 GB) instead of 20. Copies between ranks go through burn's
//! `to_device`, not NCCL, so on GPUs the reduction costs a device-to-device copy per
//! micro-batch and parameter.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;

use super::TrainError;
use super::optim::{AdamConfig, AdamState, adam_step};
use super::params::{
    NamedFlat, NamedMapper, NamedVisitor, collect_grads, map_named, trainable, visit_named,
};
use super::trainer::{TrainSettings, micro_backward};
use crate::model::CausalLm;

pub(crate) struct Sharded<B: AutodiffBackend> {
    /// Every rank's device; rank 0's is the trainer's.
    pub devices: Vec<B::Device>,
    /// Ranks 1..R's replicas (rank 0's is the trainer's model).
    replicas: Vec<CausalLm<B>>,
    /// The rank that owns each trainable parameter.
    owner: BTreeMap<String, usize>,
    /// Each rank's Adam state, for the parameters it owns.
    pub states: Vec<AdamState<B::InnerBackend>>,
}

impl<B: AutodiffBackend> Sharded<B> {
    pub fn new(model: &CausalLm<B>, devices: Vec<B::Device>) -> Result<Self, TrainError> {
        if devices.is_empty() {
            return Err(TrainError::Setting {
                name: "strategy".into(),
                message: "zero1 needs at least one device".into(),
            });
        }
        let params = trainable(model);
        let total: usize = params
            .iter()
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum();
        let ranks = devices.len();
        let mut names: Vec<(String, usize)> = params
            .into_iter()
            .map(|(name, shape, _)| (name, shape.iter().product()))
            .collect();
        names.sort();
        // Contiguous runs in name order: rank r takes parameters while the elements before
        // them are below (r + 1) / R of the total.
        let mut owner = BTreeMap::new();
        let mut before = 0usize;
        for (name, n) in names {
            let rank = (before * ranks / total.max(1)).min(ranks - 1);
            owner.insert(name, rank);
            before += n;
        }
        let replicas = devices[1..].iter().map(|d| model.clone().fork(d)).collect();
        Ok(Self {
            states: (0..ranks).map(|_| AdamState::default()).collect(),
            devices,
            replicas,
            owner,
        })
    }

    pub fn owner_of(&self, name: &str) -> Option<usize> {
        self.owner.get(name).copied()
    }

    /// The Adam state that holds parameter `name`'s moments.
    pub fn state_of(&self, name: &str) -> Option<&AdamState<B::InnerBackend>> {
        self.owner_of(name).and_then(|r| self.states.get(r))
    }

    /// Empties every rank's state, at Adam step `step` (before a restore).
    pub fn reset(&mut self, step: u64) {
        for state in &mut self.states {
            *state = AdamState {
                step,
                ..AdamState::default()
            };
        }
    }

    fn ranks_share_a_device(&self) -> bool {
        self.devices
            .iter()
            .enumerate()
            .any(|(i, d)| self.devices[..i].contains(d))
    }

    /// The step's gradient sums (each on its owner's device), loss and tokens.
    pub fn gradients(
        &self,
        model: &CausalLm<B>,
        s: &TrainSettings,
        micro: &[(&[&super::data::Example], f32)],
        step_seed: u64,
    ) -> (NamedFlat<B::InnerBackend>, f64, usize) {
        let ranks = self.devices.len();
        let mut sums: NamedFlat<B::InnerBackend> = BTreeMap::new();
        let (mut loss, mut tokens) = (0.0f64, 0usize);
        for (wave, batch) in micro.chunks(ranks).enumerate() {
            // Rank r's micro-batch: its loss, tokens and gradients on its device.
            let run = |r: usize, (examples, denominator): &(&[&super::data::Example], f32)| {
                let replica = match r {
                    0 => model,
                    _ => &self.replicas[r - 1],
                };
                // Dropout draws from the rank's generator, seeded by micro-batch.
                let index = (wave * ranks + r) as u64;
                B::seed(
                    &self.devices[r],
                    step_seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03),
                );
                let (l, t, g) =
                    micro_backward(replica, s, examples, *denominator, &self.devices[r]);
                // In the parameters' dtype until they reach their owners.
                (l, t, collect_grads(replica, &g))
            };
            let results: Vec<(f64, usize, NamedFlat<B::InnerBackend>)> =
                match self.ranks_share_a_device() {
                    true => batch.iter().enumerate().map(|(r, m)| run(r, m)).collect(),
                    false => parallel(batch, &run),
                };
            // In micro-batch order, as one device adds them.
            for (l, t, grads) in results {
                loss += l;
                tokens += t;
                for (name, g) in grads {
                    let owner = self.owner.get(&name).copied().unwrap_or(0);
                    // Summed in f32 whatever the dtype, as one device sums them.
                    let g = g.to_device(&self.devices[owner]).cast(DType::F32);
                    let sum = match sums.remove(&name) {
                        Some(prev) => prev + g,
                        None => g,
                    };
                    sums.insert(name, sum);
                }
            }
        }
        (sums, loss, tokens)
    }

    /// Each owner's Adam step on its parameters, then every replica takes the new weights.
    /// Returns rank 0's model.
    pub fn update(
        &mut self,
        model: CausalLm<B>,
        mut grads: NamedFlat<B::InnerBackend>,
        config: AdamConfig,
        lr: f64,
        grad_scale: f64,
    ) -> CausalLm<B> {
        let mut first = model;
        let mut rest = std::mem::take(&mut self.replicas);
        for rank in 0..self.devices.len() {
            let names: Vec<String> = grads
                .keys()
                .filter(|n| self.owner.get(*n).copied().unwrap_or(0) == rank)
                .cloned()
                .collect();
            let mut own: NamedFlat<B::InnerBackend> = BTreeMap::new();
            for name in names {
                if let Some(g) = grads.remove(&name) {
                    own.insert(name, g);
                }
            }
            let state = &mut self.states[rank];
            let mut step = |m| adam_step(m, &mut own, state, config, lr, grad_scale);
            match rank {
                0 => first = step(first),
                _ => rest[rank - 1] = step(rest[rank - 1].clone()),
            }
        }
        // The all-gather: every rank's parameters from their owners.
        let mut updated = owned_values(&first, &self.owner, 0);
        for (i, m) in rest.iter().enumerate() {
            updated.extend(owned_values(m, &self.owner, i + 1));
        }
        self.replicas = rest
            .into_iter()
            .enumerate()
            .map(|(i, m)| take_values(m, &updated, &self.owner, i + 1, &self.devices[i + 1]))
            .collect();
        take_values(first, &updated, &self.owner, 0, &self.devices[0])
    }

    /// After a restore into rank 0's model: every replica takes its trainable weights.
    pub fn broadcast_from(&mut self, model: &CausalLm<B>) {
        let all: BTreeMap<String, usize> = self.owner.keys().map(|n| (n.clone(), 0)).collect();
        let values = owned_values(model, &all, 0);
        self.replicas = std::mem::take(&mut self.replicas)
            .into_iter()
            .enumerate()
            .map(|(i, m)| take_values(m, &values, &all, usize::MAX, &self.devices[i + 1]))
            .collect();
    }
}

/// Runs one wave's micro-batches in parallel threads, micro-batch `r` as `run(r, ..)` (on
/// rank `r`'s device, or lane `r`'s model copy), the results in the wave's order.
pub(crate) fn parallel<T: Send>(
    batch: &[(&[&super::data::Example], f32)],
    run: &(impl Fn(usize, &(&[&super::data::Example], f32)) -> T + Sync),
) -> Vec<T> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(r, m)| scope.spawn(move || run(r, m)))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// The flattened values of the parameters rank `rank` owns.
fn owned_values<B: AutodiffBackend>(
    model: &CausalLm<B>,
    owner: &BTreeMap<String, usize>,
    rank: usize,
) -> BTreeMap<String, Tensor<B::InnerBackend, 1>> {
    struct Collect<'a, B: AutodiffBackend> {
        owner: &'a BTreeMap<String, usize>,
        rank: usize,
        out: BTreeMap<String, Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> NamedVisitor<B> for Collect<'_, B> {
        fn visit_param<const D: usize>(&mut self, name: &str, param: &Param<Tensor<B, D>>) {
            if self.owner.get(name) == Some(&self.rank) {
                let value = param.val().inner();
                let n = value.shape().num_elements();
                self.out.insert(name.to_string(), value.reshape([n]));
            }
        }
    }
    let mut c = Collect::<B> {
        owner,
        rank,
        out: BTreeMap::new(),
    };
    visit_named(model, &mut c);
    c.out
}

/// `model` (rank `rank`'s replica, on `device`) with every parameter another rank owns
/// replaced by that owner's value.
fn take_values<B: AutodiffBackend>(
    model: CausalLm<B>,
    values: &BTreeMap<String, Tensor<B::InnerBackend, 1>>,
    owner: &BTreeMap<String, usize>,
    rank: usize,
    device: &B::Device,
) -> CausalLm<B> {
    struct Take<'a, B: AutodiffBackend> {
        values: &'a BTreeMap<String, Tensor<B::InnerBackend, 1>>,
        owner: &'a BTreeMap<String, usize>,
        rank: usize,
        device: &'a B::Device,
    }
    impl<B: AutodiffBackend> NamedMapper<B> for Take<'_, B> {
        fn map_param<const D: usize>(
            &mut self,
            name: &str,
            param: Param<Tensor<B, D>>,
        ) -> Param<Tensor<B, D>> {
            let (Some(value), Some(&owner)) = (self.values.get(name), self.owner.get(name)) else {
                return param;
            };
            if owner == self.rank {
                return param;
            }
            let (id, tensor, mapper) = param.consume();
            let dims: [usize; D] = tensor.dims();
            let value = value.clone().to_device(self.device).reshape(dims);
            Param::from_mapped_value(id, Tensor::from_inner(value).require_grad(), mapper)
        }
    }
    map_named(
        model,
        &mut Take::<B> {
            values,
            owner,
            rank,
            device,
        },
    )
}
