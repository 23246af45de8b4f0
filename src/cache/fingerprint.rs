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
