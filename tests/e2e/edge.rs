//! The edge, tried as an attacker would: one canonical path for routing,
//! plugins, limits and the upstream, however the client spells it; headers
//! that would re-route a request behind the gateway's back; upstreams that
//! lie about framing or switch protocols unasked; clients that are silent,
//! slow to send or slow to read; configuration files built to stall a
//! reload. Requests go out as raw bytes where the spelling is the subject
//! (HTTP clients normalise paths before sending them).
//!
//! One file, past 500 lines: the edge is one subject (paths, headers,
//! clients, upstream framing), and its raw-byte helpers serve all of it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::wire::{Message, split_responses};
use crate::support::{ConfigDir, Gateway, Wasm, client, plugin, upstream, upstreams, validate};

/// `/orders/{id}` and `/orders/private/{id}` run the policy plugin, each
/// requiring its own header (so a 403 says which endpoint governed the
/// request); `POST /login` under `/rl/` allows one request a minute.
fn guarded(echo: &str, extra: &str) -> ConfigDir {
    let policy = plugin(Wasm::Policy);
    let orders = format!(
        r#"id: orders
listen_path: /orders/
strip_listen_path: true
upstream: {echo}
{extra}
endpoints:
  - path: /{{id}}
    plugin:
      path: {policy}
      function: require-header
      config: {{ header: x-api-client }}
  - path: /private/{{id}}
    plugin:
      path: {policy}
      function: require-header
      config: {{ header: x-private-client }}
"#,
        policy = policy.display()
    );
    let login = format!(
        "id: rl\nlisten_path: /rl/\nstrip_listen_path: true\nupstream: {echo}\nendpoints:\n  - path: /login\n    method: POST\n    rate_limit: {{ rate: 1, per: 60 }}\n"
    );
    ConfigDir::new(
        "apis: [apis/]\n",
        &[("orders.yaml", orders.as_str()), ("rl.yaml", login.as_str())],
    )
}

fn addr(gw: &Gateway) -> SocketAddr {
    gw.url.trim_start_matches("http://").parse().expect("http://ADDR")
}

/// Sends `request` (bytes as written) on a new connection and reads until
/// the gateway closes it; the responses, parsed strictly.
async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<Message> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes))
        .await
        .expect("the gateway answers and closes")
        .expect("read");
    split_responses(&bytes)
}

/// One request with `target` as written, and extra header lines.
async fn send(addr: SocketAddr, method: &str, target: &str, headers: &str) -> Message {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: gw.test\r\n{headers}connection: close\r\ncontent-length: 0\r\n\r\n"
    );
    let mut responses = raw(addr, request.as_bytes()).await;
    assert_eq!(responses.len(), 1, "{target}");
    responses.remove(0)
}

fn json(message: &Message) -> Value {
    serde_json::from_slice(&message.body).unwrap_or(Value::Null)
}

/// What the policy plugin said, or what the upstream saw.
fn who_answered(message: &Message) -> String {
    let body = json(message);
    match (message.status, body["error"].as_str(), body["path"].as_str()) {
        (403, Some(error), _) => error.to_owned(),
        (200, _, Some(path)) => format!("upstream saw {path}"),
        (status, _, _) => format!("{status} {body}"),
    }
}

const PUBLIC: &str = "missing required header x-api-client";
const PRIVATE: &str = "missing required header x-private-client";

/// With enough APIs the gateway routes by an index of listen paths instead
/// of a scan: the same spellings still reach the same endpoint, and names
/// that share a prefix with the guarded API (`/order/`, `/orders-x/`, an API
/// nested under it) take only what is theirs.
#[tokio::test]
async fn with_many_apis_every_spelling_still_meets_its_endpoint_plugin() {
    let echo = upstream(upstreams::echo("orders")).await;
    let guarded = guarded(&echo, "");
    let mut files: Vec<(String, String)> = std::fs::read_dir(guarded.dir.path().join("apis"))
        .expect("apis/")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).expect("read"))
        })
        .collect();
    let mut listen_paths: Vec<String> = (0..40).map(|i| format!("/api{i}/")).collect();
    listen_paths.extend(["/order/", "/orders-x/", "/orders/nested/deeper/"].map(String::from));
    for (i, listen_path) in listen_paths.iter().enumerate() {
        files.push((
            format!("filler{i}.yaml"),
            format!("id: filler{i}\nlisten_path: {listen_path}\nupstream: {echo}\n"),
        ));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let gw = Gateway::start(ConfigDir::new("apis: [apis/]\n", &files));
    let addr = addr(&gw);
    for target in [
        "/orders/42",
        "/orders/x/../42",
        "/orders/x/%2e%2e/42",
        "/orders//42",
        "/orders/%34%32",
    ] {
        let response = send(addr, "GET", target, "").await;
        assert_eq!(who_answered(&response), PUBLIC, "{target}");
    }
    for target in ["/orders/%70rivate/42", "/orders//private//42"] {
        let response = send(addr, "GET", target, "").await;
        assert_eq!(who_answered(&response), PRIVATE, "{target}");
    }
    // The neighbours' paths are theirs (no endpoints: proxied as they are).
    for (target, saw) in [
        ("/order/42", "/order/42"),
        ("/orders-x/42", "/orders-x/42"),
        ("/orders/nested/deeper/1", "/orders/nested/deeper/1"),
        ("/api39/%61", "/api39/a"),
    ] {
        let response = send(addr, "GET", target, "").await;
        assert_eq!(who_answered(&response), format!("upstream saw {saw}"), "{target}");
    }
}

#[tokio::test]
async fn every_spelling_of_a_guarded_path_meets_its_endpoint_plugin() {
    let echo = upstream(upstreams::echo("orders")).await;
    let gw = Gateway::start(guarded(&echo, ""));
    let addr = addr(&gw);

    for target in [
        "/orders/42",
        "/orders/x/../42",
        "/orders/./42",
        "/orders/x/%2e%2e/42",
        "/orders/x/%2E%2E/42",
        "/orders//42",
        "/orders/42/",
        "/orders/%34%32",
        "http://gw.test/orders/x/../42",
    ] {
        let response = send(addr, "GET", target, "").await;
        assert_eq!(who_answered(&response), PUBLIC, "{target}");
    }
    for target in [
        "/orders/%70rivate/42",
        "/orders/x/../private/42",
        "/orders//private//42",
    ] {
        let response = send(addr, "GET", target, "").await;
        assert_eq!(who_answered(&response), PRIVATE, "{target}");
    }

    // Let through, the upstream receives the canonical path, never the
    // client's spelling, and the plugin saw it too.
    let response = send(addr, "GET", "/orders/x/%2e%2e/4%32?q=%2e", "x-api-client: me\r\n").await;
    assert_eq!(who_answered(&response), "upstream saw /42");
    assert_eq!(
        json(&response)["query"],
        "q=%2e",
        "the query is not the path's business"
    );
    let response = send(addr, "GET", "/orders/%70rivate/7", "x-private-client: me\r\n").await;
    assert_eq!(who_answered(&response), "upstream saw /private/7");
    let response = send(addr, "GET", "/orders/42/", "x-api-client: me\r\n").await;
    assert_eq!(
        who_answered(&response),
        "upstream saw /42/",
        "governed by /{{id}}, sent as spelt"
    );
}

#[tokio::test]
async fn paths_that_cannot_be_canonical_are_refused_with_400() {
    let echo = upstream(upstreams::echo("orders")).await;
    let gw = Gateway::start(guarded(&echo, ""));
    let addr = addr(&gw);
    for (target, why) in [
        ("/orders/../../etc/passwd", "climbs above"),
        ("/%2e%2e/orders/42", "climbs above"),
        ("/orders/4%002", "encoded NUL"),
        ("/orders/4%zz", "two hex digits"),
        ("/orders/a%2f..%2f42", "encoded slash"),
        ("/orders/42;jsessionid=x", "`;` parameter"),
    ] {
        let response = send(addr, "GET", target, "x-api-client: me\r\n").await;
        let body = json(&response);
        assert_eq!(response.status, 400, "{target}: {body}");
        assert_eq!(body["status"], 400);
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(why)),
            "{target}: {body}"
        );
        assert!(body["request_id"].is_string());
    }
}

#[tokio::test]
async fn a_rate_limit_counts_every_spelling_of_its_endpoint() {
    let echo = upstream(upstreams::echo("rl")).await;
    let gw = Gateway::start(guarded(&echo, ""));
    let addr = addr(&gw);
    assert_eq!(send(addr, "POST", "/rl/login", "").await.status, 200);
    for target in [
        "/rl/login",
        "/rl/login/",
        "/rl//login",
        "/rl/./login",
        "/rl/%6cogin",
        "/rl/x/../login",
    ] {
        assert_eq!(send(addr, "POST", target, "").await.status, 429, "{target}");
    }
    assert_eq!(send(addr, "POST", "/rl/login;x", "").await.status, 400);
}

#[tokio::test]
async fn method_and_url_override_headers_do_not_reach_the_upstream_unless_kept() {
    let echo = upstream(upstreams::echo("orders")).await;
    let gw = Gateway::start(guarded(&echo, ""));
    let overrides = "x-http-method-override: GET\r\nx-http-method: GET\r\nx-method-override: GET\r\nx-original-url: /private/1\r\nx-rewrite-url: /private/1\r\nx-api-client: me\r\n";
    let response = send(addr(&gw), "PUT", "/orders/42", overrides).await;
    let seen = json(&response);
    assert_eq!(seen["method"], "PUT", "{seen}");
    for name in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(
            seen["headers"].get(name).is_none(),
            "{name} reached the upstream: {seen}"
        );
    }
    drop(gw);

    let gw = Gateway::start(guarded(&echo, "override_headers: keep"));
    let seen = json(&send(addr(&gw), "PUT", "/orders/42", overrides).await);
    assert_eq!(seen["headers"]["x-original-url"][0], "/private/1", "kept on request");
}

#[tokio::test]
async fn an_api_may_serve_only_its_listed_endpoints() {
    let echo = upstream(upstreams::echo("orders")).await;
    let gw = Gateway::start(guarded(&echo, "unmatched: reject"));
    let addr = addr(&gw);
    for target in ["/orders/", "/orders/a/b/c", "/orders/private/x/y"] {
        let response = send(addr, "GET", target, "").await;
        assert_eq!(response.status, 404, "{target}");
        assert_eq!(json(&response)["error"], "no endpoint matches this path and method");
    }
    assert_eq!(who_answered(&send(addr, "GET", "/orders/42", "").await), PUBLIC);
}

/// Arbitrary spellings of the two guarded resources: each reaches exactly
/// the endpoint that governs its canonical path, or is refused; none
/// reaches the upstream around its plugin.
#[tokio::test]
async fn generated_spellings_never_walk_around_their_endpoint() {
    let echo = upstream(upstreams::echo("orders")).await;
    let gw = Gateway::start(guarded(&echo, ""));
    let addr = addr(&gw);
    let mut rng = fastrand::Rng::with_seed(0x5eed_ed9e);
    for round in 0..300 {
        let private = rng.bool();
        let segments: &[&str] = if private {
            &["orders", "private", "42"]
        } else {
            &["orders", "42"]
        };
        let target = spell(&mut rng, segments);
        let response = send(addr, "GET", &target, "").await;
        let expected = if private { PRIVATE } else { PUBLIC };
        match response.status {
            403 => assert_eq!(who_answered(&response), expected, "round {round}: {target}"),
            400 => {}
            _ => panic!("round {round}: {target} got {}", who_answered(&response)),
        }
    }
}

/// One spelling of `/seg/seg/...`: characters percent-encoded in either
/// case, detours through `x/..`, `.` segments, doubled slashes, a trailing
/// slash.
fn spell(rng: &mut fastrand::Rng, segments: &[&str]) -> String {
    let mut out = String::new();
    for segment in segments {
        if rng.u8(..6) == 0 {
            out.push_str(["/.", "/x/..", "/%2e", "/a/%2E%2e", "/"][rng.usize(..5)]);
        }
        out.push('/');
        if rng.u8(..4) == 0 {
            out.push('/');
        }
        for c in segment.chars() {
            match rng.u8(..4) {
                0 => out.push_str(&format!("%{:02x}", c as u32)),
                1 => out.push_str(&format!("%{:02X}", c as u32)),
                _ => out.push(c),
            }
        }
    }
    if rng.u8(..5) == 0 {
        out.push('/');
    }
    out
}

/// A one-connection upstream that answers each request with `reply` and
/// hands back what it received.
async fn scripted_upstream(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        stream.write_all(reply).await.expect("reply");
        // Whatever follows (a tunnelled protocol, say) is recorded too.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        received
    });
    (url, task)
}

fn plain_api(upstream: &str) -> ConfigDir {
    ConfigDir::single(&format!(
        "id: up\nlisten_path: /up/\nstrip_listen_path: true\nupstream: {upstream}\n"
    ))
}

#[tokio::test]
async fn content_length_beside_chunked_is_dropped_not_trusted() {
    let (url, _upstream) = scripted_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
    )
    .await;
    let gw = Gateway::start(plain_api(&url));
    // A length of 5 would cut the body and leave bytes that read as a
    // second response: the strict parser fails on them.
    let response = send(addr(&gw), "GET", "/up/x", "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello world");
    assert_eq!(response.header("content-length"), None);
}

#[tokio::test]
async fn h2c_upgrades_are_never_tunnelled_and_unasked_101s_are_502s() {
    // A lenient backend that switches to h2c whenever asked.
    let (url, upstream) =
        scripted_upstream(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n").await;
    let gw = Gateway::start(plain_api(&url));
    let mut request = b"GET /up/x HTTP/1.1\r\nhost: gw.test\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n".to_vec();
    request.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let mut stream = TcpStream::connect(addr(&gw)).await.expect("connect");
    stream.write_all(&request).await.expect("write");
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut head))
        .await
        .expect("an answer")
        .expect("read");
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    drop(stream);
    let received = String::from_utf8_lossy(&upstream.await.expect("upstream")).to_ascii_lowercase();
    assert!(
        !received.contains("upgrade: h2c"),
        "the upgrade reached the upstream: {received}"
    );
    assert!(
        !received.contains("pri * http/2.0"),
        "the preface was tunnelled: {received}"
    );

    // h2c cannot even be allowed.
    let config = ConfigDir::single(&format!(
        "id: up\nlisten_path: /up/\nupstream: {url}\nupgrades: [websocket, h2c]\n"
    ));
    let out = validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("upgrades") && stderr.contains("h2c cannot be tunnelled"),
        "{stderr}"
    );
}

#[tokio::test]
async fn upgrades_go_through_only_for_the_protocols_an_api_allows() {
    let ws = upstream(upstreams::websocket_echo()).await;
    let ws_url = ws.replace("http://", "");
    for (extra, allowed) in [("", true), ("upgrades: []\n", false)] {
        let config = ConfigDir::single(&format!(
            "id: ws\nlisten_path: /ws/\nstrip_listen_path: true\nupstream: http://{ws_url}\n{extra}"
        ));
        let gw = Gateway::start(config);
        let url = format!("{}/ws/chat", gw.url.replace("http://", "ws://"));
        let result = tokio_tungstenite::connect_async(url.as_str()).await;
        assert_eq!(result.is_ok(), allowed, "{extra:?}: {:?}", result.err());
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_head_timeout() {
    let echo = upstream(upstreams::echo("x")).await;
    let config = ConfigDir::new(
        "apis: [apis/]\nclient_head_timeout_ms: 300\n",
        &[("api.yaml", &format!("id: x\nlisten_path: /x/\nupstream: {echo}\n"))],
    );
    let gw = Gateway::start(config);
    for opening in [&b""[..], b"PRI * HTTP/2"] {
        let mut stream = TcpStream::connect(addr(&gw)).await.expect("connect");
        stream.write_all(opening).await.expect("write");
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "still open after 20 s with {opening:?}");
    }
    // A client that speaks at once is served as before.
    let response = send(addr(&gw), "GET", "/x/ok", "").await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn a_body_trickled_into_a_body_reading_plugin_is_cut_with_408() {
    let echo = upstream(upstreams::echo("x")).await;
    let api = format!(
        "id: x\nlisten_path: /x/\nupstream: {echo}\nbody_timeout_ms: 500\nendpoints:\n  - path: /in\n    plugin: {{ path: {}, function: inspect }}\n",
        plugin(Wasm::Probe).display()
    );
    let gw = Gateway::start(ConfigDir::single(&api));
    let mut stream = TcpStream::connect(addr(&gw)).await.expect("connect");
    stream
        .write_all(b"POST /x/in HTTP/1.1\r\nhost: gw.test\r\ncontent-length: 100\r\n\r\nab")
        .await
        .expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // One byte every 200 ms, as long as the gateway listens.
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(started.elapsed() < Duration::from_secs(20), "no answer after 20 s");
        let _ = stream.write_all(b"x").await;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// A `GET path` from a client with a 16 KiB receive window, so the
/// gateway's writes wait on it as soon as the socket buffers are full.
async fn small_window_get(gw: &Gateway, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 << 10).expect("rcvbuf");
    let mut stream = socket.connect(addr(gw)).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream
}

#[tokio::test]
async fn the_total_timeout_holds_against_a_slow_reader() {
    let big = upstream(axum::Router::new().fallback(|| async { vec![b'x'; 32 << 20] })).await;
    let config = ConfigDir::single(&format!(
        "id: big\nlisten_path: /big/\nupstream: {big}\nupstream_total_timeout_ms: 1000\n"
    ));
    let gw = Gateway::start(config);
    let mut stream = small_window_get(&gw, "/big/").await;
    // 16 KiB every 50 ms for three times the total timeout (32 MiB would
    // take over 100 s at that pace), then as fast as it comes: a gateway
    // that held the deadline has cut the response by then.
    let started = Instant::now();
    let mut received = 0usize;
    let mut buf = vec![0u8; 16 << 10];
    while started.elapsed() < Duration::from_secs(3) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut rest)).await;
    received += rest.len();
    assert!(
        received < 32 << 20,
        "the whole body arrived: the total timeout did not hold"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_at_the_send_timeout() {
    let big = upstream(axum::Router::new().fallback(|| async { vec![b'x'; 64 << 20] })).await;
    let config = ConfigDir::new(
        "apis: [apis/]\nclient_send_timeout_ms: 300\n",
        &[("api.yaml", &format!("id: big\nlisten_path: /big/\nupstream: {big}\n"))],
    );
    let gw = Gateway::start(config);
    let mut stream = small_window_get(&gw, "/big/").await;
    // Read nothing for ten times the send timeout, then everything there is.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut received)).await;
    assert!(
        received.len() < 64 << 20,
        "the whole body waited for a client that did not read"
    );
}

#[test]
fn oversized_and_deeply_nested_configuration_files_are_refused_naming_the_file() {
    let config = ConfigDir::single("id: x\nlisten_path: /x/\nupstream: http://127.0.0.1:1\n");
    let deep = format!(
        "id: x\nlisten_path: /x/\nupstream: http://127.0.0.1:1\nconfig: {}{}\n",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    config.write_api("api.yaml", &deep);
    let started = Instant::now();
    let out = validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("api.yaml:4:") && stderr.contains("nested deeper than 64 levels"),
        "{stderr}"
    );
    // Refused by the bound, not after the parser's quadratic work (minutes).
    assert!(started.elapsed() < Duration::from_secs(60));

    let big = format!(
        "id: x\nlisten_path: /x/\nupstream: http://127.0.0.1:1\n# {}\n",
        "y".repeat(5 << 20)
    );
    config.write_api("api.yaml", &big);
    let stderr = String::from_utf8_lossy(&validate(&config).stderr).into_owned();
    assert!(
        stderr.contains("api.yaml") && stderr.contains("larger than 4 MiB"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_reload_refused_for_nesting_keeps_serving_the_old_configuration() {
    let echo = upstream(upstreams::echo("x")).await;
    let api = format!("id: x\nlisten_path: /x/\nupstream: {echo}\n");
    let gw = Gateway::start(ConfigDir::single(&api));
    gw.config.write_api(
        "api.yaml",
        &format!("{api}config: {}{}\n", "{a: ".repeat(100_000), "}".repeat(100_000)),
    );
    gw.reload();
    gw.wait_for_log("nested deeper than 64 levels");
    let response = send(addr(&gw), "GET", "/x/still", "").await;
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn line_breaking_and_bidi_characters_are_escaped_in_the_access_log() {
    let echo = upstream(upstreams::echo("x")).await;
    let config = ConfigDir::new(
        "apis: [apis/]\naccess_log: { path: access.log }\n",
        &[("api.yaml", &format!("id: x\nlisten_path: /x/\nupstream: {echo}\n"))],
    );
    let log = config.dir.path().join("access.log");
    let gw = Gateway::start(config);
    let target = "/x/a\u{2028}{\"forged\":1}\u{202e}exe.txt\u{85}";
    let request = format!("GET {target} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n\r\n");
    let _ = raw(addr(&gw), request.as_bytes()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("\"path\"") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(text.lines().count(), 1, "{text:?}");
    for c in ['\u{2028}', '\u{202e}', '\u{85}'] {
        assert!(!text.contains(c), "raw {c:?} in {text:?}");
    }
    assert!(text.contains("\\u2028") && text.contains("\\u202e"), "{text}");
    let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
    assert_eq!(
        line["url.path"].as_str().map(|p| p.contains('\u{2028}')),
        Some(true),
        "{line}"
    );
}

#[tokio::test]
async fn a_header_a_limit_counts_by_cannot_be_sent_twice() {
    let echo = upstream(upstreams::echo("x")).await;
    let api = format!(
        "id: x\nlisten_path: /x/\nupstream: {echo}\nrate_limit: {{ rate: 1, per: 60, by: 'header:x-client' }}\n"
    );
    let gw = Gateway::start(ConfigDir::single(&api));
    let addr = addr(&gw);
    assert_eq!(send(addr, "GET", "/x/", "x-client: a\r\n").await.status, 200);
    assert_eq!(send(addr, "GET", "/x/", "x-client: a\r\n").await.status, 429);
    let twice = send(addr, "GET", "/x/", "x-client: fresh\r\nx-client: a\r\n").await;
    assert_eq!(twice.status, 400, "{}", who_answered(&twice));
}

// The request runs on another worker while this one waits for the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_budget_is_not_charged_for_time_the_process_is_stopped() {
    let echo = upstream(upstreams::echo("x")).await;
    let api = format!(
        "id: x\nlisten_path: /x/\nupstream: {echo}\nendpoints:\n  - path: /work\n    plugin: {{ path: {}, function: work, limits: {{ cpu_ms: 2000, timeout_ms: 30000 }} }}\n",
        plugin(Wasm::Hostile).display()
    );
    let gw = Gateway::start(ConfigDir::single(&api));
    // About a quarter of the budget on this kind of machine, several times
    // more than that in wall time under load: never near the budget.
    let url = gw.url("/x/work?iterations=200000000");
    let request = tokio::spawn(async move { client().get(url).send().await.expect("request").status() });
    gw.wait_for_log("working");
    let pid = gw.pid().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    std::thread::sleep(Duration::from_millis(3000));
    signal("-CONT");
    let status = request.await.expect("request task");
    assert_eq!(status, 200, "{}", gw.log());
}
