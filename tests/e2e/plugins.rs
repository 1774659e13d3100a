//! Per-endpoint plugins: the four examples, the contract as a plugin sees
//! it, changes applied on `continue`, and failures contained to one request.

use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use std::path::Path;

use crate::support::{ConfigDir, Gateway, Wasm, client, closed_port, get_json, plugin, upstream, upstreams};

/// An API with one endpoint running `function` of `wasm`, with `config`.
fn api_with_plugin(upstream: &str, method: &str, path: &str, wasm: &Path, function: &str, config: &str) -> String {
    format!(
        "id: test\nname: Test API\nlisten_path: /t/\nstrip_listen_path: true\nupstream: {upstream}\nconfig: {{ tier: gold }}\nendpoints:\n  - method: {method}\n    path: {path}\n    plugin:\n      path: {}\n      function: {function}\n      config: {config}\n",
        wasm.display()
    )
}

/// A `routing.allow` list naming `upstreams`, followed by `endpoints:`.
fn allow_routing(upstreams: &[&str]) -> String {
    let hosts: Vec<String> = upstreams
        .iter()
        .map(|u| format!("'{}'", u.trim_start_matches("http://")))
        .collect();
    format!("routing: {{ allow: [{}] }}\nendpoints:", hosts.join(", "))
}

#[tokio::test]
async fn hello_answers_from_the_plugin_without_the_upstream() {
    let dead = format!("http://{}", closed_port());
    let text = api_with_plugin(
        &dead,
        "GET",
        "/hello/{name}",
        &plugin(Wasm::Hello),
        "hello",
        "{ greeting: Bonjour }",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, headers, body) = get_json(&gw.url("/t/hello/ada?lang=fr")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-served-by"], "hello.wasm");
    assert_eq!(body["message"], "Bonjour, ada!");
    assert_eq!(body["query"], "lang=fr");
    assert_eq!(body["api"], "test");
    assert_eq!(body["request_id"].as_str(), headers["x-request-id"].to_str().ok());
}

#[tokio::test]
async fn method_mismatch_falls_through_to_the_upstream() {
    let echo = upstream(upstreams::echo("up")).await;
    let text = api_with_plugin(&echo, "GET", "/hello/{name}", &plugin(Wasm::Hello), "hello", "{}");
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client().delete(gw.url("/t/hello/ada")).send().await.expect("request");
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["upstream"], "up");
    assert_eq!(seen["method"], "DELETE");
    let (_, _, body) = get_json(&gw.url("/t/hello/ada")).await;
    assert_eq!(
        body["message"], "Hello, ada!",
        "absent config falls back to the plugin's default"
    );
}

#[tokio::test]
async fn policy_rejects_without_the_header_and_adds_headers_with_it() {
    let echo = upstream(upstreams::echo("orders")).await;
    let config = "{ header: x-api-client, add_headers: { x-policy: checked } }";
    let text = api_with_plugin(
        &echo,
        "[GET, POST]",
        "/{id}",
        &plugin(Wasm::Policy),
        "require-header",
        config,
    );
    let gw = Gateway::start(ConfigDir::single(&text));

    let (status, _, body) = get_json(&gw.url("/t/42")).await;
    assert_eq!(status, 403);
    assert_eq!(body, json!({ "error": "missing required header x-api-client" }));

    let response = client()
        .post(gw.url("/t/42"))
        .header("x-api-client", "mobile")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["path"], "/42");
    assert_eq!(seen["body"], "{}", "the body streamed past the plugin");
    assert_eq!(seen["headers"]["x-policy"][0], "checked");
    assert_eq!(seen["headers"]["x-client-verified"][0], "mobile");
}

#[tokio::test]
async fn router_picks_the_upstream_by_header_or_path_parameter() {
    let eu = upstream(upstreams::echo("eu")).await;
    let us = upstream(upstreams::echo("us")).await;
    let default = upstream(upstreams::echo("default")).await;
    let config =
        format!("{{ header: x-region, param: region, rest_param: rest, upstreams: {{ eu: '{eu}', us: '{us}' }} }}");
    let text = api_with_plugin(
        &default,
        "GET",
        "/{region}/{*rest}",
        &plugin(Wasm::Router),
        "by-region",
        &config,
    )
    .replace("endpoints:", &allow_routing(&[&eu, &us]));
    let gw = Gateway::start(ConfigDir::single(&text));

    let (_, _, seen) = get_json(&gw.url("/t/us/items/7?x=1")).await;
    assert_eq!(seen["upstream"], "us");
    assert_eq!(seen["path"], "/items/7");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["headers"]["x-routed-to"][0], "us");

    let response = client()
        .get(gw.url("/t/us/items/7"))
        .header("x-region", "EU")
        .send()
        .await
        .expect("request");
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["upstream"], "eu", "the header wins over the path");

    let (status, _, body) = get_json(&gw.url("/t/mars/items/7")).await;
    assert_eq!(status, 400);
    assert_eq!(body["known"], json!(["eu", "us"]));
}

#[tokio::test]
async fn plugin_sees_request_params_session_api_and_config() {
    let echo = upstream(upstreams::echo("up")).await;
    let text = api_with_plugin(
        &echo,
        "POST",
        "/users/{id}/notes/{note}",
        &plugin(Wasm::Probe),
        "inspect",
        "{ answer: 42, nested: { list: [1, 2] } }",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client()
        .post(gw.url("/t/users/a%20b/notes/9?q=1&q=2"))
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header(
            "x-latin",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid value"),
        )
        .body("note body")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.expect("json");
    let request = &seen["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/t/users/a%20b/notes/9");
    assert_eq!(request["upstream_path"], "/users/a%20b/notes/9");
    assert_eq!(request["query"], "q=1&q=2");
    assert_eq!(request["body"], "note body", "inspect is registered with request(body)");
    assert_eq!(request["params"], json!([["id", "a b"], ["note", "9"]]));
    let multi: Vec<&Value> = request["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter(|h| h[0] == "x-multi")
        .collect();
    assert_eq!(
        multi,
        vec![&json!(["x-multi", "one"]), &json!(["x-multi", "two"])],
        "repeated headers kept in order"
    );
    assert!(
        request["headers"]
            .as_array()
            .expect("headers")
            .contains(&json!(["x-latin", "caf\u{fffd}"])),
        "a value that is not UTF-8 arrives lossily converted: {}",
        request["headers"]
    );
    assert!(request["client_addr"].as_str().expect("addr").starts_with("127.0.0.1:"));
    assert!(!request["request_id"].as_str().expect("id").is_empty());
    assert_eq!(
        seen["session"],
        json!({ "key_id": "", "anonymous": true, "quota_max": -1 })
    );
    assert_eq!(seen["api"]["id"], "test");
    assert_eq!(seen["api"]["name"], "Test API");
    assert_eq!(seen["api"]["listen_path"], "/t/");
    assert_eq!(seen["api"]["upstream"], echo);
    assert_eq!(seen["api"]["config"], json!({ "tier": "gold" }));
    assert_eq!(seen["config"], json!({ "answer": 42, "nested": { "list": [1, 2] } }));
}

#[tokio::test]
async fn continue_applies_method_path_query_header_body_and_upstream_changes() {
    let original = upstream(upstreams::echo("original")).await;
    let other = upstream(upstreams::echo("other")).await;
    let config = format!(
        "{{ method: PUT, path: /rewritten, query: 'a=1', set_headers: [[x-added, yes], [x-replaced, new]], remove_headers: [x-removed], body: replaced, upstream: '{other}/base' }}"
    );
    let text = api_with_plugin(&original, "POST", "/go", &plugin(Wasm::Probe), "rewrite", &config)
        .replace("endpoints:", &allow_routing(&[&other]));
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client()
        .post(gw.url("/t/go?old=1"))
        .header("x-removed", "bye")
        .header("x-replaced", "old")
        .body("original body")
        .send()
        .await
        .expect("request");
    let seen: Value = response.json().await.expect("json");
    assert_eq!(seen["upstream"], "other");
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/base/rewritten");
    assert_eq!(seen["query"], "a=1");
    assert_eq!(seen["body"], "replaced");
    assert_eq!(seen["headers"]["x-added"], json!(["yes"]));
    assert_eq!(seen["headers"]["x-replaced"], json!(["new"]));
    assert!(seen["headers"].get("x-removed").is_none());
}

/// Two endpoints on the probe's `count` function (calls served by the
/// instance that answers): one with the default fresh instance per call, one
/// reusing an instance for up to three calls.
fn counting_api() -> String {
    let probe = plugin(Wasm::Probe);
    format!(
        "id: count\nlisten_path: /c/\nstrip_listen_path: true\nupstream: http://127.0.0.1:9\nendpoints:\n  - method: GET\n    path: /fresh\n    plugin:\n      path: {probe}\n      function: count\n  - method: GET\n    path: /reused\n    plugin:\n      path: {probe}\n      function: count\n      reuse: 3\n",
        probe = probe.display()
    )
}

async fn calls_seen(gw: &Gateway, path: &str, crash: bool) -> (u16, Value) {
    let mut request = client().get(gw.url(path));
    if crash {
        request = request.header("x-crash", "1");
    }
    let response = request.send().await.expect("request");
    let (status, _, body) = crate::support::json_of(response).await;
    (status, body["calls"].clone())
}

#[tokio::test]
async fn every_call_gets_a_fresh_instance_unless_the_reference_opts_in_to_reuse() {
    let gw = Gateway::start(ConfigDir::single(&counting_api()));
    for _ in 0..3 {
        assert_eq!(
            calls_seen(&gw, "/c/fresh", false).await,
            (200, json!(1)),
            "fresh by default"
        );
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(calls_seen(&gw, "/c/reused", false).await.1);
    }
    assert_eq!(seen, [1, 2, 3, 1, 2], "one instance serves three calls, then a new one");
}

#[tokio::test]
async fn a_reused_instance_that_fails_is_replaced() {
    let gw = Gateway::start(ConfigDir::single(&counting_api()));
    assert_eq!(calls_seen(&gw, "/c/reused", false).await, (200, json!(1)));
    let (status, _) = calls_seen(&gw, "/c/reused", true).await;
    assert_eq!(status, 500, "the panic fails its own request");
    gw.wait_for_log("crash requested on call 2");
    assert_eq!(
        calls_seen(&gw, "/c/reused", false).await,
        (200, json!(1)),
        "the trapped instance is dropped; the next call starts afresh"
    );
}

#[tokio::test]
async fn what_a_plugin_prints_is_logged_as_its_lines() {
    let text = format!(
        "id: print\nlisten_path: /p/\nupstream: http://127.0.0.1:9\nendpoints:\n  - path: /{{*rest}}\n    plugin:\n      path: {}\n      function: print\n",
        plugin(Wasm::Probe).display()
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client().get(gw.url("/p/one")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-request-id"].to_str().expect("id").to_owned();
    let log = gw.wait_for_log("to stderr");
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{log}"))
            .to_owned()
    };
    let stdout = line("to stdout from /p/one");
    assert!(
        stdout.contains("INFO") && stdout.contains("probe.wasm#print") && stdout.contains(&id),
        "{stdout}"
    );
    let stderr = line("to stderr");
    assert!(stderr.contains("WARN") && stderr.contains(&id), "{stderr}");

    let response = client().get(gw.url("/p/two?flood")).send().await.expect("request");
    assert_eq!(response.status(), 200, "printing too much does not fail the plugin");
    // 22 bytes of "to stdout from /p/two\n", then 20,001: 16 KiB are kept.
    let log = gw.wait_for_log("(3639 more bytes of stdout dropped: the limit is 16384 per call)");
    // The 16,362 x's kept are one line: it crosses in 171 parts of `log-part`
    // and is cut at 4 KiB like any log line.
    let cut = format!(": {}... (12266 more bytes cut)", "x".repeat(4096));
    assert!(log.contains(&cut), "{log}");
}
