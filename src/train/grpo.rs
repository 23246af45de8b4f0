//! GRPO's objective as verl computes it (paper §4.4 and App. B.2 run "the GRPO algorithm from
//! the verl library"). Each formula names the verl function it follows
//! (`verl/trainer/ppo/core_algos.py`, `verl/workers/actor/dp_actor.py`):
//!
//! - advantages ([`group_advantages`], `compute_grpo_outcome_advantage`): a response's reward
//!   minus its prompt group's mean, divided by the group's unbiased standard deviation plus
//!   ε = 1e-6; a group of one counts as mean 0 and deviation 1;
//! - the policy loss ([`policy_loss`], `compute_policy_loss_vanilla`): ratio
//!   `r = exp(clamp(log π − log π_old, −20, 20))`, the clipped surrogate
//!   `max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high))`, and for negative advantages the dual clip
//!   `min(·, −A·c)` with c = 3; aggregated by token mean over the response mask (`agg_loss`,
//!   `loss_agg_mode = "token-mean"`: `Σ x·m / (Σ m + 1e-8)`, `verl_F.masked_mean`);
//! - the KL loss to the starting policy (`kl_penalty(.., "low_var_kl")`, Schulman's k3):
//!   `k = clamp(log π_ref − log π, −20, 20)`, `clamp(e^k − k − 1, −10, 10)`, token mean;
//! - the actor's loss (`update_policy`): `pg_loss − entropy_coeff · entropy + kl_coef · kl`,
//!   each micro-batch scaled by `1 / gradient accumulation` before the backward pass.
//!
//! Log-probabilities and entropies are those of `softmax(logits / temperature)`, as the actor
//! divides its logits by the rollout temperature (`_forward_micro_batch`).

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

/// GRPO's settings, verl's defaults and the paper's App. B.2 values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrpoSettings {
    /// `clip_ratio_low` / `clip_ratio_high` (verl: both `clip_ratio` = 0.2).
    pub clip_low: f32,
    pub clip_high: f32,
    /// `clip_ratio_c`, the dual clip's bound for negative advantages (3.0).
    pub clip_c: f32,
    /// `kl_loss_coef` (the paper: 0.001), with `kl_loss_type = "low_var_kl"`.
    pub kl_coef: f32,
    /// `entropy_coeff` (verl's default 0: entropy is recorded, not optimised).
    pub entropy_coeff: f32,
    /// The rollout temperature the logits are divided by (1.0).
    pub temperature: f32,
    /// `norm_adv_by_std_in_grpo` (true; false is Dr. GRPO).
    pub norm_by_std: bool,
}

impl Default for GrpoSettings {
    fn default() -> Self {
        Self {
            clip_low: 0.2,
            clip_high: 0.2,
            clip_c: 3.0,
            kl_coef: 0.001,
            entropy_coeff: 0.0,
            temperature: 1.0,
            norm_by_std: true,
        }
    }
}

/// `compute_grpo_outcome_advantage`'s ε.
const ADVANTAGE_EPS: f32 = 1e-6;

/// One advantage per response: `(r − mean_g) / (std_g + 1e-6)` over the responses of its
/// prompt group `g` (`groups[i]`), with torch's unbiased standard deviation; `r − mean_g`
/// without `norm_by_std`. A group of one response counts as mean 0 and deviation 1.
pub fn group_advantages(rewards: &[f32], groups: &[u64], norm_by_std: bool) -> Vec<f32> {
    use std::collections::BTreeMap;
    let mut members: BTreeMap<u64, Vec<f32>> = BTreeMap::new();
    for (&r, &g) in rewards.iter().zip(groups) {
        members.entry(g).or_default().push(r);
    }
    let stats: BTreeMap<u64, (f32, f32)> = members
        .into_iter()
        .map(|(g, rs)| {
            let n = rs.len() as f32;
            if rs.len() == 1 {
                return (g, (0.0, 1.0));
            }
            let mean = rs.iter().sum::<f32>() / n;
            let var = rs.iter().map(|r| (r - mean) * (r - mean)).sum::<f32>() / (n - 1.0);
            (g, (mean, var.sqrt()))
        })
        .collect();
    rewards
        .iter()
        .zip(groups)
        .map(|(&r, g)| {
            let (mean, std) = stats.get(g).copied().unwrap_or((0.0, 1.0));
            match norm_by_std {
                true => (r - mean) / (std + ADVANTAGE_EPS),
                false => r - mean,
            }
        })
        .collect()
}

/// Per response position: `log π(y_t)` and the entropy of `π(·)`, under `softmax(logits / T)`.
///
/// # Shapes
/// - `logits`: `[b, t, vocab]`; `targets`: `[b, t]` → two `[b, t]`
pub fn log_probs_and_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    temperature: f32,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [b, t, v] = logits.dims();
    // As rows `[b·t, vocab]` (flex broadcasts 2-D operands row by row).
    let scaled = logits.reshape([b * t, v]) / temperature as f64;
    let logp = log_softmax(scaled.clone(), 1); // [b·t, v]
    let chosen = logp.clone().gather(1, targets.reshape([b * t, 1])); // [b·t, 1]
    // H = −Σ p log p
    let entropy = (softmax(scaled, 1) * logp).sum_dim(1).neg(); // [b·t, 1]
    (chosen.reshape([b, t]), entropy.reshape([b, t]))
}

/// What one micro-batch's loss is made of, for the step's records (token means over the
/// response mask, as verl logs them).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GrpoMetrics {
    pub pg_loss: f32,
    /// Share of response tokens where the clipped term won (`pg_clipfrac`).
    pub clip_fraction: f32,
    /// Share where the dual clip bound a negative advantage (`pg_clipfrac_lower`).
    pub clip_fraction_lower: f32,
    /// `ppo_kl`: the token mean of `log π_old − log π`.
    pub ppo_kl: f32,
    /// The k3 estimate of KL(π ‖ π_ref), token mean.
    pub kl: f32,
    pub entropy: f32,
    pub loss: f32,
}

impl GrpoMetrics {
    /// Adds `w` times each of `m`'s values (a weighted mean's running sum).
    fn add_scaled(&mut self, m: &GrpoMetrics, w: f32) {
        self.pg_loss += m.pg_loss * w;
        self.clip_fraction += m.clip_fraction * w;
        self.clip_fraction_lower += m.clip_fraction_lower * w;
        self.ppo_kl += m.ppo_kl * w;
        self.kl += m.kl * w;
        self.entropy += m.entropy * w;
        self.loss += m.loss * w;
    }
}

/// One micro-batch, every tensor `[b, t]` over the positions of [`super::data::Batch`]
/// (position `p` predicts token `p + 1`).
pub struct GrpoInputs<B: Backend> {
    /// `log π(y_t)` of the policy being trained (with its graph).
    pub log_probs: Tensor<B, 2>,
    /// Its entropy at each position (with its graph when `entropy_coeff` ≠ 0).
    pub entropy: Tensor<B, 2>,
    /// `log π_old(y_t)`, computed once per batch before the update.
    pub old_log_probs: Tensor<B, 2>,
    /// `log π_ref(y_t)` of the starting policy.
    pub ref_log_probs: Tensor<B, 2>,
    /// The response's advantage at each of its positions.
    pub advantages: Tensor<B, 2>,
    /// 1 on response positions, 0 on prompt and padding.
    pub mask: Tensor<B, 2>,
}

/// `verl_F.masked_mean`: `Σ x·m / (Σ m + 1e-8)`.
fn masked_mean<B: Backend>(x: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    (x * mask.clone()).sum() / (mask.sum() + 1e-8)
}

/// The values of scalar tensors, read back in one host synchronisation.
fn values<B: Backend, const N: usize>(xs: &[&Tensor<B, 1>; N]) -> [f32; N] {
    let all = Tensor::cat(xs.iter().map(|x| (*x).clone().detach()).collect(), 0);
    let read: Vec<f32> = all.into_data().iter::<f32>().collect();
    std::array::from_fn(|i| read.get(i).copied().unwrap_or(f32::NAN))
}

/// The clipped policy-gradient loss with dual clip (`compute_policy_loss_vanilla`), token mean;
/// with its clip fractions and `ppo_kl`.
pub fn policy_loss<B: Backend>(
    inputs: &GrpoInputs<B>,
    settings: &GrpoSettings,
) -> (Tensor<B, 1>, [f32; 3]) {
    let (loss, [a, b, c]) = policy_terms(inputs, settings);
    (loss, values(&[&a, &b, &c]))
}

/// [`policy_loss`] with its clip fractions and `ppo_kl` still on the device.
fn policy_terms<B: Backend>(
    inputs: &GrpoInputs<B>,
    settings: &GrpoSettings,
) -> (Tensor<B, 1>, [Tensor<B, 1>; 3]) {
    let mask = inputs.mask.clone();
    let a = inputs.advantages.clone();
    let negative_kl = (inputs.log_probs.clone() - inputs.old_log_probs.clone()).clamp(-20.0, 20.0);
    let ratio = negative_kl.clone().exp();
    let pg1 = a.clone().neg() * ratio.clone();
    let clipped = ratio.clamp(
        1.0 - settings.clip_low as f64,
        1.0 + settings.clip_high as f64,
    );
    let pg2 = a.clone().neg() * clipped;
    let clip_fraction = masked_mean(pg2.clone().greater(pg1.clone()).float(), mask.clone());
    let clip1 = pg1.max_pair(pg2);
    let pg3 = a.clone().neg() * settings.clip_c as f64;
    let clip2 = clip1.clone().min_pair(pg3.clone());
    let negative = a.lower_elem(0.0);
    let lower = clip1.clone().greater(pg3).float() * negative.clone().float();
    let clip_fraction_lower = masked_mean(lower, mask.clone());
    let pg = clip1.mask_where(negative, clip2);
    let ppo_kl = masked_mean(negative_kl.neg(), mask.clone());
    let loss = masked_mean(pg, mask);
    (loss, [clip_fraction, clip_fraction_lower, ppo_kl])
}

/// k3, the low-variance KL estimator (`kl_penalty(.., "low_var_kl")`), per position.
pub fn low_var_kl<B: Backend>(
    log_probs: Tensor<B, 2>,
    ref_log_probs: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let k = (ref_log_probs - log_probs).clamp(-20.0, 20.0);
    (k.clone().exp() - k - 1.0).clamp(-10.0, 10.0)
}

/// The actor's loss of one micro-batch, `(pg_loss − entropy_coeff · H + kl_coef · KL) · scale`
/// (`scale`: 1 / gradient accumulation steps), and its metrics (unscaled).
pub fn grpo_loss<B: Backend>(
    inputs: GrpoInputs<B>,
    settings: &GrpoSettings,
    scale: f32,
) -> (Tensor<B, 1>, GrpoMetrics) {
    let (pg_loss, [clip_fraction, clip_fraction_lower, ppo_kl]) = policy_terms(&inputs, settings);
    let kl = masked_mean(
        low_var_kl(inputs.log_probs.clone(), inputs.ref_log_probs.clone()),
        inputs.mask.clone(),
    );
    let entropy = masked_mean(inputs.entropy.clone(), inputs.mask.clone());
    let mut loss = pg_loss.clone() + kl.clone() * settings.kl_coef as f64;
    if settings.entropy_coeff != 0.0 {
        loss = loss - entropy.clone() * settings.entropy_coeff as f64;
    }
    let [pg, clip, lower, ppo, k, h, total] = values(&[
        &pg_loss,
        &clip_fraction,
        &clip_fraction_lower,
        &ppo_kl,
        &kl,
        &entropy,
        &loss,
    ]);
    let metrics = GrpoMetrics {
        pg_loss: pg,
        clip_fraction: clip,
        clip_fraction_lower: lower,
        ppo_kl: ppo,
        kl: k,
        entropy: h,
        loss: total,
    };
    (loss * scale as f64, metrics)
}

/// One sampled response of a GRPO batch, with its advantage.
#[derive(Clone, Debug, PartialEq)]
pub struct GrpoSample {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
    pub advantage: f32,
}

/// How a GRPO update runs (the optimiser's side; the objective's is [`GrpoSettings`]).
#[derive(Clone, Copy, Debug)]
pub struct GrpoUpdate {
    /// Responses per forward and backward (`ppo_micro_batch_size_per_gpu`; the paper: 16).
    pub micro_batch: usize,
    /// Responses per optimiser step (`ppo_mini_batch_size` × n); 0: the whole batch.
    pub mini_batch: usize,
    pub lr: f64,
    /// `grad_clip` (verl: 1.0); 0 disables.
    pub max_grad_norm: f64,
    pub adam: super::optim::AdamConfig,
    /// Longest prompt + response a sample is cut to.
    pub max_length: usize,
    pub pad_id: u32,
}

/// A GRPO step's records: the objective's metrics averaged over its micro-batches, the
/// gradient norm before clipping (averaged over its optimiser steps), the response tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GrpoStepMetrics {
    pub objective: GrpoMetrics,
    pub grad_norm: f64,
    pub response_tokens: usize,
    pub optimiser_steps: usize,
}

/// The training sequences of `samples`, cut to `max_length`.
fn examples(
    samples: &[GrpoSample],
    max_length: usize,
) -> Result<Vec<super::data::Example>, super::TrainError> {
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            super::data::Example::new(i as u64, &s.prompt, &s.response, None, None, max_length)
        })
        .collect()
}

/// `log π(y_t)` of `lm` at every position of each sample's sequence (`[prompt, response]`
/// cut as the update cuts it; position `p` predicts token `p + 1`), without a graph, in
/// micro-batches of `update.micro_batch` (verl's `compute_log_prob`: the old policy's before
/// an update, the reference policy's).
pub fn sample_log_probs<B: Backend>(
    lm: &crate::model::CausalLm<B>,
    samples: &[GrpoSample],
    update: &GrpoUpdate,
    temperature: f32,
) -> Result<Vec<Vec<f32>>, super::TrainError> {
    use super::data::Batch;
    let device = lm.model.embed_tokens.weight.device();
    let examples = examples(samples, update.max_length)?;
    let mut out = Vec::with_capacity(samples.len());
    for chunk in examples.chunks(update.micro_batch.max(1)) {
        let refs: Vec<&super::data::Example> = chunk.iter().collect();
        let batch = Batch::<B>::new(&refs, update.pad_id, &device);
        let [_, t] = batch.targets.dims();
        let logits = lm.forward(batch.inputs, batch.valid);
        let (lp, _) = log_probs_and_entropy(logits, batch.targets, temperature);
        let values: Vec<f32> = lp.into_data().iter::<f32>().collect();
        for (row, e) in chunk.iter().enumerate() {
            let n = e.ids.len().saturating_sub(1);
            out.push(values[row * t..row * t + n].to_vec());
        }
    }
    Ok(out)
}

/// Per-position values of a micro-batch's rows (`values[i]` of row `i`), padded to `[b, t]`.
fn rows_tensor<B: Backend>(values: &[&Vec<f32>], t: usize, device: &B::Device) -> Tensor<B, 2> {
    let b = values.len();
    let mut flat = vec![0.0f32; b * t];
    for (row, v) in values.iter().enumerate() {
        let n = v.len().min(t);
        flat[row * t..row * t + n].copy_from_slice(&v[..n]);
    }
    Tensor::from_data(TensorData::new(flat, [b, t]), device)
}

/// One RL step on a batch of samples, as verl's actor takes it with one PPO epoch: the old
/// policy's log-probs (`compute_log_prob`, before any update) and the reference policy's,
/// once for the batch; then per mini-batch of `update.mini_batch` responses, per micro-batch
/// the loss of [`grpo_loss`] scaled by 1 / micro-batches of the mini-batch, its gradients
/// summed, the global norm clipped (`clip_grad_norm_`) and one AdamW step. Returns the
/// updated policy and the step's records.
pub fn grpo_step<B: burn::tensor::backend::AutodiffBackend>(
    policy: crate::model::CausalLm<B>,
    reference: &crate::model::CausalLm<B::InnerBackend>,
    samples: &[GrpoSample],
    settings: &GrpoSettings,
    update: &GrpoUpdate,
    state: &mut super::optim::AdamState<B::InnerBackend>,
) -> Result<(crate::model::CausalLm<B>, GrpoStepMetrics), super::TrainError> {
    if samples.is_empty() {
        return Err(super::TrainError::Empty);
    }
    let old = sample_log_probs(&policy.valid(), samples, update, settings.temperature)?;
    let reference = sample_log_probs(reference, samples, update, settings.temperature)?;
    let mini = match update.mini_batch {
        0 => samples.len(),
        m => m,
    };
    let mut policy = policy;
    let mut total = GrpoStepMetrics::default();
    let mut micro_batches = 0usize;
    for (i, chunk) in samples.chunks(mini).enumerate() {
        let at = i * mini;
        let (next, m, micros) = mini_batch_step(
            policy,
            chunk,
            &old[at..at + chunk.len()],
            &reference[at..at + chunk.len()],
            settings,
            update,
            state,
        )?;
        policy = next;
        total.objective.add_scaled(&m.objective, micros as f32);
        total.grad_norm += m.grad_norm;
        total.response_tokens += m.response_tokens;
        total.optimiser_steps += 1;
        micro_batches += micros;
    }
    let w = micro_batches.max(1) as f32;
    let o = &mut total.objective;
    for v in [
        &mut o.pg_loss,
        &mut o.clip_fraction,
        &mut o.clip_fraction_lower,
        &mut o.ppo_kl,
        &mut o.kl,
        &mut o.entropy,
        &mut o.loss,
    ] {
        *v /= w;
    }
    total.grad_norm /= total.optimiser_steps.max(1) as f64;
    Ok((policy, total))
}

/// One optimiser step on one mini-batch, with the old and reference log-probs of its
/// samples; returns the policy, the records (means over its micro-batches) and how many
/// micro-batches it took.
fn mini_batch_step<B: burn::tensor::backend::AutodiffBackend>(
    policy: crate::model::CausalLm<B>,
    samples: &[GrpoSample],
    old: &[Vec<f32>],
    reference: &[Vec<f32>],
    settings: &GrpoSettings,
    update: &GrpoUpdate,
    state: &mut super::optim::AdamState<B::InnerBackend>,
) -> Result<(crate::model::CausalLm<B>, GrpoStepMetrics, usize), super::TrainError> {
    use super::data::{Batch, Example};
    let device = policy.model.embed_tokens.weight.device();
    let examples = examples(samples, update.max_length)?;
    let micro = update.micro_batch.max(1);
    let chunks: Vec<&[Example]> = examples.chunks(micro).collect();
    let scale = 1.0 / chunks.len() as f32;
    let mut grads = std::collections::BTreeMap::new();
    let mut sums = GrpoMetrics::default();
    let mut response_tokens = 0;
    for (c, chunk) in chunks.iter().enumerate() {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = Batch::<B>::new(&refs, update.pad_id, &device);
        let [b, t] = batch.targets.dims();
        let offset = c * micro;
        let old_rows: Vec<&Vec<f32>> = old[offset..offset + b].iter().collect();
        let reference_rows: Vec<&Vec<f32>> = reference[offset..offset + b].iter().collect();
        let old_lp = rows_tensor::<B>(&old_rows, t, &device);
        let reference_lp = rows_tensor::<B>(&reference_rows, t, &device);
        let advantages: Vec<f32> = (0..b)
            .flat_map(|row| std::iter::repeat_n(samples[offset + row].advantage, t))
            .collect();
        let mask = batch.weights.clone();
        response_tokens += chunk
            .iter()
            .map(|e| e.weights.iter().filter(|w| **w > 0.0).count())
            .sum::<usize>();
        let advantages =
            Tensor::<B, 2>::from_data(TensorData::new(advantages, [b, t]), &device) * mask.clone();
        let logits = policy.forward(batch.inputs, batch.valid);
        let (log_probs, entropy) =
            log_probs_and_entropy(logits, batch.targets, settings.temperature);
        let inputs = GrpoInputs {
            log_probs,
            entropy,
            old_log_probs: old_lp,
            ref_log_probs: reference_lp,
            advantages,
            mask,
        };
        let (loss, m) = grpo_loss(inputs, settings, scale);
        super::params::accumulate_grads(&policy, &loss.backward(), &mut grads);
        sums.add_scaled(&m, scale);
    }
    let grad_norm = super::params::global_norm(&grads);
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above.
    let clip = match update.max_grad_norm > 0.0 {
        true => (update.max_grad_norm / (grad_norm + 1e-6)).min(1.0),
        false => 1.0,
    };
    let policy = super::optim::adam_step(policy, &mut grads, state, update.adam, update.lr, clip);
    Ok((
        policy,
        GrpoStepMetrics {
            objective: sums,
            grad_norm,
            response_tokens,
            optimiser_steps: 1,
        },
        chunks.len(),
    ))
}

/// Writes a GRPO run's resumable state to the safetensors file `path` ([`super::state`]):
/// the policy's trainable weights in their dtype and, in f32, Adam's moments and master
/// copies; `note` (the run's records) and the step in the metadata. Returns the file's size.
pub fn save_state<B: burn::tensor::backend::AutodiffBackend>(
    path: &std::path::Path,
    policy: &crate::model::CausalLm<B>,
    state: &super::optim::AdamState<B::InnerBackend>,
    step: u64,
    note: &str,
) -> Result<u64, super::TrainError> {
    use super::state::Entry;
    let mut entries: Vec<Entry> = super::params::trainable(policy)
        .into_iter()
        .map(|(name, shape, dtype)| Entry::new(format!("param.{name}"), dtype, shape))
        .collect();
    for kind in ["m", "v", "master"] {
        for (name, t) in state.by_kind(kind) {
            entries.push(Entry::new(
                format!("{kind}.{name}"),
                burn::tensor::DType::F32,
                vec![t.dims()[0]],
            ));
        }
    }
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("format".to_string(), STATE_FORMAT.to_string());
    meta.insert("step".to_string(), step.to_string());
    meta.insert("adam_step".to_string(), state.step.to_string());
    meta.insert("note".to_string(), note.to_string());
    super::state::write(path, &entries, &meta, |entry, out| {
        let missing = || super::TrainError::State(format!("{} vanished while saving", entry.name));
        let failed = |e: std::io::Error| super::TrainError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let (kind, name) = entry.name.split_once('.').ok_or_else(missing)?;
        let data = match kind {
            "param" => super::params::param_data(policy, name).ok_or_else(missing)?,
            _ => state
                .by_kind(kind)
                .get(name)
                .ok_or_else(missing)?
                .clone()
                .into_data()
                .convert::<f32>(),
        };
        out.write_all(data.as_bytes()).map_err(failed)
    })
}

/// What [`save_state`] wrote: the policy (its trainable weights replaced), Adam's state, the
/// step and the note.
#[allow(clippy::type_complexity)]
pub fn restore_state<B: burn::tensor::backend::AutodiffBackend>(
    path: &std::path::Path,
    policy: crate::model::CausalLm<B>,
) -> Result<
    (
        crate::model::CausalLm<B>,
        super::optim::AdamState<B::InnerBackend>,
        u64,
        String,
    ),
    super::TrainError,
> {
    let mut reader = super::state::Reader::open(path)?;
    let number = |key: &str| -> Result<u64, super::TrainError> {
        reader
            .metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                super::TrainError::State(format!("{}: metadata {key} missing", path.display()))
            })
    };
    let (step, adam_step) = (number("step")?, number("adam_step")?);
    let note = reader.metadata.get("note").cloned().unwrap_or_default();
    let device = policy.model.embed_tokens.weight.device();
    let policy = super::params::load_trainable(policy, &mut reader)?;
    let mut state = super::optim::AdamState {
        step: adam_step,
        ..Default::default()
    };
    let names: Vec<String> = reader.entries().map(|e| e.name.clone()).collect();
    for full in names {
        let Some((kind, name)) = full.split_once('.') else {
            continue;
        };
        if kind == "param" {
            continue;
        }
        if let Some(values) = reader.f32s(&full)? {
            let n = values.len();
            let t = Tensor::from_data(TensorData::new(values, [n]), &device);
            state.by_kind_mut(kind).insert(name.to_string(), t);
        }
    }
    Ok((policy, state, step, note))
}

/// The version of a GRPO state file's layout, in its metadata.
const STATE_FORMAT: &str = "cft-grpo-state-1";

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type AB = Autodiff<Flex>;

    fn t2(values: Vec<f32>, shape: [usize; 2]) -> Tensor<AB, 2> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    #[test]
    fn advantages_are_normalised_within_each_group() {
        // Group 7: rewards 1, 0, 0 → mean 1/3, unbiased std √(1/3).
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0, 1.0], &[7, 7, 7, 2, 9], true);
        let std = (1.0f32 / 3.0).sqrt();
        assert!((a[0] - (2.0 / 3.0) / (std + 1e-6)).abs() < 1e-6, "{a:?}");
        assert!((a[1] + (1.0 / 3.0) / (std + 1e-6)).abs() < 1e-6, "{a:?}");
        // Groups of one: mean 0 and std 1, so their reward over 1 + ε.
        assert_eq!(&a[3..], &[1.0 / (1.0 + 1e-6); 2]);
        // All equal: zero advantage, not a division by zero.
        let b = group_advantages(&[1.0, 1.0], &[0, 0], true);
        assert_eq!(b, vec![0.0, 0.0]);
        let c = group_advantages(&[1.0, 0.0], &[0, 0], false);
        assert_eq!(c, vec![0.5, -0.5]);
    }

    /// The surrogate by hand on four tokens: a ratio inside the clip range, one above it with a
    /// positive advantage (clipped: no gradient), one below it with a positive advantage (the
    /// unclipped term wins), and a negative advantage with a ratio past the dual clip bound.
    #[test]
    fn the_clipped_surrogate_by_hand() {
        let ratios: [f32; 4] = [1.1, 1.5, 0.5, 4.0];
        let advantages = [1.0, 2.0, 1.0, -1.0];
        let lp = t2(ratios.iter().map(|r| r.ln()).collect(), [1, 4]).require_grad();
        let inputs = GrpoInputs {
            log_probs: lp.clone(),
            entropy: t2(vec![0.0; 4], [1, 4]),
            old_log_probs: t2(vec![0.0; 4], [1, 4]),
            ref_log_probs: t2(vec![0.0; 4], [1, 4]),
            advantages: t2(advantages.to_vec(), [1, 4]),
            mask: t2(vec![1.0; 4], [1, 4]),
        };
        let (loss, [frac, frac_lower, _]) = policy_loss(&inputs, &GrpoSettings::default());
        // per token: −1.1; −2·1.2 (clipped); −0.5 (max(−0.5, −0.8)); dual clip: min(4, 3) = 3
        let want = (-1.1 - 2.4 - 0.5 + 3.0) / 4.0;
        let [got] = values(&[&loss]);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert_eq!(frac, 0.25, "token 2 clipped");
        assert_eq!(frac_lower, 0.25, "token 4 bound by the dual clip");
        let g = lp
            .grad(&loss.backward())
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // d/d log π of −A·r is −A·r / 4; clipped tokens get nothing
        let want = [-1.1 / 4.0, 0.0, -0.5 / 4.0, 0.0];
        for (g, w) in g.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn k3_is_zero_at_the_reference_and_positive_elsewhere() {
        let lp = t2(vec![-1.0, -2.0, -0.5], [1, 3]);
        let r = t2(vec![-1.0, -1.0, -1.5], [1, 3]);
        let k = low_var_kl(lp, r).into_data().to_vec::<f32>().unwrap();
        assert_eq!(k[0], 0.0);
        // k = 1: e − 2; k = −1: 1/e
        assert!((k[1] - (std::f32::consts::E - 2.0)).abs() < 1e-6, "{k:?}");
        assert!((k[2] - (-1.0f32).exp()).abs() < 1e-6, "{k:?}");
    }
}
