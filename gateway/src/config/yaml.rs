//! Reading a YAML file with bounds (size, nesting) checked before the
//! parser runs, and errors that carry the line and the field.

use super::*;

/// The largest configuration file read (gateway or API file).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The deepest nesting of flow collections (`[...]`, `{...}`) a
/// configuration file may hold. The YAML parser's work grows with the
/// square of this depth, so a file of a few megabytes nested 100,000 deep
/// would take minutes to refuse.
pub const MAX_FLOW_DEPTH: usize = 64;

pub(super) fn parse_yaml<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let read = || -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        // One byte past the limit tells a file at the limit from a larger one.
        std::fs::File::open(file)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    let text = read().map_err(|e| ConfigError::new(file, None, format!("cannot read: {e}")))?;
    parse_yaml_text(file, &text)
}

/// Refuses a text over [`MAX_FILE_BYTES`] or nested deeper than
/// [`MAX_FLOW_DEPTH`], before the parser sees it.
pub(super) fn check_bounds(file: &Path, text: &str) -> Result<(), ConfigError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::new(
            file,
            None,
            format!(
                "larger than {} MiB, the limit for a configuration file: split it into several API files",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    let (mut depth, mut quote, mut comment) = (0usize, None, false);
    let (mut line, mut previous) = (1usize, b'\n');
    for &byte in text.as_bytes() {
        match (quote, byte) {
            (_, b'\n') => {
                line += 1;
                comment = false;
                // Only flow scalars span lines in configuration files; a
                // quote left open here is part of a block scalar's text.
                quote = None;
            }
            _ if comment => {}
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'#') if previous.is_ascii_whitespace() => comment = true,
            (None, b'"' | b'\'') if matches!(previous, b' ' | b'\t' | b'[' | b'{' | b',' | b':' | b'\n') => {
                quote = Some(byte);
            }
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    let mut error = ConfigError::new(
                        file,
                        None,
                        format!(
                            "nested deeper than {MAX_FLOW_DEPTH} levels of [ ] or {{ }}, the limit for a configuration file"
                        ),
                    );
                    error.location = Some((line, 1));
                    return Err(error);
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = byte;
    }
    Ok(())
}

/// Parses `text`, read from `file` (which only names it in errors).
pub(super) fn parse_yaml_text<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    check_bounds(file, text)?;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        // serde_yaml appends " at line L column C"; we print the location up front.
        let message = inner.to_string();
        let suffix = location
            .map(|(l, c)| format!(" at line {l} column {c}"))
            .unwrap_or_default();
        let mut message = message.strip_suffix(suffix.as_str()).unwrap_or(&message).to_owned();
        // serde_yaml sometimes starts with the field path, or with its
        // parent's (an unknown field); we print our own.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.is_empty()
            && !head.contains(' ')
            && path.starts_with(head)
        {
            message = rest.to_owned();
        }
        ConfigError {
            file: file.to_owned(),
            location,
            field: (path != "." && !path.is_empty()).then_some(path),
            message,
        }
    })
}
pub(super) fn yaml_to_json(file: &Path, field: &str, value: Option<serde_yaml::Value>) -> Result<String, ConfigError> {
    match value {
        None | Some(serde_yaml::Value::Null) => Ok("{}".into()),
        Some(v) => serde_json::to_string(&v)
            .map_err(|e| ConfigError::new(file, Some(field.into()), format!("cannot be expressed as JSON: {e}"))),
    }
}

/// A `fan_out` block written outside a configuration file (`portcullis
/// plugin call --fan-out`): YAML or JSON `text` from `source` (which names
/// it in errors), checked as one in an API file is, against `allow` and
/// for requests that carry the path parameters `params`.
pub fn fan_out_from_text(
    source: &Path,
    text: &str,
    allow: &[AllowRule],
    params: &[&str],
    limits: &Limits,
) -> Result<FanOut, ConfigError> {
    let file: schema::FanOutFile = parse_yaml_text(source, text)?;
    let scope = fan_out::Scope {
        allow,
        params: Some(params.iter().map(|p| (*p, false)).collect()),
    };
    fan_out::resolve(source, "", file, &scope, limits).map_err(ConfigError::located)
}
