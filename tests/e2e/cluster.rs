//! Several gateway nodes on one real Redis: one shared quota and rate limit,
//! enforced exactly; Redis going away fails requests with 503 (not hangs),
//! and service resumes when it returns; a reload broadcast to the cluster
//! converges, and `GET /cluster` shows a node that refused it, and why.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{ConfigDir, Gateway, admin_post, client, closed_port, get_json, get_with, upstream, upstreams};

const SECRET: &str = "cluster-admin-secret";

/// A `redis-server` on a free loopback port, with an append-only file so
/// its data survives a kill and restart. Killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = closed_port().port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut redis = Redis { child: None, port, dir };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: `cargo xtask test` installs it (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node(redis: &Redis, upstream: &str, admin: bool) -> Gateway {
    let mut gateway_yaml = format!("apis: [apis/]\nsession_store: {}\n", redis.url());
    if admin {
        gateway_yaml.push_str(&format!("admin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n"));
    }
    let api = format!("id: shared\nlisten_path: /s/\nupstream: {upstream}\nauth: {{ type: api_key }}\n");
    Gateway::start(ConfigDir::new(&gateway_yaml, &[("shared.yaml", &api)]))
}

async fn new_key(admin_node: &Gateway, session: serde_json::Value) -> String {
    let (status, body) = admin_post(&admin_node.admin("/keys"), SECRET, session).await;
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().expect("key").to_owned()
}

fn redis_available() -> bool {
    Path::new("/usr/bin/redis-server").exists() || Command::new("redis-server").arg("--version").output().is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_one_quota_and_one_rate_limit_exactly() {
    assert!(
        redis_available(),
        "redis-server is needed: `cargo xtask test` installs it"
    );
    let redis = Redis::start();
    let echo = upstream(upstreams::echo("up")).await;
    let a = node(&redis, &echo, true);
    let b = node(&redis, &echo, false);

    let key = new_key(&a, json!({ "apis": ["shared"], "quota_max": 10 })).await;
    let auth = [("authorization", key.as_str())];
    // Ten requests, alternating and concurrent across both nodes, all pass...
    let mut calls = Vec::new();
    for i in 0..10 {
        let url = if i % 2 == 0 { a.url("/s/x") } else { b.url("/s/x") };
        let key = key.clone();
        calls.push(tokio::spawn(async move {
            get_with(&url, &[("authorization", &key)]).await.0
        }));
    }
    for call in calls {
        let status = call.await.expect("join");
        assert_eq!(status, 200, "node logs:\n{}\n{}", a.log(), b.log());
    }
    // ...and the eleventh is refused on either node.
    assert_eq!(get_with(&a.url("/s/x"), &auth).await.0, 429);
    assert_eq!(get_with(&b.url("/s/x"), &auth).await.0, 429);

    let key = new_key(&a, json!({ "apis": ["shared"], "rate": 5, "per": 60 })).await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        let url = if i % 2 == 0 { a.url("/s/x") } else { b.url("/s/x") };
        statuses.push(get_with(&url, &[("authorization", &key)]).await.0);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429, 429, 429],
        "five per minute across both nodes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_one_keyless_rate_limit() {
    assert!(
        redis_available(),
        "redis-server is needed: `cargo xtask test` installs it"
    );
    let redis = Redis::start();
    let echo = upstream(upstreams::echo("up")).await;
    let api = format!("id: open\nlisten_path: /o/\nupstream: {echo}\nrate_limit: {{ rate: 4, per: 60, by: api }}\n");
    let gateway_yaml = format!("apis: [apis/]\nsession_store: {}\n", redis.url());
    let a = Gateway::start(ConfigDir::new(&gateway_yaml, &[("open.yaml", &api)]));
    let b = Gateway::start(ConfigDir::new(&gateway_yaml, &[("open.yaml", &api)]));
    let mut statuses = Vec::new();
    for i in 0..7 {
        let url = if i % 2 == 0 { a.url("/o/x") } else { b.url("/o/x") };
        statuses.push(get_with(&url, &[]).await.0);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429, 429],
        "four per minute across both nodes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_is_503_and_service_resumes_when_it_returns() {
    assert!(
        redis_available(),
        "redis-server is needed: `cargo xtask test` installs it"
    );
    let mut redis = Redis::start();
    let echo = upstream(upstreams::echo("up")).await;
    let gw = node(&redis, &echo, true);
    let key = new_key(&gw, json!({ "apis": ["shared"] })).await;
    let auth = [("authorization", key.as_str())];
    assert_eq!(get_with(&gw.url("/s/x"), &auth).await.0, 200);

    redis.stop();
    let started = Instant::now();
    let (status, _, body) = get_with(&gw.url("/s/x"), &auth).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("session store unavailable, retry later"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast: {:?}",
        started.elapsed()
    );
    gw.wait_for_log("session store unavailable");

    redis.spawn();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, _) = get_with(&gw.url("/s/x"), &auth).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not recover (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A node of a three-node cluster: admin API on, its own files, `id`.
fn cluster_node(redis: &Redis, id: &str, api: &str, args: &[&str]) -> Gateway {
    let gateway_yaml = format!(
        "apis: [apis/]\nsession_store: {}\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n",
        redis.url()
    );
    let mut all = vec!["--node-id", id];
    all.extend(args);
    Gateway::start_with(ConfigDir::new(&gateway_yaml, &[("api.yaml", api)]), &all)
}

async fn cluster_view(gw: &Gateway) -> serde_json::Value {
    let response = client()
        .get(gw.admin("/cluster"))
        .header("x-admin-secret", SECRET)
        .send()
        .await
        .expect("GET /cluster");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

/// Polls `GET /cluster` on `gw` until `done` holds of its node list.
async fn wait_for_cluster(gw: &Gateway, what: &str, done: impl Fn(&[serde_json::Value]) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let view = cluster_view(gw).await;
        if done(view["nodes"].as_array().expect("nodes")) {
            return view;
        }
        assert!(Instant::now() < deadline, "{what}; GET /cluster said {view:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn member<'a>(nodes: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    nodes
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("node {id} in {nodes:?}"))
}

async fn served_by(gw: &Gateway) -> String {
    let (status, _, body) = get_json(&gw.url("/svc/x")).await;
    assert_eq!(status, 200, "{body}");
    body["upstream"].as_str().expect("echo").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_reload_converges_a_refusing_node_says_why_and_a_restarted_node_rejoins() {
    assert!(
        redis_available(),
        "redis-server is needed: `cargo xtask test` installs it"
    );
    let redis = Redis::start();
    let one = upstream(upstreams::echo("one")).await;
    let two = upstream(upstreams::echo("two")).await;
    let api = |upstream: &str| format!("id: svc\nlisten_path: /svc/\nupstream: {upstream}\n");
    let n1 = cluster_node(&redis, "n1", &api(&one), &["--broadcast"]);
    let n2 = cluster_node(&redis, "n2", &api(&one), &[]);
    let n3 = cluster_node(&redis, "n3", &api(&one), &[]);

    let view = wait_for_cluster(&n2, "three nodes on one configuration", |nodes| nodes.len() == 3).await;
    assert_eq!(view["converged"], true, "{view:#}");
    let first_hash = view["nodes"][0]["config_hash"].as_str().expect("hash").to_owned();
    assert_eq!(first_hash.len(), 64, "a SHA-256");
    let (status, _, health) = get_json(&n1.admin("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["node"], "n1");
    assert_eq!(health["config"]["hash"], first_hash.as_str(), "{health}");
    assert!(
        health["config"]["loaded_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{health}"
    );

    // New files on n1 and n2; a broken one on n3. One reload, on n1.
    n1.config.write_api("api.yaml", &api(&two));
    n2.config.write_api("api.yaml", &api(&two));
    n3.config
        .write_api("api.yaml", "id: svc\nlisten_path: /svc/\nupstream: [\n");
    let (status, body) = admin_post(&format!("{}?cluster=true", n1.admin("/reload")), SECRET, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["reloaded"], &body["broadcast"]),
        (&json!(true), &json!(true)),
        "{body}"
    );

    let view = wait_for_cluster(
        &n3,
        "n2 converges on n1's new configuration and n3 refuses it",
        |nodes| {
            nodes.len() == 3
                && member(nodes, "n2")["last_reload"]["ok"] == true
                && member(nodes, "n3")["last_reload"]["ok"] == false
        },
    )
    .await;
    let nodes = view["nodes"].as_array().expect("nodes");
    let new_hash = member(nodes, "n1")["config_hash"].as_str().expect("hash").to_owned();
    assert_ne!(new_hash, first_hash);
    assert_eq!(member(nodes, "n2")["config_hash"], new_hash.as_str());
    assert_eq!(member(nodes, "n2")["last_reload"]["trigger"], "cluster reload from n1");
    let n3_node = member(nodes, "n3");
    assert_eq!(n3_node["config_hash"], first_hash.as_str(), "n3 kept its configuration");
    let why = n3_node["last_reload"]["error"].as_str().expect("error");
    assert!(why.contains("apis/api.yaml:3"), "the file and line: {why}");
    assert_eq!(view["converged"], false);
    assert_eq!(served_by(&n2).await, "two");
    assert_eq!(served_by(&n3).await, "one", "n3 keeps serving its old configuration");

    // n3, fixed and restarted under the same id, rejoins on the new files.
    let started_before = n3_node["started_at"].as_str().expect("started_at").to_owned();
    n3.config.write_api("api.yaml", &api(&two));
    let n3 = n3.restart();
    let view = wait_for_cluster(&n1, "n3 rejoins on the new configuration", |nodes| {
        nodes.len() == 3
            && member(nodes, "n3")["config_hash"] == new_hash.as_str()
            && member(nodes, "n3")["started_at"] != started_before.as_str()
    })
    .await;
    assert_eq!(view["converged"], true, "{view:#}");
    assert_eq!(served_by(&n3).await, "two");

    // SIGHUP on a node started with --broadcast reloads them all.
    for gw in [&n1, &n2, &n3] {
        gw.config.write_api("api.yaml", &api(&one));
    }
    n1.reload();
    wait_for_cluster(&n2, "every node back on the first configuration", |nodes| {
        nodes.len() == 3 && nodes.iter().all(|n| n["config_hash"] == first_hash.as_str())
    })
    .await;
    for gw in [&n1, &n2, &n3] {
        assert_eq!(served_by(gw).await, "one");
    }
}
