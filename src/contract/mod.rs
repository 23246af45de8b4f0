//! The contract between the planner, the stages and the reports: which kinds of stage exist,
//! the version of each kind's meaning, and the params each kind is keyed by.
//!
//! It sits below `plan`, `stages` and `report`, so none of them imports another to learn
//! what a stage is. The planner builds a params struct per stage and serialises it into the
//! canonical JSON that is hashed into the stage's key; the stage deserialises the same struct
//! ([`Params::from_params`]), where a missing or unknown field is an error naming the stage,
//! never a default. Adding a hyper-parameter therefore means: the manifest types, one params
//! struct here, and the code that uses it.

pub mod artifacts;
pub mod label;
pub mod params;
pub mod stage;

use std::fmt;
use std::str::FromStr;

pub use params::*;
pub use stage::{StageSpec, stage_key};

/// Whose fault a failed stage is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Something the user gave (a model directory, a data file, a manifest value) cannot be
    /// used as it is; they can fix it and run again.
    Input,
    /// A defect in cft, or a failure it did not foresee: worth a report.
    Defect,
}

/// The stage kinds of DESIGN.md's table; serialised by name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Dataset,
    Pretrain,
    Greedy,
    Rollout,
    Criticality,
    TokenStats,
    Selection,
    Train,
    Eval,
    Grpo,
    Report,
    Sample,
    Transfer,
    Score,
}

impl Kind {
    /// In pipeline order (how `cft plan` lists them).
    pub const ALL: [Kind; 14] = [
        Kind::Dataset,
        Kind::Pretrain,
        Kind::Greedy,
        Kind::Sample,
        Kind::Transfer,
        Kind::Rollout,
        Kind::Criticality,
        Kind::TokenStats,
        Kind::Selection,
        Kind::Score,
        Kind::Train,
        Kind::Eval,
        Kind::Grpo,
        Kind::Report,
    ];

    /// The name `cft plan --json` prints and stage keys hash.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Dataset => "dataset",
            Kind::Pretrain => "pretrain",
            Kind::Greedy => "greedy",
            Kind::Rollout => "rollout",
            Kind::Criticality => "criticality",
            Kind::TokenStats => "token-stats",
            Kind::Selection => "selection",
            Kind::Train => "train",
            Kind::Eval => "eval",
            Kind::Grpo => "grpo",
            Kind::Report => "report",
            Kind::Sample => "sample",
            Kind::Transfer => "transfer",
            Kind::Score => "score",
        }
    }

    /// Whether a stage of the kind loads a model, and so takes a device while it runs (the
    /// others are CPU work: reading data, counting, selecting, reporting).
    pub const fn uses_model(self) -> bool {
        matches!(
            self,
            Kind::Pretrain
                | Kind::Greedy
                | Kind::Rollout
                | Kind::TokenStats
                | Kind::Train
                | Kind::Eval
                | Kind::Grpo
                | Kind::Sample
                | Kind::Score
        )
    }

    /// Whether stages of the kind on the same model may share one worker that loads the model
    /// once (`exec` groups them; their keys and outputs do not change).
    pub const fn shares_model_loads(self) -> bool {
        matches!(
            self,
            Kind::Greedy | Kind::Rollout | Kind::TokenStats | Kind::Eval | Kind::Sample
        )
    }

    /// The version of the kind's meaning, hashed into every key of the kind. Bump it when the
    /// output would change for the same params and inputs, so old cache entries stop
    /// matching (and update `tests/fixtures/golden_keys.json` in the same commit).
    pub fn version(self) -> u32 {
        match self {
            // 2: the toy problems restate each event in their own words, values below 60.
            Kind::Dataset => 2,
            // 2: the loss on the solution tokens only, given the `plain` prompt.
            Kind::Pretrain => 2,
            // 2: responses end and are graded by `generate::Ending` (the text cut at the
            // stop string and stripped, graded by the training data's benchmark); y no longer
            // holds the end token.
            Kind::Greedy => 2,
            // 2: branches end by the greedy response's end rule and are graded on its cut
            // (the early stop at the first complete answer is gone; `early_stop = "answer"`
            // opts into the safe one).
            Kind::Rollout => 2,
            Kind::Criticality => 1,
            Kind::TokenStats => 1,
            // 2: `match_scope` (Entropy and Attention may match CFT's count over all of
            // D_correct); the unused `seed` left their params.
            Kind::Selection => 2,
            // 2: `precision` is honoured on every device (before, the CPU trained in f32
            // whatever it said), half-precision parameters update through f32 master copies,
            // bf16 checkpoints are stored bf16.
            Kind::Train => 2,
            // 2: responses end and are graded by `generate::Ending` (the graded text is
            // stripped, as the harness strips it; a stop string that is a special token ends
            // generation as a token).
            Kind::Eval => 2,
            Kind::Grpo => 1,
            // 2: tokens trained on are a share of the response tokens (they were a share of
            // every token of the batches, prompts included), Table 4's Avg tokens averages the
            // correct responses.
            Kind::Report => 2,
            Kind::Sample => 1,
            Kind::Transfer => 1,
            Kind::Score => 1,
        }
    }
}

impl PartialEq<&str> for Kind {
    fn eq(&self, name: &&str) -> bool {
        self.name() == *name
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown stage kind `{0}`")]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownKind(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(k.name().parse(), Ok(k));
        }
        assert!("rollouts".parse::<Kind>().is_err());
    }
}
