//! The cluster store: Redis. Sessions are JSON strings; each counter is a
//! hash (`used`, `reset_at`) updated by one Lua script, so the check and the
//! increment are atomic across every gateway node. The connection manager
//! reconnects by itself: while Redis is down, calls fail fast (503 to the
//! client) and service resumes when it returns.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Decision, SessionData, StoreError, decode, encode};

const PREFIX: &str = "portcullis:";

/// The channel cluster-wide reloads are announced on.
pub const RELOAD_CHANNEL: &str = "portcullis:reload";

/// KEYS[1] counter; ARGV: limit, window_secs (0 = endless), now, NEVER.
/// Returns {allowed (0/1), used, reset_at}.
const ACQUIRE: &str = r"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'used', 'reset_at')
local used = tonumber(state[1])
local reset_at = tonumber(state[2])
if used == nil or reset_at == nil or now >= reset_at then
  used = 0
  if window == 0 then reset_at = tonumber(ARGV[4]) else reset_at = now + window end
end
if used >= limit then
  return {0, used, string.format('%d', reset_at)}
end
used = used + 1
redis.call('HSET', KEYS[1], 'used', used, 'reset_at', string.format('%d', reset_at))
if window > 0 then redis.call('EXPIREAT', KEYS[1], reset_at + 1) end
return {1, used, string.format('%d', reset_at)}
";

#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    acquire: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("invalid session_store URL {url:?}: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Redis at {url}: {e}"))?;
        Ok(RedisStore {
            connection,
            acquire: redis::Script::new(ACQUIRE),
        })
    }

    /// One round trip: whether Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }

    pub async fn get(&self, id: &str) -> Result<Option<SessionData>, StoreError> {
        let text: Option<String> = self
            .connection
            .clone()
            .get(format!("{PREFIX}session:{id}"))
            .await
            .map_err(unavailable)?;
        text.as_deref().map(decode).transpose()
    }

    pub async fn list(&self, limit: usize) -> Result<Vec<(String, SessionData)>, StoreError> {
        let prefix = format!("{PREFIX}session:");
        let mut sessions = Vec::new();
        for (key, text) in self.values(&prefix, limit).await? {
            if let Some(id) = key.strip_prefix(&prefix) {
                sessions.push((id.to_owned(), decode(&text)?));
            }
        }
        sessions.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(sessions)
    }

    /// Up to `limit` string keys under `prefix`, with their values (keys
    /// that expire between the scan and the read are left out).
    async fn values(&self, prefix: &str, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        let mut connection = self.connection.clone();
        let mut keys: Vec<String> = Vec::new();
        {
            let mut scan = connection
                .scan_match::<_, String>(format!("{prefix}*"))
                .await
                .map_err(unavailable)?;
            while keys.len() < limit {
                match scan.next_item().await {
                    Some(key) => keys.push(key.map_err(unavailable)?),
                    None => break,
                }
            }
        }
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(value) = connection.get::<_, Option<String>>(&key).await.map_err(unavailable)? {
                values.push((key, value));
            }
        }
        Ok(values)
    }

    pub async fn put(&self, id: &str, session: &SessionData) -> Result<(), StoreError> {
        let text = encode(session)?;
        self.connection
            .clone()
            .set::<_, _, ()>(format!("{PREFIX}session:{id}"), text)
            .await
            .map_err(unavailable)
    }

    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let removed: u64 = self
            .connection
            .clone()
            .del(format!("{PREFIX}session:{id}"))
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    pub async fn acquire(&self, counter: &str, limit: u64, window_secs: u64, now: i64) -> Result<Decision, StoreError> {
        let (allowed, used, reset_at): (i64, u64, String) = self
            .acquire
            .key(format!("{PREFIX}counter:{counter}"))
            .arg(limit)
            .arg(window_secs)
            .arg(now)
            .arg(super::NEVER)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(Decision {
            allowed: allowed == 1,
            used,
            reset_at: reset_at
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("counter {counter}: reset_at {reset_at:?}")))?,
        })
    }

    pub async fn peek(&self, counter: &str, now: i64) -> Result<Decision, StoreError> {
        let (used, reset_at): (Option<u64>, Option<i64>) = redis::cmd("HMGET")
            .arg(format!("{PREFIX}counter:{counter}"))
            .arg("used")
            .arg("reset_at")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(super::current(used.zip(reset_at), now))
    }

    /// Writes this node's report, kept for `ttl_secs`.
    pub async fn put_node(&self, id: &str, report: &str, ttl_secs: u64) -> Result<(), StoreError> {
        self.connection
            .clone()
            .set_ex::<_, _, ()>(format!("{PREFIX}node:{id}"), report, ttl_secs)
            .await
            .map_err(unavailable)
    }

    /// The reports of every node seen within their time to live.
    pub async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        // More nodes than any cluster has.
        let reports = self.values(&format!("{PREFIX}node:"), 10_000).await?;
        Ok(reports.into_iter().map(|(_, report)| report).collect())
    }

    /// Starts a cluster-wide reload: bumps the reload generation (which
    /// nodes compare on every heartbeat, so none misses it) and publishes
    /// `message` (so they hear of it at once). Returns the new generation.
    pub async fn broadcast_reload(&self, message: &str) -> Result<u64, StoreError> {
        let mut connection = self.connection.clone();
        let generation: u64 = connection
            .incr(format!("{PREFIX}reload:generation"), 1)
            .await
            .map_err(unavailable)?;
        connection
            .publish::<_, _, ()>(RELOAD_CHANNEL, message)
            .await
            .map_err(unavailable)?;
        Ok(generation)
    }

    /// The number of cluster-wide reloads started so far.
    pub async fn reload_generation(&self) -> Result<u64, StoreError> {
        let generation: Option<u64> = self
            .connection
            .clone()
            .get(format!("{PREFIX}reload:generation"))
            .await
            .map_err(unavailable)?;
        Ok(generation.unwrap_or(0))
    }
}
