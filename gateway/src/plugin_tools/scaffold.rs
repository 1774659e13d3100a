//! `portcullis plugin new`: a plugin crate that builds, tests and loads as
//! it stands.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The kind of function the new plugin starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Runs before the upstream: an endpoint, or a `pre`/`post_auth`/`post` hook.
    Request,
    /// Decides who the caller is: the `auth` hook.
    Auth,
    /// Sees the upstream's response: the `response` hook.
    Response,
}

/// Where the new crate gets the SDK from.
#[derive(Debug)]
enum Sdk {
    Path(PathBuf),
    Registry,
}

impl Sdk {
    /// `--sdk DIR` if given; else the SDK of the repository this gateway was
    /// built from, when it is still there; else the registry.
    fn find(explicit: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = explicit {
            let dir = std::path::absolute(dir)?;
            if !dir.join("Cargo.toml").is_file() {
                bail!(
                    "--sdk {}: no Cargo.toml there (point it at the plugin-sdk directory)",
                    dir.display()
                );
            }
            return Ok(Sdk::Path(dir));
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        Ok(match repo.join("Cargo.toml").is_file() {
            true => Sdk::Path(repo.canonicalize().unwrap_or(repo)),
            false => Sdk::Registry,
        })
    }

    fn dependency(&self) -> String {
        match self {
            Sdk::Path(dir) => format!(
                "{{ version = \"{SDK_VERSION}\", path = {} }}",
                toml_string(&dir.display().to_string())
            ),
            Sdk::Registry => format!("\"{SDK_VERSION}\""),
        }
    }
}

const SDK_VERSION: &str = "0.2";

/// TOML basic string.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A crate name is also the `.wasm` file's name and a Rust identifier.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("invalid plugin name {name:?}: use lower-case letters, digits, `-` and `_`, starting with a letter");
    }
    Ok(())
}

/// Writes the crate `name` into `parent/name` and returns its directory.
pub fn new(name: &str, kind: Kind, parent: &Path, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists; choose another name or --path", dir.display());
    }
    let sdk = Sdk::find(sdk)?;
    let function = match kind {
        Kind::Request => "greet",
        Kind::Auth => "check-token",
        Kind::Response => "stamp",
    };
    let files = [
        ("Cargo.toml", cargo_toml(name, &sdk)),
        (".cargo/config.toml", CARGO_CONFIG.to_owned()),
        (".cargo/test-on-host", TEST_ON_HOST.to_owned()),
        (".gitignore", "/target\n".to_owned()),
        ("src/lib.rs", lib_rs(kind).to_owned()),
        ("api.yaml", api_yaml(name, kind, function)),
        ("gateway.yaml", GATEWAY_YAML.to_owned()),
        ("README.md", readme(name, kind, function)),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a file in the crate"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    make_executable(&dir.join(".cargo/test-on-host"))?;
    if let Sdk::Registry = sdk {
        eprintln!(
            "note: portcullis-sdk {SDK_VERSION} comes from the crates.io registry; \
             pass --sdk DIR to use a local copy of plugin-sdk instead"
        );
    }
    Ok(dir)
}

/// `new`, exporting the function as `function` instead of the template's
/// name: the scaffold of a plugin to port from another gateway, which
/// loads where the configuration names that function.
pub fn stub(name: &str, kind: Kind, function: &str, parent: &Path, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = new(name, kind, parent, sdk)?;
    let template = match kind {
        Kind::Request => "request \"greet\"",
        Kind::Auth => "auth \"check-token\"",
        Kind::Response => "response \"stamp\"",
    };
    let lib = dir.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib)?;
    let (kind_word, _) = template.split_once(' ').expect("a kind and a name");
    let exported = format!("{kind_word} {function:?}");
    std::fs::write(&lib, text.replacen(template, &exported, 1))?;
    Ok(dir)
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

fn cargo_toml(name: &str, sdk: &Sdk) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# A WebAssembly component: `cargo build --release` writes
# target/wasm32-wasip2/release/{file}.wasm.
crate-type = ["cdylib"]

[dependencies]
portcullis-sdk = {sdk}
schemars = "1"
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
# Small read-only data, so the stack, the data and the start of the heap
# share the one memory page a fresh instance resets (docs/benchmarks.md).
opt-level = "s"
lto = true
codegen-units = 1
strip = "debuginfo"

# A crate of its own, even when created inside another workspace.
[workspace]
"#,
        file = name.replace('-', "_"),
        sdk = sdk.dependency(),
    )
}

const CARGO_CONFIG: &str = r#"[build]
target = "wasm32-wasip2"

[target.wasm32-wasip2]
# A 32 KiB guest stack instead of Rust's default 1 MiB: the gateway makes a
# fresh instance per call and resets its whole memory afterwards, and with
# 32 KiB the stack, the data and a first heap fit in one 64 KiB page.
# Deep recursion traps and fails that one request; serde_json parses about
# 85 levels of nesting in 32 KiB. Use 65536 to reach its limit of 128.
rustflags = ["-C", "link-arg=-zstack-size=32768"]
# `cargo test` runs the tests natively, as plain Rust (see test-on-host).
runner = ".cargo/test-on-host"
"#;

/// The cargo runner that makes `cargo test` run natively; the example
/// plugins' workspace uses the same file.
const TEST_ON_HOST: &str = include_str!("../../../example-plugins/.cargo/test-on-host");

fn lib_rs(kind: Kind) -> &'static str {
    match kind {
        Kind::Request => REQUEST_LIB,
        Kind::Auth => AUTH_LIB,
        Kind::Response => RESPONSE_LIB,
    }
}

const REQUEST_LIB: &str = r#"//! A request function: answers `GET .../hello/{name}` itself, or, for any
//! other request, sends it on with a header for the upstream.

use portcullis_sdk::{Context, Outcome, Request, RequestChanges, Response, Result, plugin};
use schemars::JsonSchema;
use serde::Deserialize;

/// The `config` of a plugin reference to `greet`. The gateway checks the
/// YAML against this type's schema when it loads the configuration.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The word before the name.
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "Hello".into()
}

fn greet(req: &Request, ctx: &Context) -> Result<Outcome> {
    let config: Config = ctx.config()?;
    match req.param("name") {
        Some(name) => {
            let body = serde_json::json!({ "message": format!("{}, {name}!", config.greeting) });
            Ok(Response::json(200, &body)?.into())
        }
        None => Ok(RequestChanges::new().set_header("x-greeting", config.greeting).into()),
    }
}

plugin! {
    request "greet" => greet: Config,
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_sdk::testing::{TestContext, TestRequest};

    #[test]
    fn greets_by_name_with_the_configured_greeting() {
        let req = TestRequest::get("/hello/ann").param("name", "ann").build();
        let ctx = TestContext::new().config(&serde_json::json!({ "greeting": "Hi" })).build();
        let response = greet(&req, &ctx).unwrap().responded().expect("answers itself");
        assert_eq!(response.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["message"], "Hi, ann!");
    }

    #[test]
    fn other_requests_go_on_with_a_header() {
        let changes = greet(&TestRequest::get("/other").build(), &TestContext::new().build())
            .unwrap()
            .continued()
            .expect("continues");
        assert_eq!(changes.set_headers, [("x-greeting".to_owned(), "Hello".to_owned())]);
    }
}
"#;

const AUTH_LIB: &str = r#"//! An auth function: lets in callers whose `Authorization: Bearer TOKEN`
//! names a token from its config, as that token's user.

use std::collections::BTreeMap;

use portcullis_sdk::{AuthOutcome, Context, Request, RequestChanges, Response, Result, Session, plugin};
use schemars::JsonSchema;
use serde::Deserialize;

/// The `config` of a plugin reference to `check-token`. The gateway checks
/// the YAML against this type's schema when it loads the configuration.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Token => the user it stands for.
    tokens: BTreeMap<String, String>,
}

fn check_token(req: &Request, ctx: &Context) -> Result<AuthOutcome> {
    let config: Config = ctx.config()?;
    let token = req.header("authorization").and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| config.tokens.get(t)) {
        Some(user) => Ok(AuthOutcome::authenticated(Session::new(user.clone()))
            .with_changes(RequestChanges::new().set_header("x-user", user.clone()).remove_header("authorization"))),
        None => Ok(Response::text(401, "unauthorized\n").into()),
    }
}

plugin! {
    auth "check-token" => check_token: Config,
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_sdk::testing::{TestContext, TestRequest};

    fn ctx() -> portcullis_sdk::Context {
        TestContext::new()
            .config(&serde_json::json!({ "tokens": { "t1": "ann" } }))
            .build()
    }

    #[test]
    fn a_known_token_is_its_user() {
        let req = TestRequest::get("/").header("authorization", "Bearer t1").build();
        let outcome = check_token(&req, &ctx()).unwrap();
        assert_eq!(outcome.session().expect("authenticated").key_id, "ann");
    }

    #[test]
    fn anyone_else_gets_401() {
        let outcome = check_token(&TestRequest::get("/").build(), &ctx()).unwrap();
        assert_eq!(outcome.rejection().expect("rejected").status, 401);
    }
}
"#;

const RESPONSE_LIB: &str = r#"//! A response function: stamps every upstream response with a header.

use portcullis_sdk::{Context, Request, Response, Result, plugin};
use schemars::JsonSchema;
use serde::Deserialize;

/// The `config` of a plugin reference to `stamp`. The gateway checks the
/// YAML against this type's schema when it loads the configuration.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The header to set.
    header: String,
    /// Its value.
    value: String,
}

fn stamp(_: &Request, response: Response, ctx: &Context) -> Result<Response> {
    let config: Config = ctx.config()?;
    Ok(response.set_header(config.header, config.value))
}

plugin! {
    response "stamp" => stamp: Config,
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_sdk::testing::{TestContext, TestRequest};

    #[test]
    fn sets_the_configured_header() {
        let ctx = TestContext::new()
            .config(&serde_json::json!({ "header": "x-stamp", "value": "yes" }))
            .build();
        let response = stamp(&TestRequest::get("/").build(), Response::text(200, "ok"), &ctx).unwrap();
        assert_eq!(response.get_header("x-stamp"), Some("yes"));
    }
}
"#;

fn api_yaml(name: &str, kind: Kind, function: &str) -> String {
    let file = name.replace('-', "_");
    let plugin = |config: &str| {
        format!("{{ path: target/wasm32-wasip2/release/{file}.wasm, function: {function}, config: {config} }}")
    };
    let head = format!(
        "# An API that uses the plugin; `portcullis serve -c gateway.yaml` serves it.\n\
         id: {name}\nlisten_path: /{name}/\nstrip_listen_path: true\n\
         # Where requests the plugin lets through go.\nupstream: http://127.0.0.1:9\n"
    );
    match kind {
        Kind::Request => format!(
            "{head}endpoints:\n  - method: GET\n    path: /hello/{{name}}\n    plugin: {}\n",
            plugin("{ greeting: Hello }")
        ),
        Kind::Auth => format!(
            "{head}auth: {{ type: plugin }}\nplugins:\n  auth: {}\n",
            plugin("{ tokens: { secret-token: ann } }")
        ),
        Kind::Response => format!(
            "{head}plugins:\n  response:\n    - {}\n",
            plugin("{ header: x-stamp, value: yes }")
        ),
    }
}

const GATEWAY_YAML: &str = "# A gateway for trying the plugin: `portcullis serve -c gateway.yaml`.\n\
listen: 127.0.0.1:8080\napis: [api.yaml]\nsession_store: target/sessions.redb\n";

fn readme(name: &str, kind: Kind, function: &str) -> String {
    let file = name.replace('-', "_");
    let kind = format!("{kind:?}").to_lowercase();
    format!(
        r#"# {name}

A Portcullis plugin with one `{kind}` function, `{function}`.

```sh
cargo test                  # unit tests, natively (portcullis_sdk::testing)
cargo build --release       # target/wasm32-wasip2/release/{file}.wasm
portcullis plugin inspect target/wasm32-wasip2/release/{file}.wasm
portcullis plugin call target/wasm32-wasip2/release/{file}.wasm {function} --config '{{...}}'
portcullis serve -c gateway.yaml   # api.yaml uses it
```

`cargo build` needs the `wasm32-wasip2` target: `rustup target add wasm32-wasip2`.
See the Portcullis guide to writing plugins (docs/writing-plugins.md).
"#
    )
}
