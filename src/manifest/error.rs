//! Manifest errors: every one names the file, line, column and dotted key it is about.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
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
    /// Several errors, found in one pass and sorted by file, line and column (as rustc
    /// reports them): one per line, then how many.
    #[error("{}", show_many(.0))]
    Many(Vec<ManifestError>),
}

fn show_many(errors: &[ManifestError]) -> String {
    let mut out: Vec<String> = errors.iter().map(ToString::to_string).collect();
    out.push(format!("{} errors in the manifest", errors.len()));
    // The CLI prints the first line after `error: `; the others get the same prefix.
    out.join("\nerror: ")
}

impl ManifestError {
    pub fn invalid(loc: &Loc, key: &str, message: impl Into<String>) -> Self {
        ManifestError::Invalid {
            loc: loc.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// Every single error this one stands for, in its order.
    pub fn errors(&self) -> Vec<&ManifestError> {
        match self {
            ManifestError::Many(all) => all.iter().flat_map(ManifestError::errors).collect(),
            one => vec![one],
        }
    }

    fn flatten(self) -> Vec<ManifestError> {
        match self {
            ManifestError::Many(all) => all.into_iter().flat_map(ManifestError::flatten).collect(),
            one => vec![one],
        }
    }

    fn loc(&self) -> Option<&Loc> {
        match self {
            ManifestError::Invalid { loc, .. } | ManifestError::Syntax { loc, .. } => Some(loc),
            ManifestError::Read { .. } | ManifestError::Many(_) => None,
        }
    }
}

/// Where the errors of one manifest are gathered while it is read, so that one pass reports
/// them all: readers record a wrong value here and carry on as if it were absent (its
/// default applies), and a section that cannot go on records its error and is skipped.
#[derive(Clone, Default)]
pub struct Sink {
    inner: Rc<RefCell<Gathered>>,
}

#[derive(Default)]
struct Gathered {
    errors: Vec<ManifestError>,
    /// Keys an unknown key's hint pointed to: a "missing" error for one of them is the same
    /// mistake (a misspelt key), already reported.
    suggested: Vec<String>,
}

impl Sink {
    /// Records an error. One already recorded for the same key and place is not repeated,
    /// nor is a "missing" one for a key that already has an error (a wrong type read as
    /// absent) or that a misspelling's hint names.
    pub fn push(&self, error: ManifestError) {
        let mut g = self.inner.borrow_mut();
        for e in error.flatten() {
            let repeated = match &e {
                ManifestError::Invalid {
                    loc, key, message, ..
                } => {
                    let missing = message.starts_with("missing") || message.starts_with("at least");
                    g.suggested.iter().any(|k| missing && k == key)
                        || g.errors.iter().any(|old| match old {
                            ManifestError::Invalid { loc: l, key: k, .. } => {
                                k == key && (l == loc || missing)
                            }
                            _ => false,
                        })
                }
                _ => false,
            };
            if !repeated {
                g.errors.push(e);
            }
        }
    }

    /// Notes that an unknown key was probably meant to be `key`.
    pub fn suggested(&self, key: String) {
        self.inner.borrow_mut().suggested.push(key);
    }

    /// The value, or `None` with its error recorded.
    pub fn recover<T>(&self, result: Result<T, ManifestError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(e);
                None
            }
        }
    }

    /// How many errors are recorded (a section compares it before and after).
    pub fn count(&self) -> usize {
        self.inner.borrow().errors.len()
    }

    /// Everything recorded, sorted by file, line and column: one error as itself, several
    /// as [`ManifestError::Many`]. `None` when nothing was.
    pub fn take(&self) -> Option<ManifestError> {
        let mut errors = std::mem::take(&mut self.inner.borrow_mut().errors);
        errors.sort_by(|a, b| {
            let at = |e: &ManifestError| e.loc().map(|l| (l.file.clone(), l.line, l.col));
            at(a).cmp(&at(b))
        });
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ManifestError::Many(errors)),
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
