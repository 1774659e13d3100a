//! Authentication, sessions, rate limits and quotas: who the caller is and
//! whether they may make this request now.
//!
//! Built-in API keys are looked up by their hash in the session store; an
//! `auth` plugin returns the session itself, which is then saved under its
//! key id so metadata written by later plugins persists. Rate limits and
//! quotas are one atomic check-and-increment each in the store, so they hold
//! across gateway nodes sharing a Redis.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::{LimitBy, Limits, RateLimit};
use crate::plugin::Session;
use crate::store::{self, Decision, SessionData, SessionStore, StoreError};

/// Why a caller is turned away. Each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("missing API key")]
    MissingKey,
    #[error("unknown API key")]
    UnknownKey,
    #[error("API key expired")]
    Expired,
    #[error("this key may not access this API, path or method")]
    NoAccess,
    #[error("rate limit exceeded")]
    RateLimited(LimitHeaders),
    #[error("quota exceeded")]
    QuotaExceeded(LimitHeaders),
    /// A rate limit counts callers by this header, and the request sent
    /// it more than once: which line is the caller's?
    #[error("header {0} sent more than once; a rate limit counts callers by it")]
    RepeatedHeader(HeaderName),
    #[error("{0}")]
    Token(crate::server::jwt::TokenError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Headers telling the caller where they stand (`X-RateLimit-*`,
/// `X-Quota-*`, and `Retry-After` when refused).
#[derive(Debug, Default, Clone)]
pub struct LimitHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl LimitHeaders {
    /// Adds `other`'s headers after these, so its values win.
    pub fn extend(&mut self, other: LimitHeaders) {
        self.0.extend(other.0);
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }

    fn push(&mut self, name: &'static str, value: impl ToString) {
        if let Ok(value) = HeaderValue::from_str(&value.to_string()) {
            self.0.push((HeaderName::from_static(name), value));
        }
    }
}

/// A caller with a stored session.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Where the session is stored (key hash, or `plugin:<key_id>`).
    pub store_id: String,
    /// Namespace of the rate and quota counters.
    pub counter_id: String,
    pub data: SessionData,
}

/// The counter namespace of a built-in API key.
pub fn key_counter_id(key_id: &str) -> String {
    format!("key:{key_id}")
}

/// The store name of the quota counter of `counter_id`.
pub fn quota_counter(counter_id: &str) -> String {
    format!("quota:{counter_id}")
}

/// The quota left for a key whose counter is `counter_id` (-1 = unlimited),
/// without counting anything.
pub async fn peek_quota(store: &SessionStore, data: &SessionData, counter_id: &str) -> Result<i64, StoreError> {
    if data.quota_max < 0 {
        return Ok(-1);
    }
    let used = store.peek(&quota_counter(counter_id), now()).await?;
    Ok(quota_remaining(data.quota_max, &used))
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The key from `header` (a `Bearer ` prefix is removed) or the `query`
/// parameter.
pub fn extract_key(
    headers: &HeaderMap,
    header: &HeaderName,
    query_param: Option<&str>,
    query: Option<&str>,
) -> Option<String> {
    if let Some(value) = headers.get(header).and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        let key = match value.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
            _ => value,
        };
        if !key.is_empty() {
            return Some(key.to_owned());
        }
    }
    let (param, query) = (query_param?, query?);
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == param && !value.is_empty()).then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Looks up a built-in API key and checks expiry and access.
pub async fn api_key(
    store: &SessionStore,
    key: &str,
    api_id: &str,
    method: &str,
    rest: &str,
) -> Result<Caller, Denied> {
    let store_id = crate::store::key_hash(key);
    let data = store.get(&store_id).await?.ok_or(Denied::UnknownKey)?;
    if data.expires.is_some_and(|at| at <= now()) {
        return Err(Denied::Expired);
    }
    if !data.apis.iter().any(|access| access.allows(api_id, method, rest)) {
        return Err(Denied::NoAccess);
    }
    Ok(Caller {
        counter_id: key_counter_id(&data.key_id),
        store_id,
        data,
    })
}

/// The caller an auth plugin's session makes: merged with the stored one
/// (metadata that earlier requests wrote is kept; the plugin's own entries
/// win) and saved if it changed, when the merged session stays within the
/// plugin's session limits. A session that would outgrow them is the
/// plugin's failure (the inner error says why), and nothing is saved.
pub async fn plugin_caller(
    store: &SessionStore,
    session: Session,
    limits: &Limits,
) -> Result<Result<Caller, String>, Denied> {
    if session.expires.is_some_and(|at| at <= now()) {
        return Err(Denied::Expired);
    }
    let store_id = plugin_store_id(&session.key_id);
    let mut data = from_wit(session);
    let stored = store.get(&store_id).await?;
    if let Some(stored) = &stored {
        let mut metadata = stored.metadata.clone();
        metadata.append(&mut data.metadata);
        data.metadata = metadata;
    }
    let size = crate::plugin::check_session_size(
        &data.key_id,
        data.tags.iter().map(String::as_str),
        data.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        limits,
    );
    if let Err(why) = size {
        return Ok(Err(format!("with its stored metadata, {why}")));
    }
    if stored.as_ref() != Some(&data) {
        store.put(&store_id, &data).await?;
    }
    Ok(Ok(Caller {
        counter_id: store_id.clone(),
        store_id,
        data,
    }))
}

/// Where the session an auth plugin returned for `key_id` is stored.
pub fn plugin_store_id(key_id: &str) -> String {
    format!("plugin:{key_id}")
}

/// The key id of a stored plugin session's id, or `None` for an API key's.
pub fn plugin_key_id(store_id: &str) -> Option<&str> {
    store_id.strip_prefix("plugin:")
}

/// Counts this request against the caller's rate limit and quota. Returns
/// the headers to send and the quota left (-1 = unlimited).
pub async fn enforce_limits(store: &SessionStore, caller: &Caller) -> Result<(LimitHeaders, i64), Denied> {
    let now = now();
    let mut headers = LimitHeaders::default();
    let data = &caller.data;
    if data.rate > 0 && data.per > 0 {
        headers = count_rate(store, &format!("rate:{}", caller.counter_id), data.rate, data.per, now).await?;
    }
    let mut remaining = -1;
    if data.quota_max >= 0 {
        let limit = u64::try_from(data.quota_max).unwrap_or(0);
        let decision = store
            .acquire(
                &quota_counter(&caller.counter_id),
                limit,
                data.quota_renewal_seconds,
                now,
            )
            .await?;
        remaining = quota_remaining(data.quota_max, &decision);
        headers.push("x-quota-limit", data.quota_max);
        headers.push("x-quota-remaining", remaining);
        if decision.reset_at < store::NEVER {
            headers.push("x-quota-reset", (decision.reset_at - now).max(0));
        }
        if !decision.allowed {
            if decision.reset_at < store::NEVER {
                headers.push("retry-after", (decision.reset_at - now).max(1));
            }
            return Err(Denied::QuotaExceeded(headers));
        }
    }
    Ok((headers, remaining))
}

/// Counts one request against a rate counter of `rate` requests per `per`
/// seconds; the `X-RateLimit-*` headers say where the caller stands, with
/// `Retry-After` when refused. A refused request is not counted.
async fn count_rate(
    store: &SessionStore,
    counter: &str,
    rate: u32,
    per: u32,
    now: i64,
) -> Result<LimitHeaders, Denied> {
    let decision = store.acquire(counter, u64::from(rate), u64::from(per), now).await?;
    let reset = (decision.reset_at - now).max(0);
    let mut headers = LimitHeaders::default();
    headers.push("x-ratelimit-limit", rate);
    headers.push("x-ratelimit-remaining", u64::from(rate).saturating_sub(decision.used));
    headers.push("x-ratelimit-reset", reset);
    if decision.allowed {
        Ok(headers)
    } else {
        headers.push("retry-after", reset.max(1));
        Err(Denied::RateLimited(headers))
    }
}

/// A `rate_limit` of an API or endpoint, with the name of its counters.
#[derive(Debug)]
pub struct RateLimiter {
    /// `limit:<api>:<scope>:<rate>/<per>:`; the caller's bucket follows.
    /// The rate is part of the name, so a reload that changes it starts
    /// fresh windows rather than inheriting the old ones.
    prefix: String,
    limit: RateLimit,
}

impl RateLimiter {
    /// `scope` is `api`, or the endpoint's methods and template.
    pub fn new(api_id: &str, scope: &str, limit: RateLimit) -> Self {
        RateLimiter {
            prefix: format!("limit:{api_id}:{scope}:{}/{}:", limit.rate, limit.per),
            limit,
        }
    }

    /// `100 per 1 s by client_ip`, for the admin API and the start-up summary.
    pub fn describe(&self) -> String {
        let by = match &self.limit.by {
            LimitBy::ClientIp => "client_ip".to_owned(),
            LimitBy::Header(name) => format!("header:{name}"),
            LimitBy::Api => "api".to_owned(),
        };
        format!("{} per {} s by {by}", self.limit.rate, self.limit.per)
    }

    /// Counts this request in its caller's bucket: the client's IP, the
    /// header's value (callers without it share one bucket), or the API.
    pub async fn check(
        &self,
        store: &SessionStore,
        client_ip: &HeaderValue,
        headers: &HeaderMap,
    ) -> Result<LimitHeaders, Denied> {
        let counter = match &self.limit.by {
            LimitBy::ClientIp => format!("{}ip:{}", self.prefix, client_ip.to_str().unwrap_or_default()),
            // Hashed: the value is the caller's, of any length and content.
            LimitBy::Header(name) => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(value), None) => {
                        format!("{}h:{}", self.prefix, &store::key_hash_bytes(value.as_bytes())[..32])
                    }
                    (None, _) => format!("{}h:-", self.prefix),
                    // Counting the first line would let a caller escape its
                    // limit by adding a fresh one before it.
                    (Some(_), Some(_)) => return Err(Denied::RepeatedHeader(name.clone())),
                }
            }
            LimitBy::Api => format!("{}all", self.prefix),
        };
        count_rate(store, &counter, self.limit.rate, self.limit.per, now()).await
    }
}

pub fn quota_remaining(quota_max: i64, decision: &Decision) -> i64 {
    (quota_max - i64::try_from(decision.used).unwrap_or(i64::MAX)).max(0)
}

/// The session record plugins see.
pub fn to_wit(data: &SessionData, quota_remaining: i64) -> Session {
    Session {
        key_id: data.key_id.clone(),
        alias: data.alias.clone(),
        rate: data.rate,
        per: data.per,
        quota_max: data.quota_max,
        quota_remaining,
        quota_renewal_seconds: data.quota_renewal_seconds,
        metadata: data.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        tags: data.tags.clone(),
        expires: data.expires,
    }
}

fn from_wit(session: Session) -> SessionData {
    SessionData {
        key_id: session.key_id,
        alias: session.alias,
        rate: session.rate,
        per: session.per,
        quota_max: session.quota_max,
        quota_renewal_seconds: session.quota_renewal_seconds,
        apis: Vec::new(),
        metadata: session.metadata.into_iter().collect(),
        tags: session.tags,
        expires: session.expires,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_bearer_plain_header_or_query() {
        let auth = HeaderName::from_static("authorization");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer abc123"));
        assert_eq!(extract_key(&headers, &auth, None, None).as_deref(), Some("abc123"));
        headers.insert("authorization", HeaderValue::from_static("abc123"));
        assert_eq!(extract_key(&headers, &auth, None, None).as_deref(), Some("abc123"));
        let empty = HeaderMap::new();
        assert_eq!(
            extract_key(&empty, &auth, Some("api_key"), Some("x=1&api_key=k%2B1")).as_deref(),
            Some("k+1")
        );
        assert_eq!(extract_key(&empty, &auth, Some("api_key"), Some("x=1")), None);
        assert_eq!(
            extract_key(&empty, &auth, None, Some("api_key=k")),
            None,
            "query keys only when configured"
        );
    }
}
