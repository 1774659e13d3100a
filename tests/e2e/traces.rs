//! Traces: a real OTLP/HTTP receiver decodes what the gateway exports, and
//! the span tree of a request is checked: the client's trace continued, a
//! span per plugin invocation (auth, then an aggregate fan-out whose
//! outbound calls are its children) and one for the upstream, whose
//! `traceparent` the upstream receives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::support::{ConfigDir, Gateway, Wasm, client, plugin, upstream, upstreams};

type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf): every span with
/// its resource's `service.name`.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                for resource_spans in request.resource_spans {
                    let service = resource_spans
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                        .unwrap_or_default();
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            sink.lock().expect("lock").push((service.clone(), span));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    (upstream(app).await, received)
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A span's attribute, as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of trace `trace_id` once `n` have arrived.
fn spans_of(received: &Received, trace_id: &str, n: usize) -> Vec<Span> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<Span> = received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(service, span)| service == "edge" && hex(&span.trace_id) == trace_id)
            .map(|(_, span)| span.clone())
            .collect();
        if spans.len() >= n {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "{} spans of trace {trace_id}, expected {n}: {spans:#?}",
            spans.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.parent_span_id == parent.span_id).collect()
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn a_request_s_span_tree_has_its_plugins_its_outbound_calls_and_its_upstream() {
    let (collector, received) = receiver().await;
    let echo = upstream(upstreams::echo("up")).await;
    let users = upstream(upstreams::records("users-service")).await;
    let stock = upstream(upstreams::records("stock-service")).await;
    let host = |url: &str| url.trim_start_matches("http://").to_owned();
    let api = format!(
        "id: shop\nlisten_path: /shop/\nstrip_listen_path: true\nupstream: {echo}\noutbound:\n  allow: ['{}', '{}']\nauth: {{ type: plugin }}\nplugins:\n  auth:\n    path: {auth}\n    function: bearer-token\n    config: {{ tokens: {{ t1: {{ user: alice }} }} }}\nendpoints:\n  - method: GET\n    path: /summary/{{id}}\n    plugin:\n      path: {aggregate}\n      function: merge\n      config:\n        services:\n          user: '{users}/users/{{id}}'\n          stock: '{stock}/stock/{{id}}'\n  - method: GET\n    path: /overview/{{id}}\n    plugin:\n      path: {aggregate}\n      function: combine\n      fan_out:\n        calls:\n          user: '{users}/users/{{id}}'\n          stock: '{stock}/stock/{{id}}'\n",
        host(&users),
        host(&stock),
        auth = plugin(Wasm::Auth).display(),
        aggregate = plugin(Wasm::Aggregate).display(),
    );
    let gateway_yaml = format!("apis: [apis/]\ntracing:\n  endpoint: {collector}\n  service_name: edge\n");
    let gw = Gateway::start(ConfigDir::new(&gateway_yaml, &[("shop.yaml", &api)]));
    let http = client();

    // A fan-out, continuing the client's trace.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let authorized_get = |path: &str, traceparent: String| {
        http.get(gw.url(path))
            .header("authorization", "Bearer t1")
            .header("traceparent", traceparent)
            .header("tracestate", "vendor=opaque,other=1")
            .send()
    };
    let response = authorized_get("/shop/summary/8", format!("00-{trace_id}-{client_span}-01"))
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("body");

    let spans = spans_of(&received, trace_id, 5);
    let server: Vec<&Span> = spans.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(
        hex(&server.parent_span_id),
        client_span,
        "the client's span is the parent"
    );
    assert_eq!(server.name, "GET /shop/summary/8");
    assert_eq!(attribute(server, "portcullis.api").as_deref(), Some("shop"));
    assert_eq!(attribute(server, "http.route").as_deref(), Some("/summary/{id}"));
    assert_eq!(attribute(server, "http.response.status_code").as_deref(), Some("200"));

    let plugins = children(&spans, server);
    let hooks: Vec<(Option<String>, Option<String>, Option<String>)> = plugins
        .iter()
        .map(|s| {
            (
                attribute(s, "portcullis.hook"),
                attribute(s, "portcullis.plugin.function"),
                attribute(s, "portcullis.plugin.outcome"),
            )
        })
        .collect();
    let expect = |hook: &str, function: &str, outcome: &str| {
        (
            Some(hook.to_owned()),
            Some(function.to_owned()),
            Some(outcome.to_owned()),
        )
    };
    assert!(
        hooks.contains(&expect("auth", "bearer-token", "authenticated")),
        "{hooks:?}"
    );
    assert!(hooks.contains(&expect("endpoint", "merge", "respond")), "{hooks:?}");
    assert_eq!(plugins.len(), 2, "no upstream: the plugin answered; {hooks:?}");
    for span in &plugins {
        assert!(attribute(span, "portcullis.plugin.cpu_us").is_some(), "{span:#?}");
        assert!(
            attribute(span, "portcullis.plugin.path").is_some_and(|p| p.ends_with(".wasm")),
            "{span:#?}"
        );
    }
    let merge = plugins
        .iter()
        .find(|s| attribute(s, "portcullis.plugin.function").as_deref() == Some("merge"))
        .expect("merge");
    let outbound = children(&spans, merge);
    assert_eq!(outbound.len(), 2, "one span per outbound call: {spans:#?}");
    let mut targets: Vec<String> = outbound
        .iter()
        .map(|s| {
            assert_eq!(s.kind, CLIENT);
            assert_eq!(attribute(s, "http.response.status_code").as_deref(), Some("200"));
            attribute(s, "url.full").expect("url.full")
        })
        .collect();
    targets.sort();
    let mut expected = [format!("{stock}/stock/8"), format!("{users}/users/8")];
    expected.sort();
    assert_eq!(targets, expected);

    // A host-run fan-out: its own span beside the plugin's, with the calls
    // as its children.
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let response = authorized_get("/shop/overview/8", format!("00-{trace_id}-{client_span}-01"))
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("body");
    let spans = spans_of(&received, trace_id, 6);
    let server = spans.iter().find(|s| s.kind == SERVER).expect("server span");
    let under_server = children(&spans, server);
    let fan_out = under_server
        .iter()
        .find(|s| s.name == "fan-out combine")
        .unwrap_or_else(|| panic!("a fan-out span under the request's: {spans:#?}"));
    assert_eq!(attribute(fan_out, "portcullis.fan_out.calls").as_deref(), Some("2"));
    assert_eq!(attribute(fan_out, "portcullis.fan_out.failed").as_deref(), Some("0"));
    assert!(
        under_server.iter().any(
            |s| attribute(s, "portcullis.plugin.function").as_deref() == Some("combine") && s.name != "fan-out combine"
        ),
        "the plugin's own span: {spans:#?}"
    );
    let mut targets: Vec<String> = children(&spans, fan_out)
        .iter()
        .map(|s| {
            assert_eq!(s.kind, CLIENT);
            attribute(s, "url.full").expect("url.full")
        })
        .collect();
    targets.sort();
    assert_eq!(targets, expected, "one span per call, under the fan-out's");

    // Proxied: the upstream's span, and the upstream continues it.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let response = authorized_get("/shop/orders/1", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let echoed: serde_json::Value = response.json().await.expect("echo");
    let spans = spans_of(&received, trace_id, 3);
    let server = spans.iter().find(|s| s.kind == SERVER).expect("server span");
    let upstream_span = children(&spans, server)
        .into_iter()
        .find(|s| s.kind == CLIENT)
        .expect("upstream span");
    assert_eq!(upstream_span.name, "upstream shop");
    assert_eq!(
        attribute(upstream_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        echoed["headers"]["traceparent"][0],
        format!("00-{trace_id}-{}-01", hex(&upstream_span.span_id)),
        "the upstream continues the upstream span"
    );
    assert_eq!(
        echoed["headers"]["tracestate"][0], "vendor=opaque,other=1",
        "the client's tracestate travels with its trace"
    );
}

#[test]
fn a_bad_tracing_block_is_refused_with_its_field() {
    for (tracing, message) in [
        (
            "{ endpoint: 'https://collector:4318' }",
            "tracing.endpoint: https:// collectors are not supported yet",
        ),
        (
            "{ endpoint: 'http://c:4318', sampling_ratio: 1.5 }",
            "tracing.sampling_ratio: 1.5 is not between 0 and 1",
        ),
        (
            "{ endpoint: 'http://c:4318', headers: { x-key: 'env:PORTCULLIS_NO_SUCH_VARIABLE' } }",
            "environment variable PORTCULLIS_NO_SUCH_VARIABLE is not set",
        ),
    ] {
        let config = ConfigDir::new(
            &format!("apis: [apis/]\ntracing: {tracing}\n"),
            &[("a.yaml", "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:9\n")],
        );
        let output = crate::support::validate(&config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{tracing}");
        assert!(stderr.contains("gateway.yaml"), "{stderr}");
        assert!(stderr.contains(message), "{message} in {stderr}");
    }
}
