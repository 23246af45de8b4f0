//! One pre-/post-norm decoder for Qwen2.5, Qwen3, Llama 3.x and OLMo2, read top to bottom:
//! linear → RMSNorm → embedding → MLP → attention → decoder layer → model.
//!
//! The families differ by a few switches fixed in [`DecoderConfig`]: q/k/v bias (Qwen2),
//! q/k RMSNorm per head (Qwen3) or over the whole projection (OLMo2), norms after each
//! sublayer instead of before (OLMo2), tied embeddings. Module fields are named after the
//! checkpoint keys (`model.layers.0.self_attn.q_proj.weight`), so `load.rs` needs no
//! remapping table, and weights keep PyTorch's `[out, in]` layout so a trained module saves
//! back to an HF checkpoint as is.
//!
//! The KV cache is not part of the module: [`KvCache`] (`kv_cache.rs`) is passed in by the
//! caller, so the same [`CausalLm`] trains (no cache) and generates (with one).

use std::sync::atomic::{AtomicU64, Ordering};

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::DType;

use super::config::DecoderConfig;
use super::kernels;
use super::kv_cache::{KvCache, LayerKv};
use super::rope::{Rope, RotaryTables};

/// Added to the attention score of a masked key. Finite, so a fully masked (padding) query
/// row stays finite, as with HF's `finfo.min`.
const MASKED: f32 = -1.0e30;

/// Below this many rows, [`matmul_wt`] multiplies in the transposed order. A decoding step of
/// 64 rows is 12% faster that way (bench model, median of 18 runs: 9,405 vs 8,406 tokens/s).
const SMALL_M: usize = 128;

/// `y = x W^T + b`, with `W` stored `[out, in]` as in the checkpoint, plus an optional LoRA
/// update attached by `train::lora` (never present in a loaded checkpoint).
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub lora: Option<LowRank<B>>,
}

impl<B: Backend> Linear<B> {
    /// # Shapes
    /// - `x`: `[b, t, in]` → `[b, t, out]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d_in] = x.dims();
        let w = self.weight.val(); // [out, in]
        let [d_out, _] = w.dims();
        let delta = self.lora.as_ref().map(|l| l.forward(x.clone())); // [b, t, out]
        let y = matmul_wt(x.reshape([b * t, d_in]), w); // [b*t, out]
        let y = match &self.bias {
            Some(bias) => y + bias.val().unsqueeze_dim(0),
            None => y,
        };
        let y = y.reshape([b, t, d_out]);
        match delta {
            Some(delta) => y + delta,
            None => y,
        }
    }
}

/// LoRA's low-rank update (Hu et al. 2021), as PEFT computes it:
/// `scale · dropout(x) A^T B^T` with `scale = alpha / r`.
#[derive(Module, Debug)]
pub struct LowRank<B: Backend> {
    /// `[r, in]`: PEFT's `lora_A.weight`.
    pub a: Param<Tensor<B, 2>>,
    /// `[out, r]`: PEFT's `lora_B.weight`.
    pub b: Param<Tensor<B, 2>>,
    pub scale: f64,
    /// Dropout on the input of `A`, active only under autodiff (training).
    pub dropout: f64,
}

impl<B: Backend> LowRank<B> {
    /// The adapters stay f32 on a half-precision model; as PEFT does, the input is cast to
    /// their dtype and the update back to the input's.
    ///
    /// # Shapes
    /// - `x`: `[b, t, in]` → `[b, t, out]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d_in] = x.dims();
        let dtype = x.dtype();
        let x = x.cast(self.a.val().dtype());
        let x = match self.dropout > 0.0 && B::ad_enabled(&x.device()) {
            true => {
                let keep = 1.0 - self.dropout;
                let mask = x.random_like(burn::tensor::Distribution::Bernoulli(keep));
                x * mask / keep
            }
            false => x,
        };
        let a = self.a.val(); // [r, in]
        let bw = self.b.val(); // [out, r]
        let [d_out, _] = bw.dims();
        let y = x
            .reshape([b * t, d_in])
            .matmul(a.transpose()) // [b*t, r]
            .matmul(bw.transpose()); // [b*t, out]
        (y * self.scale).reshape([b, t, d_out]).cast(dtype)
    }
}

/// `x W^T` for `x: [m, in]` and `W: [out, in]` → `[m, out]`.
///
/// flex's gemm is slow with a transposed right operand when `m` is small (decoding): there
/// `(W x^T)^T` is faster; prefill and training keep the plain form.
fn matmul_wt<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let [m, _] = x.dims();
    match m < SMALL_M {
        true => w.matmul(x.transpose()).transpose(),
        false => x.matmul(w.transpose()),
    }
}

/// `x / sqrt(mean(x^2) + eps) * weight`, computed in f32 as transformers does.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // As rows `[n, hidden]`: flex broadcasts a 2-D operand row by row, and one of more
        // dimensions an element at a time (forward and backward alike).
        let dims = x.dims();
        let hidden = dims[D - 1];
        let x = x.reshape([dims.iter().product::<usize>() / hidden.max(1), hidden]);
        let dtype = x.dtype();
        let x = x.cast(DType::F32);
        let variance = x.clone().square().mean_dim(1);
        let x = x * (variance + self.eps).sqrt().recip();
        // `x * weight`, not `weight * x`: flex has a fast path only for a broadcast right operand.
        (x.cast(dtype) * self.weight.val().unsqueeze::<2>()).reshape(dims)
    }
}

/// Token embedding table `[vocab, hidden]`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    /// # Shapes
    /// - `ids`: `[b, t]` → `[b, t, hidden]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        let w = self.weight.val();
        let [_, d] = w.dims();
        w.select(0, ids.reshape([b * t])).reshape([b, t, d])
    }
}

/// SwiGLU: `down_proj(silu(gate_proj(x)) * up_proj(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = kernels::silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub q_norm: Option<RmsNorm<B>>,
    pub k_norm: Option<RmsNorm<B>>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub per_head_qk_norm: bool,
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[b, t, hidden]`
    /// - `bias`: `[b, kv_heads, heads / kv_heads, t, s]` additive (see [`expand_bias`]),
    ///   `s` = cached + `t`
    ///
    /// `probs`, when given, receives the attention probabilities `[b, heads, t, s]`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RotaryTables<B>,
        bias: Tensor<B, 5>,
        cache: Option<&mut Option<LayerKv<B>>>,
        probs_out: Option<&mut Vec<Tensor<B, 4>>>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);

        // 1. project; OLMo2 normalises the whole projection here
        let mut q = self.q_proj.forward(x.clone()); // [b, t, h*d]
        let mut k = self.k_proj.forward(x.clone()); // [b, t, kvh*d]
        let v = self.v_proj.forward(x);
        if !self.per_head_qk_norm {
            if let Some(norm) = &self.q_norm {
                q = norm.forward(q);
            }
            if let Some(norm) = &self.k_norm {
                k = norm.forward(k);
            }
        }

        // 2. split heads; Qwen3 normalises each head here
        let mut q = q.reshape([b, t, h, d]);
        let mut k = k.reshape([b, t, kvh, d]);
        if self.per_head_qk_norm {
            if let Some(norm) = &self.q_norm {
                q = norm.forward(q);
            }
            if let Some(norm) = &self.k_norm {
                k = norm.forward(k);
            }
        }

        // 3. rotate q and k by their positions (while still contiguous), then heads first
        let q = rope.rotate_q(q).swap_dims(1, 2); // [b, h, t, d]
        let k = rope.rotate_k(k).swap_dims(1, 2); // [b, kvh, t, d]
        let v = v.reshape([b, t, kvh, d]).swap_dims(1, 2); // [b, kvh, t, d]

        // 4. append to the cache
        let (k, v) = match cache {
            Some(slot) => {
                let kv = match slot.take() {
                    Some(old) => old.append(k, v),
                    None => LayerKv::new(k, v),
                };
                let views = (kv.keys(), kv.values());
                *slot = Some(kv);
                views
            }
            None => (k, v),
        };

        // 5. grouped-query attention without copying keys: the `rep` query heads that share
        //    a key/value head (HF's `repeat_kv` order) are stacked along the query axis
        let [_, _, s, _] = k.dims();
        let rep = h / kvh;
        let q = q.reshape([b, kvh, rep * t, d]); // [b, kvh, rep*t, d]

        // 6. scaled dot-product attention, softmax in f32 as HF's eager path
        let dtype = q.dtype();
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt(); // [b, kvh, rep*t, s]
        let scores = scores.cast(DType::F32).reshape([b, kvh, rep, t, s]) + bias;
        let probs = masked_softmax(scores)
            .cast(dtype)
            .reshape([b, kvh, rep * t, s]);
        if let Some(sink) = probs_out {
            sink.push(probs.clone().reshape([b, h, t, s])); // [b, h, t, s], kv-head major
        }
        let out = probs.matmul(v); // [b, kvh, rep*t, d]
        let out = out
            .reshape([b, h, t, d])
            .swap_dims(1, 2)
            .reshape([b, t, h * d]);
        self.o_proj.forward(out)
    }
}

#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub self_attn: Attention<B>,
    pub mlp: Mlp<B>,
    /// Pre-attention norm; absent in OLMo2.
    pub input_layernorm: Option<RmsNorm<B>>,
    /// Pre-MLP norm, or (OLMo2) the norm applied to the attention output.
    pub post_attention_layernorm: RmsNorm<B>,
    /// OLMo2 only: the norm applied to the MLP output.
    pub post_feedforward_layernorm: Option<RmsNorm<B>>,
}

impl<B: Backend> DecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RotaryTables<B>,
        bias: Tensor<B, 5>,
        cache: Option<&mut Option<LayerKv<B>>>,
        probs: Option<&mut Vec<Tensor<B, 4>>>,
    ) -> Tensor<B, 3> {
        match &self.post_feedforward_layernorm {
            // OLMo2: x + norm(attn(x)), then x + norm(mlp(x))
            Some(post_ff) => {
                let attn = self.self_attn.forward(x.clone(), rope, bias, cache, probs);
                let x = x + self.post_attention_layernorm.forward(attn);
                let mlp = self.mlp.forward(x.clone());
                x + post_ff.forward(mlp)
            }
            // Qwen2/Qwen3/Llama: x + attn(norm(x)), then x + mlp(norm(x))
            None => {
                let normed = match &self.input_layernorm {
                    Some(norm) => norm.forward(x.clone()),
                    None => x.clone(),
                };
                let x = x + self.self_attn.forward(normed, rope, bias, cache, probs);
                let mlp = self
                    .mlp
                    .forward(self.post_attention_layernorm.forward(x.clone()));
                x + mlp
            }
        }
    }
}

/// The `model.` part of the checkpoint: embedding, layers, final norm.
#[derive(Module, Debug)]
pub struct Model<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
}

/// A causal language model: [`Model`] plus `lm_head` (absent when tied to `embed_tokens`).
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    pub model: Model<B>,
    pub lm_head: Option<Linear<B>>,
    #[module(skip)]
    pub rope: Rope,
    #[module(skip)]
    pub config: DecoderConfig,
}

impl<B: Backend> CausalLm<B> {
    /// Final hidden states (after `model.norm`), updating `cache` when given.
    ///
    /// # Shapes
    /// - `ids`, `positions`: `[b, t]`
    /// - `bias`: `[b, 1, t, s]` additive attention bias, `s` = cached length + `t`
    ///   (see [`attention_bias`]) → `[b, t, hidden]`
    pub fn forward_hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        bias: Tensor<B, 4>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        self.run_layers(ids, positions, bias, cache, None)
    }

    /// The training forward that also returns every layer's attention probabilities
    /// (for token statistics: how much attention each token receives).
    ///
    /// # Shapes
    /// - `ids`: `[b, t]`; `key_valid`: `[b, t]` → logits `[b, t, vocab]`, per layer `[b, heads, t, t]`
    pub fn forward_with_attention(
        &self,
        ids: Tensor<B, 2, Int>,
        key_valid: Tensor<B, 2, Bool>,
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 4>>) {
        let [_, t] = ids.dims();
        let positions = positions_from_valid(key_valid.clone());
        let mut probs = Vec::with_capacity(self.model.layers.len());
        let hidden = self.run_layers(
            ids,
            positions,
            attention_bias(key_valid, t),
            None,
            Some(&mut probs),
        );
        (self.logits(hidden), probs)
    }

    /// Embedding, every layer, final norm; `probs` collects attention probabilities.
    ///
    /// Counts its `b × t` token rows in [`token_rows_run`].
    fn run_layers(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        bias: Tensor<B, 4>,
        mut cache: Option<&mut KvCache<B>>,
        mut probs: Option<&mut Vec<Tensor<B, 4>>>,
    ) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        TOKEN_ROWS.fetch_add((b * t) as u64, Ordering::Relaxed);
        let mut x = self.model.embed_tokens.forward(ids); // [b, t, hidden]
        let c = &self.config;
        let rope = self.rope.tables(
            positions,
            c.num_attention_heads,
            c.num_key_value_heads,
            x.dtype(),
        );
        let rep = c.num_attention_heads / c.num_key_value_heads;
        let bias = expand_bias(bias, c.num_key_value_heads, rep); // [b, kvh, rep, t, s]
        for (i, layer) in self.model.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().and_then(|c| c.layers.get_mut(i));
            x = layer.forward(x, &rope, bias.clone(), slot, probs.as_deref_mut());
        }
        self.model.norm.forward(x)
    }

    /// Logits from hidden states, in f32.
    ///
    /// # Shapes
    /// - `hidden`: `[b, t, hidden]` → `[b, t, vocab]`
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let logits = match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let [b, t, d] = hidden.dims();
                let w = self.model.embed_tokens.weight.val(); // [vocab, hidden]
                let [vocab, _] = w.dims();
                matmul_wt(hidden.reshape([b * t, d]), w).reshape([b, t, vocab])
            }
        };
        logits.cast(DType::F32)
    }

    /// Logits at every position: the training forward (no cache).
    ///
    /// # Shapes
    /// - `ids`: `[b, t]`; `key_valid`: `[b, t]`, false on padding → `[b, t, vocab]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>, key_valid: Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let positions = positions_from_valid(key_valid.clone());
        let bias = attention_bias(key_valid, t);
        self.logits(self.forward_hidden(ids, positions, bias, None))
    }

    /// The model's float dtype (that of its embedding table).
    pub fn dtype(&self) -> DType {
        self.model.embed_tokens.weight.val().dtype()
    }
}

/// Below this, `x - max` is clamped before `exp` in [`masked_softmax`].
const EXP_FLOOR: f64 = -80.0;

/// Softmax over the last axis of attention scores that carry [`MASKED`] entries.
///
/// A masked entry's `exp(x - max)` underflows, and glibc's `expf` takes a slow path (it sets
/// `errno`) for every such element: about a fifth of the batched rollouts' time in `perf`. The
/// clamp keeps `exp` on its fast path; a masked key's weight becomes `e^-80 ≈ 1.8e-35` instead
/// of 0, far below an f32 ulp of the sum it joins, and a fully masked (padding) row stays
/// uniform as before.
///
/// Computed on rows `[n, s]`, which flex broadcasts row by row (a 5-D broadcast goes an
/// element at a time).
fn masked_softmax<B: Backend>(scores: Tensor<B, 5>) -> Tensor<B, 5> {
    let dims = scores.dims();
    let scores = scores.reshape([dims[..4].iter().product::<usize>(), dims[4]]);
    let max = scores.clone().detach().max_dim(1);
    let e = (scores - max).clamp_min(EXP_FLOOR).exp();
    let sum = e.clone().sum_dim(1);
    (e / sum).reshape(dims)
}

static TOKEN_ROWS: AtomicU64 = AtomicU64::new(0);

/// Token rows (`batch × tokens`, padding and finished rows included) every forward pass of
/// this process has run so far: the work a benchmark compares between two paths.
pub fn token_rows_run() -> u64 {
    TOKEN_ROWS.load(Ordering::Relaxed)
}

/// Above this many elements the per-head attention bias stays a broadcast view.
const MATERIALISED_BIAS: usize = 1 << 22;

/// `[b, 1, t, s]` → `[b, kvh, rep, t, s]`, the shape of the attention scores. Materialised
/// (once per forward, shared by every layer) while small: flex adds equal shapes on a fast
/// path but broadcasts over middle axes element by element.
fn expand_bias<B: Backend>(bias: Tensor<B, 4>, kvh: usize, rep: usize) -> Tensor<B, 5> {
    let [b, _, t, s] = bias.dims();
    let expanded = bias.reshape([b, 1, 1, t, s]).expand([b, kvh, rep, t, s]);
    match b * kvh * rep * t * s <= MATERIALISED_BIAS {
        // A reshape of an expanded view copies it into a contiguous tensor.
        true => expanded
            .reshape([b * kvh * rep * t * s])
            .reshape([b, kvh, rep, t, s]),
        false => expanded,
    }
}

/// HF's left-padding positions: `cumsum(mask) - 1`, clamped at 0.
///
/// # Shapes
/// - `key_valid`: `[b, t]` → `[b, t]`
pub fn positions_from_valid<B: Backend>(key_valid: Tensor<B, 2, Bool>) -> Tensor<B, 2, Int> {
    (key_valid.int().cumsum(1) - 1).clamp_min(0)
}

/// Additive causal attention bias (f32) for `t` new queries over `s` keys, the last `t` of
/// which are the queries themselves: key `j` is visible to query `i` iff `j <= s - t + i` and
/// `key_valid[j]`.
///
/// # Shapes
/// - `key_valid`: `[b, s]` → `[b, 1, t, s]`
pub fn attention_bias<B: Backend>(key_valid: Tensor<B, 2, Bool>, t: usize) -> Tensor<B, 4> {
    let [b, s] = key_valid.dims();
    let device = key_valid.device();
    let offset = s - t.min(s);
    let causal: Vec<bool> = (0..t)
        .flat_map(|i| (0..s).map(move |j| j <= offset + i))
        .collect();
    let causal = Tensor::<B, 2, Bool>::from_data(TensorData::new(causal, [t, s]), &device)
        .reshape([1, 1, t, s])
        .expand([b, 1, t, s]);
    let visible = causal.bool_and(key_valid.reshape([b, 1, 1, s]).expand([b, 1, t, s]));
    Tensor::<B, 4>::zeros([b, 1, t, s], (&device, DType::F32)).mask_fill(visible.bool_not(), MASKED)
}
