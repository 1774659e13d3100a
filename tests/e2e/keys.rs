//! Keys, sessions, rate limits and quotas on the embedded store, and the
//! admin API that manages them.

use serde_json::{Value, json};

use crate::support::{ConfigDir, Gateway, Wasm, admin_post, client, eventually, get_with, plugin, upstream, upstreams};

const SECRET: &str = "admin-secret-for-tests";

/// A gateway with the admin API and two key-protected APIs, `k` (key in the
/// Authorization header or `?api_key=`) and `other`.
async fn keyed_gateway() -> Gateway {
    let echo = upstream(upstreams::echo("up")).await;
    let probe = plugin(Wasm::Probe);
    let k = format!(
        "id: k\nlisten_path: /k/\nstrip_listen_path: true\nupstream: {echo}\nauth: {{ type: api_key, query: api_key }}\nplugins:\n  post_auth: [{{ path: {p}, function: record-order, config: {{ name: seen, metadata: [[last_path, visited]] }} }}]\nendpoints:\n  - path: /whoami\n    plugin: {{ path: {p}, function: whoami }}\n",
        p = probe.display()
    );
    let other =
        format!("id: other\nlisten_path: /other/\nupstream: {echo}\nauth: {{ type: api_key, header: x-api-key }}\n");
    let gateway_yaml = format!("apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n");
    Gateway::start(ConfigDir::new(&gateway_yaml, &[("k.yaml", &k), ("other.yaml", &other)]))
}

async fn create_key(gw: &Gateway, session: Value) -> String {
    let (status, body) = admin_post(&gw.admin("/keys"), SECRET, session).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["key_id"].as_str().is_some_and(|id| !id.is_empty()));
    body["key"].as_str().expect("the new key").to_owned()
}

async fn admin_get(gw: &Gateway, path: &str) -> (u16, Value) {
    let response = client()
        .get(gw.admin(path))
        .header("x-admin-secret", SECRET)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_admin_api_needs_its_secret_and_is_not_on_the_public_listener() {
    let gw = keyed_gateway().await;
    let response = client().get(gw.admin("/apis")).send().await.expect("request");
    assert_eq!(response.status(), 401);
    let response = client()
        .get(gw.admin("/apis"))
        .header("x-admin-secret", "wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 403);
    let (status, _, body) = get_with(&gw.url("/keys"), &[("x-admin-secret", SECRET)]).await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = admin_get(&gw, "/apis").await;
    assert_eq!(status, 200);
    let apis = body["apis"].as_array().expect("apis");
    assert_eq!(apis.len(), 2);
    assert_eq!(apis[0]["id"], "k");
    assert_eq!(
        apis[0]["auth"],
        json!({ "type": "api_key", "header": "authorization", "query": "api_key" })
    );
    assert_eq!(apis[0]["plugins"]["post_auth"], json!(["probe.wasm#record-order"]));
    assert_eq!(apis[0]["endpoints"][0]["path"], "/whoami");
}

#[tokio::test]
async fn api_keys_authenticate_by_header_bearer_or_query() {
    let gw = keyed_gateway().await;
    let key = create_key(&gw, json!({ "apis": ["k"] })).await;

    let (status, _, body) = get_with(&gw.url("/k/x"), &[]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing API key")));
    let (status, _, body) = get_with(&gw.url("/k/x"), &[("authorization", "Bearer nope")]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unknown API key")));

    let (status, _, seen) = get_with(&gw.url("/k/x"), &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["path"], "/x");
    let (status, _, _) = get_with(&gw.url("/k/x"), &[("authorization", &key)]).await;
    assert_eq!(status, 200);
    let (status, _, _) = get_with(&gw.url(&format!("/k/x?api_key={key}")), &[]).await;
    assert_eq!(status, 200);

    // A key for `k` only.
    let (status, _, body) = get_with(&gw.url("/other/x"), &[("x-api-key", &key)]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("this key may not access this API, path or method"))
    );
}

#[tokio::test]
async fn access_can_be_limited_to_paths_and_methods() {
    let gw = keyed_gateway().await;
    let key = create_key(
        &gw,
        json!({ "apis": [{ "id": "k", "paths": ["/public/"], "methods": ["GET"] }] }),
    )
    .await;
    let auth = [("authorization", key.as_str())];
    assert_eq!(get_with(&gw.url("/k/public/1"), &auth).await.0, 200);
    assert_eq!(get_with(&gw.url("/k/private/1"), &auth).await.0, 403);
    let response = client()
        .post(gw.url("/k/public/1"))
        .header("authorization", &key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn expired_and_deleted_keys_are_rejected() {
    let gw = keyed_gateway().await;
    let expired = create_key(&gw, json!({ "apis": ["k"], "expires": 1_000_000 })).await;
    let (status, _, body) = get_with(&gw.url("/k/x"), &[("authorization", &expired)]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("API key expired")));

    let key = create_key(&gw, json!({ "apis": ["k"] })).await;
    assert_eq!(get_with(&gw.url("/k/x"), &[("authorization", &key)]).await.0, 200);
    let response = client()
        .delete(gw.admin(&format!("/keys/{key}")))
        .header("x-admin-secret", SECRET)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    assert_eq!(get_with(&gw.url("/k/x"), &[("authorization", &key)]).await.0, 401);
    assert_eq!(admin_get(&gw, &format!("/keys/{key}")).await.0, 404);
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers_and_resets() {
    let gw = keyed_gateway().await;
    let key = create_key(&gw, json!({ "apis": ["k"], "rate": 2, "per": 2 })).await;
    let auth = [("authorization", key.as_str())];
    let (status, headers, _) = get_with(&gw.url("/k/x"), &auth).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ratelimit-limit"], "2");
    assert_eq!(headers["x-ratelimit-remaining"], "1");
    assert_eq!(get_with(&gw.url("/k/x"), &auth).await.0, 200);
    let (status, headers, body) = get_with(&gw.url("/k/x"), &auth).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("rate limit exceeded")));
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let retry: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    // Refused until the window ends (a refusal does not count), then served.
    eventually("a new window", || async {
        get_with(&gw.url("/k/x"), &auth).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn quota_counts_down_renews_and_shows_in_the_admin_api() {
    let gw = keyed_gateway().await;
    let key = create_key(
        &gw,
        json!({ "apis": ["k"], "quota_max": 3, "quota_renewal_seconds": 2 }),
    )
    .await;
    let auth = [("authorization", key.as_str())];
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) = get_with(&gw.url("/k/x"), &auth).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-quota-remaining"], remaining);
    }
    let (status, headers, body) = get_with(&gw.url("/k/x"), &auth).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("quota exceeded")));
    assert!(headers.contains_key("retry-after"));
    let (_, session) = admin_get(&gw, &format!("/keys/{key}")).await;
    assert_eq!(session["quota_remaining"], 0);
    assert_eq!(session["quota_max"], 3);

    eventually("the quota to renew", || async {
        get_with(&gw.url("/k/x"), &auth).await.0 == 200
    })
    .await;
    let (_, session) = admin_get(&gw, &format!("/keys/{key}")).await;
    assert_eq!(session["quota_remaining"], 2);
}

#[tokio::test]
async fn updating_a_key_changes_its_limits_and_keeps_the_key() {
    let gw = keyed_gateway().await;
    let key = create_key(&gw, json!({ "apis": ["k"], "quota_max": 1 })).await;
    let auth = [("authorization", key.as_str())];
    assert_eq!(get_with(&gw.url("/k/x"), &auth).await.0, 200);
    assert_eq!(get_with(&gw.url("/k/x"), &auth).await.0, 429);
    let response = client()
        .put(gw.admin(&format!("/keys/{key}")))
        .header("x-admin-secret", SECRET)
        .json(&json!({ "apis": ["k"], "quota_max": 5, "tags": ["upgraded"] }))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 200);
    let (status, _, seen) = get_with(&gw.url("/k/whoami"), &auth).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["tags"], json!(["upgraded"]));
    assert_eq!(seen["quota_remaining"], 3, "1 used before, this one, of 5");
}

#[tokio::test]
async fn plugins_write_session_metadata_that_persists() {
    let gw = keyed_gateway().await;
    let key = create_key(&gw, json!({ "apis": ["k"], "metadata": { "plan": "gold" } })).await;
    let auth = [("authorization", key.as_str())];
    // The post_auth hook sets last_path=visited on every request.
    let (status, _, seen) = get_with(&gw.url("/k/whoami"), &auth).await;
    assert_eq!(status, 200);
    let metadata = seen["metadata"].as_array().expect("metadata");
    assert!(metadata.contains(&json!(["plan", "gold"])), "{seen}");
    assert!(
        metadata.contains(&json!(["last_path", "visited"])),
        "set by the earlier hook: {seen}"
    );
    let (_, session) = admin_get(&gw, &format!("/keys/{key}")).await;
    assert_eq!(
        session["metadata"],
        json!({ "plan": "gold", "last_path": "visited" }),
        "saved with the key"
    );
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let gw = keyed_gateway().await;
    let key = create_key(&gw, json!({ "apis": ["k"], "quota_max": 5 })).await;
    assert_eq!(get_with(&gw.url("/k/x"), &[("authorization", &key)]).await.0, 200);
    // A restart as an orchestrator makes one: SIGTERM, which writes the
    // counters out before the process ends.
    let gw = gw.restart_gracefully();
    let (status, headers, _) = get_with(&gw.url("/k/x"), &[("authorization", &key)]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-quota-remaining"], "3", "the counter survived too");
}

#[tokio::test]
async fn a_custom_auth_plugin_creates_the_session_and_its_limits_apply() {
    let echo = upstream(upstreams::echo("up")).await;
    let text = format!(
        "id: pa\nlisten_path: /pa/\nupstream: {echo}\nauth: {{ type: plugin }}\nplugins:\n  auth:\n    path: {auth}\n    function: bearer-token\n    config:\n      tokens:\n        tok-bob: {{ user: bob, quota: 2, tags: [staff] }}\nendpoints:\n  - path: /whoami\n    plugin: {{ path: {probe}, function: whoami }}\n",
        auth = plugin(Wasm::Auth).display(),
        probe = plugin(Wasm::Probe).display()
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let bearer = [("authorization", "Bearer tok-bob")];
    let (status, _, seen) = get_with(&gw.url("/pa/whoami"), &bearer).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["key_id"], "bob");
    assert_eq!(seen["tags"], json!(["staff"]));
    assert_eq!(seen["quota_remaining"], 1);
    assert!(
        seen["metadata"]
            .as_array()
            .expect("metadata")
            .contains(&json!(["user", "bob"]))
    );
    assert_eq!(get_with(&gw.url("/pa/whoami"), &bearer).await.0, 200);
    assert_eq!(
        get_with(&gw.url("/pa/whoami"), &bearer).await.0,
        429,
        "the plugin's quota of 2 is enforced"
    );
    let (status, _, body) = get_with(&gw.url("/pa/whoami"), &[("authorization", "Bearer wrong")]).await;
    assert_eq!((status, body), (401, json!({ "error": "invalid bearer token" })));
}
