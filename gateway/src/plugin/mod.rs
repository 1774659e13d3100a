//! The plugin runtime: the only part of the gateway that talks to wasmtime.
//!
//! Three lifetimes, three types:
//! - [`PluginRuntime`] (once per process): the engine with its pooling
//!   allocator and epoch ticker, the linker with the host functions, and the
//!   compiled components, shared across configuration reloads.
//! - [`Plugin`] (once per plugin reference, at configuration load): a
//!   pre-instantiated component plus the function, config and limits; loading
//!   checks that the function exists and serves the right hook.
//! - A `Store` and instance per invocation, dropped afterwards whatever
//!   happened, so a trap or a leak never reaches the next request. A plugin
//!   reference may opt in to `reuse: N`: then an instance that returned
//!   normally serves up to N calls, and is dropped after any failure.
//!
//! Everything else in the gateway sees [`Plugin`], [`Outcome`] and
//! [`PluginError`].

mod bindings;
mod cache;
mod host;
mod records;
mod schema;
mod ticker;
mod untrusted;
mod wire;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, HasSelf, Instance, InstancePre, Lift, Linker, Lower, TypedFunc,
};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder, UpdateDeadline,
};

pub use bindings::{Api, AuthOutcome, Authenticated, HookKind, Outcome, RequestChanges, Response, Session};
use bindings::{FunctionInfo, HttpError};
use host::{CallInfo, State, Tick};
use records::SessionRecord01;
use records::{AuthOutcomeWire, AuthOutcomeWire01, Bounded, ListTooLarge, OutcomeWire, OutcomeWire01, ResponseWire};
pub use records::{HeaderText, RequestRecord, ResponseRecord};
pub use schema::{ConfigSchema, Violation};
use ticker::Ticker;

use crate::config::RoutingPolicy;
use crate::config::{Fallback, FanOut, Limits, OnError, PluginRef};
use crate::sync::lock;
use crate::telemetry;
use crate::telemetry::CallStats;
use crate::telemetry::metrics::PluginMetrics;
use crate::telemetry::{RequestId, TraceContext};
use crate::text::hex;
use crate::upstream::outbound::{self, BatchStop, OutboundClient, OutboundPolicy};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
pub use untrusted::{check_outcome, check_response, check_session_size};

/// How often the epoch advances; the granularity of CPU budgets.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The CPU budget and timeout of the call that lists a component's
/// functions at load: far above what instantiating and listing take, so a
/// component that loads on an idle machine loads on a busy one too, and
/// `validate` predicts `serve` and every reload.
const LOAD_CPU: Duration = Duration::from_secs(2);
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Most idle instances a `reuse` plugin keeps; each holds a pool slot.
const MAX_IDLE_PER_PLUGIN: usize = 32;

/// A plugin could not be loaded. Names the YAML reference, the file and what
/// is wrong, and how to fix it where that is known.
#[derive(Debug, thiserror::Error)]
pub struct LoadError {
    /// The YAML file that names the plugin.
    pub file: PathBuf,
    /// Where in it: `endpoints[0].plugin`.
    pub field: String,
    pub path: PathBuf,
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
                        self.field,
                        v.path,
                        v.message,
                        self.path.display()
                    )?;
                }
                Ok(())
            }
            kind => write!(f, "{file}: {}: plugin {}: {kind}", self.field, self.path.display()),
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

fn list(names: &[String]) -> String {
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

fn article(kind: HookKind) -> &'static str {
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

fn describe_error(e: wasmtime::Error) -> LoadErrorKind {
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
struct CpuBudgetExceeded;

/// A compiled component, pre-instantiated, with the functions it exports.
struct LoadedComponent {
    pre: InstancePre<State>,
    exports: Contract,
    functions: Vec<FunctionInfo>,
    /// The schema each function declares for its `config`, by index.
    schemas: Vec<Option<ConfigSchema>>,
}

/// The parameters and result of one hook export of the `guest` interface.
/// The result is lifted as `Wire` (lists bounded, see [`records`]) and
/// converted into `Value`.
trait HookSignature {
    type Params<'a>: ComponentNamedList + Lower + Send + Sync;
    type Wire: Lift + Into<Self::Value> + Send + Sync + 'static;
    type Value: OutcomeName;
}

/// How a call ended, for its trace span.
trait OutcomeName {
    fn outcome_name(&self) -> &'static str;
}

impl OutcomeName for Outcome {
    fn outcome_name(&self) -> &'static str {
        match self {
            Outcome::Continue(_) => "continue",
            Outcome::Respond(_) => "respond",
        }
    }
}

impl OutcomeName for AuthOutcome {
    fn outcome_name(&self) -> &'static str {
        match self {
            AuthOutcome::Authenticated(_) => "authenticated",
            AuthOutcome::Respond(_) => "respond",
        }
    }
}

impl OutcomeName for Response {
    fn outcome_name(&self) -> &'static str {
        "response"
    }
}

/// What a hook export returns: the plugin's value or its own error.
type HookResult<T> = (Result<T, String>,);

/// 0.2: every hook takes the function's index and the input buffer.
type Input<'a> = (u32, &'a [u8]);

struct OnRequest;
impl HookSignature for OnRequest {
    type Params<'a> = Input<'a>;
    type Wire = OutcomeWire;
    type Value = Outcome;
}

struct OnAuth;
impl HookSignature for OnAuth {
    type Params<'a> = Input<'a>;
    type Wire = AuthOutcomeWire;
    type Value = AuthOutcome;
}

struct OnResponse;
impl HookSignature for OnResponse {
    type Params<'a> = Input<'a>;
    type Wire = ResponseWire;
    type Value = Response;
}

struct OnRequest01;
impl HookSignature for OnRequest01 {
    type Params<'a> = (
        &'a str,
        &'a RequestRecord<'a>,
        &'a SessionRecord01<'a>,
        &'a Api,
        &'a str,
    );
    type Wire = OutcomeWire01;
    type Value = Outcome;
}

struct OnAuth01;
impl HookSignature for OnAuth01 {
    type Params<'a> = (&'a str, &'a RequestRecord<'a>, &'a Api, &'a str);
    type Wire = AuthOutcomeWire01;
    type Value = AuthOutcome;
}

struct OnResponse01;
impl HookSignature for OnResponse01 {
    type Params<'a> = (
        &'a str,
        &'a RequestRecord<'a>,
        &'a ResponseRecord<'a>,
        &'a SessionRecord01<'a>,
        &'a Api,
        &'a str,
    );
    type Wire = ResponseWire;
    type Value = Response;
}

/// A hook export, found and type-checked once at load, so that a call on a
/// fresh instance skips both (the check walks every record of the
/// signature: about 0.3 us per call).
struct Hook<H> {
    index: ComponentExportIndex,
    _signature: std::marker::PhantomData<H>,
}

impl<H: HookSignature> Hook<H> {
    /// Checks the export's type against `H` on an instance of the component.
    fn check(index: ComponentExportIndex, instance: &Instance, store: &mut Store<State>) -> wasmtime::Result<Self> {
        instance.get_typed_func::<H::Params<'_>, HookResult<H::Wire>>(&mut *store, &index)?;
        Ok(Hook {
            index,
            _signature: std::marker::PhantomData,
        })
    }

    /// The export on `instance`, an instance of the component it was
    /// checked on.
    #[expect(unsafe_code, reason = "skips a type check made at load; see the SAFETY note")]
    fn func<'a>(
        &self,
        instance: &Instance,
        store: &mut Store<State>,
    ) -> wasmtime::Result<TypedFunc<H::Params<'a>, HookResult<H::Wire>>> {
        let func = instance
            .get_func(&mut *store, self.index)
            .ok_or_else(|| wasmtime::format_err!("the component has no hook export {:?}", self.index))?;
        // SAFETY: `check` type-checked this export as `H`'s signature on an
        // instance of the same pre-instantiated component, and every
        // instance of a component has the same export types.
        Ok(unsafe { TypedFunc::new_unchecked(func) })
    }
}

/// The hook entry points among the component's exports, by the contract
/// version it was built against.
enum Contract {
    V02 {
        on_request: Hook<OnRequest>,
        on_auth: Hook<OnAuth>,
        on_response: Hook<OnResponse>,
    },
    V01 {
        on_request: Hook<OnRequest01>,
        on_auth: Hook<OnAuth01>,
        on_response: Hook<OnResponse01>,
    },
}

impl Contract {
    const GUEST: &str = "portcullis:plugin/guest@0.2.0";
    const GUEST_01: &str = "portcullis:plugin/guest@0.1.0";

    /// Finds the hooks in `instance`'s component, by the newest contract it
    /// exports, and checks their types.
    fn check(instance: &Instance, store: &mut Store<State>) -> Result<Self, LoadErrorKind> {
        let (name, guest) = [Self::GUEST, Self::GUEST_01]
            .into_iter()
            .find_map(|name| Some((name, instance.get_export_index(&mut *store, None, name)?)))
            .ok_or_else(|| LoadErrorKind::Incompatible(format!("no export {} or {}", Self::GUEST, Self::GUEST_01)))?;
        let mut find = |export: &str| {
            instance
                .get_export_index(&mut *store, Some(&guest), export)
                .ok_or_else(|| LoadErrorKind::Incompatible(format!("no export {name}#{export}")))
        };
        let (on_request, on_auth, on_response) = (find("on-request")?, find("on-auth")?, find("on-response")?);
        let incompatible = |e: wasmtime::Error| LoadErrorKind::Incompatible(format!("{e:#}"));
        Ok(if name == Self::GUEST {
            Contract::V02 {
                on_request: Hook::check(on_request, instance, store).map_err(incompatible)?,
                on_auth: Hook::check(on_auth, instance, store).map_err(incompatible)?,
                on_response: Hook::check(on_response, instance, store).map_err(incompatible)?,
            }
        } else {
            Contract::V01 {
                on_request: Hook::check(on_request, instance, store).map_err(incompatible)?,
                on_auth: Hook::check(on_auth, instance, store).map_err(incompatible)?,
                on_response: Hook::check(on_response, instance, store).map_err(incompatible)?,
            }
        })
    }

    fn guest(&self) -> &'static str {
        match self {
            Contract::V02 { .. } => Self::GUEST,
            Contract::V01 { .. } => Self::GUEST_01,
        }
    }

    /// The contract version, as the logs name it.
    fn version(&self) -> &'static str {
        match self {
            Contract::V02 { .. } => "0.2",
            Contract::V01 { .. } => "0.1",
        }
    }

    const SCHEMAS: &str = "portcullis:plugin/schemas@0.2.0";

    /// The config schema each function declares (the optional `schemas`
    /// export of 0.2), compiled; all `None` without the export.
    async fn config_schemas(
        &self,
        instance: &Instance,
        store: &mut Store<State>,
        functions: &[FunctionInfo],
    ) -> Result<Vec<Option<ConfigSchema>>, LoadErrorKind> {
        let export = match self {
            Contract::V02 { .. } => instance
                .get_export_index(&mut *store, None, Self::SCHEMAS)
                .and_then(|s| instance.get_export_index(&mut *store, Some(&s), "config-schemas")),
            Contract::V01 { .. } => None,
        };
        let Some(export) = export else {
            return Ok(functions.iter().map(|_| None).collect());
        };
        let (Bounded(schemas),) = instance
            .get_typed_func::<(), (Bounded<Option<String>>,)>(&mut *store, &export)
            .map_err(|e| LoadErrorKind::Incompatible(format!("{e:#}")))?
            .call_async(&mut *store, ())
            .await
            .map_err(describe_error)?;
        if schemas.len() != functions.len() {
            return Err(LoadErrorKind::Describe(format!(
                "it declares {} config schemas for {} functions",
                schemas.len(),
                functions.len()
            )));
        }
        schemas
            .into_iter()
            .zip(functions)
            .map(|(schema, function)| {
                schema
                    .map(ConfigSchema::compile)
                    .transpose()
                    .map_err(|why| LoadErrorKind::Describe(format!("function `{}`: {why}", function.name)))
            })
            .collect()
    }

    /// Lists the component's functions (a bounded list, like every list a
    /// guest returns).
    async fn functions(
        &self,
        instance: &Instance,
        store: &mut Store<State>,
    ) -> Result<Vec<FunctionInfo>, LoadErrorKind> {
        let guest = self.guest();
        let index = instance
            .get_export_index(&mut *store, None, guest)
            .and_then(|g| instance.get_export_index(&mut *store, Some(&g), "functions"))
            .ok_or_else(|| LoadErrorKind::Incompatible(format!("no export {guest}#functions")))?;
        let incompatible = |e: wasmtime::Error| LoadErrorKind::Incompatible(format!("{e:#}"));
        Ok(match self {
            Contract::V02 { .. } => {
                let (Bounded(functions),) = instance
                    .get_typed_func::<(), (Bounded<FunctionInfo>,)>(&mut *store, &index)
                    .map_err(incompatible)?
                    .call_async(&mut *store, ())
                    .await
                    .map_err(describe_error)?;
                functions
            }
            Contract::V01 { .. } => {
                type Info01 = bindings::v01::portcullis::plugin::types::FunctionInfo;
                let (Bounded(functions),) = instance
                    .get_typed_func::<(), (Bounded<Info01>,)>(&mut *store, &index)
                    .map_err(incompatible)?
                    .call_async(&mut *store, ())
                    .await
                    .map_err(describe_error)?;
                functions.into_iter().map(Into::into).collect()
            }
        })
    }
}

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
type Description = (Contract, Vec<FunctionInfo>, Vec<Option<ConfigSchema>>);

/// How many core module instances instantiating the component `bytes`
/// creates (the modules it instantiates, not the instances it assembles
/// from exports).
fn core_instances(bytes: &[u8]) -> usize {
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

/// `PORTCULLIS_PERF_MAP=1`: write a perf map of compiled plugin code.
fn perf_map_requested() -> bool {
    std::env::var_os("PORTCULLIS_PERF_MAP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Engine, linker and compiled components; one per process.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: Option<PathBuf>,
    components: Mutex<HashMap<[u8; 32], Arc<LoadedComponent>>>,
    slots: Arc<Semaphore>,
    pool_size: u32,
    /// Largest memory any instance may have (the pool's slot size).
    max_memory_bytes: usize,
    client: OutboundClient,
    ticker: Ticker,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("cache_dir", &self.cache_dir)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Creates the engine sized by the gateway-wide `limits` and starts the
    /// epoch ticker. `cache_dir` holds compiled components across restarts.
    pub fn new(limits: &Limits, cache_dir: Option<PathBuf>, client: OutboundClient) -> anyhow::Result<Self> {
        let pool_size = limits.pool_size;
        let mut pool = PoolingAllocationConfig::default();
        // A wasip2 Rust component instantiates three core modules.
        pool.total_component_instances(pool_size)
            .total_core_instances(pool_size.saturating_mul(3))
            .total_memories(pool_size.saturating_mul(2))
            .total_tables(pool_size.saturating_mul(3))
            .max_memory_size(limits.memory_bytes)
            // Keep a little memory resident between instances instead of
            // returning it to the kernel each time (it is still zeroed).
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10);
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if perf_map_requested() {
            // Names plugin code for `perf` (/tmp/perf-PID.map): without it a
            // profile shows guest time as anonymous `[JIT]` addresses.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))?;

        let ticker = Ticker::start(&engine, EPOCH_TICK)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        bindings::v02::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        bindings::v01::Plugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        Ok(PluginRuntime {
            engine,
            linker,
            cache_dir,
            components: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(pool_size as usize)),
            pool_size,
            max_memory_bytes: limits.memory_bytes,
            client,
            ticker,
        })
    }

    /// Plugin instance slots in use, of `pool_size` (idle reused instances
    /// hold theirs).
    pub fn instances_in_use(&self) -> u32 {
        let free = u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX);
        self.pool_size.saturating_sub(free)
    }

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

    /// Loads the plugin a reference names, for a hook of kind `expected`.
    /// Components are compiled once per content hash and shared.
    pub async fn load(self: &Arc<Self>, reference: &PluginRef, expected: HookKind) -> Result<Plugin, LoadError> {
        let err = |kind| LoadError {
            file: reference.file.clone(),
            field: reference.field.clone(),
            path: reference.path.clone(),
            kind,
        };
        let component = self.component(&reference.path, reference.sha256).await.map_err(err)?;
        let found = component
            .functions
            .iter()
            .enumerate()
            .find(|(_, f)| f.name == reference.function);
        let Some((index, info)) = found else {
            return Err(err(LoadErrorKind::UnknownFunction {
                function: reference.function.clone(),
                available: component.functions.iter().map(|f| f.name.clone()).collect(),
            }));
        };
        if info.kind != expected {
            return Err(err(LoadErrorKind::WrongKind {
                function: reference.function.clone(),
                actual: info.kind,
                expected,
            }));
        }
        if let Some(schema) = &component.schemas[index] {
            let violations = schema.violations(&reference.config_json);
            if !violations.is_empty() {
                let text = tokio::fs::read_to_string(&reference.file).await.unwrap_or_default();
                let violations = violations
                    .into_iter()
                    .map(|v| {
                        let field = format!("{}.config{}", reference.field, v.path);
                        (crate::config::locate_field(&text, &field), v)
                    })
                    .collect();
                return Err(err(LoadErrorKind::Config {
                    function: reference.function.clone(),
                    violations,
                }));
            }
        }
        if reference.fan_out.is_some() && matches!(component.exports, Contract::V01 { .. }) {
            return Err(err(LoadErrorKind::FanOutNeeds02));
        }
        let file = reference.path.file_name().unwrap_or_default().to_string_lossy();
        let label: Arc<str> = format!("{file}#{}", reference.function).into();
        Ok(Plugin {
            runtime: Arc::clone(self),
            wants_body: info.wants_body,
            component,
            metrics: PluginMetrics::new(&label),
            label,
            function: reference.function.clone(),
            index: u32::try_from(index).unwrap_or(u32::MAX),
            config_json: reference.config_json.clone(),
            limits: reference.limits.clone(),
            on_error: reference.on_error,
            fallback: reference.fallback.clone(),
            path: reference.path.clone(),
            fan_out: reference.fan_out.clone(),
            reuse: (reference.reuse > 1).then(|| Reuse {
                max_calls: reference.reuse,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    async fn component(
        self: &Arc<Self>,
        path: &Path,
        pinned: Option<[u8; 32]>,
    ) -> Result<Arc<LoadedComponent>, LoadErrorKind> {
        let bytes = tokio::fs::read(path).await.map_err(LoadErrorKind::Read)?;
        let hash = cache::content_hash(&bytes);
        if let Some(expected) = pinned
            && expected != hash
        {
            return Err(LoadErrorKind::Digest {
                expected: hex(&expected),
                actual: hex(&hash),
            });
        }
        if let Some(loaded) = self.lock_components().get(&hash) {
            return Ok(Arc::clone(loaded));
        }
        // Compiling takes tens of milliseconds of CPU: keep it off the
        // request-serving threads.
        let runtime = Arc::clone(self);
        let component = tokio::task::spawn_blocking(move || {
            cache::load_or_compile(&runtime.engine, runtime.cache_dir.as_deref(), &bytes, &hash)
        })
        .await
        .map_err(|e| LoadErrorKind::Compile(e.to_string()))?
        .map_err(|e| LoadErrorKind::Compile(format!("{e:#}")))?;
        let pre = self.pre_instantiate(&component)?;
        let (exports, functions, schemas) = self.describe(&pre).await?;
        tracing::info!(
            path = %path.display(),
            contract = exports.version(),
            functions = functions.len(),
            "plugin component loaded"
        );
        let loaded = Arc::new(LoadedComponent {
            pre,
            exports,
            functions,
            schemas,
        });
        self.lock_components().insert(hash, Arc::clone(&loaded));
        Ok(loaded)
    }

    fn lock_components(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<LoadedComponent>>> {
        lock(&self.components)
    }

    fn pre_instantiate(&self, component: &Component) -> Result<InstancePre<State>, LoadErrorKind> {
        self.linker
            .instantiate_pre(component)
            .map_err(|e| LoadErrorKind::Incompatible(format!("{e:#}")))
    }

    /// Instantiates the component once to check its hook exports and ask
    /// which functions it offers and what config each accepts.
    async fn describe(&self, pre: &InstancePre<State>) -> Result<Description, LoadErrorKind> {
        let limits = Limits {
            cpu: LOAD_CPU,
            timeout: LOAD_TIMEOUT,
            memory_bytes: self.max_memory_bytes,
            max_outbound_calls: 0,
            ..Limits::default()
        };
        let call = CallInfo {
            plugin: "(loading)".into(),
            api_id: "".into(),
            request_id: RequestId::none(),
            trace: TraceContext::default(),
            outbound: Arc::new(OutboundPolicy::default()),
            client: self.client.clone(),
            limits,
            calls_made: 0,
        };
        // Wait for a free instance slot: loading may overlap with traffic.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| LoadErrorKind::Describe(e.to_string()))?;
        let mut store = self.store(call);
        let _running = self.ticker.running();
        let describe = async {
            let instance = pre.instantiate_async(&mut store).await.map_err(describe_error)?;
            let exports = Contract::check(&instance, &mut store)?;
            let functions = exports.functions(&instance, &mut store).await?;
            untrusted::check_functions(&functions).map_err(LoadErrorKind::Describe)?;
            let schemas = exports.config_schemas(&instance, &mut store, &functions).await?;
            Ok((exports, functions, schemas))
        };
        match tokio::time::timeout(LOAD_TIMEOUT, describe).await {
            Ok(result) => result,
            Err(_) => Err(LoadErrorKind::Describe(format!(
                "timed out after {LOAD_TIMEOUT:?} (the load-time limit)"
            ))),
        }
    }

    fn store(&self, call: CallInfo) -> Store<State> {
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(call.limits.memory_bytes.min(self.max_memory_bytes))
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(&self.engine, State::new(call, store_limits));
        store.limiter(|state| &mut state.limits);
        // A new store's deadline is 0 and instantiation runs guest code: arm
        // it first. Each tick we check the guest's own running time (waits
        // excluded) and yield to the executor so other requests run.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| match ctx.data_mut().clock.tick() {
            Tick::Continue => Ok(UpdateDeadline::Continue(1)),
            Tick::Yield(resume) => Ok(UpdateDeadline::YieldCustom(1, resume)),
            Tick::OverBudget => Err(wasmtime::Error::new(CpuBudgetExceeded)),
        });
        store
    }
}

impl Session {
    /// The session of a caller on a keyless API: no key, no limits.
    pub fn anonymous() -> Self {
        Session {
            key_id: String::new(),
            alias: None,
            rate: 0,
            per: 0,
            quota_max: -1,
            quota_remaining: -1,
            quota_renewal_seconds: 0,
            metadata: Vec::new(),
            tags: Vec::new(),
            expires: None,
        }
    }
}

/// Everything about the request's context a plugin call needs besides the
/// request itself.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub api: Arc<Api>,
    pub api_id: Arc<str>,
    pub outbound: Arc<OutboundPolicy>,
    /// Where the plugin may route the request.
    pub routing: Arc<RoutingPolicy>,
    pub request_id: RequestId,
    /// The client's trace context, carried by outbound calls.
    pub trace: TraceContext,
    /// Where to add up what the calls used (the access log, `portcullis
    /// plugin call`).
    pub stats: Option<Arc<Mutex<CallStats>>>,
    /// The hook point the call is made for (`pre`, `auth`, `endpoint`...),
    /// for its trace span.
    pub hook: &'static str,
}

/// A loaded plugin reference: component + function + config + limits.
/// Cheap to share; each call makes a fresh instance.
pub struct Plugin {
    runtime: Arc<PluginRuntime>,
    component: Arc<LoadedComponent>,
    /// `file.wasm#function`, for logs.
    label: Arc<str>,
    function: String,
    /// The function's index in the component's list (0.2 calls by index).
    index: u32,
    config_json: String,
    wants_body: bool,
    limits: Limits,
    on_error: OnError,
    fallback: Option<Fallback>,
    path: PathBuf,
    /// Calls made for the function before it runs.
    fan_out: Option<FanOut>,
    /// Instances kept between calls, when the reference opted in.
    reuse: Option<Reuse>,
    metrics: PluginMetrics,
}

/// A store with its instance slot and, once instantiated, the instance.
struct Lease {
    store: Store<State>,
    instance: Option<Instance>,
    /// Calls this instance has served.
    calls: u32,
    _slot: OwnedSemaphorePermit,
}

/// The idle instances of a plugin with `reuse: max_calls`.
struct Reuse {
    max_calls: u32,
    idle: Mutex<Vec<Lease>>,
}

impl Reuse {
    fn take(&self) -> Option<Lease> {
        lock(&self.idle).pop()
    }

    /// Keeps `lease` for a later call unless it has served its calls or
    /// enough instances are idle already.
    fn put(&self, lease: Lease) {
        if lease.calls < self.max_calls {
            let mut idle = lock(&self.idle);
            if idle.len() < MAX_IDLE_PER_PLUGIN {
                idle.push(lease);
            }
        }
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// `file.wasm#function`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The names of the reference's fan-out calls, if it has one.
    pub fn fan_out_names(&self) -> Option<Vec<&str>> {
        let fan_out = self.fan_out.as_ref()?;
        Some(fan_out.calls.iter().map(|c| c.name.as_str()).collect())
    }

    /// Whether the function reads the body (so the gateway must buffer it).
    pub fn wants_body(&self) -> bool {
        self.wants_body
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// The fixed response to give when this plugin fails, if configured.
    pub fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_ref()
    }

    /// The component file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store for one invocation: an idle instance of this plugin when it
    /// reuses them, otherwise a free slot and a fresh store.
    fn lease(&self, ctx: &CallContext) -> Result<Lease, PluginError> {
        let call = CallInfo {
            plugin: Arc::clone(&self.label),
            api_id: Arc::clone(&ctx.api_id),
            request_id: ctx.request_id.clone(),
            trace: ctx.trace.clone(),
            outbound: Arc::clone(&ctx.outbound),
            client: self.runtime.client.clone(),
            limits: self.limits.clone(),
            calls_made: self
                .fan_out
                .as_ref()
                .map_or(0, |f| u32::try_from(f.calls.len()).unwrap_or(u32::MAX)),
        };
        if let Some(mut lease) = self.reuse.as_ref().and_then(Reuse::take) {
            lease.store.data_mut().begin(call);
            lease.store.set_epoch_deadline(1);
            return Ok(lease);
        }
        let slot = Arc::clone(&self.runtime.slots)
            .try_acquire_owned()
            .map_err(|_| PluginError::PoolExhausted(self.runtime.pool_size))?;
        Ok(Lease {
            store: self.runtime.store(call),
            instance: None,
            calls: 0,
            _slot: slot,
        })
    }

    /// Calls one hook export and checks what it returned with `check`, so an
    /// outcome the gateway cannot apply fails here (with the plugin named)
    /// rather than somewhere in the HTTP stack. Every failure of the plugin,
    /// whatever its kind, is counted here.
    async fn invoke<H: HookSignature>(
        &self,
        ctx: &CallContext,
        hook: &Hook<H>,
        params: H::Params<'_>,
        check: impl FnOnce(&H::Value) -> Result<(), String>,
    ) -> Result<H::Value, PluginError> {
        // With traces on, the call has its own span, and the context the
        // instance sees makes its outbound calls children of it.
        let traced = self.traced(ctx, "plugin", Vec::new());
        let ctx = traced.as_ref().map_or(ctx, |(ctx, _)| ctx);
        let result = self.run(ctx, hook, params).await.and_then(|value| match check(&value) {
            Ok(()) => Ok(value),
            Err(why) => Err(PluginError::InvalidOutcome(untrusted::escape(
                &why,
                untrusted::MAX_TEXT_BYTES,
            ))),
        });
        if let Err(error) = &result {
            self.metrics.failed(error.reason());
        }
        if let Some((_, span)) = &traced {
            let outcome = match &result {
                Ok(value) => value.outcome_name(),
                Err(error) => error.reason(),
            };
            telemetry::record(span, vec![KeyValue::new("portcullis.plugin.outcome", outcome)]);
            telemetry::end(span, result.as_ref().err().map(ToString::to_string));
        }
        result
    }

    /// Calls one hook export in a leased instance under the plugin's timeout
    /// and sorts out how it ended. The instance is dropped afterwards, or
    /// kept for the next call if the plugin reuses instances and this one
    /// returned normally (a trap, a timeout or a budget overrun drops it).
    async fn run<H: HookSignature>(
        &self,
        ctx: &CallContext,
        hook: &Hook<H>,
        params: H::Params<'_>,
    ) -> Result<H::Value, PluginError> {
        let started = Instant::now();
        let mut lease = self.lease(ctx)?;
        let running = self.runtime.ticker.running();
        let outcome = tokio::time::timeout(self.limits.timeout, self.call(&mut lease, hook, params)).await;
        drop(running);
        self.metrics.observe(started.elapsed());
        lease.store.data_mut().finish_logs();
        if let Some(span) = &ctx.trace.span {
            let state = lease.store.data();
            telemetry::record(
                span,
                vec![
                    KeyValue::new(
                        "portcullis.plugin.cpu_us",
                        i64::try_from(state.clock.guest_time().as_micros()).unwrap_or(i64::MAX),
                    ),
                    KeyValue::new(
                        "portcullis.plugin.peak_memory_bytes",
                        i64::try_from(state.limits.peak_memory).unwrap_or(i64::MAX),
                    ),
                ],
            );
        }
        if let Some(stats) = &ctx.stats {
            let state = lease.store.data();
            let mut stats = lock(stats);
            stats.calls += 1;
            stats.time += started.elapsed();
            stats.cpu += state.clock.guest_time();
            stats.peak_memory_bytes = stats.peak_memory_bytes.max(state.limits.peak_memory);
        }
        let result = match outcome {
            Err(_) => return Err(PluginError::Timeout(self.limits.timeout)),
            Ok(Err(e)) => return Err(self.classify_trap(e)),
            Ok(Ok(result)) => result,
        };
        if let Some(reuse) = &self.reuse {
            lease.calls += 1;
            reuse.put(lease);
        }
        result
            .map(Into::into)
            .map_err(|text| PluginError::Failed(untrusted::escape(&text, untrusted::MAX_TEXT_BYTES)))
    }

    /// A failure found after the call, in what the plugin returned (for
    /// example a session that would outgrow its limit once merged with the
    /// stored one): counted like any other.
    pub fn invalid(&self, why: &str) -> PluginError {
        self.metrics.failed("invalid_outcome");
        PluginError::InvalidOutcome(untrusted::escape(why, untrusted::MAX_TEXT_BYTES))
    }

    /// With traces on: a span under the request's, `{what} {function}`,
    /// with the plugin's attributes and `extra`, and a copy of `ctx` whose
    /// outbound calls are its children.
    fn traced(
        &self,
        ctx: &CallContext,
        what: &str,
        extra: Vec<KeyValue>,
    ) -> Option<(CallContext, opentelemetry::Context)> {
        let parent = ctx.trace.span.as_ref()?;
        let mut attributes = vec![
            KeyValue::new("portcullis.api", ctx.api_id.to_string()),
            KeyValue::new("portcullis.hook", ctx.hook),
            KeyValue::new("portcullis.plugin.path", self.path.display().to_string()),
            KeyValue::new("portcullis.plugin.function", self.function.clone()),
        ];
        attributes.extend(extra);
        let span = telemetry::child(
            parent,
            format!("{what} {}", self.function),
            SpanKind::Internal,
            attributes,
        );
        let mut ctx = ctx.clone();
        ctx.trace.span = Some(span.clone());
        Some((ctx, span))
    }

    /// The 0.2 input buffer for one call, after the reference's fan-out
    /// if it has one.
    async fn input(
        &self,
        ctx: &CallContext,
        request: &RequestRecord<'_>,
        session: &Session,
        response: Option<&ResponseRecord<'_>>,
    ) -> Result<Vec<u8>, PluginError> {
        let fanned = match &self.fan_out {
            Some(fan_out) => self.run_fan_out(ctx, fan_out, request.params).await?,
            None => Vec::new(),
        };
        Ok(wire::input(
            request,
            session,
            response,
            &ctx.api,
            &self.config_json,
            &fanned,
        ))
    }

    /// Runs the reference's fan-out, unless no instance slot is free: an
    /// overloaded gateway sheds the request rather than send its backends
    /// calls whose results it cannot use. A check, not a reservation: a
    /// slot taken while the calls run still fails the request at the lease,
    /// after them. Its time counts as the plugin's.
    async fn run_fan_out(
        &self,
        ctx: &CallContext,
        fan_out: &FanOut,
        params: &[(String, String)],
    ) -> Result<Vec<wire::FanOutResult>, PluginError> {
        let idle = self.reuse.as_ref().is_some_and(|r| !lock(&r.idle).is_empty());
        if !idle && self.runtime.slots.available_permits() == 0 {
            let error = PluginError::PoolExhausted(self.runtime.pool_size);
            self.metrics.failed(error.reason());
            return Err(error);
        }
        let started = Instant::now();
        // With traces on, the fan-out has its own span (beside the plugin
        // call's), and its calls are children of it.
        let calls = i64::try_from(fan_out.calls.len()).unwrap_or(i64::MAX);
        let traced = self.traced(ctx, "fan-out", vec![KeyValue::new("portcullis.fan_out.calls", calls)]);
        let results = self
            .fan_out_calls(traced.as_ref().map_or(ctx, |(ctx, _)| ctx), fan_out, params)
            .await;
        if let Some((_, span)) = &traced {
            let failed = i64::try_from(results.iter().filter(|(_, r)| r.is_err()).count()).unwrap_or(i64::MAX);
            telemetry::record(span, vec![KeyValue::new("portcullis.fan_out.failed", failed)]);
            telemetry::end(span, None);
        }
        if let Some(stats) = &ctx.stats {
            lock(stats).time += started.elapsed();
        }
        Ok(results)
    }

    /// Makes the fan-out's calls, concurrently, within its deadline; one
    /// result per call, in the order of `fan_out.calls`.
    async fn fan_out_calls(
        &self,
        ctx: &CallContext,
        fan_out: &FanOut,
        params: &[(String, String)],
    ) -> Vec<wire::FanOutResult> {
        let client = &self.runtime.client;
        let calls = fan_out.calls.iter().enumerate().map(|(i, call)| {
            let request = outbound::OutboundRequest {
                method: call.method.to_string(),
                url: call.url.fill(params),
                headers: call.headers.clone(),
                body: call.body.clone(),
                timeout: call.timeout,
            };
            (
                i,
                client.send(&ctx.outbound, request, &self.limits, &ctx.request_id, &ctx.trace),
            )
        });
        let deadline = fan_out.deadline.unwrap_or(ctx.outbound.timeout);
        let (results, stop) = outbound::batch(fan_out.calls.len(), calls, deadline, fan_out.first).await;
        fan_out
            .calls
            .iter()
            .zip(results)
            .map(|(call, result)| {
                let result = match result {
                    Some(Ok(response)) => Ok(response),
                    Some(Err(e)) => {
                        tracing::debug!(
                            plugin = &*self.label,
                            request_id = ctx.request_id.as_str(),
                            call = call.name,
                            error = %e,
                            "fan-out call failed"
                        );
                        Err(HttpError::from(e))
                    }
                    None if stop == BatchStop::Enough => Err(HttpError::Cancelled),
                    None => Err(HttpError::Timeout),
                };
                (call.name.clone(), result)
            })
            .collect()
    }

    /// Runs a `request` function.
    pub async fn on_request(
        &self,
        ctx: &CallContext,
        request: &RequestRecord<'_>,
        session: &Session,
    ) -> Result<Outcome, PluginError> {
        let check = |outcome: &Outcome| untrusted::check_outcome(outcome, &self.limits, &ctx.routing);
        match &self.component.exports {
            Contract::V02 { on_request, .. } => {
                let input = self.input(ctx, request, session, None).await?;
                self.invoke(ctx, on_request, (self.index, &input[..]), check).await
            }
            Contract::V01 { on_request, .. } => {
                let session = SessionRecord01::from(session);
                let params = (
                    self.function.as_str(),
                    request,
                    &session,
                    &*ctx.api,
                    self.config_json.as_str(),
                );
                self.invoke(ctx, on_request, params, check).await
            }
        }
    }

    /// Runs an `auth` function.
    pub async fn on_auth(&self, ctx: &CallContext, request: &RequestRecord<'_>) -> Result<AuthOutcome, PluginError> {
        let check = |outcome: &AuthOutcome| untrusted::check_auth(outcome, &self.limits, &ctx.routing);
        match &self.component.exports {
            Contract::V02 { on_auth, .. } => {
                let input = self.input(ctx, request, &Session::anonymous(), None).await?;
                self.invoke(ctx, on_auth, (self.index, &input[..]), check).await
            }
            Contract::V01 { on_auth, .. } => {
                let params = (self.function.as_str(), request, &*ctx.api, self.config_json.as_str());
                self.invoke(ctx, on_auth, params, check).await
            }
        }
    }

    /// Runs a `response` function.
    pub async fn on_response(
        &self,
        ctx: &CallContext,
        request: &RequestRecord<'_>,
        response: &ResponseRecord<'_>,
        session: &Session,
    ) -> Result<Response, PluginError> {
        let check = |response: &Response| untrusted::check_response(response, &self.limits);
        match &self.component.exports {
            Contract::V02 { on_response, .. } => {
                let input = self.input(ctx, request, session, Some(response)).await?;
                self.invoke(ctx, on_response, (self.index, &input[..]), check).await
            }
            Contract::V01 { on_response, .. } => {
                let session = SessionRecord01::from(session);
                let params = (
                    self.function.as_str(),
                    request,
                    response,
                    &session,
                    &*ctx.api,
                    self.config_json.as_str(),
                );
                self.invoke(ctx, on_response, params, check).await
            }
        }
    }

    /// Instantiates the component in the lease's store unless it holds an
    /// instance already, and calls one of its hook exports (checked at load:
    /// the generated bindings would check all of them on every instance).
    async fn call<H: HookSignature>(
        &self,
        lease: &mut Lease,
        hook: &Hook<H>,
        params: H::Params<'_>,
    ) -> wasmtime::Result<Result<H::Wire, String>> {
        let store = &mut lease.store;
        let instance = match lease.instance {
            Some(instance) => instance,
            None => {
                let instance = self.component.pre.instantiate_async(&mut *store).await?;
                *lease.instance.insert(instance)
            }
        };
        let func = hook.func(&instance, store)?;
        let (result,) = func.call_async(&mut *store, params).await?;
        Ok(result)
    }

    fn classify_trap(&self, e: wasmtime::Error) -> PluginError {
        if e.downcast_ref::<CpuBudgetExceeded>().is_some() {
            return PluginError::CpuBudget(self.limits.cpu);
        }
        if let Some(too_long) = e.downcast_ref::<ListTooLarge>() {
            return PluginError::InvalidOutcome(too_long.to_string());
        }
        let text = format!("{e:#}");
        if text.contains("forcing trap when growing memory") {
            return PluginError::Memory(self.limits.memory_bytes);
        }
        // A trap's text carries the guest's own function names.
        let text = untrusted::escape(&text, untrusted::MAX_TEXT_BYTES);
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => PluginError::Trap(format!("{trap}: {text}")),
            None => PluginError::Trap(text),
        }
    }
}
