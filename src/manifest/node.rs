//! A TOML document as a tree of located values.
//!
//! `include` merges several files into one tree, so a value's position must travel with the
//! value itself: each [`Node`] carries the file, line and column it was written at. The typed
//! reader in `read.rs` walks this tree; nothing after it sees TOML.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{Loc, ManifestError};

#[derive(Clone, Debug)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime,
    Array(Vec<Node>),
    Table(Table),
}

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

/// A table keeps its entries in file order, each with the position of its key.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub key_loc: Loc,
    pub node: Node,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i))
    }

    /// Deep merge: `over` wins; tables merge key by key, every other value is replaced whole
    /// (an array of `[[method]]` tables in an including file replaces the included one).
    pub fn merge(&mut self, over: Table) {
        for entry in over.entries {
            match self.entries.iter_mut().find(|e| e.key == entry.key) {
                Some(existing) => match (&mut existing.node.value, entry.node.value) {
                    (Value::Table(base), Value::Table(top)) => base.merge(top),
                    (_, value) => {
                        existing.node = Node {
                            value,
                            loc: entry.node.loc,
                        };
                        existing.key_loc = entry.key_loc;
                    }
                },
                None => self.entries.push(entry),
            }
        }
    }
}

impl Value {
    /// How the type is named in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime => "a datetime",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// Parses one file's text into a located table.
pub fn parse(file: &Path, text: &str) -> Result<Table, ManifestError> {
    let lines = LineIndex::new(text);
    let file = Arc::new(file.to_path_buf());
    let loc = |span: std::ops::Range<usize>| lines.loc(&file, span.start);
    match DeTable::parse(text) {
        Ok(root) => Ok(convert_table(root.into_inner(), &loc)),
        Err(err) => Err(ManifestError::Syntax {
            loc: loc(err.span().unwrap_or(0..0)),
            message: err.message().trim().to_string(),
        }),
    }
}

fn convert_table(table: DeTable<'_>, loc: &dyn Fn(std::ops::Range<usize>) -> Loc) -> Table {
    let mut entries = Vec::with_capacity(table.len());
    for (key, value) in table {
        let key_loc = loc(key.span());
        entries.push(Entry {
            key: key.into_inner().into_owned(),
            key_loc,
            node: convert(value, loc),
        });
    }
    // DeTable is ordered by key; sort by position so errors and merges follow the file.
    entries.sort_by_key(|e| (e.key_loc.line, e.key_loc.col));
    Table { entries }
}

fn convert(value: Spanned<DeValue<'_>>, loc: &dyn Fn(std::ops::Range<usize>) -> Loc) -> Node {
    let at = loc(value.span());
    let value = match value.into_inner() {
        DeValue::String(s) => Value::String(s.into_owned()),
        DeValue::Integer(i) => match parse_integer(i.as_str(), i.radix()) {
            Some(n) => Value::Integer(n),
            // Only integers beyond i64 get here; keep the digits so the reader can say so.
            None => Value::String(i.as_str().to_string()),
        },
        DeValue::Float(f) => Value::Float(parse_float(f.as_str())),
        DeValue::Boolean(b) => Value::Boolean(b),
        DeValue::Datetime(_) => Value::Datetime,
        DeValue::Array(items) => Value::Array(items.into_iter().map(|v| convert(v, loc)).collect()),
        DeValue::Table(t) => Value::Table(convert_table(t, loc)),
    };
    Node { value, loc: at }
}

fn parse_integer(digits: &str, radix: u32) -> Option<i64> {
    let cleaned: String = digits.chars().filter(|c| *c != '_').collect();
    let (negative, body) = match cleaned.strip_prefix('-') {
        Some(rest) => (true, rest.to_string()),
        None => (false, cleaned.trim_start_matches('+').to_string()),
    };
    let magnitude = i64::from_str_radix(&body, radix).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

fn parse_float(text: &str) -> f64 {
    let cleaned: String = text.chars().filter(|c| *c != '_').collect();
    match cleaned.trim_start_matches('+') {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "nan" | "-nan" => f64::NAN,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

/// Byte offset → 1-based line and column (in characters).
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    fn loc(&self, file: &Arc<PathBuf>, offset: usize) -> Loc {
        let line = self.starts.partition_point(|s| *s <= offset).max(1);
        let start = self.starts[line - 1];
        let end = offset.min(self.text.len());
        let col = self
            .text
            .get(start..end)
            .map_or(1, |s| s.chars().count() + 1);
        Loc {
            file: file.clone(),
            line,
            col,
        }
    }
}

/// Resolves a path written in a manifest against the directory of the file that wrote it.
/// `${NAME}` and `${NAME:-default}` are expanded from the environment first.
/// A relative path that came from an environment variable resolves against the current
/// directory instead, as a user typing `CFT_DATA_DIR=data cft run ...` expects.
pub fn resolve_path(written: &str, loc: &Loc, key: &str) -> Result<PathBuf, ManifestError> {
    let expanded = expand_env(written).map_err(|m| ManifestError::invalid(loc, key, m))?;
    let path = PathBuf::from(&expanded);
    if path.is_absolute() {
        return Ok(path);
    }
    if leading_variable_is_set(written) {
        return Ok(path);
    }
    let base = loc.file.parent().unwrap_or(Path::new(""));
    Ok(base.join(path))
}

/// The path as written, with environment variables expanded (for messages).
pub fn expanded(written: &str) -> String {
    expand_env(written).unwrap_or_else(|_| written.to_string())
}

fn leading_variable_is_set(written: &str) -> bool {
    let Some(rest) = written.strip_prefix("${") else {
        return false;
    };
    let name = rest.split(['}', ':']).next().unwrap_or_default();
    std::env::var(name).is_ok_and(|v| !v.is_empty())
}

fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in path `{text}`"))?;
        let spec = &after[..end];
        let (name, default) = match spec.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (spec, None),
        };
        match (std::env::var(name), default) {
            (Ok(v), _) if !v.is_empty() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            _ => {
                return Err(format!(
                    "environment variable `{name}` used in path `{text}` is not set"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let t = parse(Path::new("m.toml"), "a = 1\n[b]\n  c = \"x\"\n").unwrap();
        let b = t.get("b").unwrap();
        let Value::Table(bt) = &b.node.value else {
            panic!("b is a table")
        };
        let c = bt.get("c").unwrap();
        assert_eq!((c.key_loc.line, c.key_loc.col), (3, 3));
        assert_eq!((c.node.loc.line, c.node.loc.col), (3, 7));
    }

    #[test]
    fn merge_overrides_leaves_and_merges_tables() {
        let mut base = parse(Path::new("a"), "[t]\nx = 1\ny = 2\n").unwrap();
        let over = parse(Path::new("b"), "[t]\ny = 3\nz = 4\n").unwrap();
        base.merge(over);
        let Value::Table(t) = &base.get("t").unwrap().node.value else {
            panic!()
        };
        let keys: Vec<_> = t.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["x", "y", "z"]);
        assert!(matches!(t.get("y").unwrap().node.value, Value::Integer(3)));
        assert_eq!(t.get("y").unwrap().node.loc.file.to_str(), Some("b"));
    }

    #[test]
    fn env_expansion_with_default() {
        assert_eq!(
            expand_env("${CFT_SURELY_UNSET_VAR:-data}/x").unwrap(),
            "data/x"
        );
        assert!(expand_env("${CFT_SURELY_UNSET_VAR}/x").is_err());
    }
}
