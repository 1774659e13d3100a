//! Test support: the compiled plugins (built once per run), a real gateway
//! process on a free port, and real upstream servers on loopback.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use portcullis_upstreams as upstreams;

pub mod pki;
pub mod wire;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("gateway/ is in the repository")
        .to_owned()
}

/// Every plugin the tests load, named once: the example plugins
/// (`example-plugins/`) and the test plugins (`example-plugins/test-plugins/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wasm {
    Aggregate,
    Auth,
    Bench,
    Hello,
    Hostile,
    Policy,
    Probe,
    Raw,
    Raw2,
    RawDup,
    Router,
}

impl Wasm {
    /// The file's name without `.wasm`.
    pub fn name(self) -> &'static str {
        match self {
            Wasm::Aggregate => "aggregate",
            Wasm::Auth => "auth",
            Wasm::Bench => "bench",
            Wasm::Hello => "hello",
            Wasm::Hostile => "hostile",
            Wasm::Policy => "policy",
            Wasm::Probe => "probe",
            Wasm::Raw => "raw",
            Wasm::Raw2 => "raw2",
            Wasm::RawDup => "raw_dup",
            Wasm::Router => "router",
        }
    }
}

/// The compiled plugin (e.g. `Wasm::Hello`). The guest workspace is built
/// once per test run; `cargo xtask test` has usually built it already,
/// which makes this a no-op.
pub fn plugin(wasm: Wasm) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    compiled(&BUILT, "example-plugins", wasm.name())
}

/// The example plugin as written for the 0.1 contract and SDK, built from
/// its frozen sources in `compat/v0.1/examples`.
pub fn plugin_v01(wasm: Wasm) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    compiled(&BUILT, "compat/v0.1/examples", wasm.name())
}

/// `cargo` for building guest crates: without the host-side flags and
/// target directory the test run may carry.
pub fn guest_cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cargo.env_remove(var);
    }
    cargo
}

fn compiled(built: &OnceLock<PathBuf>, workspace: &str, name: &str) -> PathBuf {
    let dir = built.get_or_init(|| {
        let guests = repo_root().join(workspace);
        let mut build = guest_cargo();
        build.args(["build", "--release", "--quiet"]).current_dir(&guests);
        let output = build.output().expect("cannot run cargo to build the test plugins");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("wasm32-wasip2` target may not be installed")
                && !stderr.contains("can't find crate for `core`"),
            "the wasm32-wasip2 target is missing; run:\n\n    rustup target add wasm32-wasip2\n"
        );
        assert!(
            output.status.success(),
            "building the plugins in {workspace} failed:\n{stderr}"
        );
        guests.join("target/wasm32-wasip2/release")
    });
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.is_file(), "no plugin {}", path.display());
    path
}

/// A directory holding a gateway config and API definition files.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// `gateway.yaml` (with a shared compiled-plugin cache unless the text
    /// sets one) plus `apis/<name>` files.
    pub fn new(gateway_yaml: &str, apis: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut gateway = gateway_yaml.to_owned();
        if !gateway.contains("plugin_cache") {
            let cache = repo_root().join("target/test-plugin-cache");
            gateway.push_str(&format!("\nplugin_cache: {}\n", cache.display()));
        }
        if !gateway.contains("session_store") {
            gateway.push_str(&format!(
                "session_store: {}\n",
                dir.path().join("sessions.redb").display()
            ));
        }
        std::fs::write(dir.path().join("gateway.yaml"), gateway).expect("write gateway.yaml");
        std::fs::create_dir_all(dir.path().join("apis")).expect("mkdir apis");
        for (name, text) in apis {
            std::fs::write(dir.path().join("apis").join(name), text).expect("write api file");
        }
        ConfigDir { dir }
    }

    /// One API file and the default gateway file.
    pub fn single(api_yaml: &str) -> Self {
        Self::new("apis: [apis/]\n", &[("api.yaml", api_yaml)])
    }

    pub fn gateway_file(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub fn write_api(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("apis").join(name), text).expect("write api file");
    }
}

/// Runs `portcullis validate` on the config.
pub fn validate(config: &ConfigDir) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("validate")
        .arg("--config")
        .arg(config.gateway_file())
        .output()
        .expect("run portcullis validate")
}

/// A running `portcullis serve`, killed on drop. Its stderr (the log) is
/// collected for assertions.
pub struct Gateway {
    child: Child,
    pub url: String,
    /// The admin API, when the config enables it.
    pub admin_url: Option<String>,
    /// `https://127.0.0.1:PORT`, when the config has a `tls:` listener.
    pub tls_url: Option<String>,
    log: Arc<Mutex<String>>,
    pub config: ConfigDir,
    /// `serve`'s arguments besides the config and listen addresses.
    args: Vec<String>,
    /// Environment variables set for it.
    env: Vec<(String, String)>,
}

impl Gateway {
    pub fn start(config: ConfigDir) -> Self {
        Self::try_start(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the gateway with more `serve` arguments (kept for restarts).
    pub fn start_with(config: ConfigDir, args: &[&str]) -> Self {
        Self::try_start_with(config, args.iter().map(|a| a.to_string()).collect(), Vec::new())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the gateway with more `serve` arguments and environment
    /// variables (both kept for restarts).
    pub fn start_with_env(config: ConfigDir, args: &[&str], env: &[(&str, &str)]) -> Self {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::try_start_with(config, args.iter().map(|a| a.to_string()).collect(), env)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the gateway; `Err` carries its stderr if it exits instead of
    /// listening.
    pub fn try_start(config: ConfigDir) -> Result<Self, String> {
        Self::try_start_with(config, Vec::new(), Vec::new())
    }

    fn try_start_with(config: ConfigDir, args: Vec<String>, env: Vec<(String, String)>) -> Result<Self, String> {
        let gateway_text = std::fs::read_to_string(config.gateway_file()).unwrap_or_default();
        let has_tls = gateway_text.lines().any(|l| l.starts_with("tls:"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .arg("serve")
            .arg("--config")
            .arg(config.gateway_file())
            .args(["--listen", "127.0.0.1:0"])
            .args(&args);
        if has_tls {
            command.args(["--listen-tls", "127.0.0.1:0"]);
        }
        let mut child = command
            .env("PORTCULLIS_LOG", "info,portcullis=debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("log lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read stdout");
        let has_admin = gateway_text.contains("admin_listen");
        match line.trim().strip_prefix("listening on ") {
            Some(url) => {
                let tls_url = has_tls.then(|| {
                    let mut tls = String::new();
                    stdout.read_line(&mut tls).expect("read stdout");
                    tls.trim().strip_prefix("listening on ").expect("https line").to_owned()
                });
                let admin_url = has_admin.then(|| {
                    let mut admin = String::new();
                    stdout.read_line(&mut admin).expect("read stdout");
                    admin
                        .trim()
                        .strip_prefix("admin listening on ")
                        .expect("admin line")
                        .to_owned()
                });
                Ok(Gateway {
                    child,
                    url: url.to_owned(),
                    admin_url,
                    tls_url,
                    log,
                    config,
                    args,
                    env,
                })
            }
            None => {
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                Err(log.lock().expect("log lock").clone())
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A URL on the admin listener.
    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.admin_url.as_deref().expect("admin API enabled"))
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits (up to 10 s) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "log never contained {needle:?}; log:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the gateway (SIGKILL) and starts it again on the same
    /// configuration (new ports).
    pub fn restart(mut self) -> Gateway {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.start_again()
    }

    /// Stops the gateway gracefully (SIGTERM, as an orchestrator does) and
    /// starts it again on the same configuration (new ports).
    pub fn restart_gracefully(mut self) -> Gateway {
        self.terminate();
        self.start_again()
    }

    fn start_again(&mut self) -> Gateway {
        let config = ConfigDir {
            dir: tempfile::TempDir::new().expect("placeholder"),
        };
        let config = std::mem::replace(&mut self.config, config);
        Gateway::try_start_with(config, std::mem::take(&mut self.args), std::mem::take(&mut self.env))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The gateway process's resident memory, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Sends SIGTERM and waits for the gateway to shut down gracefully;
    /// its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.child.wait().expect("wait for the gateway")
    }

    /// Sends SIGHUP (reload).
    pub fn reload(&self) {
        self.signal("HUP");
    }

    /// Sends the signal `name` (`HUP`, `USR1`...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway's `/metrics` (no secret needed), as text.
pub async fn scrape(gw: &Gateway) -> String {
    let response = client().get(gw.admin("/metrics")).send().await.expect("scrape");
    assert_eq!(response.status(), 200, "no secret needed");
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    response.text().await.expect("metrics text")
}

/// Starts `app` on a free loopback port; returns `http://127.0.0.1:PORT`.
pub async fn upstream(app: axum::Router) -> String {
    let addr = upstreams::spawn("127.0.0.1:0", app).await.expect("start upstream");
    format!("http://{addr}")
}

/// A loopback address nothing listens on.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

/// GET `url`, returning status, headers and the body as JSON (or `Null`).
pub async fn get_json(url: &str) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = client().get(url).send().await.expect("request");
    json_of(response).await
}

pub async fn json_of(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

/// Asserts the body is the gateway's JSON error for `status`, with a request id
/// and no internal detail.
pub fn assert_gateway_error(status: u16, body: &serde_json::Value, expected_status: u16, message: &str) {
    assert_eq!(status, expected_status, "body: {body}");
    assert_eq!(body["status"], expected_status, "body: {body}");
    assert_eq!(body["error"], message, "body: {body}");
    assert!(
        body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "body: {body}"
    );
}

/// POSTs JSON to `url` with the admin secret.
pub async fn admin_post(url: &str, secret: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = client()
        .post(url)
        .header("x-admin-secret", secret)
        .json(&body)
        .send()
        .await
        .expect("admin request");
    let (status, _, json) = json_of(response).await;
    (status, json)
}

/// GET with headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    json_of(request.send().await.expect("request")).await
}

/// Polls `condition` until it holds; fails after a minute (a bound for a
/// broken gateway, not a timing claim). What tests wait for instead of
/// sleeping a fixed time.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A configuration file's text from a JSON value: tests build API files
/// as data (`json!`), not as format strings with escaped braces.
pub fn yaml(value: serde_json::Value) -> String {
    serde_yaml::to_string(&value).expect("a JSON value is YAML")
}
