//! `generate`: the batched decoding engine.
//!
//! - [`Engine`] decodes many [`Request`]s with continuous batching (left-aligned KV state,
//!   per-row positions, one host synchronisation per step), greedily or by seeded sampling,
//!   reporting each token's log-prob and, per step, the top-k alternatives.
//! - [`encode`] runs known sequences once; [`SequenceState::prefix`] then gives the state of
//!   any prefix without recomputation, so a counterfactual branch `[Q, y_<t, alternative]` is a
//!   `Request { prefix: Some(encoded.state.prefix(len(Q) + t)), tokens: vec![alternative], .. }`
//!   that ends by the same rule as the response it perturbs ([`Ending`]).
//! - [`naive::greedy`] is the reference path (one sequence, full recomputation, no cache)
//!   that the engine is tested against and benchmarked with.
//!
//! The KV cache lives here, not in the model module, so the same module trains.

mod choose;
pub mod draft;
pub mod encode;
pub mod ending;
pub mod engine;
pub mod naive;
pub mod sampling;
pub mod state;
pub mod topk;

pub use draft::DraftStats;
pub use encode::{Encoded, PositionScore, encode, score};
pub use ending::Ending;
pub use engine::{
    Completion, Engine, EngineOptions, FinishReason, Request, StopPredicate, finish_reason,
};
pub use sampling::Decoding;
pub use state::SequenceState;

/// Rows the generating stages decode together, here so that the memory model
/// (`plan::resources`) reads the numbers the stages use.
pub mod rows {
    /// The engine's default batch (`EngineOptions::default`), which `eval` uses.
    pub const ENGINE: usize = 64;
    /// `greedy`: questions per saved chunk, all decoded together.
    pub const GREEDY: usize = 64;
    /// `eval`: questions per saved batch; each brings its greedy request and its samples.
    pub const EVAL_QUESTIONS: usize = 16;
    /// `rollout`: examples per saved chunk, each run whole through `encode` once.
    pub const ROLLOUT_CHUNK: usize = 8;
    /// `rollout`: rows one engine decodes together on the CPU (one engine per core). Per
    /// row, a step of a small model costs more in wider batches there (host bookkeeping and
    /// attention over the widest row grow with it): `cft bench annotate` on the quickstart's
    /// model took 1.30 s at 32 rows, 1.42 s at 16, 1.58 s at 64, 1.98 s at 128.
    pub const ROLLOUT_CPU: usize = 32;
    /// `rollout`: rows decoded together on a GPU, where wider batches make decoding cheap.
    pub const ROLLOUT_GPU: usize = 64;
    /// `rollout` on a GPU: at most this many rows, as many as its free memory holds, in
    /// multiples of [`ROLLOUT_GPU`].
    pub const ROLLOUT_GPU_MAX: usize = 1024;
    /// `greedy` on a GPU: at most this many rows, as many as its free memory holds
    /// (`plan::resources::memory::rows_within`), in whole chunks of [`GREEDY`].
    pub const GREEDY_GPU_MAX: usize = 1024;
}

use burn::prelude::{Backend, TensorData};
use burn::tensor::Transaction;

/// Every request non-empty and inside the vocabulary: a bad id would otherwise fail deep in
/// the backend's gather.
fn check_tokens<'a>(
    requests: impl IntoIterator<Item = &'a [u32]>,
    vocab: usize,
) -> Result<(), GenerateError> {
    for (request, tokens) in requests.into_iter().enumerate() {
        if tokens.is_empty() {
            return Err(GenerateError::EmptyRequest(request));
        }
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(GenerateError::TokenOutOfRange {
                request,
                token,
                vocab,
            });
        }
    }
    Ok(())
}

/// The tensors of one [`Transaction`], read back in one host synchronisation, in the order
/// they were registered. Reading past the end is an error, not a panic.
struct ReadBack(std::vec::IntoIter<TensorData>);

impl ReadBack {
    fn execute<B: Backend>(tx: Transaction<B>) -> Result<Self, GenerateError> {
        let data = tx
            .try_execute()
            .map_err(|e| GenerateError::Device(format!("{e:?}")))?;
        Ok(Self(data.into_iter()))
    }

    fn next(&mut self) -> Result<TensorData, GenerateError> {
        self.0
            .next()
            .ok_or_else(|| GenerateError::Device("short read".into()))
    }

    fn f32s(&mut self) -> Result<Vec<f32>, GenerateError> {
        Ok(self.next()?.iter::<f32>().collect())
    }

    fn i64s(&mut self) -> Result<Vec<i64>, GenerateError> {
        Ok(self.next()?.iter::<i64>().collect())
    }

    /// A top-k pair (probabilities, then ids) registered only when `k > 0`: empty otherwise.
    fn top(&mut self, k: usize) -> Result<(Vec<f32>, Vec<i64>), GenerateError> {
        match k {
            0 => Ok((Vec::new(), Vec::new())),
            _ => Ok((self.f32s()?, self.i64s()?)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("request {0} has no tokens to feed")]
    EmptyRequest(usize),
    #[error("request {request}: token id {token} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange {
        request: usize,
        token: u32,
        vocab: usize,
    },
    #[error("{tokens} tokens given for logits of {positions} positions")]
    LengthMismatch { tokens: usize, positions: usize },
    #[error("invalid decoding settings: {0}")]
    InvalidDecoding(String),
    #[error("reading results from the device failed: {0}")]
    Device(String),
}
