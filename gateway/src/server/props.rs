//! The boundary, generatively: arbitrary plugin outcomes (statuses, header
//! names and values with line breaks and framing headers among them, bodies
//! that hold whole forged messages, request changes, upstream overrides,
//! session metadata) go through the validation and the message building the
//! server uses, and are written to the wire by hyper, as in production. The
//! bytes must hold exactly one well-formed message framed by the gateway,
//! carrying nothing the plugin set that was not checked; no input may panic.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderName;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BodyState, Exchange, Peer};
use crate::config::Limits;
use crate::config::{AllowRule, BaseUrl, Destination, RoutingPolicy};
use crate::framing;
use crate::plugin::{self, Api, CallContext, Outcome, RequestChanges, RequestOutcome, Session};
use crate::telemetry::{RequestId, TraceContext};
use crate::upstream::outbound::OutboundPolicy;

#[path = "../../../tests/e2e/support/wire.rs"]
mod wire;

const FORGED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged";

// Mostly valid values (so most outcomes reach the wire), some arbitrary
// ones (line breaks, spaces, non-ASCII) that the checks must refuse.

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::sample::select(vec![
            "content-length",
            "Content-Length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-x",
            "host",
            "x-a",
            "x-b",
            "set-cookie",
        ])
        .prop_map(String::from),
        1 => "[ -~\r\n]{0,10}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["0", "5", "chunked", "close", "keep-alive, x-a", "x-b", "h2c"]).prop_map(String::from),
        3 => "[ -~]{0,16}",
        1 => "[ -~\t\r\n\u{80}-\u{ff}]{0,16}",
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((name(), value()), 0..6)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(FORGED.to_vec()), prop::collection::vec(any::<u8>(), 0..64)]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        6 => 200u16..600,
        2 => prop::sample::select(vec![100u16, 101, 204, 304, 599, 600]),
        1 => any::<u16>(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::sample::select(vec!["/", "/a/b", "/%20x", "/orders/2"]).prop_map(String::from),
        1 => "[ -~\r\n]{0,12}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::sample::select(vec!["a=1&b=2", "", "x"]).prop_map(String::from),
        1 => "[ -~\r\n]{0,12}",
    ]
}

fn changes() -> impl Strategy<Value = RequestChanges> {
    let method = prop::option::of(prop_oneof![
        9 => prop::sample::select(vec!["GET", "POST", "DELETE", "PATCH"]).prop_map(String::from),
        1 => prop_oneof![Just("CONNECT".to_owned()), "[A-Z \r\n]{0,8}"],
    ]);
    let upstream = prop::option::of(prop_oneof![
        6 => prop::sample::select(vec![
            "http://127.0.0.1:9000",
            "http://127.0.0.1:9000/base",
            "http://allowed.internal:81",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(vec!["http://169.254.169.254", "http://127.0.0.1:9001"]).prop_map(String::from),
        1 => "[ -~]{0,20}",
    ]);
    (
        method,
        prop::option::of(path()),
        prop::option::of(query()),
        headers(),
        prop::collection::vec(name(), 0..4),
        prop::option::of(body()),
        upstream,
        headers(),
        headers(),
    )
        .prop_map(
            |(method, path, query, set_headers, remove_headers, body, upstream, session_metadata, response_headers)| {
                RequestChanges {
                    method,
                    path,
                    query,
                    set_headers,
                    remove_headers,
                    body,
                    upstream,
                    session_metadata,
                    response_headers,
                }
            },
        )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves `response` to one request over an in-memory connection with
/// hyper's HTTP/1 server, as the gateway does; returns every byte the server
/// wrote until the connection ended.
async fn response_bytes(response: axum::response::Response) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let response = std::sync::Mutex::new(Some(response));
    let service = hyper::service::service_fn(move |_| {
        let response = response.lock().expect("lock").take().expect("one request");
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let connection =
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(server), service));
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .expect("write");
    let mut bytes = read_message(&mut client, true).await;
    // Then the client hangs up; anything written after the response follows.
    client.shutdown().await.expect("shutdown");
    client.read_to_end(&mut bytes).await.expect("read");
    connection.await.expect("join").expect("the connection ends cleanly");
    bytes
}

/// Reads from `io` until it holds one complete message.
async fn read_message(io: &mut tokio::io::DuplexStream, response: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    while !complete(&bytes, response) {
        let n = io.read(&mut buf).await.expect("read");
        assert!(n > 0, "the peer stopped before a complete message");
        bytes.extend_from_slice(&buf[..n]);
    }
    bytes
}

/// Sends `request` with hyper's HTTP/1 client over an in-memory connection
/// (origin-form, as the pooled client sends it), answers it, and returns
/// the bytes the client wrote.
async fn request_bytes(mut request: http::Request<Body>) -> Vec<u8> {
    let (io, mut server) = tokio::io::duplex(1 << 20);
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(io))
        .await
        .expect("handshake");
    let driver = tokio::spawn(connection);
    let origin_form = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .expect("uri");
    *request.uri_mut() = origin_form;
    let sent = tokio::spawn(async move { sender.send_request(request).await.map(|_| ()) });
    let mut bytes = read_message(&mut server, false).await;
    server
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .await
        .expect("answer");
    sent.await.expect("join").expect("the response arrives");
    driver.abort();
    // Anything written after the request would follow it here.
    drop(server.shutdown().await);
    let mut rest = Vec::new();
    let _ = server.read_to_end(&mut rest).await;
    bytes.extend_from_slice(&rest);
    bytes
}

/// Whether `bytes` hold a message head and the body its content-length
/// announces (hyper frames a body of known size that way; the strict
/// parsing of the whole stream comes after).
fn complete(bytes: &[u8], response: bool) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let (head, headers) = if response {
        let mut parsed = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = parsed.parse(bytes) else {
            return false;
        };
        (head, parsed.headers)
    } else {
        let mut parsed = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = parsed.parse(bytes) else {
            return false;
        };
        (head, parsed.headers)
    };
    let length = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= head + length
}

fn assert_no_owned_headers(headers: &[(String, String)], allowed: &[&str]) {
    for (name, _) in headers {
        let parsed = HeaderName::from_bytes(name.as_bytes()).expect("a valid name on the wire");
        assert!(
            !framing::is_gateway_owned(&parsed) || allowed.contains(&name.as_str()),
            "{name} reached the wire: {headers:?}"
        );
    }
}

/// Headers the plugin set that must arrive: valid, not owned by the
/// gateway, not named by a `connection` field the plugin also set.
fn expected_headers(fields: &[(String, String)]) -> Vec<(String, String)> {
    let (map, _) = framing::plugin_headers(fields).expect("checked");
    // Leading and trailing whitespace is not part of a field's value
    // (RFC 9110 5.5); a parser drops it.
    map.iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes());
            (n.as_str().to_owned(), value.trim_matches([' ', '\t']).to_owned())
        })
        .collect()
}

fn exchange(parts: http::request::Parts, body: &'static [u8]) -> Exchange {
    let api = BaseUrl::parse("http://127.0.0.1:9000").expect("valid");
    Exchange {
        parts,
        body: BodyState::Buffered(Bytes::from_static(body)),
        destination: Destination::Upstream(0),
        upstream_path: "/orders/1".to_owned(),
        params: Vec::new(),
        client: Arc::new(Peer::new("127.0.0.1:5555".parse().expect("addr"), None)),
        ctx: CallContext {
            api: Arc::new(Api {
                id: "t".into(),
                name: "t".into(),
                listen_path: "/".into(),
                upstream: api.to_string(),
                config: "{}".into(),
            }),
            api_id: "t".into(),
            outbound: Arc::new(OutboundPolicy::default()),
            routing: Arc::new(routing()),
            request_id: RequestId::none(),
            trace: TraceContext::default(),
            stats: None,
            hook: "test",
        },
        session: Session::anonymous(),
        caller: None,
        metadata_dirty: false,
        timeouts: crate::config::UpstreamTimeouts {
            head: std::time::Duration::from_secs(1),
            read: std::time::Duration::from_secs(1),
            total: None,
        },
        max_body: None,
        limit_headers: Default::default(),
        response_headers: Default::default(),
        usage: None,
        upstream_span: None,
        body_timeout: std::time::Duration::from_secs(10),
    }
}

fn routing() -> RoutingPolicy {
    RoutingPolicy {
        names: vec![("default".into(), 0)],
        origins: vec![BaseUrl::parse("http://127.0.0.1:9000").expect("valid")],
        allow: vec![AllowRule::parse("allowed.internal").expect("valid")],
    }
}

/// Runs `property` on `cases` generated inputs; it returns whether the
/// input reached the wire (rather than being refused by the checks). Fails
/// with the smallest failing input, or if fewer than a quarter of the inputs
/// reached the wire: a generator that only produced refused outcomes would
/// prove nothing about the messages.
fn check<S: Strategy>(strategy: S, property: impl Fn(S::Value) -> Result<bool, TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    const CASES: u32 = 1000;
    let sent = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(CASES));
    let result = runner.run(&strategy, |input| {
        if property(input)? {
            sent.set(sent.get() + 1);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(
        sent.get() >= CASES / 4,
        "only {} of {CASES} inputs reached the wire",
        sent.get()
    );
}

#[test]
fn a_plugin_response_is_one_message_framed_by_the_gateway() {
    check((status(), headers(), body()), |(status, headers, body)| {
        let limits = Limits::default();
        let response = plugin::Response {
            status,
            headers: headers.clone(),
            body: body.clone(),
        };
        let Ok(reply) = plugin::check_response(response, &limits) else {
            // Refused before it is used: the property is that nothing panicked.
            return Ok(false);
        };
        let built = super::hooks::respond_with(reply, None);
        let bytes = runtime().block_on(response_bytes(built));
        let messages = wire::split_responses(&bytes);
        prop_assert_eq!(messages.len(), 1);
        let message = &messages[0];
        prop_assert_eq!(message.status, status);
        let no_body = status == 204 || status == 304;
        prop_assert_eq!(&message.body, if no_body { &[][..] } else { &body[..] });
        assert_no_owned_headers(&message.headers, &["content-length"]);
        for (name, value) in expected_headers(&headers) {
            prop_assert!(
                message.headers.contains(&(name.clone(), value.clone())),
                "{} lost",
                name
            );
        }
        for (name, _) in &message.headers {
            prop_assert!(
                ["content-length", "date"].contains(&name.as_str())
                    || headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)),
                "{} came from nowhere",
                name
            );
        }
        Ok(true)
    });
}

#[test]
fn a_changed_request_is_one_message_to_an_allowed_upstream() {
    check(changes(), |changes| {
        let limits = Limits::default();
        let checked = plugin::check_outcome(Outcome::Continue(changes.clone()), &limits, &routing());
        let Ok(RequestOutcome::Continue(typed)) = checked else {
            return Ok(false);
        };
        let mut original = http::Request::post("http://gateway/orders/1?x=1")
            .body(())
            .expect("request");
        original.headers_mut().insert("x-a", "client".parse().expect("value"));
        original
            .headers_mut()
            .insert("content-length", "8".parse().expect("value"));
        let mut ex = exchange(original.into_parts().0, b"original");
        let expected_body = changes.body.clone().unwrap_or_else(|| b"original".to_vec());
        let expected_method = changes.method.clone().unwrap_or_else(|| "POST".to_owned());
        let set = changes.set_headers.clone();
        let upstream = changes.upstream.clone();
        ex.apply(&limits, typed).expect("a checked outcome always applies");
        let outgoing = ex.upstream_request(false, None).expect("an upstream request");
        let base = match &ex.destination {
            Destination::Upstream(0) => BaseUrl::parse("http://127.0.0.1:9000").expect("valid"),
            Destination::Upstream(other) => panic!("no upstream {other}"),
            Destination::Url(url) => url.clone(),
        };
        let allowed = match &upstream {
            Some(url) => routing().target(url) == Ok(ex.destination.clone()),
            None => ex.destination == Destination::Upstream(0),
        };
        prop_assert!(allowed, "sent to {}", base);
        let mut parts = outgoing.parts;
        parts.uri = base.uri(&outgoing.path, parts.uri.query()).expect("uri");
        let body = match outgoing.body {
            crate::upstream::OutBody::Bytes(bytes) => Body::from(bytes),
            crate::upstream::OutBody::Stream(body) => body,
        };
        let request = http::Request::from_parts(parts, body);
        let bytes = runtime().block_on(request_bytes(request));
        let messages = wire::split_requests(&bytes);
        prop_assert_eq!(messages.len(), 1, "{}", String::from_utf8_lossy(&bytes));
        let message = &messages[0];
        prop_assert_eq!(&message.method, &expected_method);
        prop_assert_eq!(&message.body, &expected_body);
        assert_no_owned_headers(&message.headers, &["content-length"]);
        for (name, value) in expected_headers(&set) {
            if name != "host" {
                prop_assert!(
                    message.headers.contains(&(name.clone(), value.clone())),
                    "{} lost",
                    name
                );
            }
        }
        Ok(true)
    });
}
