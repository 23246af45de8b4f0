//! Data files as records: JSONL (one JSON object per line) or parquet (one row per record, as
//! HF datasets publish them, e.g. GSM8K's `main/train-00000-of-00001.parquet`). A parquet
//! row becomes the JSON object its JSONL line would be (strings, numbers, booleans, nulls,
//! lists and structs), so every loader reads both the same way.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::SerializedFileReader;
use parquet::record::{Field, Row};
use serde_json::{Map, Number, Value};

/// Where a record is: a line of a JSONL file or a row of a parquet file (both from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub path: PathBuf,
    pub index: usize,
    pub row: bool,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.row {
            write!(f, "{}: row {}", self.path.display(), self.index)
        } else {
            write!(f, "{}:{}", self.path.display(), self.index)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{place}: not valid JSON: {source}")]
    Json {
        place: Place,
        source: serde_json::Error,
    },
    #[error("{}: not a parquet file this build reads: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
}

/// Whether `path` is read as parquet (by its extension).
pub fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Every record of a JSONL or parquet file, in file order, with where it is. Blank lines of
/// a JSONL file are skipped.
pub fn read_records(path: &Path) -> Result<Vec<(Place, Value)>, RecordError> {
    if is_parquet(path) {
        return read_parquet(path);
    }
    let text = std::fs::read_to_string(path).map_err(|source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let place = Place {
            path: path.to_path_buf(),
            index: i + 1,
            row: false,
        };
        match serde_json::from_str(line) {
            Ok(v) => out.push((place, v)),
            Err(source) => return Err(RecordError::Json { place, source }),
        }
    }
    Ok(out)
}

fn read_parquet(path: &Path) -> Result<Vec<(Place, Value)>, RecordError> {
    let bad = |e: parquet::errors::ParquetError| RecordError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = File::open(path).map_err(|source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(bad)?;
    let mut out = Vec::new();
    for (i, row) in reader.into_iter().enumerate() {
        let row = row.map_err(bad)?;
        let place = Place {
            path: path.to_path_buf(),
            index: i + 1,
            row: true,
        };
        out.push((place, row_value(&row)));
    }
    Ok(out)
}

fn row_value(row: &Row) -> Value {
    let mut map = Map::new();
    for (name, field) in row.get_column_iter() {
        map.insert(name.clone(), field_value(field));
    }
    Value::Object(map)
}

/// A parquet value as the JSON value it stands for: integers stay integers, floats become
/// JSON numbers (a NaN or infinity, which JSON lacks, becomes null), text stays text; other
/// logical types (dates, decimals, bytes) are written as their text.
fn field_value(field: &Field) -> Value {
    let float = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(v) => Value::from(*v),
        Field::Short(v) => Value::from(*v),
        Field::Int(v) => Value::from(*v),
        Field::Long(v) => Value::from(*v),
        Field::UByte(v) => Value::from(*v),
        Field::UShort(v) => Value::from(*v),
        Field::UInt(v) => Value::from(*v),
        Field::ULong(v) => Value::from(*v),
        Field::Float16(v) => float(f64::from(*v)),
        Field::Float(v) => float(f64::from(*v)),
        Field::Double(v) => float(*v),
        Field::Str(s) => Value::String(s.clone()),
        Field::Group(row) => row_value(row),
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().map(field_value).collect())
        }
        Field::MapInternal(m) => {
            let mut map = Map::new();
            for (k, v) in m.entries() {
                let key = match k {
                    Field::Str(s) => s.clone(),
                    other => other.to_string(),
                };
                map.insert(key, field_value(v));
            }
            Value::Object(map)
        }
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_records_name_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(&path, "{\"a\": 1}\n\n{\"a\": 2}\n{oops\n").unwrap();
        let err = read_records(&path).unwrap_err().to_string();
        assert!(err.contains("d.jsonl:4: not valid JSON"), "{err}");
        std::fs::write(&path, "{\"a\": 1}\n\n{\"a\": 2}\n").unwrap();
        let records = read_records(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].0.index, 3);
        assert_eq!(records[1].1["a"], 2);
    }

    #[test]
    fn a_file_that_is_not_parquet_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.parquet");
        std::fs::write(&path, "{\"question\": \"q\"}\n").unwrap();
        let err = read_records(&path).unwrap_err().to_string();
        assert!(err.contains("train.parquet: not a parquet file"), "{err}");
    }
}
