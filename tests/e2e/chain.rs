//! The plugin chain: API-level hooks in order around the endpoint plugin,
//! a `respond` ending the request phase while response hooks still run,
//! response hooks that stream or read the body, and hook-kind checks.

use serde_json::{Value, json};

use crate::support::{ConfigDir, Gateway, Wasm, client, get_with, plugin, upstream, upstreams, validate, yaml};

fn probe(function: &str, name: &str) -> Value {
    json!({ "path": plugin(Wasm::Probe), "function": function, "config": { "name": name } })
}

fn chain_api(upstream: &str) -> String {
    yaml(json!({
        "id": "chain",
        "listen_path": "/c/",
        "strip_listen_path": true,
        "upstream": upstream,
        "auth": { "type": "plugin" },
        "plugins": {
            "pre": [probe("record-order", "pre1"), probe("record-order", "pre2")],
            "auth": {
                "path": plugin(Wasm::Auth),
                "function": "bearer-token",
                "config": { "tokens": { "t1": { "user": "alice" } } },
            },
            "post_auth": [probe("record-order", "post_auth")],
            "post": [probe("record-order", "post")],
            "response": [probe("record-order-response", "resp1"), probe("record-order-response", "resp2")],
        },
        "endpoints": [
            { "path": "/proxied", "plugin": probe("record-order", "endpoint") },
            { "path": "/virtual", "plugin": { "path": plugin(Wasm::Probe), "function": "whoami" } },
        ],
    }))
}

#[tokio::test]
async fn hooks_run_in_order_around_the_endpoint_plugin() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&chain_api(&echo)));
    let (status, headers, seen) = get_with(&gw.url("/c/proxied"), &[("authorization", "Bearer t1")]).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(
        seen["headers"]["x-order"],
        json!(["pre1,pre2,post_auth,endpoint,post"]),
        "request hooks, as the upstream saw them"
    );
    assert_eq!(
        headers["x-order"], "pre1,pre2,post_auth,endpoint,post,resp1,resp2",
        "then the response hooks"
    );
}

#[tokio::test]
async fn respond_ends_the_request_phase_and_response_hooks_still_run() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(ConfigDir::single(&chain_api(&echo)));

    // The endpoint plugin answers: no `post` hook, no upstream.
    let (status, headers, body) = get_with(&gw.url("/c/virtual"), &[("authorization", "Bearer t1")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["x_order"], "pre1,pre2,post_auth");
    assert_eq!(
        body["key_id"], "alice",
        "the auth plugin's session reached the endpoint"
    );
    assert_eq!(headers["x-order"], "pre1,pre2,post_auth,resp1,resp2");

    // The auth plugin rejects: later request hooks are skipped.
    let (status, headers, body) = get_with(&gw.url("/c/proxied"), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body, json!({ "error": "missing bearer token" }));
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(headers["x-order"], "pre1,pre2,resp1,resp2");
}

#[tokio::test]
async fn response_hooks_stream_unless_they_read_the_body() {
    let mirror = upstream(upstreams::mirror()).await;
    let echo = upstream(upstreams::echo("up")).await;
    let stamp = probe("record-order-response", "stamp");
    let wrap = format!("{{ path: {}, function: wrap-body }}", plugin(Wasm::Probe).display());
    let config = ConfigDir::new(
        "apis: [apis/]\n",
        &[
            (
                "stream.yaml",
                &format!("id: s\nlisten_path: /s/\nupstream: {mirror}\nplugins:\n  response: [{stamp}]\n"),
            ),
            (
                "wrap.yaml",
                &format!(
                    "id: w\nlisten_path: /w/\nstrip_listen_path: true\nupstream: {echo}\nplugins:\n  response: [{wrap}]\n"
                ),
            ),
        ],
    );
    let gw = Gateway::start(config);

    // 4 MiB, four times max_body_bytes: the header-only hook never buffers it.
    let body: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
    let response = client()
        .post(gw.url("/s/blob"))
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-order"], "stamp");
    assert!(
        response.bytes().await.expect("body") == body,
        "streamed through unchanged"
    );

    let (status, headers, wrapped) = get_with(&gw.url("/w/thing"), &[]).await;
    assert_eq!(status, 201, "{wrapped}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(wrapped["status"], 200);
    let inner: Value = serde_json::from_str(wrapped["wrapped"].as_str().expect("text")).expect("upstream JSON");
    assert_eq!(inner["path"], "/thing");

    // `(body)` on a response function is the response's body: the request's
    // went to the upstream, and its record carries none.
    let response = client()
        .post(gw.url("/w/thing"))
        .body("sent upstream")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    let wrapped: Value = response.json().await.expect("json");
    assert_eq!(wrapped["request_body"], false, "{wrapped}");
    let inner: Value = serde_json::from_str(wrapped["wrapped"].as_str().expect("text")).expect("upstream JSON");
    assert_eq!(inner["method"], "POST", "{inner}");
}

#[test]
fn a_function_at_the_wrong_kind_of_hook_is_a_load_error() {
    let probe_path = plugin(Wasm::Probe).display().to_string();
    let cases = [
        (
            "pre: [{ path: P, function: check-token }]",
            "plugins.pre[0]",
            "is an `auth` function, but this hook needs a `request` function",
        ),
        (
            "response: [{ path: P, function: whoami }]",
            "plugins.response[0]",
            "is a `request` function, but this hook needs a `response` function",
        ),
        (
            "post: [{ path: P, function: stamp }]",
            "plugins.post[0]",
            "is a `response` function, but this hook needs a `request` function",
        ),
    ];
    for (hook, field, message) in cases {
        let text = format!(
            "id: k\nlisten_path: /k/\nupstream: http://127.0.0.1:9\nplugins:\n  {}\n",
            hook.replace('P', &probe_path)
        );
        let output = validate(&ConfigDir::single(&text));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(field) && stderr.contains(message), "{hook}: {stderr}");
    }
    let text = format!(
        "id: k\nlisten_path: /k/\nupstream: http://127.0.0.1:9\nauth: {{ type: plugin }}\nplugins:\n  auth: {{ path: {probe_path}, function: whoami }}\n"
    );
    let stderr = String::from_utf8_lossy(&validate(&ConfigDir::single(&text)).stderr).into_owned();
    assert!(
        stderr.contains("is a `request` function, but this hook needs an `auth` function"),
        "{stderr}"
    );
    let text = "id: k\nlisten_path: /k/\nupstream: http://127.0.0.1:9\nauth: { type: plugin }\n";
    let stderr = String::from_utf8_lossy(&validate(&ConfigDir::single(text)).stderr).into_owned();
    assert!(
        stderr.contains("auth type `plugin` needs a plugin under plugins.auth"),
        "{stderr}"
    );
}
