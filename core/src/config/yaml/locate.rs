//! Where a config path (`listeners[0].tcp_proxy.idle_timout`) is in the YAML text, so that an
//! error can point at its line and column.
//!
//! [`Locator::new`] walks the parser's events once and records, for every node, its path (in
//! the decoder's notation: `.` between keys, `[i]` for list items), the position of its value
//! and, for a mapping entry, of its key. [`Locator::position`] answers for an error: the key for
//! an unknown field (the typo is in the key), else the value; a path that is not in the text (a
//! missing field) falls back to its closest enclosing node. Complex keys, aliases and anchors
//! are tolerated (an alias is a leaf where it appears); text that does not parse gives no
//! positions.

use std::collections::BTreeMap;

use granit_parser::{Event, Marker, Parser};

use crate::config::TextPosition;

/// The positions of every node of one YAML text, by path.
#[derive(Debug, Default)]
pub struct Locator {
    /// Path → (key position for a mapping entry, value position).
    nodes: BTreeMap<String, (Option<TextPosition>, TextPosition)>,
}

/// One open collection while walking the events.
enum Frame {
    /// A mapping at `path`; `key` is the pending key (its text and position) once read.
    Map {
        path: String,
        key: Option<(String, TextPosition)>,
    },
    /// A list at `path`; `next` is the index of its next item.
    Seq { path: String, next: usize },
    /// A collection used as a mapping key: skipped; its position becomes the key's.
    ComplexKey { at: TextPosition },
}

fn position(m: &Marker) -> TextPosition {
    TextPosition {
        line: m.line(),
        column: m.col() + 1,
    }
}

impl Locator {
    /// Walks `text`; stops (keeping what it found) at the first syntax error.
    #[must_use]
    pub fn new(text: &str) -> Locator {
        let mut locator = Locator::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut skipping = 0usize;
        for next in Parser::new_from_str(text) {
            let Ok((event, span)) = next else { break };
            let at = position(&span.start);
            let (is_node, opens) = match &event {
                Event::Scalar(..) | Event::Alias(_) => (true, false),
                Event::MappingStart(..) | Event::SequenceStart(..) => (true, true),
                Event::MappingEnd | Event::SequenceEnd => (false, false),
                _ => continue,
            };
            if !is_node {
                if skipping > 0 {
                    skipping -= 1;
                    if skipping == 0
                        && let Some(Frame::ComplexKey { at }) = stack.pop()
                        && let Some(Frame::Map { key, .. }) = stack.last_mut()
                    {
                        *key = Some(("?".to_owned(), at));
                    }
                } else {
                    stack.pop();
                }
                continue;
            }
            if skipping > 0 {
                if opens {
                    skipping += 1;
                }
                continue;
            }
            // A key of the innermost mapping, or a value (whose path this computes).
            let (path, key_at) = match stack.last_mut() {
                None => (String::new(), None),
                Some(Frame::Map {
                    key: pending @ None,
                    ..
                }) => {
                    if let Event::Scalar(text, ..) = &event {
                        *pending = Some((text.to_string(), at));
                    } else if opens {
                        stack.push(Frame::ComplexKey { at });
                        skipping = 1;
                    }
                    continue;
                }
                Some(Frame::Map { path, key }) => {
                    let (name, key_at) = key.take().unwrap_or((String::new(), at));
                    let child = if path.is_empty() {
                        name
                    } else {
                        format!("{path}.{name}")
                    };
                    (child, Some(key_at))
                }
                Some(Frame::Seq { path, next }) => {
                    let child = format!("{path}[{next}]");
                    *next += 1;
                    (child, None)
                }
                Some(Frame::ComplexKey { .. }) => continue,
            };
            locator.nodes.entry(path.clone()).or_insert((key_at, at));
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map { path, key: None }),
                Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
                _ => {}
            }
        }
        locator
    }

    /// Where the error at `path` with `message` points: see the module doc.
    #[must_use]
    pub fn position(&self, path: &str, message: &str) -> Option<TextPosition> {
        if let Some((key, value)) = self.nodes.get(path) {
            let at_key = message.starts_with("unknown field") || message.starts_with("duplicate");
            return Some(if at_key {
                key.unwrap_or(*value)
            } else {
                *value
            });
        }
        // Not in the text (a missing field): the closest enclosing node that is.
        let mut p = path;
        while let Some(cut) = p.rfind(['.', '[']) {
            p = &p[..cut];
            if let Some((_, value)) = self.nodes.get(p) {
                return Some(*value);
            }
        }
        None
    }
}
