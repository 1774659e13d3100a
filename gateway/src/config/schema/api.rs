//! An API definition file as written: endpoints, hooks, plugin
//! references, limits.

use super::*;

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
    #[serde(deserialize_with = "units::opt_ms")]
    pub upstream_timeout_ms: Option<u64>,
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_ms")]
    pub upstream_read_timeout_ms: Option<u64>,
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_ms")]
    pub upstream_total_timeout_ms: Option<u64>,
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_bytes")]
    pub max_request_body_bytes: Option<usize>,
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_ms")]
    pub tunnel_idle_timeout_ms: Option<u64>,
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_ms")]
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
    /// Cross-origin requests from browsers.
    #[serde(default)]
    pub cors: Option<CorsFile>,
    /// Client addresses let in or turned away.
    #[serde(default)]
    pub client_ips: Option<ClientIpsFile>,
    /// Headers changed on every request and response of the API.
    #[serde(default)]
    pub headers: HeadersFile,
    /// A stricter trust policy for this API's plugins than the gateway's.
    #[serde(default)]
    pub plugin_trust: Option<TrustFile>,
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
    /// A JSON Web Token, verified by the gateway.
    Jwt(Box<JwtFile>),
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
    #[serde(deserialize_with = "units::ms")]
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
    /// Refuse every request it matches (403).
    #[serde(default)]
    pub deny: bool,
    /// Answer this instead of the upstream.
    #[serde(default)]
    pub respond: Option<FallbackFile>,
    /// Let callers in without authenticating.
    #[serde(default)]
    pub skip_auth: bool,
    /// The path the upstream gets.
    #[serde(default)]
    pub rewrite: Option<RewriteFile>,
    /// The method the upstream gets.
    #[serde(default)]
    pub upstream_method: Option<MethodName>,
    #[serde(default)]
    pub headers: HeadersFile,
    /// Overrides the API's for this endpoint.
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_ms")]
    pub upstream_timeout_ms: Option<u64>,
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_bytes")]
    pub max_request_body_bytes: Option<usize>,
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
    /// The `.wasm` component, relative to the YAML file that names it, or
    /// `oci://REGISTRY/REPOSITORY:TAG` or `...@sha256:DIGEST`.
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
    #[serde(deserialize_with = "units::opt_ms")]
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
    #[serde(deserialize_with = "units::opt_ms")]
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
