//! The plugin contract across versions: 0.1 plugins, built from their frozen
//! 0.1 sources and SDK, load and behave as before beside 0.2 ones in one
//! configuration; and what 0.2 adds (auth functions that change the
//! request, request-phase headers on the client's response, the session's
//! alias, plugin sessions through the admin API).

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::support::{
    ConfigDir, Gateway, Wasm, client, get_with, guest_cargo, plugin, plugin_v01, upstream, upstreams,
};

const SECRET: &str = "contract-admin-secret";

/// Two APIs with the same plugins (auth, a `pre` policy, the hello
/// endpoint, an aggregate endpoint), one built for each contract version.
/// `grant` is the extra part of the token's entry (the 0.1 auth example has
/// no alias, and refuses fields it does not know).
fn api(id: &str, upstream: &str, wasm: &dyn Fn(Wasm) -> String, grant: &str) -> String {
    format!(
        r#"id: {id}
name: {id}
listen_path: /{id}/
strip_listen_path: true
upstream: {upstream}
auth: {{ type: plugin }}
outbound: {{ allow: ['{host}'] }}
plugins:
  auth:
    path: {auth}
    function: bearer-token
    config:
      tokens:
        tok-ada: {{ user: ada, tags: [staff]{grant} }}
  pre:
    - path: {policy}
      function: require-header
      config: {{ header: x-client, add_headers: {{ x-policy: checked }} }}
endpoints:
  - method: GET
    path: /hello/{{name}}
    plugin: {{ path: {hello}, function: hello, config: {{ greeting: Hi }} }}
  - method: GET
    path: /both/{{id}}
    plugin:
      path: {aggregate}
      function: merge
      config: {{ services: {{ a: '{upstream}/a/{{id}}', b: '{upstream}/b/{{id}}' }} }}
"#,
        host = upstream.trim_start_matches("http://"),
        auth = wasm(Wasm::Auth),
        policy = wasm(Wasm::Policy),
        hello = wasm(Wasm::Hello),
        aggregate = wasm(Wasm::Aggregate),
    )
}

fn both_versions(echo: &str) -> ConfigDir {
    let v01 = |wasm: Wasm| plugin_v01(wasm).display().to_string();
    let v02 = |wasm: Wasm| plugin(wasm).display().to_string();
    ConfigDir::new(
        &format!("apis: [apis/]\nadmin_listen: 127.0.0.1:0\nadmin_secret: {SECRET}\n"),
        &[
            ("old.yaml", &api("old", echo, &v01, "")),
            ("new.yaml", &api("new", echo, &v02, ", alias: Ada Lovelace")),
        ],
    )
}

const CALLER: [(&str, &str); 2] = [("authorization", "Bearer tok-ada"), ("x-client", "tests")];

#[tokio::test]
async fn plugins_of_both_contract_versions_serve_side_by_side_and_behave_the_same() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(both_versions(&echo));
    let log = gw.log();
    for id in ["old", "new"] {
        assert!(!log.contains("error"), "{id}: {log}");

        let (status, _, body) = get_with(&gw.url(&format!("/{id}/hello/x")), &[("x-client", "t")]).await;
        assert_eq!(
            (status, &body),
            (401, &json!({ "error": "missing bearer token" })),
            "{id}"
        );
        let bearer = [CALLER[0]];
        let (status, _, body) = get_with(&gw.url(&format!("/{id}/hello/x")), &bearer).await;
        assert_eq!(status, 403, "{id}: the pre policy rejects first: {body}");

        let (status, _, body) = get_with(&gw.url(&format!("/{id}/hello/ada?lang=en")), &CALLER).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["message"], "Hi, ada!", "{id}");
        assert_eq!(
            (body["path"].as_str(), body["query"].as_str()),
            (Some(&*format!("/{id}/hello/ada")), Some("lang=en"))
        );
        assert_eq!(body["api"], id);

        let (status, headers, body) = get_with(&gw.url(&format!("/{id}/both/7")), &CALLER).await;
        assert_eq!(status, 200, "{id}: {body}");
        assert_eq!(body["a"]["path"], "/a/7", "{id}: {body}");
        assert_eq!(body["b"]["path"], "/b/7", "{id}: {body}");
        assert_eq!(body["id"], "7");
        assert_eq!(headers["x-partial"], "false", "{id}");
        assert_eq!(body["a"]["headers"]["accept"], json!(["application/json"]), "{id}");

        let (status, _, seen) = get_with(&gw.url(&format!("/{id}/plain")), &CALLER).await;
        assert_eq!(status, 200, "{id}: {seen}");
        assert_eq!(seen["headers"]["x-policy"], json!(["checked"]), "{id}: {seen}");
    }
}

#[tokio::test]
async fn an_auth_function_changes_the_request_and_the_clients_response_and_names_the_caller() {
    let echo = upstream(upstreams::echo("up")).await;
    let gw = Gateway::start(both_versions(&echo));

    // 0.2: the auth example tells the upstream who the caller is, drops the
    // token, and tells the client whom it was served for.
    let (status, headers, seen) = get_with(&gw.url("/new/plain"), &CALLER).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["headers"]["x-auth-user"], json!(["ada"]), "{seen}");
    assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    assert!(
        seen["headers"].get("x-served-for").is_none(),
        "response headers never go upstream: {seen}"
    );
    assert_eq!(headers["x-served-for"], "ada");
    // On a plugin's own response too.
    let (_, headers, _) = get_with(&gw.url("/new/hello/ada"), &CALLER).await;
    assert_eq!(headers["x-served-for"], "ada");

    // 0.1: the same example, as it was, changes nothing of the kind.
    let (status, headers, seen) = get_with(&gw.url("/old/plain"), &CALLER).await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen["headers"].get("x-auth-user").is_none(), "{seen}");
    assert_eq!(seen["headers"]["authorization"], json!(["Bearer tok-ada"]), "{seen}");
    assert!(headers.get("x-served-for").is_none());

    // The admin API lists, reads and deletes sessions auth plugins created,
    // by key id; the 0.2 one carries its alias.
    let admin = |path: &str| client().get(gw.admin(path)).header("x-admin-secret", SECRET);
    let listed: Value = admin("/keys").send().await.expect("list").json().await.expect("json");
    let plugin_keys: Vec<&Value> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["source"] == "plugin")
        .collect();
    assert_eq!(plugin_keys.len(), 1, "one key id, ada, shared by both APIs: {listed}");
    assert_eq!(plugin_keys[0]["key_id"], "ada");
    let read = admin("/keys/ada").send().await.expect("read");
    assert_eq!(read.status(), 200);
    let session: Value = read.json().await.expect("json");
    assert_eq!(session["key_id"], "ada");
    assert_eq!(session["tags"], json!(["staff"]));
    assert!(
        session["alias"] == "Ada Lovelace" || session["alias"].is_null(),
        "the last auth to save it decides: {session}"
    );
    let (_, _, _) = get_with(&gw.url("/new/plain"), &CALLER).await;
    let session: Value = admin("/keys/ada")
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert_eq!(session["alias"], "Ada Lovelace", "{session}");

    let delete = || {
        client()
            .delete(gw.admin("/keys/ada"))
            .header("x-admin-secret", SECRET)
            .send()
    };
    assert_eq!(delete().await.expect("delete").status(), 204);
    assert_eq!(admin("/keys/ada").send().await.expect("read").status(), 404);
    assert_eq!(delete().await.expect("delete again").status(), 404);
}

/// Runs `command`, failing the test with its output if it fails.
fn run(command: &mut std::process::Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `cargo package` of the SDK and of the wire crate it reads inputs with
/// (published together, the wire crate first), unpacked into a directory
/// outside the repository, builds a plugin (from crates.io dependencies and
/// the WIT inside the package) that a gateway loads and runs.
#[tokio::test]
async fn the_packaged_sdk_builds_a_plugin_outside_the_repository() {
    let root = crate::support::repo_root();
    // Kept between runs (like every target/ directory) so a rerun is quick.
    let target = root.join("target/sdk-package");
    run(
        guest_cargo()
            .args([
                "package",
                "-p",
                "portcullis-wire",
                "-p",
                "portcullis-sdk",
                "--allow-dirty",
                "--no-verify",
                "--quiet",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(&root),
        "cargo package",
    );
    let version = std::fs::read_to_string(root.join("plugin-sdk/Cargo.toml"))
        .expect("read the SDK's manifest")
        .lines()
        .find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"').map(str::to_owned))
        .expect("the SDK's version");
    let outside = tempfile::tempdir().expect("tempdir");
    for package in ["portcullis-sdk", "portcullis-wire"] {
        run(
            std::process::Command::new("tar")
                .arg("xzf")
                .arg(target.join(format!("package/{package}-{version}.crate")))
                .arg("-C")
                .arg(outside.path()),
            "tar",
        );
    }
    let crate_dir = outside.path().join("greeter");
    std::fs::create_dir_all(crate_dir.join("src")).expect("mkdir");
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"greeter\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nportcullis-sdk = {{ path = \"../portcullis-sdk-{version}\" }}\n\n[workspace]\n\n\
             # As if published: the SDK's package names the wire crate by version.\n\
             [patch.crates-io]\nportcullis-wire = {{ path = \"../portcullis-wire-{version}\" }}\n"
        ),
    )
    .expect("write Cargo.toml");
    std::fs::write(
        crate_dir.join("src/lib.rs"),
        r#"use portcullis_sdk::{plugin, Context, Outcome, Request, RequestChanges, Response, Result};

fn greet(req: &Request, ctx: &Context) -> Result<Outcome> {
    let body = format!("{} {} for {}", req.method(), req.uri(), ctx.api().id);
    Ok(Response::text(200, body).set_header("x-greeter", "outside").into())
}

fn stamp(_: &Request, _: &Context) -> Result<Outcome> {
    Ok(RequestChanges::new().response_header("x-stamp", "outside").into())
}

plugin! {
    request "greet" => greet,
    request "stamp" => stamp,
}
"#,
    )
    .expect("write lib.rs");
    let shared_target = root.join("target/sdk-outside");
    run(
        guest_cargo()
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&shared_target)
            .current_dir(&crate_dir),
        "building a plugin with the packaged SDK",
    );
    let wasm = shared_target.join("wasm32-wasip2/release/greeter.wasm");

    let text = format!(
        "id: out\nname: out\nlisten_path: /out/\nupstream: http://{}\nplugins:\n  pre:\n    - {{ path: {wasm}, function: stamp }}\nendpoints:\n  - method: GET\n    path: /greet\n    plugin: {{ path: {wasm}, function: greet }}\n",
        crate::support::closed_port(),
        wasm = wasm.display()
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client().get(gw.url("/out/greet?x=1")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-greeter"], "outside");
    assert_eq!(response.headers()["x-stamp"], "outside");
    assert_eq!(response.text().await.expect("body"), "GET /out/greet?x=1 for out");
}

/// Headers a request-phase plugin sets on the client's response: replaced,
/// not appended; the later plugin wins; framing headers dropped; a header
/// the gateway cannot send fails the request before the upstream hears of
/// it.
#[tokio::test]
async fn response_headers_from_the_request_phase_are_checked_and_replace_the_upstreams() {
    let (counter, count) = upstreams::counter();
    let up = upstream(counter).await;
    let probe = plugin(Wasm::Probe).display().to_string();
    let text = format!(
        r#"id: rh
name: rh
listen_path: /rh/
upstream: {up}
plugins:
  pre:
    - {{ path: {probe}, function: response-headers, config: {{ headers: [[content-type, text/x-test], [x-multi, a], [x-multi, b], [content-length, "5"]] }} }}
endpoints:
  - path: /later
    plugin: {{ path: {probe}, function: response-headers, config: {{ headers: [[x-multi, later]] }} }}
  - path: /bad
    plugin: {{ path: {probe}, function: response-headers, config: {{ headers: [["bad name", x]] }} }}
"#
    );
    let gw = Gateway::start(ConfigDir::single(&text));
    let response = client().get(gw.url("/rh/plain")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let values = |name: &str| {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(values("x-multi"), ["a", "b"]);
    assert_eq!(
        values("content-type"),
        ["text/x-test"],
        "replaces the upstream's application/json"
    );
    let body = response.text().await.expect("body");
    assert_eq!(
        headers["content-length"].to_str().ok(),
        Some(&*body.len().to_string()),
        "framing stays the gateway's"
    );

    let response = client().get(gw.url("/rh/later")).send().await.expect("request");
    assert_eq!(response.status(), 200);
    let later: Vec<_> = response.headers().get_all("x-multi").iter().cloned().collect();
    assert_eq!(later, ["later"], "the later plugin's value wins");

    let before = count.load(Ordering::SeqCst);
    let response = client().get(gw.url("/rh/bad")).send().await.expect("request");
    assert_eq!(response.status(), 500);
    assert_eq!(
        count.load(Ordering::SeqCst),
        before,
        "the upstream never saw the request"
    );
    gw.wait_for_log("invalid header name");
}
