//! The resumable training state as a safetensors file written and read one tensor at a time.
//!
//! A 7B full fine-tuning has ~90 GB of state (f32 master weights and two Adam moments, plus
//! the trainable weights in their dtype). Encoding it into one buffer, as the state was saved
//! before, holds it in host memory several times over. Here the header is computed from the
//! tensors' names, dtypes and shapes alone, and each tensor's bytes are fetched, written and
//! dropped before the next: the host holds about one tensor. Reading seeks to each tensor.
//!
//! The file is a plain safetensors file (little-endian, 8-byte aligned header, contiguous
//! data), so `safetensors.safe_open` reads it; scalars (step counts, the metrics log) are in
//! its `__metadata__`.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use serde_json::{Map, Value, json};

use super::TrainError;

/// One tensor of a state file, before its bytes exist.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl Entry {
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<usize>) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape,
        }
    }

    fn bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

fn dtype_name(dtype: DType) -> Result<&'static str, TrainError> {
    Ok(match dtype {
        DType::F32 => "F32",
        DType::BF16 => "BF16",
        DType::F16 => "F16",
        other => {
            return Err(TrainError::State(format!(
                "dtype {other:?} in a state file"
            )));
        }
    })
}

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "BF16" => DType::BF16,
        "F16" => DType::F16,
        _ => return None,
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a state file at `path` atomically (temporary name, fsync, rename): the header
/// from `entries`, then each entry's bytes as `fetch(entry, out)` writes them, in order (from
/// the tensor's own host copy: nothing else of the size of a tensor). Returns the file's size.
pub fn write(
    path: &Path,
    entries: &[Entry],
    metadata: &BTreeMap<String, String>,
    mut fetch: impl FnMut(&Entry, &mut dyn Write) -> Result<(), TrainError>,
) -> Result<u64, TrainError> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!(metadata));
    let mut offset = 0usize;
    for e in entries {
        let end = offset + e.bytes();
        header.insert(
            e.name.clone(),
            json!({"dtype": dtype_name(e.dtype)?, "shape": e.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    // The data starts 8-byte aligned, as safetensors writes it.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let tmp = temporary(path);
    let written = (|| -> Result<u64, TrainError> {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&(text.len() as u64).to_le_bytes())
            .and_then(|_| out.write_all(&text))
            .map_err(io(&tmp))?;
        for e in entries {
            let mut counted = Counted {
                inner: &mut out,
                bytes: 0,
            };
            fetch(e, &mut counted)?;
            if counted.bytes != e.bytes() {
                return Err(TrainError::State(format!(
                    "{}: {} bytes for shape {:?} in {:?}",
                    e.name, counted.bytes, e.shape, e.dtype
                )));
            }
        }
        let file = out.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
        Ok(8 + text.len() as u64 + offset as u64)
    })();
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent()
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(size)
}

/// Counts what passes through to the file.
struct Counted<'a, W: Write> {
    inner: &'a mut W,
    bytes: usize,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes f32 values as little-endian bytes through a small buffer.
pub fn write_f32s(out: &mut dyn Write, values: &[f32]) -> std::io::Result<()> {
    for chunk in values.chunks(1 << 14) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write_all(&bytes)?;
    }
    Ok(())
}

fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// A state file open for reading tensor by tensor.
pub struct Reader {
    path: PathBuf,
    file: File,
    /// Where the data starts.
    base: u64,
    entries: BTreeMap<String, (Entry, u64)>,
    pub metadata: HashMap<String, String>,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, TrainError> {
        let bad = |m: String| TrainError::State(format!("{}: {m}", path.display()));
        let mut file = File::open(path).map_err(io(path))?;
        let size = file.metadata().map_err(io(path))?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n).map_err(io(path))?;
        let n = u64::from_le_bytes(n);
        if n > size.saturating_sub(8) || n > 100 << 20 {
            return Err(bad(format!("header of {n} bytes in a {size}-byte file")));
        }
        let mut text = vec![0u8; n as usize];
        file.read_exact(&mut text).map_err(io(path))?;
        let header: Map<String, Value> =
            serde_json::from_slice(&text).map_err(|e| bad(format!("header: {e}")))?;
        let base = 8 + n;
        let mut metadata = HashMap::new();
        let mut entries = BTreeMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                metadata = serde_json::from_value(v).map_err(|e| bad(format!("metadata: {e}")))?;
                continue;
            }
            let dtype = v["dtype"].as_str().and_then(dtype_of);
            let shape: Option<Vec<usize>> = serde_json::from_value(v["shape"].clone()).ok();
            let offsets: Option<[u64; 2]> = serde_json::from_value(v["data_offsets"].clone()).ok();
            let (Some(dtype), Some(shape), Some([start, end])) = (dtype, shape, offsets) else {
                return Err(bad(format!(
                    "tensor {name}: dtype, shape or offsets unreadable"
                )));
            };
            let entry = Entry::new(name.clone(), dtype, shape);
            if end < start || end - start != entry.bytes() as u64 || base + end > size {
                return Err(bad(format!(
                    "tensor {name}: offsets {start}..{end} do not fit its shape or the file"
                )));
            }
            entries.insert(name, (entry, start));
        }
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            base,
            entries,
            metadata,
        })
    }

    /// The tensors' names, dtypes and shapes, by name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(|(e, _)| e)
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name).map(|(e, _)| e)
    }

    /// The raw little-endian bytes of tensor `name`, if the file has it.
    pub fn bytes(&mut self, name: &str) -> Result<Option<Vec<u8>>, TrainError> {
        let Some((entry, start)) = self.entries.get(name) else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; entry.bytes()];
        let path = &self.path;
        self.file
            .seek(SeekFrom::Start(self.base + start))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .map_err(io(path))?;
        Ok(Some(bytes))
    }

    /// Tensor `name` as f32 values (converted from its dtype).
    pub fn f32s(&mut self, name: &str) -> Result<Option<Vec<f32>>, TrainError> {
        let dtype = match self.entry(name) {
            Some(e) => e.dtype,
            None => return Ok(None),
        };
        Ok(self.bytes(name)?.map(|b| to_f32(&b, dtype)))
    }
}

/// Little-endian bytes of `dtype` as f32 values.
pub fn to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 values as little-endian bytes.
    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn a_streamed_file_is_a_safetensors_file_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.safetensors");
        let entries = vec![
            Entry::new("param.w", DType::BF16, vec![2, 3]),
            Entry::new("m.w", DType::F32, vec![6]),
            Entry::new("v.w", DType::F32, vec![6]),
        ];
        let values: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let mut meta = BTreeMap::new();
        meta.insert("step".to_string(), "7".to_string());
        write(&path, &entries, &meta, |e, out| {
            let bytes: Vec<u8> = match e.dtype {
                DType::BF16 => values
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
                _ => f32_bytes(&values),
            };
            out.write_all(&bytes)
                .map_err(|e| TrainError::State(e.to_string()))
        })
        .unwrap();
        // The safetensors crate reads it as it reads any checkpoint.
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.len(), 3);
        assert_eq!(st.tensor("param.w").unwrap().shape(), &[2, 3]);
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.metadata.get("step").map(String::as_str), Some("7"));
        assert_eq!(r.f32s("m.w").unwrap().unwrap(), values);
        assert_eq!(r.f32s("param.w").unwrap().unwrap(), values);
        assert!(r.f32s("master.w").unwrap().is_none());
        // A fetch that returns the wrong size fails, leaving no file behind.
        let other = dir.path().join("bad.safetensors");
        let err = write(&other, &entries, &meta, |_, out| {
            out.write_all(&[0u8; 3])
                .map_err(|e| TrainError::State(e.to_string()))
        })
        .unwrap_err();
        assert!(err.to_string().contains("param.w"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_truncated_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        let entries = vec![Entry::new("m.w", DType::F32, vec![4])];
        write(&path, &entries, &BTreeMap::new(), |_, out| {
            write_f32s(out, &[1.0; 4]).map_err(|e| TrainError::State(e.to_string()))
        })
        .unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 4).unwrap();
        let err = Reader::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("s.safetensors") && err.contains("m.w"),
            "{err}"
        );
    }
}
