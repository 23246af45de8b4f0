//! Adam / AdamW with PyTorch's update rule and defaults set explicitly (burn's `AdamWConfig`
//! defaults to epsilon 1e-5 and weight decay 1e-4; PyTorch's to 1e-8 and 0.01 for AdamW, 0 for
//! Adam). Moments are kept by parameter name in f32, so the state saves and reloads without
//! burn's `ParamId`s; see [`super::params`].

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;

use super::TrainError;
use super::params::{NamedFlat, NamedMapper, map_named};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// `true`: decoupled weight decay (`torch.optim.AdamW`); `false`: L2 added to the gradient
    /// (`torch.optim.Adam`).
    pub decoupled: bool,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamConfig {
    /// `optimizer` is the manifest's name: `adam` or `adamw`.
    pub fn new(
        optimizer: &str,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self, TrainError> {
        let decoupled = match optimizer {
            "adamw" => true,
            "adam" => false,
            other => {
                return Err(TrainError::Setting {
                    name: "optimizer".into(),
                    message: format!("unknown optimizer {other:?} (adam, adamw)"),
                });
            }
        };
        Ok(Self {
            decoupled,
            beta1,
            beta2,
            eps,
            weight_decay,
        })
    }

    /// `torch.optim.AdamW()`'s defaults.
    pub fn torch_adamw() -> Self {
        Self {
            decoupled: true,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// First and second moments of every trainable parameter, and the step count.
pub struct AdamState<B: Backend> {
    pub step: u64,
    pub m: NamedFlat<B>,
    pub v: NamedFlat<B>,
    /// f32 master copies of the parameters that train in half precision: the update is
    /// applied to these and the parameter is their rounding, so updates smaller than half
    /// precision's resolution (lr 1e-5 against bf16's 8 bits) accumulate instead of vanishing.
    pub master: NamedFlat<B>,
}

/// A state's maps by the name its tensors carry in a state file (`m.`, `v.`, `master.`).
macro_rules! by_kind {
    ($ty:ty) => {
        /// The map of `kind`: `m`, `v`, anything else the master copies.
        pub fn by_kind(&self, kind: &str) -> &$ty {
            match kind {
                "m" => &self.m,
                "v" => &self.v,
                _ => &self.master,
            }
        }

        pub fn by_kind_mut(&mut self, kind: &str) -> &mut $ty {
            match kind {
                "m" => &mut self.m,
                "v" => &mut self.v,
                _ => &mut self.master,
            }
        }
    };
}

impl<B: Backend> AdamState<B> {
    by_kind!(NamedFlat<B>);
}

impl<B: Backend> Default for AdamState<B> {
    fn default() -> Self {
        Self {
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
            master: BTreeMap::new(),
        }
    }
}

/// One optimiser step: consumes the accumulated gradients (already clipped by `grad_scale`),
/// updates the moments and returns the updated module. Parameters without a gradient
/// (frozen) are left as they are.
pub fn adam_step<B: AutodiffBackend, M: Module<B>>(
    module: M,
    grads: &mut NamedFlat<B::InnerBackend>,
    state: &mut AdamState<B::InnerBackend>,
    config: AdamConfig,
    lr: f64,
    grad_scale: f64,
) -> M {
    state.step += 1;
    let mut step = Step::<B> {
        grads,
        state,
        config,
        lr,
        grad_scale,
    };
    map_named(module, &mut step)
}

struct Step<'a, B: AutodiffBackend> {
    grads: &'a mut NamedFlat<B::InnerBackend>,
    state: &'a mut AdamState<B::InnerBackend>,
    config: AdamConfig,
    lr: f64,
    grad_scale: f64,
}

impl<B: AutodiffBackend> NamedMapper<B> for Step<'_, B> {
    fn map_param<const D: usize>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let Some(grad) = self.grads.remove(name) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let dtype = tensor.dtype();
        let shape = tensor.dims();
        let n = grad.shape().num_elements();
        let c = self.config;
        // The update runs in f32 whatever the parameter dtype, on the f32 master copy of a
        // half-precision parameter.
        let p = match self.state.master.remove(name) {
            Some(master) => master,
            None => tensor.inner().cast(DType::F32).reshape([n]), // [n]
        };
        let mut g = grad.cast(DType::F32);
        if self.grad_scale != 1.0 {
            g = g * self.grad_scale;
        }
        if !c.decoupled && c.weight_decay != 0.0 {
            g = g + p.clone() * c.weight_decay;
        }
        // torch.optim.Adam(W), single-tensor path:
        //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
        //   p = p (1 - lr wd)   [AdamW only]
        //   p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
        let m = match self.state.m.remove(name) {
            Some(m) => m * c.beta1 + g.clone() * (1.0 - c.beta1),
            None => g.clone() * (1.0 - c.beta1),
        };
        let v = match self.state.v.remove(name) {
            Some(v) => v * c.beta2 + g.square() * (1.0 - c.beta2),
            None => g.square() * (1.0 - c.beta2),
        };
        let t = self.state.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let mut p = p;
        if c.decoupled && c.weight_decay != 0.0 {
            p = p * (1.0 - self.lr * c.weight_decay);
        }
        let denom = v.clone().sqrt() / bias2_sqrt + c.eps;
        let p = p - m.clone() / denom * (self.lr / bias1);
        self.state.m.insert(name.to_string(), m);
        self.state.v.insert(name.to_string(), v);
        if dtype != DType::F32 {
            self.state.master.insert(name.to_string(), p.clone());
        }
        let updated = Tensor::<B, D>::from_inner(p.reshape(shape).cast(dtype)).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// The optimiser state of `strategy = "offload"` (ZeRO-Offload's design): f32 master weights
/// and both moments in host memory, by parameter name. The device keeps only the weights in
/// their dtype and the gradients; each step the gradients come to the host, CPU threads update
/// the master weights, and the new weights go back.
#[derive(Default)]
pub struct HostAdam {
    pub step: u64,
    pub m: BTreeMap<String, Vec<f32>>,
    pub v: BTreeMap<String, Vec<f32>>,
    pub master: BTreeMap<String, Vec<f32>>,
}

impl HostAdam {
    by_kind!(BTreeMap<String, Vec<f32>>);
}

/// [`adam_step`] with the state in host memory ([`HostAdam`]). Element for element the same
/// f32 operations in the same order as the device path, so on the CPU the weights are the
/// same bits.
pub fn host_adam_step<B: AutodiffBackend, M: Module<B>>(
    module: M,
    grads: &mut NamedFlat<B::InnerBackend>,
    state: &mut HostAdam,
    config: AdamConfig,
    lr: f64,
    grad_scale: f64,
) -> M {
    state.step += 1;
    let rule = Rule::new(config, lr, grad_scale, state.step);
    let mut step = HostStep::<B> { grads, state, rule };
    map_named(module, &mut step)
}

/// The per-element update with its scalars rounded to f32 as the backend rounds a scalar
/// operand (`scalar as f32`).
#[derive(Clone, Copy)]
struct Rule {
    scale: Option<f32>,
    l2: Option<f32>,
    decay: Option<f32>,
    b1: f32,
    c1: f32,
    b2: f32,
    c2: f32,
    bias2_sqrt: f32,
    eps: f32,
    step_size: f32,
}

impl Rule {
    fn new(c: AdamConfig, lr: f64, grad_scale: f64, t: u64) -> Rule {
        let t = t as i32;
        Rule {
            scale: (grad_scale != 1.0).then_some(grad_scale as f32),
            l2: (!c.decoupled && c.weight_decay != 0.0).then_some(c.weight_decay as f32),
            decay: (c.decoupled && c.weight_decay != 0.0)
                .then_some((1.0 - lr * c.weight_decay) as f32),
            b1: c.beta1 as f32,
            c1: (1.0 - c.beta1) as f32,
            b2: c.beta2 as f32,
            c2: (1.0 - c.beta2) as f32,
            bias2_sqrt: (1.0 - c.beta2.powi(t)).sqrt() as f32,
            eps: c.eps as f32,
            step_size: (lr / (1.0 - c.beta1.powi(t))) as f32,
        }
    }

    /// Updates `p`, `m`, `v` from `g` in place; `fresh`: the moments start here (step 1 of
    /// this parameter), as `g * (1 - beta)` rather than `0 * beta + ...`, whose sign of zero
    /// can differ.
    fn apply(&self, g: &[f32], p: &mut [f32], m: &mut [f32], v: &mut [f32], fresh: bool) {
        for i in 0..g.len() {
            let mut gi = g[i];
            if let Some(s) = self.scale {
                gi *= s;
            }
            if let Some(wd) = self.l2 {
                gi += p[i] * wd;
            }
            let (mi, vi) = match fresh {
                true => (gi * self.c1, (gi * gi) * self.c2),
                false => (
                    m[i] * self.b1 + gi * self.c1,
                    v[i] * self.b2 + (gi * gi) * self.c2,
                ),
            };
            let mut pi = p[i];
            if let Some(d) = self.decay {
                pi *= d;
            }
            let denom = vi.sqrt() / self.bias2_sqrt + self.eps;
            p[i] = pi - (mi / denom) * self.step_size;
            m[i] = mi;
            v[i] = vi;
        }
    }
}

struct HostStep<'a, B: AutodiffBackend> {
    grads: &'a mut NamedFlat<B::InnerBackend>,
    state: &'a mut HostAdam,
    rule: Rule,
}

impl<B: AutodiffBackend> NamedMapper<B> for HostStep<'_, B> {
    fn map_param<const D: usize>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        use rayon::prelude::*;
        let Some(grad) = self.grads.remove(name) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let (dtype, shape, device) = (tensor.dtype(), tensor.dims(), tensor.device());
        let rule = self.rule;
        let g = grad
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        let mut p = match self.state.master.remove(name) {
            Some(master) => master,
            None => tensor
                .inner()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default(),
        };
        let fresh = !self.state.m.contains_key(name);
        let mut m = self
            .state
            .m
            .remove(name)
            .unwrap_or_else(|| vec![0.0; g.len()]);
        let mut v = self
            .state
            .v
            .remove(name)
            .unwrap_or_else(|| vec![0.0; g.len()]);
        // Element-wise, so how the threads split it changes nothing.
        const CHUNK: usize = 1 << 16;
        g.par_chunks(CHUNK)
            .zip(p.par_chunks_mut(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((g, p), m), v)| rule.apply(g, p, m, v, fresh));
        let data = TensorData::new(p.clone(), shape);
        let updated = Tensor::<B::InnerBackend, D>::from_data(data, &device).cast(dtype);
        self.state.master.insert(name.to_string(), p);
        self.state.m.insert(name.to_string(), m);
        self.state.v.insert(name.to_string(), v);
        Param::from_mapped_value(id, Tensor::from_inner(updated).require_grad(), mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decoder::Linear;
    use crate::train::params::named_values;
    use burn::backend::{Autodiff, Flex};

    type AB = Autodiff<Flex>;

    /// Two Adam steps on p = [1, -2] with gradients [0.5, -1] then [-0.2, 3], lr 0.1, no
    /// weight decay, betas (0.9, 0.95) as OpenRLHF sets them (`cli/train_sft.py --adam_betas`):
    ///   step 1: m = 0.1 g, v = 0.05 g², m̂ = g, v̂ = g²: p = [0.9, -1.9] (betas do not matter)
    ///   step 2: m = 0.09 g1 + 0.1 g2 = [0.025, 0.21], v = 0.0475 g1² + 0.05 g2² =
    ///   [0.013875, 0.4975], p -= 0.1 / 0.19 · m / (√v / √0.0975 + 1e-8)
    ///   = [0.8651203, -1.9489296].
    /// torch's default betas (0.9, 0.999) give [0.8654394, -1.9494190] from the same steps.
    #[test]
    fn two_adam_steps_by_hand_with_openrlhf_betas() {
        let run = |beta2: f64| -> Vec<f32> {
            let device = Default::default();
            let weight =
                Tensor::<AB, 2>::from_data(TensorData::new(vec![1.0f32, -2.0], [1, 2]), &device);
            let mut module = Linear::<AB> {
                weight: Param::from_tensor(weight),
                bias: None,
                lora: None,
            };
            let names: Vec<String> = named_values(&module).into_keys().collect();
            let [name] = names.as_slice() else {
                panic!("one parameter expected: {names:?}");
            };
            let config = AdamConfig::new("adam", 0.9, beta2, 1e-8, 0.0).unwrap();
            let mut state = AdamState::default();
            for g in [[0.5f32, -1.0], [-0.2, 3.0]] {
                let mut grads = BTreeMap::new();
                grads.insert(
                    name.clone(),
                    Tensor::<Flex, 1>::from_data(TensorData::new(g.to_vec(), [2]), &device),
                );
                module = adam_step(module, &mut grads, &mut state, config, 0.1, 1.0);
            }
            module.weight.val().into_data().to_vec::<f32>().unwrap()
        };
        let close = |got: &[f32], want: [f64; 2]| {
            got.iter()
                .zip(want)
                .all(|(g, w)| (*g as f64 - w).abs() < 2e-6)
        };
        let openrlhf = run(0.95);
        assert!(close(&openrlhf, [0.8651203, -1.9489296]), "{openrlhf:?}");
        let torch = run(0.999);
        assert!(close(&torch, [0.8654394, -1.9494190]), "{torch:?}");
    }
}
