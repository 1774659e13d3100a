//! Finds where a field is written in a YAML file, so that errors found after
//! parsing (a limit out of range, a plugin's config against its schema) name
//! the line as parse errors do. serde_yaml's values carry no positions; this
//! re-reads the file's events with yaml-rust2, which does.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `endpoints[0].plugin.config.limit` into its steps.
fn steps(field: &str) -> Option<Vec<Step<'_>>> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(tail) = rest.strip_prefix('[') {
            let end = tail.find(']')?;
            out.push(Step::Index(tail[..end].parse().ok()?));
            rest = &tail[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

#[derive(Default)]
struct Events(Vec<(Event, Marker)>);

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, event: Event, mark: Marker) {
        self.0.push((event, mark));
    }
}

/// The index just past the node that starts at `at`.
fn skip(events: &[(Event, Marker)], at: usize) -> usize {
    match events.get(at).map(|(e, _)| e) {
        Some(Event::MappingStart(..) | Event::SequenceStart(..)) => {
            let mut depth = 0usize;
            for (i, (event, _)) in events.iter().enumerate().skip(at) {
                match event {
                    Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
                    Event::MappingEnd | Event::SequenceEnd => {
                        depth -= 1;
                        if depth == 0 {
                            return i + 1;
                        }
                    }
                    _ => {}
                }
            }
            events.len()
        }
        _ => at + 1,
    }
}

/// The marker of the field `path` within the node at `at`: the key's
/// position for a mapping entry, the item's for a sequence item.
fn find(events: &[(Event, Marker)], at: usize, path: &[Step<'_>]) -> Option<Marker> {
    let (step, rest) = path.split_first()?;
    let (event, _) = events.get(at)?;
    let mut i = at + 1;
    match (event, step) {
        (Event::MappingStart(..), Step::Key(key)) => {
            while !matches!(events.get(i)?.0, Event::MappingEnd) {
                let (key_event, key_mark) = &events[i];
                let value = skip(events, i);
                if matches!(key_event, Event::Scalar(k, ..) if k == key) {
                    return if rest.is_empty() {
                        Some(*key_mark)
                    } else {
                        find(events, value, rest)
                    };
                }
                i = skip(events, value);
            }
            None
        }
        (Event::SequenceStart(..), Step::Index(index)) => {
            for _ in 0..*index {
                if matches!(events.get(i)?.0, Event::SequenceEnd) {
                    return None;
                }
                i = skip(events, i);
            }
            let (item, mark) = events.get(i)?;
            match item {
                Event::SequenceEnd => None,
                _ if !rest.is_empty() => find(events, i, rest),
                // A block mapping's own marker is not where it is written:
                // its first key's is.
                Event::MappingStart(..) => match events.get(i + 1) {
                    Some((Event::Scalar(..), first_key)) => Some(*first_key),
                    _ => Some(*mark),
                },
                _ => Some(*mark),
            }
        }
        _ => None,
    }
}

/// Line and column (1-based) where `field` (a path such as
/// `endpoints[0].plugin.config.limit`) is written in the YAML `text`; `None`
/// when the text does not parse or the field is not written there (a
/// default, an alias).
pub fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let path = steps(field)?;
    let mut events = Events::default();
    Parser::new_from_str(text).load(&mut events, false).ok()?;
    // StreamStart, DocumentStart, then the document's root node.
    let root = events.0.iter().position(|(e, _)| matches!(e, Event::DocumentStart))? + 1;
    let mark = find(&events.0, root, &path)?;
    Some((mark.line(), mark.col() + 1))
}

/// Like [`locate`], or where the nearest enclosing field is written when
/// `field` itself is not (a required field that is missing is reported on
/// the mapping that lacks it).
pub fn nearest(text: &str, field: &str) -> Option<(usize, usize)> {
    let mut field = field;
    loop {
        if let Some(found) = locate(text, field) {
            return Some(found);
        }
        field = &field[..field.rfind(['.', '['])?];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "\
id: orders
listen_path: /orders/
endpoints:
  - path: /a
  - path: /b
    plugin:
      path: x.wasm
      function: f
      config: { limit: 5, names: [a, b] }
plugins:
  pre:
    - path: y.wasm
      function: g
      config:
        nested:
          deep: true
";

    #[test]
    fn finds_keys_items_and_flow_collections() {
        assert_eq!(locate(API, "listen_path"), Some((2, 1)));
        assert_eq!(locate(API, "endpoints[1]"), Some((5, 5)));
        assert_eq!(locate(API, "endpoints[1].plugin.function"), Some((8, 7)));
        assert_eq!(locate(API, "endpoints[1].plugin.config.limit"), Some((9, 17)));
        assert_eq!(locate(API, "endpoints[1].plugin.config.names[1]"), Some((9, 38)));
        assert_eq!(locate(API, "plugins.pre[0].config.nested.deep"), Some((16, 11)));
    }

    #[test]
    fn nearest_falls_back_to_the_enclosing_field() {
        assert_eq!(nearest(API, "endpoints[1].plugin.config.missing"), Some((9, 7)));
        assert_eq!(nearest(API, "endpoints[0].plugin.config"), Some((4, 5)));
        assert_eq!(nearest(API, "nothing.here"), None);
    }

    #[test]
    fn absent_fields_and_bad_paths_have_no_location() {
        assert_eq!(locate(API, "endpoints[2]"), None);
        assert_eq!(locate(API, "endpoints[0].plugin"), None);
        assert_eq!(locate(API, "listen_path.x"), None);
        assert_eq!(locate(API, "endpoints[x]"), None);
        assert_eq!(locate("{ unclosed", "a"), None);
        assert_eq!(locate("", "a"), None);
    }
}
