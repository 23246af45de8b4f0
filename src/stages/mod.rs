//! Stage implementations: one file per kind. Each says what it reads, what it writes and how
//! it resumes; the executor (`exec`) calls them through [`crate::exec::StageImpl`].

pub mod benchmark;
mod context;
pub mod dataset;
pub mod pretrain;
pub mod train;

pub use context::{Output, Progress, StageCtx, StageError, StageImpl, StageOutput};

use crate::exec::Registry;

/// The version of each kind's meaning; bump it in the stage's file when its output would
/// change for the same params and inputs, so old cache entries stop matching.
pub fn version(kind: &str) -> u32 {
    match kind {
        "dataset" => dataset::VERSION,
        "train" => train::VERSION,
        "pretrain" => pretrain::VERSION,
        _ => 1,
    }
}

/// Every stage kind this build can run.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register("dataset", dataset::Dataset);
    r.register("train", train::Train);
    r.register("pretrain", pretrain::Pretrain);
    r
}
