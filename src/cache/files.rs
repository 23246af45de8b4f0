//! The cache as plain files: what a worker process sees. A worker never opens the database
//! (sled allows one process per database, and that is the coordinator); everything it reads
//! and writes is a file under the cache root:
//!
//! - `blobs/<hash>`: checkpoints and other large outputs, content-addressed.
//! - `artifacts/<hash>`: the file form of every small output. The database keeps the bytes
//!   too (it is the index the coordinator answers from); the file is what workers and the
//!   readers of a live run (`cft report` while `cft run` holds the database) read.
//! - `models/<key>/`: a checkpoint record's files linked under their HF names.
//! - `work/<key>/`: a stage in flight ([`super::work`]).
//!
//! Both stores are written under a temporary name and renamed to their hash, so two workers
//! writing the same bytes at once (every checkpoint's `tokenizer.json`) cannot tear them.

use std::path::{Path, PathBuf};

use super::blobs::Blobs;
use super::work::WorkDir;
use super::{CacheError, OutputRef, Record};

pub struct Files {
    root: PathBuf,
    blobs: Blobs,
    artifacts: Blobs,
}

impl Files {
    /// The file side of the cache at `root`, creating its folders.
    pub fn open(root: &Path) -> Result<Files, CacheError> {
        Ok(Files {
            blobs: Blobs::open(root.join("blobs"))?,
            artifacts: Blobs::open(root.join("artifacts"))?,
            root: root.to_path_buf(),
        })
    }

    /// The file side of the cache at `root` as it is, creating nothing (for readers).
    pub fn at(root: &Path) -> Files {
        Files {
            blobs: Blobs::at(root.join("blobs")),
            artifacts: Blobs::at(root.join("artifacts")),
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// The file form of small outputs.
    pub fn artifacts(&self) -> &Blobs {
        &self.artifacts
    }

    /// The folder of stage `key` while it is in flight.
    pub fn work(&self, key: &str) -> WorkDir {
        WorkDir::new(self.root.join("work").join(key))
    }

    /// Keys with a work folder: stages in flight, or left by a run that was cut off.
    pub fn work_keys(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.root.join("work")) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        keys.sort();
        keys
    }

    /// The bytes of a record's output `name`, from the files alone.
    pub fn output(&self, record: &Record, name: &str) -> Result<Vec<u8>, CacheError> {
        let path = match record.outputs.get(name) {
            None => {
                return Err(CacheError::Missing(format!(
                    "`{}` has no output `{name}`",
                    record.label
                )));
            }
            Some(OutputRef::Artifact { hash, .. }) => self.artifacts.path(hash),
            Some(OutputRef::Blob { hash, .. }) => self.blobs.path(hash),
        };
        std::fs::read(&path).map_err(|source| CacheError::Io { path, source })
    }

    /// The model directory a checkpoint record describes. A stage that produces a model names
    /// its outputs `model/<file>` (HF layout: `config.json`, `model.safetensors`,
    /// `tokenizer.json`, ...); they are linked under `<cache>/models/<key>/` with those names,
    /// so a checkpoint loads exactly like a downloaded model. Blobs are immutable, so hard
    /// links are safe; each link is made under a temporary name and renamed, so workers that
    /// materialise the same checkpoint at once never see a partial file. Idempotent.
    pub fn model_dir(&self, record: &Record) -> Result<PathBuf, CacheError> {
        let dir = self.root.join("models").join(&record.key);
        let mut any = false;
        for (name, out) in &record.outputs {
            let Some(rel) = name.strip_prefix("model/") else {
                continue;
            };
            any = true;
            let target = dir.join(rel);
            if target.exists() {
                continue;
            }
            let Some(parent) = target.parent() else {
                continue;
            };
            std::fs::create_dir_all(parent).map_err(|e| CacheError::io(parent, e))?;
            let source = match out {
                OutputRef::Blob { hash, .. } => self.blobs.path(hash),
                OutputRef::Artifact { hash, .. } => self.artifacts.path(hash),
            };
            if !source.is_file() {
                return Err(CacheError::Corrupt {
                    what: format!("{name} of `{}`", record.label),
                    message: format!("{} is missing", source.display()),
                });
            }
            let tmp = parent.join(format!(
                ".{}.tmp-{}",
                target
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                std::process::id()
            ));
            let _ = std::fs::remove_file(&tmp);
            if std::fs::hard_link(&source, &tmp).is_err() {
                std::fs::copy(&source, &tmp).map_err(|e| CacheError::io(&tmp, e))?;
            }
            std::fs::rename(&tmp, &target).map_err(|e| CacheError::io(&target, e))?;
        }
        if !any {
            return Err(CacheError::Corrupt {
                what: record.label.clone(),
                message: "produced no model files".into(),
            });
        }
        Ok(dir)
    }
}
