//! The built-in policies, end to end: client IP lists, CORS, header
//! transforms, rewrites, method transforms, static responses, denied and
//! allow-listed paths, and per-endpoint timeouts, size limits and
//! authentication skips, each as a Tyk user would expect them to answer.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;

use crate::support::{
    ConfigDir, Gateway, assert_gateway_error, client, get_json, get_with, json_of, upstream, upstreams, validate, yaml,
};

async fn get_from(from: Ipv4Addr, url: &str) -> u16 {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(from))
        .build()
        .expect("client");
    client.get(url).send().await.expect("request").status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_ip_lists_allow_and_deny_by_cidr() {
    let echo = upstream(upstreams::echo("up")).await;
    let api = yaml(json!({
        "id": "ips", "listen_path": "/ips/", "upstream": echo,
        "client_ips": { "allow": ["127.0.0.0/24", "::1"], "deny": ["127.0.0.2"] },
    }));
    let gw = Gateway::start(ConfigDir::single(&api));
    let url = gw.url("/ips/x");
    assert_eq!(get_from(Ipv4Addr::new(127, 0, 0, 1), &url).await, 200);
    assert_eq!(get_from(Ipv4Addr::new(127, 0, 0, 3), &url).await, 200);
    assert_eq!(
        get_from(Ipv4Addr::new(127, 0, 0, 2), &url).await,
        403,
        "denied inside the allowed block"
    );
    assert_eq!(
        get_from(Ipv4Addr::new(127, 0, 1, 1), &url).await,
        403,
        "outside the allowed block"
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1)))
        .build()
        .expect("client");
    let (status, _, body) = json_of(client.get(&url).send().await.expect("request")).await;
    assert_gateway_error(status, &body, 403, "your address may not call this API");

    // A bad block is refused with its place.
    let bad = ConfigDir::single(&yaml(json!({
        "id": "ips", "listen_path": "/ips/", "upstream": echo,
        "client_ips": { "deny": ["10.0.0.0/40"] },
    })));
    let output = validate(&bad);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("client_ips.deny[0]") && stderr.contains("10.0.0.0/40"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflights_are_answered_and_responses_marked() {
    let (app, hits) = upstreams::counter();
    let counter = upstream(app).await;
    let api = yaml(json!({
        "id": "web", "listen_path": "/web/", "upstream": counter,
        "auth": { "type": "api_key" },
        "cors": {
            "origins": ["https://app.example.com", "https://*.example.org"],
            "methods": ["GET", "POST"],
            "headers": ["content-type", "authorization"],
            "expose_headers": ["x-request-id"],
            "credentials": true,
            "max_age_s": 600,
        },
    }));
    let gw = Gateway::start(ConfigDir::single(&api));
    let url = gw.url("/web/orders");
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };

    // Answered by the gateway, before authentication, without the upstream.
    let response = preflight("https://app.example.com", "POST", "Content-Type")
        .await
        .expect("preflight");
    assert_eq!(response.status(), 204);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-allow-headers"], "content-type, authorization");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    let response = preflight("https://shop.example.org", "GET", "")
        .await
        .expect("preflight");
    assert_eq!(response.status(), 204, "a subdomain of a wildcard origin");

    for (origin, method, headers) in [
        ("https://evil.example.net", "POST", "content-type"),
        ("https://app.example.com", "DELETE", "content-type"),
        ("https://app.example.com", "POST", "x-secret"),
        ("https://example.org", "GET", ""),
    ] {
        let response = preflight(origin, method, headers).await.expect("preflight");
        assert_eq!(response.status(), 403, "{origin} {method} {headers}");
        assert!(response.headers().get("access-control-allow-methods").is_none());
        if !origin.starts_with("https://app.") {
            assert!(
                response.headers().get("access-control-allow-origin").is_none(),
                "{origin}"
            );
        }
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no preflight reached the upstream"
    );

    // An actual request: refused by the API key check, yet marked so the
    // script can read the refusal.
    let response = client()
        .get(&url)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    let h = response.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-expose-headers"], "x-request-id");
    assert_eq!(h["vary"], "origin");
    let response = client()
        .get(&url)
        .header("origin", "https://evil.example.net")
        .send()
        .await
        .expect("request");
    assert!(response.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_path_and_method_are_transformed_on_the_way() {
    let echo = upstream(upstreams::echo("up")).await;
    let api = yaml(json!({
        "id": "tx", "listen_path": "/tx/", "upstream": echo, "strip_listen_path": true,
        "headers": {
            "request": { "remove": ["x-internal"], "set": { "x-gateway": "portcullis", "x-request": "{request_id}" } },
            "response": { "set": { "x-served-by": "{api_id}" }, "remove": ["x-powered-by"] },
        },
        "endpoints": [
            {
                "path": "/users/{id}",
                "rewrite": "/v2/accounts/{id}",
                "headers": { "request": { "add": { "x-user": "user-{id}" } }, "response": { "add": { "x-user": "{id}" } } },
            },
            { "path": "/old/{*rest}", "rewrite": { "match": "^/old/(.*)$", "to": "/new/$1?from=old" } },
            { "method": "GET", "path": "/submit", "upstream_method": "POST" },
        ],
    }));
    let gw = Gateway::start(ConfigDir::single(&api));

    let (status, headers, seen) = get_with(
        &gw.url("/tx/users/42"),
        &[("x-internal", "secret"), ("x-request-id", "req-7")],
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["path"], "/v2/accounts/42");
    assert_eq!(seen["headers"]["x-gateway"], json!(["portcullis"]));
    assert_eq!(seen["headers"]["x-request"], json!(["req-7"]));
    assert_eq!(seen["headers"]["x-user"], json!(["user-42"]));
    assert!(seen["headers"].get("x-internal").is_none(), "{seen}");
    assert_eq!(headers["x-served-by"], "tx");
    assert_eq!(headers["x-user"], "42");

    let (status, _, seen) = get_json(&gw.url("/tx/old/a/b?keep=1")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (seen["path"].as_str(), seen["query"].as_str()),
        (Some("/new/a/b"), Some("from=old"))
    );

    let (status, _, seen) = get_json(&gw.url("/tx/submit")).await;
    assert_eq!(status, 200);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/submit");

    // A placeholder that names no parameter is refused at load.
    let bad = ConfigDir::single(&yaml(json!({
        "id": "tx", "listen_path": "/tx/", "upstream": echo,
        "endpoints": [{ "path": "/users/{id}", "rewrite": "/v2/{user}" }],
    })));
    let output = validate(&bad);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("endpoints[0].rewrite") && stderr.contains("unknown placeholder {user}"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn static_responses_denied_paths_and_allow_lists() {
    let (app, hits) = upstreams::counter();
    let counter = upstream(app).await;
    let api = yaml(json!({
        "id": "m", "listen_path": "/m/", "upstream": counter, "unmatched": "reject",
        "endpoints": [
            { "method": "GET", "path": "/status", "respond": { "status": 200, "headers": { "content-type": "application/json" }, "body": "{\"up\": true}" } },
            { "path": "/admin/{*rest}", "deny": true },
            { "method": "GET", "path": "/orders", "headers": { "response": { "set": { "x-listed": "yes" } } } },
        ],
    }));
    let gw = Gateway::start(ConfigDir::single(&api));
    let response = client().get(gw.url("/m/status")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.expect("body"), "{\"up\": true}");

    let (status, _, body) = get_json(&gw.url("/m/admin/users")).await;
    assert_gateway_error(status, &body, 403, "this endpoint is forbidden");
    // The canonical path decides: an encoded or dotted spelling of a denied
    // path is the denied path.
    for spelling in ["/m/%61dmin/users", "/m/orders/../admin/users", "/m//admin/users"] {
        let (status, _, body) = get_json(&gw.url(spelling)).await;
        assert_eq!(status, 403, "{spelling}: {body}");
    }
    let (status, headers, _) = get_json(&gw.url("/m/orders")).await;
    assert_eq!((status, headers["x-listed"].to_str().ok()), (200, Some("yes")));
    let (status, _, _) = get_json(&gw.url("/m/other")).await;
    assert_eq!(status, 404, "only the listed paths are served");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only /orders reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_timeouts_size_limits_and_auth_skips() {
    let slow = upstream(upstreams::hang()).await;
    let api = yaml(json!({
        "id": "e", "listen_path": "/e/", "upstream": slow,
        "auth": { "type": "api_key" },
        "upstream_timeout_ms": 30000,
        "endpoints": [
            { "path": "/quick", "upstream_timeout_ms": 200, "skip_auth": true },
            { "method": "POST", "path": "/upload", "max_request_body_bytes": 8, "skip_auth": true },
        ],
    }));
    let gw = Gateway::start(ConfigDir::single(&api));
    let (status, _, body) = get_json(&gw.url("/e/quick")).await;
    assert_gateway_error(status, &body, 504, "upstream timed out");
    let (status, _, body) = get_json(&gw.url("/e/other")).await;
    assert_gateway_error(status, &body, 401, "missing API key");
    let response = client()
        .post(gw.url("/e/upload"))
        .body("more than eight bytes")
        .send()
        .await
        .expect("request");
    let (status, _, body) = json_of(response).await;
    assert_gateway_error(status, &body, 413, "request body too large");
}
