//! The memory formulas: for one stage's work on one [`ModelShape`], the bytes each term
//! holds at the stage's peak, on the device and in host memory.
//!
//! Each term is written from what the code allocates (the file named in its doc), not from
//! what a framework usually does; the activation terms were then checked against resident
//! memory measured on the CPU (`cft bench memory`, README "Memory model").

use super::shape::{Dtype, ModelShape};

/// One named amount of memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub name: &'static str,
    pub bytes: u64,
}

/// A stage's memory at its peak. On the CPU the device is host memory, and the two add up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Estimate {
    /// What the device holds at the peak.
    pub device: Vec<Term>,
    /// What host memory holds beside the device (offloaded optimiser state).
    pub host: Vec<Term>,
    /// Host memory while the weights load (`src/model/load.rs`): every tensor converted to
    /// the load dtype on the host before the module is built, plus the largest weight file,
    /// read whole.
    pub load: u64,
    /// The moment of the stage the device terms describe (`backward`, `decoding`...).
    pub phase: &'static str,
}

impl Estimate {
    pub fn device_peak(&self) -> u64 {
        self.device.iter().map(|t| t.bytes).sum()
    }

    pub fn host_only(&self) -> u64 {
        self.host.iter().map(|t| t.bytes).sum()
    }

    /// Host memory at the peak: with a separate device, the larger of loading and the host
    /// terms; on the CPU (`unified`), the larger of loading and everything.
    pub fn host_peak(&self, unified: bool) -> u64 {
        let running = match unified {
            true => self.device_peak() + self.host_only(),
            false => self.host_only(),
        };
        running.max(self.load)
    }
}

/// Where the weights load: on the CPU half precision is widened to f32
/// (`Device::load_options`); on CUDA the stored dtype is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    Cuda,
}

impl Backend {
    /// The dtype an inference stage holds the weights in.
    pub fn inference_dtype(self, stored: Dtype) -> Dtype {
        match self {
            Backend::Cpu => Dtype::F32,
            Backend::Cuda => stored,
        }
    }
}

/// The host side of loading: all tensors in `dtype` plus the largest weight file
/// (`largest_file`: its size when the files are there, else the whole checkpoint up to HF's
/// default 5 GB shard).
pub fn load_bytes(shape: &ModelShape, dtype: Dtype, largest_file: Option<u64>) -> u64 {
    let stored = shape.params() * shape.stored.bytes();
    let file = largest_file.unwrap_or(stored.min(5_000_000_000));
    shape.params() * dtype.bytes() + file
}

// ---------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------

/// How the optimiser state is placed (`[train] strategy`, a binding of the train stage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Everything on one device.
    Single,
    /// Weights and gradients on the device; f32 master weights, Adam moments and the f32
    /// gradient copy being applied in host memory.
    Offload,
    /// Data parallel over `gpus` devices, each holding the full weights and gradients and
    /// 1/`gpus` of the master weights and moments.
    Zero1 { gpus: u64 },
}

impl Strategy {
    pub fn name(self) -> String {
        match self {
            Strategy::Single => "single".into(),
            Strategy::Offload => "offload".into(),
            Strategy::Zero1 { gpus } => format!("zero1 x{gpus}"),
        }
    }
}

/// What one training stage runs: the shapes of its micro-batches and what it trains.
#[derive(Clone, Debug)]
pub struct TrainWork {
    /// The dtype the weights train in (`precision`).
    pub precision: Dtype,
    /// Sequences per forward/backward.
    pub micro_batch: u64,
    /// Tokens per sequence (`max_length`: the longest a micro-batch can be padded to).
    pub tokens: u64,
    /// Micro-batches accumulated per optimiser step.
    pub accumulation: u64,
    /// `None`: full fine-tuning; else LoRA's rank and target modules.
    pub lora: Option<(u64, Vec<String>)>,
    pub strategy: Strategy,
}

/// Parameters LoRA trains: `r × (in + out)` for each target projection of every layer.
pub fn lora_params(shape: &ModelShape, rank: u64, targets: &[String]) -> u64 {
    let (h, q, kv, i) = (
        shape.hidden,
        shape.q_dim(),
        shape.kv_dim(),
        shape.intermediate,
    );
    let per_layer: u64 = targets
        .iter()
        .map(|m| match m.as_str() {
            "q_proj" => h + q,
            "k_proj" | "v_proj" => h + kv,
            "o_proj" => q + h,
            "gate_proj" | "up_proj" | "down_proj" => h + i,
            _ => 0,
        })
        .sum();
    shape.layers * rank * per_layer
}

/// Bytes of an RMSNorm's kept values per hidden feature (`RmsNorm::forward`): the
/// normalised f32 value and the output in `p`; in half precision also the f32 copy of the
/// input and the half-precision cast of the normalised value. A cast to the dtype a tensor
/// already has is free.
fn norm_bytes(p: u64) -> u64 {
    match p {
        4 => 8,
        _ => 8 + 2 * p,
    }
}

/// Activation bytes a training forward keeps for its backward, per token of one layer,
/// counted from `src/model/decoder.rs` (`p` = precision bytes):
/// - the layer's input and the residual sum after attention: `2 H p`;
/// - two RMSNorms, [`norm_bytes`] each per feature;
/// - the rotated query, regrouped for the grouped-query product (a copy), and the attention
///   output regrouped for `o_proj` (a copy): `2 Q p`; the rotated keys and the values: `2 K p`;
/// - SwiGLU: the gate projection (kept by SiLU), its SiLU, the up projection and their
///   product (kept by `down_proj`): `4 I p`.
///
/// Measured on the CPU in f32 (`cft bench memory`): 11.0 KiB a token and layer for the toy
/// model against 11.0 KiB counted.
pub fn layer_bytes_per_token(shape: &ModelShape, p: u64) -> u64 {
    let (h, q, kv, i) = (
        shape.hidden,
        shape.q_dim(),
        shape.kv_dim(),
        shape.intermediate,
    );
    (2 * h + 2 * q + 2 * kv + 4 * i) * p + 2 * norm_bytes(p) * h
}

/// Bytes kept per attention score (one head, one query, one key): the attention
/// materialises `[b, heads, t, t]` scores (`Attention::forward`, step 6; there is no fused
/// kernel). Of the f32 chain `scores + bias → − max → clamp → exp → / sum` the clamp's input
/// and `exp`'s output are kept (f32 each), and the probabilities the value product reads
/// (`p`).
pub fn score_bytes(p: u64) -> u64 {
    8 + p
}

/// Per score, what the layer being computed holds beyond [`score_bytes`]: one more f32 copy
/// (the chain's steps free their input as they go), two in half precision (the cast).
pub fn score_transient_bytes(p: u64) -> u64 {
    match p {
        4 => 4,
        _ => 8,
    }
}

/// Per logit (`[b, t, vocab]`): the f32 logits (`CausalLm::logits`, plus the head's output
/// in `p` when it is not f32), `log_softmax`'s kept exponentials and output, and the f32
/// gradient of the logits, which the backward creates while every activation is still held.
pub fn logit_bytes(p: u64) -> u64 {
    match p {
        4 => 16,
        _ => 16 + p,
    }
}

/// The backend's own working memory beside the tensors (thread pools, allocator arenas):
/// what the toy model's measurements leave unexplained, 10-25 MiB.
pub const RUNTIME_BYTES: u64 = 16 << 20;

/// The largest parameter tensor: the embedding (or `lm_head`), else an MLP projection.
fn largest_param(shape: &ModelShape) -> u64 {
    (shape.vocab * shape.hidden).max(shape.intermediate * shape.hidden)
}

/// A training stage's memory per device: the largest of three moments of an optimiser step
/// (`Trainer::step`, src/train/trainer.rs):
/// 1. **backward**: the start of the backward pass, when every activation is held, the
///    logits' gradient is created and the head's weight gradient with it; the f32 gradient
///    sums of earlier micro-batches when a step accumulates several;
/// 2. **gradients**: a micro-batch's gradients (in the parameter dtype) being added into the
///    f32 sums (`accumulate_grads`, src/train/params.rs) — with f32 gradients and one
///    micro-batch a step the sum is the gradient's own buffer;
/// 3. **optimiser step**: Adam (src/train/optim.rs) updates one parameter at a time, with f32
///    temporaries of its size; each updated parameter takes the place of its gradient sum,
///    which is freed (measured: 2,320 MiB for the 135M model against 2,284 counted).
///
/// Held throughout: the weights in `p`, Adam's m and v (f32) and, for half-precision
/// parameters, their f32 master copies; under `offload` those three live in host memory
/// instead (with one parameter's f32 gradient and new value in flight), under `zero1` each
/// GPU holds 1/G of them and of the gradient sums, and a micro-batch's whole gradients in
/// their dtype until they reach their owners.
pub fn train(shape: &ModelShape, w: &TrainWork) -> Estimate {
    let p = w.precision.bytes();
    let all = shape.params();
    // Trainable parameters and the dtype of their gradients: LoRA's adapters stay f32.
    let (trainable, grad_bytes) = match &w.lora {
        None => (all, p),
        Some((rank, targets)) => (lora_params(shape, *rank, targets), 4),
    };
    let half = grad_bytes != 4;
    let (b, t) = (w.micro_batch, w.tokens);
    let term = |name, bytes| Term { name, bytes };

    let weights = term("weights", all * p);
    let optimiser_bytes = trainable * 4 * if half { 3 } else { 2 };
    let (optimiser, host) = match w.strategy {
        Strategy::Single => (optimiser_bytes, Vec::new()),
        Strategy::Zero1 { gpus } => (optimiser_bytes.div_ceil(gpus.max(1)), Vec::new()),
        // `HostAdam` (src/train/optim.rs): master copies of every trainable parameter (f32
        // ones too) and both moments, plus one parameter's f32 gradient and new value in flight.
        Strategy::Offload => (
            0,
            vec![
                term("Adam m, v, f32 master", trainable * 4 * 3),
                term(
                    "update temporaries",
                    2 * 4 * largest_param(shape).min(trainable),
                ),
            ],
        ),
    };
    let optimiser = term("Adam m, v (+ f32 master)", optimiser);
    // The f32 gradient sums: on the device under `single` and `offload`; under `zero1` each
    // rank sums the parameters it owns (src/train/zero.rs).
    let sums = match w.strategy {
        Strategy::Zero1 { gpus } => (trainable * 4).div_ceil(gpus.max(1)),
        _ => trainable * 4,
    };
    let separate_micro = half || w.accumulation > 1 || matches!(w.strategy, Strategy::Zero1 { .. });
    let tokens = b * t;
    let activations = shape.layers * tokens * layer_bytes_per_token(shape, p)
        + shape.layers * b * shape.heads * t * t * score_bytes(p)
        + b * shape.heads * t * t * score_transient_bytes(p);
    let head_grad = match &w.lora {
        None => shape.vocab * shape.hidden * grad_bytes,
        Some(_) => 0,
    };

    let mut backward = vec![
        weights.clone(),
        optimiser.clone(),
        term("activations", activations),
        term(
            "logits, their gradient",
            tokens * shape.vocab * logit_bytes(p) + head_grad,
        ),
    ];
    if w.accumulation > 1 {
        backward.push(term("gradient sums", sums));
    }
    let mut gradients = vec![
        weights.clone(),
        optimiser.clone(),
        term("gradient sums", sums),
    ];
    if separate_micro {
        gradients.push(term("micro-batch gradients", trainable * grad_bytes));
    }
    let step = vec![
        weights,
        optimiser,
        term("gradient sums", sums),
        term(
            "update temporaries",
            2 * 4 * largest_param(shape).min(trainable),
        ),
    ];
    let (phase, mut device) = [
        ("backward", backward),
        ("gradients", gradients),
        ("optimiser step", step),
    ]
    .into_iter()
    .max_by_key(|(_, terms)| terms.iter().map(|t| t.bytes).sum::<u64>())
    .unwrap_or(("backward", Vec::new()));
    device.push(term("runtime", RUNTIME_BYTES));
    Estimate {
        device,
        host,
        load: 0,
        phase,
    }
}

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

/// What one generating stage runs (`src/generate/engine.rs` and the stage's batch sizes).
#[derive(Clone, Debug)]
pub struct GenerateWork {
    /// The dtype the weights are held in.
    pub dtype: Dtype,
    /// Rows decoded together, over all engines of the stage.
    pub rows: u64,
    /// Prompt (or kept prefix) tokens of a row.
    pub prompt: u64,
    /// New tokens a row may generate.
    pub new_tokens: u64,
    /// Sequences the stage runs whole through [`crate::generate::encode`] (each `prompt +
    /// new_tokens` long): the rollout chunk's `[Q, y]`, whose states the branches start
    /// from, or an eval batch's greedy responses, for their entropy; 0 for none.
    pub encoded: u64,
    /// Whether the encoded sequences are held while the rows decode (rollout) or encoded
    /// after them (eval).
    pub encoded_while_decoding: bool,
}

/// Rows prefilled in one forward pass (`EngineOptions::prefill_rows`).
pub const PREFILL_ROWS: u64 = 16;

/// The KV cache of `rows` rows of `columns` tokens: `2 × layers × kv_heads × head_dim ×
/// bytes` per token.
pub fn kv_bytes(shape: &ModelShape, dtype: Dtype, rows: u64, columns: u64) -> u64 {
    rows * columns * shape.layers * shape.kv_values_per_token_layer() * dtype.bytes()
}

/// A KV buffer's columns once `columns` tokens are cached: it grows by a quarter of its
/// length, at least 64 columns, when full (`LayerKv::append`).
fn kv_capacity(columns: u64) -> u64 {
    columns + (columns / 4).max(64)
}

/// One forward pass of `rows` sequences of `t` new tokens without autodiff, where only the
/// layer being computed holds its values: about half of what a training layer keeps (its
/// projections are consumed as it goes) and its f32 attention scores over `keys` columns,
/// `rows × heads × t × keys` (measured on the toy model: an 8 × 256 prefill peaks 18.5 MiB
/// above the weights and cache, 19.3 MiB by this count).
fn forward_bytes(shape: &ModelShape, d: u64, rows: u64, t: u64, keys: u64) -> u64 {
    rows * t * layer_bytes_per_token(shape, d) / 2 + rows * shape.heads * t * keys * 4
}

/// A generating stage's device memory at its peak: **decoding** (weights, the KV cache of
/// every row at full length, a prefill chunk of [`PREFILL_ROWS`] prompts, the step's f32
/// logits with their log-softmax and the rows read back for sampling), or, for the eval
/// stage, **encoding** the batch's greedy responses afterwards (their f32 logits
/// `[n, t, vocab]` and KV state, the forward pass, and one row's log-softmax,
/// probabilities and entropy in `score`).
pub fn generate(shape: &ModelShape, w: &GenerateWork) -> Estimate {
    let d = w.dtype;
    let columns = w.prompt + w.new_tokens;
    let term = |name, bytes| Term { name, bytes };
    let weights = term("weights", shape.params() * d.bytes());
    let encoded = vec![
        term(
            "encoded logits and KV",
            w.encoded * columns * shape.vocab * 4 + kv_bytes(shape, d, w.encoded, columns),
        ),
        term(
            "encoding pass, scores",
            forward_bytes(shape, d.bytes(), w.encoded, columns, columns)
                + columns * shape.vocab * 4 * 3,
        ),
    ];
    let mut decoding = vec![
        weights.clone(),
        term("KV cache", kv_bytes(shape, d, w.rows, kv_capacity(columns))),
        term(
            "logits, prefill",
            w.rows * shape.vocab * 4 * 3
                + forward_bytes(
                    shape,
                    d.bytes(),
                    PREFILL_ROWS.min(w.rows),
                    w.prompt,
                    w.prompt,
                ),
        ),
    ];
    if w.encoded > 0 && w.encoded_while_decoding {
        decoding.push(encoded[0].clone());
    }
    let mut encoding = vec![weights];
    encoding.extend(encoded);
    let sum = |terms: &[Term]| terms.iter().map(|t| t.bytes).sum::<u64>();
    let (phase, mut device) = match w.encoded > 0 && sum(&encoding) > sum(&decoding) {
        true => ("encoding", encoding),
        false => ("decoding", decoding),
    };
    device.push(term("runtime", RUNTIME_BYTES));
    Estimate {
        device,
        host: Vec::new(),
        load: 0,
        phase,
    }
}

/// `token-stats` (src/stages/token_stats.rs): one sequence of `t` tokens at a time, its
/// logits `[t, vocab]` f32 with the log-softmax, probabilities and entropy, and every
/// layer's attention probabilities `[heads, t, t]` in the model's dtype, all kept until the
/// means are taken.
pub fn token_stats(shape: &ModelShape, dtype: Dtype, t: u64) -> Estimate {
    let d = dtype.bytes();
    let term = |name, bytes| Term { name, bytes };
    Estimate {
        device: vec![
            term("weights", shape.params() * d),
            term(
                "attention of every layer",
                shape.layers * shape.heads * t * t * d + forward_bytes(shape, d, 1, t, t),
            ),
            term("logits and log-softmax", t * shape.vocab * 4 * 4),
            term("runtime", RUNTIME_BYTES),
        ],
        host: Vec::new(),
        load: 0,
        phase: "forward",
    }
}

/// The most rows a generating stage can decode together in `free` bytes of device memory
/// (measured after its weights loaded), by [`generate`]'s estimate without the weights: a
/// multiple of `step` (the stage's saved chunk, so items keep their boundaries), at least
/// `step`, at most `cap`. A tenth of `free` is left to the allocator.
pub fn rows_within(shape: &ModelShape, work: &GenerateWork, free: u64, step: u64, cap: u64) -> u64 {
    let weights = shape.params() * work.dtype.bytes();
    let budget = free - free / 10;
    let fits = |rows: u64| {
        let w = GenerateWork {
            rows,
            ..work.clone()
        };
        generate(shape, &w).device_peak().saturating_sub(weights) <= budget
    };
    let step = step.max(1);
    let mut rows = step;
    while rows + step <= cap.max(step) && fits(rows + step) {
        rows += step;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen2.5-7B in bf16 answering with 512 + 1024 tokens: the rows chosen fit the memory
    /// given, one more chunk of them would not, and the floor and the cap hold.
    #[test]
    fn rows_within_fill_the_free_memory_in_chunks() {
        let Some((_, shape)) = ModelShape::builtin(std::path::Path::new("Qwen2.5-7B")) else {
            panic!("no built-in Qwen2.5-7B");
        };
        let work = GenerateWork {
            dtype: Dtype::Bf16,
            rows: 64,
            prompt: 512,
            new_tokens: 1024,
            encoded: 0,
            encoded_while_decoding: false,
        };
        let weights = shape.params() * 2;
        let free: u64 = 60 << 30;
        let rows = rows_within(&shape, &work, free, 64, 4096);
        assert!(rows > 64 && rows.is_multiple_of(64), "{rows}");
        let need = |rows| {
            let w = GenerateWork {
                rows,
                ..work.clone()
            };
            generate(&shape, &w).device_peak() - weights
        };
        assert!(need(rows) <= free - free / 10);
        assert!(need(rows + 64) > free - free / 10);
        assert_eq!(
            rows_within(&shape, &work, 1 << 20, 64, 4096),
            64,
            "never below a chunk"
        );
        assert_eq!(
            rows_within(&shape, &work, free, 64, 128),
            128,
            "never above the cap"
        );
    }
}
