//! `fan_out:` on a plugin reference: outbound calls the gateway makes
//! before the function runs, concurrently, whose results the function reads
//! from its input and merges. Everything that can be checked without a
//! request is checked here, so a bad URL or a host off the allowlist is a
//! load error rather than a failure on every request.

use std::path::Path;
use std::time::Duration;

use http::uri::{Scheme, Uri};
use http::{HeaderName, HeaderValue, Method};

use super::schema::{FanOutCallSpec, FanOutFile};
use super::{AllowRule, ConfigError, Limits};

/// A plugin reference's fan-out, checked.
#[derive(Debug, Clone)]
pub struct FanOut {
    /// In name order.
    pub calls: Vec<FanOutCall>,
    /// For the whole batch; the API's `outbound.timeout_ms` when absent.
    pub deadline: Option<Duration>,
    /// Stop once this many calls have succeeded.
    pub first: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct FanOutCall {
    pub name: String,
    pub method: Method,
    pub url: UrlTemplate,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Option<Duration>,
}

/// A URL with `{name}` placeholders in its path and query, filled from the
/// endpoint's path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// A parameter; `keep_slashes` for a catch-all (`{*name}`) one.
    Param {
        name: String,
        keep_slashes: bool,
    },
}

impl UrlTemplate {
    /// Splits `url` at its `{name}` placeholders. Braces must pair up.
    fn parse(url: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = url;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("a `}` without its `{`".into());
            }
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or("a `{` without its `}`")?;
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let name = &rest[open + 1..close];
            if name.is_empty() || name.contains('{') {
                return Err(format!("`{{{name}}}` is not a parameter name"));
            }
            pieces.push(Piece::Param {
                name: name.to_owned(),
                keep_slashes: false,
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(UrlTemplate(pieces))
    }

    fn params(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|piece| match piece {
            Piece::Param { name, .. } => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The URL for a request whose path captured `params`. Values are
    /// percent-encoded (escapes they carry already are kept), so a value
    /// can neither add a query parameter nor leave its path segment; only
    /// a catch-all parameter keeps its slashes.
    pub fn fill(&self, params: &[(String, String)]) -> String {
        let mut url = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => url.push_str(text),
                Piece::Param { name, keep_slashes } => {
                    let value = params.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str());
                    for byte in value.bytes() {
                        if byte.is_ascii_alphanumeric() || b"-._~%".contains(&byte) || (*keep_slashes && byte == b'/') {
                            url.push(char::from(byte));
                        } else {
                            url.push_str(&format!("%{byte:02X}"));
                        }
                    }
                }
            }
        }
        url
    }
}

/// The names an endpoint path template captures, and whether each is a
/// catch-all: `/files/{owner}/{*path}` gives `owner` and `path`.
pub fn template_params(template: &str) -> Vec<(&str, bool)> {
    template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| match name.strip_prefix('*') {
            Some(name) => (name, true),
            None => (name, false),
        })
        .collect()
}

/// Where a plugin reference sits: what its fan-out may reach and fill in.
pub struct Scope<'a> {
    pub allow: &'a [AllowRule],
    /// The path parameters the reference's requests carry, and whether each
    /// is a catch-all (`template_params`); `None` for API-wide hooks, which
    /// run before (or without) an endpoint's parameters.
    pub params: Option<Vec<(&'a str, bool)>>,
}

pub fn resolve(
    file: &Path,
    field: &str,
    fan_out: FanOutFile,
    scope: &Scope<'_>,
    limits: &Limits,
) -> Result<FanOut, ConfigError> {
    // `field` is empty for a block that stands alone (`plugin call --fan-out`).
    let place = |sub: &str| {
        if field.is_empty() {
            sub.to_owned()
        } else {
            format!("{field}.{sub}")
        }
    };
    let bad = |sub: String, why: String| ConfigError::new(file, Some(place(&sub)), why);
    if fan_out.calls.is_empty() {
        return Err(bad("calls".into(), "a fan-out needs at least one call".into()));
    }
    let count = u32::try_from(fan_out.calls.len()).unwrap_or(u32::MAX);
    if count > limits.max_outbound_calls {
        return Err(bad(
            "calls".into(),
            format!(
                "{count} calls are more than the reference's limits.max_outbound_calls ({}); the fan-out's calls count against it",
                limits.max_outbound_calls
            ),
        ));
    }
    if let Some(first) = fan_out.first
        && first.get() > count
    {
        return Err(bad(
            "first".into(),
            format!("{first} is more than the {count} calls: the fan-out would never stop early"),
        ));
    }
    let mut calls = Vec::with_capacity(fan_out.calls.len());
    for (name, call) in fan_out.calls {
        let FanOutCallSpec {
            url,
            method,
            headers,
            body,
            timeout_ms,
        } = call.0;
        let at = |sub: &str| format!("calls.{name}{sub}");
        let url = check_url(&url, scope).map_err(|why| bad(at(""), why))?;
        let mut checked_headers = Vec::with_capacity(headers.len());
        for (header, value) in headers {
            let value = super::load::env_or_literal(file, &place(&at(&format!(".headers.{header}"))), &value)?;
            if HeaderName::from_bytes(header.as_bytes()).is_err() || HeaderValue::from_str(&value).is_err() {
                return Err(bad(
                    at(&format!(".headers.{header}")),
                    format!("{header:?}: {value:?} is not a valid header"),
                ));
            }
            checked_headers.push((header.to_ascii_lowercase(), value));
        }
        calls.push(FanOutCall {
            method: method.map_or(Method::GET, |m| {
                Method::from_bytes(m.0.as_bytes()).expect("validated as upper-case ASCII")
            }),
            url,
            headers: checked_headers,
            body: body.map(String::into_bytes).unwrap_or_default(),
            timeout: timeout_ms.map(|ms| Duration::from_millis(ms.max(1))),
            name,
        });
    }
    Ok(FanOut {
        calls,
        deadline: fan_out.deadline_ms.map(|ms| Duration::from_millis(ms.max(1))),
        first: fan_out.first.map(std::num::NonZeroU32::get),
    })
}

/// Checks a call's URL: absolute `http(s)`, its host on the allowlist,
/// placeholders only after the authority and naming the endpoint's
/// parameters.
fn check_url(url: &str, scope: &Scope<'_>) -> Result<UrlTemplate, String> {
    let params = scope.params.as_deref().unwrap_or_default();
    let mut template = UrlTemplate::parse(url).map_err(|why| format!("{url:?}: {why}"))?;
    let authority_end = url
        .find("://")
        .map(|i| i + 3)
        .map(|start| url[start..].find(['/', '?']).map_or(url.len(), |i| start + i));
    let Some(authority_end) = authority_end else {
        return Err(format!("{url:?} is not an absolute http:// or https:// URL"));
    };
    if url[..authority_end].contains(['{', '}']) {
        return Err(format!(
            "{url:?}: parameters can fill the path and query, not the scheme, host or port"
        ));
    }
    for piece in &mut template.0 {
        if let Piece::Param { name, keep_slashes } = piece {
            match params.iter().find(|(p, _)| p == name) {
                Some(&(_, catch_all)) => *keep_slashes = catch_all,
                None if scope.params.is_none() => {
                    return Err(format!(
                        "{url:?} uses {{{name}}}, but only an endpoint's plugin has path parameters to fill it"
                    ));
                }
                None => {
                    let known: Vec<_> = params.iter().map(|(p, _)| *p).collect();
                    return Err(format!(
                        "{url:?} uses {{{name}}}, which the endpoint's path does not capture (it captures: {})",
                        if known.is_empty() {
                            "nothing".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
    }
    // Every parameter filled with a plain value must make a valid URL.
    let sample = template.fill(
        &template
            .params()
            .map(|p| (p.to_owned(), "x".to_owned()))
            .collect::<Vec<_>>(),
    );
    let uri: Uri = sample.parse().map_err(|e| format!("{url:?} is not a valid URL: {e}"))?;
    if !matches!(uri.scheme(), Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS) {
        return Err(format!("{url:?} is not an absolute http:// or https:// URL"));
    }
    if !AllowRule::any_allows(scope.allow, &uri) {
        let authority = uri.authority().map_or("", |a| a.as_str());
        return Err(format!(
            "{authority} is not on the API's outbound.allow list (every fan-out call must be)"
        ));
    }
    Ok(template)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(url: &str) -> UrlTemplate {
        let allow = [AllowRule::parse("users.internal").expect("valid")];
        let scope = Scope {
            allow: &allow,
            params: Some(template_params("/profile/{id}/{*rest}")),
        };
        check_url(url, &scope).expect("valid")
    }

    fn params(id: &str, rest: &str) -> Vec<(String, String)> {
        vec![("id".into(), id.into()), ("rest".into(), rest.into())]
    }

    #[test]
    fn fills_parameters_encoded_so_a_value_stays_in_its_place() {
        let t = template("http://users.internal/users/{id}?tab={rest}");
        assert_eq!(t.fill(&params("7", "a/b")), "http://users.internal/users/7?tab=a/b");
        assert_eq!(
            t.fill(&params("7&admin=1#x", "")),
            "http://users.internal/users/7%26admin%3D1%23x?tab="
        );
        assert_eq!(
            t.fill(&params("caf%C3%A9", "")),
            "http://users.internal/users/caf%C3%A9?tab="
        );
        let t = template("http://users.internal/u/{id}/f/{rest}");
        assert_eq!(t.fill(&params("a/b", "c/d")), "http://users.internal/u/a%2Fb/f/c/d");
    }

    #[test]
    fn refuses_what_a_request_could_not_fix() {
        let allow = [AllowRule::parse("users.internal:80").expect("valid")];
        let endpoint = Scope {
            allow: &allow,
            params: Some(template_params("/p/{id}")),
        };
        let hook = Scope {
            allow: &allow,
            params: None,
        };
        for (url, scope, expected) in [
            ("http://elsewhere/x", &endpoint, "not on the API's outbound.allow list"),
            ("http://users.internal:8080/x", &endpoint, "users.internal:8080"),
            ("http://{id}.internal/x", &endpoint, "not the scheme, host or port"),
            ("users.internal/x", &endpoint, "not an absolute"),
            ("ftp://users.internal/x", &endpoint, "not an absolute"),
            ("http://users.internal/{name}", &endpoint, "captures: id"),
            ("http://users.internal/{id}", &hook, "only an endpoint's plugin"),
            ("http://users.internal/{id", &endpoint, "without its `}`"),
            ("http://users.internal/}", &endpoint, "without its `{`"),
        ] {
            let err = check_url(url, scope).expect_err(url);
            assert!(err.contains(expected), "{url}: {err}");
        }
        let any_port = [AllowRule::parse("users.internal").expect("valid")];
        let scope = Scope {
            allow: &any_port,
            params: None,
        };
        assert!(check_url("http://users.internal:8080/x", &scope).is_ok());
    }
}
