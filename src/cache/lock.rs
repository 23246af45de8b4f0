//! One writer per cache. The lock is an OS file lock on `LOCK`, so a process killed with
//! `kill -9` releases it; the file's text names the holder for the refusal message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::CacheError;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    pub command: String,
    pub started_at: u64,
}

pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock or reports who holds it.
    pub fn acquire(root: &Path, command: &str) -> Result<RunLock, CacheError> {
        let path = root.join("LOCK");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CacheError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CacheError::Locked {
                    root: root.to_path_buf(),
                    owner: read_owner(&mut file),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(CacheError::io(&path, e)),
        }
        let owner = Owner {
            pid: std::process::id(),
            command: command.to_string(),
            started_at: super::now_secs(),
        };
        let text = serde_json::to_string(&owner).unwrap_or_default();
        let written = file
            .set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(text.as_bytes()))
            .and_then(|_| file.flush());
        written.map_err(|e| CacheError::io(&path, e))?;
        Ok(RunLock { _file: file })
    }
}

/// Who holds the lock, if the lock is held.
pub fn holder(root: &Path) -> Option<Owner> {
    let path = root.join("LOCK");
    let mut file = OpenOptions::new().read(true).write(true).open(path).ok()?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => read_owner(&mut file),
    }
}

fn read_owner(file: &mut File) -> Option<Owner> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}
