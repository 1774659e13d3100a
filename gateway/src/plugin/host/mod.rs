//! What a plugin instance can reach: the per-invocation store state and the
//! host functions of the WIT world (logging and outbound HTTP).
//!
//! WASI is linked only because Rust's std imports it. Its context is empty:
//! no preopened directories, environment variables, arguments, stdin,
//! sockets or name lookups; such calls return errors the guest can handle.
//! What the guest writes to stdout and stderr (`println!`, `eprintln!`) is
//! kept, up to [`MAX_GUEST_OUTPUT`] bytes per call, and logged as the
//! plugin's lines when the call ends. Random numbers work (`HashMap` needs
//! them) and clocks work at a coarse 1 ms resolution, to blunt timing attacks
//! on the host process. The context is built on the guest's first WASI call:
//! most invocations make none, and building one (it seeds three random
//! number generators) would be a measurable part of every call.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::v01::portcullis::plugin::{http, log, types};
use super::bindings::v02::portcullis::plugin as v02;
use super::bindings::{BatchOptions, HttpError, Level, OutboundRequest, OutboundResponse};
use super::untrusted;
use crate::config::Limits;
use crate::sync::lock;
use crate::telemetry::{RequestId, TraceContext};
use crate::upstream::outbound::{self, BatchStop, OutboundClient, OutboundError, OutboundPolicy};

mod clock;
mod http_calls;
mod log_lines;
mod wasi;

pub use clock::{GuestClock, Tick};
use wasi::GuestOutput;

/// Longest log line a plugin may write; longer ones are cut.
const MAX_LOG_LINE: usize = 4096;

/// Most bytes of a line one `log-part` call carries.
const LOG_PART_BYTES: usize = 96;

/// Most bytes of stdout (and as many of stderr) kept from one call.
const MAX_GUEST_OUTPUT: usize = 16 << 10;

/// The store's limits ([`StoreLimits`], unchanged), remembering the most
/// linear memory the guest was granted, for `portcullis plugin call`.
pub struct Limiter {
    inner: StoreLimits,
    pub peak_memory: usize,
}

impl Limiter {
    pub fn new(inner: StoreLimits) -> Self {
        Limiter { inner, peak_memory: 0 }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let granted = self.inner.memory_growing(current, desired, maximum)?;
        if granted {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Who is running, for log lines and outbound calls.
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// `file.wasm#function`.
    pub plugin: Arc<str>,
    pub api_id: Arc<str>,
    pub request_id: RequestId,
    /// The client's trace context; outbound calls carry it and the request id.
    pub trace: TraceContext,
    pub outbound: Arc<OutboundPolicy>,
    pub client: OutboundClient,
    /// The plugin reference's limits (outbound calls, bodies, headers, logs).
    pub limits: Limits,
    /// Outbound calls the gateway already made for this invocation (its
    /// `fan_out`): they count against `limits.max_outbound_calls`.
    pub calls_made: u32,
    /// The reference's metrics, where its outbound calls are counted
    /// (`None` while a component is described at load).
    pub metrics: Option<Arc<crate::telemetry::metrics::PluginMetrics>>,
}

pub struct State {
    /// Built on first use; see the module documentation.
    wasi: Option<WasiCtx>,
    /// The guest's stdout and stderr, created with the WASI context.
    output: Option<[GuestOutput; 2]>,
    table: ResourceTable,
    pub limits: Limiter,
    pub call: CallInfo,
    pub clock: GuestClock,
    outbound_calls: u32,
    log: LogBudget,
    /// A line the guest is writing through `log-part`, until its last part.
    partial_line: PartialLine,
}

/// A log line arriving in parts: its first [`MAX_LOG_LINE`] bytes, how many
/// more there were, and the level of the last part.
#[derive(Debug, Default)]
struct PartialLine {
    bytes: Vec<u8>,
    beyond: usize,
    level: Option<Level>,
}

/// What one invocation may still log: lines and bytes left, and what was
/// suppressed once they ran out.
#[derive(Debug)]
struct LogBudget {
    lines: u32,
    bytes: usize,
    suppressed: u64,
}

impl LogBudget {
    fn new(limits: &Limits) -> Self {
        LogBudget {
            lines: limits.max_log_lines,
            bytes: limits.max_log_bytes,
            suppressed: 0,
        }
    }

    /// Takes one line of `len` bytes from the budget, or counts it as
    /// suppressed.
    fn take(&mut self, len: usize) -> bool {
        if self.lines == 0 || len > self.bytes {
            self.suppressed += 1;
            // Nothing more from this invocation: a long line must not be
            // followed by short ones that still fit.
            self.lines = 0;
            return false;
        }
        self.lines -= 1;
        self.bytes -= len;
        true
    }
}

impl State {
    pub fn new(call: CallInfo, limits: StoreLimits) -> Self {
        State {
            wasi: None,
            output: None,
            table: ResourceTable::new(),
            limits: Limiter::new(limits),
            clock: GuestClock::new(call.limits.cpu),
            log: LogBudget::new(&call.limits),
            outbound_calls: call.calls_made,
            call,
            partial_line: PartialLine::default(),
        }
    }

    /// Readies a reused instance's state for its next call: a new caller,
    /// a full CPU budget and call allowance. The WASI context and resource
    /// table stay: the guest may hold handles from earlier calls.
    pub fn begin(&mut self, call: CallInfo) {
        self.clock = GuestClock::new(call.limits.cpu);
        self.log = LogBudget::new(&call.limits);
        self.outbound_calls = call.calls_made;
        self.call = call;
    }

    /// Ends the call's logging: what the guest wrote to stdout (as `info`
    /// lines) and stderr (as `warn` lines), attributed like its log calls,
    /// then one line saying how many lines the budget suppressed, if any.
    /// A line the guest left unfinished in `log-part` comes first, as it
    /// stands.
    pub fn finish_logs(&mut self) {
        self.end_partial_line();
        self.flush_output();
        let suppressed = std::mem::take(&mut self.log.suppressed);
        if suppressed > 0 {
            let limits = &self.call.limits;
            tracing::warn!(
                target: "plugin",
                plugin = &*self.call.plugin,
                api = &*self.call.api_id,
                request_id = self.call.request_id.as_str(),
                suppressed,
                "plugin log lines suppressed: the limit is {} lines and {} bytes per invocation",
                limits.max_log_lines,
                limits.max_log_bytes
            );
        }
    }

    fn flush_output(&mut self) {
        let Some(outputs) = &self.output else { return };
        let taken = outputs.each_ref().map(GuestOutput::take);
        for ((bytes, dropped), (level, name)) in taken
            .into_iter()
            .zip([(Level::Info, "stdout"), (Level::Warn, "stderr")])
        {
            for line in String::from_utf8_lossy(&bytes).lines() {
                self.write_log(level, line, 0);
            }
            if dropped > 0 {
                let note =
                    format!("({dropped} more bytes of {name} dropped: the limit is {MAX_GUEST_OUTPUT} per call)");
                self.write_log(level, &note, 0);
            }
        }
    }
}
