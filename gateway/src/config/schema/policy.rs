//! The built-in policies as written: JWT, CORS, client IP lists, header
//! transforms, rewrites. What a plugin would otherwise do for every API
//! that wants it, configured instead.

use super::*;

/// `auth: { type: jwt, ... }`: bearer tokens signed by a key the gateway
/// trusts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFile {
    /// Where the token is: this header (a `Bearer ` prefix is removed)...
    #[serde(default = "default_jwt_header")]
    pub header: String,
    /// ...or this query parameter, or this cookie.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    /// The algorithms a token may be signed with. Each must have a key of
    /// its kind below: HS* a `secret`, RS*/PS* an RSA key, ES* an EC key,
    /// EdDSA an Ed25519 key.
    pub algorithms: Vec<String>,
    /// The HMAC secret (HS256/384/512); `env:NAME` reads it from the
    /// environment.
    #[serde(default)]
    pub secret: Option<String>,
    /// Whether `secret` is base64 (Tyk's `jwt_source` is).
    #[serde(default)]
    pub secret_base64: bool,
    /// Public keys in PEM, inline.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// Public keys in PEM files, relative to this file.
    #[serde(default)]
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS document: a URL (fetched at load and refreshed) or a file.
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// How often the JWKS URL is fetched again.
    #[serde(default = "default_jwks_refresh_s")]
    #[serde(deserialize_with = "units::secs")]
    pub jwks_refresh_s: u64,
    /// `iss` must be one of these (when given).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// `aud` must contain one of these (when given).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_s")]
    #[serde(deserialize_with = "units::secs")]
    pub leeway_s: u64,
    /// Whether a token must carry `exp`.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Which claims make the session.
    #[serde(default)]
    pub claims: JwtClaimsFile,
}

fn default_jwt_header() -> String {
    "authorization".into()
}

fn default_jwks_refresh_s() -> u64 {
    300
}

fn default_leeway_s() -> u64 {
    30
}

fn default_true() -> bool {
    true
}

/// `auth.claims`: the claim each session field is read from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtClaimsFile {
    #[serde(default = "default_key_id_claim")]
    pub key_id: String,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub rate: Option<String>,
    #[serde(default)]
    pub per: Option<String>,
    #[serde(default)]
    pub quota_max: Option<String>,
    #[serde(default)]
    pub quota_renewal_seconds: Option<String>,
    /// A claim holding a list of strings, or one space-separated string
    /// (OAuth's `scope`).
    #[serde(default)]
    pub tags: Option<String>,
    /// Session metadata name -> claim.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl Default for JwtClaimsFile {
    fn default() -> Self {
        JwtClaimsFile {
            key_id: default_key_id_claim(),
            alias: None,
            rate: None,
            per: None,
            quota_max: None,
            quota_renewal_seconds: None,
            tags: None,
            metadata: Default::default(),
        }
    }
}

fn default_key_id_claim() -> String {
    "sub".into()
}

/// `cors:` of an API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    /// Origins allowed (`https://app.example`), `*`, or `*.example.com`
    /// patterns.
    pub origins: Vec<String>,
    #[serde(default = "default_cors_methods")]
    pub methods: Vec<MethodName>,
    /// Request headers a browser may send; empty: the ones it asks for.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers a script may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    /// How long a browser may cache a preflight's answer.
    #[serde(default)]
    #[serde(deserialize_with = "units::opt_secs")]
    pub max_age_s: Option<u32>,
    /// Pass preflights on to the upstream instead of answering them.
    #[serde(default)]
    pub preflight_passthrough: bool,
}

fn default_cors_methods() -> Vec<MethodName> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .into_iter()
        .map(|m| MethodName(m.into()))
        .collect()
}

/// `client_ips:` of an API: CIDR blocks or addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIpsFile {
    /// Only these may call (when given).
    #[serde(default)]
    pub allow: Vec<String>,
    /// These may not, even if allowed.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `headers:` of an API or endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersFile {
    #[serde(default)]
    pub request: HeaderChangesFile,
    #[serde(default)]
    pub response: HeaderChangesFile,
}

/// Header changes, applied in this order: remove, set, add. Values may
/// use `{request_id}`, `{client_ip}`, `{api_id}`, `{method}`, `{path}` and
/// the endpoint's path parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderChangesFile {
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub add: std::collections::BTreeMap<String, String>,
}

/// `rewrite:` of an endpoint: the path the upstream gets.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RewriteFile {
    /// A template: `/v2/users/{id}`.
    To(String),
    /// A regular expression on the upstream path and its replacement
    /// (`$1`, `${name}`); a path it does not match is left as it is.
    Pattern {
        #[serde(rename = "match")]
        pattern: String,
        to: String,
    },
}
