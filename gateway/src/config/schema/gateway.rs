//! `gateway.yaml` as written.

use super::*;

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
    #[serde(deserialize_with = "units::ms")]
    pub upstream_timeout_ms: u64,
    /// Longest silence between two pieces of an upstream's response body,
    /// per API overridable.
    #[serde(default = "default_upstream_read_timeout_ms")]
    #[serde(deserialize_with = "units::ms")]
    pub upstream_read_timeout_ms: u64,
    /// The whole upstream exchange, response body included, per API
    /// overridable; absent: no limit.
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_ms")]
    pub upstream_total_timeout_ms: Option<u64>,
    /// Largest request body proxied, per API and endpoint overridable.
    #[serde(default = "default_max_request_body_bytes")]
    #[serde(deserialize_with = "units::bytes")]
    pub max_request_body_bytes: usize,
    /// How long an upgraded connection (WebSocket) may stay silent both
    /// ways, per API overridable.
    #[serde(default = "default_tunnel_idle_timeout_ms")]
    #[serde(deserialize_with = "units::ms")]
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
    /// Where `oci://` plugin references are fetched from: limits, and each
    /// registry's credentials and TLS.
    #[serde(default)]
    pub plugin_registries: RegistriesFile,
    /// What every plugin must have to load (a digest pin, a signature by
    /// one of the keys); an API may only make it stricter.
    #[serde(default)]
    pub plugin_trust: Option<TrustFile>,
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
    #[serde(deserialize_with = "units::ms")]
    pub body_timeout_ms: u64,
    /// How long a client may take to send a request head (and, on a new
    /// connection, its first bytes). Read at start.
    #[serde(default = "default_client_timeout_ms")]
    #[serde(deserialize_with = "units::ms")]
    pub client_head_timeout_ms: u64,
    /// How long a write to a client may wait for it to read. Read at start.
    #[serde(default = "default_client_timeout_ms")]
    #[serde(deserialize_with = "units::ms")]
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
    #[serde(deserialize_with = "units::ms")]
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

/// 16 MiB: far above what JSON APIs send, below what lets one client tie
/// up an upstream with an endless upload. nginx's 1 MiB is its users' most
/// common 413; APIs that take uploads set their own.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 16 << 20;

fn default_max_request_body_bytes() -> usize {
    DEFAULT_MAX_REQUEST_BODY_BYTES
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
    #[serde(default, deserialize_with = "units::opt_ms")]
    pub cpu_ms: Option<u64>,
    #[serde(default, deserialize_with = "units::opt_ms")]
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    pub max_outbound_calls: Option<u32>,
    #[serde(default, deserialize_with = "units::opt_bytes")]
    pub max_body_bytes: Option<usize>,
    #[serde(default, deserialize_with = "units::opt_bytes")]
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    #[serde(default, deserialize_with = "units::opt_bytes")]
    pub max_session_bytes: Option<usize>,
    pub max_session_entries: Option<usize>,
    pub max_log_lines: Option<u32>,
    #[serde(default, deserialize_with = "units::opt_bytes")]
    pub max_log_bytes: Option<usize>,
    pub pool_size: Option<u32>,
}

/// `plugin_registries:` of the gateway file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistriesFile {
    /// The longest one plugin's fetch may take (manifest, signatures and
    /// layer).
    #[serde(deserialize_with = "units::ms")]
    pub pull_timeout_ms: u64,
    /// The largest plugin a registry may send (its layer, and the wasm
    /// unpacked from an image layer).
    #[serde(deserialize_with = "units::bytes")]
    pub max_plugin_bytes: u64,
    /// A Docker or Podman `auth.json` (`{"auths": {"HOST": {"auth": ...}}}`),
    /// relative to this file.
    pub auth_file: Option<PathBuf>,
    /// Settings by registry host (`host` or `host:port`, as references write it).
    pub registries: std::collections::BTreeMap<String, RegistryFile>,
}

impl Default for RegistriesFile {
    fn default() -> Self {
        RegistriesFile {
            pull_timeout_ms: 60_000,
            max_plugin_bytes: 64 << 20,
            auth_file: None,
            registries: std::collections::BTreeMap::new(),
        }
    }
}

/// One registry's entry in `plugin_registries.registries`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFile {
    /// Basic credentials, also used to obtain a bearer token when the
    /// registry asks for one; `env:NAME` reads them from the environment.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// A CA (PEM) to verify the registry's certificate with, besides the
    /// system's roots; relative to this file.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Speak plain HTTP: the default only for loopback hosts without `ca_file`.
    #[serde(default)]
    pub http: Option<bool>,
}

/// `plugin_trust:` of the gateway file or of an API.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFile {
    /// cosign public keys (PEM), relative to the file that names them.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// `any`, `digest` or `signed`; default: `signed` when keys are given.
    #[serde(default)]
    pub require: Option<crate::config::Require>,
}
