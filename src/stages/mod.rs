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
pub mod pretrain;
pub mod prompt;
pub mod report;
pub mod rollout;
pub mod selection;
pub mod token_stats;
pub mod train;

pub use context::{Item, Output, Progress, Registry, StageCtx, StageError, StageImpl, StageOutput};
pub use device::Device;

/// Every stage kind this build can run.
pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.register("dataset", dataset::Dataset);
    r.register("eval", eval::Eval);
    r.register("report", report::Report);
    r.register("greedy", greedy::Greedy);
    r.register("rollout", rollout::Rollout);
    r.register("criticality", criticality::Criticality);
    r.register("selection", selection::Selection);
    r.register("token-stats", token_stats::TokenStats);
    r.register("train", train::Train);
    r.register("pretrain", pretrain::Pretrain);
    r
}
