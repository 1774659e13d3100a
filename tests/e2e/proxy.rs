//! Proxying without plugins: what reaches the upstream, what comes back, and
//! the gateway's own errors (404, 502, 504).

use serde_json::Value;

use crate::support::{ConfigDir, Gateway, assert_gateway_error, client, closed_port, get_json, upstream, upstreams};

fn api(id: &str, listen_path: &str, upstream: &str, strip: bool) -> String {
    format!("id: {id}\nlisten_path: {listen_path}\nstrip_listen_path: {strip}\nupstream: {upstream}\n")
}

#[tokio::test]
async fn forwards_method_path_query_headers_and_body() {
    let echo = upstream(upstreams::echo("orders")).await;
    let gw = Gateway::start(ConfigDir::single(&api("orders", "/orders/", &echo, true)));

    let response = client()
        .post(gw.url("/orders/items/7?color=red&size=9"))
        .header("x-custom", "one")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "10.1.2.3")
        .body("hello upstream")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().expect("ascii").to_owned();
    let seen: Value = response.json().await.expect("json");

    assert_eq!(seen["upstream"], "orders");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/items/7", "listen path stripped");
    assert_eq!(seen["query"], "color=red&size=9");
    assert_eq!(seen["body"], "hello upstream");
    let headers = &seen["headers"];
    assert_eq!(headers["x-custom"][0], "one");
    assert!(
        headers.get("x-hop").is_none(),
        "header named by Connection removed: {headers}"
    );
    assert!(headers.get("keep-alive").is_none(), "hop-by-hop removed: {headers}");
    assert_eq!(headers["x-forwarded-for"][0], "10.1.2.3, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    assert_eq!(headers["x-forwarded-host"][0], gw.url.trim_start_matches("http://"));
    assert_eq!(headers["x-request-id"][0], request_id.as_str());
    assert_eq!(
        headers["host"][0],
        echo.trim_start_matches("http://"),
        "Host is the upstream's"
    );
}

#[tokio::test]
async fn keeps_listen_path_unless_stripped_and_appends_upstream_base_path() {
    let echo = upstream(upstreams::echo("svc")).await;
    let config = ConfigDir::new(
        "apis: [apis/*.yaml]\n",
        &[
            ("kept.yaml", &api("kept", "/kept/", &echo, false)),
            ("based.yaml", &api("based", "/based", &format!("{echo}/v2/"), true)),
        ],
    );
    let gw = Gateway::start(config);
    let (_, _, seen) = get_json(&gw.url("/kept/a/b")).await;
    assert_eq!(seen["path"], "/kept/a/b");
    let (_, _, seen) = get_json(&gw.url("/based/a")).await;
    assert_eq!(seen["path"], "/v2/a");
    let (_, _, seen) = get_json(&gw.url("/based")).await;
    assert_eq!(seen["path"], "/v2/", "the bare listen path maps to the upstream root");
    let (status, _, body) = get_json(&gw.url("/basedx")).await;
    assert_gateway_error(status, &body, 404, "no API matches this path");
}

#[tokio::test]
async fn longest_listen_path_wins() {
    let outer = upstream(upstreams::echo("outer")).await;
    let inner = upstream(upstreams::echo("inner")).await;
    let config = ConfigDir::new(
        "apis: [apis/]\n",
        &[
            ("a.yaml", &api("outer", "/shop/", &outer, false)),
            ("b.yaml", &api("inner", "/shop/admin/", &inner, false)),
        ],
    );
    let gw = Gateway::start(config);
    let (_, _, seen) = get_json(&gw.url("/shop/admin/users")).await;
    assert_eq!(seen["upstream"], "inner");
    let (_, _, seen) = get_json(&gw.url("/shop/administrator")).await;
    assert_eq!(seen["upstream"], "outer", "prefix match is by path segment");
    let (_, _, seen) = get_json(&gw.url("/shop/")).await;
    assert_eq!(seen["upstream"], "outer");
}

#[tokio::test]
async fn unknown_path_is_a_json_404() {
    let echo = upstream(upstreams::echo("orders")).await;
    let gw = Gateway::start(ConfigDir::single(&api("orders", "/orders/", &echo, true)));
    let (status, headers, body) = get_json(&gw.url("/nothing/here")).await;
    assert_gateway_error(status, &body, 404, "no API matches this path");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers["x-request-id"].to_str().expect("ascii"),
        body["request_id"].as_str().expect("id")
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502_without_details() {
    let dead = format!("http://{}", closed_port());
    let gw = Gateway::start(ConfigDir::single(&api("dead", "/dead/", &dead, true)));
    let (status, _, body) = get_json(&gw.url("/dead/x")).await;
    assert_gateway_error(status, &body, 502, "upstream unavailable");
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no address leaks to the client: {body}"
    );
    gw.wait_for_log("cannot connect to upstream");
}

#[tokio::test]
async fn slow_upstream_is_504_after_the_configured_timeout() {
    // The upstream never answers: a 504 at all is the configured timeout.
    let slow = upstream(upstreams::hang()).await;
    let text = format!("{}upstream_timeout_ms: 300\n", api("slow", "/slow/", &slow, true));
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, _, body) = get_json(&gw.url("/slow/x")).await;
    assert_gateway_error(status, &body, 504, "upstream timed out");
}

#[tokio::test]
async fn large_bodies_stream_through_both_ways() {
    let mirror = upstream(upstreams::mirror()).await;
    let gw = Gateway::start(ConfigDir::single(&api("mirror", "/m/", &mirror, true)));
    // Eight times the default plugin body limit: nothing on this path buffers.
    let body: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let response = client()
        .put(gw.url("/m/blob"))
        .body(body.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let back = response.bytes().await.expect("body");
    assert_eq!(back.len(), body.len());
    assert!(back == body, "body came back unchanged");
}

#[tokio::test]
async fn upstream_status_and_headers_pass_through() {
    let teapot = upstream(upstreams::status(418)).await;
    let gw = Gateway::start(ConfigDir::single(&api("tea", "/tea/", &teapot, true)));
    let (status, headers, body) = get_json(&gw.url("/tea/pot")).await;
    assert_eq!(status, 418);
    assert_eq!(body["status"], 418);
    assert_eq!(headers["content-type"], "application/json");
}
