//! The single-node store: one redb database file. Sessions are committed
//! durably. Counter updates are committed without an fsync each (that would
//! cap throughput at the disk's flush rate); a background task makes them
//! durable every second, so a crash loses at most a second of counting.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Decision, SessionData, StoreError, current, decide, decode, encode};

const SESSIONS: TableDefinition<&str, &str> = TableDefinition::new("sessions");
/// counter name -> (used, reset_at)
const COUNTERS: TableDefinition<&str, (u64, i64)> = TableDefinition::new("counters");

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Database::create(path)
            .map_err(|e| anyhow::anyhow!("cannot open the session store {}: {e}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(SESSIONS)?;
        txn.open_table(COUNTERS)?;
        txn.commit()?;
        let db = Arc::new(db);
        let weak = Arc::downgrade(&db);
        std::thread::Builder::new().name("store-flush".into()).spawn(move || {
            while let Some(db) = weak.upgrade() {
                if let Err(e) = db
                    .begin_write()
                    .map_err(unavailable)
                    .and_then(|t| t.commit().map_err(unavailable))
                {
                    tracing::warn!(error = %e, "cannot flush the session store");
                }
                drop(db);
                std::thread::sleep(Duration::from_secs(1));
            }
        })?;
        Ok(EmbeddedStore { db })
    }

    /// A durable (empty) commit: every earlier commit reaches the disk.
    pub fn flush(&self) {
        if let Err(e) = self
            .db
            .begin_write()
            .map_err(unavailable)
            .and_then(|t| t.commit().map_err(unavailable))
        {
            tracing::warn!(error = %e, "cannot flush the session store");
        }
    }

    /// Runs a blocking database operation off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?
    }

    pub async fn get(&self, id: &str) -> Result<Option<SessionData>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SESSIONS).map_err(unavailable)?;
            match table.get(id.as_str()).map_err(unavailable)? {
                Some(text) => decode(text.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    pub async fn list(&self, limit: usize) -> Result<Vec<(String, SessionData)>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SESSIONS).map_err(unavailable)?;
            let mut sessions = Vec::new();
            for entry in table.iter().map_err(unavailable)?.take(limit) {
                let (id, text) = entry.map_err(unavailable)?;
                sessions.push((id.value().to_owned(), decode(text.value())?));
            }
            Ok(sessions)
        })
        .await
    }

    pub async fn put(&self, id: &str, session: &SessionData) -> Result<(), StoreError> {
        let (id, text) = (id.to_owned(), encode(session)?);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(SESSIONS)
                .map_err(unavailable)?
                .insert(id.as_str(), text.as_str())
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let existed = txn
                .open_table(SESSIONS)
                .map_err(unavailable)?
                .remove(id.as_str())
                .map_err(unavailable)?
                .is_some();
            txn.commit().map_err(unavailable)?;
            Ok(existed)
        })
        .await
    }

    pub async fn acquire(&self, counter: &str, limit: u64, window_secs: u64, now: i64) -> Result<Decision, StoreError> {
        let counter = counter.to_owned();
        self.blocking(move |db| {
            // One write transaction at a time: the read-decide-write is atomic.
            let mut txn = db.begin_write().map_err(unavailable)?;
            txn.set_durability(Durability::None).map_err(unavailable)?;
            let decision = {
                let mut table = txn.open_table(COUNTERS).map_err(unavailable)?;
                let stored = table.get(counter.as_str()).map_err(unavailable)?.map(|v| v.value());
                let decision = decide(stored, limit, window_secs, now);
                if decision.allowed {
                    table
                        .insert(counter.as_str(), (decision.used, decision.reset_at))
                        .map_err(unavailable)?;
                }
                decision
            };
            txn.commit().map_err(unavailable)?;
            Ok(decision)
        })
        .await
    }

    pub async fn peek(&self, counter: &str, now: i64) -> Result<Decision, StoreError> {
        let counter = counter.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(COUNTERS).map_err(unavailable)?;
            let stored = table.get(counter.as_str()).map_err(unavailable)?.map(|v| v.value());
            Ok(current(stored, now))
        })
        .await
    }
}
