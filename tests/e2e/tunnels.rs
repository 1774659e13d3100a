//! Upgrades, bodies and time on the proxy path: WebSockets tunnelled end to
//! end after the request phase ran, idle tunnels closed, the API's request
//! body limit, and response bodies that stall or never end cut off.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::support::{ConfigDir, Gateway, Wasm, client, json_of, plugin, upstream, upstreams};

/// An API in front of the WebSocket echo service whose every request must
/// carry `x-api-client` (the policy plugin, a `pre` hook), with `extra`
/// appended.
async fn websocket_api(extra: &str) -> Gateway {
    let echo = upstream(upstreams::websocket_echo()).await;
    Gateway::start(ConfigDir::single(&format!(
        "id: ws\nlisten_path: /ws/\nstrip_listen_path: true\nupstream: {echo}\n{extra}plugins:\n  pre:\n    - path: {}\n      function: require-header\n      config: {{ header: x-api-client, add_headers: {{ x-policy: checked }} }}\n",
        plugin(Wasm::Policy).display()
    )))
}

fn ws_url(gw: &Gateway, path: &str) -> String {
    gw.url(path).replacen("http://", "ws://", 1)
}

fn upgrade_request(url: &str, client_header: bool) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest as _;
    let mut request = url.into_client_request().expect("request");
    if client_header {
        request
            .headers_mut()
            .insert("x-api-client", "tests".parse().expect("value"));
    }
    request
}

#[tokio::test]
async fn a_websocket_is_tunnelled_both_ways_after_the_request_phase() {
    let gw = websocket_api("").await;
    let url = ws_url(&gw, "/ws/chat");

    // The request phase runs on the upgrade request: refused without the header.
    match tokio_tungstenite::connect_async(upgrade_request(&url, false)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {other:?}"),
    }

    let (mut socket, response) = tokio_tungstenite::connect_async(upgrade_request(&url, true))
        .await
        .expect("upgraded");
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    // The upstream saw the upgrade request as the plugin left it.
    let Some(Ok(Message::Text(first))) = socket.next().await else {
        panic!("no first message");
    };
    let seen: Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(seen["x-policy"], "checked", "{seen}");
    assert_eq!(seen["upgrade"], "websocket", "{seen}");

    socket
        .send(Message::text("hello through the gate"))
        .await
        .expect("send");
    assert_eq!(
        socket.next().await.expect("echo").expect("frame"),
        Message::text("hello through the gate")
    );
    let binary = vec![0u8, 1, 2, 254, 255];
    socket.send(Message::binary(binary.clone())).await.expect("send");
    assert_eq!(
        socket.next().await.expect("echo").expect("frame"),
        Message::binary(binary)
    );

    socket.close(None).await.expect("close");
    match socket.next().await {
        Some(Ok(Message::Close(_))) | None => {}
        Some(Ok(other)) => panic!("unexpected frame after close: {other:?}"),
        Some(Err(e)) => panic!("close failed: {e}"),
    }

    // The gateway is still serving ordinary requests on the same API.
    let response = client()
        .get(gw.url("/ws/plain"))
        .header("x-api-client", "tests")
        .send()
        .await
        .expect("plain request");
    assert_eq!(
        response.status(),
        400,
        "the echo service refuses a request that is no upgrade"
    );
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let gw = websocket_api("tunnel_idle_timeout_ms: 300\n").await;
    let (mut socket, _) = tokio_tungstenite::connect_async(upgrade_request(&ws_url(&gw, "/ws/idle"), true))
        .await
        .expect("upgraded");
    let Some(Ok(Message::Text(_))) = socket.next().await else {
        panic!("no first message");
    };
    // Silent both ways: the gateway closes the tunnel at the idle timeout.
    let ended = tokio::time::timeout(Duration::from_secs(20), socket.next())
        .await
        .expect("the tunnel was closed, not left open");
    assert!(
        matches!(ended, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{ended:?}"
    );
    gw.wait_for_log("tunnel idle: closed");
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_the_upstream_does_not_get_it_whole() {
    let (counter, hits) = upstreams::counter();
    let counted = upstream(counter).await;
    // The echo service reads the whole body before it answers.
    let echo = upstream(upstreams::echo("echo")).await;
    let config = ConfigDir::new(
        "apis: [apis/]\nmax_request_body_bytes: 1000\n",
        &[
            (
                "counted.yaml",
                &format!("id: counted\nlisten_path: /counted/\nupstream: {counted}\n"),
            ),
            (
                "echo.yaml",
                &format!("id: echo\nlisten_path: /echo/\nupstream: {echo}\nmax_request_body_bytes: 100000\n"),
            ),
        ],
    );
    let gw = Gateway::start(config);

    // A declared length over the limit: 413 before the upstream hears of it.
    let counted_url = gw.url("/counted/x");
    let post = |size: usize| {
        let request = client().post(&counted_url).body(vec![b'a'; size]);
        async move { json_of(request.send().await.expect("request")).await }
    };
    let (status, _, body) = post(1001).await;
    crate::support::assert_gateway_error(status, &body, 413, "request body too large");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the upstream was contacted");
    let (status, _, _) = post(1000).await;
    assert_eq!(status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // A streamed body (no length) is cut off at the API's own limit. Raw
    // HTTP/1.1, so the client stops just past the limit and then reads:
    // the answer is not lost to a write on a connection the gateway closed.
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut request = b"POST /echo/x HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            request.extend_from_slice(b"2710\r\n");
            request.extend_from_slice(&[b'b'; 10_000]);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"1\r\nb\r\n"); // byte 100,001
        stream.write_all(&request).expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("client");
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains("request body too large"), "{answer}");
    let small =
        futures_util::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'c'; 10_000]))));
    let response = client()
        .post(gw.url("/echo/x"))
        .body(reqwest::Body::wrap_stream(small))
        .send()
        .await
        .expect("request");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["body"].as_str().map(str::len), Some(50_000));
}

/// Reads `url`'s response: its status, and how its body ended.
async fn status_and_body_end(url: &str) -> (u16, Result<bytes::Bytes, reqwest::Error>) {
    let response = client().get(url).send().await.expect("response head");
    let status = response.status().as_u16();
    (status, response.bytes().await)
}

#[tokio::test]
async fn a_response_body_that_stalls_or_never_ends_is_cut_off() {
    let stalled = upstream(upstreams::stall()).await;
    let endless = upstream(upstreams::trickle(Duration::from_millis(50))).await;
    let config = ConfigDir::new(
        "apis: [apis/]\nupstream_read_timeout_ms: 300\n",
        &[
            (
                "stalled.yaml",
                &format!("id: stalled\nlisten_path: /stalled/\nupstream: {stalled}\n"),
            ),
            (
                "endless.yaml",
                &format!("id: endless\nlisten_path: /endless/\nupstream: {endless}\nupstream_total_timeout_ms: 600\n"),
            ),
        ],
    );
    let gw = Gateway::start(config);

    // Both answer in time and then never finish: only the gateway's timeouts
    // end these bodies (the test would hang otherwise).
    let (status, body) = status_and_body_end(&gw.url("/stalled/x")).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "a stalled body must not look complete: {body:?}");
    gw.wait_for_log("upstream response body stalled past upstream_read_timeout_ms");

    let (status, body) = status_and_body_end(&gw.url("/endless/x")).await;
    assert_eq!(status, 200);
    assert!(body.is_err(), "an endless body is cut off: {body:?}");
    gw.wait_for_log("upstream response exceeded upstream_total_timeout_ms");
}
