//! Loading the gateway's YAML: the gateway file, the API definition files it
//! names, and every plugin reference in them, resolved to absolute paths and
//! checked. Errors name the file, the line when the YAML parser knows it, and
//! the field. Loading the plugins themselves is the plugin runtime's job.

mod fan_out;
mod locate;
pub mod net;
pub use locate::nearest as locate_field;
mod schema;
mod settings;
pub mod upstream;

pub use settings::*;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use fan_out::FanOut;
use schema::{
    AllowEntry, ApiFile, AuthFile, CacheSetting, ClientAuthFile, FallbackFile, GatewayFile, LimitsFile, ListenSetting,
    PluginFile, TlsFile, UpstreamTlsFile,
};
pub use schema::{LimitByFile as LimitBy, OnError, OverrideHeaders, Transport, Unmatched};

pub use net::{AllowRule, BaseUrl, Destination, RoutingPolicy};
pub use upstream::UpstreamConfig;

use crate::tls::{self, ClientTls, ServerTls};

/// A configuration error: which file, where, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {}{message}", file.display(), location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default(), field.as_deref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    /// Line and column, 1-based, when known.
    pub location: Option<(usize, usize)>,
    /// The field, as a path such as `endpoints[0].plugin.function`.
    pub field: Option<String>,
    pub message: String,
}

impl ConfigError {
    /// Adds where the field is written in the file, when the error names a
    /// field but no position (errors found after parsing).
    fn located(mut self) -> Self {
        if self.location.is_none()
            && let Some(field) = &self.field
            && let Ok(text) = std::fs::read_to_string(&self.file)
        {
            self.location = locate::nearest(&text, field);
        }
        self
    }

    pub fn new(file: &Path, field: Option<String>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            location: None,
            field,
            message: message.into(),
        }
    }
}

/// The whole configuration, checked and resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    /// Where the access log goes; `None`: no access log.
    pub access_log: Option<crate::config::LogTarget>,
    /// The plain-HTTP listener; `None` when `listen: false`.
    pub listen: Option<String>,
    /// The HTTPS listener, its certificates loaded and checked.
    pub tls: Option<Arc<ServerTls>>,
    pub limits: Limits,
    /// Outbound plugin calls in flight at once, gateway-wide.
    pub max_outbound_in_flight: usize,
    pub session_store: StoreConfig,
    /// The admin API, if enabled.
    pub admin: Option<AdminConfig>,
    /// Directory for compiled plugins; `None` disables the cache.
    pub plugin_cache: Option<PathBuf>,
    /// Reload when a file in [`Config::sources`] changes.
    pub watch: bool,
    /// Where traces go; `None`: no traces.
    pub tracing: Option<crate::config::TracingConfig>,
    /// How request paths are canonicalised before routing.
    pub paths: crate::config::PathOptions,
    /// Deadlines on the client side of a connection.
    pub client_timeouts: ClientTimeouts,
    pub apis: Vec<ApiConfig>,
}

/// `client_head_timeout_ms` and `client_send_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// A request head, and a new connection's first bytes.
    pub head: Duration,
    /// A write to the client that waits for it to read.
    pub send: Duration,
}

impl Config {
    /// Every file the configuration was read from: the gateway file, the
    /// API files and the plugins they name, each once.
    pub fn sources(&self) -> Vec<PathBuf> {
        let mut files = vec![self.file.clone()];
        files.extend(self.apis.iter().map(|api| api.file.clone()));
        let mut plugins: Vec<PathBuf> = self
            .apis
            .iter()
            .flat_map(ApiConfig::plugin_refs)
            .map(|p| p.path.clone())
            .collect();
        plugins.sort();
        plugins.dedup();
        files.extend(plugins);
        files
    }

    /// A SHA-256 of what [`Config::sources`] hold: equal on two nodes when
    /// their gateway files, API files and plugins are the same, wherever
    /// each node keeps them.
    pub fn digest(&self) -> Result<String, (PathBuf, std::io::Error)> {
        digest_of(self.file.parent().unwrap_or(Path::new("/")), self.sources())
    }
}

/// [`Config::digest`] of `sources`, named relative to `base`. Reads and
/// hashes every file: call it off the request-serving threads.
pub fn digest_of(base: &Path, sources: Vec<PathBuf>) -> Result<String, (PathBuf, std::io::Error)> {
    use sha2::{Digest, Sha256};
    let mut entries = Vec::new();
    for file in sources {
        let content = Sha256::digest(std::fs::read(&file).map_err(|e| (file.clone(), e))?);
        let name = file.strip_prefix(base).unwrap_or(&file).to_string_lossy().into_owned();
        entries.push((name, content));
    }
    entries.sort();
    let mut all = Sha256::new();
    for (name, content) in entries {
        all.update(name.as_bytes());
        all.update([0]);
        all.update(content);
    }
    Ok(crate::text::hex(&all.finalize()))
}

/// Most bytes of the strings in one list a plugin returns (headers,
/// session metadata, tags), whatever the limits: the ceiling of
/// `max_header_bytes` and `max_session_bytes`, and what the plugin runtime
/// reads out of a guest before checking the configured limits.
pub const MAX_LIST_BYTES: u64 = 1 << 20;

/// Limits of one plugin invocation (see docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Guest execution time; waiting on outbound calls is not counted.
    pub cpu: Duration,
    /// The whole invocation, outbound waits included.
    pub timeout: Duration,
    pub memory_bytes: usize,
    pub max_outbound_calls: u32,
    /// Largest body passed into or accepted from a plugin.
    pub max_body_bytes: usize,
    /// Largest total size (names + values) of the headers a plugin returns.
    pub max_header_bytes: usize,
    /// Most header fields in one list a plugin returns (headers to set, to
    /// remove, of a response, of an outbound request).
    pub max_headers: usize,
    /// Largest session a plugin may leave behind: key id, tags and metadata
    /// names and values, in bytes, counting what is already stored.
    pub max_session_bytes: usize,
    /// Most metadata entries plus tags in such a session.
    pub max_session_entries: usize,
    /// Most log lines (log calls, stdout and stderr lines, gateway warnings
    /// the plugin causes) one invocation may produce; the rest are counted.
    pub max_log_lines: u32,
    /// Most bytes of such lines per invocation.
    pub max_log_bytes: usize,
    /// Instances alive at once, gateway-wide (only in `plugin_limits`).
    pub pool_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu: Duration::from_millis(50),
            timeout: Duration::from_millis(2_000),
            memory_bytes: 64 << 20,
            max_outbound_calls: 16,
            max_body_bytes: 1 << 20,
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_session_bytes: 16 << 10,
            max_session_entries: 64,
            max_log_lines: 100,
            max_log_bytes: 32 << 10,
            pool_size: 1_000,
        }
    }
}

impl Limits {
    fn merged(&self, over: &LimitsFile) -> Limits {
        Limits {
            cpu: over.cpu_ms.map_or(self.cpu, Duration::from_millis),
            timeout: over.timeout_ms.map_or(self.timeout, Duration::from_millis),
            memory_bytes: over.memory_mb.map_or(self.memory_bytes, |mb| (mb as usize) << 20),
            max_outbound_calls: over.max_outbound_calls.unwrap_or(self.max_outbound_calls),
            max_body_bytes: over.max_body_bytes.unwrap_or(self.max_body_bytes),
            max_header_bytes: over.max_header_bytes.unwrap_or(self.max_header_bytes),
            max_headers: over.max_headers.unwrap_or(self.max_headers),
            max_session_bytes: over.max_session_bytes.unwrap_or(self.max_session_bytes),
            max_session_entries: over.max_session_entries.unwrap_or(self.max_session_entries),
            max_log_lines: over.max_log_lines.unwrap_or(self.max_log_lines),
            max_log_bytes: over.max_log_bytes.unwrap_or(self.max_log_bytes),
            pool_size: over.pool_size.unwrap_or(self.pool_size),
        }
    }
}

/// The admin API listener and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: String,
    pub secret: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// How an API authenticates callers.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    Keyless,
    ApiKey {
        header: http::HeaderName,
        query: Option<String>,
    },
    /// The `plugins.auth` plugin.
    Plugin(Box<PluginRef>),
}

/// The API-level hooks, in the order they run.
#[derive(Debug, Clone, Default)]
pub struct HooksConfig {
    pub pre: Vec<PluginRef>,
    pub post_auth: Vec<PluginRef>,
    pub post: Vec<PluginRef>,
    pub response: Vec<PluginRef>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The file this API was defined in.
    pub file: PathBuf,
    pub id: String,
    pub name: String,
    pub listen_path: String,
    pub strip_listen_path: bool,
    /// `upstream` and the `upstreams`, in [`Destination::Upstream`] order.
    pub upstreams: Vec<UpstreamConfig>,
    /// Which of them serves requests no plugin routed elsewhere.
    pub default_upstream: usize,
    /// Timeouts of the upstream exchange, by phase.
    pub timeouts: UpstreamTimeouts,
    /// Largest request body proxied; `None`: no limit.
    pub max_request_body_bytes: Option<usize>,
    /// How long an upgraded connection may stay silent both ways.
    pub tunnel_idle_timeout: Duration,
    /// `upstream_tls`, loaded; `None`: the system's trust store.
    pub upstream_tls: Option<ClientTls>,
    /// Whether a verified client certificate is forwarded as XFCC.
    pub forward_client_cert: bool,
    /// How request paths under this API are canonicalised.
    pub paths: crate::config::PathOptions,
    pub unmatched: schema::Unmatched,
    pub override_headers: schema::OverrideHeaders,
    /// Protocols an `Upgrade` may switch to, lower case.
    pub upgrades: Vec<String>,
    pub transport: schema::Transport,
    /// How long a client may take to send a body the gateway reads whole.
    pub body_timeout: Duration,
    pub outbound: OutboundConfig,
    /// Where plugins may route this API's requests.
    pub routing: RoutingPolicy,
    pub auth: AuthConfig,
    pub hooks: HooksConfig,
    /// The API's `config`, as JSON text.
    pub config_json: String,
    /// `rate_limit` on the whole API.
    pub rate_limit: Option<RateLimit>,
    pub endpoints: Vec<EndpointConfig>,
}

/// `rate_limit:` of an API or endpoint: at most `rate` requests per `per`
/// seconds for each caller as `by` tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: u32,
    pub per: u32,
    pub by: LimitBy,
}

impl From<schema::RateLimitFile> for RateLimit {
    fn from(file: schema::RateLimitFile) -> Self {
        RateLimit {
            rate: file.rate.get(),
            per: file.per.get(),
            by: file.by,
        }
    }
}

impl ApiConfig {
    /// Every plugin reference of the API: auth, hooks and endpoints.
    pub fn plugin_refs(&self) -> impl Iterator<Item = &PluginRef> {
        let auth = match &self.auth {
            AuthConfig::Plugin(plugin) => Some(&**plugin),
            _ => None,
        };
        let hooks = &self.hooks;
        auth.into_iter()
            .chain(&hooks.pre)
            .chain(&hooks.post_auth)
            .chain(&hooks.post)
            .chain(&hooks.response)
            .chain(self.endpoints.iter().filter_map(|e| e.plugin.as_ref()))
    }
}

/// What one API lets its plugins reach.
#[derive(Debug, Clone, Default)]
pub struct OutboundConfig {
    pub allow: Vec<AllowRule>,
    /// Default per-call timeout.
    pub timeout: Duration,
}

/// How long each phase of an upstream exchange may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Until the response head (`upstream_timeout_ms`): then 504.
    pub head: Duration,
    /// Between two pieces of the response body: then the response is cut off.
    pub read: Duration,
    /// The whole exchange, body included.
    pub total: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// `None` matches any method.
    pub methods: Option<Vec<http::Method>>,
    /// Path template relative to the listen path, e.g. `/summary/{id}`.
    pub path: String,
    pub plugin: Option<PluginRef>,
    pub rate_limit: Option<RateLimit>,
}

/// A plugin reference, resolved: which component, which function, and how.
#[derive(Debug, Clone)]
pub struct PluginRef {
    /// Absolute path of the `.wasm` component.
    pub path: PathBuf,
    pub function: String,
    pub config_json: String,
    pub limits: Limits,
    pub on_error: OnError,
    /// The response to give instead of the gateway's error when it fails.
    pub fallback: Option<Fallback>,
    /// How many calls one instance serves: 1 (the default) is a fresh
    /// instance per call.
    pub reuse: u32,
    /// The digest the file must have (`sha256:`), when pinned.
    pub sha256: Option<[u8; 32]>,
    /// The YAML file that declares it.
    pub file: PathBuf,
    /// Where in that file: `endpoints[0].plugin`.
    pub field: String,
    /// Calls the gateway makes before the function runs.
    pub fan_out: Option<FanOut>,
}

impl PluginRef {
    /// Where it was declared, for errors: `apis/orders.yaml: endpoints[0].plugin`.
    pub fn origin(&self) -> String {
        format!("{}: {}", self.file.display(), self.field)
    }
}

/// A fixed response for a failing plugin (`fallback:` on a reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

fn fallback(file: &Path, field: &str, fallback: FallbackFile) -> Result<Fallback, ConfigError> {
    let bad = |sub: &str, why: String| ConfigError::new(file, Some(format!("{field}.{sub}")), why);
    let status = crate::framing::final_status(fallback.status).map_err(|why| bad("status", why))?;
    let mut headers = http::HeaderMap::new();
    for (name, value) in &fallback.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("headers", format!("invalid header name {name:?}")))?;
        if crate::framing::is_gateway_owned(&name) {
            return Err(bad(
                &format!("headers.{name}"),
                "the gateway computes framing and connection headers; remove it".to_owned(),
            ));
        }
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| bad("headers", format!("invalid value for header {name}")))?;
        headers.append(name, value);
    }
    Ok(Fallback {
        status,
        headers,
        body: fallback.body.into(),
    })
}

/// Loads and checks `file` and every API definition it names.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    load_unlocated(file).map_err(ConfigError::located)
}

fn load_unlocated(file: &Path) -> Result<Config, ConfigError> {
    let file = std::path::absolute(file).map_err(|e| ConfigError::new(file, None, e.to_string()))?;
    let gateway: GatewayFile = parse_yaml(&file)?;
    let base = file.parent().unwrap_or(Path::new("/"));

    let defaults = Limits::default().merged(&gateway.plugin_limits);
    check_limits(&file, "plugin_limits", &defaults)?;
    let plugin_cache = match &gateway.plugin_cache {
        None | Some(CacheSetting::Enabled(true)) => default_cache_dir(),
        Some(CacheSetting::Enabled(false)) => None,
        Some(CacheSetting::Dir(dir)) => Some(base.join(dir)),
    };

    let mut apis: Vec<ApiConfig> = Vec::new();
    for (i, pattern) in gateway.apis.iter().enumerate() {
        let field = || Some(format!("apis[{i}]"));
        let files = expand_api_pattern(base, pattern).map_err(|m| ConfigError::new(&file, field(), m))?;
        for api_file in files {
            if apis.iter().any(|a| a.file == api_file) {
                continue;
            }
            let api = load_api(&api_file, &gateway, &defaults)?;
            if let Some(other) = apis.iter().find(|a| a.id == api.id) {
                return Err(ConfigError::new(
                    &api_file,
                    Some("id".into()),
                    format!(
                        "duplicate API id {:?} (also defined in {})",
                        api.id,
                        other.file.display()
                    ),
                ));
            }
            if let Some(other) = apis.iter().find(|a| a.listen_path == api.listen_path) {
                return Err(ConfigError::new(
                    &api_file,
                    Some("listen_path".into()),
                    format!(
                        "listen path {:?} is already used by API {:?} ({})",
                        api.listen_path,
                        other.id,
                        other.file.display()
                    ),
                ));
            }
            apis.push(api);
        }
    }

    let session_store = match &gateway.session_store {
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => StoreConfig::Redis(url.clone()),
        Some(path) => StoreConfig::Embedded(base.join(path)),
        None => StoreConfig::Embedded(default_data_dir().join("sessions.redb")),
    };
    let admin = match (&gateway.admin_listen, &gateway.admin_secret) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                &file,
                Some("admin_secret".into()),
                "set admin_listen too, or remove admin_secret",
            ));
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                &file,
                Some("admin_secret".into()),
                "the admin API needs a secret (admin_secret: a string, or env:VARIABLE)",
            ));
        }
        (Some(listen), Some(secret)) => Some(AdminConfig {
            listen: listen.clone(),
            secret: resolve_secret(&file, secret)?,
        }),
    };

    let listen = match gateway.listen {
        ListenSetting::Address(address) => Some(address),
        ListenSetting::Enabled(false) => None,
        ListenSetting::Enabled(true) => {
            return Err(ConfigError::new(
                &file,
                Some("listen".into()),
                "write an address such as 0.0.0.0:8080, or false for no plain-HTTP listener",
            ));
        }
    };
    let tls = match gateway.tls {
        None if listen.is_none() => {
            return Err(ConfigError::new(
                &file,
                Some("listen".into()),
                "with `listen: false` the gateway needs a `tls:` listener",
            ));
        }
        None => None,
        Some(tls) => Some(Arc::new(server_tls(&file, base, tls)?)),
    };

    let access_log = match &gateway.access_log {
        Some(log) if log.path.trim().is_empty() => {
            return Err(ConfigError::new(
                &file,
                Some("access_log.path".into()),
                "empty: name a file (relative to this file) or `stdout`",
            ));
        }
        Some(log) => Some(crate::config::log_target(base, &log.path)),
        None => None,
    };
    let tracing = gateway.tracing.map(|t| tracing_config(&file, t)).transpose()?;
    Ok(Config {
        file,
        access_log,
        session_store,
        admin,
        listen,
        tls,
        limits: defaults,
        max_outbound_in_flight: gateway.max_outbound_in_flight.max(1),
        plugin_cache,
        watch: gateway.watch,
        tracing,
        paths: gateway.paths.over(crate::config::PathOptions::default()),
        client_timeouts: ClientTimeouts {
            head: Duration::from_millis(gateway.client_head_timeout_ms.max(1)),
            send: Duration::from_millis(gateway.client_send_timeout_ms.max(1)),
        },
        apis,
    })
}

fn server_tls(file: &Path, base: &Path, tls: TlsFile) -> Result<ServerTls, ConfigError> {
    if tls.certificates.is_empty() {
        return Err(ConfigError::new(
            file,
            Some("tls.certificates".into()),
            "list at least one { cert, key } pair",
        ));
    }
    let client_auth = match (&tls.client_ca, tls.client_auth) {
        (None, None) => tls::ClientAuth::Off,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                file,
                Some("tls.client_auth".into()),
                "client certificates need a client_ca to verify them against",
            ));
        }
        (Some(_), Some(ClientAuthFile::Optional)) => tls::ClientAuth::Optional,
        (Some(_), Some(ClientAuthFile::Required) | None) => tls::ClientAuth::Required,
    };
    let settings = tls::ListenerSettings {
        listen: tls.listen,
        certificates: tls
            .certificates
            .into_iter()
            .map(|c| tls::CertKeyPaths {
                cert: base.join(c.cert),
                key: base.join(c.key),
            })
            .collect(),
        client_ca: tls.client_ca.map(|p| base.join(p)),
        client_auth,
        watch_interval: Duration::from_millis(tls.watch_interval_ms),
    };
    ServerTls::load(&settings).map_err(|e| tls_error(file, e))
}

/// A certificate problem as a configuration error: the field that names
/// the file, the file and the reason.
fn tls_error(file: &Path, e: tls::TlsError) -> ConfigError {
    ConfigError::new(file, Some(e.field.clone()), e.to_string())
}

fn upstream_tls(file: &Path, base: &Path, tls: UpstreamTlsFile) -> Result<ClientTls, ConfigError> {
    let bad = |field: &str, why: &str| {
        Err(ConfigError::new(
            file,
            Some(format!("upstream_tls.{field}")),
            why.to_owned(),
        ))
    };
    let client_cert = match (tls.client_cert, tls.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
        (Some(_), None) => return bad("client_key", "a client_cert needs its client_key"),
        (None, Some(_)) => return bad("client_cert", "a client_key needs its client_cert"),
    };
    if tls.system_roots && tls.ca.is_none() {
        return bad(
            "system_roots",
            "the system's CAs are trusted anyway without `ca`; remove it or add a ca",
        );
    }
    let server_name = match tls.server_name {
        None => None,
        Some(name) => match rustls::pki_types::ServerName::try_from(name.clone()) {
            Ok(server_name) => Some(server_name),
            Err(_) => {
                return bad(
                    "server_name",
                    &format!("{name:?} is not a valid DNS name or IP address"),
                );
            }
        },
    };
    let settings = tls::UpstreamSettings {
        ca: tls.ca.map(|p| base.join(p)),
        system_roots: tls.system_roots,
        client_cert,
        server_name,
    };
    ClientTls::load(&settings).map_err(|e| tls_error(file, e))
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("portcullis")
}

/// The `tracing:` block: an http:// collector (`/v1/traces` added to a bare
/// host), a sampling ratio in [0, 1], and headers that may be `env:NAME`.
fn tracing_config(file: &Path, t: schema::TracingFile) -> Result<crate::config::TracingConfig, ConfigError> {
    let bad = |sub: &str, why: String| ConfigError::new(file, Some(format!("tracing.{sub}")), why);
    let url: http::Uri = t
        .endpoint
        .parse()
        .map_err(|e| bad("endpoint", format!("invalid URL {:?}: {e}", t.endpoint)))?;
    match url.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "endpoint",
                "https:// collectors are not supported yet: send to a collector on http:// (an agent on the node, a sidecar)".into(),
            ));
        }
        _ => return Err(bad("endpoint", format!("{:?}: expected an http:// URL", t.endpoint))),
    }
    let endpoint = if matches!(url.path(), "" | "/") {
        format!("{}/v1/traces", t.endpoint.trim_end_matches('/'))
    } else {
        t.endpoint.clone()
    };
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        return Err(bad(
            "sampling_ratio",
            format!("{} is not between 0 and 1", t.sampling_ratio),
        ));
    }
    let mut headers = std::collections::BTreeMap::new();
    for (name, value) in t.headers {
        let value = env_or_literal(file, &format!("tracing.headers.{name}"), &value)?;
        headers.insert(name, value);
    }
    Ok(crate::config::TracingConfig {
        endpoint,
        service_name: t.service_name,
        sampling_ratio: t.sampling_ratio,
        headers,
    })
}

/// `value`, or the environment variable it names as `env:VARIABLE`.
fn env_or_literal(file: &Path, field: &str, value: &str) -> Result<String, ConfigError> {
    match value.strip_prefix("env:") {
        Some(name) => std::env::var(name).map_err(|_| {
            ConfigError::new(
                file,
                Some(field.to_owned()),
                format!("environment variable {name} is not set"),
            )
        }),
        None => Ok(value.to_owned()),
    }
}

/// `env:NAME` reads the secret from the environment; anything else is the
/// secret itself. Short secrets are refused.
fn resolve_secret(file: &Path, secret: &str) -> Result<String, ConfigError> {
    let value = env_or_literal(file, "admin_secret", secret)?;
    if value.len() < 16 {
        return Err(ConfigError::new(
            file,
            Some("admin_secret".into()),
            "must be at least 16 characters",
        ));
    }
    Ok(value)
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("portcullis"))
}

/// Highest `max_headers`: an HTTP header map holds at most 32768 fields, and
/// the gateway adds its own to what a plugin sets.
const MAX_HEADERS_CEILING: usize = 10_000;

fn check_limits(file: &Path, field: &str, limits: &Limits) -> Result<(), ConfigError> {
    let bad = |name: &str, why: &str| Err(ConfigError::new(file, Some(format!("{field}.{name}")), why.to_owned()));
    if limits.cpu.is_zero() {
        return bad("cpu_ms", "must be at least 1");
    }
    if limits.timeout.is_zero() {
        return bad("timeout_ms", "must be at least 1");
    }
    if limits.memory_bytes < 1 << 20 {
        return bad("memory_mb", "must be at least 1");
    }
    if !(1..=MAX_HEADERS_CEILING).contains(&limits.max_headers) {
        return bad("max_headers", &format!("must be between 1 and {MAX_HEADERS_CEILING}"));
    }
    if limits.pool_size == 0 {
        return bad("pool_size", "must be at least 1");
    }
    let ceiling = MAX_LIST_BYTES as usize;
    if limits.max_header_bytes > ceiling {
        return bad("max_header_bytes", &format!("must be at most {ceiling}"));
    }
    if limits.max_session_bytes > ceiling {
        return bad("max_session_bytes", &format!("must be at most {ceiling}"));
    }
    Ok(())
}

/// The files an `apis` entry stands for: the file itself, every YAML file in
/// a directory, or the matches of a glob pattern; sorted, never empty.
fn expand_api_pattern(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    let is_yaml = |p: &Path| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    let mut files: Vec<PathBuf> = if full.is_dir() {
        std::fs::read_dir(&full)
            .map_err(|e| format!("cannot read directory {}: {e}", full.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_yaml(p))
            .collect()
    } else if full.is_file() {
        vec![full.clone()]
    } else if pattern.contains(['*', '?', '[']) {
        let text = full
            .to_str()
            .ok_or_else(|| format!("pattern {pattern:?} is not valid UTF-8"))?;
        glob::glob(text)
            .map_err(|e| format!("invalid glob pattern {pattern:?}: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else {
        return Err(format!("no such file or directory: {}", full.display()));
    };
    if files.is_empty() {
        return Err(format!(
            "{pattern:?} matches no API definition files (looked in {})",
            full.display()
        ));
    }
    files.sort();
    Ok(files)
}

/// The largest configuration file read (gateway or API file).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The deepest nesting of flow collections (`[...]`, `{...}`) a
/// configuration file may hold. The YAML parser's work grows with the
/// square of this depth, so a file of a few megabytes nested 100,000 deep
/// would take minutes to refuse.
pub const MAX_FLOW_DEPTH: usize = 64;

fn parse_yaml<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let read = || -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        // One byte past the limit tells a file at the limit from a larger one.
        std::fs::File::open(file)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)?;
        Ok(text)
    };
    let text = read().map_err(|e| ConfigError::new(file, None, format!("cannot read: {e}")))?;
    parse_yaml_text(file, &text)
}

/// Refuses a text over [`MAX_FILE_BYTES`] or nested deeper than
/// [`MAX_FLOW_DEPTH`], before the parser sees it.
fn check_bounds(file: &Path, text: &str) -> Result<(), ConfigError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::new(
            file,
            None,
            format!(
                "larger than {} MiB, the limit for a configuration file: split it into several API files",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    let (mut depth, mut quote, mut comment) = (0usize, None, false);
    let (mut line, mut previous) = (1usize, b'\n');
    for &byte in text.as_bytes() {
        match (quote, byte) {
            (_, b'\n') => {
                line += 1;
                comment = false;
                // Only flow scalars span lines in configuration files; a
                // quote left open here is part of a block scalar's text.
                quote = None;
            }
            _ if comment => {}
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'#') if previous.is_ascii_whitespace() => comment = true,
            (None, b'"' | b'\'') if matches!(previous, b' ' | b'\t' | b'[' | b'{' | b',' | b':' | b'\n') => {
                quote = Some(byte);
            }
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    let mut error = ConfigError::new(
                        file,
                        None,
                        format!(
                            "nested deeper than {MAX_FLOW_DEPTH} levels of [ ] or {{ }}, the limit for a configuration file"
                        ),
                    );
                    error.location = Some((line, 1));
                    return Err(error);
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = byte;
    }
    Ok(())
}

/// Parses `text`, read from `file` (which only names it in errors).
fn parse_yaml_text<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    check_bounds(file, text)?;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location().map(|l| (l.line(), l.column()));
        // serde_yaml appends " at line L column C"; we print the location up front.
        let message = inner.to_string();
        let suffix = location
            .map(|(l, c)| format!(" at line {l} column {c}"))
            .unwrap_or_default();
        let mut message = message.strip_suffix(suffix.as_str()).unwrap_or(&message).to_owned();
        // serde_yaml sometimes starts with the field path, or with its
        // parent's (an unknown field); we print our own.
        if let Some((head, rest)) = message.split_once(": ")
            && !head.is_empty()
            && !head.contains(' ')
            && path.starts_with(head)
        {
            message = rest.to_owned();
        }
        ConfigError {
            file: file.to_owned(),
            location,
            field: (path != "." && !path.is_empty()).then_some(path),
            message,
        }
    })
}

/// A `fan_out` block written outside a configuration file (`portcullis
/// plugin call --fan-out`): YAML or JSON `text` from `source` (which names
/// it in errors), checked as one in an API file is, against `allow` and
/// for requests that carry the path parameters `params`.
pub fn fan_out_from_text(
    source: &Path,
    text: &str,
    allow: &[AllowRule],
    params: &[&str],
    limits: &Limits,
) -> Result<FanOut, ConfigError> {
    let file: schema::FanOutFile = parse_yaml_text(source, text)?;
    let scope = fan_out::Scope {
        allow,
        params: Some(params.iter().map(|p| (*p, false)).collect()),
    };
    fan_out::resolve(source, "", file, &scope, limits).map_err(ConfigError::located)
}

fn yaml_to_json(file: &Path, field: &str, value: Option<serde_yaml::Value>) -> Result<String, ConfigError> {
    match value {
        None | Some(serde_yaml::Value::Null) => Ok("{}".into()),
        Some(v) => serde_json::to_string(&v)
            .map_err(|e| ConfigError::new(file, Some(field.into()), format!("cannot be expressed as JSON: {e}"))),
    }
}

fn load_api(file: &Path, gateway: &GatewayFile, defaults: &Limits) -> Result<ApiConfig, ConfigError> {
    let api: ApiFile = parse_yaml(file)?;
    let base = file.parent().unwrap_or(Path::new("/"));
    let allow = parse_allow(&api.outbound.allow);
    let hook_scope = fan_out::Scope {
        allow: &allow,
        params: None,
    };

    let mut endpoints = Vec::with_capacity(api.endpoints.len());
    for (i, endpoint) in api.endpoints.into_iter().enumerate() {
        let field = format!("endpoints[{i}]");
        let methods = endpoint.method.map(|m| {
            m.into_vec()
                .into_iter()
                .map(|m| http::Method::from_bytes(m.0.as_bytes()).expect("validated as upper-case ASCII"))
                .collect()
        });
        if endpoint.plugin.is_none() && endpoint.rate_limit.is_none() {
            return Err(ConfigError::new(
                file,
                Some(field),
                "an endpoint needs a `plugin`, a `rate_limit`, or both",
            ));
        }
        let plugin = endpoint
            .plugin
            .map(|p| {
                let scope = fan_out::Scope {
                    allow: &allow,
                    params: Some(fan_out::template_params(&endpoint.path.0)),
                };
                resolve_plugin(file, base, &format!("{field}.plugin"), p, defaults, &scope)
            })
            .transpose()?;
        endpoints.push(EndpointConfig {
            methods,
            path: endpoint.path.0,
            plugin,
            rate_limit: endpoint.rate_limit.map(RateLimit::from),
        });
    }

    let resolve_list = |hook: &str, plugins: Vec<PluginFile>| -> Result<Vec<PluginRef>, ConfigError> {
        plugins
            .into_iter()
            .enumerate()
            .map(|(i, p)| resolve_plugin(file, base, &format!("plugins.{hook}[{i}]"), p, defaults, &hook_scope))
            .collect()
    };
    let hooks_file = api.plugins;
    let auth = match (api.auth, hooks_file.auth) {
        (AuthFile::Plugin, Some(plugin)) if plugin.on_error == OnError::Continue => {
            return Err(ConfigError::new(
                file,
                Some("plugins.auth.on_error".into()),
                "an auth plugin cannot fail open (`continue` would let unauthenticated callers in); use `fail`, optionally with a fallback",
            ));
        }
        (AuthFile::Plugin, Some(plugin)) => AuthConfig::Plugin(Box::new(resolve_plugin(
            file,
            base,
            "plugins.auth",
            plugin,
            defaults,
            &hook_scope,
        )?)),
        (AuthFile::Plugin, None) => {
            return Err(ConfigError::new(
                file,
                Some("auth".into()),
                "auth type `plugin` needs a plugin under plugins.auth",
            ));
        }
        (_, Some(_)) => {
            return Err(ConfigError::new(
                file,
                Some("plugins.auth".into()),
                "an auth plugin runs only with `auth: { type: plugin }`",
            ));
        }
        (AuthFile::Keyless, None) => AuthConfig::Keyless,
        (AuthFile::ApiKey { header, query }, None) => AuthConfig::ApiKey {
            header: http::HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()).map_err(|_| {
                ConfigError::new(
                    file,
                    Some("auth.header".into()),
                    format!("invalid header name {header:?}"),
                )
            })?,
            query,
        },
    };
    let hooks = HooksConfig {
        pre: resolve_list("pre", hooks_file.pre)?,
        post_auth: resolve_list("post_auth", hooks_file.post_auth)?,
        post: resolve_list("post", hooks_file.post)?,
        response: resolve_list("response", hooks_file.response)?,
    };

    let (upstreams, default_upstream) = upstream::load(file, api.upstream, api.upstreams)?;
    let routing = RoutingPolicy {
        names: upstreams.iter().enumerate().map(|(i, u)| (u.name.clone(), i)).collect(),
        origins: upstreams
            .iter()
            .flat_map(|u| u.targets.iter().map(|t| t.url.clone()))
            .collect(),
        allow: parse_allow(&api.routing.allow),
    };
    let upstream_tls = api.upstream_tls.map(|t| upstream_tls(file, base, t)).transpose()?;
    let mut listen_path = api.listen_path.0;
    if !listen_path.ends_with('/') {
        listen_path.push('/');
    }
    Ok(ApiConfig {
        file: file.to_owned(),
        name: api.name.unwrap_or_else(|| api.id.0.clone()),
        id: api.id.0,
        listen_path,
        strip_listen_path: api.strip_listen_path,
        upstreams,
        default_upstream,
        routing,
        timeouts: UpstreamTimeouts {
            head: Duration::from_millis(api.upstream_timeout_ms.unwrap_or(gateway.upstream_timeout_ms)),
            read: Duration::from_millis(
                api.upstream_read_timeout_ms
                    .unwrap_or(gateway.upstream_read_timeout_ms)
                    .max(1),
            ),
            total: api
                .upstream_total_timeout_ms
                .or(gateway.upstream_total_timeout_ms)
                .map(Duration::from_millis),
        },
        max_request_body_bytes: api.max_request_body_bytes.or(gateway.max_request_body_bytes),
        tunnel_idle_timeout: Duration::from_millis(
            api.tunnel_idle_timeout_ms
                .unwrap_or(gateway.tunnel_idle_timeout_ms)
                .max(1),
        ),
        outbound: OutboundConfig {
            allow,
            timeout: Duration::from_millis(api.outbound.timeout_ms),
        },
        upstream_tls,
        forward_client_cert: api.forward_client_cert,
        paths: api
            .paths
            .over(gateway.paths.over(crate::config::PathOptions::default())),
        unmatched: api.unmatched,
        override_headers: api.override_headers,
        upgrades: api.upgrades.into_iter().map(|p| p.0).collect(),
        transport: api.transport,
        body_timeout: Duration::from_millis(api.body_timeout_ms.unwrap_or(gateway.body_timeout_ms).max(1)),
        config_json: yaml_to_json(file, "config", api.config)?,
        rate_limit: api.rate_limit.map(RateLimit::from),
        endpoints,
        auth,
        hooks,
    })
}

fn parse_allow(entries: &[AllowEntry]) -> Vec<AllowRule> {
    entries
        .iter()
        .map(|a| AllowRule::parse(&a.0).expect("validated while parsing"))
        .collect()
}

fn resolve_plugin(
    file: &Path,
    base: &Path,
    field: &str,
    plugin: PluginFile,
    defaults: &Limits,
    scope: &fan_out::Scope<'_>,
) -> Result<PluginRef, ConfigError> {
    let path = base.join(&plugin.path);
    if !path.is_file() {
        return Err(ConfigError::new(
            file,
            Some(format!("{field}.path")),
            format!(
                "plugin file not found: {} (paths are relative to the YAML file that names them)",
                path.display()
            ),
        ));
    }
    if plugin.limits.pool_size.is_some() {
        return Err(ConfigError::new(
            file,
            Some(format!("{field}.limits.pool_size")),
            "pool_size is gateway-wide: set it in plugin_limits of the gateway file",
        ));
    }
    let limits = defaults.merged(&plugin.limits);
    check_limits(file, &format!("{field}.limits"), &limits)?;
    if limits.memory_bytes > defaults.memory_bytes {
        return Err(ConfigError::new(
            file,
            Some(format!("{field}.limits.memory_mb")),
            format!(
                "{} MiB is above the gateway's plugin_limits.memory_mb ({} MiB)",
                limits.memory_bytes >> 20,
                defaults.memory_bytes >> 20
            ),
        ));
    }
    let fallback = match plugin.fallback {
        Some(_) if plugin.on_error == OnError::Continue => {
            return Err(ConfigError::new(
                file,
                Some(format!("{field}.fallback")),
                "a fallback response needs `on_error: fail` (with `continue` the request proceeds instead)",
            ));
        }
        Some(f) => Some(fallback(file, &format!("{field}.fallback"), f)?),
        None => None,
    };
    let sha256 = plugin
        .sha256
        .map(|hex| {
            parse_sha256(&hex).ok_or_else(|| {
                ConfigError::new(
                    file,
                    Some(format!("{field}.sha256")),
                    format!("{hex:?} is not a SHA-256 digest: expected 64 hexadecimal digits"),
                )
            })
        })
        .transpose()?;
    let fan_out = plugin
        .fan_out
        .map(|f| fan_out::resolve(file, &format!("{field}.fan_out"), f, scope, &limits))
        .transpose()?;
    Ok(PluginRef {
        fallback,
        sha256,
        fan_out,
        path: std::path::absolute(&path).unwrap_or(path),
        function: plugin.function,
        config_json: yaml_to_json(file, &format!("{field}.config"), plugin.config)?,
        limits,
        on_error: plugin.on_error,
        reuse: plugin.reuse.map_or(1, std::num::NonZeroU32::get),
        file: file.to_owned(),
        field: field.to_owned(),
    })
}

/// A digest written as 64 hexadecimal digits (either case).
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(digest)
}
