//! Why a plugin did not load (`LoadError`, naming the reference, the file
//! and the fix), and why a call failed (`PluginError`).

use super::*;

/// A plugin could not be loaded. Names the YAML reference, the file and what
/// is wrong, and how to fix it where that is known.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    /// The YAML file that names the plugin.
    pub file: PathBuf,
    /// Where in it: `endpoints[0].plugin`.
    pub field: String,
    /// The plugin: its file, or `oci://...@sha256:...`.
    pub plugin: String,
    pub kind: LoadErrorKind,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.display();
        match &self.kind {
            // One line per violation, each where the field is written:
            // `apis/x.yaml:12:9: endpoints[0].plugin.config.limit: ...`.
            LoadErrorKind::Config { function, violations } => {
                for (i, (location, v)) in violations.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    let at = location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default();
                    write!(
                        f,
                        "{file}{at}: {}.config{}: {} (the config schema of `{function}` in {})",
                        self.field, v.path, v.message, self.plugin
                    )?;
                }
                Ok(())
            }
            kind => write!(f, "{file}: {}: plugin {}: {kind}", self.field, self.plugin),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadErrorKind {
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    #[error(
        "its SHA-256 is {actual}, but the configuration pins {expected} (`sha256:`): the file changed; inspect it, then update the pin"
    )]
    Digest { expected: String, actual: String },
    #[error(
        "not a valid WebAssembly component: {0} (build plugins with `cargo build --release --target wasm32-wasip2`)"
    )]
    Compile(String),
    #[error(
        "not a Portcullis plugin for this gateway: {0} (a plugin exports `portcullis:plugin/guest@0.2.0` or `@0.1.0`; build it with portcullis-sdk)"
    )]
    Incompatible(String),
    #[error("failed while listing its functions: {0}")]
    Describe(String),
    #[error("no function `{}`; the component exports: {}", untrusted::escape(.function, 256), list(.available))]
    UnknownFunction { function: String, available: Vec<String> },
    #[error("function `{function}` is {} function, but this hook needs {} function", article(*.actual), article(*.expected))]
    WrongKind {
        function: String,
        actual: HookKind,
        expected: HookKind,
    },
    #[error(
        "`fan_out` needs a plugin built against contract 0.2, which passes the results in its input; this component speaks 0.1 (rebuild it with portcullis-sdk 0.2)"
    )]
    FanOutNeeds02,
    /// The reference's `config` breaks the schema its function declares;
    /// each violation with where its field is written (line, column).
    #[error("its config does not satisfy the function's schema")]
    Config {
        function: String,
        violations: Vec<(Option<(usize, usize)>, Violation)>,
    },
}

pub(super) fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        // Checked at load, but escaped all the same: these names come from
        // the component.
        names
            .iter()
            .map(|n| untrusted::escape(n, 256))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(super) fn article(kind: HookKind) -> &'static str {
    match kind {
        HookKind::Request => "a `request`",
        HookKind::Auth => "an `auth`",
        HookKind::Response => "a `response`",
    }
}

/// Why one invocation failed. It fails that request only.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("all {0} plugin instance slots are busy")]
    PoolExhausted(u32),
    #[error("invocation exceeded its timeout of {0:?}")]
    Timeout(Duration),
    #[error("guest exceeded its CPU budget of {0:?}")]
    CpuBudget(Duration),
    #[error("guest exceeded its memory limit of {} MiB", .0 >> 20)]
    Memory(usize),
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("plugin returned an error: {0}")]
    Failed(String),
    #[error("plugin returned an invalid outcome: {0}")]
    InvalidOutcome(String),
}

impl PluginError {
    /// A short name of the kind of failure, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            PluginError::PoolExhausted(_) => "pool_exhausted",
            PluginError::Timeout(_) => "timeout",
            PluginError::CpuBudget(_) => "cpu_budget",
            PluginError::Memory(_) => "memory",
            PluginError::Trap(_) => "trap",
            PluginError::Failed(_) => "error_returned",
            PluginError::InvalidOutcome(_) => "invalid_outcome",
        }
    }

    /// The status the client gets when the plugin fails closed.
    pub fn status(&self) -> StatusCode {
        match self {
            PluginError::PoolExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            PluginError::Timeout(_) | PluginError::CpuBudget(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

pub(super) fn describe_error(e: wasmtime::Error) -> LoadErrorKind {
    if e.downcast_ref::<CpuBudgetExceeded>().is_some() {
        return LoadErrorKind::Describe(format!("exceeded the load-time CPU budget of {LOAD_CPU:?}"));
    }
    if let Some(too_long) = e.downcast_ref::<ListTooLarge>() {
        return LoadErrorKind::Describe(too_long.to_string());
    }
    LoadErrorKind::Describe(untrusted::escape(&format!("{e:#}"), untrusted::MAX_TEXT_BYTES))
}

/// Raised from the epoch callback when the guest has used up its CPU budget.
#[derive(Debug, thiserror::Error)]
#[error("CPU budget exceeded")]
pub(super) struct CpuBudgetExceeded;
