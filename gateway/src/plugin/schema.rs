//! The JSON Schemas plugin functions declare for their `config` (the
//! optional `schemas` export), and checking a reference's `config` against
//! one when a configuration loads.
//!
//! A schema comes from the guest, so it is untrusted input like any other:
//! bounded in size, compiled without resolving any remote or file reference,
//! and refused at load when it is not a valid schema.

/// Largest schema a function may declare.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;

/// Most violations one `config` reports (the rest are counted).
const MAX_VIOLATIONS: usize = 20;

/// One function's declared schema, compiled.
#[derive(Debug)]
pub struct ConfigSchema {
    /// The schema as the function declared it.
    pub text: String,
    validator: jsonschema::Validator,
}

/// One way a `config` breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where in the `config`, as a field path below it: `""` for the config
    /// itself, `.limit`, `.names[1]`.
    pub path: String,
    pub message: String,
}

impl ConfigSchema {
    /// Compiles a declared schema, or says why it is not one.
    pub fn compile(text: String) -> Result<Self, String> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(format!(
                "its config schema is {} bytes, over the limit of {MAX_SCHEMA_BYTES}",
                text.len()
            ));
        }
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("its config schema is not JSON: {e}"))?;
        // Built without the `resolve-http`/`resolve-file` features: a `$ref`
        // to anything outside the schema fails here rather than fetching.
        let validator = jsonschema::validator_for(&value)
            .map_err(|e| format!("its config schema is not a valid JSON Schema: {e}"))?;
        Ok(ConfigSchema { text, validator })
    }

    /// How `config_json` (a reference's `config`, `{}` when it has none)
    /// breaks the schema; empty when it satisfies it.
    pub fn violations(&self, config_json: &str) -> Vec<Violation> {
        let config: serde_json::Value = match serde_json::from_str(config_json) {
            Ok(value) => value,
            Err(e) => {
                return vec![Violation {
                    path: String::new(),
                    message: format!("not JSON: {e}"),
                }];
            }
        };
        let mut violations: Vec<Violation> = self
            .validator
            .iter_errors(&config)
            .map(|e| Violation {
                path: field_path(e.instance_path().as_str()),
                message: e.to_string(),
            })
            .collect();
        if violations.len() > MAX_VIOLATIONS {
            let more = violations.len() - MAX_VIOLATIONS;
            violations.truncate(MAX_VIOLATIONS);
            violations.push(Violation {
                path: String::new(),
                message: format!("and {more} more violations"),
            });
        }
        violations
    }
}

/// A JSON Pointer (`/names/1`) as a field path (`.names[1]`), the form
/// configuration errors use. A numeric step is read as an index: JSON
/// Schema reports array items that way, and a config with numeric object
/// keys is rare enough to print as `[7]`.
fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for step in pointer.split('/').skip(1) {
        let step = step.replace("~1", "/").replace("~0", "~");
        if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{step}]"));
        } else {
            out.push('.');
            out.push_str(&step);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "limit": { "type": "integer", "minimum": 1 },
            "names": { "type": "array", "items": { "type": "string" } }
        },
        "required": ["limit"],
        "additionalProperties": false
    }"#;

    #[test]
    fn reports_each_violation_with_its_field() {
        let schema = ConfigSchema::compile(SCHEMA.into()).expect("a valid schema");
        assert!(schema.violations(r#"{"limit": 3, "names": ["a"]}"#).is_empty());
        let found = schema.violations(r#"{"limit": "3", "names": ["a", 2], "limt": 1}"#);
        let paths: Vec<&str> = found.iter().map(|v| v.path.as_str()).collect();
        assert!(paths.contains(&".limit"), "{found:?}");
        assert!(paths.contains(&".names[1]"), "{found:?}");
        assert!(
            paths.contains(&""),
            "the unknown field is reported on the config: {found:?}"
        );
        assert!(found.iter().any(|v| v.message.contains("limt")), "{found:?}");
        let missing = schema.violations("{}");
        assert_eq!(missing.len(), 1);
        assert!(missing[0].message.contains("limit"), "{missing:?}");
    }

    #[test]
    fn a_bad_schema_is_refused() {
        assert!(
            ConfigSchema::compile("{".into())
                .expect_err("not JSON")
                .contains("not JSON")
        );
        assert!(
            ConfigSchema::compile(r#"{"type": "no-such-type"}"#.into())
                .expect_err("not a schema")
                .contains("not a valid JSON Schema")
        );
        let remote = r#"{"$ref": "https://example.com/schema.json"}"#;
        assert!(
            ConfigSchema::compile(remote.into()).is_err(),
            "remote references are not fetched"
        );
        let huge = format!(r#"{{"description": "{}"}}"#, "x".repeat(MAX_SCHEMA_BYTES));
        assert!(
            ConfigSchema::compile(huge)
                .expect_err("too big")
                .contains("over the limit")
        );
    }

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(field_path(""), "");
        assert_eq!(field_path("/limit"), ".limit");
        assert_eq!(field_path("/names/1/first"), ".names[1].first");
        assert_eq!(field_path("/a~1b"), ".a/b");
    }
}
