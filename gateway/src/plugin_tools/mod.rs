//! The plugin author's commands: `portcullis plugin new`, `inspect`,
//! `call`, and `push` and `sign` (in `registry`).

pub mod call;
pub mod registry;
pub mod scaffold;

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::config::Limits;
use crate::plugin::{HookKind, Inspection, PluginRuntime};
use crate::upstream::outbound::OutboundClient;

/// Loads a component the way the gateway does and describes it.
pub async fn inspect(file: &Path) -> anyhow::Result<Inspection> {
    let runtime = Arc::new(PluginRuntime::new(&Limits::default(), None, OutboundClient::new(1))?);
    let file = std::path::absolute(file)?;
    runtime
        .inspect(&file)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// A hook kind as the YAML and the reports name it.
fn kind(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Request => "request",
        HookKind::Auth => "auth",
        HookKind::Response => "response",
    }
}

/// `inspect --json`.
pub fn inspection_json(file: &Path, i: &Inspection) -> serde_json::Value {
    let functions: Vec<serde_json::Value> = i
        .functions
        .iter()
        .map(|f| {
            let schema = f
                .config_schema
                .as_deref()
                .map(|s| serde_json::from_str::<serde_json::Value>(s).unwrap_or_else(|_| s.into()));
            serde_json::json!({
                "name": f.name,
                "kind": kind(f.kind),
                "wants_body": f.wants_body,
                "config_schema": schema,
            })
        })
        .collect();
    serde_json::json!({
        "file": file.display().to_string(),
        "contract": i.contract,
        "functions": functions,
        "imports": i.imports,
        "lean": i.core_instances == 1,
        "core_instances": i.core_instances,
        "size": i.size,
        "sha256": i.sha256,
    })
}

/// `inspect` for a terminal.
pub fn inspection_text(file: &Path, i: &Inspection) -> String {
    let mut out = format!(
        "{}\n  contract  portcullis:plugin@{}\n  size      {} bytes\n  sha256    {}\n  lean      {}\n",
        file.display(),
        i.contract,
        i.size,
        i.sha256,
        if i.core_instances == 1 {
            "yes: links as one core instance".to_owned()
        } else {
            format!(
                "no: links as {} core instances (imports that take strings or lists, see imports)",
                i.core_instances
            )
        }
    );
    out.push_str(&format!("functions ({}):\n", i.functions.len()));
    for f in &i.functions {
        let body = if f.wants_body { ", reads the body" } else { "" };
        let schema = if f.config_schema.is_some() {
            ", config schema below"
        } else {
            ""
        };
        out.push_str(&format!("  {:<24} {}{body}{schema}\n", f.name, kind(f.kind)));
    }
    out.push_str(&format!("imports ({}):\n", i.imports.len()));
    for import in &i.imports {
        out.push_str(&format!("  {import}\n"));
    }
    for f in i.functions.iter().filter(|f| f.config_schema.is_some()) {
        let schema = f.config_schema.as_deref().unwrap_or_default();
        let pretty = serde_json::from_str::<serde_json::Value>(schema)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| schema.to_owned());
        out.push_str(&format!(
            "config schema of `{}`:\n  {}\n",
            f.name,
            pretty.replace('\n', "\n  ")
        ));
    }
    out.push_str(&format!("pin it in a plugin reference with:  sha256: {}\n", i.sha256));
    out
}

/// A tracing layer that keeps the plugin's log lines (target `plugin`) for
/// `plugin call`'s report.
#[derive(Debug)]
pub struct CaptureLogs(pub Arc<Mutex<Vec<call::LogLine>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "plugin" {
            return;
        }
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let line = call::LogLine {
            level: event.metadata().level().to_string(),
            message: message.0,
        };
        crate::sync::lock(&self.0).push(line);
    }
}
