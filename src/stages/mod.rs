//! Stage implementations: one file per kind. Each says what it reads, what it writes and how
//! it resumes; the executor (`exec`) calls them through [`crate::exec::StageImpl`].

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

pub use context::{Output, Progress, StageCtx, StageError, StageImpl, StageOutput};
pub use device::Device;

use crate::exec::Registry;

/// The version of each kind's meaning; bump it in the stage's file when its output would
/// change for the same params and inputs, so old cache entries stop matching.
pub fn version(kind: &str) -> u32 {
    match kind {
        "dataset" => dataset::VERSION,
        "eval" => eval::VERSION,
        "report" => report::VERSION,
        "greedy" => greedy::VERSION,
        "rollout" => rollout::VERSION,
        "criticality" => criticality::VERSION,
        "selection" => selection::VERSION,
        "token-stats" => token_stats::VERSION,
        "train" => train::VERSION,
        "pretrain" => pretrain::VERSION,
        _ => 1,
    }
}

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
