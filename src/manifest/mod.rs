//! Manifests: TOML files that declare an experiment.
//!
//! Loading is two levels, as in ripgrep's configuration: each file is parsed into a tree of
//! located values (`node`), `include`d files are merged under it (later values override
//! earlier ones), and one conversion (`resolve`) checks everything and produces an
//! [`Experiment`] in which no required value is missing. We read the tree by hand rather than
//! through serde derive so that every error — unknown key, wrong type, impossible value, bad
//! cross-reference — names the file, line, column and dotted key, even across includes.

mod error;
mod evaluate;
mod grid;
mod methods;
mod node;
mod read;
mod resolve;
mod rl;
mod types;

use std::path::{Path, PathBuf};

pub use error::{Loc, ManifestError};
pub use resolve::{BENCHMARKS, LORA_TARGETS, TEMPLATES};
pub use types::*;

use node::{Table, Value};

/// Loads a manifest and everything it includes, and resolves it.
pub fn load(path: &Path) -> Result<Experiment, ManifestError> {
    let mut files = Vec::new();
    let mut stack = Vec::new();
    let table = load_tree(path, &mut files, &mut stack)?;
    let loc = Loc {
        file: std::sync::Arc::new(path.to_path_buf()),
        line: 1,
        col: 1,
    };
    resolve::resolve(&table, files, loc)
}

/// Reads one file and merges its includes beneath it (depth first, in the order listed).
fn load_tree(
    path: &Path,
    files: &mut Vec<PathBuf>,
    stack: &mut Vec<PathBuf>,
) -> Result<Table, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let identity = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    stack.push(identity);
    let mut own = node::parse(path, &text)?;
    let mut merged = Table::default();
    if let Some(entry) = own.remove("include") {
        let items = match &entry.node.value {
            Value::String(_) => vec![entry.node.clone()],
            Value::Array(items) => items.clone(),
            other => {
                return Err(ManifestError::invalid(
                    &entry.node.loc,
                    "include",
                    format!(
                        "expected a path or a list of paths, found {}",
                        other.type_name()
                    ),
                ));
            }
        };
        for item in items {
            let Value::String(written) = &item.value else {
                return Err(ManifestError::invalid(
                    &item.loc,
                    "include",
                    format!("expected a path, found {}", item.value.type_name()),
                ));
            };
            let target = node::resolve_path(written, &item.loc, "include")?;
            if !target.is_file() {
                return Err(ManifestError::invalid(
                    &item.loc,
                    "include",
                    format!(
                        "included manifest `{written}` does not exist (looked at {})",
                        target.display()
                    ),
                ));
            }
            let id = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
            if stack.contains(&id) {
                return Err(ManifestError::invalid(
                    &item.loc,
                    "include",
                    format!("`{written}` includes itself (directly or through another file)"),
                ));
            }
            merged.merge(load_tree(&target, files, stack)?);
        }
    }
    merged.merge(own);
    stack.pop();
    files.push(path.to_path_buf());
    Ok(merged)
}

impl Experiment {
    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// Every file or directory the experiment reads that does not exist, with where it was named.
    pub fn missing_inputs(&self) -> Vec<&InputPath> {
        fn file(s: &DataSource) -> Option<&InputPath> {
            match s {
                DataSource::File { input, .. } => Some(input),
                DataSource::Synthetic(_) => None,
            }
        }
        let mut inputs: Vec<&InputPath> = Vec::new();
        for m in &self.models {
            match &m.source {
                ModelSource::Dir(input) => inputs.push(input),
                ModelSource::Toy { corpus, .. } => inputs.extend(file(corpus)),
            }
        }
        inputs.extend(file(&self.train_data));
        inputs.extend(self.eval.benchmarks.iter().filter_map(|b| file(&b.source)));
        if let Some(rl) = &self.rl {
            inputs.extend(rl.data.iter().filter_map(|d| file(&d.source)));
        }
        inputs.retain(|i| !i.path.exists());
        inputs
    }
}
