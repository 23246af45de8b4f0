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

/// Activation bytes a training forward keeps for its backward, per token of one layer,
/// counted from `src/model/decoder.rs` (`p` = precision bytes; norms and softmax in f32):
/// - two RMSNorms, each keeping its f32 input, the normalised f32 value and its output in
///   `p`: `2 (8 + p) H`;
/// - q, k, v projections `(Q + 2K) p`, RoPE's rotated halves and products `2 (Q + K) p`,
///   the regrouped query `Q p`, the attention output and its regrouping `2 Q p`;
/// - `o_proj`, `down_proj` outputs and the two residual sums: `4 H p`;
/// - SwiGLU: gate, its SiLU, up and the product: `4 I p`.
pub fn layer_bytes_per_token(shape: &ModelShape, p: u64) -> u64 {
    let (h, q, kv, i) = (
        shape.hidden,
        shape.q_dim(),
        shape.kv_dim(),
        shape.intermediate,
    );
    2 * (8 + p) * h + (q + 2 * kv) * p + 2 * (q + kv) * p + 3 * q * p + 4 * h * p + 4 * i * p
}

/// Bytes kept per attention score (one head, one query, one key): the attention
/// materialises `[b, heads, t, t]` scores (`Attention::forward`, step 6). The f32 chain
/// `scores + bias → − max → clamp → exp → / sum` keeps the clamp's input and `exp`'s output
/// (f32 each) and the probabilities the value product reads (`p`).
pub fn score_bytes(p: u64) -> u64 {
    8 + p
}

/// The transient of the one layer whose attention is being computed: the scores in `p`, the
/// f32 cast, the biased, shifted and exponentiated copies, and the probabilities: `2p + 16`
/// per score beyond what [`score_bytes`] keeps.
pub fn score_transient_bytes(p: u64) -> u64 {
    2 * p + 16
}

/// Logits `[b, t, vocab]` and the loss (`CausalLm::logits`, `target_log_probs`): the head's
/// output in `p`, its f32 cast, `log_softmax`'s shifted, exponentiated and final f32 copies;
/// in the backward their gradient in f32 and `p`.
pub fn logit_bytes(p: u64) -> u64 {
    p + 4 * 4 + 4 + p
}

/// A training stage's memory per device.
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

    let mut device = vec![Term {
        name: "weights",
        bytes: all * p,
    }];
    // `accumulate_grads` (src/train/params.rs) sums each micro-batch's gradients in f32; with
    // f32 gradients and one micro-batch a step the sum is the gradient's own buffer.
    let separate_micro = half || w.accumulation > 1;
    let micro_grads = Term {
        name: "micro-batch gradients",
        bytes: trainable * grad_bytes,
    };
    // Adam's m and v (f32) and, for half-precision parameters, f32 master copies
    // (`AdamState`, src/train/optim.rs).
    let optimiser = trainable * 4 * if half { 3 } else { 2 };
    let mut host = Vec::new();
    match w.strategy {
        Strategy::Single | Strategy::Zero1 { .. } => {
            device.push(Term {
                name: "gradient sums (f32)",
                bytes: trainable * 4,
            });
            if separate_micro {
                device.push(micro_grads);
            }
            let shards = match w.strategy {
                Strategy::Zero1 { gpus } => gpus.max(1),
                _ => 1,
            };
            device.push(Term {
                name: "Adam m, v (+ f32 master)",
                bytes: optimiser.div_ceil(shards),
            });
        }
        Strategy::Offload => {
            device.push(Term {
                name: "gradients",
                bytes: trainable * grad_bytes,
            });
            host.push(Term {
                name: "Adam m, v, f32 master, f32 gradient",
                bytes: trainable * 4 * 4,
            });
        }
    }
    let tokens = b * t;
    device.push(Term {
        name: "activations (layers)",
        bytes: shape.layers * tokens * layer_bytes_per_token(shape, p)
            + shape.layers * b * shape.heads * t * t * score_bytes(p)
            + b * shape.heads * t * t * score_transient_bytes(p),
    });
    device.push(Term {
        name: "logits and loss",
        bytes: tokens * shape.vocab * logit_bytes(p),
    });
    Estimate {
        device,
        host,
        load: 0,
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
    /// Sequences the stage runs whole through [`crate::generate::encode`] and keeps
    /// (rollout: the chunk's `[Q, y]`; eval: the batch's greedy responses for their
    /// entropy), each `prompt + new_tokens` long; 0 for none.
    pub encoded: u64,
}

/// Rows prefilled in one forward pass (`EngineOptions::prefill_rows`).
pub const PREFILL_ROWS: u64 = 16;

/// KV buffers grow by a quarter of their length (at least 64 columns) when full
/// (`LayerKv::append`), and a batch change copies them: 1.5 × the filled columns.
const KV_SLACK_NUM: u64 = 3;
const KV_SLACK_DEN: u64 = 2;

/// The KV cache of `rows` rows of `columns` tokens: `2 × layers × kv_heads × head_dim ×
/// bytes` per token.
pub fn kv_bytes(shape: &ModelShape, dtype: Dtype, rows: u64, columns: u64) -> u64 {
    rows * columns * shape.layers * shape.kv_values_per_token_layer() * dtype.bytes()
}

/// One prefill of `rows` sequences of `t` tokens (no autodiff, so nothing is kept across
/// layers): a layer's hidden-sized working set and the f32 attention-score chain of one
/// layer, `rows × heads × t × t`.
fn prefill_bytes(shape: &ModelShape, d: u64, rows: u64, t: u64) -> u64 {
    rows * t * layer_bytes_per_token(shape, d)
        + rows * shape.heads * t * t * (score_bytes(d) + score_transient_bytes(d))
}

/// A generating stage's device memory at its peak.
pub fn generate(shape: &ModelShape, w: &GenerateWork) -> Estimate {
    let d = w.dtype;
    let columns = w.prompt + w.new_tokens;
    let mut device = vec![Term {
        name: "weights",
        bytes: shape.params() * d.bytes(),
    }];
    device.push(Term {
        name: "KV cache",
        bytes: kv_bytes(shape, d, w.rows, columns) * KV_SLACK_NUM / KV_SLACK_DEN,
    });
    // Each step: the next-token logits in f32, their log-softmax and the row read back for
    // sampling.
    let step = w.rows * shape.vocab * 4 * 3;
    let prefill = prefill_bytes(shape, d.bytes(), PREFILL_ROWS.min(w.rows), w.prompt);
    device.push(Term {
        name: "logits, prefill",
        bytes: step + prefill,
    });
    if w.encoded > 0 {
        // `encode` keeps the logits `[n, t, vocab]` (f32) and the KV state of every
        // sequence; `score` takes one row's log-softmax, probabilities and entropy.
        device.push(Term {
            name: "encoded sequences",
            bytes: w.encoded * columns * shape.vocab * 4
                + kv_bytes(shape, d, w.encoded, columns)
                + columns * shape.vocab * 4 * 3
                + prefill_bytes(shape, d.bytes(), w.encoded, columns),
        });
    }
    Estimate {
        device,
        host: Vec::new(),
        load: 0,
    }
}

/// `token-stats` (src/stages/token_stats.rs): one sequence of `t` tokens at a time, its
/// logits `[t, vocab]` f32 with the log-softmax and entropy, and every layer's attention
/// probabilities `[heads, t, t]` in the model's dtype, all kept until the means are taken.
pub fn token_stats(shape: &ModelShape, dtype: Dtype, t: u64) -> Estimate {
    let d = dtype.bytes();
    Estimate {
        device: vec![
            Term {
                name: "weights",
                bytes: shape.params() * d,
            },
            Term {
                name: "attention of every layer",
                bytes: shape.layers * shape.heads * t * t * d + prefill_bytes(shape, d, 1, t),
            },
            Term {
                name: "logits and log-softmax",
                bytes: t * shape.vocab * 4 * 4,
            },
        ],
        host: Vec::new(),
        load: 0,
    }
}
