//! Data as HF datasets publish it: parquet files written by pyarrow
//! (`scripts/make_parquet_fixtures.py`, committed in `tests/fixtures/data/`) give the same
//! problems as the JSONL files written beside them, for training data (GSM8K's layout, snappy
//! and zstd) and for a benchmark (the MATH layout, two row groups), through `cft run`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cft::eval::Benchmark;
use cft::eval::benchmarks::load_benchmark_file;
use cft::eval::records::read_records;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

#[test]
fn parquet_rows_are_the_records_of_the_jsonl_lines() {
    let jsonl: Vec<_> = read_records(&fixture("gsm8k.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(jsonl.len(), 23);
    for file in ["gsm8k.snappy.parquet", "gsm8k.zstd.parquet"] {
        let rows = read_records(&fixture(file)).unwrap();
        assert_eq!(rows.len(), jsonl.len(), "{file}");
        for (i, ((place, row), line)) in rows.iter().zip(&jsonl).enumerate() {
            assert_eq!(place.index, i + 1);
            assert_eq!(row, line, "{file} row {}", i + 1);
        }
    }
    // Integers stay integers; two row groups read in order.
    let math: Vec<_> = read_records(&fixture("math.parquet"))
        .unwrap()
        .into_iter()
        .map(|r| r.1)
        .collect();
    let lines: Vec<_> = read_records(&fixture("math.jsonl"))
        .unwrap()
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(math, lines);
    assert_eq!(math[8]["idx"], 108);
}

#[test]
fn a_parquet_benchmark_gives_the_harness_questions_and_gold_answers() {
    let from_parquet = load_benchmark_file(&fixture("math.parquet"), Benchmark::Math).unwrap();
    let from_jsonl = load_benchmark_file(&fixture("math.jsonl"), Benchmark::Math).unwrap();
    assert_eq!(from_parquet.len(), 9);
    for (p, j) in from_parquet.iter().zip(&from_jsonl) {
        assert_eq!(
            (p.idx, &p.question, &p.answer),
            (j.idx, &j.question, &j.answer)
        );
    }
    assert_eq!(from_parquet[0].answer, "\\frac{4}{3}");
    assert_eq!(from_parquet[0].idx, 100);
}

/// A manifest reading `path` as training data and `math` as a benchmark; the `problems.jsonl`
/// the dataset stages write, by stage label.
fn dataset_outputs(dir: &Path, train: &Path, math: &Path) -> Vec<(String, Vec<u8>)> {
    let name = train
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace('.', "-");
    let manifest = support::write(
        dir,
        &format!("{name}.toml"),
        &format!(
            r#"
[experiment]
name = "parquet"

[[model]]
name = "m"
[model.toy]
hidden_size = 32
num_layers = 1

[data.train]
path = "{}"
format = "gsm8k"

[[method]]
name = "sft"
kind = "sft"

[eval]
benchmarks = [{{ name = "math", path = "{}", format = "math" }}]
"#,
            train.display(),
            math.display()
        ),
    );
    let cache = dir.join(format!("cache-{name}"));
    let out = Command::new(env!("CARGO_BIN_EXE_cft"))
        .args(["run", "--quiet", "--only", "dataset", "--cache"])
        .arg(&cache)
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::results(&cft::cache::Cache::open(&cache, "test").unwrap())
        .into_iter()
        .filter(|(label, name, _)| label.starts_with("dataset") && name == "problems.jsonl")
        .map(|(label, _, bytes)| (label, bytes))
        .collect()
}

#[test]
fn cft_run_reads_parquet_training_data_and_benchmarks_as_their_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dataset_outputs(dir.path(), &fixture("gsm8k.jsonl"), &fixture("math.jsonl"));
    // The toy model's corpus, the training data and the benchmark.
    let labels: Vec<&str> = jsonl.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    for train in ["gsm8k.snappy.parquet", "gsm8k.zstd.parquet"] {
        let parquet = dataset_outputs(dir.path(), &fixture(train), &fixture("math.parquet"));
        assert!(parquet == jsonl, "{train}: the problems differ");
    }
    let train = jsonl.iter().find(|o| o.0 == "dataset train").unwrap();
    let problems = String::from_utf8(train.1.clone()).unwrap();
    assert_eq!(problems.lines().count(), 23);
    assert!(problems.contains("\"gold\":\"3000\""), "{problems}");
}

#[test]
fn a_broken_parquet_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("gsm8k.snappy.parquet")).unwrap();
    let cut = dir.path().join("cut.parquet");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_records(&cut).unwrap_err().to_string();
    assert!(err.contains("cut.parquet: not a parquet file"), "{err}");
}
