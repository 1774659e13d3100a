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
}

/// Accounts the CPU time the guest uses, read from the CPU clock of the
/// thread that runs it: time the thread spends descheduled (a busy machine,
/// a container's CPU quota throttled, the process stopped) is not the
/// guest's, and neither are outbound waits or waits for the executor after
/// the guest yielded.
///
/// The guest runs in segments: from the call's start, from each
/// resumption after a yield, and from the end of each host wait. A segment
/// is measured on the thread CPU clock of the thread it ran on; should a
/// segment ever end on another thread than it began on (it cannot, as the
/// guest runs synchronously between its awaits), it is charged wall-clock
/// time instead.
#[derive(Debug)]
pub struct GuestClock {
    /// CPU time of the segments that ended.
    charged: Duration,
    /// Where the running segment began; `None` while the guest waits.
    segment: Option<Mark>,
    /// The guest yielded to the executor at the last tick.
    yielded: bool,
    /// Where it was resumed after that yield; written by the yield future
    /// on the resuming thread. Created at the first yield (most
    /// invocations never yield).
    resumed_at: Option<Arc<Mutex<Option<Mark>>>>,
    pub budget: Duration,
}

/// A point in a thread's run: which thread, its CPU clock and the wall clock.
#[derive(Debug, Clone, Copy)]
struct Mark {
    thread: std::thread::ThreadId,
    cpu: Duration,
    wall: Instant,
}

impl Mark {
    fn now() -> Self {
        let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Mark {
            thread: std::thread::current().id(),
            cpu: Duration::new(cpu.tv_sec.max(0) as u64, cpu.tv_nsec.clamp(0, 999_999_999) as u32),
            wall: Instant::now(),
        }
    }

    /// The time run since this mark.
    fn elapsed(&self) -> Duration {
        let now = Mark::now();
        if now.thread == self.thread {
            now.cpu.saturating_sub(self.cpu)
        } else {
            now.wall.saturating_duration_since(self.wall)
        }
    }
}

impl GuestClock {
    pub fn new(budget: Duration) -> Self {
        GuestClock {
            charged: Duration::ZERO,
            segment: Some(Mark::now()),
            yielded: false,
            resumed_at: None,
            budget,
        }
    }

    /// CPU time spent running guest code so far.
    pub fn guest_time(&self) -> Duration {
        self.charged + self.running_since().map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Where the running segment began: after a yield, where the guest was
    /// resumed.
    fn running_since(&self) -> Option<Mark> {
        if self.yielded {
            self.resumed_at.as_ref().and_then(|r| *lock(r))
        } else {
            self.segment
        }
    }

    /// After a yield, makes the resumption the running segment's start
    /// (without a resumption mark, which cannot happen: from now on).
    fn settle_yield(&mut self) {
        if std::mem::take(&mut self.yielded) {
            let resumed = self.resumed_at.as_ref().and_then(|r| lock(r).take());
            self.segment = Some(resumed.unwrap_or_else(Mark::now));
        }
    }

    /// The guest stops running until [`Self::resume`]: a host wait begins.
    pub fn pause(&mut self) {
        self.settle_yield();
        if let Some(segment) = self.segment.take() {
            self.charged += segment.elapsed();
        }
    }

    /// The guest runs again, on the calling thread.
    pub fn resume(&mut self) {
        self.segment = Some(Mark::now());
    }

    /// Called at each epoch tick while the guest runs: whether it may go on,
    /// and if so whether it should first yield to the executor (then await
    /// the returned future, which notes where the guest runs again).
    ///
    /// The first tick after a resumption never yields: on a busy worker the
    /// epoch moves on while the guest waits, so that tick comes at once, and
    /// yielding again there would leave the guest no time to make progress.
    pub fn tick(&mut self) -> Tick {
        if self.yielded {
            self.settle_yield();
            return if self.guest_time() > self.budget {
                Tick::OverBudget
            } else {
                Tick::Continue
            };
        }
        self.pause();
        if self.charged > self.budget {
            return Tick::OverBudget;
        }
        self.yielded = true;
        let resumed_at = Arc::clone(self.resumed_at.get_or_insert_default());
        Tick::Yield(Box::pin(async move {
            tokio::task::yield_now().await;
            *lock(&resumed_at) = Some(Mark::now());
        }))
    }
}

/// What the epoch callback should do; see [`GuestClock::tick`].
pub enum Tick {
    Continue,
    /// Yield to the executor by awaiting this.
    Yield(Pin<Box<dyn Future<Output = ()> + Send>>),
    OverBudget,
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

/// One of a guest's output streams: a buffer of at most [`MAX_GUEST_OUTPUT`]
/// bytes, drained after each call. Writes beyond it are counted and
/// dropped, never refused, so printing too much cannot fail a plugin.
#[derive(Debug, Clone, Default)]
struct GuestOutput(Arc<Mutex<(Vec<u8>, usize)>>);

impl GuestOutput {
    fn push(&self, data: &[u8]) {
        let (kept, dropped) = &mut *lock(&self.0);
        let room = MAX_GUEST_OUTPUT.saturating_sub(kept.len()).min(data.len());
        kept.extend_from_slice(&data[..room]);
        *dropped += data.len() - room;
    }

    /// What was written since the last call, and how many bytes were dropped.
    fn take(&self) -> (Vec<u8>, usize) {
        std::mem::take(&mut *lock(&self.0))
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
}

impl wasmtime_wasi::p2::OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(MAX_GUEST_OUTPUT)
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The WASI context every guest gets: nothing to reach, coarse clocks,
/// stdout and stderr into `output`.
fn empty_wasi_ctx(output: &[GuestOutput; 2]) -> WasiCtx {
    let [stdout, stderr] = output.clone();
    WasiCtx::builder()
        .stdout(stdout)
        .stderr(stderr)
        .wall_clock(CoarseWallClock)
        .monotonic_clock(CoarseMonotonicClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Clock resolution offered to guests.
const CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

fn coarse(d: Duration) -> Duration {
    let step = CLOCK_RESOLUTION.as_nanos();
    Duration::from_nanos(u64::try_from(d.as_nanos() / step * step).unwrap_or(u64::MAX))
}

struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        CLOCK_RESOLUTION
    }
    fn now(&self) -> Duration {
        coarse(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

struct CoarseMonotonicClock;

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_RESOLUTION.as_nanos() as u64
    }
    fn now(&self) -> u64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        coarse(START.get_or_init(Instant::now).elapsed()).as_nanos() as u64
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = self.output.get_or_insert_default();
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| empty_wasi_ctx(output)),
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl log::Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.write_log(level, &message, 0);
    }
}

impl State {
    /// Writes one of the plugin's log lines, of which the guest's side
    /// already cut `cut` bytes, if the log filter and the budget let it.
    fn write_log(&mut self, level: Level, message: &str, cut: usize) {
        // Lines the log filter drops cost nothing and count for nothing.
        let enabled = match level {
            Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        };
        if !enabled || !self.log.take((message.len() + cut).min(MAX_LOG_LINE)) {
            return;
        }
        let message = untrusted::escape_cut(message, MAX_LOG_LINE, cut);
        let (plugin, api, request_id) = (&*self.call.plugin, &*self.call.api_id, self.call.request_id.as_str());
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, api, request_id, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, api, request_id, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, api, request_id, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, api, request_id, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, api, request_id, "{message}"),
        }
    }

    /// Adds a `log-part` to the open line, ending it if it is the last.
    fn log_part(&mut self, level: Level, len: u8, last: bool, words: [u64; LOG_PART_BYTES / 8]) {
        let len = usize::from(len).min(LOG_PART_BYTES);
        let line = &mut self.partial_line;
        let room = MAX_LOG_LINE.saturating_sub(line.bytes.len()).min(len);
        line.bytes.extend(words.iter().flat_map(|w| w.to_le_bytes()).take(room));
        line.beyond += len - room;
        line.level = Some(level);
        if last {
            self.end_partial_line();
        }
    }

    /// Writes the line open in `log-part`, if there is one.
    fn end_partial_line(&mut self) {
        let line = std::mem::take(&mut self.partial_line);
        if let Some(level) = line.level {
            self.write_log(level, &String::from_utf8_lossy(&line.bytes), line.beyond);
        }
    }

    /// Takes one call from the invocation's budget, or says why not.
    fn take_call(&mut self) -> Result<(), HttpError> {
        if self.outbound_calls >= self.call.limits.max_outbound_calls {
            if self.log.take(0) {
                tracing::warn!(
                    plugin = &*self.call.plugin,
                    api = &*self.call.api_id,
                    request_id = self.call.request_id.as_str(),
                    limit = self.call.limits.max_outbound_calls,
                    "outbound call refused: call limit reached"
                );
            }
            return Err(HttpError::CallLimit);
        }
        self.outbound_calls += 1;
        Ok(())
    }

    /// One outbound call as a future that borrows nothing from the store, so
    /// a batch can run several at once; [`Self::outbound_result`] turns its
    /// result into what the guest sees.
    fn call_future(
        &self,
        request: OutboundRequest,
    ) -> impl Future<Output = Result<outbound::OutboundResponse, OutboundError>> + Send + 'static {
        let client = self.call.client.clone();
        let policy = Arc::clone(&self.call.outbound);
        let request_id = self.call.request_id.clone();
        let trace = self.call.trace.clone();
        let limits = self.call.limits.clone();
        async move {
            let request = outbound::OutboundRequest {
                method: request.method,
                url: request.url,
                headers: request.headers,
                body: request.body,
                timeout: request.timeout_ms.map(|ms| Duration::from_millis(ms.into())),
            };
            client.send(&policy, request, &limits, &request_id, &trace).await
        }
    }

    /// Logs a refused or failed outbound call (refusals count against the
    /// invocation's log budget: a plugin cannot flood the log by making
    /// them) and converts the result for the guest.
    fn outbound_result(
        &mut self,
        url: &str,
        result: Result<outbound::OutboundResponse, OutboundError>,
    ) -> Result<OutboundResponse, HttpError> {
        result.map(to_wit_response).map_err(|e| {
            let (plugin, request_id) = (&*self.call.plugin, self.call.request_id.as_str());
            if matches!(e, OutboundError::NotAllowed(_)) {
                if self.log.take(url.len().min(MAX_LOG_LINE)) {
                    let url = untrusted::escape(url, MAX_LOG_LINE);
                    tracing::warn!(
                        plugin,
                        request_id,
                        url,
                        "outbound call refused: host not on the API's allowlist"
                    );
                }
            } else {
                let url = untrusted::escape(url, MAX_LOG_LINE);
                tracing::debug!(plugin, request_id, url, error = %e, "outbound call failed");
            }
            HttpError::from(e)
        })
    }
}

fn to_wit_response(response: outbound::OutboundResponse) -> OutboundResponse {
    OutboundResponse {
        status: response.status,
        headers: response.headers,
        body: response.body.into(),
    }
}

impl From<OutboundError> for HttpError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::NotAllowed(host) => HttpError::NotAllowed(host),
            OutboundError::Invalid(why) => HttpError::InvalidRequest(why),
            OutboundError::Connect(why) => HttpError::Connect(why),
            OutboundError::Timeout => HttpError::Timeout,
            OutboundError::TooLarge(_) => HttpError::TooLarge,
            OutboundError::Other(why) => HttpError::Other(why),
        }
    }
}

impl http::Host for State {
    async fn send(&mut self, request: OutboundRequest) -> Result<OutboundResponse, HttpError> {
        self.take_call()?;
        self.clock.pause();
        let url = request.url.clone();
        let result = self.call_future(request).await;
        self.clock.resume();
        self.outbound_result(&url, result)
    }

    async fn send_all(
        &mut self,
        requests: Vec<OutboundRequest>,
        options: BatchOptions,
    ) -> Vec<Result<OutboundResponse, HttpError>> {
        self.clock.pause();
        let deadline = options
            .deadline_ms
            .map_or(self.call.outbound.timeout, |ms| Duration::from_millis(ms.into()));
        let len = requests.len();
        let mut urls = Vec::with_capacity(len);
        let mut refused = Vec::new();
        let mut calls = Vec::with_capacity(len);
        for (i, request) in requests.into_iter().enumerate() {
            urls.push(request.url.clone());
            match self.take_call() {
                Ok(()) => calls.push((i, self.call_future(request))),
                Err(refusal) => refused.push((i, refusal)),
            }
        }
        let (results, stop) = outbound::batch(len, calls, deadline, options.min_successes).await;
        self.clock.resume();
        let unfinished = match stop {
            BatchStop::Deadline => HttpError::Timeout,
            BatchStop::Enough => HttpError::Cancelled,
        };
        let mut refused = refused.into_iter().peekable();
        results
            .into_iter()
            .zip(urls)
            .enumerate()
            .map(|(i, (result, url))| match result {
                Some(result) => self.outbound_result(&url, result),
                None => match refused.next_if(|(r, _)| *r == i) {
                    Some((_, refusal)) => Err(refusal),
                    None => Err(unfinished.clone()),
                },
            })
            .collect()
    }
}

// 0.2's `http` and `log` interfaces have 0.1's shapes: the 0.2 host
// functions convert and call the 0.1 ones.

impl v02::types::Host for State {}

impl v02::log::Host for State {
    fn log(&mut self, level: v02::log::Level, message: String) {
        self.write_log(level.into(), &message, 0);
    }

    fn log_part(
        &mut self,
        level: v02::log::Level,
        len: u8,
        last: bool,
        w0: u64,
        w1: u64,
        w2: u64,
        w3: u64,
        w4: u64,
        w5: u64,
        w6: u64,
        w7: u64,
        w8: u64,
        w9: u64,
        w10: u64,
        w11: u64,
    ) {
        let words = [w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11];
        State::log_part(self, level.into(), len, last, words);
    }
}

impl From<v02::log::Level> for Level {
    fn from(level: v02::log::Level) -> Self {
        use v02::log::Level as L;
        match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        }
    }
}

impl From<v02::http::OutboundRequest> for OutboundRequest {
    fn from(r: v02::http::OutboundRequest) -> Self {
        OutboundRequest {
            method: r.method,
            url: r.url,
            headers: r.headers,
            body: r.body,
            timeout_ms: r.timeout_ms,
        }
    }
}

impl From<OutboundResponse> for v02::http::OutboundResponse {
    fn from(r: OutboundResponse) -> Self {
        v02::http::OutboundResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<HttpError> for v02::http::HttpError {
    fn from(e: HttpError) -> Self {
        use v02::http::HttpError as E;
        match e {
            HttpError::NotAllowed(host) => E::NotAllowed(host),
            HttpError::InvalidRequest(why) => E::InvalidRequest(why),
            HttpError::Connect(why) => E::Connect(why),
            HttpError::Timeout => E::Timeout,
            HttpError::TooLarge => E::TooLarge,
            HttpError::CallLimit => E::CallLimit,
            HttpError::Other(why) => E::Other(why),
            HttpError::Cancelled => E::Cancelled,
        }
    }
}

impl v02::http::Host for State {
    async fn send(
        &mut self,
        request: v02::http::OutboundRequest,
    ) -> Result<v02::http::OutboundResponse, v02::http::HttpError> {
        http::Host::send(self, request.into())
            .await
            .map(Into::into)
            .map_err(Into::into)
    }

    async fn send_all(
        &mut self,
        requests: Vec<v02::http::OutboundRequest>,
        options: v02::http::BatchOptions,
    ) -> Vec<Result<v02::http::OutboundResponse, v02::http::HttpError>> {
        let options = BatchOptions {
            deadline_ms: options.deadline_ms,
            min_successes: options.min_successes,
        };
        let requests = requests.into_iter().map(Into::into).collect();
        http::Host::send_all(self, requests, options)
            .await
            .into_iter()
            .map(|r| r.map(Into::into).map_err(Into::into))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_yield(tick: &Tick) -> bool {
        matches!(tick, Tick::Yield(_))
    }

    #[tokio::test]
    async fn time_queued_after_a_yield_is_not_charged_and_the_guest_runs_a_tick_before_yielding_again() {
        let mut clock = GuestClock::new(Duration::from_millis(50));
        let Tick::Yield(resume) = clock.tick() else {
            panic!("expected a yield at the first tick");
        };
        // Queued behind other requests for longer than the whole budget.
        std::thread::sleep(Duration::from_millis(100));
        resume.await;
        assert!(matches!(clock.tick(), Tick::Continue));
        assert!(
            clock.guest_time() < Duration::from_millis(50),
            "charged {:?}",
            clock.guest_time()
        );
        assert!(is_yield(&clock.tick()));
    }

    /// Uses `cpu` of this thread's CPU time, however long that takes.
    fn burn(cpu: Duration) {
        let start = Mark::now();
        while start.elapsed() < cpu {
            std::hint::black_box(0u64);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn time_run_after_a_quick_resumption_is_charged() {
        let mut clock = GuestClock::new(Duration::from_millis(50));
        let Tick::Yield(resume) = clock.tick() else {
            panic!("expected a yield at the first tick");
        };
        resume.await;
        // Running guest code until the next tick, past the whole budget.
        burn(Duration::from_millis(100));
        assert!(matches!(clock.tick(), Tick::OverBudget));
    }

    #[test]
    fn running_past_the_budget_is_over_budget() {
        let mut clock = GuestClock::new(Duration::from_millis(5));
        // Running guest code (no yield in between).
        burn(Duration::from_millis(20));
        assert!(matches!(clock.tick(), Tick::OverBudget));
    }

    #[test]
    fn time_the_thread_is_not_running_is_not_charged() {
        let mut clock = GuestClock::new(Duration::from_millis(5));
        // Descheduled (here: asleep) for ten times the budget while "running".
        std::thread::sleep(Duration::from_millis(50));
        assert!(is_yield(&clock.tick()), "charged {:?}", clock.guest_time());
        assert!(clock.guest_time() < Duration::from_millis(5));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_host_wait_after_a_yield_is_not_charged() {
        let mut clock = GuestClock::new(Duration::from_millis(50));
        let Tick::Yield(resume) = clock.tick() else {
            panic!("expected a yield at the first tick");
        };
        resume.await;
        // The guest calls out before the next tick; the call takes twice
        // the budget, run on this thread by other work.
        clock.pause();
        burn(Duration::from_millis(100));
        clock.resume();
        assert!(
            matches!(clock.tick(), Tick::Yield(_)),
            "charged {:?}",
            clock.guest_time()
        );
        assert!(clock.guest_time() < Duration::from_millis(50));
    }

    #[test]
    fn host_waits_are_not_charged() {
        let mut clock = GuestClock::new(Duration::from_millis(5));
        burn(Duration::from_millis(2));
        clock.pause();
        burn(Duration::from_millis(20));
        clock.resume();
        let charged = clock.guest_time();
        assert!(
            charged >= Duration::from_millis(2) && charged < Duration::from_millis(5),
            "charged {charged:?}"
        );
    }
}
