//! The admin listener's probes: `GET /health` and Prometheus `GET /metrics`,
//! both without the admin secret, with counters that follow the traffic and
//! survive reloads.

use serde_json::{Value, json};

use crate::support::{ConfigDir, Gateway, Wasm, admin_post, client, closed_port, get_json, plugin, scrape};

const SECRET: &str = "admin-secret-for-tests";

fn api() -> String {
    format!(
        "id: m\nlisten_path: /m/\nstrip_listen_path: true\nupstream: http://{dead}\nendpoints:\n  - method: GET\n    path: /hello/{{name}}\n    plugin: {{ path: {hello}, function: hello }}\n  - method: GET\n    path: /fail\n    plugin: {{ path: {probe}, function: fail }}\n",
        dead = closed_port(),
        hello = plugin(Wasm::Hello).display(),
        probe = plugin(Wasm::Probe).display(),
    )
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

#[tokio::test]
async fn metrics_count_requests_plugin_calls_failures_and_reloads() {
    let gateway_yaml = format!("apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n");
    // A second API with the same plugin file: its series stay apart.
    let twin = api().replace("id: m\nlisten_path: /m/", "id: n\nlisten_path: /n/");
    let gw = Gateway::start(ConfigDir::new(&gateway_yaml, &[("m.yaml", &api()), ("n.yaml", &twin)]));
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    for _ in 0..2 {
        assert_eq!(get_json(&gw.url("/m/hello/ada")).await.0, 200);
    }
    assert_eq!(get_json(&gw.url("/n/hello/ada")).await.0, 200);
    assert_eq!(get_json(&gw.url("/m/fail")).await.0, 500);
    assert_eq!(get_json(&gw.url("/nowhere")).await.0, 404);

    let (status, body) = admin_post(&gw.admin("/reload"), SECRET, json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Counters carry on across a reload: the new configuration reports into
    // the same series.
    assert_eq!(get_json(&gw.url("/m/hello/bob")).await.0, 200);
    gw.config.write_api("broken.yaml", "id: [not a string\n");
    let (status, body) = admin_post(&gw.admin("/reload"), SECRET, json!({})).await;
    assert_eq!(status, 422, "{body}");

    let text = scrape(&gw).await;
    for (series, expected) in [
        (r#"portcullis_http_requests_total{api="m",code="200"}"#, 3.0),
        (r#"portcullis_http_requests_total{api="m",code="500"}"#, 1.0),
        (r#"portcullis_http_requests_total{api="",code="404"}"#, 1.0),
        (r#"portcullis_http_request_duration_seconds_count{api="m"}"#, 4.0),
        // Each failure once, by whose fault it was.
        (r#"portcullis_http_request_failures_total{api="m",blame="plugin"}"#, 1.0),
        (r#"portcullis_http_request_failures_total{api="",blame="client"}"#, 1.0),
        (
            r#"portcullis_plugin_calls_total{api="m",plugin="hello.wasm#hello"}"#,
            3.0,
        ),
        (
            r#"portcullis_plugin_calls_total{api="n",plugin="hello.wasm#hello"}"#,
            1.0,
        ),
        (
            r#"portcullis_plugin_calls_total{api="m",plugin="probe.wasm#fail"}"#,
            1.0,
        ),
        (
            r#"portcullis_plugin_failures_total{api="m",plugin="probe.wasm#fail",reason="error_returned"}"#,
            1.0,
        ),
        (r#"portcullis_config_reloads_total{result="ok"}"#, 1.0),
        (r#"portcullis_config_reloads_total{result="error"}"#, 1.0),
        ("portcullis_plugin_instances_in_use", 0.0),
        ("portcullis_plugin_instance_pool_size", 1000.0),
        // The scrape is on the admin listener: nothing public in flight.
        ("portcullis_http_requests_in_flight", 0.0),
        (r#"portcullis_build_info{version="0.1.0"}"#, 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(expected), "{series} in:\n{text}");
    }
    assert!(
        !text.contains(r#"plugin="hello.wasm#hello",reason"#),
        "no failures for the healthy plugin:\n{text}"
    );
    // The time of the good reload, not of the failed one after it.
    let loaded = sample(&text, "portcullis_config_last_reload_success_timestamp_seconds").expect("reload time");
    assert!(
        loaded >= started.floor() && loaded < started + 60.0,
        "{loaded} vs {started}"
    );
}

#[tokio::test]
async fn health_answers_without_the_secret_and_the_rest_still_needs_it() {
    let gateway_yaml = format!("apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n");
    let gw = Gateway::start(ConfigDir::new(&gateway_yaml, &[("m.yaml", &api())]));
    let response = client().get(gw.admin("/health")).send().await.expect("health");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!((&body["status"], &body["apis"]), (&json!("ok"), &json!(1)), "{body}");
    assert!(body["node"].as_str().is_some_and(|n| !n.is_empty()), "{body}");
    assert!(body["config"]["hash"].as_str().is_some_and(|h| h.len() == 64), "{body}");
    assert_eq!(body["last_reload"], Value::Null, "no reload yet: {body}");
    let response = client().get(gw.admin("/apis")).send().await.expect("apis");
    assert_eq!(response.status(), 401);
}
