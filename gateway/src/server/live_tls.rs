//! The listener's TLS configuration as it changes: replaced on reload and
//! when its files change on disk, published as certificate metrics each
//! time. Open connections keep the configuration they were accepted with.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use crate::tls::ServerTls;

/// The listener's TLS configuration as it changes over time.
#[derive(Debug)]
pub struct LiveTls {
    current: ArcSwap<ServerTls>,
}

impl LiveTls {
    pub fn new(loaded: Arc<ServerTls>) -> Arc<Self> {
        crate::telemetry::metrics::set_certificates("listener", &loaded.certificates);
        Arc::new(LiveTls {
            current: ArcSwap::new(loaded),
        })
    }

    /// The configuration a new connection is served with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.load().config)
    }

    /// Serves new connections with `loaded`; open ones keep what they have.
    pub fn replace(&self, loaded: Arc<ServerTls>) {
        crate::telemetry::metrics::set_certificates("listener", &loaded.certificates);
        let names: Vec<&str> = loaded.certificates.iter().map(|c| c.subject.as_str()).collect();
        tracing::info!(certificates = ?names, "TLS certificates loaded");
        self.current.store(loaded);
    }

    /// Polls the certificate, key and CA files every `watch_interval` and
    /// reloads them when they change. A change that does not load (a key
    /// written before its certificate, say) is logged once and the running
    /// certificates keep serving; the next change is tried again.
    pub async fn watch(self: Arc<Self>) {
        let mut failed: Option<[u8; 32]> = None;
        loop {
            let interval = self.current.load().settings.watch_interval;
            if interval.is_zero() {
                // Off, perhaps until a reload turns it on.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tokio::time::sleep(interval).await;
            let current = self.current.load_full();
            let on_disk = ServerTls::on_disk(&current.settings);
            if on_disk == current.fingerprint || failed == Some(on_disk) {
                continue;
            }
            match ServerTls::load(&current.settings) {
                Ok(loaded) => {
                    failed = None;
                    tracing::info!("TLS files changed on disk: reloading them");
                    self.replace(Arc::new(loaded));
                }
                Err(e) => {
                    tracing::error!(field = %e.field, error = %e, "TLS files changed on disk but cannot be loaded; the previous certificates keep serving");
                    failed = Some(on_disk);
                }
            }
        }
    }
}
