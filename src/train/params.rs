//! Parameters by checkpoint name. Module fields are named after HF keys, so the path a
//! visitor walks (`model` → `layers` → `0` → `self_attn` → `q_proj` → `weight`) joined with
//! dots is the safetensors name. Gradients, optimiser moments and saved state are all keyed
//! by it; nothing depends on burn's random `ParamId`s.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::backend::AutodiffBackend;

/// A flattened host copy of a tensor: `(shape, f32 values)`.
pub type HostTensor = (Vec<usize>, Vec<f32>);

/// Flattened gradients (or moments) by parameter name, on the inner (non-autodiff) backend.
pub type NamedFlat<B> = BTreeMap<String, Tensor<B, 1>>;

/// A [`ModuleVisitor`] told each float parameter's checkpoint name; see [`visit_named`].
pub trait NamedVisitor<B: Backend> {
    fn visit_param<const D: usize>(&mut self, name: &str, param: &Param<Tensor<B, D>>);
}

/// A [`ModuleMapper`] told each float parameter's checkpoint name; see [`map_named`].
pub trait NamedMapper<B: Backend> {
    fn map_param<const D: usize>(
        &mut self,
        name: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>>;
}

/// The path bookkeeping every walk by name shares: burn announces each submodule it enters
/// and leaves, and the names on the way down, joined with dots, are the checkpoint name.
struct Named<'a, T> {
    path: Vec<String>,
    inner: &'a mut T,
}

impl<'a, T> Named<'a, T> {
    fn new(inner: &'a mut T) -> Self {
        Self {
            path: Vec::new(),
            inner,
        }
    }

    fn name(&self) -> String {
        self.path.join(".")
    }
}

impl<B: Backend, V: NamedVisitor<B>> ModuleVisitor<B> for Named<'_, V> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.name();
        self.inner.visit_param(&name, param);
    }
}

impl<B: Backend, M: NamedMapper<B>> ModuleMapper<B> for Named<'_, M> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let name = self.name();
        self.inner.map_param(&name, param)
    }
}

/// Visits every float parameter of `module` with its checkpoint name.
pub fn visit_named<B: Backend, M: Module<B>>(module: &M, visitor: &mut impl NamedVisitor<B>) {
    module.visit(&mut Named::new(visitor));
}

/// Maps every float parameter of `module`, told its checkpoint name.
pub fn map_named<B: Backend, M: Module<B>>(module: M, mapper: &mut impl NamedMapper<B>) -> M {
    module.map(&mut Named::new(mapper))
}

/// Every float parameter of `module`, by name, as host f32 data (for checkpoints and state).
pub fn named_values<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, HostTensor> {
    struct Collect(BTreeMap<String, HostTensor>);
    impl<B: Backend> NamedVisitor<B> for Collect {
        fn visit_param<const D: usize>(&mut self, name: &str, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            let shape = value.dims().to_vec();
            let data = value.into_data().convert::<f32>();
            let values = data.to_vec::<f32>().unwrap_or_default();
            self.0.insert(name.to_string(), (shape, values));
        }
    }
    let mut c = Collect(BTreeMap::new());
    visit_named(module, &mut c);
    c.0
}

/// Adds the gradients of `module`'s trainable parameters in `grads` into `acc`, flattened
/// and by name. Frozen parameters (no gradient) are skipped.
pub fn accumulate_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
    acc: &mut NamedFlat<B::InnerBackend>,
) {
    struct Acc<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        acc: &'a mut NamedFlat<B::InnerBackend>,
    }
    impl<B: AutodiffBackend> NamedVisitor<B> for Acc<'_, B> {
        fn visit_param<const D: usize>(&mut self, name: &str, param: &Param<Tensor<B, D>>) {
            let Some(grad) = param.val().grad(self.grads) else {
                return;
            };
            let n = grad.shape().num_elements();
            // Summed in f32 whatever the parameter dtype.
            let grad = grad.reshape([n]).cast(burn::tensor::DType::F32); // [n]
            let sum = match self.acc.remove(name) {
                Some(prev) => prev + grad,
                None => grad,
            };
            self.acc.insert(name.to_string(), sum);
        }
    }
    visit_named(module, &mut Acc::<B> { grads, acc });
}

/// The gradients of `module`'s trainable parameters in `grads`, flattened, by name, in the
/// parameter's dtype (`zero1` moves them to their owners in it and sums there in f32).
pub fn collect_grads<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
) -> NamedFlat<B::InnerBackend> {
    struct Collect<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        out: NamedFlat<B::InnerBackend>,
    }
    impl<B: AutodiffBackend> NamedVisitor<B> for Collect<'_, B> {
        fn visit_param<const D: usize>(&mut self, name: &str, param: &Param<Tensor<B, D>>) {
            if let Some(grad) = param.val().grad(self.grads) {
                let n = grad.shape().num_elements();
                self.out.insert(name.to_string(), grad.reshape([n]));
            }
        }
    }
    let mut c = Collect::<B> {
        grads,
        out: BTreeMap::new(),
    };
    visit_named(module, &mut c);
    c.out
}

/// Global L2 norm of all gradients, as `torch.nn.utils.clip_grad_norm_` computes it. Each
/// square sum is taken where its gradient is (under `zero1`, on the rank that owns it) and
/// added up on the first gradient's device, in name order.
pub fn global_norm<B: Backend>(grads: &NamedFlat<B>) -> f64 {
    let mut total: Option<Tensor<B, 1>> = None;
    for g in grads.values() {
        let sq = square_sum(g); // [1]
        total = Some(match total {
            Some(t) => {
                let device = t.device();
                t + sq.to_device(&device)
            }
            None => sq,
        });
    }
    match total {
        Some(t) => (t.into_scalar().elem::<f32>() as f64).sqrt(),
        None => 0.0,
    }
}

/// `g`'s sum of squares, added in an order that depends only on its length. Flex adds a flat
/// sum of 4M elements or more in parallel chunks combined as rayon's work splitting goes (so
/// the total depended on the thread count, in the last bits, and through clipping so did the
/// weights); here a long vector is summed in rows of 2^16 (each in order) and then the row
/// sums, with the tail that fills no row added last.
fn square_sum<B: Backend>(g: &Tensor<B, 1>) -> Tensor<B, 1> {
    const ROW: usize = 1 << 16;
    let n = g.dims()[0];
    let sq = g.clone().square();
    if n <= ROW {
        return sq.sum();
    }
    let rows = n / ROW;
    let body = sq
        .clone()
        .slice(0..rows * ROW)
        .reshape([rows, ROW])
        .sum_dim(1)
        .reshape([rows])
        .sum();
    match rows * ROW == n {
        true => body,
        false => body + sq.slice(rows * ROW..n).sum(),
    }
}

/// Name, shape and dtype of every trainable parameter (one that takes a gradient), in the
/// module's order: what the training state saves of the weights.
pub fn trainable<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>, DType)> {
    struct Collect(Vec<(String, Vec<usize>, DType)>);
    impl<B: Backend> NamedVisitor<B> for Collect {
        fn visit_param<const D: usize>(&mut self, name: &str, param: &Param<Tensor<B, D>>) {
            if param.is_require_grad() {
                let value = param.val();
                self.0
                    .push((name.to_string(), value.dims().to_vec(), value.dtype()));
            }
        }
    }
    let mut c = Collect(Vec::new());
    visit_named(module, &mut c);
    c.0
}

/// Parameter `name`'s value on the host, in its dtype (one tensor).
pub fn param_data<B: Backend, M: Module<B>>(module: &M, name: &str) -> Option<TensorData> {
    struct Find<'a> {
        name: &'a str,
        found: Option<TensorData>,
    }
    impl<B: Backend> NamedVisitor<B> for Find<'_> {
        fn visit_param<const D: usize>(&mut self, name: &str, param: &Param<Tensor<B, D>>) {
            if self.found.is_none() && name == self.name {
                let value = param.val();
                let dtype = value.dtype();
                let data = value.into_data();
                self.found = Some(match data.dtype == dtype {
                    true => data,
                    false => data.convert_dtype(dtype),
                });
            }
        }
    }
    let mut f = Find { name, found: None };
    visit_named(module, &mut f);
    f.found
}

/// Loads every trainable parameter of `module` from the state file's `param.<name>`, one
/// tensor at a time, converting from the file's dtype to the parameter's.
pub fn load_trainable<B: Backend, M: Module<B>>(
    module: M,
    reader: &mut super::state::Reader,
) -> Result<M, super::TrainError> {
    struct Load<'a> {
        reader: &'a mut super::state::Reader,
        error: Option<super::TrainError>,
    }
    impl<B: Backend> NamedMapper<B> for Load<'_> {
        fn map_param<const D: usize>(
            &mut self,
            name: &str,
            param: Param<Tensor<B, D>>,
        ) -> Param<Tensor<B, D>> {
            if !param.is_require_grad() || self.error.is_some() {
                return param;
            }
            let key = format!("param.{name}");
            let entry = self.reader.entry(&key).cloned();
            let bytes = self.reader.bytes(&key);
            let (id, tensor, mapper) = param.consume();
            let dims = tensor.dims().to_vec();
            let data = match (entry, bytes) {
                (Some(e), Ok(Some(bytes))) if e.shape == dims => {
                    TensorData::from_bytes_vec(bytes, e.shape, e.dtype)
                }
                (Some(e), Ok(Some(_))) => {
                    self.error = Some(super::TrainError::State(format!(
                        "{name}: shape {:?} in the state, {dims:?} in the model",
                        e.shape
                    )));
                    return Param::from_mapped_value(id, tensor, mapper);
                }
                (_, Err(e)) => {
                    self.error = Some(e);
                    return Param::from_mapped_value(id, tensor, mapper);
                }
                _ => {
                    self.error = Some(super::TrainError::State(format!(
                        "the state has no {key}: it was saved for another model or adapter"
                    )));
                    return Param::from_mapped_value(id, tensor, mapper);
                }
            };
            let new = Tensor::<B, D>::from_data(data, (&tensor.device(), tensor.dtype()));
            Param::from_mapped_value(id, new.require_grad(), mapper)
        }
    }
    let mut l = Load {
        reader,
        error: None,
    };
    let module = map_named(module, &mut l);
    match l.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}
