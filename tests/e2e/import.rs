//! `portcullis import tyk`: Tyk's own sample definitions and definitions
//! in the shape Tyk's tests build (`tests/fixtures/tyk/`), imported, then
//! validated and served, each mapped behaviour answering as Tyk documents
//! it: load-balanced targets, global and endpoint headers, mock responses,
//! black and white lists, rewrites, method transforms, timeouts, size
//! limits, endpoint rate limits, CORS, IP lists, JWT with ignored paths,
//! custom middleware as plugins to port (and their stubs), and Tyk OAS.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::{
    ConfigDir, Gateway, assert_gateway_error, client, get_json, get_with, json_of, repo_root, upstream, upstreams,
};

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/tyk")
}

/// Runs `portcullis import tyk` on `inputs` (with `UPSTREAM_A`/`_B`
/// replaced); the output directory and the JSON report.
fn import(inputs: &[&str], upstreams: (&str, &str), extra: &[&str]) -> (tempfile::TempDir, Value) {
    let work = tempfile::tempdir().expect("tempdir");
    let input_dir = work.path().join("tyk");
    std::fs::create_dir(&input_dir).expect("mkdir");
    let files: Vec<PathBuf> = inputs
        .iter()
        .flat_map(|input| {
            let path = fixtures().join(input);
            if path.is_dir() {
                std::fs::read_dir(&path)
                    .expect("fixtures")
                    .map(|e| e.expect("entry").path())
                    .collect()
            } else {
                vec![path]
            }
        })
        .collect();
    for input in &files {
        let text = std::fs::read_to_string(input).expect("fixture");
        let text = text
            .replace("UPSTREAM_A", upstreams.0)
            .replace("UPSTREAM_B", upstreams.1);
        let name = input.file_name().expect("a file name");
        std::fs::write(input_dir.join(name), text).expect("write");
    }
    let out = work.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["import", "tyk"])
        .arg(&input_dir)
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .args(extra)
        .env("CARGO_TARGET_DIR", repo_root().join("target/import-stubs"))
        .output()
        .expect("run portcullis import tyk");
    assert!(
        output.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert!(out.join("IMPORT.md").is_file() && out.join("gateway.yaml").is_file());
    (work, report)
}

/// The imported API files (and plugins) in a test configuration directory.
fn config_of(work: &tempfile::TempDir) -> ConfigDir {
    let out = work.path().join("out");
    let mut apis = Vec::new();
    for entry in std::fs::read_dir(out.join("apis")).expect("apis/") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        apis.push((name, std::fs::read_to_string(&path).expect("read")));
    }
    let refs: Vec<(&str, &str)> = apis.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
    let config = ConfigDir::new("apis: [apis/]\n", &refs);
    if out.join("plugins").is_dir() {
        let plugins = config.dir.path().join("plugins");
        std::fs::create_dir(&plugins).expect("mkdir");
        for entry in std::fs::read_dir(out.join("plugins")).expect("plugins/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "wasm") {
                std::fs::copy(&path, plugins.join(path.file_name().expect("name"))).expect("copy");
            }
        }
    }
    config
}

fn entries<'r>(report: &'r Value, api: &str) -> Vec<&'r Value> {
    report["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["api"] == api)
        .collect()
}

fn status_of(report: &Value, api: &str, field: &str) -> String {
    entries(report, api)
        .iter()
        .find(|e| e["field"] == field)
        .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no report line for {api} {field}: {report}"))
}

#[test]
fn tyk_sample_definitions_import_with_every_field_accounted_for() {
    let (work, report) = import(&["apps"], ("", ""), &[]);
    let _ = work;
    // Every sample is an API (none skipped), and its custom middleware
    // are plugins to port.
    assert_eq!(report["apis"].as_array().map(Vec::len), Some(8), "{report}");
    assert_eq!(report["skipped"], json!([]));
    let ports = report["ports"].as_array().expect("ports");
    assert!(
        ports
            .iter()
            .any(|p| p["function"] == "MyPreMiddleware" && p["driver"] == "Python"),
        "{report}"
    );
    assert!(
        ports
            .iter()
            .any(|p| p["function"] == "MyAuthCheck" && p["kind"] == "auth")
    );
    // Nothing dropped silently: every top-level field with a value in a
    // sample is a line of the report, or read into one of its lines.
    for entry in std::fs::read_dir(fixtures().join("apps")).expect("apps") {
        let path = entry.expect("entry").path();
        let definition: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        let api = report["apis"]
            .as_array()
            .expect("apis")
            .iter()
            .find(|a| {
                a[1].as_str()
                    .is_some_and(|s| s.ends_with(&*path.file_name().expect("name").to_string_lossy()))
            })
            .map(|a| a[0].as_str().expect("id").to_owned())
            .expect("the file's API");
        let lines = entries(&report, &api);
        let consumed = [
            "api_id",
            "name",
            "proxy",
            "version_data",
            "use_keyless",
            "auth",
            "active",
            "definition",
            "custom_middleware",
            "enable_coprocess_auth",
        ];
        for (field, value) in definition.as_object().expect("an object") {
            let has_value = !matches!(value, Value::Null | Value::Bool(false))
                && value != &json!("")
                && value != &json!({})
                && value != &json!([]);
            if !has_value || consumed.contains(&field.as_str()) {
                continue;
            }
            assert!(
                lines.iter().any(|l| l["field"]
                    .as_str()
                    .is_some_and(|f| f == field || f.starts_with(&format!("{field}.")))),
                "{}: {field} is in no report line",
                path.display()
            );
        }
    }
    // An unknown field is reported as such (the sample's deliberately
    // disabled `custom_middleware_`).
    assert!(
        report["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["field"] == "custom_middleware_"
                && e["note"].as_str().is_some_and(|n| n.starts_with("unknown field")))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_definition_serves_as_tyk_would() {
    let slow_a = upstreams::echo("a").route("/slow", axum::routing::get(std::future::pending::<&'static str>));
    let slow_b = upstreams::echo("b").route("/slow", axum::routing::get(std::future::pending::<&'static str>));
    let (a, b) = (upstream(slow_a).await, upstream(slow_b).await);
    let (work, report) = import(&["extended.json"], (&a, &b), &[]);
    assert_eq!(status_of(&report, "orders", "proxy.target_list"), "mapped");
    assert_eq!(
        status_of(
            &report,
            "orders",
            "version_data.versions.Default.extended_paths.circuit_breakers"
        ),
        "not_mapped"
    );
    let gw = Gateway::start(config_of(&work));

    // Load-balanced targets, both used.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (_, _, body) = get_json(&gw.url("/orders/anything")).await;
        seen.insert(body["upstream"].as_str().expect("a name").to_owned());
    }
    assert_eq!(seen.len(), 2, "round robin over both targets: {seen:?}");

    // Global and endpoint header transforms, both ways.
    let (status, headers, body) = get_with(&gw.url("/orders/items/7"), &[("x-secret", "s")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], "/items/7");
    assert_eq!(body["headers"]["x-added"], json!(["yes"]));
    assert_eq!(body["headers"]["x-global"], json!(["g"]));
    assert!(body["headers"].get("x-secret").is_none(), "{body}");
    assert_eq!(
        (&headers["x-resp"], &headers["x-via"]),
        (&"1".parse().expect("value"), &"portcullis".parse().expect("value"))
    );

    // A mock response, a black-listed path, a rewrite, a method transform.
    let response = client().get(gw.url("/orders/status")).send().await.expect("request");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.expect("body"), "{\"ok\":true}");
    let (status, _, body) = get_json(&gw.url("/orders/admin")).await;
    assert_gateway_error(status, &body, 403, "this endpoint is forbidden");
    let (status, _, _) = get_json(&gw.url("/orders/admin/users")).await;
    assert_eq!(
        status, 403,
        "a black-listed path is a prefix in Tyk: what is under it is denied too"
    );
    let (_, _, body) = get_json(&gw.url("/orders/legacy/9")).await;
    assert_eq!(body["path"], "/items/9");
    let (_, _, body) = get_json(&gw.url("/orders/submit")).await;
    assert_eq!(body["method"], "POST");

    // A hard timeout (1 s), a size limit, an endpoint rate limit.
    let (status, _, body) = get_json(&gw.url("/orders/slow")).await;
    assert_gateway_error(status, &body, 504, "upstream timed out");
    let (status, _, body) = json_of(
        client()
            .post(gw.url("/orders/upload"))
            .body("more than 8 bytes")
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_gateway_error(status, &body, 413, "request body too large");
    assert_eq!(get_json(&gw.url("/orders/limited")).await.0, 200);
    assert_eq!(get_json(&gw.url("/orders/limited")).await.0, 429);

    // CORS and the IP deny list.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, gw.url("/orders/items/1"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-max-age"], "300");
    let denied = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)))
        .build()
        .expect("client");
    assert_eq!(
        denied.get(gw.url("/orders/x")).send().await.expect("request").status(),
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_allow_lists_and_tyk_oas_import_and_serve() {
    let a = upstream(upstreams::echo("a")).await;
    let (work, report) = import(&["jwt.json", "allowlist.json", "oas.json"], (&a, &a), &[]);
    assert_eq!(status_of(&report, "accounts", "jwt_policy_field_name"), "not_mapped");
    let gw = Gateway::start(config_of(&work));

    // JWT: HMAC with Tyk's base64 `jwt_source`, identity from `user_id`.
    let secret = base64::engine::general_purpose::STANDARD
        .decode(
            serde_json::from_str::<Value>(&std::fs::read_to_string(fixtures().join("jwt.json")).expect("read"))
                .expect("JSON")["jwt_source"]
                .as_str()
                .expect("a string"),
        )
        .expect("base64");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "user_id": "u1", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .expect("sign");
    let (status, _, body) = get_with(
        &gw.url("/accounts/me"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = get_json(&gw.url("/accounts/me")).await;
    assert_gateway_error(status, &body, 401, "missing token");
    assert_eq!(
        get_json(&gw.url("/accounts/public")).await.0,
        200,
        "an ignored path needs no token"
    );
    let elsewhere = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .expect("client");
    assert_eq!(
        elsewhere
            .get(gw.url("/accounts/public"))
            .send()
            .await
            .expect("request")
            .status(),
        403,
        "not in allowed_ips"
    );

    // A white list with a reply and a black-listed path under it.
    assert_eq!(get_json(&gw.url("/catalogue/products/3")).await.0, 200);
    assert_eq!(get_json(&gw.url("/catalogue/other")).await.0, 404);
    assert_eq!(get_json(&gw.url("/catalogue/products/secret")).await.0, 403);
    let ping = client().get(gw.url("/catalogue/ping")).send().await.expect("request");
    assert_eq!(ping.headers()["x-mock"], "1");
    assert_eq!(ping.text().await.expect("body"), "pong");

    // Tyk OAS: operations by operationId.
    let (status, headers, body) = get_json(&gw.url("/pets-api/pets/1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-from"], json!(["tyk-oas"]));
    assert_eq!(headers["x-pet"], "yes");
    assert_eq!(get_json(&gw.url("/pets-api/pets/1")).await.0, 429, "1 per 60 s");
    let deleted = client()
        .delete(gw.url("/pets-api/pets/1"))
        .send()
        .await
        .expect("request");
    assert_eq!(deleted.status(), 403);
    let health = client().get(gw.url("/pets-api/health")).send().await.expect("request");
    assert_eq!(health.text().await.expect("body"), "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_middleware_stubs_validate_and_run_at_once() {
    let a = upstream(upstreams::echo("a")).await;
    let sdk = repo_root().join("plugin-sdk");
    let sdk = sdk.to_string_lossy().into_owned();
    let (work, report) = import(
        &["apps/coprocess_app_sample.json"],
        (&a, &a),
        &["--stub-plugins", "--sdk", &sdk],
    );
    assert_eq!(report["stubs"], true, "{report}");
    // The imported API points at httpbin.org; aim it at the test upstream.
    let out = work.path().join("out/apis");
    for entry in std::fs::read_dir(&out).expect("apis") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path)
            .expect("read")
            .replace("http://httpbin.org", &a);
        std::fs::write(&path, text).expect("write");
    }
    let config = config_of(&work);
    let output = crate::support::validate(&config);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let gw = Gateway::start(config);
    // The stub is the `plugin new` template exporting Tyk's name: it sends
    // the request on with its greeting header.
    let (status, _, body) = get_json(&gw.url("/coprocess-tyk-api-test/x")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-greeting"], json!(["Hello"]), "{body}");
}
