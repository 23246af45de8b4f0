//! Content-addressed blob files for checkpoints: written under a temporary name, synced, and
//! renamed to their hash, so a reader never sees a partial blob.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::CacheError;

pub struct Blobs {
    dir: PathBuf,
}

/// What `verify` found for one blob.
#[derive(Debug, PartialEq, Eq)]
pub enum BlobState {
    Ok,
    Missing,
    Corrupt { actual: String },
}

impl Blobs {
    pub fn open(dir: PathBuf) -> Result<Self, CacheError> {
        fs::create_dir_all(&dir).map_err(|e| CacheError::io(&dir, e))?;
        Ok(Blobs { dir })
    }

    /// The store at `dir`, without creating it (for readers).
    pub fn at(dir: PathBuf) -> Self {
        Blobs { dir }
    }

    pub fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    /// Moves a finished file into the store; returns its hash and size. A blob already stored
    /// under the hash is kept only while its bytes still match it (re-hashed: such duplicates
    /// are mostly the small config and tokenizer files every checkpoint carries); a corrupt
    /// one is a miss, and the new file replaces it, so the record written next points at the
    /// true bytes.
    pub fn put_file(&self, file: &Path) -> Result<(String, u64), CacheError> {
        let (hash, size) = hash_file(file).map_err(|e| CacheError::io(file, e))?;
        let target = self.path(&hash);
        if self.verify(&hash) == BlobState::Ok {
            fs::remove_file(file).map_err(|e| CacheError::io(file, e))?;
        } else {
            File::open(file)
                .and_then(|f| f.sync_all())
                .map_err(|e| CacheError::io(file, e))?;
            fs::rename(file, &target).map_err(|e| CacheError::io(&target, e))?;
        }
        Ok((hash, size))
    }

    /// Stores bytes as a blob.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<(String, u64), CacheError> {
        let tmp = self.temp_path();
        let mut f = File::create(&tmp).map_err(|e| CacheError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| CacheError::io(&tmp, e))?;
        drop(f);
        self.put_file(&tmp)
    }

    /// A fresh temporary path inside the store (same filesystem, so the rename is atomic).
    pub fn temp_path(&self) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("tmp-{}-{n}", std::process::id()))
    }

    pub fn verify(&self, hash: &str) -> BlobState {
        match hash_file(&self.path(hash)) {
            Err(_) => BlobState::Missing,
            Ok((actual, _)) if actual == hash => BlobState::Ok,
            Ok((actual, _)) => BlobState::Corrupt { actual },
        }
    }

    pub fn exists(&self, hash: &str) -> bool {
        self.path(hash).is_file()
    }

    /// Every stored blob (name, size), leftover temporary files included.
    pub fn list(&self) -> Result<Vec<(String, u64)>, CacheError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| CacheError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| CacheError::io(&self.dir, e))?;
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((entry.file_name().to_string_lossy().into_owned(), size));
        }
        out.sort();
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<(), CacheError> {
        let p = self.dir.join(name);
        fs::remove_file(&p).map_err(|e| CacheError::io(&p, e))
    }
}

/// blake3 of a file's bytes, hex, with its size.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().to_hex().to_string(), size))
}

pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Blobs) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
        (dir, blobs)
    }

    #[test]
    fn a_write_leaves_only_the_blob_named_by_its_hash() {
        let (_dir, blobs) = store();
        let (hash, size) = blobs.put_bytes(b"checkpoint bytes").unwrap();
        assert_eq!(hash, hash_bytes(b"checkpoint bytes"));
        // The temporary file it was written to is gone: renamed, not copied.
        assert_eq!(blobs.list().unwrap(), vec![(hash.clone(), size)]);
        assert_eq!(fs::read(blobs.path(&hash)).unwrap(), b"checkpoint bytes");
        assert_eq!(blobs.verify(&hash), BlobState::Ok);
    }

    #[test]
    fn temporary_files_are_in_the_store_and_never_named_like_a_blob() {
        let (_dir, blobs) = store();
        let (a, b) = (blobs.temp_path(), blobs.temp_path());
        assert_ne!(a, b);
        // Same directory as the blobs, so the final rename cannot cross filesystems.
        assert_eq!(a.parent(), Some(blobs.dir.as_path()));
        // `tmp-…` is no hex digest, so a leftover is never read as a blob.
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("tmp-"), "{name}");
    }

    /// A writer killed mid-way leaves a temporary file: no blob, under the hash of the
    /// whole or of the part, ever appears.
    #[test]
    fn an_interrupted_write_never_shows_as_a_blob() {
        let (_dir, blobs) = store();
        let whole = b"the whole checkpoint".as_slice();
        let part = &whole[..7];
        let tmp = blobs.temp_path();
        fs::write(&tmp, part).unwrap();
        // ... and the process dies before `put_file`.
        for hash in [hash_bytes(whole), hash_bytes(part)] {
            assert!(!blobs.exists(&hash));
            assert_eq!(blobs.verify(&hash), BlobState::Missing);
        }
        // The leftover is listed (so `cache gc` removes it), under its temporary name.
        let listed = blobs.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].0.starts_with("tmp-"), "{listed:?}");
        // The next attempt stores the whole file.
        let (hash, _) = blobs.put_bytes(whole).unwrap();
        assert_eq!(blobs.verify(&hash), BlobState::Ok);
    }

    #[test]
    fn a_blob_whose_bytes_do_not_match_its_hash_is_corrupt() {
        let (_dir, blobs) = store();
        let (hash, _) = blobs.put_bytes(b"weights").unwrap();
        fs::write(blobs.path(&hash), b"weightz").unwrap();
        assert!(blobs.exists(&hash), "the file is there ...");
        assert_eq!(
            blobs.verify(&hash),
            BlobState::Corrupt {
                actual: hash_bytes(b"weightz")
            },
            "... but `cache verify` does not take it for the blob"
        );
        // Storing the true bytes again replaces it instead of recording the corrupt file.
        assert_eq!(blobs.put_bytes(b"weights").unwrap().0, hash);
        assert_eq!(blobs.verify(&hash), BlobState::Ok);
        assert_eq!(fs::read(blobs.path(&hash)).unwrap(), b"weights");
        assert_eq!(blobs.list().unwrap().len(), 1, "no temporary file is left");
    }

    #[test]
    fn the_same_bytes_twice_are_stored_once() {
        let (_dir, blobs) = store();
        let first = blobs.put_bytes(b"tokenizer.json").unwrap();
        let tmp = blobs.temp_path();
        fs::write(&tmp, b"tokenizer.json").unwrap();
        assert_eq!(blobs.put_file(&tmp).unwrap(), first);
        assert!(!tmp.exists(), "the duplicate is removed");
        assert_eq!(blobs.list().unwrap(), vec![first]);
    }
}
