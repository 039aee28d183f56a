//! Line and column of every key in a YAML document, so that problems found after
//! deserialization (a missing path, an unknown source) still point into the file.
//!
//! serde_yaml only reports positions for its own syntax and type errors; this index is
//! built from yaml-rust2's marked event stream and looked up by key path.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A path of mapping keys and sequence indices from the document root, e.g.
/// `["domains", "sales", "products", "orders"]`.
pub type KeyPath = Vec<String>;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Positions of the keys (and sequence items) of one YAML document.
#[derive(Debug, Default, Clone)]
pub struct SpanIndex {
    positions: HashMap<KeyPath, Position>,
    /// Keys that appear twice in one mapping: (path, first position, second position).
    pub duplicates: Vec<(KeyPath, Position, Position)>,
}

impl SpanIndex {
    /// Index `text`. Syntax errors are reported by serde_yaml, so a document that does
    /// not scan here simply yields the positions seen before the error.
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        SpanIndex {
            positions: builder.positions,
            duplicates: builder.duplicates,
        }
    }

    /// The position of `path`, or of its closest indexed ancestor.
    pub fn find(&self, path: &[String]) -> Position {
        (0..=path.len())
            .rev()
            .find_map(|n| self.positions.get(&path[..n]).copied())
            .unwrap_or(Position { line: 1, column: 1 })
    }
}

enum Frame {
    /// Inside a mapping; `key` is the pending key, or None when a key is expected next.
    Mapping {
        key: Option<String>,
        pushed: bool,
    },
    Sequence {
        next: usize,
        pushed: bool,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    path: KeyPath,
    positions: HashMap<KeyPath, Position>,
    duplicates: Vec<(KeyPath, Position, Position)>,
}

impl Builder {
    /// Called before a value node starts: returns true if the node is a value (and pushes
    /// its path segment), false if it is a mapping key.
    fn enter_value(&mut self, mark: Marker) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Mapping { key, .. }) => match key.take() {
                Some(k) => {
                    self.path.push(k);
                    true
                }
                None => false,
            },
            Some(Frame::Sequence { next, .. }) => {
                self.path.push(next.to_string());
                *next += 1;
                self.positions.insert(self.path.clone(), position(mark));
                true
            }
            None => {
                self.positions.insert(Vec::new(), position(mark));
                false
            }
        }
    }

    fn leave_value(&mut self, was_value: bool) {
        if was_value {
            self.path.pop();
        }
    }
}

fn position(mark: Marker) -> Position {
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut()
                    && key.is_none()
                {
                    let mut key_path = self.path.clone();
                    key_path.push(text.clone());
                    if let Some(first) = self.positions.insert(key_path.clone(), position(mark)) {
                        self.duplicates
                            .push((key_path.clone(), first, position(mark)));
                        // Keep pointing at the first occurrence.
                        self.positions.insert(key_path, first);
                    }
                    *key = Some(text);
                    return;
                }
                let was_value = self.enter_value(mark);
                self.leave_value(was_value);
            }
            Event::Alias(_) => {
                let was_value = self.enter_value(mark);
                self.leave_value(was_value);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let pushed = self.enter_value(mark);
                // A collection used as a mapping key (rare) is indexed as the key `?`.
                if !pushed && let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                    *key = Some(String::from("?"));
                }
                self.stack.push(match ev {
                    Event::MappingStart(..) => Frame::Mapping { key: None, pushed },
                    _ => Frame::Sequence { next: 0, pushed },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(Frame::Mapping { pushed, .. } | Frame::Sequence { pushed, .. }) =
                    self.stack.pop()
                {
                    self.leave_value(pushed);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> KeyPath {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn indexes_nested_keys_and_sequences() {
        let text = "version: 1\ndomains:\n  sales:\n    owner: x\n    products:\n      orders: { output_ports: { li: { path: a } } }\ninclude:\n  - a.yaml\n  - b.yaml\n";
        let idx = SpanIndex::build(text);
        assert_eq!(idx.find(&p(&["version"])), Position { line: 1, column: 1 });
        assert_eq!(
            idx.find(&p(&["domains", "sales"])),
            Position { line: 3, column: 3 }
        );
        assert_eq!(idx.find(&p(&["domains", "sales", "owner"])).line, 4);
        let li = idx.find(&p(&[
            "domains",
            "sales",
            "products",
            "orders",
            "output_ports",
            "li",
            "path",
        ]));
        assert_eq!(li.line, 6);
        assert_eq!(idx.find(&p(&["include", "1"])).line, 9);
        assert!(idx.duplicates.is_empty());
        // Unknown deeper paths fall back to the closest ancestor.
        assert_eq!(idx.find(&p(&["domains", "sales", "nope", "x"])).line, 3);
    }
}
