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
use std::sync::atomic::{AtomicU64, Ordering};
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

impl AccessLog {
    /// Opens (appends to) the file, or stdout, and starts the writer thread.
    pub fn open(target: &LogTarget) -> std::io::Result<(Self, Closer)> {
        let out: Box<dyn Write + Send> = match target {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(lines, std::io::BufWriter::new(out)))?;
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

fn write_lines(lines: Receiver<Vec<u8>>, mut out: std::io::BufWriter<Box<dyn Write + Send>>) {
    while let Ok(line) = lines.recv() {
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
    pub client: String,
    pub method: String,
    pub path: String,
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

impl Entry {
    pub fn new(log: &AccessLog, started: Instant, request_id: &str, client: String, method: &str, path: &str) -> Self {
        Entry {
            log: log.clone(),
            time: SystemTime::now(),
            started,
            request_id: request_id.to_owned(),
            client,
            method: method.to_owned(),
            path: path.to_owned(),
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
        let line = Line {
            time: humantime::format_rfc3339_millis(self.time),
            request_id: &self.request_id,
            client: &self.client,
            method: &self.method,
            path: &self.path,
            api: self.api.as_deref(),
            endpoint: usage.endpoint.as_deref(),
            status: self.status,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            complete,
            duration_ms: ms(self.started.elapsed()),
            upstream_ms: usage.upstream_time.map(ms),
            plugin_ms: ms(plugins.time),
            plugins: plugins.ran.iter().map(|r| &**r).collect(),
            key_id: usage.key_id.as_deref(),
            error: self.error.as_deref(),
            blame: self.blame,
        };
        let mut text = Vec::with_capacity(384);
        if serde_json::to_writer(&mut text, &line).is_err() {
            return;
        }
        let mut text = escape_separators(text);
        text.push(b'\n');
        self.log.send(text);
    }
}

/// One line, in this field order.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "display")]
    time: humantime::Rfc3339Timestamp,
    request_id: &'a str,
    client: &'a str,
    method: &'a str,
    path: &'a str,
    api: Option<&'a str>,
    endpoint: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    complete: bool,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    plugin_ms: f64,
    /// The plugins that ran, each as `label@digest`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    plugins: Vec<&'a str>,
    key_id: Option<&'a str>,
    error: Option<&'a str>,
    blame: Option<&'static str>,
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
