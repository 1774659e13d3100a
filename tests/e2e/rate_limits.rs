//! Limits on keyless traffic: `rate_limit` on an API and on an endpoint,
//! by client IP, by header or for the whole API; 429 with `Retry-After`
//! and the `X-RateLimit-*` headers; refused requests are not counted. (Two
//! nodes sharing one limit through Redis: `cluster.rs`.)

use std::net::{IpAddr, Ipv4Addr};

use reqwest::header::HeaderMap;

use crate::support::{ConfigDir, Gateway, assert_gateway_error, json_of, upstream, upstreams, validate};

/// GET `url` from the loopback address `from`, with `headers`.
async fn get_from(from: Ipv4Addr, url: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, serde_json::Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(from))
        .build()
        .expect("client");
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    json_of(request.send().await.expect("request")).await
}

/// `X-RateLimit-Limit` and `X-RateLimit-Remaining`.
fn limit_and_remaining(headers: &HeaderMap) -> (u32, u32) {
    let number = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} in {headers:?}"))
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("a number")
    };
    (number("x-ratelimit-limit"), number("x-ratelimit-remaining"))
}

/// `Retry-After` of a refused request: whole seconds, within the window.
fn assert_retry_after(headers: &HeaderMap, window: u64) {
    let seconds: u64 = headers["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!(
        (1..=window).contains(&seconds),
        "Retry-After {seconds} within {window} s"
    );
}

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test(flavor = "multi_thread")]
async fn api_and_endpoint_limits_by_client_ip_and_for_everyone() {
    let (app, hits) = upstreams::counter();
    let counter = upstream(app).await;
    // Three per minute per client on the API; one per minute for everyone
    // together on the login endpoint, which has no plugin.
    let api = format!(
        "id: open\nlisten_path: /open/\nupstream: {counter}\nrate_limit: {{ rate: 3, per: 60, by: client_ip }}\nendpoints:\n  - method: POST\n    path: /login\n    rate_limit: {{ rate: 1, per: 60, by: api }}\n  - method: GET\n    path: /login\n    rate_limit: {{ rate: 1, per: 60, by: api }}\n"
    );
    let gw = Gateway::start(ConfigDir::single(&api));
    let (login, other) = (gw.url("/open/login"), gw.url("/open/other"));

    let (status, headers, _) = get_from(A, &login, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        limit_and_remaining(&headers),
        (1, 0),
        "the endpoint's limit is the one reported"
    );

    let (status, headers, body) = get_from(A, &login, &[]).await;
    assert_gateway_error(status, &body, 429, "rate limit exceeded");
    assert_eq!(limit_and_remaining(&headers), (1, 0));
    assert_retry_after(&headers, 60);

    // The refused request did not use the API's allowance: two are left.
    let (status, headers, _) = get_from(A, &other, &[]).await;
    assert_eq!((status, limit_and_remaining(&headers)), (200, (3, 1)));
    let (status, headers, _) = get_from(A, &other, &[]).await;
    assert_eq!((status, limit_and_remaining(&headers)), (200, (3, 0)));
    let (status, headers, _) = get_from(A, &other, &[]).await;
    assert_eq!((status, limit_and_remaining(&headers)), (429, (3, 0)));
    assert_retry_after(&headers, 60);

    // Another client has its own allowance on the API, but shares the
    // login endpoint's.
    let (status, headers, _) = get_from(B, &other, &[]).await;
    assert_eq!((status, limit_and_remaining(&headers)), (200, (3, 2)));
    assert_eq!(get_from(B, &login, &[]).await.0, 429);

    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "refused requests never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_by_header_gives_each_value_its_own_bucket_and_a_reload_applies_a_new_rate() {
    let echo = upstream(upstreams::echo("up")).await;
    let api = |rate: u32| {
        format!(
            "id: h\nlisten_path: /h/\nupstream: {echo}\nrate_limit: {{ rate: {rate}, per: 60, by: 'header:X-Client-Id' }}\n"
        )
    };
    let gw = Gateway::start(ConfigDir::single(&api(2)));
    let url = gw.url("/h/x");
    let statuses = async |headers: &[(&str, &str)], n: usize| {
        let mut statuses = Vec::new();
        for _ in 0..n {
            statuses.push(get_from(A, &url, headers).await.0);
        }
        statuses
    };
    assert_eq!(statuses(&[("x-client-id", "alpha")], 3).await, [200, 200, 429]);
    assert_eq!(statuses(&[("x-client-id", "beta")], 1).await, [200], "its own bucket");
    // Callers without the header share one bucket.
    assert_eq!(statuses(&[], 3).await, [200, 200, 429]);

    // A reload with another rate starts fresh windows.
    gw.config.write_api("api.yaml", &api(3));
    gw.reload();
    gw.wait_for_log("configuration reloaded");
    assert_eq!(statuses(&[("x-client-id", "alpha")], 4).await, [200, 200, 200, 429]);
}

#[test]
fn bad_rate_limits_are_refused_with_file_line_and_field() {
    let cases = [
        (
            "rate_limit: { rate: 5, per: 1, by: cookie }\n",
            "apis/api.yaml:4:",
            "unknown rate_limit.by \"cookie\": expected client_ip, header:NAME or api",
        ),
        ("rate_limit: { rate: 0, per: 1 }\n", "apis/api.yaml:4:", "rate"),
        (
            "rate_limit: { rate: 5, per: 1, by: 'header:bad name' }\n",
            "apis/api.yaml:4:",
            "invalid header name",
        ),
        (
            "endpoints:\n  - path: /x\n",
            "apis/api.yaml",
            "endpoints[0]: an endpoint needs something to do",
        ),
    ];
    for (yaml, place, message) in cases {
        let config = ConfigDir::single(&format!(
            "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:9\n{yaml}"
        ));
        let output = validate(&config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{yaml} is refused");
        assert!(stderr.contains(place), "{yaml}: {place} in {stderr}");
        assert!(stderr.contains(message), "{yaml}: {message} in {stderr}");
    }
}
