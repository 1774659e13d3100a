//! Reloading, for one node and for a cluster: every way a reload starts
//! (SIGHUP, `POST /reload`, a file change, a reload broadcast by another
//! node) goes through [`Control::reload`], which records what happened for
//! `/health` and `GET /cluster`.
//!
//! With the Redis session store, nodes find each other through it:
//! - each writes a report (configuration digest, when it was loaded, the
//!   last reload's result) under `portcullis:node:<id>` every few seconds,
//!   kept for a minute, so `GET /cluster` on any node lists the nodes seen
//!   in the last minute;
//! - a cluster reload bumps `portcullis:reload:generation` and publishes on
//!   `portcullis:reload`. Nodes reload at once on the message, and any node
//!   that missed it (its subscription was down) sees the generation move at
//!   its next heartbeat. Each node reloads from its own files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use crate::plugin::PluginRuntime;
use crate::server::Gateway;
use crate::server::routes::{BuildError, Routes};
use crate::store::{RELOAD_CHANNEL, RedisStore, StoreError};
use crate::sync::lock;

/// How often a node writes its report, and checks the reload generation.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a report lasts: a node silent this long has left the list.
const REPORT_TTL_SECS: u64 = 60;
/// How often `watch: true` looks at the files.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What started a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Admin,
    /// `watch: true` saw a file change.
    Watch,
    /// A cluster reload started on the node with this id.
    Cluster(String),
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Signal => f.write_str("SIGHUP"),
            Trigger::Admin => f.write_str("POST /reload"),
            Trigger::Watch => f.write_str("file change"),
            Trigger::Cluster(origin) => write!(f, "cluster reload from {origin}"),
        }
    }
}

/// The result of a node's last reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    pub trigger: String,
    pub ok: bool,
    /// Why the reload was refused (the previous configuration kept serving).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Settings the reload changed in the files that only a restart applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_required: Vec<String>,
}

/// What a node tells the others, and `GET /cluster` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    pub id: String,
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// When this report was written.
    #[serde(with = "rfc3339")]
    pub seen_at: SystemTime,
    /// The digest of the configuration being served.
    pub config_hash: String,
    #[serde(with = "rfc3339")]
    pub loaded_at: SystemTime,
    pub last_reload: Option<ReloadReport>,
}

impl NodeReport {
    /// `loaded_at` as RFC 3339.
    pub fn loaded_at_text(&self) -> String {
        humantime::format_rfc3339_millis(self.loaded_at).to_string()
    }
}

/// Why a cluster reload could not be announced.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("a cluster reload needs the Redis session store (session_store: redis://...)")]
    NoCluster,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reloads this node and speaks for it in the cluster.
/// How many reloads [`Control::recent_reloads`] remembers.
pub const RECENT_RELOADS: usize = 10;

pub struct Control {
    gateway: Arc<Gateway>,
    runtime: Arc<PluginRuntime>,
    config_file: PathBuf,
    node_id: String,
    started_at: SystemTime,
    last_reload: Mutex<Option<ReloadReport>>,
    /// The last reloads, newest last, for the dashboard.
    recent_reloads: Mutex<std::collections::VecDeque<ReloadReport>>,
    /// The last reload generation this node acted on.
    generation: Mutex<u64>,
    /// One reload at a time, whatever started it.
    reloading: tokio::sync::Mutex<()>,
    /// Set when a shutdown begins: `/readyz` then says not ready, so load
    /// balancers stop sending while requests in flight finish.
    draining: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("node_id", &self.node_id)
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

impl Control {
    pub fn new(gateway: Arc<Gateway>, runtime: Arc<PluginRuntime>, config_file: PathBuf, node_id: String) -> Self {
        Control {
            gateway,
            runtime,
            config_file,
            node_id,
            started_at: SystemTime::now(),
            last_reload: Mutex::new(None),
            recent_reloads: Mutex::default(),
            generation: Mutex::new(0),
            reloading: tokio::sync::Mutex::new(()),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
    }

    /// Reloads this node from its files; a failure keeps the running
    /// configuration and is logged, and either way the result is reported.
    pub async fn reload(&self, trigger: Trigger) -> Result<Vec<&'static str>, BuildError> {
        let _one_at_a_time = self.reloading.lock().await;
        tracing::info!(file = %self.config_file.display(), %trigger, "reloading configuration");
        let result = super::load::reload(&self.gateway, &self.runtime, &self.config_file).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, %trigger, "reload failed; the previous configuration keeps serving");
        }
        let report = ReloadReport {
            at: SystemTime::now(),
            trigger: trigger.to_string(),
            ok: result.is_ok(),
            error: result.as_ref().err().map(ToString::to_string),
            restart_required: result
                .as_ref()
                .map(|names| names.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default(),
        };
        {
            let mut recent = lock(&self.recent_reloads);
            if recent.len() == RECENT_RELOADS {
                recent.pop_front();
            }
            recent.push_back(report.clone());
        }
        *lock(&self.last_reload) = Some(report);
        self.publish_report().await;
        result
    }

    /// Has every node of the cluster reload from its own files, this one
    /// included. The others hear of it first, so they reload alongside
    /// this node, and whether or not its own reload succeeds: their files
    /// are their own.
    pub async fn reload_cluster(
        &self,
        trigger: Trigger,
    ) -> (Result<Vec<&'static str>, BuildError>, Result<(), BroadcastError>) {
        // The generation it bumps counts as seen here, so this node's own
        // heartbeat does not reload it a second time.
        let announced = self.announce().await;
        (self.reload(trigger).await, announced)
    }

    async fn announce(&self) -> Result<(), BroadcastError> {
        let redis = self.redis().await?.ok_or(BroadcastError::NoCluster)?;
        let generation = redis.broadcast_reload(&self.node_id).await?;
        let mut seen = lock(&self.generation);
        *seen = (*seen).max(generation);
        tracing::info!(generation, "cluster reload announced");
        Ok(())
    }

    async fn redis(&self) -> Result<Option<&RedisStore>, StoreError> {
        self.gateway.store().redis().await
    }

    /// A shutdown began: requests in flight finish, no new ones should come.
    pub fn begin_drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last reloads (up to [`RECENT_RELOADS`]), newest last.
    pub fn recent_reloads(&self) -> Vec<ReloadReport> {
        lock(&self.recent_reloads).iter().cloned().collect()
    }

    /// This node's report.
    pub fn report(&self) -> NodeReport {
        let routes = self.gateway.routes();
        NodeReport {
            id: self.node_id.clone(),
            started_at: self.started_at,
            seen_at: SystemTime::now(),
            config_hash: routes.digest.clone(),
            loaded_at: routes.loaded_at,
            last_reload: lock(&self.last_reload).clone(),
        }
    }

    /// Every node seen in the last minute, this one included, by id; just
    /// this one without Redis.
    pub async fn nodes(&self) -> Result<Vec<NodeReport>, StoreError> {
        let Some(redis) = self.redis().await? else {
            return Ok(vec![self.report()]);
        };
        let mut nodes: Vec<NodeReport> = redis
            .nodes()
            .await?
            .iter()
            .filter_map(|text| serde_json::from_str(text).ok())
            .filter(|node: &NodeReport| node.id != self.node_id)
            .collect();
        nodes.push(self.report());
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Writes this node's report to Redis (nothing without Redis). A
    /// failure is logged at debug: the store's own users report it.
    async fn publish_report(&self) {
        let report = match serde_json::to_string(&self.report()) {
            Ok(report) => report,
            Err(e) => return tracing::warn!(error = %e, "cannot encode the node report"),
        };
        match self.redis().await {
            Ok(Some(redis)) => {
                if let Err(e) = redis.put_node(&self.node_id, &report, REPORT_TTL_SECS).await {
                    tracing::debug!(error = %e, "cannot write the node report");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "cannot write the node report"),
        }
    }

    /// Reloads if the cluster's reload generation moved past the last one
    /// this node acted on.
    async fn catch_up(&self, origin: Option<&str>) {
        let generation = match self.redis().await {
            Ok(Some(redis)) => match redis.reload_generation().await {
                Ok(generation) => generation,
                Err(_) => return,
            },
            _ => return,
        };
        {
            let mut seen = lock(&self.generation);
            if generation <= *seen {
                return;
            }
            *seen = generation;
        }
        let origin = origin.unwrap_or("another node").to_owned();
        let _ = self.reload(Trigger::Cluster(origin)).await;
    }

    /// Runs the node's background work: the heartbeat and the reload
    /// subscription with Redis, and the file watch.
    pub fn start(self: &Arc<Self>) {
        tokio::spawn(Arc::clone(self).heartbeat());
        tokio::spawn(Arc::clone(self).watch());
        if let Some(url) = self.gateway.store().redis_url() {
            tokio::spawn(Arc::clone(self).subscribe(url.to_owned()));
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        // The generation at start-up is already loaded: the files were
        // just read.
        if let Ok(Some(redis)) = self.redis().await
            && let Ok(generation) = redis.reload_generation().await
        {
            let mut seen = lock(&self.generation);
            *seen = (*seen).max(generation);
        }
        loop {
            self.publish_report().await;
            self.catch_up(None).await;
            tokio::time::sleep(HEARTBEAT).await;
        }
    }

    async fn subscribe(self: Arc<Self>, url: String) {
        let client = match redis::Client::open(url.as_str()) {
            Ok(client) => client,
            Err(e) => return tracing::warn!(error = %e, "cannot subscribe to cluster reloads"),
        };
        let mut warned = false;
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(RELOAD_CHANNEL).await {
                    Ok(()) => {
                        warned = false;
                        tracing::debug!("subscribed to cluster reloads");
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            // Whoever can write to Redis can publish: the
                            // origin only names the trigger, bounded.
                            let origin: String = message.get_payload().unwrap_or_default();
                            let origin: String = origin.chars().filter(|c| !c.is_control()).take(128).collect();
                            if origin != self.node_id {
                                self.catch_up(Some(&origin)).await;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot subscribe to cluster reloads"),
                },
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "cannot subscribe to cluster reloads; retrying");
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// With `watch: true` (read from the running configuration, so a
    /// reload turns it on or off), reloads when a source file changes and
    /// has then stayed the same for one more look (an editor's or a
    /// ConfigMap's several writes make one reload).
    async fn watch(self: Arc<Self>) {
        // What the files looked like at the last look, while watching.
        let routes = self.gateway.routes();
        let mut seen = routes.config.watch.then(|| Fingerprint::of(&routes));
        drop(routes);
        let mut changed = false;
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let routes = self.gateway.routes();
            if !routes.config.watch {
                (seen, changed) = (None, false);
                continue;
            }
            let now = Fingerprint::of(&routes);
            match &seen {
                Some(before) if *before != now => changed = true,
                Some(_) if changed => {
                    changed = false;
                    let _ = self.reload(Trigger::Watch).await;
                    seen = Some(Fingerprint::of(&self.gateway.routes()));
                    continue;
                }
                _ => {}
            }
            seen = Some(now);
        }
    }
}

/// What the files of a configuration look like from outside: each
/// source's and each source directory's modification time, size and
/// inode. A directory's changes when a file is added to it or renamed
/// (a Kubernetes ConfigMap update swaps a symlink).
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<Stamp>)>);

/// Modification time, size, inode.
type Stamp = (SystemTime, u64, u64);

impl Fingerprint {
    fn of(routes: &Routes) -> Self {
        let mut paths = routes.config.sources();
        let dirs: Vec<PathBuf> = paths.iter().filter_map(|p| p.parent().map(PathBuf::from)).collect();
        paths.extend(dirs);
        paths.sort();
        paths.dedup();
        Fingerprint(
            paths
                .into_iter()
                .map(|path| {
                    let stamp = std::fs::metadata(&path).ok().map(|m| {
                        #[cfg(unix)]
                        let inode = std::os::unix::fs::MetadataExt::ino(&m);
                        #[cfg(not(unix))]
                        let inode = 0;
                        (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), inode)
                    });
                    (path, stamp)
                })
                .collect(),
        )
    }
}

/// This node's id: `--node-id`, else `PORTCULLIS_NODE_ID`, else
/// `<hostname>:<pid>` (in a container, the pod or container name).
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "node".into());
    format!("{host}:{}", std::process::id())
}

/// RFC 3339 times, as the access log writes them.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}
