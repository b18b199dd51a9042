//! A small decoder from a parsed YAML tree (as [`serde_json::Value`]) into typed config, which —
//! unlike serde's derive — keeps going after a problem, so that `sluice validate` can list
//! **every** problem in a file, each with its path (`listeners[0].address`).
//!
//! Each typed reader returns `Option<T>`: `None` means "a problem was recorded here; carry on".
//! A mapping is read through [`Obj`], which remembers which keys were read, so that unknown keys
//! (typos) are reported too.

use serde_json::{Map, Value};

use crate::config::ConfigError;

/// Collects problems while decoding.
#[derive(Default)]
pub(crate) struct Decoder {
    pub(crate) errors: Vec<ConfigError>,
    /// Every cluster reference resolved: the cluster's index and the path that names it (the
    /// checks that depend on who uses a cluster run once everything is decoded).
    pub(crate) cluster_refs: Vec<(usize, String)>,
}

/// Longest path shown in an error (a path holds mapping keys, which a config may make huge).
pub(crate) const MAX_PATH_CHARS: usize = 256;
/// Longest message shown in an error (a message may echo the rejected value).
pub(crate) const MAX_MESSAGE_CHARS: usize = 512;

/// `s` when it has at most `max` characters; otherwise its first and last characters around
/// `… [N characters elided] …`, in at most about `max` characters (so that a rejected 50 MB
/// value is not echoed in full, while the explanation at the end of a message stays).
pub(crate) fn elide(s: &str, max: usize) -> String {
    let total = s.chars().count();
    if total <= max {
        return s.to_owned();
    }
    let tail = max / 3;
    let head = max - tail - 40.min(max - tail);
    let elided = total - head - tail;
    let mut out = String::with_capacity(max + 8);
    out.extend(s.chars().take(head));
    out.push_str(&format!("… [{elided} characters elided] …"));
    out.extend(s.chars().skip(total - tail));
    out
}

/// The path of a child: `a.b`, `a[3]`.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl Decoder {
    /// Records a problem. A long path or message (one echoing a huge value) is shortened in
    /// its middle ([`elide`]): the start of the value and the explanation after it stay.
    pub(crate) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: elide(path, MAX_PATH_CHARS),
            message: elide(&message.into(), MAX_MESSAGE_CHARS),
            position: None,
        });
    }

    pub(crate) fn object<'v>(&mut self, path: &str, v: &'v Value) -> Option<Obj<'v>> {
        match v {
            Value::Object(map) => Some(Obj {
                path: path.to_owned(),
                map,
                known: Vec::new(),
            }),
            other => {
                self.error(path, format!("expected a mapping, found {}", kind(other)));
                None
            }
        }
    }

    pub(crate) fn list<T>(
        &mut self,
        path: &str,
        v: &Value,
        mut item: impl FnMut(&mut Self, &str, &Value) -> Option<T>,
    ) -> Option<Vec<T>> {
        match v {
            Value::Array(items) => {
                let before = self.errors.len();
                let out: Vec<T> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| item(self, &index(path, i), v))
                    .collect();
                (self.errors.len() == before).then_some(out)
            }
            other => {
                self.error(path, format!("expected a list, found {}", kind(other)));
                None
            }
        }
    }

    pub(crate) fn string<'v>(&mut self, path: &str, v: &'v Value) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            other => {
                self.error(path, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&mut self, path: &str, v: &Value) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.error(
                    path,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A name ([`super::values::check_name`]).
    pub(crate) fn name(&mut self, path: &str, v: &Value) -> Option<String> {
        let s = self.string(path, v)?;
        match super::values::check_name(s) {
            Ok(()) => Some(s.to_owned()),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    pub(crate) fn u64_in(
        &mut self,
        path: &str,
        v: &Value,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                let shown = match v {
                    Value::String(s) => format!("{s:?}"),
                    other => other.to_string(),
                };
                self.error(
                    path,
                    format!(
                        "{shown} is not a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    pub(crate) fn parsed<T>(
        &mut self,
        path: &str,
        v: &Value,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.string(path, v)?;
        match parse(s) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(path, e);
                None
            }
        }
    }

    /// A duration (`250ms`, `1s`, `5m`, `1h`); a bare `0` means zero.
    pub(crate) fn duration(&mut self, path: &str, v: &Value) -> Option<std::time::Duration> {
        match v {
            Value::Number(n) if n.as_u64() == Some(0) => Some(std::time::Duration::ZERO),
            Value::Number(n) => {
                self.error(
                    path,
                    format!("{n} has no unit (expected a number and a unit: 250ms, 1s, 5m, 1h)"),
                );
                None
            }
            _ => self.parsed(path, v, super::values::parse_duration),
        }
    }

    /// One of a fixed set of words.
    pub(crate) fn one_of<T: Copy>(
        &mut self,
        path: &str,
        v: &Value,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let s = self.string(path, v)?;
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == s) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        self.error(
            path,
            format!(
                "unknown value {s:?} (expected one of: {}){}",
                names.join(", "),
                suggestion(s, &names)
            ),
        );
        None
    }
}

/// A mapping being read; reports unknown keys on [`Obj::finish`].
pub(crate) struct Obj<'v> {
    pub(crate) path: String,
    map: &'v Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'v> Obj<'v> {
    /// An optional key: its value and its path.
    pub(crate) fn opt(&mut self, key: &'static str) -> Option<(&'v Value, String)> {
        self.known.push(key);
        self.map.get(key).map(|v| (v, child(&self.path, key)))
    }

    /// A required key; records "missing" when absent.
    pub(crate) fn req(
        &mut self,
        dec: &mut Decoder,
        key: &'static str,
    ) -> Option<(&'v Value, String)> {
        let found = self.opt(key);
        if found.is_none() {
            dec.error(&child(&self.path, key), "missing (this field is required)");
        }
        found
    }

    /// Reports every key that no reader asked for.
    pub(crate) fn finish(self, dec: &mut Decoder) {
        for key in self.map.keys() {
            if !self.known.contains(&key.as_str()) {
                let mut expected = self.known.clone();
                expected.dedup();
                dec.error(
                    &child(&self.path, key),
                    format!(
                        "unknown field (expected one of: {}){}",
                        expected.join(", "),
                        suggestion(key, &expected)
                    ),
                );
            }
        }
    }
}

/// `; did you mean 'NAME'?` for the known name closest to `typed`, when it is within a small
/// edit distance (one edit for names of up to four characters, two beyond; ties go to the
/// first known name), else nothing.
///
/// Names whose lengths differ by more than the limit are skipped without computing the
/// distance (the length difference is a lower bound of it): a hostile multi-megabyte key then
/// costs one pass, not a quadratic table per known name.
fn suggestion(typed: &str, known: &[&str]) -> String {
    let typed_chars = typed.chars().count();
    let limit = if typed_chars <= 4 { 1 } else { 2 };
    known
        .iter()
        .filter(|k| k.chars().count().abs_diff(typed_chars) <= limit)
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("; did you mean '{k}'?"))
        .unwrap_or_default()
}

/// Levenshtein distance (insertions, deletions, substitutions), over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
