//! `portcullis plugin call`: one invocation in the real sandbox, with the
//! gateway's default limits, from inputs on the command line.
//!
//! One file, past 500 lines: reading the inputs (`--request`, `--session`,
//! `--fan-out`, `--response`), making the call and reporting it are one
//! command's flow, read top to bottom.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::config::{AllowRule, BaseUrl, FanOut, Limits, OnError, PluginRef, RoutingPolicy};
use http::{HeaderMap, HeaderName};

use crate::plugin::{
    Api, AuthResult, CallContext, Changes, HookKind, PluginRuntime, Reply, RequestOutcome, RequestRecord,
    ResponseRecord, Session,
};
use crate::telemetry::CallStats;
use crate::telemetry::{RequestId, TraceContext};
use crate::upstream::outbound::{OutboundClient, OutboundPolicy};

/// What to call, and with what.
#[derive(Debug)]
pub struct CallArgs {
    pub file: PathBuf,
    pub function: String,
    pub request: Option<PathBuf>,
    /// `NAME=VALUE` path parameters, added to the request's.
    pub params: Vec<String>,
    pub response: Option<PathBuf>,
    pub config: Option<String>,
    pub session: Option<PathBuf>,
    pub api: Option<PathBuf>,
    /// A gateway file whose `plugin_limits` apply.
    pub gateway: Option<PathBuf>,
    pub allow: Vec<String>,
    /// The reference's `fan_out` block: JSON, or `@FILE`.
    pub fan_out: Option<String>,
}

/// How the call ended.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub function: String,
    pub kind: &'static str,
    /// `continue`, `respond`, `authenticated`, `reject`, `response`, or
    /// `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<serde_json::Value>,
    /// When the plugin failed: the status the gateway would answer, the
    /// failure's reason (as in `portcullis_plugin_failures_total`) and
    /// message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
    pub logs: Vec<LogLine>,
    pub cpu_us: u64,
    pub peak_memory_bytes: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

impl Report {
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// The request, as `--request` gives it in JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RequestFile {
    method: Option<String>,
    /// The path, optionally with `?query`.
    path: Option<String>,
    query: Option<String>,
    upstream_path: Option<String>,
    headers: Headers,
    params: BTreeMap<String, String>,
    body: Option<String>,
    client_addr: Option<String>,
}

/// Headers as a map (`{"x-a": "1"}`) or a list of pairs, for repeated names.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Headers {
    Map(BTreeMap<String, String>),
    List(Vec<(String, String)>),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::List(Vec::new())
    }
}

impl Headers {
    fn into_vec(self) -> Vec<(String, String)> {
        match self {
            Headers::Map(map) => map.into_iter().collect(),
            Headers::List(list) => list,
        }
    }
}

/// A request, owned.
#[derive(Debug)]
struct Input {
    method: String,
    path: String,
    query: String,
    upstream_path: Option<String>,
    headers: Vec<(String, String)>,
    params: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    client_addr: String,
}

fn split_uri(uri: &str) -> (String, String) {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    (path.to_owned(), query.to_owned())
}

/// Reads `--request`: JSON, or a raw HTTP/1.1 request.
fn read_request(file: Option<&Path>) -> anyhow::Result<Input> {
    let Some(file) = file else {
        return Ok(Input {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            upstream_path: None,
            headers: Vec::new(),
            params: Vec::new(),
            body: None,
            client_addr: "127.0.0.1:40000".into(),
        });
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        let json: RequestFile =
            serde_json::from_slice(&bytes).with_context(|| format!("{}: not a request in JSON", file.display()))?;
        let (path, query_in_path) = split_uri(json.path.as_deref().unwrap_or("/"));
        return Ok(Input {
            method: json.method.unwrap_or_else(|| "GET".into()),
            path,
            query: json.query.unwrap_or(query_in_path),
            upstream_path: json.upstream_path,
            headers: json.headers.into_vec(),
            params: json.params.into_iter().collect(),
            body: json.body.map(String::into_bytes),
            client_addr: json.client_addr.unwrap_or_else(|| "127.0.0.1:40000".into()),
        });
    }
    parse_raw_request(&bytes).with_context(|| format!("{}: not a JSON or HTTP/1.1 request", file.display()))
}

fn parse_raw_request(bytes: &[u8]) -> anyhow::Result<Input> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head) = request.parse(bytes)? else {
        bail!("the request head is incomplete (it ends with an empty line)");
    };
    let (path, query) = split_uri(request.path.unwrap_or("/"));
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let rest = &bytes[head..];
    let body = match headers.iter().find(|(n, _)| n == "content-length") {
        Some((_, len)) => {
            let len: usize = len.trim().parse().context("invalid content-length")?;
            rest.get(..len)
                .context("the body is shorter than its content-length")?
                .to_vec()
        }
        None => rest.to_vec(),
    };
    Ok(Input {
        method: request.method.unwrap_or("GET").to_owned(),
        path,
        query,
        upstream_path: None,
        headers,
        params: Vec::new(),
        body: Some(body),
        client_addr: "127.0.0.1:40000".into(),
    })
}

/// The upstream's response for a `response` function (`--response`), JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseFile {
    status: u16,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    body: String,
}

/// The caller's session (`--session`), JSON; absent fields are those of an
/// anonymous session.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SessionFile {
    key_id: String,
    alias: Option<String>,
    rate: u32,
    per: u32,
    quota_max: Option<i64>,
    quota_remaining: Option<i64>,
    quota_renewal_seconds: u64,
    metadata: BTreeMap<String, String>,
    tags: Vec<String>,
    expires: Option<i64>,
}

impl From<SessionFile> for Session {
    fn from(s: SessionFile) -> Self {
        Session {
            key_id: s.key_id,
            alias: s.alias,
            rate: s.rate,
            per: s.per,
            quota_max: s.quota_max.unwrap_or(-1),
            quota_remaining: s.quota_remaining.or(s.quota_max).unwrap_or(-1),
            quota_renewal_seconds: s.quota_renewal_seconds,
            metadata: s.metadata.into_iter().collect(),
            tags: s.tags,
            expires: s.expires,
        }
    }
}

/// The API definition (`--api`), JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ApiFile {
    id: String,
    name: String,
    listen_path: String,
    upstream: String,
    config: serde_json::Value,
}

impl Default for ApiFile {
    fn default() -> Self {
        ApiFile {
            id: "cli".into(),
            name: "cli".into(),
            listen_path: "/".into(),
            upstream: "http://127.0.0.1:9".into(),
            config: serde_json::json!({}),
        }
    }
}

fn read_json<T: serde::de::DeserializeOwned + Default>(file: Option<&Path>, what: &str) -> anyhow::Result<T> {
    let Some(file) = file else { return Ok(T::default()) };
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid {what}", file.display()))
}

/// The text of `@FILE`, or `None` when `arg` is the text itself.
fn at_file(arg: &str) -> anyhow::Result<Option<(&str, String)>> {
    let Some(file) = arg.strip_prefix('@') else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    Ok(Some((file, text)))
}

/// `--config`: JSON text, or `@FILE` holding JSON or YAML.
fn read_config(arg: Option<&str>) -> anyhow::Result<String> {
    let Some(arg) = arg else {
        return Ok("{}".into());
    };
    let value: serde_json::Value = match at_file(arg)? {
        Some((file, text)) => serde_yaml::from_str(&text).with_context(|| format!("{file}: not JSON or YAML"))?,
        None => serde_json::from_str(arg).context("--config is not valid JSON (use @FILE for a file)")?,
    };
    Ok(value.to_string())
}

/// `--fan-out`: a `fan_out` block as JSON text, or `@FILE` holding JSON or
/// YAML, checked as the gateway checks one in an API file.
fn read_fan_out(
    arg: &str,
    allow: &[AllowRule],
    params: &[(String, String)],
    limits: &Limits,
) -> anyhow::Result<FanOut> {
    let (source, text) = match at_file(arg)? {
        Some((file, text)) => (PathBuf::from(file), text),
        None => (PathBuf::from("--fan-out"), arg.to_owned()),
    };
    let names: Vec<&str> = params.iter().map(|(name, _)| name.as_str()).collect();
    crate::config::fan_out_from_text(&source, &text, allow, &names, limits).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(here `--allow HOST` is the API's outbound.allow, and `--param NAME=VALUE` a path parameter the endpoint captures)"
        )
    })
}

/// Runs the call and reports how it ended. `Err` is for inputs that could
/// not be read or a plugin that could not be loaded; a failing plugin is a
/// report with an error.
pub async fn call(args: CallArgs, logs: Arc<Mutex<Vec<LogLine>>>) -> anyhow::Result<Report> {
    let mut input = read_request(args.request.as_deref())?;
    for param in &args.params {
        let (name, value) = param
            .split_once('=')
            .with_context(|| format!("--param {param:?}: expected NAME=VALUE"))?;
        input.params.push((name.to_owned(), value.to_owned()));
    }
    let session: Session = read_json::<SessionFile>(args.session.as_deref(), "session")?.into();
    let api: ApiFile = read_json(args.api.as_deref(), "API definition")?;
    let config_json = read_config(args.config.as_deref())?;
    let allow = args
        .allow
        .iter()
        .map(|host| AllowRule::parse(host).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let upstream = BaseUrl::parse(&api.upstream).map_err(|e| anyhow::anyhow!("--api upstream: {e}"))?;

    let limits = match &args.gateway {
        Some(file) => crate::config::load(file)?.limits,
        None => Limits::default(),
    };
    let fan_out = args
        .fan_out
        .as_deref()
        .map(|arg| read_fan_out(arg, &allow, &input.params, &limits))
        .transpose()?;
    let runtime = Arc::new(PluginRuntime::new(&limits, None, OutboundClient::new(16))?);
    let file = std::path::absolute(&args.file)?;
    let inspection = runtime
        .inspect(&file)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let Some(function) = inspection.functions.iter().find(|f| f.name == args.function) else {
        let names: Vec<&str> = inspection.functions.iter().map(|f| f.name.as_str()).collect();
        bail!(
            "{}: no function `{}`; the component exports: {}",
            file.display(),
            args.function,
            names.join(", ")
        );
    };
    let kind = function.kind;
    let reference = PluginRef {
        path: file.clone(),
        oci: None,
        function: args.function.clone(),
        config_json,
        limits: limits.clone(),
        on_error: OnError::Fail,
        fallback: None,
        reuse: 1,
        sha256: None,
        file: PathBuf::from("--config"),
        field: "plugin".into(),
        fan_out,
    };
    let plugin = runtime.load(&reference, kind, "").await?;

    let stats = Arc::new(Mutex::new(CallStats::default()));
    let ctx = CallContext {
        api: Arc::new(Api {
            id: api.id.clone(),
            name: api.name,
            listen_path: api.listen_path,
            upstream: api.upstream,
            config: api.config.to_string(),
        }),
        api_id: api.id.into(),
        outbound: Arc::new(OutboundPolicy {
            allow: allow.clone(),
            timeout: std::time::Duration::from_secs(5),
            client: None,
        }),
        routing: Arc::new(RoutingPolicy {
            names: vec![("default".into(), 0)],
            origins: vec![upstream],
            allow,
        }),
        request_id: RequestId::none(),
        trace: TraceContext::default(),
        stats: Some(Arc::clone(&stats)),
        hook: "call",
    };
    let request = RequestRecord {
        method: &input.method,
        path: &input.path,
        upstream_path: input.upstream_path.as_deref().unwrap_or(&input.path),
        query: &input.query,
        headers: input.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
        body: if plugin.wants_body() {
            input.body.as_deref().or(Some(&[]))
        } else {
            None
        },
        client_addr: &input.client_addr,
        params: &input.params,
        request_id: "plugin-call",
    };

    let mut report = Report {
        function: args.function.clone(),
        kind: super::kind(kind),
        outcome: "failed",
        changes: None,
        response: None,
        session: None,
        error: None,
        logs: Vec::new(),
        cpu_us: 0,
        peak_memory_bytes: 0,
    };
    let failed = |e: crate::plugin::PluginError| serde_json::json!({ "status": e.status().as_u16(), "reason": e.reason(), "message": e.to_string() });
    match kind {
        HookKind::Request => match plugin.on_request(&ctx, &request, &session).await {
            Ok(RequestOutcome::Continue(changes)) => {
                report.outcome = "continue";
                report.changes = Some(changes_json(&changes));
            }
            Ok(RequestOutcome::Respond(response)) => {
                report.outcome = "respond";
                report.response = Some(response_json(&response));
            }
            Err(e) => report.error = Some(failed(e)),
        },
        HookKind::Auth => match plugin.on_auth(&ctx, &request).await {
            Ok(AuthResult::Authenticated { session, changes }) => {
                report.outcome = "authenticated";
                report.session = Some(session_json(&session));
                report.changes = Some(changes_json(&changes));
            }
            Ok(AuthResult::Respond(response)) => {
                report.outcome = "reject";
                report.response = Some(response_json(&response));
            }
            Err(e) => report.error = Some(failed(e)),
        },
        HookKind::Response => {
            let upstream: ResponseFile = match args.response.as_deref() {
                Some(file) => {
                    let text =
                        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
                    serde_json::from_str(&text).with_context(|| format!("{}: not a valid response", file.display()))?
                }
                None => ResponseFile {
                    status: 200,
                    headers: Headers::default(),
                    body: String::new(),
                },
            };
            let headers = upstream.headers.into_vec();
            let record = ResponseRecord {
                status: upstream.status,
                headers: headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
                body: upstream.body.as_bytes(),
            };
            match plugin.on_response(&ctx, &request, &record, &session).await {
                Ok(response) => {
                    report.outcome = "response";
                    report.response = Some(response_json(&response));
                }
                Err(e) => report.error = Some(failed(e)),
            }
        }
    }
    let stats = crate::sync::lock(&stats).clone();
    report.cpu_us = u64::try_from(stats.cpu.as_micros()).unwrap_or(u64::MAX);
    report.peak_memory_bytes = stats.peak_memory_bytes;
    report.logs = std::mem::take(&mut *crate::sync::lock(&logs));
    Ok(report)
}

fn body_json(body: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(body) {
        Ok(text) => text.into(),
        Err(_) => serde_json::json!({ "bytes": body.len(), "utf8": false }),
    }
}

/// The changes as the gateway would apply them: header names lower-cased,
/// the headers the gateway owns dropped (and listed).
fn changes_json(c: &Changes) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut put = |name: &str, value: serde_json::Value| {
        out.insert(name.into(), value);
    };
    if let Some(m) = &c.method {
        put("method", m.as_str().into());
    }
    if let Some(p) = &c.path {
        put("path", p.as_str().into());
    }
    if let Some(q) = &c.query {
        put("query", q.as_str().into());
    }
    if !c.set_headers.is_empty() {
        put("set_headers", headers_json(&c.set_headers));
    }
    if !c.remove_headers.is_empty() {
        let names: Vec<&str> = c.remove_headers.iter().map(HeaderName::as_str).collect();
        put("remove_headers", serde_json::json!(names));
    }
    if let Some(b) = &c.body {
        put("body", body_json(b));
    }
    if let Some((url, _)) = &c.upstream {
        put("upstream", url.as_str().into());
    }
    if !c.session_metadata.is_empty() {
        put("session_metadata", serde_json::json!(c.session_metadata));
    }
    if !c.response_headers.is_empty() {
        put("response_headers", headers_json(&c.response_headers));
    }
    if !c.dropped.is_empty() {
        put("dropped_headers", dropped_json(&c.dropped));
    }
    out.into()
}

fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let pairs: Vec<(&str, String)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    serde_json::json!(pairs)
}

fn dropped_json(names: &[HeaderName]) -> serde_json::Value {
    serde_json::json!(names.iter().map(HeaderName::as_str).collect::<Vec<_>>())
}

fn response_json(r: &Reply) -> serde_json::Value {
    let mut out = serde_json::json!({ "status": r.status.as_u16(), "headers": headers_json(&r.headers), "body": body_json(&r.body) });
    if !r.dropped.is_empty() {
        out["dropped_headers"] = dropped_json(&r.dropped);
    }
    out
}

fn session_json(s: &Session) -> serde_json::Value {
    serde_json::json!({
        "key_id": s.key_id, "alias": s.alias, "rate": s.rate, "per": s.per,
        "quota_max": s.quota_max, "quota_remaining": s.quota_remaining,
        "quota_renewal_seconds": s.quota_renewal_seconds, "metadata": s.metadata,
        "tags": s.tags, "expires": s.expires,
    })
}

/// The report as text for a terminal.
pub fn text(report: &Report) -> String {
    let mut out = format!("{} function `{}`: ", report.kind, report.function);
    match &report.error {
        Some(e) => out.push_str(&format!(
            "FAILED ({}): {}\n  the gateway would answer {}\n",
            e["reason"].as_str().unwrap_or_default(),
            e["message"].as_str().unwrap_or_default(),
            e["status"]
        )),
        None => out.push_str(&format!("{}\n", report.outcome)),
    }
    let pretty = |v: &serde_json::Value| {
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .replace('\n', "\n  ")
    };
    if let Some(s) = &report.session {
        out.push_str(&format!("session:\n  {}\n", pretty(s)));
    }
    if let Some(c) = &report.changes {
        out.push_str(&format!("changes:\n  {}\n", pretty(c)));
    }
    if let Some(r) = &report.response {
        out.push_str(&format!("response:\n  {}\n", pretty(r)));
    }
    if !report.logs.is_empty() {
        out.push_str("log:\n");
        for line in &report.logs {
            out.push_str(&format!("  {:5} {}\n", line.level, line.message));
        }
    }
    out.push_str(&format!(
        "used: {} us of CPU, {} KiB of memory at most\n",
        report.cpu_us,
        report.peak_memory_bytes >> 10
    ));
    out
}
