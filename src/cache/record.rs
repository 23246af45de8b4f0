//! A stage record: what the cache knows about one stage key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordStatus {
    /// A process is (or was, if it died) running the stage; its saved items survive.
    Running,
    /// Stopped by Ctrl-C after flushing; resumes from its saved items.
    Interrupted,
    Failed,
    Done,
}

/// Where an output's bytes live: small ones in the `artifacts` tree, checkpoints in `blobs/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum OutputRef {
    Artifact { hash: String, size: u64 },
    Blob { hash: String, size: u64 },
}

impl OutputRef {
    pub fn hash(&self) -> &str {
        match self {
            OutputRef::Artifact { hash, .. } | OutputRef::Blob { hash, .. } => hash,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    pub kind: String,
    pub version: u32,
    pub label: String,
    /// The stage's role in its experiment (`table2/train qwen2.5-7b strict3 bs16-lr2e-6`):
    /// the last key that filled a slot explains why a new key is stale.
    pub slot: String,
    pub params: serde_json::Value,
    pub inputs: Vec<String>,
    pub status: RecordStatus,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputRef>,
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Items done and total, when the stage reports them.
    #[serde(default)]
    pub progress: Option<(u64, u64)>,
    #[serde(default)]
    pub error: Option<String>,
    /// Whose fault the error is (absent in records of earlier builds).
    #[serde(default)]
    pub fault: Option<crate::contract::Fault>,
    /// The worker process running (or that ran) the stage, its machine and its device.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    /// The CPU kernels of the build that ran it (`model::kernels::KERNELS`; absent in records
    /// of earlier builds, which chose AVX-512 where the CPU had it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    /// The Slurm job running the stage, and its state when the coordinator last looked.
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub job_state: Option<String>,
    /// When the stage's attempt started, in seconds since the Unix epoch (records of earlier
    /// builds: when it ended); with `elapsed_s`, when it ended. Timings live here, never in
    /// keys.
    #[serde(default)]
    pub started_at: u64,
    #[serde(default)]
    pub elapsed_s: f64,
}
