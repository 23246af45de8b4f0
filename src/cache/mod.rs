//! The cache: one sled database (stage records, small artifacts, in-stage progress, input
//! fingerprints, slots) and a `blobs/` folder for checkpoints (DESIGN.md, Cache).
//!
//! sled allows one process per database, and a run holds it for its whole length. Readers
//! (`cft plan`, `cft status`) that find the cache locked read `view.json` instead: a snapshot
//! of the small trees that the running process rewrites (atomically) whenever a stage changes
//! state, so they still see live progress.

mod blobs;
mod fingerprint;
mod lock;
mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use blobs::{BlobState, hash_bytes, hash_file};
pub use lock::{Owner, holder};
pub use record::{OutputRef, Record, RecordStatus};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cache database: {0}")]
    Db(#[from] sled::Error),
    #[error("{}", locked_message(root, owner))]
    Locked { root: PathBuf, owner: Option<Owner> },
    #[error("cache entry `{what}` is unreadable: {message}")]
    Corrupt { what: String, message: String },
    #[error("{0}")]
    Missing(String),
}

fn locked_message(root: &Path, owner: &Option<Owner>) -> String {
    match owner {
        Some(o) => format!(
            "the cache {} is in use by another cft process (pid {}, `{}`); wait for it or stop it first",
            root.display(),
            o.pid,
            o.command
        ),
        None => format!(
            "the cache {} is in use by another cft process",
            root.display()
        ),
    }
}

impl CacheError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What readers need from a cache, whether it is opened or seen through a snapshot.
pub trait Store {
    fn record(&self, key: &str) -> Result<Option<Record>, CacheError>;
    fn slot(&self, slot: &str) -> Result<Option<String>, CacheError>;
    fn blob_exists(&self, hash: &str) -> bool;
    /// Content fingerprint of a file or directory, `None` if it does not exist.
    fn fingerprint(&self, path: &Path) -> Result<Option<String>, CacheError>;
    fn records(&self) -> Result<Vec<Record>, CacheError>;
}

/// The cache opened for writing: holds the run lock for its lifetime.
pub struct Cache {
    root: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    artifacts: sled::Tree,
    progress: sled::Tree,
    fingerprints: sled::Tree,
    slots: sled::Tree,
    blobs: blobs::Blobs,
    last_snapshot: std::sync::Mutex<Option<std::time::Instant>>,
    _lock: lock::RunLock,
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`, refusing if another process has it.
    pub fn open(root: &Path, command: &str) -> Result<Cache, CacheError> {
        std::fs::create_dir_all(root).map_err(|e| CacheError::io(root, e))?;
        let lock = lock::RunLock::acquire(root, command)?;
        let db = sled::Config::new().path(root.join("db")).open()?;
        Ok(Cache {
            records: db.open_tree("records")?,
            artifacts: db.open_tree("artifacts")?,
            progress: db.open_tree("progress")?,
            fingerprints: db.open_tree("fingerprints")?,
            slots: db.open_tree("slots")?,
            blobs: blobs::Blobs::open(root.join("blobs"))?,
            root: root.to_path_buf(),
            db,
            last_snapshot: std::sync::Mutex::new(None),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &blobs::Blobs {
        &self.blobs
    }

    /// Makes every write so far durable. Called after each saved item and each record, so a
    /// `kill -9` loses at most the item in flight.
    pub fn flush(&self) -> Result<(), CacheError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn put_record(&self, record: &Record) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(record).map_err(|e| CacheError::Corrupt {
            what: record.key.clone(),
            message: e.to_string(),
        })?;
        self.records.insert(record.key.as_bytes(), bytes)?;
        Ok(())
    }

    pub fn remove_record(&self, key: &str) -> Result<(), CacheError> {
        self.records.remove(key.as_bytes())?;
        Ok(())
    }

    pub fn set_slot(&self, slot: &str, key: &str) -> Result<(), CacheError> {
        self.slots.insert(slot.as_bytes(), key.as_bytes())?;
        Ok(())
    }

    /// Stores small bytes by content hash; returns the hash.
    pub fn put_artifact(&self, bytes: &[u8]) -> Result<String, CacheError> {
        let hash = hash_bytes(bytes);
        if !self.artifacts.contains_key(hash.as_bytes())? {
            self.artifacts.insert(hash.as_bytes(), bytes)?;
        }
        Ok(hash)
    }

    pub fn artifact(&self, hash: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.artifacts.get(hash.as_bytes())?.map(|v| v.to_vec()))
    }

    /// The bytes of a record's output `name`: a small artifact from the database, or the blob
    /// file. The one reader of outputs, for stages, reports and commands alike.
    pub fn output(&self, record: &Record, name: &str) -> Result<Vec<u8>, CacheError> {
        match record.outputs.get(name) {
            None => Err(CacheError::Missing(format!(
                "`{}` has no output `{name}`",
                record.label
            ))),
            Some(OutputRef::Artifact { hash, .. }) => self.artifact(hash)?.ok_or_else(|| {
                CacheError::Missing(format!(
                    "artifact {hash} of `{}` is missing from the cache; run `cft cache verify`",
                    record.label
                ))
            }),
            Some(OutputRef::Blob { hash, .. }) => {
                let path = self.blobs().path(hash);
                std::fs::read(&path).map_err(|source| CacheError::Io { path, source })
            }
        }
    }

    pub fn artifact_hashes(&self) -> Result<Vec<(String, u64)>, CacheError> {
        let mut out = Vec::new();
        for item in self.artifacts.iter() {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.len() as u64));
        }
        Ok(out)
    }

    pub fn remove_artifact(&self, hash: &str) -> Result<(), CacheError> {
        self.artifacts.remove(hash.as_bytes())?;
        Ok(())
    }

    /// The model directory a checkpoint record describes. A stage that produces a model names
    /// its outputs `model/<file>` (HF layout: `config.json`, `model.safetensors`,
    /// `tokenizer.json`, ...); they are linked under `<cache>/models/<key>/` with those names,
    /// so a checkpoint loads exactly like a downloaded model. Blobs are immutable, so hard
    /// links are safe; idempotent.
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
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| CacheError::io(parent, e))?;
            }
            match out {
                OutputRef::Blob { hash, .. } => {
                    let blob = self.blobs.path(hash);
                    if std::fs::hard_link(&blob, &target).is_err() {
                        std::fs::copy(&blob, &target).map_err(|e| CacheError::io(&target, e))?;
                    }
                }
                OutputRef::Artifact { hash, .. } => {
                    let bytes = self.artifact(hash)?.ok_or_else(|| CacheError::Corrupt {
                        what: format!("{} of `{}`", name, record.label),
                        message: "artifact missing".into(),
                    })?;
                    std::fs::write(&target, bytes).map_err(|e| CacheError::io(&target, e))?;
                }
            }
        }
        if !any {
            return Err(CacheError::Corrupt {
                what: record.label.clone(),
                message: "produced no model files".into(),
            });
        }
        Ok(dir)
    }

    /// A saved in-stage item (`stage key` + item name), if any.
    pub fn progress_get(&self, key: &str, item: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self
            .progress
            .get(progress_key(key, item))?
            .map(|v| v.to_vec()))
    }

    pub fn progress_put(&self, key: &str, item: &str, bytes: &[u8]) -> Result<(), CacheError> {
        self.progress.insert(progress_key(key, item), bytes)?;
        Ok(())
    }

    pub fn progress_count(&self, key: &str) -> usize {
        self.progress.scan_prefix(progress_key(key, "")).count()
    }

    /// Drops a finished stage's saved items.
    pub fn progress_clear(&self, key: &str) -> Result<(), CacheError> {
        let keys: Vec<sled::IVec> = self
            .progress
            .scan_prefix(progress_key(key, ""))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys {
            self.progress.remove(k)?;
        }
        Ok(())
    }

    /// Writes `view.json` unless one was written in the last second (the snapshot holds every
    /// record, so writing it on every change would make a long sweep quadratic).
    pub fn write_snapshot_soon(&self) -> Result<(), CacheError> {
        let due = self
            .last_snapshot
            .lock()
            .map(|t| t.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1)))
            .unwrap_or(true);
        if due { self.write_snapshot() } else { Ok(()) }
    }

    /// Writes `view.json` for readers while this process holds the database.
    pub fn write_snapshot(&self) -> Result<(), CacheError> {
        if let Ok(mut t) = self.last_snapshot.lock() {
            *t = Some(std::time::Instant::now());
        }
        let mut snap = Snapshot::default();
        for r in self.records()? {
            snap.records.insert(r.key.clone(), r);
        }
        for item in self.slots.iter() {
            let (k, v) = item?;
            snap.slots.insert(
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        for item in self.fingerprints.iter() {
            let (k, v) = item?;
            snap.fingerprints.insert(
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        let path = self.root.join("view.json");
        let tmp = self
            .root
            .join(format!("view.json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec(&snap).map_err(|e| CacheError::Corrupt {
            what: "view.json".into(),
            message: e.to_string(),
        })?;
        std::fs::write(&tmp, bytes).map_err(|e| CacheError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| CacheError::io(&path, e))
    }
}

fn progress_key(key: &str, item: &str) -> Vec<u8> {
    format!("{key}/{item}").into_bytes()
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Result<Record, CacheError> {
    serde_json::from_slice(bytes).map_err(|e| CacheError::Corrupt {
        what: String::from_utf8_lossy(key).into_owned(),
        message: e.to_string(),
    })
}

impl Store for Cache {
    fn record(&self, key: &str) -> Result<Option<Record>, CacheError> {
        match self.records.get(key.as_bytes())? {
            Some(bytes) => Ok(Some(decode_record(key.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    fn slot(&self, slot: &str) -> Result<Option<String>, CacheError> {
        Ok(self
            .slots
            .get(slot.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn blob_exists(&self, hash: &str) -> bool {
        self.blobs.exists(hash)
    }

    fn fingerprint(&self, path: &Path) -> Result<Option<String>, CacheError> {
        fingerprint::of_path(path, &mut |memo_key, compute| {
            if let Some(v) = self.fingerprints.get(memo_key.as_bytes())? {
                return Ok(String::from_utf8_lossy(&v).into_owned());
            }
            let value = compute()?;
            self.fingerprints
                .insert(memo_key.as_bytes(), value.as_bytes())?;
            Ok(value)
        })
    }

    fn records(&self) -> Result<Vec<Record>, CacheError> {
        self.records
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode_record(&k, &v)
            })
            .collect()
    }
}

/// A read-only picture of a cache: the snapshot a running process keeps, or nothing at all
/// for a cache that does not exist yet.
#[derive(Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub records: BTreeMap<String, Record>,
    pub slots: BTreeMap<String, String>,
    pub fingerprints: BTreeMap<String, String>,
    #[serde(skip)]
    blob_dir: Option<PathBuf>,
    /// The process that holds the cache, when this is its live view.
    #[serde(skip)]
    pub live: Option<Owner>,
}

impl Store for Snapshot {
    fn record(&self, key: &str) -> Result<Option<Record>, CacheError> {
        Ok(self.records.get(key).cloned())
    }

    fn slot(&self, slot: &str) -> Result<Option<String>, CacheError> {
        Ok(self.slots.get(slot).cloned())
    }

    fn blob_exists(&self, hash: &str) -> bool {
        self.blob_dir
            .as_ref()
            .is_some_and(|d| d.join(hash).is_file())
    }

    fn fingerprint(&self, path: &Path) -> Result<Option<String>, CacheError> {
        fingerprint::of_path(
            path,
            &mut |memo_key, compute| match self.fingerprints.get(memo_key) {
                Some(v) => Ok(v.clone()),
                None => compute(),
            },
        )
    }

    fn records(&self) -> Result<Vec<Record>, CacheError> {
        Ok(self.records.values().cloned().collect())
    }
}

/// A cache opened for reading: the database itself when no run holds it, else the live view.
pub enum View {
    Open(Cache),
    Snapshot(Snapshot),
}

impl View {
    pub fn open(root: &Path, command: &str) -> Result<View, CacheError> {
        if !root.join("db").exists() {
            return Ok(View::Snapshot(Snapshot::default()));
        }
        match Cache::open(root, command) {
            Ok(cache) => Ok(View::Open(cache)),
            Err(CacheError::Locked { owner, .. }) => {
                let path = root.join("view.json");
                let mut snap: Snapshot = match std::fs::read(&path) {
                    Ok(bytes) => {
                        serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
                            what: path.display().to_string(),
                            message: e.to_string(),
                        })?
                    }
                    Err(_) => Snapshot::default(),
                };
                snap.blob_dir = Some(root.join("blobs"));
                snap.live = owner;
                Ok(View::Snapshot(snap))
            }
            Err(e) => Err(e),
        }
    }

    pub fn store(&self) -> &dyn Store {
        match self {
            View::Open(c) => c,
            View::Snapshot(s) => s,
        }
    }

    pub fn live(&self) -> Option<&Owner> {
        match self {
            View::Snapshot(s) => s.live.as_ref(),
            View::Open(_) => None,
        }
    }
}
