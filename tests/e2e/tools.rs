//! The plugin author's tools, used as an author would: `portcullis plugin
//! new` (the crate tests, builds and loads as it stands), `inspect`, `call`,
//! and what they make checkable at load: config schemas and digest pins.
//!
//! One file, past 500 lines: the `plugin new / inspect / call` commands
//! share their helpers for running the binary.

use std::path::Path;
use std::process::{Command, Output};

use sha2::Digest;

use crate::support::{
    ConfigDir, Gateway, Wasm, closed_port, get_json, guest_cargo, plugin, plugin_v01, repo_root, upstream, validate,
};

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .expect("run portcullis")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hello_api(config: &str, extra: &str) -> String {
    format!(
        "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:9\nendpoints:\n  - method: GET\n    path: /hello/{{name}}\n    plugin:\n      path: {}\n      function: hello\n{extra}      config: {config}\n",
        plugin(Wasm::Hello).display()
    )
}

fn sha256_hex(file: &Path) -> String {
    let digest = sha2::Sha256::digest(std::fs::read(file).expect("read plugin"));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_config_that_breaks_its_functions_schema_is_a_load_error_with_file_line_and_field() {
    // `config:` is on line 10 of the API file and its greeting on line 11; a
    // field the schema does not know is reported on the config itself.
    let config = ConfigDir::single(&hello_api("\n        greeting: 5\n        greting: Hi", ""));
    let output = validate(&config);
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("apis/api.yaml:11:9: endpoints[0].plugin.config.greeting: 5 is not of type \"string\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("apis/api.yaml:10:7: endpoints[0].plugin.config: Additional properties are not allowed ('greting' was unexpected)"),
        "{stderr}"
    );
    assert!(stderr.contains("the config schema of `hello`"), "{stderr}");

    // A config the schema accepts loads as before.
    let good = ConfigDir::single(&hello_api("{ greeting: Hi }", ""));
    assert!(validate(&good).status.success());
}

#[tokio::test]
async fn a_reload_with_a_bad_plugin_config_keeps_the_old_configuration_serving() {
    let config = ConfigDir::single(&hello_api("{ greeting: Hi }", ""));
    let gw = Gateway::start(config);
    gw.config
        .write_api("api.yaml", &hello_api("{ greeting: [not, text] }", ""));
    gw.reload();
    let log = gw.wait_for_log("reload failed; the previous configuration keeps serving");
    assert!(log.contains("endpoints[0].plugin.config.greeting"), "{log}");
    let (status, _, body) = get_json(&gw.url("/a/hello/ann")).await;
    assert_eq!((status, body["message"].as_str()), (200, Some("Hi, ann!")));
}

#[test]
fn a_pinned_digest_must_match_the_file() {
    let hello = plugin(Wasm::Hello);
    let digest = sha256_hex(&hello);
    let pinned = |sha: &str| ConfigDir::single(&hello_api("{}", &format!("      sha256: {sha}\n")));
    let output = validate(&pinned(&digest.to_uppercase()));
    assert!(output.status.success(), "{}", text(&output.stderr));

    let other = "0".repeat(64);
    let output = validate(&pinned(&other));
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("its SHA-256 is {digest}")), "{stderr}");
    assert!(stderr.contains(&format!("the configuration pins {other}")), "{stderr}");
    assert!(stderr.contains("apis/api.yaml"), "{stderr}");

    let output = validate(&pinned("abc"));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("apis/api.yaml:10:7: endpoints[0].plugin.sha256: \"abc\" is not a SHA-256 digest"),
        "{stderr}"
    );
}

#[test]
fn inspect_reports_contract_functions_schemas_imports_and_the_digest_to_pin() {
    let hello = plugin(Wasm::Hello);
    let output = portcullis(&["plugin", "inspect", "--json", &hello.display().to_string()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["contract"], "0.2");
    assert_eq!(report["sha256"], sha256_hex(&hello));
    assert_eq!(report["size"], std::fs::metadata(&hello).expect("stat").len());
    assert_eq!(report["lean"], true, "an SDK plugin that makes no outbound calls");
    assert_eq!(report["core_instances"], 1);
    assert!(
        report["imports"]
            .as_array()
            .expect("imports")
            .iter()
            .any(|i| i == "portcullis:plugin/log@0.2.0"),
        "{report}"
    );
    let hello_fn = &report["functions"][0];
    assert_eq!(
        (hello_fn["name"].as_str(), hello_fn["kind"].as_str()),
        (Some("hello"), Some("request"))
    );
    assert_eq!(hello_fn["wants_body"], false);
    assert_eq!(hello_fn["config_schema"]["properties"]["greeting"]["type"], "string");

    // A 0.1 component: its contract, no schemas.
    let old = plugin_v01(Wasm::Hello);
    let output = portcullis(&["plugin", "inspect", "--json", &old.display().to_string()]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(report["contract"], "0.1");
    assert_eq!(report["functions"][0]["config_schema"], serde_json::Value::Null);

    // Text for people: the line to paste into the YAML.
    let output = portcullis(&["plugin", "inspect", &hello.display().to_string()]);
    assert!(text(&output.stdout).contains(&format!("sha256: {}", sha256_hex(&hello))));

    let output = portcullis(&["plugin", "inspect", "/no/such.wasm"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("/no/such.wasm: cannot read"),
        "{}",
        text(&output.stderr)
    );
}

/// Rust's std reaches WASI from every plugin (its panic hook reads the
/// environment and writes to stderr); the SDK answers those calls itself,
/// so that a plugin, even one that prints, imports none of WASI: about
/// twenty imports fewer to set up per fresh instance. A Rust upgrade that
/// routes std through other C functions would show here first.
#[test]
fn sdk_plugins_import_no_wasi_even_when_they_print() {
    // `probe` prints with println! and eprintln!, and panics on request;
    // `aggregate` calls out, which takes lists across the boundary.
    for wasm in [
        Wasm::Hello,
        Wasm::Auth,
        Wasm::Policy,
        Wasm::Router,
        Wasm::Aggregate,
        Wasm::Probe,
        Wasm::Bench,
    ] {
        let name = wasm.name();
        let output = portcullis(&["plugin", "inspect", "--json", &plugin(wasm).display().to_string()]);
        assert!(output.status.success(), "{name}: {}", text(&output.stderr));
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
        let imports = report["imports"].as_array().expect("imports");
        assert!(
            imports
                .iter()
                .all(|i| i.as_str().is_some_and(|i| i.starts_with("portcullis:plugin/"))),
            "{name} imports more than the plugin contract: {imports:?}"
        );
        // Logging, printing and panicking go through `log-part`, which takes
        // integers only, so only outbound HTTP makes an SDK plugin link a
        // shim and a fixup instance beside its own.
        let expected = if name == "aggregate" { 3 } else { 1 };
        assert_eq!(report["core_instances"], expected, "{name}: {report}");
        assert_eq!(report["lean"], expected == 1, "{name}: {report}");
    }
}

/// `plugin call --json FILE FUNCTION ARGS...`: (exit code, report).
fn call(file: &Path, function: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let file = file.display().to_string();
    let mut all = vec!["plugin", "call", "--json", &file, function];
    all.extend_from_slice(args);
    let output = portcullis(&all);
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no JSON report; stderr:\n{}", text(&output.stderr)));
    (output.status.code(), report)
}

/// `plugin call FILE FUNCTION ARGS...` for inputs it must refuse before
/// calling (exit code 2): its stderr.
fn call_refused(file: &Path, function: &str, args: &[&str]) -> String {
    let file = file.display().to_string();
    let mut all = vec!["plugin", "call", &file, function];
    all.extend_from_slice(args);
    let output = portcullis(&all);
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    text(&output.stderr)
}

/// A fresh instance resets all the memory it used when it is dropped, so
/// the examples are built to fit their stack, data and first allocations in
/// one 64 KiB page (32 KiB stack, `opt-level = "s"`: at opt-level 3 the
/// read-only data triples and `hello` needs a second page; see
/// docs/benchmarks.md).
#[test]
fn example_calls_fit_in_one_page_of_guest_memory() {
    for (wasm, function) in [
        (Wasm::Hello, "hello"),
        (Wasm::Bench, "virtual"),
        (Wasm::Bench, "header"),
        (Wasm::Bench, "noop"),
    ] {
        let name = wasm.name();
        let (code, report) = call(&plugin(wasm), function, &["--param", "name=ann"]);
        assert_eq!(code, Some(0), "{name}#{function}: {report}");
        assert_eq!(report["peak_memory_bytes"], 64 << 10, "{name}#{function}: {report}");
    }
}

#[test]
fn call_runs_one_invocation_and_reports_its_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = dir.path().join("request.json");
    std::fs::write(
        &request,
        r#"{"method": "GET", "path": "/a/hello/ann?x=1", "headers": {"user-agent": "curl"}, "params": {"name": "ann"}}"#,
    )
    .expect("write");
    let (code, report) = call(
        &plugin(Wasm::Hello),
        "hello",
        &[
            "--request",
            &request.display().to_string(),
            "--config",
            r#"{"greeting": "Hey"}"#,
        ],
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["outcome"], "respond");
    assert_eq!(report["response"]["status"], 200);
    let body: serde_json::Value =
        serde_json::from_str(report["response"]["body"].as_str().expect("text body")).expect("JSON body");
    assert_eq!(
        (
            body["message"].as_str(),
            body["query"].as_str(),
            body["user_agent"].as_str()
        ),
        (Some("Hey, ann!"), Some("x=1"), Some("curl"))
    );
    assert!(report["cpu_us"].as_u64().expect("cpu") > 0);
    assert!(report["peak_memory_bytes"].as_u64().expect("memory") >= 64 << 10);

    // A raw HTTP/1.1 request, and an auth function: the session it creates
    // and the changes it makes.
    let raw = dir.path().join("request.http");
    std::fs::write(
        &raw,
        "GET /secure/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer t1\r\n\r\n",
    )
    .expect("write");
    let (code, report) = call(
        &plugin(Wasm::Auth),
        "bearer-token",
        &[
            "--request",
            &raw.display().to_string(),
            "--config",
            r#"{"tokens": {"t1": {"user": "alice", "alias": "Alice"}}}"#,
        ],
    );
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["outcome"], "authenticated");
    assert_eq!(
        (
            report["session"]["key_id"].as_str(),
            report["session"]["alias"].as_str()
        ),
        (Some("alice"), Some("Alice"))
    );
    assert_eq!(
        report["changes"]["remove_headers"],
        serde_json::json!(["authorization"])
    );

    // The config is checked against the function's schema, as at load.
    let stderr = call_refused(&plugin(Wasm::Hello), "hello", &["--config", r#"{"greting": "Hey"}"#]);
    assert!(stderr.contains("'greting' was unexpected"), "{stderr}");
}

#[test]
fn call_reports_a_failing_plugin_with_the_status_and_reason_the_gateway_would_give() {
    let hostile = plugin(Wasm::Hostile);
    let (code, report) = call(&hostile, "spin", &[]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["outcome"], "failed");
    assert_eq!(
        (report["error"]["status"].as_u64(), report["error"]["reason"].as_str()),
        (Some(504), Some("cpu_budget"))
    );
    assert!(
        report["cpu_us"].as_u64().expect("cpu") >= 50_000,
        "ran its whole budget: {report}"
    );

    // The limits of a gateway file, when given one.
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = dir.path().join("gateway.yaml");
    std::fs::write(&gateway, "apis: []\nplugin_limits: { cpu_ms: 5 }\n").expect("write");
    let (code, report) = call(&hostile, "spin", &["--gateway", &gateway.display().to_string()]);
    assert_eq!(code, Some(1));
    assert!(
        report["error"]["message"]
            .as_str()
            .expect("message")
            .contains("CPU budget of 5ms"),
        "{report}"
    );

    let (code, report) = call(&hostile, "panic", &[]);
    assert_eq!(code, Some(1));
    assert_eq!(
        (report["error"]["status"].as_u64(), report["error"]["reason"].as_str()),
        (Some(500), Some("trap"))
    );
    let logs = report["logs"].to_string();
    assert!(
        logs.contains("plugin panicked") && logs.contains("ERROR"),
        "the panic message is in the log: {logs}"
    );

    let stderr = call_refused(&hostile, "no-such-function", &[]);
    assert!(stderr.contains("no function `no-such-function`; the component exports: spin,"));
}

#[tokio::test(flavor = "multi_thread")]
async fn call_reaches_only_the_hosts_it_is_allowed() {
    let users = upstream(axum::Router::new().route(
        "/users/7",
        axum::routing::get(|| async { axum::Json(serde_json::json!({ "name": "ann" })) }),
    ))
    .await;
    let host = users.trim_start_matches("http://").to_owned();
    let aggregate = plugin(Wasm::Aggregate);
    let config = format!(r#"{{"services": {{"user": "{users}/users/{{id}}"}}}}"#);
    let run = move |allow: Vec<String>| {
        let (aggregate, config) = (aggregate.clone(), config.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["--param".to_owned(), "id=7".to_owned(), "--config".to_owned(), config];
            if !allow.is_empty() {
                args.push("--allow".into());
                args.push(allow.join(","));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            call(&aggregate, "merge", &args)
        })
    };
    let (code, report) = run(vec![host.clone()]).await.expect("join");
    assert_eq!(code, Some(0), "{report}");
    let body: serde_json::Value =
        serde_json::from_str(report["response"]["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body["user"]["name"], "ann", "{report}");

    let (code, report) = run(Vec::new()).await.expect("join");
    assert_eq!(code, Some(0), "the plugin handles the refusal itself: {report}");
    let body: serde_json::Value =
        serde_json::from_str(report["response"]["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body["errors"]["user"], format!("not allowed: {host}"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn call_runs_a_fan_out_before_the_function() {
    let users = upstream(axum::Router::new().route(
        "/users/{id}",
        axum::routing::get(|axum::extract::Path(id): axum::extract::Path<String>| async move {
            axum::Json(serde_json::json!({ "name": format!("user-{id}") }))
        }),
    ))
    .await;
    let host = users.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let block = dir.path().join("fan-out.yaml");
    std::fs::write(
        &block,
        format!(
            "calls:\n  user: {users}/users/{{id}}\n  stock: {{ url: 'http://{}/stock', timeout_ms: 500 }}\n",
            closed_port()
        ),
    )
    .expect("write");
    let run = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            call(&plugin(Wasm::Aggregate), "combine", &args)
        })
    };
    let args = |fan_out: String, allow: &[&str]| {
        let mut args = vec!["--param".to_owned(), "id=7".to_owned(), "--fan-out".to_owned(), fan_out];
        args.push("--allow".into());
        args.push(allow.join(","));
        args
    };

    // From a YAML file, as the block is written in an API file: one call
    // answers, the other cannot connect, and the function merges both.
    let (code, report) = run(args(format!("@{}", block.display()), &[&host, "127.0.0.1"]))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "{report}");
    let body: serde_json::Value =
        serde_json::from_str(report["response"]["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(
        (&body["user"]["name"], &body["id"]),
        (&serde_json::json!("user-7"), &serde_json::json!("7")),
        "{report}"
    );
    assert!(body["errors"]["stock"].is_string(), "{report}");
    let headers = report["response"]["headers"].as_array().expect("headers");
    assert!(headers.contains(&serde_json::json!(["x-partial", "true"])), "{report}");

    // Checked as the gateway checks it at load, with where and why.
    for (fan_out, allow, expected) in [
        (
            format!(r#"{{"calls": {{"user": "{users}/users/{{id}}"}}}}"#),
            "example.com",
            format!("--fan-out: calls.user: {host} is not on the API's outbound.allow list"),
        ),
        (
            format!(r#"{{"calls": {{"user": "{users}/users/{{name}}"}}}}"#),
            host.as_str(),
            "uses {name}, which the endpoint's path does not capture (it captures: id)".to_owned(),
        ),
        (
            r#"{"cals": {}}"#.to_owned(),
            host.as_str(),
            "--fan-out:1:2: cals: unknown field `cals`, expected one of `calls`".to_owned(),
        ),
    ] {
        let stderr = call_refused(
            &plugin(Wasm::Aggregate),
            "combine",
            &["--param", "id=7", "--allow", allow, "--fan-out", &fan_out],
        );
        assert!(stderr.contains(&expected), "{fan_out}: {stderr}");
    }

    // A 0.1 plugin cannot read the results: refused, as at load.
    let fan_out = format!(r#"{{"calls": {{"user": "{users}/users/1"}}}}"#);
    let stderr = call_refused(
        &plugin_v01(Wasm::Aggregate),
        "merge",
        &["--allow", &host, "--fan-out", &fan_out],
    );
    assert!(
        stderr.contains("`fan_out` needs a plugin built against contract 0.2"),
        "{stderr}"
    );
}

/// `cargo ARGS` in a scaffolded crate, with a target directory shared by
/// the test runs so dependencies build once.
fn cargo_in(dir: &Path, args: &[&str]) -> Output {
    guest_cargo()
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", repo_root().join("target/scaffold-test"))
        .output()
        .expect("run cargo")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_plugin_tests_builds_and_serves_without_edits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = dir.path().display().to_string();
    for (name, kind) in [("greeter", "request"), ("gatekeeper", "auth"), ("stamper", "response")] {
        let output = portcullis(&["plugin", "new", name, "--kind", kind, "--path", &parent]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        let crate_dir = dir.path().join(name);
        let output = cargo_in(&crate_dir, &["test"]);
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "cargo test in the {kind} scaffold:\n{stdout}\n{}",
            text(&output.stderr)
        );
        assert!(stdout.contains("test result: ok."), "the tests ran: {stdout}");
        let output = cargo_in(&crate_dir, &["build", "--release"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let wasm = |name: &str| repo_root().join(format!("target/scaffold-test/wasm32-wasip2/release/{name}.wasm"));

    // A failing test fails `cargo test`: the native runner passes it on.
    let greeter = dir.path().join("greeter");
    let lib = greeter.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).expect("read lib.rs");
    std::fs::write(&lib, source.replace(r#""Hi, ann!""#, r#""Bye, ann!""#)).expect("write lib.rs");
    let output = cargo_in(&greeter, &["test"]);
    assert!(!output.status.success(), "a failing test must fail cargo test");
    assert!(text(&output.stdout).contains("FAILED"), "{}", text(&output.stdout));
    std::fs::write(&lib, source).expect("restore lib.rs");

    // Each component loads, its sample API points at it; the request one
    // serves its endpoint.
    for name in ["greeter", "gatekeeper", "stamper"] {
        let api = std::fs::read_to_string(dir.path().join(name).join("api.yaml"))
            .expect("api.yaml")
            .replace(
                &format!("target/wasm32-wasip2/release/{name}.wasm"),
                &wasm(name).display().to_string(),
            );
        let config = ConfigDir::single(&api);
        let output = validate(&config);
        assert!(output.status.success(), "{name}: {}", text(&output.stderr));
        if name == "greeter" {
            let gw = Gateway::start(config);
            let (status, _, body) = get_json(&gw.url("/greeter/hello/ann")).await;
            assert_eq!((status, body["message"].as_str()), (200, Some("Hello, ann!")));
        }
    }
}

/// A schema declared by a component built straight from the WIT, without
/// the SDK (`raw2` declares one for `echo-input`), is enforced the same way.
#[test]
fn a_schema_from_a_component_written_without_the_sdk_is_enforced() {
    let api = |config: &str| {
        format!(
            "id: r\nlisten_path: /r/\nupstream: http://127.0.0.1:9\nendpoints:\n  - path: /x\n    plugin:\n      path: {}\n      function: echo-input\n      config: {config}\n",
            plugin(Wasm::Raw2).display()
        )
    };
    assert!(validate(&ConfigDir::single(&api("{ mode: raw }"))).status.success());
    let output = validate(&ConfigDir::single(&api("{ mode: cooked }")));
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("apis/api.yaml:9:17: endpoints[0].plugin.config.mode: \"cooked\" is not one of \"raw\""),
        "{stderr}"
    );
    assert!(stderr.contains("the config schema of `echo-input`"), "{stderr}");
}

/// `PORTCULLIS_PERF_MAP=1` names the plugins' compiled functions for `perf`
/// in `/tmp/perf-PID.map`, and nothing is written without it.
#[test]
fn a_perf_map_names_plugin_functions_when_asked() {
    let hello = plugin(Wasm::Hello).display().to_string();
    let run = |perf_map: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["plugin", "call", &hello, "hello", "--param", "name=ann"])
            .stdout(std::process::Stdio::null());
        if let Some(value) = perf_map {
            command.env("PORTCULLIS_PERF_MAP", value);
        } else {
            command.env_remove("PORTCULLIS_PERF_MAP");
        }
        // File times are coarser than the clock: a second of slack.
        let spawned = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
        let child = command.spawn().expect("run portcullis plugin call");
        let pid = child.id();
        let status = child.wait_with_output().expect("wait for portcullis").status;
        assert!(
            status.success(),
            "plugin call with PORTCULLIS_PERF_MAP={perf_map:?}: {status}"
        );
        // wasmtime writes it there whatever TMPDIR says.
        let path = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
        // A map older than the call is another process's of the same PID.
        let written = std::fs::metadata(&path).and_then(|m| m.modified());
        if !written.is_ok_and(|at| at >= spawned) {
            return None;
        }
        let map = std::fs::read_to_string(&path).ok();
        let _ = std::fs::remove_file(&path);
        map
    };
    let map = run(Some("1")).expect("a perf map");
    for name in ["portcullis:plugin/guest@0.2.0#on-request", "hello::hello"] {
        assert!(
            map.lines().any(|l| l.contains(name)),
            "{name} not in the perf map:\n{map}"
        );
    }
    assert_eq!(run(None), None);
    assert_eq!(run(Some("0")), None);
}
