//! A stage in flight: the folder `work/<key>/` through which the coordinator and the worker
//! process that runs the stage talk, by files alone (a worker never opens the database).
//!
//! ```text
//! work/<key>/
//!   task.json      the stage and its input records; written by the coordinator before launch
//!   lease          OS-locked by the worker while it runs; its text names pid, host, start
//!   items/<name>   finished items, each written whole (temporary name, fsync, rename)
//!   state/         large files an item refers to (a training run's state), written the same
//!                  way before the item that names them
//!   progress.json  items done and total, rewritten at most twice a second
//!   stderr.log     the worker process's stderr
//!   done.json      written last, atomically: output hashes, metrics   } the sentinel:
//!   failed.json    written last, atomically: the error and whose fault }  one or neither
//! ```
//!
//! The coordinator ingests a sentinel into the database (the record written last) and removes
//! the folder; the saved items of a stage whose worker died stay, and the next worker resumes
//! from them. The lease is an OS file lock, so a worker killed with `kill -9` releases it: a
//! held lease means a live worker, wherever its coordinator is.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{CacheError, OutputRef, Record};
use crate::contract::{Fault, StageSpec};

/// What a worker needs to run a stage: the stage and the records of its inputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    pub spec: StageSpec,
    pub inputs: Vec<Record>,
}

/// How a worker ended a stage. Written last; its presence is the completion.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Sentinel {
    Done {
        outputs: BTreeMap<String, OutputRef>,
        metrics: Value,
        progress: Option<(u64, u64)>,
        elapsed_s: f64,
    },
    Failed {
        error: String,
        fault: Fault,
        progress: Option<(u64, u64)>,
        elapsed_s: f64,
    },
}

/// Who holds a stage's lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub pid: u32,
    pub host: String,
    pub started_at: u64,
}

/// A lease held by this process; released when dropped (or when the process dies).
pub struct HeldLease {
    _file: File,
    pub lease: Lease,
}

pub struct WorkDir {
    dir: PathBuf,
}

impl WorkDir {
    pub fn new(dir: PathBuf) -> WorkDir {
        WorkDir { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    fn create(&self) -> Result<(), CacheError> {
        fs::create_dir_all(self.dir.join("items")).map_err(|e| CacheError::io(&self.dir, e))
    }

    pub fn write_task(&self, task: &Task) -> Result<(), CacheError> {
        self.create()?;
        write_json(&self.dir.join("task.json"), task)
    }

    pub fn task(&self) -> Result<Task, CacheError> {
        read_json(&self.dir.join("task.json"))?
            .ok_or_else(|| CacheError::Missing(format!("{} has no task.json", self.dir.display())))
    }

    /// A finished item saved by an earlier worker of this stage.
    pub fn saved(&self, item: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.item_path(item);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CacheError::io(&path, e)),
        }
    }

    /// Saves a finished item durably: after this returns, a `kill -9` does not lose it.
    pub fn save(&self, item: &str, bytes: &[u8]) -> Result<(), CacheError> {
        self.create()?;
        write_durably(&self.item_path(item), bytes)
    }

    /// The folder for large files a saved item refers to (created here); they go when the
    /// folder does.
    pub fn state_dir(&self) -> Result<PathBuf, CacheError> {
        let dir = self.dir.join("state");
        fs::create_dir_all(&dir).map_err(|e| CacheError::io(&dir, e))?;
        Ok(dir)
    }

    /// How many items are saved.
    pub fn item_count(&self) -> usize {
        fs::read_dir(self.dir.join("items")).map_or(0, |d| {
            d.filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    }

    fn item_path(&self, item: &str) -> PathBuf {
        self.dir.join("items").join(file_name(item))
    }

    pub fn write_progress(&self, progress: (u64, u64)) -> Result<(), CacheError> {
        write_json(&self.dir.join("progress.json"), &progress)
    }

    pub fn progress(&self) -> Option<(u64, u64)> {
        read_json(&self.dir.join("progress.json")).ok().flatten()
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }

    /// The last `lines` lines of the worker's stderr, if it wrote any.
    pub fn stderr_tail(&self, lines: usize) -> Option<String> {
        let text = fs::read_to_string(self.stderr_path()).ok()?;
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if all.is_empty() {
            return None;
        }
        Some(all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Writes the sentinel: `done.json` or `failed.json`, atomically.
    pub fn write_sentinel(&self, sentinel: &Sentinel) -> Result<(), CacheError> {
        self.create()?;
        let name = match sentinel {
            Sentinel::Done { .. } => "done.json",
            Sentinel::Failed { .. } => "failed.json",
        };
        let bytes = serde_json::to_vec_pretty(sentinel).map_err(|e| CacheError::Corrupt {
            what: name.into(),
            message: e.to_string(),
        })?;
        write_durably(&self.dir.join(name), &bytes)
    }

    /// The sentinel, if the worker wrote one.
    pub fn sentinel(&self) -> Result<Option<Sentinel>, CacheError> {
        for name in ["done.json", "failed.json"] {
            if let Some(s) = read_json(&self.dir.join(name))? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Forgets a `failed.json` once the coordinator recorded it; the saved items stay, for a
    /// later run to resume from.
    pub fn clear_failure(&self) -> Result<(), CacheError> {
        for name in ["failed.json", "task.json", "progress.json"] {
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CacheError::io(&path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the folder once its sentinel is ingested.
    pub fn remove(&self) -> Result<(), CacheError> {
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CacheError::io(&self.dir, e)),
            _ => Ok(()),
        }
    }

    /// Whether the coordinator has written the stage's task (and not yet removed the folder).
    pub fn has_task(&self) -> bool {
        self.dir.join("task.json").is_file()
    }

    /// Takes the stage's lease for this process, or says who holds it; `None` when the folder
    /// is gone (a coordinator ingested the stage). It never creates the folder: a worker late
    /// for a stage another one finished must not leave an empty one behind.
    pub fn take_lease(&self) -> Result<Option<Result<HeldLease, Option<Lease>>>, CacheError> {
        let path = self.dir.join("lease");
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::io(&path, e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(Some(Err(read_lease(&mut file)))),
            Err(fs::TryLockError::Error(e)) => return Err(CacheError::io(&path, e)),
        }
        let lease = Lease {
            pid: std::process::id(),
            host: hostname(),
            started_at: super::now_secs(),
        };
        let text = serde_json::to_string(&lease).unwrap_or_default();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.flush())
            .map_err(|e| CacheError::io(&path, e))?;
        Ok(Some(Ok(HeldLease { _file: file, lease })))
    }

    /// The live worker holding the lease, if any (`None`: no worker is running the stage).
    pub fn lease_holder(&self) -> Option<Lease> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join("lease"))
            .ok()?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                None
            }
            Err(_) => Some(read_lease(&mut file).unwrap_or_default()),
        }
    }
}

fn read_lease(file: &mut File) -> Option<Lease> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// This machine's name, for leases and records (never for keys).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer outlives the call and its length is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::from("unknown");
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// An item name as a file name: letters, digits, `-`, `_` and `.` (not leading) as they are,
/// every other byte as `%XX`.
fn file_name(item: &str) -> String {
    let mut out = String::with_capacity(item.len());
    for (i, b) in item.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes `bytes` under a temporary name, syncs, renames into place and syncs the folder:
/// a reader sees the old file or the whole new one, and a crash after return loses nothing.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    written.map_err(|e| CacheError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| CacheError::io(path, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes JSON atomically (no fsync: progress and tasks are rewritten or re-made).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CacheError> {
    let bytes = serde_json::to_vec(value).map_err(|e| CacheError::Corrupt {
        what: path.display().to_string(),
        message: e.to_string(),
    })?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| CacheError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| CacheError::io(path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, CacheError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CacheError::Corrupt {
                what: path.display().to_string(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CacheError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_names_become_safe_file_names() {
        assert_eq!(file_name("chunk-3"), "chunk-3");
        assert_eq!(file_name("a/b c"), "a%2Fb%20c");
        assert_eq!(file_name("..x"), "%2E.x");
    }

    #[test]
    fn a_lease_is_held_once_and_released_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().join("k"));
        // No folder, no lease: the stage was ingested, and none is created.
        assert!(work.take_lease().unwrap().is_none());
        assert!(!work.exists());
        std::fs::create_dir_all(work.path()).unwrap();
        assert_eq!(work.lease_holder(), None);
        let held = work.take_lease().unwrap().unwrap().unwrap();
        let holder = work.lease_holder().unwrap();
        assert_eq!(holder.pid, std::process::id());
        // A second taker (another worker) is refused, told who holds it.
        assert_eq!(
            work.take_lease().unwrap().unwrap().err(),
            Some(Some(holder))
        );
        drop(held);
        assert_eq!(work.lease_holder(), None);
    }

    #[test]
    fn items_and_the_sentinel_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let work = WorkDir::new(dir.path().join("k"));
        assert_eq!(work.saved("chunk-0").unwrap(), None);
        work.save("chunk-0", b"one").unwrap();
        work.save("chunk-0", b"two").unwrap();
        assert_eq!(work.saved("chunk-0").unwrap().unwrap(), b"two");
        assert_eq!(work.item_count(), 1);
        assert!(work.sentinel().unwrap().is_none());
        work.write_sentinel(&Sentinel::Failed {
            error: "boom".into(),
            fault: Fault::Input,
            progress: None,
            elapsed_s: 1.0,
        })
        .unwrap();
        assert!(matches!(
            work.sentinel().unwrap(),
            Some(Sentinel::Failed { ref error, .. }) if error == "boom"
        ));
        work.clear_failure().unwrap();
        assert!(work.sentinel().unwrap().is_none());
        assert_eq!(work.saved("chunk-0").unwrap().unwrap(), b"two");
    }
}
