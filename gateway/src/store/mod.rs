//! Where keys, sessions and their counters live: an embedded database on
//! disk for a single node (no configuration, survives restarts), or Redis so
//! several gateway nodes share keys, rate limits and quotas.
//!
//! Both backends offer the same few operations, and every counter update is
//! one atomic check-and-increment (a redb write transaction, or a Lua script
//! in Redis), so concurrent requests, on one node or many, never lose an
//! update or let an extra request through.

mod embedded;
mod redis_store;

pub use redis_store::{RELOAD_CHANNEL, RedisStore};

use crate::config::StoreConfig;
use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::OnceCell;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The stored form of a session: what a key may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionData {
    /// The key's public id (never the key itself).
    #[serde(default)]
    pub key_id: String,
    /// A human-readable name for the caller (Tyk's `alias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// `rate` requests per `per` seconds; 0 = unlimited.
    #[serde(default)]
    pub rate: u32,
    #[serde(default)]
    pub per: u32,
    /// Requests per quota period; -1 = unlimited.
    #[serde(default = "unlimited")]
    pub quota_max: i64,
    /// Length of the quota period in seconds; 0 = the quota never renews.
    #[serde(default)]
    pub quota_renewal_seconds: u64,
    /// The APIs this key may call; empty = none (keys are deny by default).
    #[serde(default)]
    pub apis: Vec<ApiAccess>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Unix seconds after which the key is rejected; `None` = never.
    #[serde(default)]
    pub expires: Option<i64>,
}

fn unlimited() -> i64 {
    -1
}

/// Access to one API: its id, optionally only some paths and methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiAccess {
    /// The whole API.
    Id(String),
    /// Part of it.
    Restricted {
        id: String,
        /// Path prefixes under the listen path (e.g. `/public/`); empty = all.
        #[serde(default)]
        paths: Vec<String>,
        /// Methods; empty = all.
        #[serde(default)]
        methods: Vec<String>,
    },
}

impl ApiAccess {
    pub fn api_id(&self) -> &str {
        match self {
            ApiAccess::Id(id) | ApiAccess::Restricted { id, .. } => id,
        }
    }

    /// Whether this entry allows `method` on `rest` (the path under the API's
    /// listen path) of API `api_id`.
    pub fn allows(&self, api_id: &str, method: &str, rest: &str) -> bool {
        match self {
            ApiAccess::Id(id) => id == api_id,
            ApiAccess::Restricted { id, paths, methods } => {
                id == api_id
                    && (paths.is_empty() || paths.iter().any(|p| rest.starts_with(p.as_str())))
                    && (methods.is_empty() || methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            }
        }
    }
}

/// The end of a window that never ends (quota without renewal): far in the
/// future, and exact as a double, which Redis's Lua numbers are.
pub const NEVER: i64 = 1 << 53;

/// The result of one check-and-increment of a windowed counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests counted in the current window, this one included if allowed.
    pub used: u64,
    /// Unix seconds when the window ends; [`NEVER`] for a window that never ends.
    pub reset_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt session record: {0}")]
    Corrupt(String),
}

/// The session store of one gateway process. It is opened on first use, so
/// a gateway whose APIs are all keyless never touches it (and two such
/// gateways on one machine do not compete for the embedded file).
#[derive(Debug, Clone)]
pub struct SessionStore {
    config: StoreConfig,
    backend: Arc<OnceCell<Backend>>,
}

#[derive(Debug, Clone)]
enum Backend {
    Embedded(embedded::EmbeddedStore),
    Redis(redis_store::RedisStore),
}

/// Keys are stored by their SHA-256, never in clear.
pub fn key_hash(key: &str) -> String {
    key_hash_bytes(key.as_bytes())
}

/// The SHA-256 of `bytes`, in hex.
pub fn key_hash_bytes(bytes: &[u8]) -> String {
    crate::text::hex(&Sha256::digest(bytes))
}

/// A new random API key and its public id.
pub fn new_key() -> (String, String) {
    let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let id = key_hash(&key)[..16].to_owned();
    (key, id)
}

impl SessionStore {
    /// A store for `config`, not opened yet.
    pub fn new(config: StoreConfig) -> Self {
        SessionStore {
            config,
            backend: Arc::new(OnceCell::new()),
        }
    }

    /// Opens the store now: at start-up when something needs it, so a
    /// misconfigured store is a start-up error rather than a 503 later.
    pub async fn open(&self) -> Result<(), StoreError> {
        self.backend().await.map(|_| ())
    }

    async fn backend(&self) -> Result<&Backend, StoreError> {
        self.backend
            .get_or_try_init(|| async {
                let backend = match &self.config {
                    StoreConfig::Embedded(path) => Backend::Embedded(
                        embedded::EmbeddedStore::open(path).map_err(|e| StoreError::Unavailable(format!("{e:#}")))?,
                    ),
                    StoreConfig::Redis(url) => Backend::Redis(
                        redis_store::RedisStore::connect(url)
                            .await
                            .map_err(|e| StoreError::Unavailable(format!("{e:#}")))?,
                    ),
                };
                Ok(backend)
            })
            .await
    }

    /// Whether the store answers now: opened (the embedded store), or a
    /// `PING` answered (Redis).
    pub async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", async {
            match self.backend().await? {
                Backend::Embedded(_) => Ok(()),
                Backend::Redis(s) => s.ping().await,
            }
        })
        .await
    }

    /// The Redis backend, when the store is Redis: what nodes of a cluster
    /// share. `Ok(None)` for the embedded store.
    pub async fn redis(&self) -> Result<Option<&redis_store::RedisStore>, StoreError> {
        if !matches!(self.config, StoreConfig::Redis(_)) {
            return Ok(None);
        }
        match self.backend().await? {
            Backend::Redis(s) => Ok(Some(s)),
            Backend::Embedded(_) => Ok(None),
        }
    }

    /// The Redis URL, when the store is Redis.
    pub fn redis_url(&self) -> Option<&str> {
        match &self.config {
            StoreConfig::Redis(url) => Some(url),
            StoreConfig::Embedded(_) => None,
        }
    }

    /// Makes every counter update durable (the embedded store commits them
    /// lazily); called at shutdown.
    pub fn flush(&self) {
        if let Some(Backend::Embedded(s)) = self.backend.get() {
            s.flush();
        }
    }

    /// The session stored under `id` (a key hash, or `plugin:<key_id>` for
    /// sessions created by auth plugins).
    pub async fn get(&self, id: &str) -> Result<Option<SessionData>, StoreError> {
        timed("get", async {
            match self.backend().await? {
                Backend::Embedded(s) => s.get(id).await,
                Backend::Redis(s) => s.get(id).await,
            }
        })
        .await
    }

    /// Up to `limit` stored sessions with their ids, in id order.
    pub async fn list(&self, limit: usize) -> Result<Vec<(String, SessionData)>, StoreError> {
        timed("list", async {
            match self.backend().await? {
                Backend::Embedded(s) => s.list(limit).await,
                Backend::Redis(s) => s.list(limit).await,
            }
        })
        .await
    }

    pub async fn put(&self, id: &str, session: &SessionData) -> Result<(), StoreError> {
        timed("put", async {
            match self.backend().await? {
                Backend::Embedded(s) => s.put(id, session).await,
                Backend::Redis(s) => s.put(id, session).await,
            }
        })
        .await
    }

    /// Removes a session; whether it existed.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        timed("delete", async {
            match self.backend().await? {
                Backend::Embedded(s) => s.delete(id).await,
                Backend::Redis(s) => s.delete(id).await,
            }
        })
        .await
    }

    /// Counts one request against `counter` if fewer than `limit` were
    /// counted in its current window of `window_secs` (0 = endless); the
    /// window starts with the first request counted.
    pub async fn acquire(&self, counter: &str, limit: u64, window_secs: u64, now: i64) -> Result<Decision, StoreError> {
        timed("acquire", async {
            match self.backend().await? {
                Backend::Embedded(s) => s.acquire(counter, limit, window_secs, now).await,
                Backend::Redis(s) => s.acquire(counter, limit, window_secs, now).await,
            }
        })
        .await
    }

    /// The counter's state without counting anything.
    pub async fn peek(&self, counter: &str, now: i64) -> Result<Decision, StoreError> {
        timed("peek", async {
            match self.backend().await? {
                Backend::Embedded(s) => s.peek(counter, now).await,
                Backend::Redis(s) => s.peek(counter, now).await,
            }
        })
        .await
    }
}

/// Window arithmetic shared by both backends: given the stored
/// `(used, reset_at)` (if any), decide and return the new state.
fn decide(stored: Option<(u64, i64)>, limit: u64, window_secs: u64, now: i64) -> Decision {
    let (used, reset_at) = match stored {
        Some((used, reset_at)) if now < reset_at => (used, reset_at),
        _ => (0, window_end(now, window_secs)),
    };
    if used >= limit {
        Decision {
            allowed: false,
            used,
            reset_at,
        }
    } else {
        Decision {
            allowed: true,
            used: used + 1,
            reset_at,
        }
    }
}

/// The counter's state at `now` without counting: an ended window reads as
/// empty.
fn current(stored: Option<(u64, i64)>, now: i64) -> Decision {
    match stored {
        Some((used, reset_at)) if now < reset_at => Decision {
            allowed: true,
            used,
            reset_at,
        },
        _ => Decision {
            allowed: true,
            used: 0,
            reset_at: now,
        },
    }
}

fn window_end(now: i64, window_secs: u64) -> i64 {
    if window_secs == 0 {
        NEVER
    } else {
        now.saturating_add(i64::try_from(window_secs).unwrap_or(i64::MAX))
    }
}

fn encode(session: &SessionData) -> Result<String, StoreError> {
    serde_json::to_string(session).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode(text: &str) -> Result<SessionData, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Runs one store operation, timing it and counting its failure.
async fn timed<T>(operation: &'static str, run: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let result = run.await;
    crate::telemetry::metrics::store_operation(operation, started.elapsed(), result.is_ok());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_until_the_limit_then_reset() {
        let first = decide(None, 2, 60, 1000);
        assert_eq!(
            first,
            Decision {
                allowed: true,
                used: 1,
                reset_at: 1060
            }
        );
        let second = decide(Some((1, 1060)), 2, 60, 1010);
        assert_eq!(
            second,
            Decision {
                allowed: true,
                used: 2,
                reset_at: 1060
            }
        );
        let third = decide(Some((2, 1060)), 2, 60, 1059);
        assert!(!third.allowed);
        let renewed = decide(Some((2, 1060)), 2, 60, 1060);
        assert_eq!(
            renewed,
            Decision {
                allowed: true,
                used: 1,
                reset_at: 1120
            }
        );
        assert_eq!(decide(None, 1, 0, 5).reset_at, NEVER, "window 0 never renews");
    }

    #[test]
    fn api_access_by_id_path_and_method() {
        let whole = ApiAccess::Id("orders".into());
        assert!(whole.allows("orders", "DELETE", "/x"));
        assert!(!whole.allows("billing", "GET", "/x"));
        let part = ApiAccess::Restricted {
            id: "orders".into(),
            paths: vec!["/public/".into()],
            methods: vec!["GET".into()],
        };
        assert!(part.allows("orders", "get", "/public/1"));
        assert!(!part.allows("orders", "POST", "/public/1"));
        assert!(!part.allows("orders", "GET", "/private/1"));
    }
}
