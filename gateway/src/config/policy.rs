//! The built-in policies, checked: JWT verification settings and keys,
//! CORS, client IP lists, header transforms and rewrites. Each is plain
//! data with the little logic that needs nothing but itself (does this
//! address match, what does this template say); the request path applies
//! them (`server/policy.rs`, `server/jwt.rs`).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::schema::{ClientIpsFile, CorsFile, HeaderChangesFile, HeadersFile, JwtFile, RewriteFile};
use super::*;

/// A value with placeholders: `{request_id}`, `{client_ip}`, `{api_id}`,
/// `{method}`, `{path}`, and an endpoint's path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    RequestId,
    ClientIp,
    ApiId,
    Method,
    Path,
    Param(String),
}

/// What a [`Template`]'s placeholders stand for in one request.
#[derive(Debug)]
pub struct TemplateVars<'a> {
    pub request_id: &'a str,
    pub client_ip: &'a str,
    pub api_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub params: &'a [(String, String)],
}

impl Template {
    /// `params` are the path parameters the value may name (none at the
    /// API level). `{{` and `}}` are literal braces; `${name}` is left as
    /// it is, for a rewrite pattern's named group.
    pub fn parse(text: &str, params: &[&str]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            // `${name}` is a rewrite pattern's named group: the regex's.
            if literal.ends_with('$')
                && tail.starts_with('{')
                && let Some(end) = tail.find('}')
            {
                literal.push_str(&tail[..=end]);
                rest = &tail[end + 1..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!("unmatched `}}` in {text:?} (write `}}}}` for a literal brace)"));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {text:?} (write `{{{{` for a literal brace)"))?;
            let name = &tail[1..end];
            let part = match name {
                "request_id" => Part::RequestId,
                "client_ip" => Part::ClientIp,
                "api_id" => Part::ApiId,
                "method" => Part::Method,
                "path" => Part::Path,
                _ if params.contains(&name) => Part::Param(name.to_owned()),
                _ => {
                    let known = ["request_id", "client_ip", "api_id", "method", "path"]
                        .iter()
                        .chain(params)
                        .map(|n| format!("{{{n}}}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(format!(
                        "unknown placeholder {{{name}}} in {text:?}: expected one of {known}"
                    ));
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template(parts))
    }

    pub fn render(&self, vars: &TemplateVars<'_>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            out.push_str(match part {
                Part::Text(text) => text,
                Part::RequestId => vars.request_id,
                Part::ClientIp => vars.client_ip,
                Part::ApiId => vars.api_id,
                Part::Method => vars.method,
                Part::Path => vars.path,
                Part::Param(name) => vars
                    .params
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or("", |(_, v)| v.as_str()),
            });
        }
        out
    }
}

/// Header changes, in the order they apply: remove, set, add.
#[derive(Debug, Clone, Default)]
pub struct HeaderChanges {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, Template)>,
    pub add: Vec<(HeaderName, Template)>,
}

impl HeaderChanges {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies the changes. A value that renders to something no header
    /// may carry (a path parameter with a control character) is left out.
    pub fn apply(&self, headers: &mut HeaderMap, vars: &TemplateVars<'_>) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            if let Ok(value) = HeaderValue::try_from(value.render(vars)) {
                headers.insert(name.clone(), value);
            }
        }
        for (name, value) in &self.add {
            if let Ok(value) = HeaderValue::try_from(value.render(vars)) {
                headers.append(name.clone(), value);
            }
        }
    }
}

/// `headers:` of an API or endpoint.
#[derive(Debug, Clone, Default)]
pub struct HeaderTransforms {
    pub request: HeaderChanges,
    pub response: HeaderChanges,
}

impl HeaderTransforms {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

pub(super) fn header_transforms(
    file: &Path,
    field: &str,
    written: HeadersFile,
    params: &[&str],
) -> Result<HeaderTransforms, ConfigError> {
    Ok(HeaderTransforms {
        request: header_changes(file, &format!("{field}.request"), written.request, params)?,
        response: header_changes(file, &format!("{field}.response"), written.response, params)?,
    })
}

fn header_changes(
    file: &Path,
    field: &str,
    written: HeaderChangesFile,
    params: &[&str],
) -> Result<HeaderChanges, ConfigError> {
    let name = |list: &str, name: &str| -> Result<HeaderName, ConfigError> {
        let bad = |why: String| ConfigError::new(file, Some(format!("{field}.{list}")), why);
        let parsed = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| bad(format!("invalid header name {name:?}")))?;
        if crate::framing::is_gateway_owned(&parsed) || parsed == http::header::HOST {
            return Err(bad(format!(
                "{parsed} is the gateway's to set (framing, connection and Host headers)"
            )));
        }
        Ok(parsed)
    };
    let values = |list: &str, entries: std::collections::BTreeMap<String, String>| {
        entries
            .into_iter()
            .map(|(header, value)| {
                let header = name(list, &header)?;
                let template = Template::parse(&value, params)
                    .map_err(|why| ConfigError::new(file, Some(format!("{field}.{list}.{header}")), why))?;
                if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                    return Err(ConfigError::new(
                        file,
                        Some(format!("{field}.{list}.{header}")),
                        "a header value may not contain control characters",
                    ));
                }
                Ok((header, template))
            })
            .collect::<Result<Vec<_>, ConfigError>>()
    };
    Ok(HeaderChanges {
        remove: written
            .remove
            .iter()
            .map(|n| name("remove", n))
            .collect::<Result<_, _>>()?,
        set: values("set", written.set)?,
        add: values("add", written.add)?,
    })
}

/// `client_ips:` of an API.
#[derive(Debug, Clone, Default)]
pub struct ClientIps {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

impl ClientIps {
    /// Whether `ip` may call: not denied, and allowed if there is an allow
    /// list. An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports) is matched as the IPv4 address it is.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let listed = |list: &[IpNet]| list.iter().any(|net| net.contains(&ip));
        !listed(&self.deny) && (self.allow.is_empty() || listed(&self.allow))
    }
}

pub(super) fn client_ips(file: &Path, written: ClientIpsFile) -> Result<ClientIps, ConfigError> {
    let parse = |list: &str, entries: &[String]| {
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map(|net| net.trunc())
                    .map_err(|_| {
                        ConfigError::new(
                            file,
                            Some(format!("client_ips.{list}[{i}]")),
                            format!("{entry:?} is not an IP address or a CIDR block such as 10.0.0.0/8"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(ClientIps {
        allow: parse("allow", &written.allow)?,
        deny: parse("deny", &written.deny)?,
    })
}

/// `cors:` of an API.
#[derive(Debug, Clone)]
pub struct Cors {
    pub origins: Vec<OriginPattern>,
    pub methods: Vec<Method>,
    /// Empty: whatever the browser asks for.
    pub headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub credentials: bool,
    pub max_age_s: Option<u32>,
    pub preflight_passthrough: bool,
}

/// One of `cors.origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    Exact(String),
    /// `https://*.example.com`: the scheme and a suffix starting with `.`.
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

impl Cors {
    /// Whether a browser at `origin` may call.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.origins.iter().any(|pattern| match pattern {
            OriginPattern::Any => true,
            OriginPattern::Exact(allowed) => *allowed == origin,
            OriginPattern::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|host| host.strip_prefix("://"))
                .is_some_and(|host| {
                    host.len() > suffix.len() && host.ends_with(suffix.as_str()) && !host.contains(['/', '@'])
                }),
        })
    }

    /// Whether `Access-Control-Allow-Origin` may be `*` (any origin, and
    /// no credentials: browsers refuse `*` with credentials).
    pub fn wildcard(&self) -> bool {
        !self.credentials && self.origins.contains(&OriginPattern::Any)
    }
}

pub(super) fn cors(file: &Path, written: CorsFile) -> Result<Cors, ConfigError> {
    let bad = |field: String, why: String| ConfigError::new(file, Some(field), why);
    if written.origins.is_empty() {
        return Err(bad(
            "cors.origins".into(),
            "list the origins allowed (`*` for any)".into(),
        ));
    }
    let origins = written
        .origins
        .iter()
        .enumerate()
        .map(|(i, origin)| {
            let origin = origin.trim().to_ascii_lowercase();
            if origin == "*" {
                return Ok(OriginPattern::Any);
            }
            let Some((scheme, host)) = origin.split_once("://") else {
                return Err(bad(
                    format!("cors.origins[{i}]"),
                    format!(
                        "{origin:?} is not an origin: expected scheme://host[:port], such as https://app.example.com"
                    ),
                ));
            };
            if host.is_empty() || host.contains(['/', '?', '#', '@']) {
                return Err(bad(
                    format!("cors.origins[{i}]"),
                    format!("{origin:?} is not an origin: no path, query or user part"),
                ));
            }
            Ok(match host.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') && !suffix.contains('*') => OriginPattern::Subdomains {
                    scheme: scheme.to_owned(),
                    suffix: suffix.to_owned(),
                },
                Some(_) => {
                    return Err(bad(
                        format!("cors.origins[{i}]"),
                        format!("{origin:?}: a wildcard may only stand for subdomains, as in https://*.example.com"),
                    ));
                }
                None => OriginPattern::Exact(origin),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let headers = |field: &str, names: &[String]| {
        names
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| bad(format!("cors.{field}"), format!("invalid header name {name:?}")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let cors = Cors {
        methods: written
            .methods
            .iter()
            .map(|m| Method::from_bytes(m.0.as_bytes()).expect("validated as upper-case ASCII"))
            .collect(),
        headers: headers("headers", &written.headers)?,
        expose_headers: headers("expose_headers", &written.expose_headers)?,
        credentials: written.credentials,
        max_age_s: written.max_age_s,
        preflight_passthrough: written.preflight_passthrough,
        origins,
    };
    if cors.credentials && cors.origins.contains(&OriginPattern::Any) {
        tracing::debug!(
            file = %file.display(),
            "cors: credentials with origin `*`: each allowed origin is echoed back, as browsers refuse `*` with credentials"
        );
    }
    Ok(cors)
}

/// What the gateway does itself at an endpoint, besides its plugin and
/// rate limit.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    /// Every request it matches is refused (403).
    pub deny: bool,
    /// The answer given instead of the upstream's.
    pub respond: Option<Fallback>,
    /// Callers need not authenticate.
    pub skip_auth: bool,
    pub rewrite: Option<Rewrite>,
    pub upstream_method: Option<Method>,
    pub headers: HeaderTransforms,
    /// The API's `upstream_timeout_ms`, for this endpoint.
    pub upstream_timeout: Option<Duration>,
    /// The API's `max_request_body_bytes`, for this endpoint.
    pub max_request_body_bytes: Option<usize>,
}

impl EndpointPolicy {
    /// The policies set, by their YAML names, for the admin API.
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("deny", self.deny),
            ("respond", self.respond.is_some()),
            ("skip_auth", self.skip_auth),
            ("rewrite", self.rewrite.is_some()),
            ("upstream_method", self.upstream_method.is_some()),
            ("headers", !self.headers.is_empty()),
            ("upstream_timeout_ms", self.upstream_timeout.is_some()),
            ("max_request_body_bytes", self.max_request_body_bytes.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// `rewrite:` of an endpoint.
#[derive(Debug, Clone)]
pub enum Rewrite {
    To(Template),
    Pattern { regex: regex::Regex, to: Template },
}

impl Rewrite {
    /// The path the upstream gets instead of `path`, or `None` when a
    /// pattern does not match it.
    pub fn apply(&self, path: &str, vars: &TemplateVars<'_>) -> Option<String> {
        match self {
            Rewrite::To(to) => Some(to.render(vars)),
            Rewrite::Pattern { regex, to } => {
                let captures = regex.captures(path)?;
                let mut out = String::new();
                captures.expand(&to.render(vars), &mut out);
                Some(out)
            }
        }
    }
}

/// Most bytes of a rewrite pattern's compiled program: a pattern is the
/// operator's, but a runaway one should fail at load, not use memory.
const MAX_REGEX_BYTES: usize = 1 << 20;

pub(super) fn rewrite(file: &Path, field: &str, written: RewriteFile, params: &[&str]) -> Result<Rewrite, ConfigError> {
    let bad = |why: String| ConfigError::new(file, Some(field.to_owned()), why);
    let check_path = |to: &str| {
        if to.starts_with('/') || to.starts_with('{') || to.starts_with('$') {
            Ok(())
        } else {
            Err(bad(format!("{to:?}: a rewritten path starts with `/`")))
        }
    };
    match written {
        RewriteFile::To(to) => {
            check_path(&to)?;
            Ok(Rewrite::To(Template::parse(&to, params).map_err(bad)?))
        }
        RewriteFile::Pattern { pattern, to } => {
            check_path(&to)?;
            let regex = regex::RegexBuilder::new(&pattern)
                .size_limit(MAX_REGEX_BYTES)
                .build()
                .map_err(|e| bad(format!("match: {e}")))?;
            Ok(Rewrite::Pattern {
                regex,
                to: Template::parse(&to, params).map_err(bad)?,
            })
        }
    }
}

/// `auth: { type: jwt }`, checked, with the keys it names loaded.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub header: HeaderName,
    pub query: Option<String>,
    pub cookie: Option<String>,
    pub algorithms: Vec<Algorithm>,
    /// Keys from the secret, PEM keys and a JWKS file.
    pub keys: Vec<JwtKey>,
    /// A JWKS document fetched at load and every `jwks_refresh`.
    pub jwks_url: Option<http::Uri>,
    pub jwks_refresh: Duration,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub leeway_s: u64,
    pub require_exp: bool,
    pub claims: JwtClaims,
}

/// Which claims make the session.
#[derive(Debug, Clone)]
pub struct JwtClaims {
    pub key_id: String,
    pub alias: Option<String>,
    pub rate: Option<String>,
    pub per: Option<String>,
    pub quota_max: Option<String>,
    pub quota_renewal_seconds: Option<String>,
    pub tags: Option<String>,
    pub metadata: Vec<(String, String)>,
}

/// Which keys verify which algorithms. A key verifies only tokens whose
/// `alg` is of its own kind: an RSA public key is never an HMAC secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

impl KeyKind {
    pub fn of(alg: Algorithm) -> KeyKind {
        use Algorithm::*;
        match alg {
            HS256 | HS384 | HS512 => KeyKind::Hmac,
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => KeyKind::Rsa,
            ES256 | ES384 => KeyKind::Ec,
            EdDSA => KeyKind::Ed,
        }
    }
}

/// A verification key: its kind, its `kid` and `alg` when a JWKS named
/// them.
#[derive(Clone)]
pub struct JwtKey {
    pub kind: KeyKind,
    pub kid: Option<String>,
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kind", &self.kind)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// Whether this key may verify a token with this header.
    pub fn fits(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        self.kind == KeyKind::of(alg)
            && self.alg.is_none_or(|own| own == alg)
            && match (kid, &self.kid) {
                (Some(wanted), Some(own)) => wanted == own,
                // A token without `kid`, or a key without one: try it.
                _ => true,
            }
    }
}

/// Most bytes of a JWKS document, fetched or read.
pub const MAX_JWKS_BYTES: usize = 256 << 10;

/// The keys of a JWKS document. Keys of a kind the gateway does not
/// verify (`use: enc`, unknown `kty`) are skipped and counted.
pub fn jwks_keys(text: &[u8]) -> Result<(Vec<JwtKey>, usize), String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = 0;
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(value) else {
            skipped += 1;
            continue;
        };
        if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
            skipped += 1;
            continue;
        }
        use jsonwebtoken::jwk::AlgorithmParameters as P;
        let kind = match &jwk.algorithm {
            P::RSA(_) => KeyKind::Rsa,
            P::EllipticCurve(_) => KeyKind::Ec,
            P::OctetKeyPair(_) => KeyKind::Ed,
            P::OctetKey(_) => KeyKind::Hmac,
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| serde_json::to_value(a).ok())
            .and_then(|name| algorithm(name.as_str()?));
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(JwtKey {
                kind,
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            }),
            Err(_) => skipped += 1,
        }
    }
    Ok((keys, skipped))
}

fn algorithm(name: &str) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match name {
        "HS256" => HS256,
        "HS384" => HS384,
        "HS512" => HS512,
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        _ => return None,
    })
}

pub(super) fn jwt(file: &Path, base: &Path, written: JwtFile) -> Result<JwtConfig, ConfigError> {
    let bad = |field: &str, why: String| ConfigError::new(file, Some(format!("auth.{field}")), why);
    if written.algorithms.is_empty() {
        return Err(bad(
            "algorithms",
            "list the algorithms tokens may be signed with, such as [RS256]".into(),
        ));
    }
    let algorithms = written
        .algorithms
        .iter()
        .map(|name| {
            algorithm(name).ok_or_else(|| {
                bad(
                    "algorithms",
                    format!(
                        "unknown algorithm {name:?}: expected HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA (`none` is never accepted)"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut keys = Vec::new();
    if let Some(secret) = &written.secret {
        let secret = env_or_literal(file, "auth.secret", secret)?;
        let bytes = if written.secret_base64 {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(secret.trim())
                .map_err(|e| bad("secret", format!("not base64 ({e}), yet secret_base64 is set")))?
        } else {
            secret.into_bytes()
        };
        if bytes.len() < 32 {
            return Err(bad(
                "secret",
                format!(
                    "{} bytes is too short for an HMAC secret: use at least 32 (RFC 7518 3.2)",
                    bytes.len()
                ),
            ));
        }
        keys.push(JwtKey {
            kind: KeyKind::Hmac,
            kid: None,
            alg: None,
            key: DecodingKey::from_secret(&bytes),
        });
    }
    let pem = |field: &str, text: &[u8]| -> Result<JwtKey, ConfigError> {
        let (kind, key) = if let Ok(key) = DecodingKey::from_rsa_pem(text) {
            (KeyKind::Rsa, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(text) {
            (KeyKind::Ec, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(text) {
            (KeyKind::Ed, key)
        } else {
            return Err(bad(
                field,
                "not a PEM public key (RSA, EC P-256/P-384 or Ed25519, `-----BEGIN PUBLIC KEY-----`)".into(),
            ));
        };
        Ok(JwtKey {
            kind,
            kid: None,
            alg: None,
            key,
        })
    };
    for (i, text) in written.public_keys.iter().enumerate() {
        keys.push(pem(&format!("public_keys[{i}]"), text.as_bytes())?);
    }
    let read = |field: &str, path: &Path, max: usize| -> Result<Vec<u8>, ConfigError> {
        let path = base.join(path);
        let bytes = std::fs::read(&path).map_err(|e| bad(field, format!("cannot read {}: {e}", path.display())))?;
        if bytes.len() > max {
            return Err(bad(field, format!("{} is over {max} bytes", path.display())));
        }
        Ok(bytes)
    };
    for (i, path) in written.public_key_files.iter().enumerate() {
        let field = format!("public_key_files[{i}]");
        keys.push(pem(&field, &read(&field, path, 64 << 10)?)?);
    }
    if let Some(path) = &written.jwks_file {
        let (found, _) = jwks_keys(&read("jwks_file", path, MAX_JWKS_BYTES)?).map_err(|why| bad("jwks_file", why))?;
        if found.is_empty() {
            return Err(bad("jwks_file", "holds no signature key the gateway can use".into()));
        }
        keys.extend(found);
    }
    let jwks_url = written
        .jwks_url
        .as_deref()
        .map(|url| {
            let uri: http::Uri = url.parse().map_err(|e| bad("jwks_url", format!("{url:?}: {e}")))?;
            match uri.scheme_str() {
                Some("https") => Ok(uri),
                Some("http") if uri.host().is_some_and(net::is_loopback_host) => Ok(uri),
                _ => Err(bad(
                    "jwks_url",
                    format!("{url:?}: keys are fetched over https:// (http:// only from a loopback host)"),
                )),
            }
        })
        .transpose()?;
    if keys.is_empty() && jwks_url.is_none() {
        return Err(bad(
            "type",
            "a JWT needs keys: `secret`, `public_keys`, `public_key_files`, `jwks_file` or `jwks_url`".into(),
        ));
    }
    // Every algorithm needs a key of its kind (or a JWKS that may bring one).
    for alg in &algorithms {
        let kind = KeyKind::of(*alg);
        if jwks_url.is_none() && !keys.iter().any(|k| k.kind == kind) {
            return Err(bad(
                "algorithms",
                format!("{alg:?} is listed, but no key of its kind ({kind:?}) is configured"),
            ));
        }
    }
    let claims = written.claims;
    Ok(JwtConfig {
        header: HeaderName::from_bytes(written.header.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| bad("header", format!("invalid header name {:?}", written.header)))?,
        query: written.query,
        cookie: written.cookie,
        algorithms,
        keys,
        jwks_url,
        jwks_refresh: Duration::from_secs(written.jwks_refresh_s.max(1)),
        issuers: written.issuers,
        audiences: written.audiences,
        leeway_s: written.leeway_s,
        require_exp: written.require_exp,
        claims: JwtClaims {
            key_id: claims.key_id,
            alias: claims.alias,
            rate: claims.rate,
            per: claims.per,
            quota_max: claims.quota_max,
            quota_renewal_seconds: claims.quota_renewal_seconds,
            tags: claims.tags,
            metadata: claims.metadata.into_iter().collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(params: &'a [(String, String)]) -> TemplateVars<'a> {
        TemplateVars {
            request_id: "rid",
            client_ip: "10.0.0.1",
            api_id: "orders",
            method: "GET",
            path: "/orders/7",
            params,
        }
    }

    #[test]
    fn templates_name_known_values_and_parameters_only() {
        let params = [("id".to_owned(), "7".to_owned())];
        let t = Template::parse("req={request_id} ip={client_ip} id={id} {{x}}", &["id"]).expect("valid");
        assert_eq!(t.render(&vars(&params)), "req=rid ip=10.0.0.1 id=7 {x}");
        let error = Template::parse("{user}", &["id"]).expect_err("refused");
        assert!(
            error.contains("unknown placeholder {user}") && error.contains("{id}"),
            "{error}"
        );
        assert!(
            Template::parse("{id", &["id"])
                .expect_err("refused")
                .contains("unclosed")
        );
        assert!(Template::parse("a}b", &[]).expect_err("refused").contains("unmatched"));
    }

    #[test]
    fn ip_lists_match_cidr_and_mapped_addresses() {
        let file = Path::new("api.yaml");
        let ips = client_ips(
            file,
            ClientIpsFile {
                allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into(), "192.0.2.7".into()],
                deny: vec!["10.9.0.0/16".into()],
            },
        )
        .expect("valid");
        let admits = |ip: &str| ips.admits(ip.parse().expect("valid"));
        assert!(admits("10.1.2.3"));
        assert!(admits("::ffff:10.1.2.3"), "IPv4-mapped IPv6 is the IPv4 address");
        assert!(admits("192.0.2.7") && !admits("192.0.2.8"));
        assert!(admits("2001:db8::1") && !admits("2001:db9::1"));
        assert!(!admits("10.9.1.1"), "deny wins over allow");
        assert!(!admits("127.0.0.1"));
        let error = client_ips(
            file,
            ClientIpsFile {
                allow: vec!["10.0.0.0/33".into()],
                deny: vec![],
            },
        )
        .expect_err("refused");
        assert_eq!(error.field.as_deref(), Some("client_ips.allow[0]"));
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain() {
        let file = Path::new("api.yaml");
        let written = CorsFile {
            origins: vec!["https://app.example.com".into(), "https://*.example.org".into()],
            methods: vec![],
            headers: vec![],
            expose_headers: vec![],
            credentials: false,
            max_age_s: None,
            preflight_passthrough: false,
        };
        let c = cors(file, written).expect("valid");
        assert!(c.allows_origin("https://app.example.com"));
        assert!(c.allows_origin("HTTPS://APP.EXAMPLE.COM"));
        assert!(
            !c.allows_origin("http://app.example.com"),
            "scheme is part of the origin"
        );
        assert!(!c.allows_origin("https://app.example.com.evil.net"));
        assert!(c.allows_origin("https://a.b.example.org"));
        assert!(!c.allows_origin("https://example.org"), "the pattern is for subdomains");
        assert!(!c.allows_origin("https://evilexample.org"));
        assert!(!c.wildcard());
    }

    #[test]
    fn rewrites_fill_parameters_and_captures() {
        let file = Path::new("api.yaml");
        let params = [("id".to_owned(), "7".to_owned())];
        let to = rewrite(file, "r", RewriteFile::To("/v2/items/{id}".into()), &["id"]).expect("valid");
        assert_eq!(to.apply("/items/7", &vars(&params)).as_deref(), Some("/v2/items/7"));
        let pattern = rewrite(
            file,
            "r",
            RewriteFile::Pattern {
                pattern: "^/old/(?P<rest>.*)$".into(),
                to: "/new/${rest}?by={api_id}".into(),
            },
            &[],
        )
        .expect("valid");
        assert_eq!(
            pattern.apply("/old/a/b", &vars(&[])).as_deref(),
            Some("/new/a/b?by=orders")
        );
        assert_eq!(pattern.apply("/other", &vars(&[])), None);
        assert!(rewrite(file, "r", RewriteFile::To("relative".into()), &[]).is_err());
    }
}
