//! `train`: the per-token objectives of the paper (Eq. 1, 8, 9 and DFT), AdamW with PyTorch's
//! semantics, warmup + decay schedules, LoRA, and HF-format checkpoints.
//!
//! The optimiser and the gradient bookkeeping are ours rather than burn's `OptimizerAdaptor`:
//! their state is keyed by the parameter's checkpoint name (`model.layers.0.mlp.up_proj.weight`)
//! instead of a random `ParamId`, so a run saved mid-way and reloaded from its own weights
//! resumes bit for bit, and the state file is a plain safetensors file a person can inspect.

pub mod checkpoint;
pub mod data;
pub mod grpo;
pub mod lora;
pub mod objective;
pub mod optim;
pub mod params;
pub mod schedule;
pub mod scratch;
pub mod state;
pub mod trainer;
pub mod zero;

pub use data::{EndOfSequence, LastBatch};
pub use objective::{Normalization, Objective};
pub use schedule::Schedule;
pub use trainer::{StepMetrics, StepTimings, Strategy, TrainSettings, Trainer, pass_seconds};

use std::path::PathBuf;

/// Errors of the training side. Each names the example, file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    #[error(
        "weights of example idx {idx}: {weights} weights for {tokens} response tokens \
         (the weights were computed with another tokenizer or response)"
    )]
    WeightLength {
        idx: u64,
        weights: usize,
        tokens: usize,
    },
    #[error("example idx {0} has no weights line")]
    MissingWeights(u64),
    #[error("invalid setting {name}: {message}")]
    Setting { name: String, message: String },
    #[error("training state: {0}")]
    State(String),
    #[error("no training examples")]
    Empty,
}
