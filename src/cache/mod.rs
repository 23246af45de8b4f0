//! The cache: one sled database (stage records, small artifacts, in-stage progress, input
//! fingerprints, slots) and a `blobs/` folder for checkpoints (DESIGN.md, Cache).
//!
//! sled allows one process per database, and a run holds it for its whole length. Readers
//! (`cft plan`, `cft status`) that find the cache locked read `view.json` instead: a snapshot
//! of the small trees that the running process rewrites (atomically) whenever a stage changes
//! state, so they still see live progress.

mod blobs;
mod files;
mod fingerprint;
mod lock;
mod record;
pub mod work;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use blobs::{BlobState, Blobs, hash_bytes, hash_file};
pub use files::Files;
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

/// Content fingerprint of a file or directory, computed afresh (a worker has no memo table).
pub fn fingerprint_of(path: &Path) -> Result<Option<String>, CacheError> {
    fingerprint::of_path(path, &mut |_, compute| compute())
}

/// What readers need from a cache, whether it is opened or seen through a snapshot.
pub trait Store {
    fn record(&self, key: &str) -> Result<Option<Record>, CacheError>;
    fn slot(&self, slot: &str) -> Result<Option<String>, CacheError>;
    fn blob_exists(&self, hash: &str) -> bool;
    /// Content fingerprint of a file or directory, `None` if it does not exist.
    fn fingerprint(&self, path: &Path) -> Result<Option<String>, CacheError>;
    fn records(&self) -> Result<Vec<Record>, CacheError>;
    /// The bytes of a record's output `name`.
    fn output(&self, record: &Record, name: &str) -> Result<Vec<u8>, CacheError>;
    /// The live worker running stage `key`, if one holds its lease.
    fn worker(&self, key: &str) -> Option<work::Lease>;
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
    files: Files,
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
            files: Files::open(root)?,
            root: root.to_path_buf(),
            db,
            last_snapshot: std::sync::Mutex::new(None),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blobs(&self) -> &Blobs {
        self.files.blobs()
    }

    /// The cache as files, as a worker process sees it.
    pub fn files(&self) -> &Files {
        &self.files
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

    /// Stores small bytes by content hash, in the database and as a file; returns the hash.
    pub fn put_artifact(&self, bytes: &[u8]) -> Result<String, CacheError> {
        let hash = hash_bytes(bytes);
        self.index_artifact(&hash, bytes)?;
        if self.files.artifacts().verify(&hash) != BlobState::Ok {
            self.files.artifacts().put_bytes(bytes)?;
        }
        Ok(hash)
    }

    /// Stores in the database the bytes of an artifact whose file form exists already (a
    /// worker wrote it); `hash` must be the bytes' hash.
    pub fn index_artifact(&self, hash: &str, bytes: &[u8]) -> Result<(), CacheError> {
        if !self.artifacts.contains_key(hash.as_bytes())? {
            self.artifacts.insert(hash.as_bytes(), bytes)?;
        }
        Ok(())
    }

    /// Makes sure every small output of `record` has its file form (caches written before
    /// workers existed keep artifacts only in the database).
    pub fn materialise(&self, record: &Record) -> Result<(), CacheError> {
        for out in record.outputs.values() {
            if let OutputRef::Artifact { hash, .. } = out
                && !self.files.artifacts().exists(hash)
            {
                let bytes = self.artifact(hash)?.ok_or_else(|| {
                    CacheError::Missing(format!(
                        "artifact {hash} of `{}` is missing from the cache; run `cft cache verify`",
                        record.label
                    ))
                })?;
                self.files.artifacts().put_bytes(&bytes)?;
            }
        }
        Ok(())
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

    /// The model directory a checkpoint record describes ([`Files::model_dir`]).
    pub fn model_dir(&self, record: &Record) -> Result<PathBuf, CacheError> {
        self.materialise(record)?;
        self.files.model_dir(record)
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

    /// The items a stage saved in the database (runs before workers existed), by name.
    pub fn progress_items(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, CacheError> {
        let prefix = progress_key(key, "");
        let mut out = Vec::new();
        for item in self.progress.scan_prefix(&prefix) {
            let (k, v) = item?;
            let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.push((name, v.to_vec()));
        }
        Ok(out)
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
        self.files.blobs().exists(hash)
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

    fn output(&self, record: &Record, name: &str) -> Result<Vec<u8>, CacheError> {
        Cache::output(self, record, name)
    }

    fn worker(&self, key: &str) -> Option<work::Lease> {
        self.files.work(key).lease_holder()
    }
}

/// A read-only picture of a cache: the snapshot a running process keeps, or nothing at all
/// for a cache that does not exist yet.
#[derive(Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub records: BTreeMap<String, Record>,
    pub slots: BTreeMap<String, String>,
    pub fingerprints: BTreeMap<String, String>,
    /// The cache's files, when the snapshot is of a cache that exists.
    #[serde(skip)]
    files: Option<Files>,
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
        self.files.as_ref().is_some_and(|f| f.blobs().exists(hash))
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

    /// From the files: every artifact a worker wrote, or the coordinator stored, has its file.
    fn output(&self, record: &Record, name: &str) -> Result<Vec<u8>, CacheError> {
        match &self.files {
            Some(files) => files.output(record, name),
            None => Err(CacheError::Missing(format!(
                "`{}` has no outputs in an empty cache",
                record.label
            ))),
        }
    }

    fn worker(&self, key: &str) -> Option<work::Lease> {
        self.files.as_ref()?.work(key).lease_holder()
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
                snap.files = Some(Files::at(root));
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
