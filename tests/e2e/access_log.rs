//! The access log: one JSON line per request, with what operators need to
//! find it again (request id, client, API, endpoint, key) and what it cost.

use std::time::{Duration, Instant};

use crate::support::{ConfigDir, Gateway, Wasm, client, plugin, upstream, upstreams};

/// The log's lines once there are `n` (they are written after the response).
fn lines(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} lines of {n}:\n{text}", lines.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_gets_one_line_with_its_api_endpoint_key_sizes_and_times() {
    let echo = upstream(upstreams::echo("one")).await;
    let api = format!(
        "id: shop\nlisten_path: /shop/\nupstream: {echo}\nauth: {{ type: plugin }}\nplugins:\n  auth:\n    path: {auth}\n    function: bearer-token\n    config: {{ tokens: {{ t1: {{ user: alice }} }} }}\nendpoints:\n  - method: GET\n    path: /hello/{{name}}\n    plugin: {{ path: {hello}, function: hello }}\n",
        auth = plugin(Wasm::Auth).display(),
        hello = plugin(Wasm::Hello).display(),
    );
    let config = ConfigDir::new(
        "apis: [apis/]\naccess_log: { path: logs/access.log }\n",
        &[("shop.yaml", &api)],
    );
    std::fs::create_dir(config.dir.path().join("logs")).expect("mkdir logs");
    let log = config.dir.path().join("logs/access.log");
    let gw = Gateway::start(config);
    let http = client();

    let proxied = http
        .post(gw.url("/shop/orders?x=1"))
        .header("authorization", "Bearer t1")
        .header("x-request-id", "req-proxied")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("user-agent", "probe/1.0")
        .body("abcdef")
        .send()
        .await
        .expect("request");
    assert_eq!(proxied.status(), 200);
    let proxied_len = proxied.bytes().await.expect("body").len();
    let virtual_ = http
        .get(gw.url("/shop/hello/ann"))
        .header("authorization", "Bearer t1")
        .send()
        .await
        .expect("request");
    let virtual_len = virtual_.bytes().await.expect("body").len();
    let refused = http.get(gw.url("/shop/orders")).send().await.expect("request");
    assert_eq!(refused.status(), 401);
    refused.bytes().await.expect("body");
    let unrouted = http.get(gw.url("/nowhere")).send().await.expect("request");
    assert_eq!(unrouted.status(), 404);
    unrouted.bytes().await.expect("body");

    let lines = lines(&log, 4);
    assert_eq!(lines.len(), 4, "one line per request: {lines:?}");
    let p = &lines[0];
    assert_eq!(
        (
            p["http.request.method"].as_str(),
            p["url.path"].as_str(),
            p["portcullis.request_id"].as_str()
        ),
        (Some("POST"), Some("/shop/orders"), Some("req-proxied"))
    );
    assert_eq!(
        (p["portcullis.api"].as_str(), p["http.response.status_code"].as_u64()),
        (Some("shop"), Some(200))
    );
    assert_eq!(p["http.route"], serde_json::Value::Null, "no endpoint matched");
    assert_eq!(
        (
            p["http.request.body.size"].as_u64(),
            p["http.response.body.size"].as_u64()
        ),
        (Some(6), Some(proxied_len as u64))
    );
    assert_eq!(p["portcullis.key_id"], "alice");
    assert_eq!(p["client.address"], "127.0.0.1", "{p}");
    assert!(p["client.port"].as_u64().is_some_and(|port| port > 0), "{p}");
    assert_eq!(p["url.query"], "x=1", "{p}");
    assert_eq!(p["server.address"].as_str(), gw.url("").strip_prefix("http://"), "{p}");
    assert_eq!(p["network.protocol.version"], "1.1", "{p}");
    assert_eq!(p["user_agent.original"], "probe/1.0", "{p}");
    assert_eq!(p["portcullis.upstream.target"].as_str(), Some(echo.as_str()), "{p}");
    assert_eq!(p["portcullis.upstream.tries"], 1, "{p}");
    assert_eq!(
        p["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the client's traceparent: {p}"
    );
    assert!(
        p["portcullis.upstream.duration_ms"].as_f64().expect("upstream time") > 0.0,
        "{p}"
    );
    assert!(
        p["portcullis.plugin.duration_ms"].as_f64().expect("plugin time") > 0.0,
        "the auth plugin ran: {p}"
    );
    assert!(
        p["portcullis.duration_ms"].as_f64().expect("duration")
            >= p["portcullis.upstream.duration_ms"].as_f64().expect("upstream")
    );
    assert_eq!(
        (
            p["portcullis.complete"].as_bool(),
            &p["portcullis.error"],
            &p["error.type"]
        ),
        (Some(true), &serde_json::Value::Null, &serde_json::Value::Null)
    );
    assert!(p["time"].as_str().expect("time").ends_with('Z'), "{p}");

    assert_eq!(
        lines[1]["trace_id"],
        serde_json::Value::Null,
        "no traceparent, no traces: no trace id"
    );
    let v = &lines[1];
    assert_eq!(
        (v["http.route"].as_str(), v["http.response.status_code"].as_u64()),
        (Some("/hello/{name}"), Some(200))
    );
    assert_eq!(v["http.response.body.size"].as_u64(), Some(virtual_len as u64));
    assert_eq!(
        v["portcullis.upstream.duration_ms"],
        serde_json::Value::Null,
        "a virtual endpoint has no upstream"
    );

    let r = &lines[2];
    assert_eq!(
        (
            r["http.response.status_code"].as_u64(),
            r["portcullis.key_id"].is_null()
        ),
        (Some(401), true)
    );
    assert_eq!(
        r["error.type"],
        serde_json::Value::Null,
        "the auth plugin answered 401 itself: a response, not a failure"
    );

    let u = &lines[3];
    assert_eq!(
        (u["http.response.status_code"].as_u64(), u["portcullis.api"].is_null()),
        (Some(404), true)
    );
    assert_eq!(
        (&u["portcullis.error"], &u["error.type"]),
        (&"no API matches this path".into(), &"client".into())
    );
}

/// The writer gathers lines between writes; a graceful shutdown writes
/// out every line of the requests it served, none left behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_shutdown_writes_every_line_out() {
    let echo = upstream(upstreams::echo("one")).await;
    // Outside the configuration's directory, which goes with the gateway.
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("access.log");
    let config = ConfigDir::new(
        &format!("apis: [apis/]\naccess_log: {{ path: '{}' }}\n", log.display()),
        &[("a.yaml", &format!("id: a\nlisten_path: /a/\nupstream: {echo}\n"))],
    );
    let gw = Gateway::start(config);
    let http = client();
    const REQUESTS: usize = 300;
    for i in 0..REQUESTS {
        let response = http.get(gw.url(&format!("/a/{i}"))).send().await.expect("request");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body");
    }
    drop(http);
    assert!(gw.stop().success());
    // Read once, after the exit: no waiting for the writer.
    let text = std::fs::read_to_string(&log).expect("the log");
    let paths: Vec<String> = text
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            line["url.path"].as_str().expect("path").to_owned()
        })
        .collect();
    assert_eq!(paths.len(), REQUESTS, "lines written before the exit");
    let expected: Vec<String> = (0..REQUESTS).map(|i| format!("/a/{i}")).collect();
    assert_eq!(paths, expected);
}

#[test]
fn an_empty_access_log_path_is_refused_with_its_line() {
    let config = ConfigDir::new(
        "apis: [apis/]\naccess_log: { path: '' }\n",
        &[("a.yaml", "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:9\n")],
    );
    let output = crate::support::validate(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("gateway.yaml:2:15: access_log.path: empty"), "{stderr}");
}
