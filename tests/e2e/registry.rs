//! Plugins from OCI registries: a real registry (Debian's docker-registry,
//! the CNCF distribution server) on loopback, pushed to and signed with
//! `portcullis plugin`, loaded by tag and by digest, from the cache when the
//! registry is down, and refused by the trust policy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use serde_json::json;

use crate::support::pki::Ca;
use crate::support::*;

/// A `docker-registry` on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, as references write the host.
    host: String,
    /// Its storage, to tamper with.
    data: PathBuf,
    _dir: tempfile::TempDir,
}

/// Basic auth and TLS for a registry.
struct Secured<'a> {
    user: &'a str,
    password: &'a str,
    ca: &'a Ca,
}

impl Registry {
    fn start(secured: Option<&Secured<'_>>) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut extra = String::new();
        if let Some(s) = secured {
            let leaf = s.ca.server(&["127.0.0.1", "localhost"]);
            let (cert, key) = leaf.write(dir.path(), "registry");
            let hash = bcrypt::hash(s.password, 4).expect("bcrypt");
            std::fs::write(dir.path().join("htpasswd"), format!("{}:{hash}\n", s.user)).expect("htpasswd");
            extra = format!(
                "  tls: {{ certificate: {}, key: {} }}\nauth:\n  htpasswd: {{ realm: portcullis-tests, path: {} }}\n",
                cert.display(),
                key.display(),
                dir.path().join("htpasswd").display()
            );
        }
        // The registry takes its address from its configuration: pick a
        // free port, and pick again if another process took it meanwhile.
        for _ in 0..5 {
            let port = closed_port().port();
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog: {{ level: error }}\nstorage:\n  filesystem: {{ rootdirectory: {} }}\n  delete: {{ enabled: true }}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                    data.display()
                ),
            )
            .expect("config");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry is needed: `cargo xtask test` installs it (apt-get install docker-registry)");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Registry {
                        child,
                        host: format!("127.0.0.1:{port}"),
                        data,
                        _dir: dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }

    fn reference(&self, repository: &str) -> String {
        format!("oci://{}/{repository}", self.host)
    }

    /// Overwrites a blob in the registry's storage, as an attacker with
    /// access to it would.
    fn tamper(&self, digest: &str, bytes: &[u8]) {
        let hex = digest.strip_prefix("sha256:").expect("sha256");
        let path = self
            .data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        assert!(path.is_file(), "no blob {}", path.display());
        std::fs::write(path, bytes).expect("tamper");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn portcullis(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command
        .args(args)
        .env_remove("REGISTRY_AUTH_FILE")
        .env("HOME", "/nonexistent");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run portcullis")
}

/// `portcullis validate` of `config` with `env` set.
fn validate_with(config: &ConfigDir, env: &[(&str, &str)]) -> Output {
    let file = config.gateway_file();
    portcullis(&["validate", "--config", file.to_str().expect("utf-8")], env)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `plugin push`es `wasm` and returns the pushed `oci://...@sha256:...`.
fn push(wasm: &Path, reference: &str, extra: &[&str], env: &[(&str, &str)]) -> String {
    let file = wasm.to_str().expect("utf-8");
    let output = portcullis(&[&["plugin", "push", file, reference][..], extra].concat(), env);
    assert!(output.status.success(), "push failed: {}", stderr(&output));
    let line = stdout(&output);
    let pushed = line.trim().strip_prefix("pushed ").expect("pushed line").to_owned();
    assert!(pushed.contains("@sha256:"), "{pushed}");
    pushed
}

fn digest_of(pushed: &str) -> String {
    pushed.split('@').nth(1).expect("digest").to_owned()
}

/// A copy of `wasm` with a custom section appended: the same plugin with
/// another digest.
fn variant(wasm: &Path, dir: &Path, tag: &str) -> PathBuf {
    let mut bytes = std::fs::read(wasm).expect("read wasm");
    let name = b"portcullis-test";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    bytes.push(0);
    bytes.push(u8::try_from(size).expect("small section"));
    bytes.push(u8::try_from(name.len()).expect("small name"));
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let path = dir.join(format!("hello-{tag}.wasm"));
    std::fs::write(&path, bytes).expect("write variant");
    path
}

/// A signing key (PKCS#8 PEM) and its public key written to `dir`.
fn key_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let pem = portcullis::cosign::SigningKey::generate_pem().expect("key");
    let key = portcullis::cosign::SigningKey::from_pem(pem.as_bytes(), b"").expect("key");
    let (private, public) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.pub")));
    std::fs::write(&private, pem).expect("write key");
    std::fs::write(&public, key.public().to_pem()).expect("write pub");
    (private, public)
}

fn sign(target: &str, key: &Path, extra: &[&str]) {
    let output = portcullis(
        &[
            &["plugin", "sign", target, "--key", key.to_str().expect("utf-8")][..],
            extra,
        ]
        .concat(),
        &[],
    );
    assert!(output.status.success(), "sign failed: {}", stderr(&output));
}

fn hello_api(reference: &str) -> String {
    yaml(json!({
        "id": "hello",
        "listen_path": "/hello/",
        "upstream": "http://127.0.0.1:9",
        "endpoints": [{ "path": "/{name}", "plugin": { "path": reference, "function": "hello" } }],
    }))
}

/// A configuration with its own plugin cache (so fetching is what is
/// tested) and `gateway_extra` in the gateway file.
fn config(gateway_extra: &str, cache: &Path, api: &str) -> ConfigDir {
    ConfigDir::new(
        &format!(
            "apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: registry-tests-secret\naccess_log: {{ path: access.log }}\nplugin_cache: {}\n{gateway_extra}",
            cache.display()
        ),
        &[("api.yaml", api)],
    )
}

async fn greets(gw: &Gateway) {
    let (status, headers, body) = get_json(&gw.url("/hello/registry")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Hello, registry!");
    assert_eq!(headers["x-served-by"], "hello.wasm");
}

async fn components(gw: &Gateway) -> serde_json::Value {
    let response = client()
        .get(gw.admin("/apis"))
        .header("x-admin-secret", "registry-tests-secret")
        .send()
        .await
        .expect("/apis");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 200);
    body["apis"][0]["components"].clone()
}

#[tokio::test]
async fn pushed_plugins_load_by_tag_and_by_digest_and_show_the_digest_that_runs() {
    let registry = Registry::start(None);
    let pushed = push(&plugin(Wasm::Hello), &registry.reference("team/hello:1.0"), &[], &[]);
    let digest = digest_of(&pushed);
    let cache = tempfile::tempdir().expect("cache");

    for reference in [registry.reference("team/hello:1.0"), pushed.clone()] {
        let gw = Gateway::start(config("", cache.path(), &hello_api(&reference)));
        greets(&gw).await;
        let components = components(&gw).await;
        assert_eq!(components[0]["source"], reference.as_str(), "{components}");
        assert_eq!(components[0]["digest"], digest.as_str(), "{components}");
        assert_eq!(components[0]["contract"], "0.2");
        let label = if reference.contains('@') {
            "hello#hello"
        } else {
            "hello:1.0#hello"
        };
        assert_eq!(components[0]["plugin"], label, "{components}");
        let log_file = gw.config.dir.path().join("access.log");
        let mut line = String::new();
        eventually("the access log line", || {
            line = std::fs::read_to_string(&log_file).unwrap_or_default();
            std::future::ready(line.contains("/hello/registry"))
        })
        .await;
        let entry: serde_json::Value = serde_json::from_str(line.lines().last().expect("a line")).expect("JSON");
        let ran = entry["portcullis.plugins"][0].as_str().expect("plugins").to_owned();
        assert!(ran.ends_with(&format!("#hello@{digest}")), "{entry}");
    }

    // Registry plugins live in the plugin cache: without one they cannot load.
    let uncached = ConfigDir::new(
        "apis: [apis/]\nplugin_cache: false\n",
        &[("api.yaml", &hello_api(&pushed))],
    );
    let error = refusal(&uncached);
    assert!(error.contains("`plugin_cache: false` turns off"), "{error}");

    // `inspect` reads the remote reference as the gateway does, into the
    // default plugin cache (under XDG_CACHE_HOME).
    let home_cache = tempfile::tempdir().expect("cache home");
    let output = portcullis(
        &["plugin", "inspect", &registry.reference("team/hello:1.0"), "--json"],
        &[("XDG_CACHE_HOME", home_cache.path().to_str().expect("utf-8"))],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let inspected: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    assert_eq!(inspected["manifest_digest"], digest.as_str());
    assert_eq!(inspected["functions"][0]["name"], "hello");
    assert_eq!(inspected["signatures"], 0);
    let cached = home_cache.path().join("portcullis/oci/blobs");
    assert!(
        inspected["file"]
            .as_str()
            .is_some_and(|f| Path::new(f).starts_with(&cached)),
        "{inspected}"
    );
}

#[tokio::test]
async fn a_gateway_starts_from_its_cache_when_the_registry_is_down_and_a_moved_tag_is_picked_up_on_reload() {
    let registry = Registry::start(None);
    let scratch = tempfile::tempdir().expect("dir");
    let first = digest_of(&push(
        &plugin(Wasm::Hello),
        &registry.reference("team/hello:live"),
        &[],
        &[],
    ));
    let cache = tempfile::tempdir().expect("cache");
    let api = hello_api(&registry.reference("team/hello:live"));

    let gw = Gateway::start(config("", cache.path(), &api));
    greets(&gw).await;
    assert_eq!(components(&gw).await[0]["digest"], first.as_str());

    // The tag moves: a reload resolves it again and runs the new digest.
    let second = digest_of(&push(
        &variant(&plugin(Wasm::Hello), scratch.path(), "two"),
        &registry.reference("team/hello:live"),
        &[],
        &[],
    ));
    assert_ne!(first, second);
    gw.reload();
    eventually("the moved tag's digest", || async {
        components(&gw).await[0]["digest"] == second.as_str()
    })
    .await;
    greets(&gw).await;
    drop(gw);

    // With the registry gone, a restart loads the last digest from the cache.
    let cached_config = config("", cache.path(), &api);
    drop(registry);
    let gw = Gateway::start(cached_config);
    greets(&gw).await;
    assert_eq!(components(&gw).await[0]["digest"], second.as_str());
    let log = gw.wait_for_log("registry not reachable: loading the plugin from the cache");
    assert!(log.contains("team/hello:live"), "{log}");

    // A reference never fetched cannot start without its registry, and a
    // reload to it keeps the running configuration.
    gw.config.write_api(
        "api.yaml",
        &hello_api(&format!("{}/team/other:1", gw_registry_host(&api))),
    );
    gw.reload();
    let log = gw.wait_for_log("not in the plugin cache");
    assert!(log.contains("team/other:1"), "{log}");
    greets(&gw).await;
}

/// The registry host an API file's reference names.
fn gw_registry_host(api: &str) -> String {
    let start = api.find("oci://").expect("oci reference");
    let rest = &api[start..];
    let end = rest[6..].find('/').expect("host") + 6;
    rest[..end].to_owned()
}

fn trust(keys: &[&Path]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| k.display().to_string()).collect();
    format!("plugin_trust: {{ keys: [{}], require: signed }}\n", keys.join(", "))
}

fn refusal(config: &ConfigDir) -> String {
    let output = validate(config);
    assert!(!output.status.success(), "loaded: {}", stdout(&output));
    stderr(&output)
}

#[tokio::test]
async fn the_trust_policy_refuses_unsigned_wrongly_signed_tampered_and_mismatched_plugins() {
    let registry = Registry::start(None);
    let keys = tempfile::tempdir().expect("keys");
    let (trusted_key, trusted_pub) = key_pair(keys.path(), "trusted");
    let (other_key, _) = key_pair(keys.path(), "other");
    let policy = trust(&[&trusted_pub]);
    let fresh_cache = || tempfile::tempdir().expect("cache");

    // Signed by the trusted key: loads, and serves.
    let signed = push(&plugin(Wasm::Hello), &registry.reference("team/signed:1"), &[], &[]);
    sign(&signed, &trusted_key, &[]);
    let cache = fresh_cache();
    let gw = Gateway::start(config(&policy, cache.path(), &hello_api(&signed)));
    greets(&gw).await;

    // Unsigned.
    let unsigned = push(&plugin(Wasm::Hello), &registry.reference("team/unsigned:1"), &[], &[]);
    let error = refusal(&config(&policy, fresh_cache().path(), &hello_api(&unsigned)));
    assert!(
        error.contains("not signed: no cosign signature at tag sha256-"),
        "{error}"
    );
    assert!(
        error.contains(&digest_of(&unsigned)) && error.contains("team/unsigned"),
        "{error}"
    );
    assert!(error.contains("endpoints[0].plugin.path"), "{error}");

    // A reload to it keeps the signed plugin serving.
    gw.config.write_api("api.yaml", &hello_api(&unsigned));
    gw.reload();
    gw.wait_for_log("not signed: no cosign signature");
    greets(&gw).await;

    // One tag named by an API that needs no signature and by one that
    // needs it: one digest, whose signatures are looked up for the second.
    let strict_api = |reference: &str| {
        let api = hello_api(reference)
            .replace("id: hello", "id: strict")
            .replace("/hello/", "/strict/");
        format!("{api}plugin_trust: {{ require: signed }}\n")
    };
    let lenient = format!("plugin_trust: {{ keys: [{}], require: any }}\n", trusted_pub.display());
    let both = |reference: &str| {
        let cache = fresh_cache();
        let dir = ConfigDir::new(
            &format!("apis: [apis/]\nplugin_cache: {}\n{lenient}", cache.path().display()),
            &[("a.yaml", &hello_api(reference)), ("b.yaml", &strict_api(reference))],
        );
        (validate(&dir), cache)
    };
    let (output, _cache) = both(&registry.reference("team/signed:1"));
    assert!(output.status.success(), "{}", stderr(&output));
    let (output, _cache) = both(&registry.reference("team/unsigned:1"));
    assert!(!output.status.success(), "{}", stdout(&output));
    let error = stderr(&output);
    assert!(error.contains("b.yaml") && error.contains("not signed"), "{error}");

    // Signed by a key the policy does not name.
    let scratch = tempfile::tempdir().expect("dir");
    let other = push(
        &variant(&plugin(Wasm::Hello), scratch.path(), "other"),
        &registry.reference("team/other:1"),
        &[],
        &[],
    );
    sign(&other, &other_key, &[]);
    let error = refusal(&config(&policy, fresh_cache().path(), &hello_api(&other)));
    assert!(
        error.contains("signed, but by no trusted key: 1 signature(s) checked against"),
        "{error}"
    );

    // The same signature passes once the other key is trusted: the refusal
    // was the key's.
    let other_pub = keys.path().join("other.pub");
    let output = validate(&config(
        &trust(&[&trusted_pub, &other_pub]),
        fresh_cache().path(),
        &hello_api(&other),
    ));
    assert!(output.status.success(), "{}", stderr(&output));

    // A layer changed in the registry's storage after signing.
    let tampered = push(
        &variant(&plugin(Wasm::Hello), scratch.path(), "tampered"),
        &registry.reference("team/tampered:1"),
        &[],
        &[],
    );
    sign(&tampered, &trusted_key, &[]);
    let wasm_digest = format!(
        "sha256:{}",
        portcullis::text::hex(&<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(scratch.path().join("hello-tampered.wasm")).expect("wasm")
        ))
    );
    let mut evil = std::fs::read(plugin(Wasm::Hello)).expect("wasm");
    evil.extend_from_slice(&[0, 4, 3, b'e', b'v', b'l']);
    registry.tamper(&wasm_digest, &evil);
    let error = refusal(&config(&policy, fresh_cache().path(), &hello_api(&tampered)));
    assert!(error.contains("tampered layer"), "{error}");

    // A manifest that is not the digest the reference names.
    let mismatched = push(
        &variant(&plugin(Wasm::Hello), scratch.path(), "mismatch"),
        &registry.reference("team/mismatch:1"),
        &[],
        &[],
    );
    sign(&mismatched, &trusted_key, &[]);
    registry.tamper(&digest_of(&mismatched), br#"{"schemaVersion":2,"layers":[]}"#);
    let error = refusal(&config(&policy, fresh_cache().path(), &hello_api(&mismatched)));
    assert!(error.contains("digest mismatch"), "{error}");

    greets(&gw).await;
}

#[tokio::test]
async fn require_digest_and_signed_files_hold_local_plugins_too() {
    let keys = tempfile::tempdir().expect("keys");
    let (key, public) = key_pair(keys.path(), "trusted");
    let dir = tempfile::tempdir().expect("dir");
    let wasm = dir.path().join("hello.wasm");
    std::fs::copy(plugin(Wasm::Hello), &wasm).expect("copy");
    let api = hello_api(wasm.to_str().expect("utf-8"));
    let cache = tempfile::tempdir().expect("cache");

    let error = refusal(&config("plugin_trust: { require: digest }\n", cache.path(), &api));
    assert!(error.contains("not pinned: plugin_trust requires a digest"), "{error}");

    let error = refusal(&config(&trust(&[&public]), cache.path(), &api));
    assert!(error.contains("not signed: no signature file"), "{error}");
    sign(wasm.to_str().expect("utf-8"), &key, &[]);
    let gw = Gateway::start(config(&trust(&[&public]), cache.path(), &api));
    greets(&gw).await;

    // A changed file no longer matches its signature.
    let mut bytes = std::fs::read(&wasm).expect("read");
    bytes.extend_from_slice(&[0, 4, 3, b'e', b'v', b'l']);
    std::fs::write(&wasm, bytes).expect("write");
    let error = refusal(&config(&trust(&[&public]), cache.path(), &api));
    assert!(error.contains("does not verify with any trusted key"), "{error}");

    // An API may only be stricter than its gateway.
    let weaker = format!("{api}plugin_trust: {{ require: any }}\n");
    let error = refusal(&config(&trust(&[&public]), cache.path(), &weaker));
    assert!(error.contains("weaker than the gateway's `signed`"), "{error}");
}

#[tokio::test]
async fn credentials_come_from_env_and_from_auth_json_over_verified_tls() {
    let ca = Ca::new("registry tests CA");
    let registry = Registry::start(Some(&Secured {
        user: "alice",
        password: "s3cret-pw",
        ca: &ca,
    }));
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    let with_env = format!(
        "plugin_registries:\n  registries:\n    \"{}\": {{ username: env:REG_USER, password: env:REG_PASS, ca_file: {} }}\n",
        registry.host,
        ca_file.display()
    );
    let gateway_file = dir.path().join("gateway.yaml");
    std::fs::write(&gateway_file, format!("apis: []\n{with_env}")).expect("gateway file");
    let creds = [("REG_USER", "alice"), ("REG_PASS", "s3cret-pw")];
    let pushed = push(
        &plugin(Wasm::Hello),
        &registry.reference("team/hello:1"),
        &["--gateway", gateway_file.to_str().expect("utf-8")],
        &creds,
    );

    let cache = tempfile::tempdir().expect("cache");
    let configured = config(&with_env, cache.path(), &hello_api(&pushed));
    let output = validate_with(&configured, &creds);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("s3cret-pw") && !stdout(&output).contains("s3cret-pw"));

    // Fetched once, a digest is served from the cache: a fresh one makes
    // the wrong password meet the registry.
    let fresh = tempfile::tempdir().expect("cache");
    let configured = config(&with_env, fresh.path(), &hello_api(&pushed));
    let output = validate_with(&configured, &[("REG_USER", "alice"), ("REG_PASS", "wrong")]);
    let error = stderr(&output);
    assert!(!output.status.success() && !error.contains("wrong"), "{error}");
    assert!(error.contains("team/hello"), "{error}");

    // auth.json, as `docker login` and `podman login` write it.
    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        json!({ "auths": { registry.host.clone(): { "auth": "YWxpY2U6czNjcmV0LXB3" } } }).to_string(),
    )
    .expect("auth.json");
    let with_file = format!(
        "plugin_registries:\n  auth_file: {}\n  registries:\n    \"{}\": {{ ca_file: {} }}\n",
        auth.display(),
        registry.host,
        ca_file.display()
    );
    let output = validate(&config(
        &with_file,
        tempfile::tempdir().expect("cache").path(),
        &hello_api(&pushed),
    ));
    assert!(output.status.success(), "{}", stderr(&output));

    // Without the CA, the registry's certificate is not trusted.
    let untrusted = format!(
        "plugin_registries:\n  auth_file: {}\n  registries:\n    \"{}\": {{ http: false }}\n",
        auth.display(),
        registry.host
    );
    let output = validate(&config(
        &untrusted,
        tempfile::tempdir().expect("cache").path(),
        &hello_api(&pushed),
    ));
    assert!(!output.status.success(), "an unknown CA was accepted");
}

// Multi-threaded: `validate` blocks this thread while the fake registry
// answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_stalls_or_sends_too_much_is_bounded() {
    let huge = 8u64 << 20;
    let manifest = |size: u64| {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.wasm.config.v0+json", "digest": format!("sha256:{}", "0".repeat(64)), "size": 2 },
            "layers": [{ "mediaType": "application/wasm", "digest": format!("sha256:{}", "1".repeat(64)), "size": size }],
        })
        .to_string()
    };
    let (declared_huge, declared_small) = (manifest(huge), manifest(1024));
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route(
            "/v2/stall/manifests/{tag}",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                ""
            }),
        )
        .route(
            "/v2/huge/manifests/{tag}",
            get(move || {
                let body = declared_huge.clone();
                async move { ([("content-type", "application/vnd.oci.image.manifest.v1+json")], body) }
            }),
        )
        .route(
            "/v2/liar/manifests/{tag}",
            get(move || {
                let body = declared_small.clone();
                async move { ([("content-type", "application/vnd.oci.image.manifest.v1+json")], body) }
            }),
        )
        .route(
            "/v2/liar/blobs/{digest}",
            get(move || async move { vec![0u8; 4 << 20] }),
        );
    let base = upstream(app).await;
    let host = base.trim_start_matches("http://").to_owned();
    let limits = "plugin_registries: { pull_timeout_ms: 500, max_plugin_bytes: 1048576 }\n";
    let cache = tempfile::tempdir().expect("cache");

    let started = Instant::now();
    let error = refusal(&config(
        limits,
        cache.path(),
        &hello_api(&format!("oci://{host}/stall:1")),
    ));
    assert!(error.contains("within plugin_registries.pull_timeout_ms"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(60), "the pull was not cut off");

    let error = refusal(&config(
        limits,
        cache.path(),
        &hello_api(&format!("oci://{host}/huge:1")),
    ));
    assert!(
        error.contains("above plugin_registries.max_plugin_bytes (1048576)"),
        "{error}"
    );

    let error = refusal(&config(
        limits,
        cache.path(),
        &hello_api(&format!("oci://{host}/liar:1")),
    ));
    assert!(
        error.contains("sent more than the 1024 bytes its manifest declares"),
        "{error}"
    );
}
