//! Several targets behind one upstream: balancing, ejection, health checks,
//! retries and their budget, capacity, and what `GET /upstreams` and the
//! metrics show of it. Real upstream servers on loopback, some killed and
//! restarted mid-test.
//!
//! One file, past 500 lines: balancing, health, ejection and retries act
//! on one upstream group and share its helpers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use serde_json::Value;

use crate::support::{
    ConfigDir, Gateway, Wasm, assert_gateway_error, client, closed_port, eventually, json_of, plugin, scrape, upstream,
    upstreams,
};

const SECRET: &str = "a-secret-of-16-chars";

fn gateway(api_yaml: &str) -> Gateway {
    let gateway_yaml = format!("apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n");
    Gateway::start(ConfigDir::new(&gateway_yaml, &[("api.yaml", api_yaml)]))
}

/// `GET /upstreams`: the targets of the API's upstream `name`.
async fn targets(gw: &Gateway, name: &str) -> Vec<Value> {
    let response = client()
        .get(gw.admin("/upstreams"))
        .header("x-admin-secret", SECRET)
        .send()
        .await
        .expect("admin request");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    let api = &body["apis"][0];
    let upstream = api["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in {body}"));
    upstream["targets"].as_array().expect("targets").clone()
}

async fn state_of(gw: &Gateway, url: &str) -> Value {
    targets(gw, "default")
        .await
        .into_iter()
        .find(|t| t["url"] == url)
        .unwrap_or_else(|| panic!("no target {url}"))
}

async fn get_status(url: &str) -> u16 {
    client().get(url).send().await.expect("request").status().as_u16()
}

/// Two targets, `a` and `b`, answering `status` (changeable) with their
/// name, counting the requests they get.
struct Pair {
    a: String,
    b: String,
    a_status: Arc<AtomicU16>,
    a_hits: Arc<AtomicUsize>,
    b_hits: Arc<AtomicUsize>,
}

impl Pair {
    async fn answering(status: u16) -> Self {
        let (a, a_status, a_hits) = upstreams::switchable("a");
        let (b, b_status, b_hits) = upstreams::switchable("b");
        a_status.store(status, Ordering::SeqCst);
        b_status.store(status, Ordering::SeqCst);
        Pair {
            a: upstream(a).await,
            b: upstream(b).await,
            a_status,
            a_hits,
            b_hits,
        }
    }

    fn hits(&self) -> (usize, usize) {
        (self.a_hits.load(Ordering::SeqCst), self.b_hits.load(Ordering::SeqCst))
    }

    fn total(&self) -> usize {
        self.hits().0 + self.hits().1
    }
}

#[tokio::test]
async fn round_robin_follows_the_weights() {
    let pair = Pair::answering(200).await;
    let gw = gateway(&format!(
        "id: rr\nlisten_path: /rr/\nupstream:\n  balance: round_robin\n  targets:\n    - {{ url: {}, weight: 2 }}\n    - {}\n",
        pair.a, pair.b
    ));
    for _ in 0..30 {
        assert_eq!(get_status(&gw.url("/rr/x")).await, 200);
    }
    assert_eq!(pair.hits(), (20, 10));
}

#[tokio::test]
async fn least_request_goes_to_the_target_with_fewer_requests_in_flight() {
    // Both targets hold every request: the one with fewer waiting must get
    // the next, so the two never differ by more than one.
    let release = Arc::new(tokio::sync::Notify::new());
    let (a, a_waiting) = upstreams::gate(Arc::clone(&release));
    let (b, b_waiting) = upstreams::gate(Arc::clone(&release));
    let (a, b) = (upstream(a).await, upstream(b).await);
    let gw = gateway(&format!(
        "id: lr\nlisten_path: /lr/\nupstream:\n  targets: [{a}, {b}]\n"
    ));
    let mut held = Vec::new();
    for sent in 1..=12 {
        held.push(tokio::spawn(client().get(gw.url("/lr/x")).send()));
        eventually("the request to arrive", || async {
            a_waiting.load(Ordering::SeqCst) + b_waiting.load(Ordering::SeqCst) == sent
        })
        .await;
        let (at_a, at_b) = (a_waiting.load(Ordering::SeqCst), b_waiting.load(Ordering::SeqCst));
        assert!(at_a.abs_diff(at_b) <= 1, "after {sent}: {at_a} at a, {at_b} at b");
    }
    // Idle, the weights decide: 3 to 1.
    let (c, _, c_hits) = upstreams::switchable("c");
    let (d, _, d_hits) = upstreams::switchable("d");
    let (c, d) = (upstream(c).await, upstream(d).await);
    let weighted = gateway(&format!(
        "id: lr\nlisten_path: /lr/\nupstream:\n  targets: [{{ url: {c}, weight: 3 }}, {d}]\n"
    ));
    for _ in 0..400 {
        assert_eq!(get_status(&weighted.url("/lr/x")).await, 200);
    }
    let (c_hits, d_hits) = (c_hits.load(Ordering::SeqCst), d_hits.load(Ordering::SeqCst));
    assert_eq!(c_hits + d_hits, 400);
    // 300 expected, binomial spread about 9.
    assert!((250..350).contains(&c_hits), "{c_hits} of 400 to the weight-3 target");
    for _ in 0..12 {
        release.notify_waiters();
    }
    drop(held);
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_on_one_target() {
    let pair = Pair::answering(200).await;
    let gw = gateway(&format!(
        "id: ch\nlisten_path: /ch/\nupstream:\n  balance: consistent_hash\n  hash_on: header:x-user-id\n  targets: [{}, {}]\n",
        pair.a, pair.b
    ));
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..40 {
        let mut names = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let response = client()
                .get(gw.url("/ch/x"))
                .header("x-user-id", format!("user-{user}"))
                .send()
                .await
                .expect("request");
            let (_, _, body) = json_of(response).await;
            names.insert(body["name"].as_str().expect("name").to_owned());
        }
        assert_eq!(names.len(), 1, "user-{user} went to {names:?}");
        seen.extend(names);
    }
    assert_eq!(seen.len(), 2, "40 keys all went to {seen:?}");
    assert_eq!(pair.total(), 120);
}

#[tokio::test]
async fn a_killed_target_is_ejected_without_failed_gets_and_comes_back_after_a_restart() {
    let (a_app, _, a_hits) = upstreams::switchable("a");
    let (b_app, _, _) = upstreams::switchable("b");
    let mut a = upstreams::Killable::spawn(a_app.clone()).await.expect("a");
    let b = upstream(b_app).await;
    let a_url = format!("http://{}", a.addr);
    let gw = Arc::new(gateway(&format!(
        "id: ha\nlisten_path: /ha/\nupstream:\n  targets: [{a_url}, {b}]\n  passive: {{ failures: 3, eject_ms: 500 }}\n  retries: {{ attempts: 1 }}\n"
    )));
    // Steady traffic from four clients at once while a dies.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..4)
        .map(|_| {
            let (gw, stop) = (Arc::clone(&gw), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    match get_status(&gw.url("/ha/x")).await {
                        200 => ok += 1,
                        other => failed.push(other),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    eventually("a to take traffic", || async { a_hits.load(Ordering::SeqCst) >= 20 }).await;
    a.kill();
    eventually("a to be ejected", || async {
        state_of(&gw, &a_url).await["state"] == "ejected"
    })
    .await;
    let ejected = state_of(&gw, &a_url).await;
    assert!(
        ejected["reason"]
            .as_str()
            .is_some_and(|r| r.contains("failures in a row")),
        "{ejected}"
    );
    a.restart(a_app).await.expect("restart a");
    let before = a_hits.load(Ordering::SeqCst);
    eventually("a to take traffic again", || async {
        a_hits.load(Ordering::SeqCst) > before + 10
    })
    .await;
    eventually("a to be healthy", || async {
        state_of(&gw, &a_url).await["state"] == "healthy"
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for task in traffic {
        let (ok, failed) = task.await.expect("traffic");
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total > 40, "{total} requests");
    gw.wait_for_log("target ejected");
}

#[tokio::test]
async fn a_target_answering_503_is_ejected_and_recovers() {
    let pair = Pair::answering(200).await;
    let (a, a_status, a_hits) = (pair.a.clone(), &pair.a_status, &pair.a_hits);
    let gw = gateway(&format!(
        "id: p\nlisten_path: /p/\nupstream:\n  targets: [{a}, {}]\n  passive: {{ failures: 2, eject_ms: 300 }}\n  retries: {{ attempts: 0 }}\n",
        pair.b
    ));
    a_status.store(503, Ordering::SeqCst);
    eventually("a to be ejected", || async {
        get_status(&gw.url("/p/x")).await;
        state_of(&gw, &a).await["state"] == "ejected"
    })
    .await;
    let hits = a_hits.load(Ordering::SeqCst);
    // While out, a gets nothing (the ejection may run out meanwhile on a
    // slow machine, so stop once it says so).
    for _ in 0..10 {
        if state_of(&gw, &a).await["state"] != "ejected" {
            break;
        }
        assert_eq!(get_status(&gw.url("/p/x")).await, 200);
        assert_eq!(a_hits.load(Ordering::SeqCst), hits, "an ejected target got a request");
    }
    a_status.store(200, Ordering::SeqCst);
    eventually("a to be back and answering", || async {
        get_status(&gw.url("/p/x")).await;
        a_hits.load(Ordering::SeqCst) > hits && state_of(&gw, &a).await["state"] == "healthy"
    })
    .await;
    let back = state_of(&gw, &a).await;
    assert_eq!(back["ejections"], 1, "{back}");
}

#[tokio::test]
async fn every_target_out_gives_503_at_once_with_retry_after() {
    let pair = Pair::answering(503).await;
    let gw = gateway(&format!(
        "id: down\nlisten_path: /down/\nupstream:\n  targets: [{}, {}]\n  passive: {{ failures: 1, eject_ms: 60000 }}\n",
        pair.a, pair.b
    ));
    eventually("both to be ejected", || async {
        get_status(&gw.url("/down/x")).await;
        targets(&gw, "default").await.iter().all(|t| t["state"] == "ejected")
    })
    .await;
    let hits = pair.total();
    for _ in 0..20 {
        let response = client().get(gw.url("/down/x")).send().await.expect("request");
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .expect("text")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
        let (status, _, body) = json_of(response).await;
        assert_gateway_error(status, &body, 503, "upstream unavailable");
    }
    // Not one connection attempt while all are out.
    assert_eq!(pair.total(), hits);
}

#[tokio::test]
async fn retries_stay_within_their_budget() {
    let pair = Pair::answering(503).await;
    let gw = gateway(&format!(
        "id: budget\nlisten_path: /budget/\nupstream:\n  targets: [{}, {}]\n  passive: {{ failures: 0 }}\n  retries: {{ attempts: 1, on: [503], budget_percent: 20, min_per_second: 0 }}\n",
        pair.a, pair.b
    ));
    for _ in 0..50 {
        assert_eq!(get_status(&gw.url("/budget/x")).await, 503);
    }
    // Each request wanted a retry; a fifth of them got one.
    assert_eq!(pair.total(), 60);
    let metrics = scrape(&gw).await;
    let line = |reason: &str| {
        format!("portcullis_upstream_retries_total{{api=\"budget\",upstream=\"default\",reason=\"{reason}\"}}")
    };
    assert!(metrics.contains(&format!("{} 10", line("503"))), "{metrics}");
    assert!(
        metrics.contains(&format!("{} 40", line("budget_exhausted"))),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_post_is_retried_only_when_it_never_reached_a_target() {
    let pair = Pair::answering(503).await;
    let gw = gateway(&format!(
        "id: post\nlisten_path: /post/\nupstream:\n  targets: [{}, {}]\n  passive: {{ failures: 0 }}\n  retries: {{ attempts: 1, on: [connect_error, 503] }}\n",
        pair.a, pair.b
    ));
    for _ in 0..10 {
        let response = client()
            .post(gw.url("/post/orders"))
            .body("{\"item\": 1}")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 503);
    }
    assert_eq!(pair.total(), 10);

    // A target that refuses connections never saw the POST: a body-less
    // one goes to the other target. (A streamed body is sent only once.)
    let (c, _, c_hits) = upstreams::switchable("c");
    let c = upstream(c).await;
    let dead = format!("http://{}", closed_port());
    let gw = gateway(&format!(
        "id: post\nlisten_path: /post/\nupstream:\n  balance: round_robin\n  targets: [{dead}, {c}]\n  passive: {{ failures: 0 }}\n"
    ));
    for _ in 0..10 {
        let response = client()
            .post(gw.url("/post/orders/1/cancel"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
    }
    assert_eq!(c_hits.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn beyond_max_in_flight_a_request_gets_503_at_once() {
    let release = Arc::new(tokio::sync::Notify::new());
    let (held, waiting) = upstreams::gate(Arc::clone(&release));
    let held = upstream(held).await;
    let gw = gateway(&format!(
        "id: cap\nlisten_path: /cap/\nupstream:\n  targets: [{held}]\n  max_in_flight: 1\n"
    ));
    let first = tokio::spawn(client().get(gw.url("/cap/x")).send());
    eventually("the first request to be held", || async {
        waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    let response = client().get(gw.url("/cap/x")).send().await.expect("request");
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, _, body) = json_of(response).await;
    assert_gateway_error(status, &body, 503, "upstream at capacity, retry later");
    assert_eq!(
        waiting.load(Ordering::SeqCst),
        1,
        "the refused request reached the target"
    );
    release.notify_waiters();
    let first = first.await.expect("task").expect("first request");
    assert_eq!(first.status(), 200);
    // Its slot is free again once its response is done.
    first.bytes().await.expect("body");
    let second = tokio::spawn(client().get(gw.url("/cap/x")).send());
    eventually("the next request to be admitted", || async {
        waiting.load(Ordering::SeqCst) == 2
    })
    .await;
    release.notify_waiters();
    assert_eq!(second.await.expect("task").expect("request").status(), 200);
}

#[tokio::test]
async fn health_checks_take_a_target_out_and_back() {
    let pair = Pair::answering(200).await;
    let (a, a_status, a_hits) = (pair.a.clone(), &pair.a_status, &pair.a_hits);
    let gw = gateway(&format!(
        "id: hc\nlisten_path: /hc/\nupstream:\n  targets: [{a}, {}]\n  health_check: {{ path: /healthz, interval_ms: 50, unhealthy_after: 2, healthy_after: 2 }}\n",
        pair.b
    ));
    a_status.store(500, Ordering::SeqCst);
    eventually("a to fail its probes", || async {
        state_of(&gw, &a).await["state"] == "unhealthy"
    })
    .await;
    let down = state_of(&gw, &a).await;
    assert_eq!(down["last_probe"], "500", "{down}");
    assert!(
        down["reason"].as_str().is_some_and(|r| r.contains("/healthz")),
        "{down}"
    );
    // Traffic avoids it (only probes reach it now, and they are not 200).
    for _ in 0..20 {
        let (status, _, body) = json_of(client().get(gw.url("/hc/x")).send().await.expect("request")).await;
        assert_eq!((status, body["name"].as_str()), (200, Some("b")));
    }
    a_status.store(200, Ordering::SeqCst);
    eventually("a to pass its probes", || async {
        state_of(&gw, &a).await["state"] == "healthy"
    })
    .await;
    let hits = a_hits.load(Ordering::SeqCst);
    eventually("a to take traffic", || async {
        get_status(&gw.url("/hc/x")).await;
        a_hits.load(Ordering::SeqCst) > hits + 5
    })
    .await;
}

#[tokio::test]
async fn a_plugin_routes_to_named_upstreams() {
    let (eu1, _, eu1_hits) = upstreams::switchable("eu-1");
    let (eu2, _, eu2_hits) = upstreams::switchable("eu-2");
    let us = upstream(upstreams::echo("us")).await;
    let (eu1, eu2) = (upstream(eu1).await, upstream(eu2).await);
    let gw = gateway(&format!(
        "id: shop\nlisten_path: /shop/\nstrip_listen_path: true\nupstream: eu\nupstreams:\n  eu:\n    balance: round_robin\n    targets: [{eu1}, {eu2}]\n  us: {us}\nendpoints:\n  - path: /{{region}}/{{*rest}}\n    plugin:\n      path: {}\n      function: by-region\n      config: {{ param: region, rest_param: rest, upstreams: {{ eu: eu, us: us, asia: asia }} }}\n",
        plugin(Wasm::Router).display()
    ));
    let (status, _, body) = json_of(client().get(gw.url("/shop/us/items/7")).send().await.expect("request")).await;
    assert_eq!(
        (status, body["upstream"].as_str(), body["path"].as_str()),
        (200, Some("us"), Some("/items/7"))
    );
    for _ in 0..4 {
        assert_eq!(get_status(&gw.url("/shop/eu/items/7")).await, 200);
    }
    assert_eq!(
        (eu1_hits.load(Ordering::SeqCst), eu2_hits.load(Ordering::SeqCst)),
        (2, 2)
    );
    // A name the API does not have is refused like any bad outcome.
    let (status, _, body) = json_of(
        client()
            .get(gw.url("/shop/asia/items/7"))
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert_gateway_error(status, &body, 500, "plugin failed");
    // The log is read from the gateway's stderr by another thread: wait.
    gw.wait_for_log("not one of the API's upstreams (eu, us)");
    // Requests no plugin routed go to the default, `eu`.
    assert_eq!(get_status(&gw.url("/shop/")).await, 200);
    assert_eq!(eu1_hits.load(Ordering::SeqCst) + eu2_hits.load(Ordering::SeqCst), 5);
    let named = targets(&gw, "us").await;
    assert_eq!(named[0]["url"], us);
}

#[tokio::test]
async fn dns_names_are_resolved_again_and_shown() {
    let (a, _, _) = upstreams::switchable("a");
    let addr = upstreams::spawn("127.0.0.1:0", a).await.expect("spawn");
    let url = format!("http://localhost:{}", addr.port());
    let gw = gateway(&format!(
        "id: dns\nlisten_path: /dns/\nupstream:\n  targets: [{url}]\n  dns_refresh_ms: 50\n"
    ));
    eventually("the name to be resolved", || async {
        state_of(&gw, &url).await["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| *a == addr.to_string()))
    })
    .await;
    assert_eq!(get_status(&gw.url("/dns/x")).await, 200);
}

#[tokio::test]
async fn a_reload_keeps_the_health_of_the_targets_it_keeps() {
    let pair = Pair::answering(200).await;
    pair.a_status.store(503, Ordering::SeqCst);
    let api = |extra: &str| {
        format!(
            "id: keep\nlisten_path: /keep/\nupstream:\n  targets: [{}, {}]\n  passive: {{ failures: 1, eject_ms: 600000 }}\n  retries: {{ attempts: 0 }}\n{extra}",
            pair.a, pair.b
        )
    };
    let gw = gateway(&api(""));
    eventually("a to be ejected", || async {
        get_status(&gw.url("/keep/x")).await;
        state_of(&gw, &pair.a).await["state"] == "ejected"
    })
    .await;
    // The file changes, so the reload builds new upstreams.
    gw.config.write_api("api.yaml", &api("strip_listen_path: true\n"));
    gw.reload();
    gw.wait_for_log("configuration reloaded");
    let kept = state_of(&gw, &pair.a).await;
    assert_eq!(kept["state"], "ejected", "{kept}");
    let hits = pair.hits().0;
    for _ in 0..10 {
        assert_eq!(get_status(&gw.url("/keep/x")).await, 200);
    }
    assert_eq!(pair.hits().0, hits, "the ejected target got traffic after the reload");
}
