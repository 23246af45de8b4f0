//! Typed reading of a located table: each accessor names the dotted key in its errors, and
//! `finish` rejects keys nobody asked for, suggesting the closest known one.
//!
//! A wrong value (a wrong type, a number out of range, a name not among the choices) is
//! recorded in the manifest's [`Sink`] and read as absent, so reading goes on and one pass
//! reports every mistake; the accessors' `Err` is left for what their callers check.

use std::path::PathBuf;

use super::error::{Loc, ManifestError, Sink, did_you_mean};
use super::node::{Node, Table, Value, resolve_path};
use super::types::Template;

type Result<T> = std::result::Result<T, ManifestError>;

/// A value together with where it was written.
#[derive(Clone, Debug)]
pub struct At<T> {
    pub value: T,
    pub loc: Loc,
    pub key: String,
}

/// Reads one table. `prefix` is its dotted path (`train`, `method[2]`), used in messages.
pub struct Reader<'a> {
    table: &'a Table,
    prefix: String,
    loc: Loc,
    known: Vec<&'static str>,
    sink: Sink,
}

impl<'a> Reader<'a> {
    pub fn new(table: &'a Table, prefix: &str, loc: Loc, sink: &Sink) -> Self {
        Reader {
            table,
            prefix: prefix.to_string(),
            loc,
            known: Vec::new(),
            sink: sink.clone(),
        }
    }

    /// A reader of another table, recording into the same sink.
    pub fn sub<'b>(&self, table: &'b Table, prefix: &str, loc: Loc) -> Reader<'b> {
        Reader::new(table, prefix, loc, &self.sink)
    }

    /// Where this manifest's errors are gathered.
    pub fn sink(&self) -> &Sink {
        &self.sink
    }

    /// Records `error` and reads the value as absent.
    fn wrong<T>(&self, error: ManifestError) -> Result<Option<T>> {
        self.sink.push(error);
        Ok(None)
    }

    pub fn loc(&self) -> &Loc {
        &self.loc
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The raw node under `key`, marking the key as known.
    pub fn node(&mut self, key: &'static str) -> Option<&'a Node> {
        self.known.push(key);
        self.table.get(key).map(|e| &e.node)
    }

    /// An error about the whole table (a missing key, a wrong combination).
    pub fn error(&self, key: &str, message: impl Into<String>) -> ManifestError {
        ManifestError::invalid(&self.loc, &self.key_path(key), message)
    }

    fn wrong_type(&self, key: &str, node: &Node, expected: &str) -> ManifestError {
        ManifestError::invalid(
            &node.loc,
            &self.key_path(key),
            format!("expected {expected}, found {}", node.value.type_name()),
        )
    }

    pub fn string(&mut self, key: &'static str) -> Result<Option<At<String>>> {
        let Some(node) = self.node(key) else {
            return Ok(None);
        };
        match &node.value {
            Value::String(s) => Ok(Some(self.at(key, node, s.clone()))),
            _ => self.wrong(self.wrong_type(key, node, "a string")),
        }
    }

    pub fn require_string(&mut self, key: &'static str) -> Result<At<String>> {
        self.string(key)?
            .ok_or_else(|| self.error(key, "missing required key"))
    }

    /// A string that must be one of `choices`.
    /// A prompt template's name, as a [`Template`].
    pub fn template(&mut self, key: &'static str) -> Result<Option<Template>> {
        let Some(v) = self.choice(key, &super::resolve::TEMPLATES)? else {
            return Ok(None);
        };
        match Template::ALL.into_iter().find(|t| t.name() == v.value) {
            Some(t) => Ok(Some(t)),
            None => self.wrong(ManifestError::invalid(
                &v.loc,
                &v.key,
                format!("`{}` is not a template", v.value),
            )),
        }
    }

    pub fn choice(
        &mut self,
        key: &'static str,
        choices: &[&'static str],
    ) -> Result<Option<At<String>>> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        if choices.contains(&s.value.as_str()) {
            return Ok(Some(s));
        }
        let hint = match did_you_mean(&s.value, choices) {
            Some(m) => format!("; did you mean `{m}`?"),
            None => String::new(),
        };
        self.wrong(ManifestError::invalid(
            &s.loc,
            &s.key,
            format!(
                "`{}` is not one of {}{hint}",
                s.value,
                choices
                    .iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    pub fn integer(&mut self, key: &'static str) -> Result<Option<At<i64>>> {
        let Some(node) = self.node(key) else {
            return Ok(None);
        };
        match &node.value {
            Value::Integer(i) => Ok(Some(self.at(key, node, *i))),
            _ => self.wrong(self.wrong_type(key, node, "an integer")),
        }
    }

    /// A non-negative integer no smaller than `min`.
    pub fn count(&mut self, key: &'static str, min: u64) -> Result<Option<At<u64>>> {
        let Some(i) = self.integer(key)? else {
            return Ok(None);
        };
        if i.value < 0 || (i.value as u64) < min {
            return self.wrong(ManifestError::invalid(
                &i.loc,
                &i.key,
                format!("must be at least {min}, got {}", i.value),
            ));
        }
        Ok(Some(At {
            value: i.value as u64,
            loc: i.loc,
            key: i.key,
        }))
    }

    pub fn float(&mut self, key: &'static str) -> Result<Option<At<f64>>> {
        let Some(node) = self.node(key) else {
            return Ok(None);
        };
        match as_float(node) {
            Some(x) => Ok(Some(self.at(key, node, x))),
            None => self.wrong(self.wrong_type(key, node, "a number")),
        }
    }

    pub fn boolean(&mut self, key: &'static str) -> Result<Option<bool>> {
        let Some(node) = self.node(key) else {
            return Ok(None);
        };
        match &node.value {
            Value::Boolean(b) => Ok(Some(*b)),
            _ => self.wrong(self.wrong_type(key, node, "a boolean")),
        }
    }

    pub fn strings(&mut self, key: &'static str) -> Result<Option<Vec<At<String>>>> {
        let Some(node) = self.node(key) else {
            return Ok(None);
        };
        let Value::Array(items) = &node.value else {
            return self.wrong(self.wrong_type(key, node, "an array of strings"));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::String(s) => out.push(At {
                    value: s.clone(),
                    loc: item.loc.clone(),
                    key: format!("{}[{i}]", self.key_path(key)),
                }),
                _ => return self.wrong(self.wrong_type(key, item, "a string")),
            }
        }
        Ok(Some(out))
    }

    /// A path, resolved against the directory of the manifest file that wrote it.
    pub fn path(&mut self, key: &'static str) -> Result<Option<At<PathBuf>>> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        let path = match resolve_path(&s.value, &s.loc, &s.key) {
            Ok(p) => p,
            Err(e) => return self.wrong(e),
        };
        Ok(Some(At {
            value: path,
            loc: s.loc,
            key: s.key,
        }))
    }

    /// A sub-table, read by its own reader.
    pub fn table(&mut self, key: &'static str) -> Result<Option<Reader<'a>>> {
        let Some(node) = self.node(key) else {
            return Ok(None);
        };
        match &node.value {
            Value::Table(t) => Ok(Some(self.sub(t, &self.key_path(key), node.loc.clone()))),
            _ => self.wrong(self.wrong_type(key, node, "a table")),
        }
    }

    /// An array of tables (`[[method]]`), each with its own reader named `key[i]`.
    pub fn tables(&mut self, key: &'static str) -> Result<Vec<Reader<'a>>> {
        let Some(node) = self.node(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = &node.value else {
            self.sink
                .push(self.wrong_type(key, node, "an array of tables"));
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match &item.value {
                Value::Table(t) => {
                    out.push(self.sub(t, &format!("{}[{i}]", self.key_path(key)), item.loc.clone()))
                }
                _ => self.sink.push(self.wrong_type(key, item, "a table")),
            }
        }
        Ok(out)
    }

    /// Rejects every key that no accessor asked for.
    pub fn finish(self) -> Result<()> {
        self.reject_unknown(&self.known)
    }

    /// Records every key not in `known` as unknown, with the closest known one as a hint
    /// (and a "missing" error for that key, the same mistake, is then not repeated).
    pub fn reject_unknown(&self, known: &[&'static str]) -> Result<()> {
        for entry in &self.table.entries {
            if known.contains(&entry.key.as_str()) {
                continue;
            }
            let hint = match did_you_mean(&entry.key, known) {
                Some(m) => {
                    self.sink.suggested(self.key_path(m));
                    format!("; did you mean `{m}`?")
                }
                None => format!(
                    "; known keys here: {}",
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.sink.push(ManifestError::invalid(
                &entry.key_loc,
                &self.key_path(&entry.key),
                format!("unknown key{hint}"),
            ));
        }
        Ok(())
    }

    fn at<T>(&self, key: &str, node: &Node, value: T) -> At<T> {
        At {
            value,
            loc: node.loc.clone(),
            key: self.key_path(key),
        }
    }
}

pub fn as_float(node: &Node) -> Option<f64> {
    match &node.value {
        Value::Float(x) => Some(*x),
        Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}
