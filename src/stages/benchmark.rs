//! Benchmark files in the Qwen2.5-Math layouts, read through the grader's loaders so that
//! questions and gold answers are taken exactly as the harness takes them.

use std::path::Path;
use std::str::FromStr;

use crate::eval::Benchmark;
use crate::eval::benchmarks::load_benchmark_file;

use super::StageError;
use super::dataset::Problem;

pub fn load(format: &str, path: &Path) -> Result<Vec<Problem>, StageError> {
    let benchmark = Benchmark::from_str(format)
        .map_err(|e| StageError::Input(format!("{}: {e}", path.display())))?;
    let problems =
        load_benchmark_file(path, benchmark).map_err(|e| StageError::Input(e.to_string()))?;
    Ok(problems
        .into_iter()
        .map(|p| Problem {
            idx: p.idx as u64,
            question: p.question,
            gold: p.answer,
            solution: None,
        })
        .collect())
}
