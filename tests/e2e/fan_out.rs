//! `fan_out:` on a plugin reference: the gateway makes the declared calls
//! concurrently before the function runs, and the function (the `aggregate`
//! example's `combine`) merges the results from its input. Checked at load:
//! the allowlist, the URL's parameters, the call budget, the contract.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    ConfigDir, Gateway, Wasm, client, closed_port, get_json, plugin, plugin_v01, upstream, upstreams, validate,
};

/// An API whose `GET /summary/{id}` is answered by `function` of
/// `wasm` with `fan_out` (YAML, indented to sit under `fan_out:`).
fn api_with(wasm: &std::path::Path, function: &str, allow: &[String], fan_out: &str, extra: &str) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "id: agg\nlisten_path: /agg/\nstrip_listen_path: true\nupstream: http://{}\noutbound:\n  allow: [{}]\n  timeout_ms: 5000\nendpoints:\n  - method: GET\n    path: /summary/{{id}}\n    plugin:\n      path: {}\n      function: {function}\n{extra}      fan_out:\n{fan_out}",
        closed_port(),
        allow.join(", "),
        wasm.display(),
    )
}

fn combine_api(allow: &[String], fan_out: &str) -> String {
    api_with(&plugin(Wasm::Aggregate), "combine", allow, fan_out, "")
}

fn host(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn the_gateway_fetches_and_the_plugin_merges() {
    let users = upstream(upstreams::records("users-service")).await;
    let prices = upstream(upstreams::records("pricing-service")).await;
    let echo = upstream(upstreams::echo("echo")).await;
    let text = combine_api(
        &[host(&users), host(&prices), host(&echo)],
        &format!(
            "        calls:\n          user: {users}/users/{{id}}\n          price: {{ url: '{prices}/prices/{{id}}', timeout_ms: 2000 }}\n          seen:\n            url: '{echo}/seen/{{id}}?via=gw'\n            method: POST\n            headers: {{ x-api-key: internal-1 }}\n            body: '{{\"q\":1}}'\n"
        ),
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client()
        .get(gw.url("/agg/summary/8"))
        .header("x-request-id", "req-fan")
        .header("x-api-key", "the-client's")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-partial"], "false");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["id"], "8", "the path parameters sit beside the parts");
    assert_eq!(body["user"]["name"], "user-8");
    assert_eq!(body["price"]["amount"], 899);
    let seen = &body["seen"];
    assert_eq!(
        (&seen["method"], &seen["path"], &seen["query"], &seen["body"]),
        (&json!("POST"), &json!("/seen/8"), &json!("via=gw"), &json!("{\"q\":1}")),
        "{body}"
    );
    // The call's own headers, the request id; nothing of the client's else.
    assert_eq!(seen["headers"]["x-api-key"], json!(["internal-1"]), "{body}");
    assert_eq!(seen["headers"]["x-request-id"], json!(["req-fan"]));
}

#[tokio::test]
async fn a_parameter_cannot_leave_its_place_in_the_url() {
    let echo = upstream(upstreams::echo("echo")).await;
    let text = combine_api(
        &[host(&echo)],
        &format!("        calls:\n          seen: '{echo}/items/{{id}}?view=short'\n"),
    );
    // `%2F` is refused by default; an API whose ids may hold one keeps it.
    let text = format!("{text}paths: {{ escaped_slashes: keep }}\n");
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, _, body) = get_json(&gw.url("/agg/summary/7%3Fadmin=1&x=%2F..")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["seen"]["path"], "/items/7%3Fadmin%3D1%26x%3D%2F..", "{body}");
    assert_eq!(body["seen"]["query"], "view=short", "{body}");
}

#[tokio::test]
async fn failing_down_and_late_calls_are_reported_and_the_rest_kept() {
    let users = upstream(upstreams::records("users-service")).await;
    let broken = upstream(upstreams::status(500)).await;
    let late = upstream(upstreams::hang()).await;
    let down = closed_port();
    let text = combine_api(
        &[host(&users), host(&broken), down.to_string(), host(&late)],
        &format!(
            "        deadline_ms: 500\n        calls:\n          user: {users}/users/{{id}}\n          broken: {broken}/x\n          down: http://{down}/x\n          late: {late}/x\n"
        ),
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let started = Instant::now();
    let (status, headers, body) = get_json(&gw.url("/agg/summary/3")).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "true");
    assert_eq!(body["user"]["name"], "user-3");
    assert_eq!(body["errors"]["broken"], "status 500");
    assert!(
        body["errors"]["down"].as_str().expect("down").starts_with("connect:"),
        "{body}"
    );
    assert_eq!(body["errors"]["late"], "timeout");
    // The late service never answers: an answer shows the deadline ended it.
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
}

#[tokio::test]
async fn a_response_over_the_body_limit_is_too_large_not_passed_in() {
    let echo = upstream(upstreams::echo("echo-service-with-a-long-name")).await;
    let small = upstream(upstreams::status(200)).await;
    let text = api_with(
        &plugin(Wasm::Aggregate),
        "combine",
        &[host(&echo), host(&small)],
        &format!("        calls:\n          big: {echo}/x\n          small: {small}/x\n"),
        "      limits: { max_body_bytes: 120 }\n",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, _, body) = get_json(&gw.url("/agg/summary/1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["small"], json!({ "status": 200 }), "{body}");
    assert_eq!(body["errors"], json!({ "big": "response too large" }), "{body}");
}

#[tokio::test]
async fn the_calls_run_concurrently_and_first_stops_the_batch() {
    // The barrier answers only when all three calls wait on it at once.
    let meet = upstream(upstreams::barrier(3)).await;
    let calls: String = ["a", "b", "c"]
        .iter()
        .map(|n| format!("          {n}: {meet}/{n}\n"))
        .collect();
    let gw = Gateway::start(ConfigDir::single(&combine_api(
        &[host(&meet)],
        &format!("        deadline_ms: 30000\n        calls:\n{calls}"),
    )));
    let (status, headers, body) = get_json(&gw.url("/agg/summary/1")).await;
    assert_eq!(
        (status, &headers["x-partial"]),
        (200, &"false".parse().expect("value")),
        "{body}"
    );
    for part in ["a", "b", "c"] {
        assert_eq!(body[part], json!({ "met": true }), "{body}");
    }

    let fast = upstream(upstreams::records("fast")).await;
    let slow = upstream(upstreams::hang()).await;
    let gw = Gateway::start(ConfigDir::single(&combine_api(
        &[host(&fast), host(&slow)],
        &format!(
            "        deadline_ms: 60000\n        first: 1\n        calls:\n          fast: {fast}/users/{{id}}\n          slow: {slow}/x\n"
        ),
    )));
    // The slow call never answers and the deadline is far: an answer shows
    // the first success ended the batch.
    let (status, _, body) = get_json(&gw.url("/agg/summary/5")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fast"]["id"], 5);
    assert_eq!(body["errors"]["slow"], "cancelled");
}

#[tokio::test]
async fn the_fan_out_counts_against_the_plugins_own_call_limit() {
    // `merge` makes its own calls (two services) after the fan-out made two;
    // with a limit of three, its second call is refused.
    let (counter, hits) = upstreams::counter();
    let counter = upstream(counter).await;
    let text = api_with(
        &plugin(Wasm::Aggregate),
        "merge",
        &[host(&counter)],
        &format!("        calls:\n          f1: {counter}/f1\n          f2: {counter}/f2\n"),
        &format!(
            "      limits: {{ max_outbound_calls: 3 }}\n      config:\n        services:\n          a: {counter}/a\n          b: {counter}/b\n"
        ),
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, _, body) = get_json(&gw.url("/agg/summary/1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"], json!({ "b": "call limit reached" }), "{body}");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn with_every_instance_slot_busy_no_call_is_made() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (gate, arrived) = upstreams::gate(std::sync::Arc::clone(&release));
    let gate = upstream(gate).await;
    let (counter, hits) = upstreams::counter();
    let counter = upstream(counter).await;
    // `/busy` holds the only slot while its plugin waits on the gate.
    let api = format!(
        "id: pool\nlisten_path: /p/\nupstream: {gate}\noutbound: {{ allow: ['{}', '{}'], timeout_ms: 60000 }}\nendpoints:\n  - path: /busy\n    plugin: {{ path: {}, function: outbound-slow, limits: {{ timeout_ms: 60000 }} }}\n  - path: /fan/{{id}}\n    plugin:\n      path: {}\n      function: combine\n      fan_out: {{ calls: {{ n: '{counter}/n' }} }}\n",
        host(&gate),
        host(&counter),
        plugin(Wasm::Hostile).display(),
        plugin(Wasm::Aggregate).display(),
    );
    let gw = Gateway::start(ConfigDir::new(
        "apis: [apis/]\nplugin_limits: { pool_size: 1 }\n",
        &[("pool.yaml", &api)],
    ));
    let busy_url = gw.url(&format!("/p/busy?url={gate}/hold"));
    let busy = tokio::spawn(async move { get_json(&busy_url).await });
    while arrived.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(!busy.is_finished(), "the busy request ended early: {:?}", busy.await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _, body) = get_json(&gw.url("/p/fan/1")).await;
    crate::support::assert_gateway_error(status, &body, 503, "plugin capacity exhausted, retry later");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no fan-out call was sent"
    );

    release.notify_waiters();
    busy.await.expect("join");
    let (status, _, body) = get_json(&gw.url("/p/fan/1")).await;
    assert_eq!((status, &body["n"]), (200, &json!({ "n": 1 })), "{body}");
}

/// Runs `validate`, expects failure, returns stderr.
fn validate_error(text: &str) -> String {
    let output = validate(&ConfigDir::single(text));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "validate should fail; stderr:\n{stderr}");
    stderr
}

#[test]
fn mistakes_are_load_errors_that_say_where() {
    let allow = ["127.0.0.1:9001".to_owned()];
    let good = combine_api(
        &allow,
        "        calls:\n          b: http://127.0.0.1:9001/b/{id}\n          a: http://127.0.0.1:9001/a\n",
    );
    let output = validate(&ConfigDir::single(&good));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("GET /summary/{id} => aggregate.wasm#combine after fan-out to a, b"),
        "{stdout}"
    );

    for (calls, line, field, message) in [
        (
            "          a: http://127.0.0.1:9002/x\n",
            16,
            "endpoints[0].plugin.fan_out.calls.a",
            "127.0.0.1:9002 is not on the API's outbound.allow list",
        ),
        (
            "          a: http://127.0.0.1:9001/users/{user}\n",
            16,
            "endpoints[0].plugin.fan_out.calls.a",
            "uses {user}, which the endpoint's path does not capture (it captures: id)",
        ),
        (
            "          a: http://{id}:9001/x\n",
            16,
            "endpoints[0].plugin.fan_out.calls.a",
            "not the scheme, host or port",
        ),
        (
            "          a: { url: 'http://127.0.0.1:9001/x', method: get }\n",
            16,
            "endpoints[0].plugin.fan_out.calls.a.method",
            "invalid method \"get\"",
        ),
        (
            "          a: { url: 'http://127.0.0.1:9001/x', verb: GET }\n",
            16,
            "endpoints[0].plugin.fan_out.calls.a",
            "unknown field `verb`",
        ),
    ] {
        let text = combine_api(&allow, &format!("        calls:\n{calls}"));
        let stderr = validate_error(&text);
        assert!(stderr.contains(&format!("apis/api.yaml:{line}:")), "{calls}: {stderr}");
        assert!(stderr.contains(field), "{calls}: {stderr}");
        assert!(stderr.contains(message), "{calls}: {stderr}");
    }

    let text = api_with(
        &plugin(Wasm::Aggregate),
        "combine",
        &allow,
        "        calls:\n          a: http://127.0.0.1:9001/a\n          b: http://127.0.0.1:9001/b\n",
        "      limits: { max_outbound_calls: 1 }\n",
    );
    let stderr = validate_error(&text);
    assert!(
        stderr.contains(
            "endpoints[0].plugin.fan_out.calls: 2 calls are more than the reference's limits.max_outbound_calls (1)"
        ),
        "{stderr}"
    );

    // A 0.1 plugin has no way to receive the results.
    let text = api_with(
        &plugin_v01(Wasm::Aggregate),
        "merge",
        &allow,
        "        calls:\n          a: http://127.0.0.1:9001/a\n",
        "",
    );
    let stderr = validate_error(&text);
    assert!(
        stderr.contains("`fan_out` needs a plugin built against contract 0.2"),
        "{stderr}"
    );
}
