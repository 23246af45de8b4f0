//! Manifest errors: every one names the file, line, column and dotted key it is about.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a value was written: the manifest file (as the user named it) and a 1-based position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// A manifest that cannot be turned into an experiment.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A value is wrong: `file:line:col: key: message`.
    #[error("{loc}: `{key}`: {message}")]
    Invalid {
        loc: Loc,
        key: String,
        message: String,
    },
    /// The file is not valid TOML.
    #[error("{loc}: {message}")]
    Syntax { loc: Loc, message: String },
    /// The file cannot be read.
    #[error("cannot read manifest {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ManifestError {
    pub fn invalid(loc: &Loc, key: &str, message: impl Into<String>) -> Self {
        ManifestError::Invalid {
            loc: loc.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// The known name closest to `unknown`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&unknown, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len().max(unknown.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let known = ["learning_rate", "batch_size", "epochs"];
        assert_eq!(did_you_mean("lerning_rate", &known), Some("learning_rate"));
        assert_eq!(did_you_mean("epoch", &known), Some("epochs"));
        assert_eq!(did_you_mean("temperature", &known), None);
    }
}
