//! `cft`: a declarative orchestrator for Critical Token Fine-tuning.
//!
//! The layers, top to bottom; each module uses only those after it (`tests/layering.rs`
//! checks every `crate::` path): `exec` → `stages` → `report` → `plan` → `cache` → `cft` →
//! `parity` → `generate` → `train` → `eval` → `toy` → `model` → `contract` → `manifest` → `rng`.
//! This is DESIGN.md's order as the code found it: the report stage builds a report, so
//! `report` sits below `stages`; `plan` and `stages` both read and write records, so `cache`
//! sits below them; `contract` (stage kinds, their versions, typed params and artifacts) sits
//! below everything that plans, runs or reports stages. The binary (`src/main.rs`,
//! `src/cli/`) sits on top and is the only place that prints or uses `anyhow`.

pub mod cache;
pub mod cft;
pub mod contract;
pub mod eval;
pub mod exec;
pub mod generate;
pub mod manifest;
pub mod model;
pub mod parity;
pub mod plan;
pub mod report;
pub mod rng;
pub mod stages;
pub mod toy;
pub mod train;
