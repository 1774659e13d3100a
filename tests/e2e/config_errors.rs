//! Bad input: each mistake an operator can make gets an error that says
//! what and where, from `validate` and from `serve`; a bad reload keeps the
//! running configuration serving.

use crate::support::{ConfigDir, Gateway, Wasm, get_json, plugin, upstream, upstreams, validate};

/// Runs `validate`, expects failure, returns stderr.
fn validate_error(config: &ConfigDir) -> String {
    let output = validate(config);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "validate should fail; stderr:\n{stderr}");
    stderr
}

fn endpoint_api(wasm: &str, function: &str) -> String {
    format!(
        "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:9\nendpoints:\n  - method: GET\n    path: /x\n    plugin:\n      path: {wasm}\n      function: {function}\n"
    )
}

#[test]
fn validate_reports_a_summary_for_a_good_configuration() {
    let hello = plugin(Wasm::Hello);
    let config = ConfigDir::single(&endpoint_api(&hello.display().to_string(), "hello"));
    let output = validate(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("1 API(s), 1 plugin reference(s)"), "{stdout}");
    assert!(stdout.contains("GET /x => hello.wasm#hello"), "{stdout}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let config = ConfigDir::single("id: a\nlisten_path: /a/\nupstream: 'http://x\nendpoints: []\n");
    let stderr = validate_error(&config);
    assert!(stderr.contains("apis/api.yaml:5:1:"), "file and line: {stderr}");
    assert!(
        stderr.contains("while scanning a quoted scalar at line 3 column 11"),
        "where the quote opened: {stderr}"
    );
}

#[test]
fn unknown_field_names_the_field_and_line() {
    let hello = plugin(Wasm::Hello);
    let text = endpoint_api(&hello.display().to_string(), "hello")
        .replace("      function:", "      fucntion: oops\n      function:");
    let stderr = validate_error(&ConfigDir::single(&text));
    assert!(
        stderr.contains("apis/api.yaml:9:"),
        "line of the unknown field: {stderr}"
    );
    assert!(stderr.contains("endpoints[0].plugin"), "field path: {stderr}");
    assert!(stderr.contains("unknown field `fucntion`"), "{stderr}");
    assert!(
        stderr.contains("expected one of `path`, `function`"),
        "the valid names: {stderr}"
    );
}

#[test]
fn unknown_field_in_the_gateway_file() {
    let config = ConfigDir::new(
        "apis: [apis/]\nlisen: 127.0.0.1:1\n",
        &[("a.yaml", "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:9\n")],
    );
    let stderr = validate_error(&config);
    assert!(stderr.contains("gateway.yaml:2:"), "{stderr}");
    assert!(stderr.contains("unknown field `lisen`"), "{stderr}");
}

#[test]
fn missing_plugin_file_names_the_resolved_path() {
    let stderr = validate_error(&ConfigDir::single(&endpoint_api("../plugins/nope.wasm", "hello")));
    assert!(stderr.contains("apis/api.yaml"), "{stderr}");
    assert!(stderr.contains("endpoints[0].plugin.path"), "{stderr}");
    assert!(stderr.contains("plugin file not found"), "{stderr}");
    assert!(stderr.contains("plugins/nope.wasm"), "{stderr}");
}

#[test]
fn unknown_function_lists_what_the_component_exports() {
    let probe = plugin(Wasm::Probe);
    let stderr = validate_error(&ConfigDir::single(&endpoint_api(
        &probe.display().to_string(),
        "inspekt",
    )));
    assert!(stderr.contains("endpoints[0].plugin"), "{stderr}");
    assert!(stderr.contains("probe.wasm"), "{stderr}");
    assert!(stderr.contains("no function `inspekt`"), "{stderr}");
    assert!(
        stderr.contains("inspect, rewrite, fail, record-order, whoami"),
        "lists the exports: {stderr}"
    );
}

#[test]
fn function_of_the_wrong_kind_says_so() {
    let probe = plugin(Wasm::Probe);
    let stderr = validate_error(&ConfigDir::single(&endpoint_api(
        &probe.display().to_string(),
        "check-token",
    )));
    assert!(
        stderr.contains("function `check-token` is an `auth` function, but this hook needs a `request` function"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, b"not wasm at all").expect("write");
    let stderr = validate_error(&ConfigDir::single(&endpoint_api(&fake.display().to_string(), "x")));
    assert!(stderr.contains("not a valid WebAssembly component"), "{stderr}");
}

#[test]
fn invalid_upstream_url_names_file_line_and_value() {
    let config = ConfigDir::single("id: a\nlisten_path: /a/\nupstream: 127.0.0.1:9001\n");
    let stderr = validate_error(&config);
    assert!(stderr.contains("apis/api.yaml:3:"), "{stderr}");
    assert!(stderr.contains("upstream"), "{stderr}");
    assert!(stderr.contains("invalid upstream URL \"127.0.0.1:9001\""), "{stderr}");
}

#[test]
fn duplicate_ids_and_empty_patterns_are_errors() {
    let a = "id: a\nlisten_path: /a/\nupstream: http://127.0.0.1:9\n";
    let b = "id: a\nlisten_path: /b/\nupstream: http://127.0.0.1:9\n";
    let stderr = validate_error(&ConfigDir::new("apis: [apis/]\n", &[("1.yaml", a), ("2.yaml", b)]));
    assert!(stderr.contains("duplicate API id \"a\""), "{stderr}");
    assert!(stderr.contains("1.yaml"), "names the other file: {stderr}");

    let stderr = validate_error(&ConfigDir::new("apis: [apis/*.yml]\n", &[("1.yaml", a)]));
    assert!(stderr.contains("apis[0]"), "{stderr}");
    assert!(stderr.contains("matches no API definition files"), "{stderr}");
}

#[test]
fn serve_refuses_a_bad_configuration_with_the_same_error() {
    let config = ConfigDir::single("id: a\nlisten_path: a/\nupstream: http://127.0.0.1:9\n");
    let log = Gateway::try_start(config).err().expect("serve must not start");
    assert!(log.contains("apis/api.yaml:2:"), "{log}");
    assert!(log.contains("must start with '/'"), "{log}");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_configuration_and_a_good_one_swaps_in() {
    let one = upstream(upstreams::echo("one")).await;
    let two = upstream(upstreams::echo("two")).await;
    let api = |upstream: &str| format!("id: r\nlisten_path: /r/\nupstream: {upstream}\n");
    let gw = Gateway::start(ConfigDir::single(&api(&one)));
    let (_, _, seen) = get_json(&gw.url("/r/")).await;
    assert_eq!(seen["upstream"], "one");

    gw.config.write_api("api.yaml", &endpoint_api("missing.wasm", "f"));
    gw.reload();
    gw.wait_for_log("reload failed; the previous configuration keeps serving");
    let (status, _, seen) = get_json(&gw.url("/r/")).await;
    assert_eq!((status, &seen["upstream"]), (200, &serde_json::json!("one")));

    gw.config.write_api("api.yaml", &api(&two));
    gw.reload();
    gw.wait_for_log("configuration reloaded");
    let (_, _, seen) = get_json(&gw.url("/r/")).await;
    assert_eq!(seen["upstream"], "two");
}

#[tokio::test]
async fn the_embedded_store_is_opened_only_when_needed_and_a_locked_one_is_a_clear_error() {
    let shared = tempfile::tempdir().expect("tempdir");
    let store = shared.path().join("sessions.redb");
    let echo = upstream(upstreams::echo("up")).await;
    let keyless = format!("id: a\nlisten_path: /a/\nupstream: {echo}\n");
    let keyed = format!("id: a\nlisten_path: /a/\nupstream: {echo}\nauth: {{ type: api_key }}\n");
    let gateway_yaml = format!("apis: [apis/]\nsession_store: {}\n", store.display());

    // Keyless gateways never open the store: two can share one setting.
    let one = Gateway::start(ConfigDir::new(&gateway_yaml, &[("a.yaml", &keyless)]));
    let two = Gateway::start(ConfigDir::new(&gateway_yaml, &[("a.yaml", &keyless)]));
    assert_eq!(get_json(&one.url("/a/")).await.0, 200);
    assert_eq!(get_json(&two.url("/a/")).await.0, 200);

    // A keyed gateway opens it at start-up; a second one cannot.
    let _owner = Gateway::start(ConfigDir::new(&gateway_yaml, &[("a.yaml", &keyed)]));
    let log = Gateway::try_start(ConfigDir::new(&gateway_yaml, &[("a.yaml", &keyed)]))
        .err()
        .expect("the second keyed gateway must not start");
    assert!(log.contains("session store unavailable"), "{log}");
    assert!(log.contains(&store.display().to_string()), "names the file: {log}");
}

#[test]
fn reuse_of_zero_calls_is_refused_with_its_line() {
    let hello = plugin(Wasm::Hello);
    let text = endpoint_api(&hello.display().to_string(), "hello") + "      reuse: 0\n";
    let stderr = validate_error(&ConfigDir::single(&text));
    assert!(stderr.contains("apis/api.yaml:10:"), "line of the field: {stderr}");
    assert!(stderr.contains("endpoints[0].plugin.reuse"), "field path: {stderr}");
    assert!(stderr.contains("expected a nonzero u32"), "{stderr}");
}

#[test]
fn upstream_mistakes_name_the_field_and_line() {
    let cases: &[(&str, &[&str])] = &[
        (
            "upstream:\n  targets:\n    - { url: http://a:80, weigth: 2 }\n",
            &["apis/api.yaml:5:", "upstream.targets[0]", "unknown field `weigth`"],
        ),
        (
            "upstream:\n  targets: [http://a:80]\n  balance: fastest\n",
            &[
                "apis/api.yaml:5:",
                "upstream.balance",
                "unknown variant `fastest`",
                "least_request",
            ],
        ),
        (
            "upstream:\n  targets: [http://a:80]\n  retries: { on: [connect_error, 404] }\n",
            &[
                "apis/api.yaml:5:",
                "upstream.retries.on",
                "status 404 cannot be retried",
            ],
        ),
        (
            "upstream:\n  targets: [http://a:80]\n  balance: consistent_hash\n",
            &["upstream.hash_on", "consistent_hash needs hash_on"],
        ),
        (
            "upstream:\n  targets: [http://a:80, { url: http://b:80, weight: 0 }]\n",
            &["upstream.targets[1].weight", "must be between 1 and 1000"],
        ),
        (
            "upstream:\n  targets: [ftp://a]\n",
            &["apis/api.yaml:4:", "invalid upstream URL \"ftp://a\""],
        ),
        (
            "upstream: eu\n",
            &["upstream:", "\"eu\" is neither a URL nor one of `upstreams`"],
        ),
        (
            "upstream: http://a:80\nupstreams:\n  default: http://b:80\n",
            &[
                "upstreams.default",
                "`default` names the upstream defined under `upstream`",
            ],
        ),
        (
            "upstream:\n  targets: [http://a:80]\n  health_check: { path: healthz }\n",
            &["upstream.health_check.path", "is not a path such as /healthz"],
        ),
    ];
    for (upstream, expected) in cases {
        let text = format!("id: a\nlisten_path: /a/\n{upstream}");
        let stderr = validate_error(&ConfigDir::single(&text));
        for needle in *expected {
            assert!(
                stderr.contains(needle),
                "{upstream:?}: missing {needle:?} in:\n{stderr}"
            );
        }
    }
}
