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
//! Everything else in the gateway sees [`Plugin`], the checked and typed
//! outcomes of [`outcome`] ([`RequestOutcome`], [`AuthResult`], [`Reply`])
//! and [`PluginError`].
//!
//! The files, in the order a call meets them:
//! - `engine`: the [`PluginRuntime`], compiling (`cache`: compiled code on
//!   disk) and loading references;
//! - `contract`: the 0.2 and 0.1 hook signatures, and which one a component
//!   speaks; `bindings`: the types wasmtime generates from the WIT;
//! - `invoke`: one call (instance, input, budgets, trap classification),
//!   with `fan_out` for the calls the gateway makes first and `ticker` for
//!   the epoch that enforces CPU budgets;
//! - `wire`: the 0.2 input buffer; `records`: what crosses the boundary
//!   (requests in, outcomes out, every list bounded as it is lifted);
//! - `untrusted`: checking everything a plugin returns, typed as it is
//!   checked into `outcome`'s types; `schema`: checking
//!   a reference's `config` against the function's declared JSON Schema;
//! - `host/`: what a guest can call (clock, log, http, WASI);
//! - `errors`: load and call errors; `inspect`: `plugin inspect`.
//!
//! The submodules share this module's imports (`use super::*`): one
//! vocabulary for the wasmtime glue.

mod bindings;
mod cache;
mod contract;
mod engine;
mod errors;
mod fan_out;
mod host;
mod inspect;
mod invoke;
mod outcome;
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

use contract::*;
use engine::LoadedComponent;
pub use engine::PluginRuntime;
use errors::{CpuBudgetExceeded, describe_error};
pub use errors::{LoadError, LoadErrorKind, PluginError};
use inspect::Description;
pub use inspect::{InspectedFunction, Inspection};
use invoke::Reuse;
pub use invoke::{CallContext, Plugin};
pub use outcome::{AuthResult, Changes, Reply, RequestOutcome};

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
