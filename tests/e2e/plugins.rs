//! Per-endpoint plugins: the four examples, the contract as a plugin sees
//! it, changes applied on `continue`, and failures contained to one request.

use serde_json::{Value, json};
use std::path::Path;

use crate::support::{
    ConfigDir, Gateway, client, closed_port, get_json, plugin, upstream, upstreams,
};

/// An API with one endpoint running `function` of `wasm`, with `config`.
fn api_with_plugin(
    upstream: &str,
    method: &str,
    path: &str,
    wasm: &Path,
    function: &str,
    config: &str,
) -> String {
    format!(
        "id: test\nname: Test API\nlisten_path: /t/\nstrip_listen_path: true\nupstream: {upstream}\nconfig: {{ tier: gold }}\nendpoints:\n  - method: {method}\n    path: {path}\n    plugin:\n      path: {}\n      function: {function}\n      config: {config}\n",
        wasm.display()
    )
}

#[tokio::test]
async fn hello_answers_from_the_plugin_without_the_upstream() {
    let dead = format!("http://{}", closed_port());
    let text = api_with_plugin(
        &dead,
        "GET",
        "/hello/{name}",
        &plugin("hello"),
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
    assert_eq!(
        body["request_id"].as_str(),
        headers["x-request-id"].to_str().ok()
    );
}

#[tokio::test]
async fn method_mismatch_falls_through_to_the_upstream() {
    let echo = upstream(upstreams::echo("up")).await;
    let text = api_with_plugin(
        &echo,
        "GET",
        "/hello/{name}",
        &plugin("hello"),
        "hello",
        "{}",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client()
        .delete(gw.url("/t/hello/ada"))
        .send()
        .await
        .expect("request");
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
        &plugin("policy"),
        "require-header",
        config,
    );
    let gw = Gateway::start(ConfigDir::single(&text));

    let (status, _, body) = get_json(&gw.url("/t/42")).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({ "error": "missing required header x-api-client" })
    );

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
    let config = format!(
        "{{ header: x-region, param: region, rest_param: rest, upstreams: {{ eu: '{eu}', us: '{us}' }} }}"
    );
    let text = api_with_plugin(
        &default,
        "GET",
        "/{region}/{*rest}",
        &plugin("router"),
        "by-region",
        &config,
    );
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

fn aggregate_api(services: &[(&str, String)], allow: &[String]) -> String {
    let services: String = services
        .iter()
        .map(|(name, url)| format!("          {name}: '{url}'\n"))
        .collect();
    let allow: Vec<String> = allow.iter().map(|a| format!("'{a}'")).collect();
    format!(
        "id: agg\nlisten_path: /agg/\nstrip_listen_path: true\nupstream: http://{}\noutbound:\n  allow: [{}]\n  timeout_ms: 1000\nendpoints:\n  - method: GET\n    path: /summary/{{id}}\n    plugin:\n      path: {}\n      function: merge\n      config:\n        services:\n{services}",
        closed_port(),
        allow.join(", "),
        plugin("aggregate").display(),
    )
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn aggregate_merges_internal_services() {
    let users = upstream(upstreams::records("users-service")).await;
    let stock = upstream(upstreams::records("stock-service")).await;
    let text = aggregate_api(
        &[
            ("user", format!("{users}/users/{{id}}")),
            ("stock", format!("{stock}/stock/{{id}}")),
        ],
        &[host_port(&users), host_port(&stock)],
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, headers, body) = get_json(&gw.url("/agg/summary/8")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "false");
    assert_eq!(body["id"], "8");
    assert_eq!(body["user"]["source"], "users-service");
    assert_eq!(body["user"]["tier"], "gold");
    assert_eq!(body["stock"]["source"], "stock-service");
    assert_eq!(body["stock"]["available"], 8 * 3 % 17);
    assert!(body.get("errors").is_none());
}

#[tokio::test]
async fn aggregate_marks_failed_parts_and_the_allowlist_refuses_other_hosts() {
    let users = upstream(upstreams::records("users-service")).await;
    // Listening, but not on the allowlist: it must never see a connection.
    let forbidden = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    forbidden.set_nonblocking(true).expect("nonblocking");
    let forbidden_addr = forbidden.local_addr().expect("addr");
    let down = closed_port();
    let text = aggregate_api(
        &[
            ("user", format!("{users}/users/{{id}}")),
            ("secret", format!("http://{forbidden_addr}/secret")),
            ("stock", format!("http://{down}/stock/{{id}}")),
        ],
        &[host_port(&users), down.to_string()],
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, headers, body) = get_json(&gw.url("/agg/summary/3")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "true");
    assert_eq!(body["user"]["name"], "user-3");
    assert_eq!(body["secret"], Value::Null);
    assert_eq!(body["stock"], Value::Null);
    let secret_error = body["errors"]["secret"].as_str().expect("secret error");
    assert!(secret_error.contains("NotAllowed"), "{secret_error}");
    assert!(
        secret_error.contains(&forbidden_addr.to_string()),
        "{secret_error}"
    );
    assert!(
        body["errors"]["stock"]
            .as_str()
            .expect("stock error")
            .contains("Connect"),
        "{body}"
    );
    match forbidden.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the non-allowed host was contacted: {other:?}"),
    }
}

#[tokio::test]
async fn plugin_sees_request_params_session_api_and_config() {
    let echo = upstream(upstreams::echo("up")).await;
    let text = api_with_plugin(
        &echo,
        "POST",
        "/users/{id}/notes/{note}",
        &plugin("probe"),
        "inspect",
        "{ answer: 42, nested: { list: [1, 2] } }",
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client()
        .post(gw.url("/t/users/a%20b/notes/9?q=1&q=2"))
        .header("x-multi", "one")
        .header("x-multi", "two")
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
    assert_eq!(
        request["body"], "note body",
        "inspect is registered with request(body)"
    );
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
        request["client_addr"]
            .as_str()
            .expect("addr")
            .starts_with("127.0.0.1:")
    );
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
    assert_eq!(
        seen["config"],
        json!({ "answer": 42, "nested": { "list": [1, 2] } })
    );
}

#[tokio::test]
async fn continue_applies_method_path_query_header_body_and_upstream_changes() {
    let original = upstream(upstreams::echo("original")).await;
    let other = upstream(upstreams::echo("other")).await;
    let config = format!(
        "{{ method: PUT, path: /rewritten, query: 'a=1', set_headers: [[x-added, yes], [x-replaced, new]], remove_headers: [x-removed], body: replaced, upstream: '{other}/base' }}"
    );
    let text = api_with_plugin(
        &original,
        "POST",
        "/go",
        &plugin("probe"),
        "rewrite",
        &config,
    );
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
