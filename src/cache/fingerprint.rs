//! Content fingerprints of models and data files. Hashing a 15 GB checkpoint takes a while,
//! so each file's hash is memoised under (canonical path, size, mtime): a file that has not
//! changed is never read twice.

use std::fs;
use std::path::Path;

use super::CacheError;
use super::blobs::hash_file;

/// `memo(key, compute)` returns the memoised value for `key` or computes and stores it.
pub type Memo<'a> = dyn FnMut(&str, &mut dyn FnMut() -> Result<String, CacheError>) -> Result<String, CacheError>
    + 'a;

pub fn of_path(path: &Path, memo: &mut Memo<'_>) -> Result<Option<String>, CacheError> {
    let Ok(meta) = fs::metadata(path) else {
        return Ok(None);
    };
    if meta.is_file() {
        return of_file(path, memo).map(Some);
    }
    // A directory: the hash of its non-hidden files' names and hashes, in name order.
    let mut names = Vec::new();
    collect(path, path, &mut names)?;
    names.sort();
    let mut hasher = blake3::Hasher::new();
    for rel in names {
        let file_hash = of_file(&path.join(&rel), memo)?;
        hasher.update(rel.as_bytes());
        hasher.update(b"\0");
        hasher.update(file_hash.as_bytes());
        hasher.update(b"\n");
    }
    Ok(Some(hasher.finalize().to_hex().to_string()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), CacheError> {
    for entry in fs::read_dir(dir).map_err(|e| CacheError::io(dir, e))? {
        let entry = entry.map_err(|e| CacheError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn of_file(path: &Path, memo: &mut Memo<'_>) -> Result<String, CacheError> {
    let meta = fs::metadata(path).map_err(|e| CacheError::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let canonical = fs::canonicalize(path).map_err(|e| CacheError::io(path, e))?;
    let key = format!("{}\0{}\0{mtime}", canonical.display(), meta.len());
    memo(&key, &mut || {
        hash_file(path)
            .map(|(h, _)| h)
            .map_err(|e| CacheError::io(path, e))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::cache::hash_bytes;

    /// A memo in a map, counting how often it had to hash.
    #[derive(Default)]
    struct Counting {
        memo: HashMap<String, String>,
        hashed: usize,
    }

    impl Counting {
        fn of(&mut self, path: &Path) -> String {
            of_path(path, &mut |key, compute| {
                if let Some(v) = self.memo.get(key) {
                    return Ok(v.clone());
                }
                self.hashed += 1;
                let v = compute()?;
                self.memo.insert(key.to_string(), v.clone());
                Ok(v)
            })
            .unwrap()
            .unwrap()
        }
    }

    /// A fixed mtime, so a rewrite within the filesystem's timestamp resolution cannot
    /// pass for no change (or the other way round).
    const T: u64 = 1_700_000_000;

    /// Writes `bytes` to `path` and sets its mtime to `T + secs`.
    fn write_at(path: &Path, bytes: &[u8], secs: u64) {
        fs::write(path, bytes).unwrap();
        set_mtime(path, secs);
    }

    fn set_mtime(path: &Path, secs: u64) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(T + secs);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn an_unchanged_file_is_hashed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        fs::write(&path, b"weights").unwrap();
        let mut memo = Counting::default();
        assert_eq!(memo.of(&path), hash_bytes(b"weights"));
        assert_eq!(memo.of(&path), hash_bytes(b"weights"));
        assert_eq!(memo.hashed, 1);
    }

    /// The memo trusts path, size and mtime: bytes changed behind them are not read again.
    /// (An edit that keeps both is what the memo gives up, to never re-read 15 GB.)
    #[test]
    fn same_path_size_and_mtime_reuse_the_memo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        write_at(&path, b"aaaa", 0);
        let mut memo = Counting::default();
        let before = memo.of(&path);
        write_at(&path, b"bbbb", 0);
        assert_eq!(memo.of(&path), before);
        assert_eq!(memo.hashed, 1);
    }

    #[test]
    fn a_changed_size_or_mtime_rehashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        write_at(&path, b"aaaa", 0);
        let mut memo = Counting::default();
        memo.of(&path);
        // Another size, same mtime.
        write_at(&path, b"aaaaa", 0);
        assert_eq!(memo.of(&path), hash_bytes(b"aaaaa"));
        assert_eq!(memo.hashed, 2);
        // Same size, another mtime.
        write_at(&path, b"bbbbb", 1);
        assert_eq!(memo.of(&path), hash_bytes(b"bbbbb"));
        assert_eq!(memo.hashed, 3);
        // Touched only: hashed again, to the same fingerprint.
        set_mtime(&path, 2);
        assert_eq!(memo.of(&path), hash_bytes(b"bbbbb"));
        assert_eq!(memo.hashed, 4);
    }

    #[test]
    fn a_directory_is_its_visible_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        fs::create_dir_all(model.join("sub")).unwrap();
        fs::write(model.join("config.json"), b"{}").unwrap();
        fs::write(model.join("sub/b.bin"), b"b").unwrap();
        let mut memo = Counting::default();
        let first = memo.of(&model);
        // Hidden files (huggingface-cli's `.cache/`, lock files) do not count.
        fs::write(model.join(".lock"), b"x").unwrap();
        assert_eq!(memo.of(&model), first);
        assert_eq!(memo.hashed, 2, "each file hashed once, the directory never");
        fs::write(model.join("tokenizer.json"), b"{}").unwrap();
        assert_ne!(memo.of(&model), first);
        assert_eq!(
            of_path(&dir.path().join("absent"), &mut |_, c| c()).unwrap(),
            None
        );
    }
}
