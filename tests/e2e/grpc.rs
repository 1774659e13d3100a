//! gRPC through the gateway, with a real gRPC server and client (grpcio,
//! `tests/grpc/`, in the virtualenv `cargo xtask test` makes): each call
//! kind streamed through an `h2c://` upstream with its trailers, the
//! call's deadline, errors answered as gRPC statuses (upstream down, rate
//! limited, unauthenticated), and the gRPC health service as the active
//! probe.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::support::{ConfigDir, Gateway, eventually, repo_root, yaml};

/// The virtualenv's Python, with grpcio and grpcio-health-checking.
fn python() -> PathBuf {
    let python = repo_root().join("target/grpc-venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: `cargo xtask test` makes it (python3 -m venv, then pip install -r tests/grpc/requirements.txt)",
        python.display()
    );
    python
}

/// A grpcio server on a free port, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/grpc/server.py"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the port");
        let port = line.trim().strip_prefix("port ").expect("`port N`");
        Server {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One call with the grpcio client, through `target` (`host:port`).
async fn call(target: &str, method: &str, args: &[&str]) -> Value {
    let mut command = tokio::process::Command::new(python());
    command
        .arg(repo_root().join("tests/grpc/client.py"))
        .arg(target)
        .arg(method)
        .args(args);
    let output = command.output().await.expect("run the gRPC client");
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}

fn host_port(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_kind_streams_through_with_its_trailers() {
    let server = Server::start(&[]);
    let api = yaml(json!({
        "id": "echo", "listen_path": "/test.Echo/",
        "upstream": { "targets": [format!("h2c://{}", server.addr)] },
        "endpoints": [{ "path": "/Headers", "headers": { "request": { "set": { "x-gateway": "{api_id}" } } } }],
    }));
    let gw = Gateway::start(ConfigDir::single(&api));
    let target = host_port(&gw);

    let unary = call(&target, "Unary", &["hi"]).await;
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(unary["answers"], json!(["echo:hi"]));
    assert_eq!(unary["trailing"]["x-trailer"], "unary", "custom trailers cross");
    assert!(unary["initial"]["x-request-id"].is_string(), "{unary}");

    let stream = call(&target, "ServerStream", &["s"]).await;
    assert_eq!(stream["answers"], json!(["s:0", "s:1", "s:2"]), "{stream}");
    assert_eq!(stream["trailing"]["x-trailer"], "server-stream");

    let client_stream = call(&target, "ClientStream", &["a", "b", "c"]).await;
    assert_eq!(client_stream["answers"], json!(["a+b+c"]), "{client_stream}");

    let bidi = call(&target, "Bidi", &["x", "y", "z"]).await;
    assert_eq!(bidi["answers"], json!(["X", "Y", "Z"]), "{bidi}");

    // A status and message the upstream sets reach the client as sent.
    let failed = call(&target, "Fail", &["q"]).await;
    assert_eq!(
        (failed["code"].as_str(), failed["details"].as_str()),
        (Some("NOT_FOUND"), Some("no such thing"))
    );
    assert_eq!(failed["trailing"]["x-reason"], "asked");

    // The route's policies apply to `/package.Service/Method` like any path.
    let seen = call(&target, "Headers", &["q", "--meta", "x-client=1"]).await;
    let headers = seen["answers"][0].as_str().expect("a string");
    assert!(
        headers.contains("x-client=1") && headers.contains("x-gateway=echo"),
        "{headers}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deadlines_and_gateway_errors_are_grpc_statuses() {
    let mut server = Server::start(&[]);
    let api = yaml(json!({
        "id": "echo", "listen_path": "/test.Echo/",
        "upstream": { "targets": [format!("h2c://{}", server.addr)], "passive": { "failures": 0 } },
        "endpoints": [
            { "path": "/Unary", "rate_limit": { "rate": 1, "per": 60, "by": "api" } },
        ],
    }));
    let gw = Gateway::start(ConfigDir::single(&api));
    let target = host_port(&gw);

    // The call's deadline (`grpc-timeout`, sent here by hand, with no
    // client-side timer) bounds the gateway's wait: the upstream would
    // answer after 5 s, within the API's 30 s, yet the gateway gives up at
    // the deadline and says so as gRPC.
    let frame = [&[0u8, 0, 0, 0, 1][..], b"5"].concat();
    let response = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client")
        .post(gw.url("/test.Echo/Slow"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "200m")
        .body(frame)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["grpc-status"],
        "4",
        "DEADLINE_EXCEEDED: {:?}",
        response.headers()
    );
    assert_eq!(response.headers()["grpc-message"], "upstream timed out");

    let first = call(&target, "Unary", &["a"]).await;
    assert_eq!(first["code"], "OK", "{first}");
    let limited = call(&target, "Unary", &["a"]).await;
    assert_eq!(
        (limited["code"].as_str(), limited["details"].as_str()),
        (Some("RESOURCE_EXHAUSTED"), Some("rate limit exceeded")),
        "{limited}"
    );
    assert_eq!(limited["trailing"]["x-ratelimit-limit"], "1", "{limited}");

    server.kill();
    let down = call(&target, "ClientStream", &["a"]).await;
    assert_eq!(
        (down["code"].as_str(), down["details"].as_str()),
        (Some("UNAVAILABLE"), Some("upstream unavailable")),
        "{down}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_refusals_are_unauthenticated() {
    let server = Server::start(&[]);
    let api = yaml(json!({
        "id": "echo", "listen_path": "/test.Echo/",
        "upstream": format!("h2c://{}", server.addr),
        "auth": { "type": "api_key" },
    }));
    let gw = Gateway::start(ConfigDir::single(&api));
    let refused = call(&host_port(&gw), "Unary", &["a"]).await;
    assert_eq!(
        (refused["code"].as_str(), refused["details"].as_str()),
        (Some("UNAUTHENTICATED"), Some("missing API key")),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_grpc_health_service_is_the_active_probe() {
    let healthy = Server::start(&[]);
    let not_serving = Server::start(&["--not-serving"]);
    let api = yaml(json!({
        "id": "echo", "listen_path": "/test.Echo/",
        "upstream": {
            "targets": [format!("h2c://{}", healthy.addr), format!("h2c://{}", not_serving.addr)],
            "health_check": { "grpc_service": "test.Echo", "interval_ms": 100, "unhealthy_after": 1, "healthy_after": 1 },
        },
    }));
    let config = ConfigDir::new(
        "apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: a-secret-of-16-chars\n",
        &[("api.yaml", &api)],
    );
    let gw = Gateway::start(config);
    let admin = reqwest::Client::new();
    let upstreams = || async {
        admin
            .get(gw.admin("/upstreams"))
            .header("x-admin-secret", "a-secret-of-16-chars")
            .send()
            .await
            .expect("admin")
            .json::<Value>()
            .await
            .expect("JSON")
    };
    eventually("the NOT_SERVING target is taken out", || async {
        upstreams().await.to_string().contains("NOT_SERVING")
    })
    .await;
    let view = upstreams().await.to_string();
    assert!(view.contains("unhealthy"), "{view}");
    // Every call goes to the serving target.
    for _ in 0..4 {
        let answer = call(&host_port(&gw), "Unary", &["a"]).await;
        assert_eq!(answer["code"], "OK", "{answer}");
    }
}

#[test]
fn h2c_and_plain_targets_do_not_mix() {
    let api = yaml(json!({
        "id": "echo", "listen_path": "/e/",
        "upstream": { "targets": ["h2c://127.0.0.1:9", "http://127.0.0.1:10"] },
    }));
    let output = crate::support::validate(&ConfigDir::single(&api));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("targets[1].url") && stderr.contains("h2c://"),
        "{stderr}"
    );
}
