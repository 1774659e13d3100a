//! The YAML schema, exactly as operators write it: one struct per document
//! shape, unknown fields rejected. Values that can be checked on their own
//! (URLs, paths, methods) are checked here, so the error carries the line.
//! Checks that need context (files on disk, duplicates) live in `load`.

use std::path::PathBuf;

use serde::Deserialize;

/// `gateway.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// One JSON line per request; absent: no access log.
    #[serde(default)]
    pub access_log: Option<AccessLogFile>,
    /// Address of the plain-HTTP public listener; `false` turns it off.
    #[serde(default)]
    pub listen: ListenSetting,
    /// The HTTPS listener.
    #[serde(default)]
    pub tls: Option<TlsFile>,
    /// API definition files: paths, directories (every `*.yaml`/`*.yml`) or
    /// glob patterns, relative to this file.
    pub apis: Vec<String>,
    /// Default upstream timeout (response headers), per API overridable.
    #[serde(default = "default_upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
    /// Longest silence between two pieces of an upstream's response body,
    /// per API overridable.
    #[serde(default = "default_upstream_read_timeout_ms")]
    pub upstream_read_timeout_ms: u64,
    /// The whole upstream exchange, response body included, per API
    /// overridable; absent: no limit.
    #[serde(default)]
    pub upstream_total_timeout_ms: Option<u64>,
    /// Largest request body proxied, per API overridable; absent: no limit.
    #[serde(default)]
    pub max_request_body_bytes: Option<usize>,
    /// How long an upgraded connection (WebSocket) may stay silent both
    /// ways, per API overridable.
    #[serde(default = "default_tunnel_idle_timeout_ms")]
    pub tunnel_idle_timeout_ms: u64,
    /// Outbound plugin calls in flight at once, gateway-wide.
    #[serde(default = "default_max_outbound_in_flight")]
    pub max_outbound_in_flight: usize,
    /// Default limits for every plugin invocation.
    #[serde(default)]
    pub plugin_limits: LimitsFile,
    /// Where compiled plugins are cached, relative to this file. Default: the
    /// user's cache directory. `false` disables the cache.
    #[serde(default)]
    pub plugin_cache: Option<CacheSetting>,
    /// Keys, sessions and counters: a file path for the embedded store
    /// (relative to this file), or a `redis://` URL. Default: the embedded
    /// store in the user's data directory.
    #[serde(default)]
    pub session_store: Option<String>,
    /// Address of the admin API listener; absent = no admin API.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// The secret admin requests must send in `X-Admin-Secret`; `env:NAME`
    /// reads it from an environment variable.
    #[serde(default)]
    pub admin_secret: Option<String>,
    /// Reload by itself when the configuration's files or plugins change.
    #[serde(default)]
    pub watch: bool,
    /// Export traces over OTLP/HTTP.
    #[serde(default)]
    pub tracing: Option<TracingFile>,
    /// How request paths are canonicalised before routing, per API
    /// overridable.
    #[serde(default)]
    pub paths: PathsFile,
    /// How long a client may take to send a request body that the gateway
    /// reads whole (for a plugin), per API overridable.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// How long a client may take to send a request head (and, on a new
    /// connection, its first bytes). Read at start.
    #[serde(default = "default_client_timeout_ms")]
    pub client_head_timeout_ms: u64,
    /// How long a write to a client may wait for it to read. Read at start.
    #[serde(default = "default_client_timeout_ms")]
    pub client_send_timeout_ms: u64,
}

fn default_client_timeout_ms() -> u64 {
    30_000
}

/// `paths:` of the gateway file or of an API: how request paths are
/// canonicalised (see `canonical`). An API's absent fields inherit the
/// gateway's.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsFile {
    #[serde(default)]
    pub merge_slashes: Option<bool>,
    #[serde(default)]
    pub escaped_slashes: Option<crate::config::EscapedSlashes>,
    #[serde(default)]
    pub trailing_slash: Option<crate::config::TrailingSlash>,
    #[serde(default)]
    pub params: Option<crate::config::PathParams>,
}

impl PathsFile {
    /// `base` with the fields this one sets.
    pub fn over(&self, base: crate::config::PathOptions) -> crate::config::PathOptions {
        crate::config::PathOptions {
            merge_slashes: self.merge_slashes.unwrap_or(base.merge_slashes),
            escaped_slashes: self.escaped_slashes.unwrap_or(base.escaped_slashes),
            trailing_slash: self.trailing_slash.unwrap_or(base.trailing_slash),
            params: self.params.unwrap_or(base.params),
        }
    }
}

fn default_body_timeout_ms() -> u64 {
    10_000
}

/// `unmatched:` of an API: what happens to a request no endpoint matches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Proxied to the upstream with the API's hooks and limits.
    #[default]
    Proxy,
    /// Refused with 404: only the listed endpoints are served.
    Reject,
}

/// `override_headers:` of an API: what happens to `X-HTTP-Method-Override`,
/// `X-Original-URL` and their kin, which some backends obey to change the
/// method or path the gateway routed on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverrideHeaders {
    /// Removed before plugins and the upstream see the request.
    #[default]
    Remove,
    /// Passed on.
    Keep,
}

/// `transport:` of an API: the connections it is served on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Plain HTTP and HTTPS alike.
    #[default]
    Any,
    /// HTTPS only: 421 on the plain listener.
    Tls,
    /// HTTPS with a verified client certificate only: 421 on the plain
    /// listener, 403 without a certificate.
    MutualTls,
}

/// `tracing:` in the gateway file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingFile {
    /// The collector: `http://host:4318` (`/v1/traces` is added) or the
    /// full traces URL.
    pub endpoint: String,
    #[serde(default = "default_service_name")]
    pub service_name: String,
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Values may be `env:VARIABLE`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn default_service_name() -> String {
    "portcullis".into()
}

fn default_sampling_ratio() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CacheSetting {
    Enabled(bool),
    Dir(PathBuf),
}

/// `listen:` of the gateway file: an address, or `false` for no plain
/// listener (HTTPS only).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ListenSetting {
    Address(String),
    Enabled(bool),
}

impl Default for ListenSetting {
    fn default() -> Self {
        ListenSetting::Address("127.0.0.1:8080".into())
    }
}

/// `tls:` of the gateway file: the HTTPS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    #[serde(default = "default_tls_listen")]
    pub listen: String,
    /// Picked by SNI; the first is the default.
    pub certificates: Vec<CertFile>,
    /// CA certificates that client certificates must chain to (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: Option<ClientAuthFile>,
    /// How often certificate, key and CA files are checked for changes; 0
    /// turns the check off (reloads still re-read them).
    #[serde(default = "default_watch_interval_ms")]
    pub watch_interval_ms: u64,
}

fn default_tls_listen() -> String {
    "127.0.0.1:8443".into()
}

fn default_watch_interval_ms() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthFile {
    Optional,
    Required,
}

/// `upstream_tls:` of an API: how the gateway's connections for it (the
/// upstream, plugins' outbound calls) verify and present certificates.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// Trust these CA certificates instead of the system's.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// With `ca`: trust the system's CAs as well.
    #[serde(default)]
    pub system_roots: bool,
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// The name sent in SNI and verified, instead of the URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_max_outbound_in_flight() -> usize {
    512
}

fn default_upstream_timeout_ms() -> u64 {
    30_000
}

fn default_upstream_read_timeout_ms() -> u64 {
    60_000
}

fn default_tunnel_idle_timeout_ms() -> u64 {
    60_000
}

/// Plugin limits as written; absent fields inherit (gateway defaults, then
/// the gateway file, then the plugin reference).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub cpu_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    pub max_outbound_calls: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_session_bytes: Option<usize>,
    pub max_session_entries: Option<usize>,
    pub max_log_lines: Option<u32>,
    pub max_log_bytes: Option<usize>,
    pub pool_size: Option<u32>,
}

/// One API definition file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    pub id: ApiId,
    #[serde(default)]
    pub name: Option<String>,
    pub listen_path: ListenPath,
    #[serde(default)]
    pub strip_listen_path: bool,
    /// A URL, the name of one of `upstreams`, or targets with balancing,
    /// health checks and retries.
    pub upstream: UrlOr<UpstreamGroupFile>,
    /// Upstreams a plugin's routing picks by name.
    #[serde(default)]
    pub upstreams: std::collections::BTreeMap<UpstreamName, UrlOr<UpstreamGroupFile>>,
    #[serde(default)]
    pub upstream_timeout_ms: Option<u64>,
    #[serde(default)]
    pub upstream_read_timeout_ms: Option<u64>,
    #[serde(default)]
    pub upstream_total_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_request_body_bytes: Option<usize>,
    #[serde(default)]
    pub tunnel_idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub body_timeout_ms: Option<u64>,
    /// Overrides the gateway's `paths:` field by field.
    #[serde(default)]
    pub paths: PathsFile,
    #[serde(default)]
    pub unmatched: Unmatched,
    #[serde(default)]
    pub override_headers: OverrideHeaders,
    /// Protocols an `Upgrade` request may switch to (lower case).
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeProtocol>,
    #[serde(default)]
    pub transport: Transport,
    /// TLS for every connection the gateway makes for this API.
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTlsFile>,
    /// Send the client's verified certificate (mutual TLS) to the upstream
    /// and plugins as `x-forwarded-client-cert`.
    #[serde(default)]
    pub forward_client_cert: bool,
    #[serde(default)]
    pub outbound: OutboundFile,
    /// Where plugins may route requests besides `upstream`.
    #[serde(default)]
    pub routing: RoutingFile,
    /// How callers authenticate.
    #[serde(default)]
    pub auth: AuthFile,
    /// API-level plugin hooks.
    #[serde(default)]
    pub plugins: HooksFile,
    /// The API's own config, handed to every plugin as `api.config`.
    #[serde(default)]
    pub config: Option<serde_yaml::Value>,
    /// A limit on every request to the API, keyed or not.
    #[serde(default)]
    pub rate_limit: Option<RateLimitFile>,
    #[serde(default)]
    pub endpoints: Vec<EndpointFile>,
}

/// `auth:` of an API.
#[derive(Debug, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthFile {
    /// No authentication: every caller gets the anonymous session.
    #[default]
    Keyless,
    /// A key issued by the admin API, in a header (`Authorization: Bearer
    /// <key>` works) or a query parameter.
    ApiKey {
        #[serde(default = "default_auth_header")]
        header: String,
        #[serde(default)]
        query: Option<String>,
    },
    /// The `plugins.auth` plugin authenticates.
    Plugin,
}

fn default_upgrades() -> Vec<UpgradeProtocol> {
    vec![UpgradeProtocol("websocket".into())]
}

/// A protocol named in `upgrades:`, lower-cased. `h2c` is refused: an
/// HTTP/2 connection tunnelled past the gateway would carry requests that
/// no routing, plugin or limit sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeProtocol(pub String);

impl<'de> Deserialize<'de> for UpgradeProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?.to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(serde::de::Error::custom(format!("{name:?} is not a protocol token")));
        }
        if name == "h2c" || name.starts_with("h2c/") {
            return Err(serde::de::Error::custom(
                "h2c cannot be tunnelled: its requests would bypass routing, plugins and limits (serve HTTP/2 on the TLS listener)",
            ));
        }
        Ok(UpgradeProtocol(name))
    }
}

fn default_auth_header() -> String {
    "authorization".into()
}

/// `plugins:` of an API: the hooks around the per-endpoint plugin.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksFile {
    #[serde(default)]
    pub pre: Vec<PluginFile>,
    #[serde(default)]
    pub auth: Option<PluginFile>,
    #[serde(default)]
    pub post_auth: Vec<PluginFile>,
    #[serde(default)]
    pub post: Vec<PluginFile>,
    #[serde(default)]
    pub response: Vec<PluginFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundFile {
    /// `host:port`, `host` (any port) or `*.domain` entries.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
    #[serde(default = "default_outbound_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for OutboundFile {
    fn default() -> Self {
        OutboundFile {
            allow: Vec::new(),
            timeout_ms: default_outbound_timeout_ms(),
        }
    }
}

fn default_outbound_timeout_ms() -> u64 {
    5_000
}

/// `routing:` of an API: the hosts a plugin's upstream override may name,
/// besides the API's own upstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingFile {
    /// `host:port`, `host` (any port) or `*.domain` entries.
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    /// One method or a list; absent means any method.
    #[serde(default)]
    pub method: Option<OneOrMany<MethodName>>,
    pub path: EndpointPath,
    /// The endpoint's plugin; an endpoint may have only a `rate_limit`.
    #[serde(default)]
    pub plugin: Option<PluginFile>,
    /// A limit on the requests this endpoint matches.
    #[serde(default)]
    pub rate_limit: Option<RateLimitFile>,
}

/// `rate_limit:` of an API or an endpoint: at most `rate` requests per
/// `per` seconds for each caller as `by` tells them apart.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFile {
    pub rate: std::num::NonZeroU32,
    pub per: std::num::NonZeroU32,
    #[serde(default)]
    pub by: LimitByFile,
}

/// `rate_limit.by`: `client_ip` (the default), `header:NAME` or `api`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum LimitByFile {
    #[default]
    ClientIp,
    Header(http::HeaderName),
    Api,
}

impl<'de> Deserialize<'de> for LimitByFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct By;
        impl serde::de::Visitor<'_> for By {
            type Value = LimitByFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client_ip, header:NAME or api")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<LimitByFile, E> {
                match s {
                    "client_ip" => Ok(LimitByFile::ClientIp),
                    "api" => Ok(LimitByFile::Api),
                    _ => match s.strip_prefix("header:") {
                        Some(name) => http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                            .map(LimitByFile::Header)
                            .map_err(|_| E::custom(format!("invalid header name {name:?} in {s:?}"))),
                        None => Err(E::custom(format!(
                            "unknown rate_limit.by {s:?}: expected client_ip, header:NAME or api"
                        ))),
                    },
                }
            }
        }
        deserializer.deserialize_str(By)
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `access_log:` in the gateway file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    /// A file (relative to the gateway file) or `stdout`.
    pub path: String,
}

/// A plugin reference: which component, which function, with what config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    /// The `.wasm` component, relative to the YAML file that names it.
    pub path: PathBuf,
    pub function: String,
    #[serde(default)]
    pub config: Option<serde_yaml::Value>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub on_error: OnError,
    /// With `on_error: fail`, answer this instead of the gateway's JSON error.
    #[serde(default)]
    pub fallback: Option<FallbackFile>,
    /// Opt-in: one instance serves up to this many calls instead of one.
    /// Faster, but calls share the guest's memory (see docs/security.md).
    #[serde(default)]
    pub reuse: Option<std::num::NonZeroU32>,
    /// The SHA-256 of the `.wasm` file, in hex: loading fails unless the
    /// file has exactly this digest (`portcullis plugin inspect` prints it).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Outbound calls the gateway makes before the function runs, whose
    /// results the function reads from its input (a host-run fan-out).
    #[serde(default)]
    pub fan_out: Option<FanOutFile>,
}

/// `fan_out:` of a plugin reference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutFile {
    /// The calls by name: a URL, or a call with method, headers and timeout.
    pub calls: std::collections::BTreeMap<String, FanOutCallFile>,
    /// Deadline for the whole batch; the API's `outbound.timeout_ms` when absent.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Stop once this many calls have succeeded (2xx); the rest are cancelled.
    #[serde(default)]
    pub first: Option<std::num::NonZeroU32>,
}

/// One call of a fan-out: written as its URL alone, or in full.
#[derive(Debug)]
pub struct FanOutCallFile(pub FanOutCallSpec);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOutCallSpec {
    /// `http://` or `https://` URL; `{name}` is replaced by the endpoint's
    /// path parameter of that name.
    pub url: String,
    #[serde(default)]
    pub method: Option<MethodName>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl<'de> Deserialize<'de> for FanOutCallFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FanOutCallFile;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a URL, or a map with `url` and optionally `method`, `headers`, `body`, `timeout_ms`")
            }

            fn visit_str<E: serde::de::Error>(self, url: &str) -> Result<Self::Value, E> {
                Ok(FanOutCallFile(FanOutCallSpec {
                    url: url.to_owned(),
                    method: None,
                    headers: Default::default(),
                    body: None,
                    timeout_ms: None,
                }))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                FanOutCallSpec::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(FanOutCallFile)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A fixed response for a failing plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackFile {
    pub status: u16,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

/// What a failing plugin (trap, timeout, limit, invalid outcome) does to the
/// request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The request fails (500, or 504 for a timeout). The default.
    #[default]
    Fail,
    /// Fail open: go on as if the plugin had returned continue, unchanged.
    Continue,
}

/// A string checked while it is parsed, so the error carries its line.
/// (A `try_from` conversion would run after the parser moved on.)
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name(pub String);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Checked;
                impl serde::de::Visitor<'_> for Checked {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        let check: fn(&str) -> Result<(), String> = $check;
                        check(s).map(|()| $name(s.to_owned())).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Checked)
            }
        }
    };
}

validated_string!(
    /// An API id: letters, digits, `-`, `_`, `.`.
    ApiId,
    |s| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            Ok(())
        } else {
            Err(format!("invalid API id {s:?}: use letters, digits, '-', '_' or '.'"))
        }
    }
);

validated_string!(
    /// A listen path: starts with `/`.
    ListenPath,
    |s| {
        if s.starts_with('/') {
            Ok(())
        } else {
            Err(format!("invalid listen_path {s:?}: must start with '/'"))
        }
    }
);

validated_string!(
    /// An endpoint path template relative to the listen path, e.g.
    /// `/summary/{id}`.
    EndpointPath,
    |s| {
        if !s.starts_with('/') {
            return Err(format!("invalid endpoint path {s:?}: must start with '/'"));
        }
        let mut router = matchit::Router::new();
        router
            .insert(s, ())
            .map_err(|e| format!("invalid endpoint path {s:?}: {e}"))
    }
);

validated_string!(
    /// An HTTP method name such as `GET`.
    MethodName,
    |s| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(())
        } else {
            Err(format!("invalid method {s:?}: expected an upper-case HTTP method such as GET or POST"))
        }
    }
);

validated_string!(
    /// An outbound allowlist entry.
    AllowEntry,
    |s| super::net::AllowRule::parse(s).map(|_| ())
);

fn is_upstream_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
}

validated_string!(
    /// The name of one of an API's `upstreams`.
    UpstreamName,
    |s| {
        if is_upstream_name(s) {
            Ok(())
        } else {
            Err(format!("invalid upstream name {s:?}: use up to 64 letters, digits, '-' or '_'"))
        }
    }
);

impl PartialOrd for UpstreamName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for UpstreamName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// A string, or a map with more settings: `upstream: http://a:80` or
/// `upstream: { targets: [...] }`; a target as `http://a:80` or
/// `{ url: http://a:80, weight: 2 }`. A string that is not a URL is kept as
/// a name (`upstream: eu` picks one of `upstreams`).
#[derive(Debug)]
pub enum UrlOr<T> {
    Text(String),
    Full(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for UrlOr<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Either<T> {
            type Value = UrlOr<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL such as http://10.0.0.1:8080, or a map of settings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                // A name is kept for later; anything else must be a URL.
                if !is_upstream_name(s) {
                    super::net::BaseUrl::parse(s).map_err(E::custom)?;
                }
                Ok(UrlOr::Text(s.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(UrlOr::Full)
            }
        }
        deserializer.deserialize_any(Either(std::marker::PhantomData))
    }
}

/// The long form of an upstream: several targets and how to use them.
/// Absent fields take their defaults (`targets` must list one at least).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamGroupFile {
    pub targets: Vec<UrlOr<TargetFile>>,
    pub balance: BalanceFile,
    /// With `consistent_hash`: `header:NAME`, `client_ip` or `key_id`.
    pub hash_on: Option<String>,
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    /// Requests in flight per target; beyond it, 503 at once.
    pub max_in_flight: u32,
    pub health_check: Option<HealthCheckFile>,
    pub passive: PassiveFile,
    pub retries: RetriesFile,
    /// How often DNS names among the targets are resolved again.
    pub dns_refresh_ms: u64,
}

impl Default for UpstreamGroupFile {
    fn default() -> Self {
        UpstreamGroupFile {
            targets: Vec::new(),
            balance: BalanceFile::default(),
            hash_on: None,
            connect_timeout_ms: 5_000,
            idle_timeout_ms: 90_000,
            max_in_flight: 1_024,
            health_check: None,
            passive: PassiveFile::default(),
            retries: RetriesFile::default(),
            dns_refresh_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceFile {
    RoundRobin,
    #[default]
    LeastRequest,
    ConsistentHash,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub path: String,
    #[serde(default = "default_probe_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
    #[serde(default = "default_healthy_after")]
    pub healthy_after: u32,
}

/// Outlier ejection; `failures: 0` turns it off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveFile {
    #[serde(default = "default_passive_failures")]
    pub failures: u32,
    #[serde(default = "default_eject_ms")]
    pub eject_ms: u64,
}

impl Default for PassiveFile {
    fn default() -> Self {
        PassiveFile {
            failures: default_passive_failures(),
            eject_ms: default_eject_ms(),
        }
    }
}

/// Retries to another target; `attempts: 0` turns them off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesFile {
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOnFile>,
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the share.
    #[serde(default = "default_min_retries_per_second")]
    pub min_per_second: u32,
}

impl Default for RetriesFile {
    fn default() -> Self {
        RetriesFile {
            attempts: default_retry_attempts(),
            on: default_retry_on(),
            budget_percent: default_budget_percent(),
            min_per_second: default_min_retries_per_second(),
        }
    }
}

/// One entry of `retries.on`: a condition name or a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOnFile {
    ConnectError,
    Reset,
    Timeout,
    Status(u16),
}

impl<'de> Deserialize<'de> for RetryOnFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entry;
        impl serde::de::Visitor<'_> for Entry {
            type Value = RetryOnFile;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connect_error, reset, timeout or a status code from 500 to 599")
            }
            fn visit_u64<E: serde::de::Error>(self, code: u64) -> Result<RetryOnFile, E> {
                match u16::try_from(code) {
                    Ok(code @ 500..=599) => Ok(RetryOnFile::Status(code)),
                    _ => Err(E::custom(format!(
                        "status {code} cannot be retried: only 500 to 599 mean the target failed"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, code: i64) -> Result<RetryOnFile, E> {
                self.visit_u64(u64::try_from(code).unwrap_or(u64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RetryOnFile, E> {
                match s {
                    "connect_error" => Ok(RetryOnFile::ConnectError),
                    "reset" => Ok(RetryOnFile::Reset),
                    "timeout" => Ok(RetryOnFile::Timeout),
                    other => match other.parse::<u64>() {
                        Ok(code) => self.visit_u64(code),
                        Err(_) => Err(E::custom(format!(
                            "unknown retry condition {other:?}: expected connect_error, reset, timeout or a 5xx status"
                        ))),
                    },
                }
            }
        }
        deserializer.deserialize_any(Entry)
    }
}

fn default_weight() -> u32 {
    1
}

fn default_probe_interval_ms() -> u64 {
    5_000
}

fn default_probe_timeout_ms() -> u64 {
    1_000
}

fn default_unhealthy_after() -> u32 {
    3
}

fn default_healthy_after() -> u32 {
    2
}

fn default_passive_failures() -> u32 {
    5
}

fn default_eject_ms() -> u64 {
    30_000
}

fn default_retry_attempts() -> u32 {
    1
}

fn default_retry_on() -> Vec<RetryOnFile> {
    vec![
        RetryOnFile::ConnectError,
        RetryOnFile::Reset,
        RetryOnFile::Status(502),
        RetryOnFile::Status(503),
        RetryOnFile::Status(504),
    ]
}

fn default_budget_percent() -> u32 {
    20
}

fn default_min_retries_per_second() -> u32 {
    10
}
