//! The dashboard, in a real browser: headless Chromium (Debian's
//! `chromium`), driven over the DevTools protocol, loads the page from a
//! running gateway's admin listener, and the test reads what the page drew.
//! The page must show the live state (APIs, plugins, targets) and follow it
//! without a reload when a target dies; without the secret it shows
//! nothing. The test's screenshot is the one in docs/operations.md
//! (`UPDATE_SCREENSHOTS=1` writes it there; otherwise to target/).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{ConfigDir, Gateway, Wasm, client, plugin, repo_root, upstreams};

const SECRET: &str = "dashboard-secret-for-tests";

/// Polls `condition` (an expression that may await the page) until it
/// holds; fails after a minute, a bound for a broken page rather than a
/// timing claim.
macro_rules! wait_until {
    ($what:expr, $condition:expr) => {{
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !$condition {
            assert!(tokio::time::Instant::now() < deadline, "gave up waiting for: {}", $what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }};
}

/// Headless Chromium with its DevTools endpoint; killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// `127.0.0.1:PORT` of the DevTools HTTP endpoint.
    devtools: String,
}

impl Browser {
    fn start() -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chromium (cargo xtask test installs it: apt-get install chromium)");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        let devtools = loop {
            line.clear();
            if stderr.read_line(&mut line).expect("chromium's stderr") == 0 {
                panic!("chromium exited before its DevTools endpoint was up");
            }
            if let Some(rest) = line.trim().strip_prefix("DevTools listening on ws://") {
                break rest.split('/').next().expect("host:port").to_owned();
            }
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in stderr.lines() {});
        Browser {
            child,
            _profile: profile,
            devtools,
        }
    }

    /// A connection to the browser's first page.
    async fn page(&self) -> Page {
        let targets: Vec<Value> = client()
            .get(format!("http://{}/json/list", self.devtools))
            .send()
            .await
            .expect("DevTools /json/list")
            .json()
            .await
            .expect("targets");
        let url = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target");
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect to the page");
        Page { socket, next_id: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Page {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Page {
    /// Sends one DevTools command and waits for its answer (events that
    /// arrive meanwhile are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .expect("send");
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let message = self.socket.next().await.expect("open").expect("message");
                let Message::Text(text) = message else { continue };
                let value: Value = serde_json::from_str(&text).expect("JSON");
                if value["id"] == id {
                    return value;
                }
                // With `Fetch` on (see `decline_basic_auth`): let every
                // request through, and answer a Basic challenge as a
                // person who has no password would, by cancelling.
                let reply = match value["method"].as_str() {
                    Some("Fetch.requestPaused") => {
                        json!({ "method": "Fetch.continueRequest", "params": { "requestId": value["params"]["requestId"] } })
                    }
                    Some("Fetch.authRequired") => json!({
                        "method": "Fetch.continueWithAuth",
                        "params": { "requestId": value["params"]["requestId"], "authChallengeResponse": { "response": "CancelAuth" } },
                    }),
                    _ => continue,
                };
                // Its answer is skipped like an event: ids from here on
                // never match the one awaited.
                self.next_id += 1;
                let mut reply = reply;
                reply["id"] = json!(self.next_id);
                self.socket.send(Message::text(reply.to_string())).await.expect("send");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method}"));
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    /// Evaluates `expression` in the page; its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Each upstream target the page shows, with the state it shows.
    async fn targets(&mut self) -> Vec<(String, String)> {
        let value = self
            .eval("JSON.stringify([...document.querySelectorAll('[data-target]')].map(e => [e.dataset.target, e.dataset.state]))")
            .await;
        serde_json::from_str(value.as_str().unwrap_or("[]")).unwrap_or_default()
    }

    /// How many times the page has drawn fresh data.
    async fn polls(&mut self) -> u64 {
        self.eval("Number(document.getElementById('updated').dataset.polls)")
            .await
            .as_u64()
            .unwrap_or(0)
    }

    async fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// An upstream that can be stopped: it closes its connections and refuses new ones.
async fn stoppable(name: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = upstreams::echo(name);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_live_state_in_a_browser_and_nothing_without_the_secret() {
    let (a, _keep_a) = stoppable("a").await;
    let (b, stop_b) = stoppable("b").await;
    let api = format!(
        "id: shop\nname: Shop\nlisten_path: /shop/\nupstream:\n  targets: [{a}, {b}]\n  health_check: {{ path: /healthz, interval_ms: 100, unhealthy_after: 2, healthy_after: 2 }}\nrate_limit: {{ rate: 50, per: 1, by: client_ip }}\nendpoints:\n  - method: GET\n    path: /hello/{{name}}\n    plugin: {{ path: {hello}, function: hello }}\n  - method: GET\n    path: /fail\n    plugin: {{ path: {probe}, function: fail }}\n",
        hello = plugin(Wasm::Hello).display(),
        probe = plugin(Wasm::Probe).display(),
    );
    let gateway_yaml = format!("apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n");
    let gw = Gateway::start(ConfigDir::new(&gateway_yaml, &[("shop.yaml", &api)]));
    // Traffic for the page to draw, all through the run.
    let traffic = {
        let (hello, fail, proxied) = (gw.url("/shop/hello/ada"), gw.url("/shop/fail"), gw.url("/shop/items"));
        tokio::spawn(async move {
            let http = client();
            loop {
                for url in [&hello, &hello, &proxied, &fail] {
                    let _ = http.get(url).send().await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let browser = Browser::start();
    let mut page = browser.page().await;
    page.call("Page.enable", json!({})).await;
    page.call("Network.enable", json!({})).await;
    // The admin listener asks a browser for Basic credentials; headless,
    // nobody would answer the prompt.
    page.call("Fetch.enable", json!({ "handleAuthRequests": true })).await;

    // Without the secret: the admin listener's 401, and none of the state.
    page.open(&gw.admin("/dashboard")).await;
    wait_until!(
        "the refusal is shown",
        page.text().await.contains("missing X-Admin-Secret")
    );
    assert!(page.targets().await.is_empty());
    assert!(!page.text().await.contains("hello.wasm"));
    // A wrong one: 403.
    page.call(
        "Network.setExtraHTTPHeaders",
        json!({ "headers": { "X-Admin-Secret": "not-the-secret-at-all" } }),
    )
    .await;
    page.open(&gw.admin("/dashboard")).await;
    wait_until!(
        "the wrong secret is refused",
        page.text().await.contains("wrong X-Admin-Secret")
    );

    // With it: the live state.
    page.call(
        "Network.setExtraHTTPHeaders",
        json!({ "headers": { "X-Admin-Secret": SECRET } }),
    )
    .await;
    page.open(&gw.admin("/dashboard")).await;
    let both_healthy = vec![(a.clone(), "healthy".to_owned()), (b.clone(), "healthy".to_owned())];
    wait_until!("both targets drawn healthy", page.targets().await == both_healthy);
    wait_until!("rates drawn from two polls or more", page.polls().await >= 3);
    let text = page.text().await;
    for expected in [
        "shop",
        "/shop/",
        "hello.wasm#hello",
        "probe.wasm#fail",
        "error_returned",
        "(this one)",
    ] {
        assert!(text.contains(expected), "{expected:?} not on the page:\n{text}");
    }
    let rate = page
        .eval("document.querySelector('[data-api=shop] td:nth-child(4)').innerText")
        .await;
    let rate: f64 = rate
        .as_str()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("a request rate, not {rate}"));
    assert!(rate > 0.0, "traffic flows, so the rate is above 0: {rate}");

    // A target dies: the same page, not reloaded, says so.
    let _ = stop_b.send(());
    wait_until!(
        "the dead target drawn unhealthy",
        page.targets()
            .await
            .iter()
            .any(|(t, state)| *t == b && state == "unhealthy")
    );
    let text = page.text().await;
    assert!(
        text.contains("probes of /healthz in a row failed"),
        "why it is out:\n{text}"
    );

    // A few more polls, so the sparklines have a line to draw.
    wait_until!("more polls for the picture", page.polls().await >= 8);
    let shot = page.call("Page.captureScreenshot", json!({ "format": "png" })).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("data"))
        .expect("base64");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000,
        "a real screenshot"
    );
    let path = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
        repo_root().join("docs/images/dashboard.png")
    } else {
        repo_root().join("target/dashboard.png")
    };
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    std::fs::write(&path, &png).expect("write the screenshot");
    traffic.abort();
}

#[tokio::test]
async fn the_dashboards_files_stay_small_and_load_nothing_from_elsewhere() {
    let gateway_yaml = format!("apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n");
    let gw = Gateway::start(ConfigDir::new(
        &gateway_yaml,
        &[("a.yaml", "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:1\n")],
    ));
    let mut total = 0;
    for path in ["/dashboard", "/dashboard/app.js", "/dashboard/app.css"] {
        let response = client()
            .get(gw.admin(path))
            .basic_auth("anyone", Some(SECRET))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{path}: Basic credentials carry the secret");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .expect("text")
            .to_owned();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        let body = response.text().await.expect("body");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} names no other origin"
        );
        total += body.len();
    }
    assert!(total < 32 * 1024, "the page, script and style are {total} bytes");
    // Without credentials the browser is asked for them.
    let response = client().get(gw.admin("/dashboard")).send().await.expect("get");
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .expect("text")
            .starts_with("Basic ")
    );
}
