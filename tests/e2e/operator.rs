//! What an operator runs the gateway with every day: probes an
//! orchestrator can use, JSON logs, an access log logrotate can rotate,
//! the metrics alerts are written on, secrets from the environment,
//! durations and sizes with units, reloads that say what they could not
//! apply, and a command line with distinct exit codes.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    ConfigDir, Gateway, Wasm, admin_post, client, eventually, get_json, plugin, scrape, upstream, upstreams,
};

const SECRET: &str = "admin-secret-for-tests";

fn admin_yaml(extra: &str) -> String {
    format!("apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n{extra}")
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().expect("a number"))
}

fn portcullis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .expect("run portcullis")
}

/// Writes `bytes` to the gateway at `url` and reads until it closes (10 s
/// at most).
fn raw_exchange(url: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// An upstream that answers after `delay`.
async fn slow(delay: Duration) -> String {
    upstream(axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        "slow"
    }))
    .await
}

#[tokio::test]
async fn readyz_says_why_a_node_should_get_no_traffic_and_livez_only_that_it_serves() {
    // A keyed API whose Redis is not there: the node serves (live), but
    // must not get traffic (not ready), and says which API needs what.
    let echo = upstream(upstreams::echo("echo")).await;
    let gateway_yaml = admin_yaml("session_store: redis://127.0.0.1:1\n");
    let api = format!("id: keyed\nlisten_path: /k/\nupstream: {echo}\nauth: {{ type: api_key }}\n");
    let gw = Gateway::start(ConfigDir::new(&gateway_yaml, &[("k.yaml", &api)]));
    let (status, _, body) = get_json(&gw.admin("/livez")).await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    let (status, _, body) = get_json(&gw.admin("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("session store unreachable") && reason.contains("keyed"),
        "{body}"
    );
    assert_eq!(body["checks"]["session_store"]["ok"], false, "{body}");
    assert_eq!(body["checks"]["config"]["ok"], true, "{body}");
    // /health stays what it was, for the scripts that use it.
    assert_eq!(get_json(&gw.admin("/health")).await.0, 200);
    // The store's failures are counted by operation.
    let (status, _, _) = crate::support::get_with(&gw.url("/k/x"), &[("authorization", "some-key")]).await;
    assert_eq!(status, 503);
    let text = scrape(&gw).await;
    assert!(
        sample(&text, r#"portcullis_session_store_errors_total{operation="get"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_node_shutting_down_is_not_ready_while_its_requests_finish() {
    let slow = slow(Duration::from_secs(3)).await;
    let api = format!("id: s\nlisten_path: /s/\nupstream: {slow}\n");
    let gw = Gateway::start(ConfigDir::new(&admin_yaml(""), &[("s.yaml", &api)]));
    let (status, _, body) = get_json(&gw.admin("/readyz")).await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")), "{body}");
    assert!(
        body["checks"]["session_store"].is_null(),
        "no API needs the store: {body}"
    );

    let url = gw.url("/s/wait");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    eventually("the request is in flight", || async {
        sample(&scrape(&gw).await, "portcullis_http_requests_in_flight") == Some(1.0)
    })
    .await;
    gw.signal("TERM");
    eventually("readyz says the node is shutting down", || async {
        match client().get(gw.admin("/readyz")).send().await {
            Ok(response) if response.status() == 503 => {
                let body: Value = response.json().await.unwrap_or_default();
                body["reason"].as_str().is_some_and(|r| r.contains("shutting down"))
            }
            _ => false,
        }
    })
    .await;
    assert_eq!(in_flight.await.expect("task").expect("the request finished"), 200);
}

#[tokio::test]
async fn json_logs_carry_the_request_and_trace_ids_on_request_lines() {
    let api = "id: j\nlisten_path: /j/\nupstream: http://127.0.0.1:1\n";
    let gw = Gateway::start_with_env(
        ConfigDir::single(api),
        &[],
        &[("PORTCULLIS_LOG_FORMAT", "json"), ("PORTCULLIS_LOG", "info")],
    );
    let (status, _, _) = crate::support::get_with(
        &gw.url("/j/x"),
        &[
            ("x-request-id", "req-json-1"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ],
    )
    .await;
    assert_eq!(status, 502);
    let log = gw.wait_for_log("request failed");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["message"] == "request failed")
        .expect("the failure's line");
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert_eq!(failed["span"]["request_id"], "req-json-1", "{failed}");
    assert_eq!(
        failed["span"]["trace_id"], "0af7651916cd43dd8448eb211c80319c",
        "{failed}"
    );
    // Lines outside any request have no span.
    let listening = lines
        .iter()
        .find(|l| l["message"] == "listening")
        .expect("the listening line");
    assert!(listening["span"].is_null(), "{listening}");

    // A value that is not a format is refused before anything starts.
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["validate", "--config", "gateway.yaml"])
        .env("PORTCULLIS_LOG_FORMAT", "xml")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("PORTCULLIS_LOG_FORMAT"));
}

#[tokio::test]
async fn sigusr1_reopens_the_access_log_for_logrotate() {
    let echo = upstream(upstreams::echo("echo")).await;
    let config = ConfigDir::new(
        "apis: [apis/]\naccess_log: { path: access.log }\n",
        &[("a.yaml", &format!("id: a\nlisten_path: /a/\nupstream: {echo}\n"))],
    );
    let log = config.dir.path().join("access.log");
    let rotated = config.dir.path().join("access.log.1");
    let gw = Gateway::start(config);
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(get_json(&gw.url("/a/before")).await.0, 200);
    eventually("the first line", || async { read(&log).contains("/a/before") }).await;
    // logrotate's `create` mode: move the file away, then signal.
    std::fs::rename(&log, &rotated).expect("rotate");
    gw.signal("USR1");
    gw.wait_for_log("SIGUSR1: reopening");
    assert_eq!(get_json(&gw.url("/a/after")).await.0, 200);
    eventually("the line in a new file", || async { read(&log).contains("/a/after") }).await;
    assert!(!read(&rotated).contains("/a/after"), "{}", read(&rotated));
    assert!(read(&rotated).contains("/a/before"));
}

#[tokio::test]
async fn metrics_count_refusals_by_limit_outbound_calls_and_store_operations() {
    let echo = upstream(upstreams::echo("echo")).await;
    let users = upstream(upstreams::records("users-service")).await;
    let limited = format!("id: r\nlisten_path: /r/\nupstream: {echo}\nrate_limit: {{ rate: 1, per: 60, by: api }}\n");
    // Port 1: refused whatever else the tests bind meanwhile (a port
    // closed_port() found free could be taken again by another test).
    let dead = "127.0.0.1:1";
    let aggregate = format!(
        "id: agg\nlisten_path: /agg/\nstrip_listen_path: true\nupstream: {echo}\noutbound:\n  allow: ['{users_host}', '{dead}']\nendpoints:\n  - method: GET\n    path: /summary/{{id}}\n    plugin:\n      path: {wasm}\n      function: merge\n      config:\n        services:\n          user: '{users}/users/{{id}}'\n          down: 'http://{dead}/x'\n          elsewhere: 'http://example.invalid/x'\n",
        users_host = users.trim_start_matches("http://"),
        wasm = plugin(Wasm::Aggregate).display(),
    );
    let gw = Gateway::start(ConfigDir::new(
        &admin_yaml(""),
        &[("r.yaml", &limited), ("agg.yaml", &aggregate)],
    ));
    assert_eq!(get_json(&gw.url("/r/1")).await.0, 200);
    assert_eq!(get_json(&gw.url("/r/2")).await.0, 429);
    assert_eq!(get_json(&gw.url("/agg/summary/7")).await.0, 200);
    let text = scrape(&gw).await;
    for (series, expected) in [
        (r#"portcullis_rate_limited_total{api="r",limit="rate"}"#, 1.0),
        (
            r#"portcullis_plugin_outbound_calls_total{api="agg",plugin="aggregate.wasm#merge",result="ok"}"#,
            1.0,
        ),
        (
            r#"portcullis_plugin_outbound_calls_total{api="agg",plugin="aggregate.wasm#merge",result="connect_error"}"#,
            1.0,
        ),
        (
            r#"portcullis_plugin_outbound_calls_total{api="agg",plugin="aggregate.wasm#merge",result="not_allowed"}"#,
            1.0,
        ),
        (
            r#"portcullis_plugin_outbound_call_duration_seconds_count{api="agg",plugin="aggregate.wasm#merge"}"#,
            3.0,
        ),
        // One counter update per request of the limited API.
        (
            r#"portcullis_session_store_operation_duration_seconds_count{operation="acquire"}"#,
            2.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(expected), "{series} in:\n{text}");
    }
    assert!(
        !text.contains("session_store_errors_total{"),
        "no store errors:\n{text}"
    );
}

#[tokio::test]
async fn secrets_come_from_the_environment_and_durations_and_sizes_take_units() {
    let slow = slow(Duration::from_secs(5)).await;
    let echo = upstream(upstreams::echo("echo")).await;
    let store = tempfile::tempdir().expect("tempdir");
    let store_file = store.path().join("sessions.redb");
    let api = format!(
        "id: u\nlisten_path: /u/\nupstream: {slow}\nupstream_timeout_ms: 300ms\nmax_request_body_bytes: 1KiB\nendpoints:\n  - method: POST\n    path: /small\n    respond: {{ status: 200, body: ok }}\n"
    );
    let default_limit = format!("id: d\nlisten_path: /d/\nupstream: {echo}\n");
    let gateway_yaml = admin_yaml("session_store: env:PORTCULLIS_TEST_STORE\nupstream_read_timeout_ms: 2s\n");
    let gw = Gateway::start_with_env(
        ConfigDir::new(&gateway_yaml, &[("u.yaml", &api), ("d.yaml", &default_limit)]),
        &[],
        &[("PORTCULLIS_TEST_STORE", store_file.to_str().expect("utf-8"))],
    );
    // 300ms: the slow upstream's 5 s answer is a 504.
    assert_eq!(get_json(&gw.url("/u/slow")).await.0, 504);
    let post = |path: &str, len: usize| client().post(gw.url(path)).body(vec![b'x'; len]).send();
    assert_eq!(post("/u/small", 1024).await.expect("post").status(), 200);
    assert_eq!(post("/u/small", 1025).await.expect("post").status(), 413);
    // Without a limit of its own an API has the 16 MiB default.
    assert_eq!(post("/d/x", 1 << 20).await.expect("post").status(), 200);
    // Declared over it: refused before a byte of the body is read (sent
    // raw, so no client is left writing the body into a closed socket).
    let head = format!(
        "POST /d/x HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        (16 << 20) + 1
    );
    let answer = raw_exchange(&gw.url(""), head.as_bytes());
    let responses = crate::support::wire::split_responses(&answer);
    assert_eq!(
        responses.first().map(|r| r.status),
        Some(413),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The store is where the environment said.
    let (status, key) = admin_post(&gw.admin("/keys"), SECRET, json!({ "apis": ["u"] })).await;
    assert_eq!(status, 201, "{key}");
    assert!(store_file.is_file(), "the store named by PORTCULLIS_TEST_STORE");

    // A unit that is not one, and a variable that is not set, are load
    // errors that say where.
    for (extra, expected) in [
        ("upstream_timeout_ms: 5 parsecs\n", "upstream_timeout_ms"),
        ("max_request_body_bytes: 16mb\n", "invalid size \"16mb\""),
        (
            "session_store: env:PORTCULLIS_NOT_SET_ANYWHERE\n",
            "PORTCULLIS_NOT_SET_ANYWHERE is not set",
        ),
    ] {
        let config = ConfigDir::new(&format!("apis: [apis/]\n{extra}"), &[("d.yaml", &default_limit)]);
        let output = crate::support::validate(&config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{extra}: {stderr}");
        assert!(
            stderr.contains("gateway.yaml") && stderr.contains(expected),
            "{extra}: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_reload_names_the_settings_only_a_restart_applies() {
    let echo = upstream(upstreams::echo("echo")).await;
    let api = format!("id: a\nlisten_path: /a/\nupstream: {echo}\n");
    let gw = Gateway::start(ConfigDir::new(&admin_yaml(""), &[("a.yaml", &api)]));
    let (status, body) = admin_post(&gw.admin("/reload"), SECRET, json!({})).await;
    assert_eq!((status, &body["restart_required"]), (200, &Value::Null), "{body}");
    let file = gw.config.gateway_file();
    let text = std::fs::read_to_string(&file).expect("gateway.yaml");
    std::fs::write(
        &file,
        format!("{text}max_outbound_in_flight: 7\nplugin_limits: {{ pool_size: 9 }}\n"),
    )
    .expect("write");
    gw.config
        .write_api("b.yaml", &format!("id: b\nlisten_path: /b/\nupstream: {echo}\n"));
    let (status, body) = admin_post(&gw.admin("/reload"), SECRET, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["restart_required"],
        json!(["plugin_limits.pool_size", "max_outbound_in_flight"]),
        "{body}"
    );
    gw.wait_for_log("take effect at the next restart");
    // The rest of the reload applied.
    assert_eq!(get_json(&gw.url("/b/x")).await.0, 200);
}

#[tokio::test]
async fn the_command_line_has_exit_codes_for_usage_configuration_and_failure() {
    let echo = upstream(upstreams::echo("echo")).await;
    let good = ConfigDir::single(&format!("id: a\nlisten_path: /a/\nupstream: {echo}\n"));
    let good_file = good.gateway_file().display().to_string();
    let bad = ConfigDir::single("id: [broken\n");
    let bad_file = bad.gateway_file().display().to_string();
    let code = |args: &[&str]| portcullis(args).status.code();
    assert_eq!(code(&["validate", "--config", &good_file]), Some(0));
    // Usage: an unknown command, a worker count out of range.
    assert_eq!(code(&["frobnicate"]), Some(2));
    assert_eq!(code(&["serve", "--config", &good_file, "--workers", "0"]), Some(2));
    assert_eq!(code(&["serve", "--config", &good_file, "--workers", "5000"]), Some(2));
    // Configuration: nothing served.
    assert_eq!(code(&["validate", "--config", &bad_file]), Some(3));
    assert_eq!(
        code(&["serve", "--config", &bad_file, "--listen", "127.0.0.1:0"]),
        Some(3)
    );
    // Run time: an address already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr").to_string();
    assert_eq!(code(&["serve", "--config", &good_file, "--listen", &address]), Some(1));

    // Completions for the shells, from the same definition.
    let output = portcullis(&["completions", "bash"]);
    assert!(output.status.success());
    let script = String::from_utf8_lossy(&output.stdout);
    assert!(
        script.contains("_portcullis") && script.contains("--log-format"),
        "{script}"
    );

    // `--allow` takes one value (repeat it, or use commas), so it cannot
    // swallow the positional arguments after it; `--config` still names
    // the plugin's config for `plugin call`, as `--plugin-config`.
    let hello = plugin(Wasm::Hello).display().to_string();
    for args in [
        vec!["plugin", "call", "--allow", "a.test,b.test", &hello, "hello"],
        vec![
            "plugin", "call", "--allow", "a.test", "--allow", "b.test", &hello, "hello",
        ],
        vec!["plugin", "call", &hello, "hello", "--config", "{}"],
        vec!["plugin", "call", &hello, "hello", "--plugin-config", "{}"],
    ] {
        let output = portcullis(&args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let help = portcullis(&["plugin", "call", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("<FILE>") && help.contains("The `.wasm` component"),
        "{help}"
    );
}
