//! Several gateway nodes on one real Redis: one shared quota and rate limit,
//! enforced exactly; Redis going away fails requests with 503 (not hangs),
//! and service resumes when it returns.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{ConfigDir, Gateway, admin_post, closed_port, get_with, upstream, upstreams};

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
