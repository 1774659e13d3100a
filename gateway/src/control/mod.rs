//! Start-up, reload and shutdown: what the `serve` and `validate` commands do.

pub mod admin;
pub mod cluster;
pub mod dashboard;
pub mod load;

use load::{load_config, runtime_for};
pub use load::{reload, summary, validate};

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::StoreConfig;
use crate::control::cluster::{Control, Trigger};
use crate::server::live_tls::LiveTls;
use crate::server::routes::Routes;
use crate::server::{Gateway, Listeners};
use crate::store::SessionStore;
use crate::telemetry::access_log::AccessLog;

/// What `serve`'s flags say beyond the configuration file.
#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    /// Where to listen instead of `listen` (`--listen`).
    pub listen: Option<String>,
    /// Where to serve HTTPS instead of `tls.listen` (`--listen-tls`).
    pub listen_tls: Option<String>,
    /// This node's id in the cluster (`--node-id`); `None`: the default.
    pub node_id: Option<String>,
    /// SIGHUP reloads the whole cluster (`--broadcast`).
    pub broadcast: bool,
}

/// Serves until SIGINT/SIGTERM. SIGHUP reloads the configuration; a reload
/// that fails is logged and the running configuration keeps serving.
pub async fn serve(config_file: PathBuf, options: ServeOptions) -> anyhow::Result<()> {
    let config = load_config(&config_file).await?;
    let runtime = runtime_for(&config)?;
    let listen = options.listen.or_else(|| config.listen.clone());
    let tls = match (&config.tls, options.listen_tls) {
        (None, Some(_)) => anyhow::bail!(
            "--listen-tls needs a `tls:` block with certificates in {}",
            config_file.display()
        ),
        (None, None) => None,
        (Some(loaded), address) => Some((
            address.unwrap_or_else(|| loaded.settings.listen.clone()),
            Arc::clone(loaded),
        )),
    };
    let store = SessionStore::new(config.session_store.clone());
    let admin = config.admin.clone();
    let access_log = config.access_log.clone();
    let traces = config.tracing.as_ref().map(crate::telemetry::init).transpose()?;
    let routes = Routes::build(config, &runtime, None).await?;
    crate::telemetry::metrics::config_loaded();
    tracing::info!(
        apis = routes.apis().len(),
        plugins = routes.plugin_count(),
        "configuration loaded"
    );
    if admin.is_some() || routes.store_needed_by().next().is_some() {
        match (&routes.config.session_store, store.open().await) {
            (_, Ok(())) => {}
            // Redis may come up after the gateway: keyed requests get 503 until it does.
            (StoreConfig::Redis(url), Err(e)) => tracing::warn!(%url, error = %e, "session store not reachable yet"),
            (StoreConfig::Embedded(_), Err(e)) => return Err(anyhow::anyhow!("{e}")),
        }
    }

    let plain = match &listen {
        Some(listen) => Some(
            TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?,
        ),
        None => None,
    };
    let tls = match tls {
        Some((address, loaded)) => {
            let listener = TcpListener::bind(&address)
                .await
                .with_context(|| format!("cannot listen on {address} (tls.listen)"))?;
            Some((listener, LiveTls::new(loaded)))
        }
        None => None,
    };
    let live_tls = tls.as_ref().map(|(_, live)| Arc::clone(live));
    let timeouts = routes.config.client_timeouts;
    let mut gateway = Gateway::new(routes, store, live_tls.clone());
    let mut log_closer = None;
    if let Some(target) = &access_log {
        let (log, closer) = AccessLog::open(target)
            .with_context(|| format!("cannot open the access log {target} (access_log.path)"))?;
        gateway = gateway.with_access_log(log);
        log_closer = Some(closer);
    }
    let gateway = Arc::new(gateway);
    let node_id = options.node_id.unwrap_or_else(crate::control::cluster::default_node_id);
    tracing::info!(node = %node_id, "node id");
    let control = Arc::new(Control::new(Arc::clone(&gateway), runtime, config_file, node_id));
    let admin_addr = match admin {
        None => None,
        Some(admin) => {
            let admin_listener = TcpListener::bind(&admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin_listen)", admin.listen))?;
            let admin_addr = admin_listener.local_addr()?;
            let app = crate::control::admin::router(Arc::clone(&control), &admin.secret);
            tokio::spawn(async move {
                if let Err(e) = axum::serve(admin_listener, app).await {
                    tracing::error!(error = %e, "admin listener failed");
                }
            });
            Some(admin_addr)
        }
    };
    control.start();
    // Installed before the `listening` lines: a SIGHUP sent as soon as they
    // appear must reload, not meet the default action and end the process.
    tokio::spawn(reload_on_sighup(hangups(), Arc::clone(&control), options.broadcast));
    #[cfg(unix)]
    if access_log.is_some() {
        reopen_log_on_sigusr1()?;
    }

    if let Some(live) = live_tls {
        tokio::spawn(live.watch());
    }

    // Scripts wait for these exact lines on stdout.
    if let Some(plain) = &plain {
        let addr = plain.local_addr()?;
        println!("listening on http://{addr}");
        tracing::info!(%addr, "listening");
    }
    if let Some((listener, _)) = &tls {
        let addr = listener.local_addr()?;
        println!("listening on https://{addr}");
        tracing::info!(%addr, "listening (TLS)");
    }
    if let Some(admin_addr) = admin_addr {
        println!("admin listening on http://{admin_addr}");
        tracing::info!(addr = %admin_addr, "admin API listening");
    }
    let stopping = async move {
        shutdown_signal().await;
        control.begin_drain();
    };
    Arc::clone(&gateway)
        .serve(Listeners { plain, tls, timeouts }, stopping)
        .await;
    gateway.store().flush();
    if let Some(closer) = log_closer {
        let _ = tokio::task::spawn_blocking(move || closer.close()).await;
    }
    if let Some(traces) = traces {
        // The blocking exporter may wait on the collector: not on a
        // request-serving thread.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The stream of SIGHUPs, from now on.
#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup()).ok();
    if hangups.is_none() {
        tracing::warn!("cannot listen for SIGHUP; reload by restarting");
    }
    hangups
}

#[cfg(unix)]
async fn reload_on_sighup(hangups: Option<tokio::signal::unix::Signal>, control: Arc<Control>, broadcast: bool) {
    let Some(mut hangups) = hangups else { return };
    while hangups.recv().await.is_some() {
        if broadcast {
            if let (_, Err(e)) = control.reload_cluster(Trigger::Signal).await {
                tracing::error!(error = %e, "SIGHUP: the cluster reload was not announced; this node reloaded alone");
            }
        } else {
            let _ = control.reload(Trigger::Signal).await;
        }
    }
}

/// SIGUSR1 reopens the access log file (after logrotate moved it).
#[cfg(unix)]
fn reopen_log_on_sigusr1() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut signals = signal(SignalKind::user_defined1()).context("cannot listen for SIGUSR1")?;
    tokio::spawn(async move {
        while signals.recv().await.is_some() {
            tracing::info!("SIGUSR1: reopening the access log before its next line");
            crate::telemetry::access_log::reopen();
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn hangups() {}

#[cfg(not(unix))]
async fn reload_on_sighup(_: (), _: Arc<Control>, _: bool) {}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
