//! What a component offers, for `portcullis plugin inspect`: its contract,
//! functions, imports and cost to instantiate.

use super::*;

/// What a component offers (`portcullis plugin inspect`).
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The contract version it speaks: `0.2` or `0.1`.
    pub contract: &'static str,
    pub functions: Vec<InspectedFunction>,
    /// What it imports, by interface name.
    pub imports: Vec<String>,
    /// How many core module instances one instantiation links: one for a
    /// component whose imports take no strings or lists (the cheapest kind
    /// to instantiate), three for most others (a shim and a fixup module
    /// carry the indirect imports).
    pub core_instances: usize,
    /// File size in bytes.
    pub size: usize,
    /// The file's SHA-256, in hex (the value for `sha256:`).
    pub sha256: String,
}

/// One function of a component.
#[derive(Debug, Clone)]
pub struct InspectedFunction {
    pub name: String,
    pub kind: HookKind,
    pub wants_body: bool,
    /// The JSON Schema it declares for its `config`.
    pub config_schema: Option<String>,
}

/// What loading learns about a component: its contract, its functions and
/// their config schemas.
pub(super) type Description = (Contract, Vec<FunctionInfo>, Vec<Option<ConfigSchema>>);

/// How many core module instances instantiating the component `bytes`
/// creates (the modules it instantiates, not the instances it assembles
/// from exports).
pub(super) fn core_instances(bytes: &[u8]) -> usize {
    wasmparser::Parser::new(0)
        .parse_all(bytes)
        .filter_map(|payload| match payload {
            Ok(wasmparser::Payload::InstanceSection(reader)) => Some(
                reader
                    .into_iter()
                    .filter(|i| matches!(i, Ok(wasmparser::Instance::Instantiate { .. })))
                    .count(),
            ),
            _ => None,
        })
        .sum()
}

impl PluginRuntime {
    /// What a component offers, as `portcullis plugin inspect` reports it.
    pub async fn inspect(self: &Arc<Self>, path: &Path) -> Result<Inspection, LoadErrorKind> {
        let bytes = tokio::fs::read(path).await.map_err(LoadErrorKind::Read)?;
        let component = self.component(path, None).await?;
        let imports: Vec<String> = component
            .pre
            .component()
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let functions = component
            .functions
            .iter()
            .zip(&component.schemas)
            .map(|(f, schema)| InspectedFunction {
                name: f.name.clone(),
                kind: f.kind,
                wants_body: f.wants_body,
                config_schema: schema.as_ref().map(|s| s.text.clone()),
            })
            .collect();
        Ok(Inspection {
            contract: component.exports.version(),
            functions,
            imports,
            core_instances: core_instances(&bytes),
            size: bytes.len(),
            sha256: hex(&cache::content_hash(&bytes)),
        })
    }
}
