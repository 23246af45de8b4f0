//! Stage implementations: one file per kind. Each says what it reads, what it writes and how
//! it resumes; the executor (`exec`) calls them through [`StageImpl`].

pub mod annotate;
pub mod benchmark;
mod context;
pub mod criticality;
pub mod dataset;
mod device;
pub mod eval;
pub mod greedy;
pub mod grpo;
pub mod pretrain;
pub mod prompt;
pub mod report;
pub mod rollout;
pub mod sample;
pub mod score;
pub mod selection;
mod start;
pub mod token_stats;
pub mod train;
pub mod transfer;

pub use context::{Item, Output, Progress, Registry, StageCtx, StageError, StageImpl, StageOutput};
pub use device::{Device, Devices};

use crate::contract::Kind;

/// Every stage kind this build can run.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register(Kind::Dataset, dataset::Dataset);
    r.register(Kind::Eval, eval::Eval);
    r.register(Kind::Report, report::Report);
    r.register(Kind::Greedy, greedy::Greedy);
    r.register(Kind::Rollout, rollout::Rollout);
    r.register(Kind::Criticality, criticality::Criticality);
    r.register(Kind::Selection, selection::Selection);
    r.register(Kind::TokenStats, token_stats::TokenStats);
    r.register(Kind::Train, train::Train);
    r.register(Kind::Pretrain, pretrain::Pretrain);
    r.register(Kind::Grpo, grpo::Grpo);
    r.register(Kind::Sample, sample::Sample);
    r.register(Kind::Transfer, transfer::Transfer);
    r.register(Kind::Score, score::Score);
    r
}
