//! Where each key of a YAML document is, so validation errors can name a line.
//!
//! serde_yaml reports lines for its own errors only; this walks the document's events once (with
//! yaml-rust2's marked parser) and records the line of every key and sequence item under the same
//! path syntax serde_path_to_error prints: `pools.cards.providers[1].weight`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub struct LineMap {
    lines: HashMap<String, usize>,
}

impl LineMap {
    /// An unparsable document gives an empty map (serde_yaml reports the syntax error itself).
    pub fn build(text: &str) -> Self {
        let mut walker = Walker::default();
        if Parser::new_from_str(text).load(&mut walker, false).is_err() {
            return Self::default();
        }
        Self {
            lines: walker.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Mapping { key: Option<String>, prefix: String },
    Sequence { index: usize, prefix: String },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Walker {
    /// Called for every node; returns the node's path when it is a value (not a mapping key).
    fn enter_node(&mut self, scalar: Option<&str>, line: usize) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Mapping { key, prefix }) => match key.take() {
                None => {
                    let name = scalar.unwrap_or("?");
                    let path = if prefix.is_empty() {
                        name.to_string()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    self.lines.insert(path.clone(), line);
                    *key = Some(path);
                    None
                }
                Some(path) => Some(path),
            },
            Some(Frame::Sequence { index, prefix }) => {
                let path = format!("{prefix}[{index}]");
                *index += 1;
                self.lines.insert(path.clone(), line);
                Some(path)
            }
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(value, ..) => {
                let _ = self.enter_node(Some(&value), line);
            }
            Event::Alias(_) => {
                let _ = self.enter_node(None, line);
            }
            Event::MappingStart(..) => {
                let prefix = self.enter_node(None, line).unwrap_or_default();
                self.stack.push(Frame::Mapping { key: None, prefix });
            }
            Event::SequenceStart(..) => {
                let prefix = self.enter_node(None, line).unwrap_or_default();
                self.stack.push(Frame::Sequence { index: 0, prefix });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keys_and_items_by_path() {
        let text = "server:\n  listen: 1.2.3.4:80\npools:\n  cards:\n    providers:\n      - name: a\n        weight: 1\n      - name: b\n        weight: 0\n";
        let map = LineMap::build(text);
        assert_eq!(map.line_of("server"), Some(1));
        assert_eq!(map.line_of("server.listen"), Some(2));
        assert_eq!(map.line_of("pools.cards.providers[0].name"), Some(6));
        assert_eq!(map.line_of("pools.cards.providers[1]"), Some(8));
        assert_eq!(map.line_of("pools.cards.providers[1].weight"), Some(9));
        assert_eq!(map.line_of("pools.cards.providers[1].cost"), Some(8));
        assert_eq!(map.line_of("nothing"), None);
    }

    #[test]
    fn flow_style_and_nested_sequences() {
        let text = "tenancy: {strategy: [host, header], tenants: [blue, green]}\n";
        let map = LineMap::build(text);
        assert_eq!(map.line_of("tenancy.tenants[1]"), Some(1));
        assert_eq!(map.line_of("tenancy.strategy"), Some(1));
    }
}
