//! TLS: the HTTPS listener (SNI, ALPN, mutual TLS, XFCC, certificates
//! replaced while connections stay open, the expiry metric), HTTPS
//! upstreams verified against a private CA, and plugins calling HTTPS
//! services. Every certificate is made here; nothing is trusted by default.
//!
//! One file, past 500 lines: both directions of TLS share the throwaway
//! CA and certificates made here.

use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use serde_json::{Value, json};

use crate::support::pki::{Ca, Leaf, addr_of, client_for, https_upstream, peer_certificate, server_config};
use crate::support::{ConfigDir, Gateway, Wasm, closed_port, get_json, json_of, plugin, upstream, upstreams, validate};
use sha2::Digest as _;

/// An upstream that answers with the HTTP version it was spoken to in and
/// the headers it received.
fn version_echo() -> Router {
    Router::new().fallback(|request: Request| async move {
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), Value::from(v.to_str().unwrap_or("?"))))
            .collect();
        axum::Json(json!({ "version": format!("{:?}", request.version()), "headers": headers }))
    })
}

/// A config dir whose gateway file has a `tls:` block (`tls_yaml`, indented
/// under it) and one API, with certificate files written beside it.
fn tls_config(tls_yaml: &str, api_yaml: &str, files: &[(&str, &Leaf)]) -> ConfigDir {
    let config = ConfigDir::new(&format!("apis: [apis/]\ntls:\n{tls_yaml}"), &[("api.yaml", api_yaml)]);
    for (name, leaf) in files {
        leaf.write(config.dir.path(), name);
    }
    config
}

fn echo_api(upstream: &str, extra: &str) -> String {
    format!("id: echo\nlisten_path: /echo/\nstrip_listen_path: true\nupstream: {upstream}\n{extra}")
}

#[tokio::test]
async fn https_listener_serves_each_name_its_certificate_and_speaks_h2() {
    let ca = Ca::new("Listener CA");
    let (a, b) = (ca.server(&["a.test"]), ca.server(&["b.test", "*.b.test"]));
    let echo = upstream(version_echo()).await;
    let config = tls_config(
        "  certificates:\n    - { cert: a.pem, key: a.key }\n    - { cert: b.pem, key: b.key }\n",
        &echo_api(&echo, ""),
        &[("a", &a), ("b", &b)],
    );
    let gw = Gateway::start(config);
    let addr = addr_of(gw.tls_url.as_deref().expect("https listener"));
    let port = addr.port();
    let client = client_for(&ca, &["a.test", "b.test", "x.b.test"], addr)
        .build()
        .expect("client");

    for (name, leaf) in [("a.test", &a), ("b.test", &b), ("x.b.test", &b)] {
        let response = client
            .get(format!("https://{name}:{port}/echo/x"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            peer_certificate(&response),
            leaf.der().to_vec(),
            "certificate for {name}"
        );
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN offers h2 first");
        let (status, _, body) = json_of(response).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");
        // HTTP/2 has no Host field: the host is the :authority.
        assert_eq!(body["headers"]["x-forwarded-host"], format!("{name}:{port}"), "{body}");
    }

    // HTTP/1.1 when the client offers only that.
    let h1 = client_for(&ca, &["a.test"], addr).http1_only().build().expect("client");
    let response = h1
        .get(format!("https://a.test:{port}/echo/x"))
        .send()
        .await
        .expect("h1");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);

    // The plain listener stays beside it.
    let (status, _, body) = get_json(&gw.url("/echo/x")).await;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-forwarded-proto"], "http", "{body}");
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_good_certificate_and_forwards_the_one_it_verified() {
    let ca = Ca::new("Listener CA");
    let clients = Ca::new("Clients CA");
    let strangers = Ca::new("Another CA");
    let server = ca.server(&["api.test"]);
    let alice = clients.client("alice", "spiffe://tests/alice", "alice.clients.test");
    let mallory = strangers.client("mallory", "spiffe://tests/mallory", "mallory.test");
    let echo = upstream(version_echo()).await;
    let config = tls_config(
        "  certificates: [{ cert: server.pem, key: server.key }]\n  client_ca: clients-ca.pem\n  client_auth: required\n",
        &echo_api(&echo, "forward_client_cert: true\n"),
        &[("server", &server)],
    );
    std::fs::write(config.dir.path().join("clients-ca.pem"), clients.pem()).expect("write CA");
    config.write_api(
        "plain.yaml",
        &format!("id: plain\nlisten_path: /plain/\nstrip_listen_path: true\nupstream: {echo}\n"),
    );
    let gw = Gateway::start(config);
    let addr = addr_of(gw.tls_url.as_deref().expect("https listener"));
    let url = |path: &str| format!("https://api.test:{}{path}", addr.port());

    let anonymous = client_for(&ca, &["api.test"], addr).build().expect("client");
    anonymous.get(url("/echo/x")).send().await.expect_err("no certificate");

    let stranger = client_for(&ca, &["api.test"], addr)
        .identity(mallory.identity())
        .build()
        .expect("client");
    stranger
        .get(url("/echo/x"))
        .send()
        .await
        .expect_err("a certificate from another CA");

    let trusted = client_for(&ca, &["api.test"], addr)
        .identity(alice.identity())
        .build()
        .expect("client");
    let response = trusted
        .get(url("/echo/x"))
        .header("x-forwarded-client-cert", "Hash=forged;Subject=\"CN=admin\"")
        .send()
        .await
        .expect("alice");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    let xfcc = body["headers"]["x-forwarded-client-cert"]
        .as_str()
        .expect("XFCC reached the upstream");
    let hash: String = sha2::Sha256::digest(alice.der().as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let subject = subject_of(&alice);
    assert!(subject.contains("CN=alice") && subject.contains("O=Tests"), "{subject}");
    assert_eq!(
        xfcc,
        format!("Hash={hash};Subject=\"{subject}\";URI=spiffe://tests/alice;DNS=alice.clients.test"),
    );

    // An API that does not ask for it gets no XFCC, forged or real.
    let response = trusted
        .get(url("/plain/x"))
        .header("x-forwarded-client-cert", "Hash=forged")
        .send()
        .await
        .expect("alice");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"].get("x-forwarded-client-cert"), None, "{body}");
}

#[tokio::test]
async fn an_api_may_be_served_over_tls_only_or_mutual_tls_only() {
    let ca = Ca::new("Listener CA");
    let clients = Ca::new("Clients CA");
    let server = ca.server(&["api.test"]);
    let alice = clients.client("alice", "spiffe://tests/alice", "alice.clients.test");
    let echo = upstream(version_echo()).await;
    let config = tls_config(
        "  certificates: [{ cert: server.pem, key: server.key }]\n  client_ca: clients-ca.pem\n  client_auth: optional\n",
        &echo_api(&echo, "transport: tls\n"),
        &[("server", &server)],
    );
    std::fs::write(config.dir.path().join("clients-ca.pem"), clients.pem()).expect("write CA");
    config.write_api(
        "mtls.yaml",
        &format!("id: mtls\nlisten_path: /mtls/\nupstream: {echo}\ntransport: mutual_tls\n"),
    );
    config.write_api("any.yaml", &format!("id: any\nlisten_path: /any/\nupstream: {echo}\n"));
    let gw = Gateway::start(config);
    let addr = addr_of(gw.tls_url.as_deref().expect("https listener"));
    let url = |path: &str| format!("https://api.test:{}{path}", addr.port());
    let anonymous = client_for(&ca, &["api.test"], addr).build().expect("client");
    let alice = client_for(&ca, &["api.test"], addr)
        .identity(alice.identity())
        .build()
        .expect("client");

    for (path, status) in [("/echo/x", 421), ("/mtls/x", 421), ("/any/x", 200)] {
        let (got, _, body) = get_json(&gw.url(path)).await;
        assert_eq!(got, status, "plain {path}: {body}");
    }
    for (client, path, status) in [
        (&anonymous, "/echo/x", 200),
        (&anonymous, "/mtls/x", 403),
        (&alice, "/mtls/x", 200),
        (&alice, "/echo/x", 200),
    ] {
        let (got, _, body) = json_of(client.get(url(path)).send().await.expect("request")).await;
        assert_eq!(got, status, "https {path}: {body}");
    }
}

#[cfg(unix)]
#[test]
fn a_private_key_other_users_can_read_is_loaded_with_a_warning_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let ca = Ca::new("Listener CA");
    let server = ca.server(&["api.test"]);
    let config = tls_config(
        "  certificates: [{ cert: server.pem, key: server.key }]\n",
        &echo_api("http://127.0.0.1:1", ""),
        &[("server", &server)],
    );
    let key = config.dir.path().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = validate(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("private key file is accessible to other users") && stderr.contains("server.key"),
        "{stderr}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let stderr = String::from_utf8_lossy(&validate(&config).stderr).into_owned();
    assert!(!stderr.contains("accessible to other users"), "{stderr}");
}

/// The subject as the gateway formats it (RFC 4514 order of the DER).
fn subject_of(leaf: &Leaf) -> String {
    let der = leaf.der();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).expect("parse");
    cert.subject().to_string()
}

#[tokio::test]
async fn https_upstreams_are_verified_and_a_failed_handshake_is_a_502_with_the_reason_logged() {
    let ca = Ca::new("Internal CA");
    let other = Ca::new("Unrelated CA");
    let leaf = ca.server(&["orders.internal", "127.0.0.1"]);
    let h2 = https_upstream(version_echo(), server_config(&leaf, true, None)).await;
    let h1 = https_upstream(version_echo(), server_config(&leaf, false, None)).await;
    let gw_client = ca.client("gateway", "spiffe://tests/gateway", "gw.internal");
    let needs_client_cert = https_upstream(version_echo(), server_config(&leaf, false, Some(&ca))).await;

    let config = ConfigDir::new("apis: [apis/]\n", &[]);
    std::fs::write(config.dir.path().join("internal-ca.pem"), ca.pem()).expect("write CA");
    std::fs::write(config.dir.path().join("other-ca.pem"), other.pem()).expect("write CA");
    gw_client.write(config.dir.path(), "gw");
    let api = |id: &str, upstream: String, tls: &str| {
        config.write_api(
            &format!("{id}.yaml"),
            &format!("id: {id}\nlisten_path: /{id}/\nstrip_listen_path: true\nupstream: {upstream}\n{tls}"),
        );
    };
    let ca_block = "upstream_tls:\n  ca: ../internal-ca.pem\n";
    api("ok", format!("https://{h2}"), ca_block);
    api("h1", format!("https://{h1}"), ca_block);
    api(
        "by-name",
        format!("https://{h2}"),
        &format!("{ca_block}  server_name: orders.internal\n"),
    );
    api("system-roots", format!("https://{h2}"), "");
    api(
        "wrong-ca",
        format!("https://{h2}"),
        "upstream_tls:\n  ca: ../other-ca.pem\n",
    );
    api(
        "wrong-name",
        format!("https://{h2}"),
        &format!("{ca_block}  server_name: billing.internal\n"),
    );
    api(
        "mtls",
        format!("https://{needs_client_cert}"),
        &format!("{ca_block}  client_cert: ../gw.pem\n  client_key: ../gw.key\n"),
    );
    api("no-client-cert", format!("https://{needs_client_cert}"), ca_block);
    let gw = Gateway::start(config);

    for (id, version) in [
        ("ok", "HTTP/2.0"),
        ("h1", "HTTP/1.1"),
        ("by-name", "HTTP/2.0"),
        ("mtls", "HTTP/1.1"),
    ] {
        let (status, _, body) = get_json(&gw.url(&format!("/{id}/x"))).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["version"], version, "{id}: {body}");
    }
    for (id, reason) in [
        ("system-roots", "unknown issuer"),
        ("wrong-ca", "unknown issuer"),
        ("wrong-name", "name mismatch"),
        ("no-client-cert", "refused by the peer"),
    ] {
        let (status, _, body) = get_json(&gw.url(&format!("/{id}/x"))).await;
        crate::support::assert_gateway_error(status, &body, 502, "upstream unavailable");
        let request_id = body["request_id"].as_str().expect("request id");
        let log = gw.wait_for_log(request_id);
        let line = log.lines().find(|l| l.contains(request_id)).expect("log line");
        assert!(
            line.contains("TLS handshake with upstream") && line.contains(reason),
            "{id}: {line}"
        );
    }
}

#[tokio::test]
async fn a_plugin_fans_out_to_https_services_verified_like_the_upstream() {
    let ca = Ca::new("Services CA");
    let leaf = ca.server(&["127.0.0.1"]);
    let users = https_upstream(upstreams::records("users-service"), server_config(&leaf, true, None)).await;
    let stock = https_upstream(upstreams::records("stock-service"), server_config(&leaf, false, None)).await;
    let api = |id: &str, tls: &str| {
        format!(
            "id: {id}\nlisten_path: /{id}/\nstrip_listen_path: true\nupstream: http://{}\n{tls}outbound:\n  allow: ['{users}', '{stock}']\nendpoints:\n  - method: GET\n    path: /summary/{{id}}\n    plugin:\n      path: {}\n      function: merge\n      limits: {{ timeout_ms: 10000 }}\n      config:\n        services:\n          user: 'https://{users}/users/{{id}}'\n          stock: 'https://{stock}/stock/{{id}}'\n",
            closed_port(),
            plugin(Wasm::Aggregate).display()
        )
    };
    let config = ConfigDir::new(
        "apis: [apis/]\n",
        &[
            ("trusting.yaml", &api("trusting", "upstream_tls:\n  ca: ../ca.pem\n")),
            ("default.yaml", &api("default", "")),
        ],
    );
    std::fs::write(config.dir.path().join("ca.pem"), ca.pem()).expect("write CA");
    let gw = Gateway::start(config);

    let (status, headers, body) = get_json(&gw.url("/trusting/summary/4")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "false", "{body}");
    assert_eq!(body["user"]["source"], "users-service");
    assert_eq!(body["stock"]["source"], "stock-service");

    // Without the CA the calls fail verification: an error value the plugin
    // handles (partial results), not a trap.
    let (status, headers, body) = get_json(&gw.url("/default/summary/4")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-partial"], "true", "{body}");
    for part in ["user", "stock"] {
        let error = body["errors"][part].as_str().expect("error");
        assert!(
            error.starts_with("connect:") && error.contains("unknown issuer"),
            "{part}: {body}"
        );
    }
}

/// Replaces the listener's certificate files in `dir` with `leaf`'s, key
/// first then certificate, as a renewal script would.
fn install(dir: &Path, leaf: &Leaf) {
    std::fs::write(dir.join("api.key"), &leaf.key_pem).expect("write key");
    std::fs::write(dir.join("api.pem"), &leaf.cert_pem).expect("write cert");
}

#[tokio::test]
async fn certificates_are_replaced_on_disk_without_dropping_open_connections() {
    let ca = Ca::new("Rotation CA");
    let (old, new) = (ca.server(&["api.test"]), ca.server(&["api.test"]));
    let echo = upstream(upstreams::echo("echo")).await;
    let config = tls_config(
        "  certificates: [{ cert: api.pem, key: api.key }]\n  watch_interval_ms: 100\n",
        &echo_api(&echo, ""),
        &[("api", &old)],
    );
    let dir = config.dir.path().to_owned();
    let gw = Gateway::start(config);
    let addr = addr_of(gw.tls_url.as_deref().expect("https listener"));
    let url = format!("https://api.test:{}/echo/x", addr.port());
    let kept = client_for(&ca, &["api.test"], addr).build().expect("client");
    let served_by = |response: &reqwest::Response| peer_certificate(response);

    let response = kept.get(&url).send().await.expect("first");
    assert_eq!(served_by(&response), old.der().to_vec());
    let _ = response.bytes().await;

    install(&dir, &new);
    gw.wait_for_log("TLS certificates loaded");
    // The open connection keeps its session (a new one would see `new`).
    let response = kept.get(&url).send().await.expect("same connection");
    assert_eq!(served_by(&response), old.der().to_vec(), "the open connection was kept");
    let _ = response.bytes().await;
    let fresh = client_for(&ca, &["api.test"], addr).build().expect("client");
    let response = fresh.get(&url).send().await.expect("new connection");
    assert_eq!(served_by(&response), new.der().to_vec());

    // A key that does not belong to the certificate: logged with the file
    // and the reason, and `new` keeps serving.
    std::fs::write(dir.join("api.key"), &ca.server(&["api.test"]).key_pem).expect("write key");
    let log = gw.wait_for_log("cannot be loaded");
    assert!(
        log.contains("api.key") && log.contains("does not belong to the certificate"),
        "{log}"
    );
    let response = client_for(&ca, &["api.test"], addr)
        .build()
        .expect("client")
        .get(&url)
        .send()
        .await
        .expect("still served");
    assert_eq!(served_by(&response), new.der().to_vec());

    // A reload (SIGHUP) with the broken pair fails whole, naming the file.
    gw.reload();
    let log = gw.wait_for_log("reload failed");
    let line = log.lines().find(|l| l.contains("reload failed")).expect("line");
    assert!(
        line.contains("tls.certificates[0].key") && line.contains("api.key"),
        "{line}"
    );
}

#[tokio::test]
async fn the_metrics_say_how_long_each_certificate_has_left() {
    let ca = Ca::new("Metrics CA");
    let leaf = ca.server_expiring(&["api.test"], 2030);
    let echo = upstream(upstreams::echo("echo")).await;
    let config = ConfigDir::new(
        "apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: a-secret-of-16-chars\ntls:\n  certificates: [{ cert: api.pem, key: api.key }]\n",
        &[("api.yaml", &echo_api(&echo, "upstream_tls:\n  ca: ../api.pem\n"))],
    );
    leaf.write(config.dir.path(), "api");
    let gw = Gateway::start(config);
    let text = crate::support::scrape(&gw).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let expected = 1_893_456_000.0 - now; // 2030-01-01T00:00:00Z
    for role in ["listener", "upstream_ca"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("portcullis_tls_certificate_expiry_seconds{") && l.contains(&format!("role=\"{role}\""))
            })
            .unwrap_or_else(|| panic!("no {role} certificate in:\n{text}"));
        assert!(line.contains("CN=api.test") && line.contains("api.pem"), "{line}");
        let seconds: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("value");
        assert!((seconds - expected).abs() < 600.0, "{line} (expected about {expected})");
        // The absolute time too, which alerts can compare with time().
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("portcullis_tls_certificate_not_after_timestamp_seconds{")
                    && l.contains(&format!("role=\"{role}\""))
            })
            .unwrap_or_else(|| panic!("no {role} not_after in:\n{text}"));
        assert!(line.ends_with(" 1893456000"), "{line}");
    }
}

#[test]
fn bad_certificates_are_load_errors_that_name_the_field_and_the_file() {
    let ca = Ca::new("Errors CA");
    let (a, b) = (ca.server(&["a.test"]), ca.server(&["b.test"]));
    let cases: [(&str, &str); 5] = [
        (
            "  certificates: [{ cert: a.pem, key: b.key }]\n",
            "tls.certificates[0].key: ",
        ),
        (
            "  certificates: [{ cert: missing.pem, key: a.key }]\n",
            "missing.pem: cannot read",
        ),
        ("  certificates: [{ cert: a.key, key: a.key }]\n", "no certificate"),
        ("  certificates: []\n", "tls.certificates: list at least one"),
        (
            "  certificates: [{ cert: a.pem, key: a.key }]\n  client_auth: required\n",
            "tls.client_auth: client certificates need a client_ca",
        ),
    ];
    for (tls, expected) in cases {
        let config = tls_config(tls, &echo_api("http://127.0.0.1:1", ""), &[("a", &a), ("b", &b)]);
        let output = validate(&config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{tls}");
        assert!(
            stderr.contains("gateway.yaml") && stderr.contains(expected),
            "{tls}: {stderr}"
        );
    }
    let config = tls_config(
        "  certificates: [{ cert: a.pem, key: b.key }]\n",
        &echo_api("http://127.0.0.1:1", ""),
        &[("a", &a), ("b", &b)],
    );
    let stderr = String::from_utf8_lossy(&validate(&config).stderr).into_owned();
    assert!(
        stderr.contains("b.key: this key does not belong to the certificate"),
        "{stderr}"
    );

    let upstream_cases = [
        ("upstream_tls:\n  ca: nowhere.pem\n", "upstream_tls.ca: "),
        (
            "upstream_tls:\n  client_cert: ../a.pem\n",
            "upstream_tls.client_key: a client_cert needs its client_key",
        ),
        (
            "upstream_tls:\n  server_name: 'not a name'\n",
            "upstream_tls.server_name",
        ),
    ];
    let mismatched = "upstream_tls:\n  client_cert: ../a.pem\n  client_key: ../b.key\n";
    let upstream_cases = upstream_cases
        .into_iter()
        .chain([(mismatched, "upstream_tls.client_key: ")]);
    for (block, expected) in upstream_cases {
        let config = ConfigDir::single(&echo_api("https://127.0.0.1:1", block));
        a.write(config.dir.path(), "a");
        b.write(config.dir.path(), "b");
        let output = validate(&config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{block}: {stderr}"
        );
    }
}

#[test]
fn listen_tls_without_certificates_is_refused() {
    let config = ConfigDir::single(&echo_api("http://127.0.0.1:1", ""));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(config.gateway_file())
        .args(["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--listen-tls needs a `tls:` block"), "{stderr}");
}

#[tokio::test]
async fn an_https_only_gateway_prints_only_the_https_line() {
    let ca = Ca::new("Only CA");
    let leaf = ca.server(&["api.test"]);
    let echo = upstream(upstreams::echo("echo")).await;
    let config = ConfigDir::new(
        "listen: false\napis: [apis/]\ntls:\n  listen: 127.0.0.1:0\n  certificates: [{ cert: api.pem, key: api.key }]\n",
        &[("api.yaml", &echo_api(&echo, ""))],
    );
    leaf.write(config.dir.path(), "api");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(config.gateway_file())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    assert!(url.starts_with("https://"), "{line}");
    let addr = addr_of(&url);
    let response = client_for(&ca, &["api.test"], addr)
        .build()
        .expect("client")
        .get(format!("https://api.test:{}/echo/x", addr.port()))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(response.expect("served over https").status(), 200);
}
