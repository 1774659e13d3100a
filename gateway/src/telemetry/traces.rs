//! Traces over OTLP/HTTP (`tracing:` in gateway.yaml): a span per request
//! that continues the client's W3C `traceparent`, and under it a span per
//! plugin invocation and per upstream exchange; a plugin's outbound calls
//! are children of its invocation's span. Upstreams and outbound targets
//! receive the `traceparent` of the span that calls them.
//!
//! The tracer is process-wide and set once at start-up; without `tracing:`
//! nothing here runs on the request path beyond one check of that.

use crate::config::TracingConfig;
use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The exporter's handle: dropping it does not stop anything;
/// [`Exporter::shutdown`] sends what is still buffered.
#[derive(Debug)]
pub struct Exporter(SdkTracerProvider);

impl Exporter {
    /// Exports the spans still buffered and stops (at shutdown).
    pub fn shutdown(self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "traces: the last spans were not exported");
        }
    }
}

/// Starts exporting traces. Called once, at start-up.
pub fn init(config: &TracingConfig) -> anyhow::Result<Exporter> {
    crate::tls::install_default_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_headers(config.headers.clone().into_iter().collect())
        .with_timeout(Duration::from_secs(10))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    if TRACER.set(provider.tracer("portcullis")).is_err() {
        anyhow::bail!("traces were already set up");
    }
    tracing::info!(endpoint = %config.endpoint, service = %config.service_name, "exporting traces");
    Ok(Exporter(provider))
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// The span of one request, continuing the client's trace context; `None`
/// without `tracing:`.
pub fn request_span(headers: &HeaderMap, method: &str, path: &str, request_id: &str, client: &str) -> Option<Context> {
    let tracer = tracer()?;
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let span = tracer
        .span_builder(format!("{method} {path}"))
        .with_kind(SpanKind::Server)
        .with_attributes(
            [
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new("portcullis.request_id", request_id.to_owned()),
            ]
            .into_iter()
            .chain(client_attributes(client)),
        )
        .start_with_context(tracer, &parent);
    Some(parent.with_span(span))
}

fn client_attributes(client: &str) -> Vec<KeyValue> {
    let (address, port) = split_client(client);
    let mut attributes = vec![KeyValue::new("client.address", address.to_owned())];
    attributes.extend(port.map(|p| KeyValue::new("client.port", i64::from(p))));
    attributes
}

/// A child span of `parent`.
pub fn child(parent: &Context, name: String, kind: SpanKind, attributes: Vec<KeyValue>) -> Context {
    let Some(tracer) = tracer() else {
        return parent.clone();
    };
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(tracer, parent);
    parent.with_span(span)
}

/// Adds attributes to the span of `cx`.
pub fn record(cx: &Context, attributes: Vec<KeyValue>) {
    cx.span().set_attributes(attributes);
}

/// Marks the span of `cx` failed, without ending it.
pub fn fail(cx: &Context, error: &str) {
    cx.span().set_status(Status::error(error.to_owned()));
}

/// Ends the span of `cx`, failed with `error` if there is one.
pub fn end(cx: &Context, error: Option<String>) {
    let span = cx.span();
    if let Some(error) = error {
        span.set_status(Status::error(error));
    }
    span.end();
}

/// Ends the span of a call to another service: with the status it
/// answered, or failed with why there was no answer.
pub fn end_call(cx: &Context, status: Result<u16, String>) {
    match status {
        Ok(status) => {
            record(cx, vec![KeyValue::new("http.response.status_code", i64::from(status))]);
            end(cx, None);
        }
        Err(error) => end(cx, Some(error)),
    }
}

/// Sets `traceparent` (and `tracestate`) to the span of `cx`: what the
/// next hop continues.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    headers.remove("traceparent");
    let state = headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(cx, &mut HeadersMut(headers));
    // W3C Trace Context: a participant passes the vendors' `tracestate` on
    // with the trace; the span's own, when it has one, already carries it.
    if let Some(state) = state
        && !headers.contains_key("tracestate")
    {
        headers.insert("tracestate", state);
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

/// The request's trace id (32 hex digits): its span's when traced,
/// otherwise the client's `traceparent`'s when that is well formed.
pub fn trace_id(trace: Option<&Context>, headers: &HeaderMap) -> Option<String> {
    if let Some(cx) = trace {
        let id = cx.span().span_context().trace_id();
        if id != opentelemetry::trace::TraceId::INVALID {
            return Some(id.to_string());
        }
    }
    // version "-" trace-id "-" parent-id "-" flags (W3C Trace Context).
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut fields = value.split('-');
    let (_version, id) = (fields.next()?, fields.next()?);
    let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (id.len() == 32 && hex(id) && id.bytes().any(|b| b != b'0')).then(|| id.to_owned())
}

/// `ip:port` (or `[v6]:port`) split into address and port.
pub fn split_client(client: &str) -> (&str, Option<u16>) {
    match client.rsplit_once(':') {
        Some((ip, port)) if port.parse::<u16>().is_ok() => {
            (ip.trim_start_matches('[').trim_end_matches(']'), port.parse().ok())
        }
        _ => (client, None),
    }
}
