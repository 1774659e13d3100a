//! Loading the gateway's YAML: the gateway file, the API definition files it
//! names, and every plugin reference in them, resolved to absolute paths and
//! checked. Errors name the file, the line when the YAML parser knows it, and
//! the field. Loading the plugins themselves is the plugin runtime's job.

mod api;
mod fan_out;
mod load;
mod locate;
pub mod net;
mod policy;
pub use locate::nearest as locate_field;
pub use policy::*;
mod schema;
mod settings;
mod trust;
pub mod upstream;
mod yaml;

pub use api::parse_sha256;
use api::*;
use load::*;
pub use load::{default_cache_dir, load, registries_of};
pub use settings::*;
pub use trust::*;
use yaml::*;
pub use yaml::{MAX_FILE_BYTES, MAX_FLOW_DEPTH, fan_out_from_text};

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
    /// Directory for compiled plugins and those fetched from registries;
    /// `None` disables the cache.
    pub plugin_cache: Option<PathBuf>,
    /// How `oci://` plugin references are fetched.
    pub registries: Registries,
    /// What every plugin must carry to load (an API may be stricter).
    pub plugin_trust: Arc<TrustPolicy>,
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
    /// API files and the plugin files they name, each once. Plugins from
    /// registries are not among them: they are named by digest instead
    /// (see [`Config::digest_input`]).
    pub fn sources(&self) -> Vec<PathBuf> {
        let mut files = vec![self.file.clone()];
        files.extend(self.apis.iter().map(|api| api.file.clone()));
        let mut plugins: Vec<PathBuf> = self
            .apis
            .iter()
            .flat_map(ApiConfig::plugin_refs)
            .filter(|p| p.oci.is_none())
            .map(|p| p.path.clone())
            .collect();
        plugins.sort();
        plugins.dedup();
        files.extend(plugins);
        files
    }

    /// What the configuration's digest is computed from, to hash off the
    /// serving threads ([`DigestInput::digest`]).
    pub fn digest_input(&self) -> DigestInput {
        let mut registry_plugins: Vec<String> = self
            .apis
            .iter()
            .flat_map(ApiConfig::plugin_refs)
            .filter_map(|p| p.oci.as_ref().map(OciPlugin::pinned))
            .collect();
        registry_plugins.sort();
        registry_plugins.dedup();
        DigestInput {
            base: self.file.parent().unwrap_or(Path::new("/")).to_owned(),
            files: self.sources(),
            registry_plugins,
        }
    }
}

/// The files a configuration was read from and the registry plugins it
/// loaded (`oci://...@sha256:...`).
#[derive(Debug)]
pub struct DigestInput {
    base: PathBuf,
    files: Vec<PathBuf>,
    registry_plugins: Vec<String>,
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
    /// JSON Web Tokens verified by the gateway.
    Jwt(Box<JwtConfig>),
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
    /// What this API's plugins must carry to load.
    pub plugin_trust: Arc<TrustPolicy>,
    pub cors: Option<Cors>,
    pub client_ips: Option<ClientIps>,
    /// Header changes on every request and response.
    pub headers: HeaderTransforms,
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

    /// [`ApiConfig::plugin_refs`], to change: fetching fills in where a
    /// registry reference's plugin is.
    pub fn plugin_refs_mut(&mut self) -> impl Iterator<Item = &mut PluginRef> {
        let auth = match &mut self.auth {
            AuthConfig::Plugin(plugin) => Some(&mut **plugin),
            _ => None,
        };
        let hooks = &mut self.hooks;
        auth.into_iter()
            .chain(&mut hooks.pre)
            .chain(&mut hooks.post_auth)
            .chain(&mut hooks.post)
            .chain(&mut hooks.response)
            .chain(self.endpoints.iter_mut().filter_map(|e| e.plugin.as_mut()))
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
    /// What the gateway does itself at this endpoint.
    pub policy: EndpointPolicy,
}

/// A plugin reference, resolved: which component, which function, and how.
#[derive(Debug, Clone)]
pub struct PluginRef {
    /// Absolute path of the `.wasm` component; for a registry reference,
    /// where the fetched component is cached (empty until it is fetched).
    pub path: PathBuf,
    /// The registry reference, when the plugin comes from one (`oci://`).
    pub oci: Option<OciPlugin>,
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

    /// Its short name, for labels: the file's name, or the registry
    /// repository's last segment with its tag (`policy:1.4`).
    pub fn name(&self) -> String {
        match &self.oci {
            Some(oci) => {
                let without_digest = oci.reference.split('@').next().unwrap_or_default();
                without_digest.rsplit('/').next().unwrap_or_default().to_owned()
            }
            None => self.path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        }
    }

    /// Where it comes from, for `/apis` and logs: the file, or `oci://...`.
    pub fn source(&self) -> String {
        match &self.oci {
            Some(oci) => format!("oci://{}", oci.reference),
            None => self.path.display().to_string(),
        }
    }
}

/// A fixed response for a failing plugin (`fallback:` on a reference).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}
