//! One request, observed once. [`Observer::begin`] runs when the request
//! arrives and [`Observer::end`] when its response is ready; the response
//! body then carries what is left ([`Observed`]) and finishes the
//! observation when it ends, sent to its last byte or abandoned by the
//! client. One observation feeds the three outputs:
//!
//! - metrics: the request counted by status and timed, failures by blame;
//! - the access log: one line, written when the body ends, with what the
//!   chain recorded while serving ([`Accounting`]);
//! - traces: the request's span, ended with the body.
//!
//! With neither an access log nor traces configured, a request costs the
//! metrics update and nothing else here: no body is wrapped, no clock read
//! beyond the one for the duration. (The methods are `#[inline]`: each has
//! one call site on the request path, in another codegen unit.)

use std::fmt::Display;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http::{Method, StatusCode, Uri};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::KeyValue;

use super::access_log::{AccessLog, Entry, Usage};
use super::metrics::ApiMetrics;
use super::{CallStats, RequestId, traces};

/// Who a failed request's failure belongs to, for logs, metrics and the
/// access log: the client (a bad or refused request), the upstream, a
/// plugin, or the gateway itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blame {
    Client,
    Upstream,
    Plugin,
    Gateway,
}

impl Blame {
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Client => "client",
            Blame::Upstream => "upstream",
            Blame::Plugin => "plugin",
            Blame::Gateway => "gateway",
        }
    }
}

/// Where the chain records what serving the request used, shared with the
/// access log's entry: upstream time, key id and endpoint; and the plugin
/// calls' totals. Absent without an access log.
pub type Accounting = (Arc<Mutex<Usage>>, Arc<Mutex<CallStats>>);

/// The observation of one request, from arrival to its response head.
#[derive(Debug)]
pub struct Observer {
    started: Instant,
    /// Kept for the failure's log line (both share their bytes with the
    /// request).
    method: Method,
    uri: Uri,
    /// At debug level, the span every line of the request carries.
    span: tracing::Span,
    /// With traces on: the request's span.
    trace: Option<opentelemetry::Context>,
    /// With an access log: the request's line, filled in as it is served
    /// (boxed: the observer and its body move whole, and most gateways
    /// keep no access log).
    entry: Option<Box<Entry>>,
}

impl Observer {
    /// Begins observing `request`, which arrived at `started` from
    /// `client` (`ip:port`) and was given `request_id`.
    #[inline]
    pub fn begin(
        started: Instant,
        request: &http::Request<Body>,
        request_id: &RequestId,
        client: &str,
        log: Option<&AccessLog>,
    ) -> Self {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        // At info level this is not built at all (formatting its fields on
        // every request costs more than routing it) unless the log is JSON,
        // where every request-scoped line carries the request and trace ids.
        macro_rules! request_span {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "request",
                    method = %method,
                    path = uri.path(),
                    request_id = request_id.as_str(),
                    trace_id = tracing::field::Empty,
                    api = tracing::field::Empty,
                    endpoint = tracing::field::Empty,
                    key_id = tracing::field::Empty,
                    alias = tracing::field::Empty,
                )
            };
        }
        let span = if super::log_format::json() {
            request_span!(tracing::Level::INFO)
        } else {
            request_span!(tracing::Level::DEBUG)
        };
        let trace = traces::request_span(
            request.headers(),
            method.as_str(),
            uri.path(),
            request_id.as_str(),
            client,
        );
        let trace_id = if log.is_some() || !span.is_disabled() {
            traces::trace_id(trace.as_ref(), request.headers())
        } else {
            None
        };
        if let Some(id) = &trace_id {
            span.record("trace_id", id.as_str());
        }
        let entry = log.map(|log| {
            Box::new(Entry::new(
                log,
                started,
                request_id.as_str(),
                trace_id,
                client.to_owned(),
                request,
            ))
        });
        Observer {
            started,
            method,
            uri,
            span,
            trace,
            entry,
        }
    }

    /// The span the request is served in.
    #[inline]
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The request's trace span, if traced.
    #[inline]
    pub fn trace(&self) -> Option<opentelemetry::Context> {
        self.trace.clone()
    }

    /// The request's body, its bytes counted for the access log.
    #[inline]
    pub fn count_request_body(&self, request: http::Request<Body>) -> http::Request<Body> {
        match &self.entry {
            Some(entry) => {
                let count = Arc::clone(&entry.bytes_in);
                request.map(|body| Body::new(Counted { inner: body, count }))
            }
            None => request,
        }
    }

    /// Where the chain records what it used, with an access log.
    #[inline]
    pub fn accounting(&self) -> Option<Accounting> {
        self.entry
            .as_ref()
            .map(|e| (Arc::clone(&e.usage), Arc::clone(&e.plugins)))
    }

    /// The request failed with `status`, `blame`'s doing: logged once (a
    /// warning for a 5xx, at debug level otherwise) and noted for the
    /// access log and metrics.
    pub fn failed(&mut self, request_id: &RequestId, status: StatusCode, blame: Blame, error: &dyn Display) {
        if let Some(entry) = &mut self.entry {
            entry.error = Some(error.to_string());
            entry.blame = Some(blame.as_str());
        }
        let (method, path, request_id) = (&self.method, self.uri.path(), request_id.as_str());
        let (code, blame_name) = (status.as_u16(), blame.as_str());
        self.span.in_scope(|| {
            if status.is_server_error() {
                tracing::warn!(%method, path, request_id, status = code, blame = blame_name, error = %error, "request failed");
            } else {
                tracing::debug!(%method, path, request_id, status = code, blame = blame_name, error = %error, "request rejected");
            }
        });
    }

    /// Ends the observation of the request head: `response` is counted and
    /// timed in `metrics` (with `blame`, if it is a failure's), and its
    /// body carries the rest to the body's end.
    #[inline]
    pub fn end(
        self,
        metrics: &ApiMetrics,
        api: Option<&str>,
        blame: Option<Blame>,
        response: http::Response<Body>,
    ) -> http::Response<Body> {
        let status = response.status();
        metrics.observe(status.as_u16(), self.started.elapsed());
        if let Some(blame) = blame {
            metrics.failed(blame.as_str());
        }
        if let Some(trace) = &self.trace {
            traces::record(
                trace,
                vec![KeyValue::new("http.response.status_code", i64::from(status.as_u16()))],
            );
            if status.is_server_error() {
                traces::fail(trace, status.as_str());
            }
        }
        if self.trace.is_none() && self.entry.is_none() {
            return response;
        }
        let entry = self.entry.map(|mut entry| {
            entry.status = status.as_u16();
            entry.api = api.map(str::to_owned);
            entry
        });
        let trace = self.trace;
        response.map(|inner| {
            Body::new(Observed {
                inner,
                entry,
                trace,
                sent: 0,
            })
        })
    }
}

/// A response body that finishes its request's observation when it ends,
/// or when it is dropped before its end (the client went away): the access
/// log's line is written with the bytes sent, and the trace span ended.
#[derive(Debug)]
pub struct Observed {
    inner: Body,
    entry: Option<Box<Entry>>,
    trace: Option<opentelemetry::Context>,
    sent: u64,
}

impl Observed {
    fn finish(&mut self, complete: bool) {
        if let Some(entry) = self.entry.take() {
            entry.finish(self.sent, complete);
        }
        if let Some(trace) = self.trace.take() {
            traces::end(&trace, None);
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts the bytes it yields for the access log.
#[derive(Debug)]
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count
                .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
