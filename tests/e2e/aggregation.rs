//! Aggregation: the `aggregate` example fans out to several real services
//! concurrently through `send-all`, with a deadline, partial results and the
//! allowlist.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ConfigDir, Gateway, Wasm, client, closed_port, get_json, plugin, upstream, upstreams};

/// An API whose `/summary/{id}` merges `services`; `allow` lists reachable
/// hosts; `extra` is appended to the plugin config.
fn aggregate_api(services: &[(&str, String)], allow: &[String], extra: &str) -> String {
    let services: String = services
        .iter()
        .map(|(name, url)| format!("          {name}: '{url}'\n"))
        .collect();
    let allow: Vec<String> = allow.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "id: agg\nlisten_path: /agg/\nstrip_listen_path: true\nupstream: http://{}\noutbound:\n  allow: [{}]\n  timeout_ms: 5000\nendpoints:\n  - method: GET\n    path: /summary/{{id}}\n    plugin:\n      path: {}\n      function: merge\n      limits: {{ timeout_ms: 10000 }}\n      config:\n{extra}        services:\n{services}",
        closed_port(),
        allow.join(", "),
        plugin(Wasm::Aggregate).display(),
    )
}

fn host(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Three record services: users, stock, prices.
async fn three_services() -> [String; 3] {
    [
        upstream(upstreams::records("users-service")).await,
        upstream(upstreams::records("stock-service")).await,
        upstream(upstreams::records("pricing-service")).await,
    ]
}

#[tokio::test]
async fn all_parts_arrive_and_merge() {
    let [users, stock, prices] = three_services().await;
    let text = aggregate_api(
        &[
            ("user", format!("{users}/users/{{id}}")),
            ("stock", format!("{stock}/stock/{{id}}")),
            ("price", format!("{prices}/prices/{{id}}")),
        ],
        &[host(&users), host(&stock), host(&prices)],
        "",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, headers, body) = get_json(&gw.url("/agg/summary/8")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "false");
    assert_eq!(body["id"], "8");
    assert_eq!(body["user"]["source"], "users-service");
    assert_eq!(body["user"]["tier"], "gold");
    assert_eq!(body["stock"]["available"], 8 * 3 % 17);
    assert_eq!(body["price"]["amount"], 899);
    assert!(body.get("errors").is_none(), "{body}");
}

#[tokio::test]
async fn failing_down_and_late_parts_are_marked_and_the_rest_kept() {
    let users = upstream(upstreams::records("users-service")).await;
    let broken = upstream(upstreams::status(500)).await;
    let late = upstream(upstreams::hang()).await;
    let down = closed_port();
    let text = aggregate_api(
        &[
            ("user", format!("{users}/users/{{id}}")),
            ("broken", format!("{broken}/x")),
            ("down", format!("http://{down}/x")),
            ("late", format!("{late}/x")),
        ],
        &[host(&users), host(&broken), down.to_string(), host(&late)],
        "        deadline_ms: 500\n",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let started = Instant::now();
    let (status, headers, body) = get_json(&gw.url("/agg/summary/3")).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "true");
    assert_eq!(body["user"]["name"], "user-3");
    for part in ["broken", "down", "late"] {
        assert_eq!(body[part], Value::Null, "{part}: {body}");
    }
    assert_eq!(body["errors"]["broken"], "status 500");
    assert!(
        body["errors"]["down"].as_str().expect("down").starts_with("connect:"),
        "{body}"
    );
    assert_eq!(body["errors"]["late"], "timeout");
    // The late service never answers: an answer at all shows the batch
    // ended at its deadline.
    assert!(
        elapsed >= Duration::from_millis(450),
        "answered at the deadline, not before: {elapsed:?}"
    );
}

#[tokio::test]
async fn fan_out_is_concurrent() {
    // The service answers only when all three calls wait on it at once: the
    // batch completes only if the gateway sends them concurrently.
    let meet = upstream(upstreams::barrier(3)).await;
    let services: Vec<(&str, String)> = ["a", "b", "c"]
        .into_iter()
        .map(|n| (n, format!("{meet}/{n}")))
        .collect();
    let gw = Gateway::start(ConfigDir::single(&aggregate_api(
        &services,
        &[host(&meet)],
        "        deadline_ms: 30000\n",
    )));
    let (status, headers, body) = get_json(&gw.url("/agg/summary/1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "false", "{body}");
    for part in ["a", "b", "c"] {
        assert_eq!(body[part], json!({ "met": true }), "{body}");
    }
}

#[tokio::test]
async fn first_success_ends_the_batch_and_cancels_the_rest() {
    let fast = upstream(upstreams::records("fast")).await;
    let slow = upstream(upstreams::hang()).await;
    let text = aggregate_api(
        &[("fast", format!("{fast}/users/{{id}}")), ("slow", format!("{slow}/x"))],
        &[host(&fast), host(&slow)],
        "        deadline_ms: 60000\n        first: 1\n",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    // The slow part never answers, and the deadline is far: an answer shows
    // the first success ended the batch.
    let (status, _, body) = get_json(&gw.url("/agg/summary/5")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fast"]["id"], 5);
    assert_eq!(body["errors"]["slow"], "cancelled");
}

#[tokio::test]
async fn hosts_off_the_allowlist_are_refused_without_a_connection() {
    let users = upstream(upstreams::records("users-service")).await;
    let forbidden = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    forbidden.set_nonblocking(true).expect("nonblocking");
    let forbidden_addr = forbidden.local_addr().expect("addr");
    let text = aggregate_api(
        &[
            ("user", format!("{users}/users/{{id}}")),
            ("secret", format!("http://{forbidden_addr}/secret")),
        ],
        &[host(&users)],
        "",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, headers, body) = get_json(&gw.url("/agg/summary/3")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "true");
    assert_eq!(body["user"]["id"], 3);
    assert_eq!(body["errors"]["secret"], format!("not allowed: {forbidden_addr}"));
    assert!(
        matches!(forbidden.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the non-allowed host was contacted"
    );
    gw.wait_for_log("outbound call refused: host not on the API's allowlist");
}

#[tokio::test]
async fn https_to_a_plain_http_server_is_a_connect_error_with_the_tls_reason() {
    let users = upstream(upstreams::records("users-service")).await;
    let text = aggregate_api(
        &[
            ("user", format!("{users}/users/{{id}}")),
            ("secure", format!("https://{}/users/{{id}}", host(&users))),
        ],
        &[host(&users)],
        "",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, headers, body) = get_json(&gw.url("/agg/summary/4")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "true");
    assert_eq!(body["user"]["id"], 4);
    let reason = body["errors"]["secure"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("connect: TLS handshake failed: invalid TLS message (does the peer speak plain HTTP?)"),
        "{reason}"
    );
}

#[tokio::test]
async fn the_call_cap_applies_to_batches() {
    let (counter, hits) = upstreams::counter();
    let counter = upstream(counter).await;
    let services: Vec<(&str, String)> = ["a", "b", "c"]
        .into_iter()
        .map(|n| (n, format!("{counter}/{n}")))
        .collect();
    let text = aggregate_api(&services, &[host(&counter)], "")
        .replace("limits: { timeout_ms: 10000 }", "limits: { max_outbound_calls: 2 }");
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, headers, body) = get_json(&gw.url("/agg/summary/1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "true");
    assert_eq!(body["errors"], json!({ "c": "call limit reached" }));
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the third call was never sent"
    );
}

#[tokio::test]
async fn request_id_and_trace_context_reach_the_services() {
    let echo = upstream(upstreams::echo("echo")).await;
    let text = aggregate_api(&[("echo", format!("{echo}/seen"))], &[host(&echo)], "");
    let gw = Gateway::start(ConfigDir::single(&text));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = client()
        .get(gw.url("/agg/summary/1"))
        .header("x-request-id", "req-123")
        .header("traceparent", traceparent)
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let body: Value = response.json().await.expect("json");
    let seen = &body["echo"]["headers"];
    assert_eq!(seen["x-request-id"], json!(["req-123"]), "{body}");
    assert_eq!(seen["traceparent"], json!([traceparent]));
}
