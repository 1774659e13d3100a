//! The chain in process: a real configuration with the test plugins
//! (`cargo xtask plugins` builds them), served by calling [`handle`] with
//! a request, no listener, no client. The end-to-end suite checks the same
//! through sockets; these pin the order of the phases and how a refusal
//! becomes its response, and run in milliseconds.

use std::path::PathBuf;

use super::*;
use http::StatusCode;

use crate::config::StoreConfig;

fn wasm(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../example-plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask plugins` builds the test plugins",
        path.display()
    );
    path.display().to_string()
}

/// A gateway serving `api` (a JSON value written as the API's YAML file).
async fn gateway(api: serde_json::Value) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("apis")).expect("mkdir");
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "apis: [apis/]\nplugin_cache: false\nplugin_limits: { pool_size: 4 }\n",
    )
    .expect("gateway.yaml");
    let text = serde_yaml::to_string(&api).expect("YAML");
    std::fs::write(dir.path().join("apis/api.yaml"), text).expect("api.yaml");
    let config = crate::config::load(&dir.path().join("gateway.yaml")).expect("a valid configuration");
    let client = crate::upstream::outbound::OutboundClient::new(config.max_outbound_in_flight);
    let runtime = Arc::new(
        crate::plugin::PluginRuntime::new(&config.limits, config.plugin_cache.clone(), client).expect("runtime"),
    );
    let routes = Routes::build(config, &runtime, None).await.expect("plugins load");
    let store = SessionStore::new(StoreConfig::Embedded(dir.path().join("sessions.redb")));
    (Gateway::new(routes, store, None), dir)
}

async fn get(gateway: &Gateway, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, serde_json::Value) {
    let mut request = http::Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Body::empty()).expect("request");
    let peer = Arc::new(Peer::new("127.0.0.1:5000".parse().expect("address"), None));
    let response = handle(gateway, peer, request).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

fn probe(function: &str, name: &str) -> serde_json::Value {
    serde_json::json!({ "path": wasm("probe"), "function": function, "config": { "name": name } })
}

/// The chain API of the end-to-end suite, with a virtual endpoint only: no
/// upstream is needed.
fn chain_api() -> serde_json::Value {
    serde_json::json!({
        "id": "chain",
        "listen_path": "/c/",
        // Never contacted: every endpoint here answers itself.
        "upstream": "http://127.0.0.1:9",
        "auth": { "type": "plugin" },
        "plugins": {
            "pre": [probe("record-order", "pre1"), probe("record-order", "pre2")],
            "auth": {
                "path": wasm("auth"),
                "function": "bearer-token",
                "config": { "tokens": { "t1": { "user": "alice" } } },
            },
            "post_auth": [probe("record-order", "post_auth")],
            "post": [probe("record-order", "post")],
            "response": [probe("record-order-response", "resp1"), probe("record-order-response", "resp2")],
        },
        "endpoints": [{ "path": "/virtual", "plugin": { "path": wasm("probe"), "function": "whoami" } }],
    })
}

#[tokio::test]
async fn the_phases_run_in_order_and_a_respond_skips_to_the_response_hooks() {
    let (gw, _dir) = gateway(chain_api()).await;
    let (status, headers, body) = get(&gw, "/c/virtual", &[("authorization", "Bearer t1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["x_order"], "pre1,pre2,post_auth",
        "the request phase, up to the endpoint"
    );
    assert_eq!(body["key_id"], "alice", "authenticated before post_auth");
    assert_eq!(
        headers["x-order"], "pre1,pre2,post_auth,resp1,resp2",
        "no `post` after a respond; the response hooks in order"
    );
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_refused_caller_gets_the_auth_plugins_answer_and_the_later_hooks_do_not_run() {
    let (gw, _dir) = gateway(chain_api()).await;
    let (status, headers, _) = get(&gw, "/c/virtual", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["x-order"], "pre1,pre2,resp1,resp2",
        "the pre hooks ran, then the response hooks on the refusal"
    );
}

#[tokio::test]
async fn admission_refuses_before_any_plugin_runs() {
    let mut api = chain_api();
    api["unmatched"] = "reject".into();
    api["max_request_body_bytes"] = 4.into();
    let (gw, _dir) = gateway(api).await;
    // No endpoint: refused at admission, so not even a pre hook ran.
    let (status, headers, body) = get(&gw, "/c/other", &[("authorization", "Bearer t1")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no endpoint matches this path and method"))
    );
    assert!(!headers.contains_key("x-order"), "{headers:?}");
    let (status, headers, _) = get(
        &gw,
        "/c/virtual",
        &[("authorization", "Bearer t1"), ("content-length", "5")],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!headers.contains_key("x-order"), "{headers:?}");
    // A path outside every API.
    let (status, _, body) = get(&gw, "/elsewhere", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no API matches this path"))
    );
}
