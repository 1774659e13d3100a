//! The sandbox under attack: each hostile plugin function tries one thing,
//! and the gateway must contain it to that request, answer the documented
//! status with a JSON error, log the plugin, keep serving other requests
//! while the attack runs, and serve the same endpoint again afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ConfigDir, Gateway, Wasm, assert_gateway_error, client, get_json, plugin, upstream, upstreams};

/// Limits for these tests: small, so attacks end quickly.
const GATEWAY: &str = "apis: [apis/]\nplugin_limits: { cpu_ms: 200, timeout_ms: 1500, memory_mb: 32, max_outbound_calls: 5, max_body_bytes: 1048576 }\n";

const ATTACKS: [&str; 13] = [
    "spin",
    "memory-bomb",
    "recursion",
    "panic",
    "huge-body",
    "bad-status",
    "bad-header",
    "read-file",
    "read-env",
    "open-socket",
    "outbound-forbidden",
    "outbound-flood",
    "outbound-slow",
];

struct Arena {
    gw: Gateway,
    /// Allowed outbound target that counts its requests.
    counter_url: String,
    counter_hits: Arc<AtomicUsize>,
    /// Allowed outbound target that never answers.
    slow_url: String,
}

async fn arena(gateway_yaml: &str) -> Arena {
    let echo = upstream(upstreams::echo("up")).await;
    let (counter, counter_hits) = upstreams::counter();
    let counter_url = upstream(counter).await;
    let slow_url = upstream(upstreams::hang()).await;
    let hostile = plugin(Wasm::Hostile);
    let hello = plugin(Wasm::Hello);
    let mut api = format!(
        "id: arena\nlisten_path: /a/\nstrip_listen_path: true\nupstream: {echo}\noutbound:\n  allow: ['{}', '{}']\n  timeout_ms: 60000\nendpoints:\n  - path: /good/{{name}}\n    plugin: {{ path: {}, function: hello }}\n",
        counter_url.trim_start_matches("http://"),
        slow_url.trim_start_matches("http://"),
        hello.display(),
    );
    for attack in ATTACKS {
        // The budget an attack is meant to hit stays small; every other
        // budget is far above what the attack needs, so a busy machine
        // cannot turn, say, a memory bomb into a CPU timeout.
        let limits = match attack {
            "spin" | "outbound-slow" => "",
            _ => ", limits: { cpu_ms: 10000, timeout_ms: 20000 }",
        };
        api.push_str(&format!(
            "  - path: /{attack}\n    plugin: {{ path: {}, function: {attack}{limits} }}\n",
            hostile.display()
        ));
    }
    api.push_str(&format!(
        "  - path: /fallback\n    plugin:\n      path: {}\n      function: panic\n      fallback: {{ status: 503, headers: {{ retry-after: '5' }}, body: 'try later' }}\n",
        hostile.display()
    ));
    let gw = Gateway::start(ConfigDir::new(gateway_yaml, &[("arena.yaml", &api)]));
    Arena {
        gw,
        counter_url,
        counter_hits,
        slow_url,
    }
}

/// Runs `attack` three times concurrently while 20 normal requests go to
/// another endpoint; checks every attack answer and every normal one, the
/// log, and that the attacked endpoint serves benign input afterwards.
async fn contain(arena: &Arena, attack: &str, query: &str, status: u16, message: &str, logged: &str) {
    let url = arena.gw.url(&format!("/a/{attack}?{query}"));
    let attacks: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get_json(&url).await })
        })
        .collect();
    for i in 0..20 {
        let (ok, _, body) = get_json(&arena.gw.url(&format!("/a/good/n{i}"))).await;
        assert_eq!(ok, 200, "normal request {i} during {attack}: {body}");
        assert_eq!(body["message"], format!("Hello, n{i}!"));
    }
    for attack_request in attacks {
        let (got, _, body) = tokio::time::timeout(Duration::from_secs(20), attack_request)
            .await
            .expect("the attack request finished")
            .expect("join");
        assert_gateway_error(got, &body, status, message);
        assert!(!body.to_string().contains("root:"), "nothing leaked: {body}");
    }
    let log = arena.gw.wait_for_log(logged);
    let line = log.lines().find(|l| l.contains(logged)).expect("line with the reason");
    let failure = log
        .lines()
        .find(|l| l.contains("plugin invocation failed") && l.contains(&format!("hostile.wasm#{attack}")))
        .unwrap_or_else(|| panic!("no failure line naming hostile.wasm#{attack}; reason line: {line}\nlog:\n{log}"));
    assert!(
        failure.contains("api=\"arena\"") || failure.contains("api=arena"),
        "{failure}"
    );
    assert!(
        failure.contains(&format!("endpoint=\"/{attack}\"")) || failure.contains(&format!("endpoint=/{attack}")),
        "{failure}"
    );
    assert!(failure.contains("hostile.wasm"), "{failure}");

    let (ok, _, body) = get_json(&arena.gw.url(&format!("/a/{attack}?benign"))).await;
    assert_eq!(
        (ok, &body),
        (200, &json!({ "ok": true })),
        "{attack} endpoint after the attack"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_is_stopped_by_the_cpu_budget() {
    // The loop never ends: an answer at all is the budget's doing.
    let a = arena(GATEWAY).await;
    contain(
        &a,
        "spin",
        "",
        504,
        "plugin timed out",
        "exceeded its CPU budget of 200ms",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_hits_the_memory_cap() {
    let a = arena(GATEWAY).await;
    contain(
        &a,
        "memory-bomb",
        "",
        500,
        "plugin failed",
        "exceeded its memory limit of 32 MiB",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_recursion_traps() {
    let a = arena(GATEWAY).await;
    contain(&a, "recursion", "", 500, "plugin failed", "guest trapped").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_is_a_500_with_the_message_in_the_log() {
    let a = arena(GATEWAY).await;
    contain(
        &a,
        "panic",
        "",
        500,
        "plugin failed",
        "hostile plugin panics on purpose",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_response_body_is_refused() {
    let a = arena(GATEWAY).await;
    contain(
        &a,
        "huge-body",
        "",
        500,
        "plugin failed",
        "exceeds max_body_bytes (1048576)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_status_is_refused() {
    let a = arena(GATEWAY).await;
    contain(&a, "bad-status", "", 500, "plugin failed", "invalid status 99").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn header_injection_is_refused() {
    let a = arena(GATEWAY).await;
    contain(
        &a,
        "bad-header",
        "",
        500,
        "plugin failed",
        "invalid value for header \"x-injected\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_filesystem() {
    let a = arena(GATEWAY).await;
    contain(&a, "read-file", "", 500, "plugin failed", "reading /etc/passwd failed").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_environment_or_arguments() {
    let a = arena(GATEWAY).await;
    contain(&a, "read-env", "", 500, "plugin failed", "environment is empty").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_sockets() {
    let a = arena(GATEWAY).await;
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    target.set_nonblocking(true).expect("nonblocking");
    let addr = target.local_addr().expect("addr");
    contain(
        &a,
        "open-socket",
        &format!("target={addr}"),
        500,
        "plugin failed",
        &format!("connecting to {addr} failed"),
    )
    .await;
    assert!(
        matches!(target.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the plugin reached the socket"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_to_a_host_not_on_the_allowlist_is_refused_without_connecting() {
    let a = arena(GATEWAY).await;
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    target.set_nonblocking(true).expect("nonblocking");
    let addr = target.local_addr().expect("addr");
    let query = format!("url=http://{addr}/secret");
    contain(
        &a,
        "outbound-forbidden",
        &query,
        500,
        "plugin failed",
        "outbound call refused: host not on the API's allowlist",
    )
    .await;
    assert!(
        matches!(target.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the gateway connected to a host not on the allowlist"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_calls_are_capped_per_invocation() {
    let a = arena(GATEWAY).await;
    let query = format!("url={}/count", a.counter_url);
    contain(
        &a,
        "outbound-flood",
        &query,
        500,
        "plugin failed",
        "call limit reached after 5 calls",
    )
    .await;
    assert_eq!(
        a.counter_hits.load(Ordering::SeqCst),
        3 * 5,
        "three attacks, five calls each"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_outbound_call_ends_at_the_invocation_deadline() {
    // The upstream never answers (and the call's own timeout is an hour):
    // an answer at all is the invocation deadline's doing.
    let a = arena(GATEWAY).await;
    let query = format!("url={}/slow", a.slow_url);
    contain(
        &a,
        "outbound-slow",
        &query,
        504,
        "plugin timed out",
        "invocation exceeded its timeout of 1.5s",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_on_outbound_calls_is_not_charged_as_cpu() {
    // The call waits 1.5 s on the upstream, three times the CPU budget; the
    // budget is still far above what the guest itself runs (a few ms, more
    // on a busy machine), so only charging the wait could exceed it.
    let slow = upstream(upstreams::slow(Duration::from_millis(1500))).await;
    let text = format!(
        "id: w\nlisten_path: /w/\nupstream: {slow}\noutbound: {{ allow: ['{}'] }}\nendpoints:\n  - path: /\n    plugin: {{ path: {}, function: outbound-slow, limits: {{ cpu_ms: 500, timeout_ms: 30000 }} }}\n",
        slow.trim_start_matches("http://"),
        plugin(Wasm::Hostile).display()
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let (status, _, body) = get_json(&gw.url(&format!("/w/?url={slow}/x"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["succeeded"], true, "the slow call completed: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_plugin_can_answer_a_fixed_fallback() {
    let a = arena(GATEWAY).await;
    let response = client().get(a.gw.url("/a/fallback")).send().await.expect("request");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(response.text().await.expect("body"), "try later");
    a.gw.wait_for_log("hostile plugin panics on purpose");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_instance_pool_answers_503_at_once() {
    // One instance slot, held by a plugin waiting on an upstream that answers
    // only when the test says so.
    let release = Arc::new(tokio::sync::Notify::new());
    let (gate, arrived) = upstreams::gate(Arc::clone(&release));
    let gate = upstream(gate).await;
    let api = format!(
        "id: pool\nlisten_path: /p/\nupstream: {gate}\noutbound: {{ allow: ['{}'], timeout_ms: 60000 }}\nendpoints:\n  - path: /busy\n    plugin: {{ path: {}, function: outbound-slow, limits: {{ timeout_ms: 60000 }} }}\n  - path: /good/{{name}}\n    plugin: {{ path: {}, function: hello }}\n",
        gate.trim_start_matches("http://"),
        plugin(Wasm::Hostile).display(),
        plugin(Wasm::Hello).display(),
    );
    let gw = Gateway::start(ConfigDir::new(
        "apis: [apis/]\nplugin_limits: { pool_size: 1 }\n",
        &[("pool.yaml", &api)],
    ));
    let busy_url = gw.url(&format!("/p/busy?url={gate}/hold"));
    let busy = tokio::spawn(async move { get_json(&busy_url).await });
    while arrived.load(Ordering::SeqCst) == 0 {
        assert!(!busy.is_finished(), "the busy request ended early: {:?}", busy.await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The slot stays taken until the release: had the request queued, it
    // would still be waiting.
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(30), get_json(&gw.url("/p/good/x")))
        .await
        .expect("answered while the slot was taken: no queue");
    assert_gateway_error(status, &body, 503, "plugin capacity exhausted, retry later");
    assert!(!busy.is_finished(), "the slot was held throughout");

    release.notify_waiters();
    let (status, _, body) = busy.await.expect("join");
    assert_eq!((status, &body["succeeded"]), (200, &Value::from(true)), "{body}");
    let (status, _, body) = get_json(&gw.url("/p/good/x")).await;
    assert_eq!(status, 200, "the slot is free again: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_mixed_traffic_without_restart_or_memory_growth() {
    let a = arena(GATEWAY).await;
    let paths = [
        "/a/good/x",
        "/a/panic",
        "/a/good/y",
        "/a/memory-bomb",
        "/a/good/z",
        "/a/spin",
        "/a/recursion",
        "/a/huge-body",
    ];
    let expected = [200, 500, 200, 500, 200, 504, 500, 500];
    let round = |count: usize| {
        let base = a.gw.url.clone();
        async move {
            let client = client();
            let mut in_flight = Vec::new();
            for i in 0..count {
                let (path, want) = (paths[i % paths.len()], expected[i % paths.len()]);
                let request = client.get(format!("{base}{path}")).send();
                in_flight.push(tokio::spawn(async move {
                    (path, want, request.await.map(|r| r.status().as_u16()))
                }));
                if in_flight.len() == 16 || i + 1 == count {
                    for request in in_flight.drain(..) {
                        let (path, want, got) = request.await.expect("join");
                        assert_eq!(got.expect("the gateway answered"), want, "{path}");
                    }
                }
            }
        }
    };
    round(400).await; // warm up: pool slots, allocator, connections
    let before = a.gw.rss_kib();
    round(3000).await;
    let after = a.gw.rss_kib();
    let growth_mib = after.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 64,
        "RSS grew by {growth_mib} MiB ({before} KiB -> {after} KiB)"
    );
    let (status, _, body) = get_json(&a.gw.url("/a/good/end")).await;
    assert_eq!((status, &body["message"]), (200, &Value::from("Hello, end!")));
}
