//! `portcullis import tyk`: Tyk API definitions (classic JSON and Tyk OAS)
//! made into Portcullis API files, a gateway file that loads them, and a
//! report that accounts for every field: mapped, mapped approximately
//! (saying how it differs), or not mapped (saying why). Nothing is dropped
//! without a line in the report.
//!
//! Each definition is read as JSON and taken apart field by field
//! ([`Fields::take`]); what is left at the end of each object is reported,
//! as known but not mapped (with the reason) or unknown.

mod report;
mod tyk;
mod tyk_oas;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};
use serde_yaml::Mapping;

pub use report::{Entry, Report, Status};

/// What `import tyk` was asked to do.
#[derive(Debug)]
pub struct Options {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    /// Write (and build) a plugin scaffold per custom middleware.
    pub stub_plugins: bool,
    /// The SDK for the stubs (`plugin new --sdk`).
    pub sdk: Option<PathBuf>,
}

/// A plugin the imported configuration names, to port from Tyk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The `.wasm` file's name, without extension (also the crate's).
    pub name: String,
    /// The function, as Tyk named it.
    pub function: String,
    pub kind: crate::plugin_tools::scaffold::Kind,
    /// Go, Python, JavaScript, Lua, gRPC...
    pub driver: String,
    /// Where it was in the Tyk definition.
    pub origin: String,
}

/// One imported API: its file's YAML and what the report says of it.
#[derive(Debug)]
pub struct Imported {
    pub id: String,
    pub source: PathBuf,
    pub api: Mapping,
    pub ports: Vec<Port>,
}

/// Reads every definition under `inputs`, writes the configuration into
/// `out`, and returns the report (also written there as `IMPORT.md`).
pub fn run(options: &Options) -> anyhow::Result<Report> {
    let files = definition_files(&options.inputs)?;
    if files.is_empty() {
        bail!("no Tyk API definitions (*.json) found in the given paths");
    }
    let mut report = Report::default();
    let mut apis: Vec<Imported> = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let value: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
        let Value::Object(object) = value else {
            report.skip(file, "not a JSON object");
            continue;
        };
        let imported = if object.contains_key("x-tyk-api-gateway") {
            tyk_oas::import(file, object, &mut report)
        } else if object.contains_key("proxy") || object.contains_key("api_definition") {
            // The Dashboard's export wraps the definition.
            let object = match object.get("api_definition") {
                Some(Value::Object(inner)) => inner.clone(),
                _ => object,
            };
            tyk::import(file, object, &mut report)
        } else {
            report.skip(
                file,
                "neither a classic Tyk API definition (`proxy`) nor Tyk OAS (`x-tyk-api-gateway`)",
            );
            continue;
        };
        match imported {
            Ok(mut api) => {
                let taken = apis
                    .iter()
                    .filter(|a| a.id == api.id || a.id.starts_with(&format!("{}-", api.id)));
                if taken.count() > 0 {
                    let renamed = format!("{}-{}", api.id, apis.len() + 1);
                    report.add(
                        &api.id,
                        "api_id",
                        Status::Approximate,
                        format!("another definition has this id; imported as {renamed}"),
                    );
                    api.id = renamed.clone();
                    api.api.insert("id".into(), renamed.into());
                }
                apis.push(api);
            }
            Err(why) => report.skip(file, &why),
        }
    }
    write(options, &apis, &mut report)?;
    Ok(report)
}

/// The `*.json` files among `inputs` (directories are read one level deep,
/// sorted).
fn definition_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("cannot read {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
                .collect();
            found.sort();
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            bail!("{}: no such file or directory", input.display());
        }
    }
    Ok(files)
}

/// Writes `gateway.yaml`, `apis/ID.yaml`, the plugin stubs and `IMPORT.md`.
fn write(options: &Options, apis: &[Imported], report: &mut Report) -> anyhow::Result<()> {
    let out = &options.out;
    std::fs::create_dir_all(out.join("apis")).with_context(|| format!("cannot create {}", out.display()))?;
    let gateway = "# Written by `portcullis import tyk`; see IMPORT.md.\nlisten: 127.0.0.1:8080\napis: [apis/]\n";
    std::fs::write(out.join("gateway.yaml"), gateway)?;
    for api in apis {
        let mut text = format!(
            "# Imported from {} by `portcullis import tyk`; see IMPORT.md.\n",
            api.source.display()
        );
        text.push_str(&serde_yaml::to_string(&api.api)?);
        std::fs::write(out.join("apis").join(format!("{}.yaml", api.id)), text)?;
        report.apis.push((api.id.clone(), api.source.clone()));
    }
    let ports: Vec<&Port> = apis.iter().flat_map(|a| &a.ports).collect();
    report.ports = ports.iter().map(|p| (*p).clone()).collect();
    if options.stub_plugins && !ports.is_empty() {
        stub_plugins(options, &ports, report)?;
    }
    std::fs::write(out.join("IMPORT.md"), report.markdown())?;
    Ok(())
}

/// A scaffold per plugin to port (the `plugin new` template, exporting the
/// Tyk function's name), built into the `.wasm` the configuration names.
fn stub_plugins(options: &Options, ports: &[&Port], report: &mut Report) -> anyhow::Result<()> {
    let dir = options.out.join("plugins");
    std::fs::create_dir_all(&dir)?;
    let mut seen = std::collections::BTreeSet::new();
    for port in ports {
        if !seen.insert(&port.name) || dir.join(&port.name).exists() {
            continue;
        }
        crate::plugin_tools::scaffold::stub(&port.name, port.kind, &port.function, &dir, options.sdk.as_deref())?;
    }
    // One target directory for all of them: the SDK is built once.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    for name in &seen {
        let crate_dir = dir.join(name);
        eprintln!("building the stub plugins/{name} (cargo build --release)");
        let status = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "--release", "--quiet"])
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            // The host build's flags are not the guest's.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .status();
        let built = target.join(format!("wasm32-wasip2/release/{}.wasm", name.replace('-', "_")));
        match status {
            Ok(s) if s.success() && built.is_file() => {
                std::fs::copy(&built, dir.join(format!("{name}.wasm")))?;
            }
            _ => report.notes.push(format!(
                "could not build the stub `{name}`: build it with `cargo build --release` in plugins/{name} and copy target/wasm32-wasip2/release/{}.wasm to plugins/{name}.wasm",
                name.replace('-', "_")
            )),
        }
    }
    report.stubs = true;
    Ok(())
}

/// Taking a JSON object apart: each field read is removed, so what is left
/// at the end is what was not mapped.
pub(crate) struct Fields<'r> {
    object: Map<String, Value>,
    /// `proxy.` and the like, for the report.
    prefix: String,
    api: String,
    report: &'r mut Report,
}

impl<'r> Fields<'r> {
    fn new(object: Map<String, Value>, prefix: &str, api: &str, report: &'r mut Report) -> Self {
        Fields {
            object,
            prefix: prefix.to_owned(),
            api: api.to_owned(),
            report,
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The field's value, removed; `None` when absent or at its default
    /// (null, false, 0, empty): such a field has no behaviour to map.
    fn take(&mut self, key: &str) -> Option<Value> {
        let value = self.object.remove(key)?;
        if is_default(&value) {
            self.report.defaults += 1;
            return None;
        }
        Some(value)
    }

    fn take_str(&mut self, key: &str) -> Option<String> {
        match self.take(key)? {
            Value::String(s) => Some(s),
            other => {
                self.approximate(key, format!("expected a string, found {other}; ignored"));
                None
            }
        }
    }

    fn take_bool(&mut self, key: &str) -> bool {
        matches!(self.take(key), Some(Value::Bool(true)))
    }

    fn take_u64(&mut self, key: &str) -> Option<u64> {
        match self.take(key)? {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            _ => None,
        }
    }

    fn take_object(&mut self, key: &str) -> Option<Map<String, Value>> {
        match self.take(key)? {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    fn take_array(&mut self, key: &str) -> Vec<Value> {
        match self.take(key) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        }
    }

    /// A nested object, taken apart the same way.
    fn nested(&mut self, key: &str) -> Option<Fields<'_>> {
        let object = self.take_object(key)?;
        let prefix = format!("{}{key}.", self.prefix);
        let api = self.api.clone();
        Some(Fields::new(object, &prefix, &api, self.report))
    }

    fn mapped(&mut self, key: &str, note: impl Into<String>) {
        let field = self.path(key);
        self.report.add(&self.api, &field, Status::Mapped, note.into());
    }

    fn approximate(&mut self, key: &str, note: impl Into<String>) {
        let field = self.path(key);
        self.report.add(&self.api, &field, Status::Approximate, note.into());
    }

    fn not_mapped(&mut self, key: &str, why: impl Into<String>) {
        let field = self.path(key);
        self.report.add(&self.api, &field, Status::NotMapped, why.into());
    }

    /// Reports every field left: `known` gives the reason for the fields
    /// Portcullis knows but does not map; any other is unknown.
    fn finish(mut self, known: &[(&str, &str)]) {
        let rest = std::mem::take(&mut self.object);
        for (key, value) in rest {
            if is_default(&value) {
                self.report.defaults += 1;
                continue;
            }
            match known.iter().find(|(k, _)| *k == key) {
                Some((_, why)) => self.not_mapped(&key, *why),
                None => self.not_mapped(&key, "unknown field: not a Tyk field this importer knows"),
            }
        }
    }
}

/// Whether a JSON value carries no behaviour: null, false, 0, "", [], {}.
fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() || o.values().all(is_default),
    }
}

/// An id a file name can carry: lower case letters, digits, `-`.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_owned();
    if out.is_empty() { "api".into() } else { out }
}

/// A YAML mapping built in order.
fn map(pairs: impl IntoIterator<Item = (&'static str, serde_yaml::Value)>) -> serde_yaml::Value {
    let mut mapping = Mapping::new();
    for (k, v) in pairs {
        mapping.insert(k.into(), v);
    }
    serde_yaml::Value::Mapping(mapping)
}

/// A JSON value as YAML.
fn yaml(value: &Value) -> serde_yaml::Value {
    serde_yaml::to_value(value).unwrap_or(serde_yaml::Value::Null)
}

/// A Tyk endpoint path (a regular expression, `{name}` for a segment) as a
/// Portcullis template, or why it cannot be one. Tyk matches the path as a
/// prefix unless it ends with `$`; templates match the whole path.
fn template(path: &str) -> Result<(String, bool), String> {
    let mut path = path.trim().to_owned();
    let exact = path.ends_with('$');
    if exact {
        path.pop();
    }
    path = path.trim_start_matches('^').to_owned();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    // A trailing wildcard is a catch-all.
    for tail in ["/(.*)", "/.*", "(.*)", ".*"] {
        if let Some(head) = path.strip_suffix(tail) {
            let head = head.trim_end_matches('/');
            path = format!("{head}/{{*rest}}");
            break;
        }
    }
    // A one-segment group, before splitting on the `/` inside it.
    let path = path.replace("([^/]+)", "\u{0}").replace("[^/]+", "\u{0}");
    let mut out = String::new();
    for segment in path.split('/').skip(1) {
        out.push('/');
        let is_param = segment.starts_with('{') && segment.ends_with('}');
        if is_param {
            out.push_str(segment);
        } else if segment == "\u{0}" {
            out.push_str(&format!("{{p{}}}", out.matches('{').count() + 1));
        } else if segment.chars().any(|c| "()[]*+?|\\$^".contains(c)) {
            return Err(format!(
                "{path:?} is a regular expression a path template cannot express"
            ));
        } else {
            out.push_str(segment);
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok((out, exact))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tyk_paths_become_templates() {
        assert_eq!(template("/users/{id}"), Ok(("/users/{id}".into(), false)));
        assert_eq!(template("users"), Ok(("/users".into(), false)));
        assert_eq!(template("/files/.*"), Ok(("/files/{*rest}".into(), false)));
        assert_eq!(template("/files/(.*)"), Ok(("/files/{*rest}".into(), false)));
        assert_eq!(template("^/health$"), Ok(("/health".into(), true)));
        assert_eq!(template("/a/([^/]+)/b"), Ok(("/a/{p1}/b".into(), false)));
        assert!(template("/v[0-9]+/x").is_err());
    }

    #[test]
    fn defaults_carry_no_behaviour() {
        for value in [
            json!(null),
            json!(false),
            json!(0),
            json!(""),
            json!([]),
            json!({}),
            json!({"a": false}),
        ] {
            assert!(is_default(&value), "{value}");
        }
        for value in [json!(true), json!(1), json!("x"), json!([0]), json!({"a": 1})] {
            assert!(!is_default(&value), "{value}");
        }
    }

    use serde_json::json;
}
