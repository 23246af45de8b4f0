//! `cft`: a declarative orchestrator for Critical Token Fine-tuning.
//!
//! The layers follow `DESIGN.md`; each uses only those listed after it:
//! `exec` → `plan` → `cache` → `stages` → `cft` / `generate` / `train` / `eval` → `model`
//! → `manifest`. The binary (`src/main.rs`, `src/cli/`) is the only place that prints or
//! uses `anyhow`.

pub mod cache;
pub mod cft;
pub mod eval;
pub mod exec;
pub mod generate;
pub mod manifest;
pub mod model;
pub mod plan;
pub mod report;
pub mod rng;
pub mod stages;
pub mod toy;
pub mod train;
