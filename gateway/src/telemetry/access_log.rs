//! The access log: one JSON line per request, written when the response has
//! been sent (or the client went away), like nginx's.
//!
//! Lines are formatted on the request's task and handed to a writer thread
//! through a bounded queue, so a slow disk never blocks serving: when the
//! queue is full the line is dropped and counted
//! (`portcullis_access_log_dropped_total`). The writer writes out what has
//! gathered, then rests for `BATCH`: under load a request neither wakes it
//! nor costs a write of its own, and an idle log still writes a line as soon
//! as it comes. Closing writes out the rest.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::config::LogTarget;
use crate::sync::lock;
use crate::telemetry::CallStats;

/// Lines waiting for the writer at most.
const QUEUE: usize = 16 * 1024;

/// How long the writer rests after writing, while lines gather (at most a
/// line's wait under load).
const BATCH: Duration = Duration::from_millis(10);

/// The log's sending side; cheap to clone (every request's entry holds one).
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<Vec<u8>>,
}

/// Stops the writer at shutdown; `AccessLog::open` gives it.
#[derive(Debug)]
pub struct Closer {
    queue: SyncSender<Vec<u8>>,
    writer: std::thread::JoinHandle<()>,
}

impl Closer {
    /// Writes out every line sent so far and stops the writer (once no
    /// request is left). Blocks for up to `BATCH` and the write.
    pub fn close(self) {
        // An empty line, which no entry is, tells the writer to stop.
        if self.queue.send(Vec::new()).is_ok() {
            let _ = self.writer.join();
        }
    }
}

/// Set by SIGUSR1 (`reopen`): the writer reopens its file before it writes
/// its next lines, so logrotate can move the old one away.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Asks the access log's writer to reopen its file (after logrotate moved
/// it): done before the next line is written.
pub fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

fn open_target(target: &LogTarget) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        LogTarget::Stdout => Box::new(std::io::stdout()),
        LogTarget::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
    })
}

impl AccessLog {
    /// Opens (appends to) the file, or stdout, and starts the writer thread.
    pub fn open(target: &LogTarget) -> std::io::Result<(Self, Closer)> {
        let out = open_target(target)?;
        let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE);
        let target = target.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(lines, &target, std::io::BufWriter::new(out)))?;
        let closer = Closer {
            queue: queue.clone(),
            writer,
        };
        Ok((AccessLog { queue }, closer))
    }

    fn send(&self, line: Vec<u8>) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(line) {
            crate::telemetry::metrics::access_log_dropped();
        }
    }
}

fn write_lines(lines: Receiver<Vec<u8>>, target: &LogTarget, mut out: std::io::BufWriter<Box<dyn Write + Send>>) {
    while let Ok(line) = lines.recv() {
        if REOPEN.swap(false, Ordering::Relaxed) && matches!(target, LogTarget::File(_)) {
            let _ = out.flush();
            match open_target(target) {
                Ok(file) => {
                    out = std::io::BufWriter::new(file);
                    tracing::info!(file = %target, "access log reopened");
                }
                // Keep writing to the file already open: lines are not lost.
                Err(e) => {
                    tracing::error!(file = %target, error = %e, "cannot reopen the access log; still writing to the old file")
                }
            }
        }
        let mut next = Some(line);
        while let Some(line) = next {
            if line.is_empty() {
                let _ = out.flush();
                return;
            }
            if out.write_all(&line).is_err() {
                return;
            }
            next = lines.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
        std::thread::sleep(BATCH);
    }
}

/// What the request's upstream and caller were, filled in as it is served.
#[derive(Debug, Default)]
pub struct Usage {
    /// Time to the upstream's response head.
    pub upstream_time: Option<Duration>,
    /// The target that answered.
    pub target: Option<Arc<str>>,
    /// Targets tried, the one that answered included.
    pub tries: u32,
    /// The caller's key id, once authenticated.
    pub key_id: Option<String>,
    /// The endpoint template the request matched.
    pub endpoint: Option<String>,
}

/// One request's entry, completed when its response body ends.
#[derive(Debug)]
pub struct Entry {
    log: AccessLog,
    time: SystemTime,
    started: Instant,
    pub request_id: String,
    pub trace_id: Option<String>,
    /// `ip:port`.
    pub client: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub protocol: &'static str,
    pub api: Option<String>,
    pub status: u16,
    pub error: Option<String>,
    /// Whose fault the failure was (`client`, `upstream`, `plugin`,
    /// `gateway`).
    pub blame: Option<&'static str>,
    /// Request body bytes read, counted as they are read.
    pub bytes_in: Arc<AtomicU64>,
    pub usage: Arc<Mutex<Usage>>,
    /// The totals of the request's plugin calls.
    pub plugins: Arc<Mutex<CallStats>>,
}

/// The bytes of a header the client sent, as text (lossy, cut at 1 KiB:
/// the log is read by people and tools, not replayed).
fn header_text(value: Option<&http::HeaderValue>) -> Option<String> {
    const MAX: usize = 1024;
    let bytes = value?.as_bytes();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
    Some(text.into_owned())
}

/// `network.protocol.version`'s value.
fn protocol(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

impl Entry {
    pub fn new<B>(
        log: &AccessLog,
        started: Instant,
        request_id: &str,
        trace_id: Option<String>,
        client: String,
        request: &http::Request<B>,
    ) -> Self {
        let headers = request.headers();
        let uri = request.uri();
        Entry {
            log: log.clone(),
            time: SystemTime::now(),
            started,
            request_id: request_id.to_owned(),
            trace_id,
            client,
            method: request.method().as_str().to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            host: header_text(headers.get(http::header::HOST)).or_else(|| uri.authority().map(|a| a.to_string())),
            user_agent: header_text(headers.get(http::header::USER_AGENT)),
            protocol: protocol(request.version()),
            api: None,
            status: 0,
            error: None,
            blame: None,
            bytes_in: Arc::new(AtomicU64::new(0)),
            usage: Arc::new(Mutex::new(Usage::default())),
            plugins: Arc::new(Mutex::new(CallStats::default())),
        }
    }

    /// Writes the line: the body sent `bytes_out` bytes, and `complete`
    /// says whether it was sent to its end.
    pub fn finish(&self, bytes_out: u64, complete: bool) {
        let usage = lock(&self.usage);
        let plugins = lock(&self.plugins);
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let (address, port) = crate::telemetry::split_client(&self.client);
        let line = Line {
            time: humantime::format_rfc3339_millis(self.time),
            trace_id: self.trace_id.as_deref(),
            request_id: &self.request_id,
            client_address: address,
            client_port: port,
            method: &self.method,
            host: self.host.as_deref(),
            path: &self.path,
            query: self.query.as_deref(),
            protocol: self.protocol,
            user_agent: self.user_agent.as_deref(),
            api: self.api.as_deref(),
            route: usage.endpoint.as_deref(),
            status: self.status,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            complete,
            duration_ms: ms(self.started.elapsed()),
            target: usage.target.as_deref(),
            tries: usage.tries,
            upstream_ms: usage.upstream_time.map(ms),
            plugin_ms: ms(plugins.time),
            plugins: plugins.ran.iter().map(|r| &**r).collect(),
            key_id: usage.key_id.as_deref(),
            blame: self.blame,
            error: self.error.as_deref(),
        };
        let mut text = Vec::with_capacity(512);
        if serde_json::to_writer(&mut text, &line).is_err() {
            return;
        }
        let mut text = escape_separators(text);
        text.push(b'\n');
        self.log.send(text);
    }
}

/// One line, in this field order. Names follow OpenTelemetry's semantic
/// conventions (HTTP, URL, client, server, user agent, error; `trace_id`
/// as in its log data model); what they do not name is `portcullis.*`.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "display")]
    time: humantime::Rfc3339Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(rename = "portcullis.request_id")]
    request_id: &'a str,
    #[serde(rename = "client.address")]
    client_address: &'a str,
    #[serde(rename = "client.port")]
    client_port: Option<u16>,
    #[serde(rename = "http.request.method")]
    method: &'a str,
    #[serde(rename = "server.address")]
    host: Option<&'a str>,
    #[serde(rename = "url.path")]
    path: &'a str,
    #[serde(rename = "url.query", skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    #[serde(rename = "network.protocol.version")]
    protocol: &'static str,
    #[serde(rename = "user_agent.original")]
    user_agent: Option<&'a str>,
    #[serde(rename = "portcullis.api")]
    api: Option<&'a str>,
    #[serde(rename = "http.route")]
    route: Option<&'a str>,
    #[serde(rename = "http.response.status_code")]
    status: u16,
    #[serde(rename = "http.request.body.size")]
    bytes_in: u64,
    #[serde(rename = "http.response.body.size")]
    bytes_out: u64,
    /// Whether the response body was sent to its end.
    #[serde(rename = "portcullis.complete")]
    complete: bool,
    #[serde(rename = "portcullis.duration_ms")]
    duration_ms: f64,
    /// The upstream target that answered.
    #[serde(rename = "portcullis.upstream.target")]
    target: Option<&'a str>,
    #[serde(rename = "portcullis.upstream.tries")]
    tries: u32,
    #[serde(rename = "portcullis.upstream.duration_ms")]
    upstream_ms: Option<f64>,
    #[serde(rename = "portcullis.plugin.duration_ms")]
    plugin_ms: f64,
    /// The plugins that ran, each as `label@digest`.
    #[serde(rename = "portcullis.plugins", skip_serializing_if = "Vec::is_empty")]
    plugins: Vec<&'a str>,
    #[serde(rename = "portcullis.key_id")]
    key_id: Option<&'a str>,
    /// Whose fault a failure was: `client`, `upstream`, `plugin`, `gateway`.
    #[serde(rename = "error.type")]
    blame: Option<&'static str>,
    #[serde(rename = "portcullis.error")]
    error: Option<&'a str>,
}

/// A JSON line with the characters JSON leaves raw but that split or
/// reorder lines for other readers (U+0085, U+2028, U+2029, the other C1
/// controls and the bidirectional controls) written as `\uXXXX` escapes.
/// They can only occur inside strings, where such an escape means the same.
fn escape_separators(json: Vec<u8>) -> Vec<u8> {
    if json.is_ascii() {
        return json;
    }
    let Ok(text) = String::from_utf8(json) else {
        return Vec::new();
    };
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if crate::text::is_unsafe_char(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.into_bytes()
}

fn display<S: serde::Serializer>(value: &impl std::fmt::Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
