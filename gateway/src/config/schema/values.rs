//! Strings checked while they are parsed (ids, names, URLs), so an error
//! carries its line.

use super::*;

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
    |s| crate::config::net::AllowRule::parse(s).map(|_| ())
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
                    crate::config::net::BaseUrl::parse(s).map_err(E::custom)?;
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
