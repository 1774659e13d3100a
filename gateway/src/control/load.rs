//! Loading a configuration and every plugin it names: for `validate`, at
//! start-up, and on every reload, which swaps the new routing table in only
//! when all of it loaded.

use std::path::Path;
use std::sync::Arc;

use crate::config::{self, Config};
use crate::plugin::PluginRuntime;
use crate::server::Gateway;
use crate::server::routes::{BuildError, Routes};
use crate::upstream::outbound::OutboundClient;

/// Loads the configuration and every plugin it names, without serving.
/// Returns the routing table so callers can summarise it.
pub async fn validate(config_file: &Path) -> Result<Routes, BuildError> {
    let config = load_config(config_file).await?;
    let runtime = runtime_for(&config).map_err(|e| config::ConfigError::new(config_file, None, format!("{e:#}")))?;
    Routes::build(config, &runtime, None).await
}

/// [`config::load`] on a blocking thread: parsing a large file takes a
/// while, and a reload must not hold up the requests on its worker.
/// Plugins named by registry reference are then fetched (or found in the
/// cache) and every plugin is checked against its trust policy.
pub(crate) async fn load_config(config_file: &Path) -> Result<Config, config::ConfigError> {
    let file = config_file.to_owned();
    let mut config = tokio::task::spawn_blocking(move || config::load(&file))
        .await
        .unwrap_or_else(|e| {
            Err(config::ConfigError::new(
                config_file,
                None,
                format!("loading failed: {e}"),
            ))
        })?;
    crate::registry::resolve(&mut config).await?;
    Ok(config)
}

pub(crate) fn runtime_for(config: &Config) -> anyhow::Result<Arc<PluginRuntime>> {
    Ok(Arc::new(PluginRuntime::new(
        &config.limits,
        config.plugin_cache.clone(),
        OutboundClient::new(config.max_outbound_in_flight),
    )?))
}

/// One line per API: id, listen path, upstream and its endpoints' plugins.
pub fn summary(routes: &Routes) -> String {
    let mut out = format!(
        "{}: {} API(s), {} plugin reference(s)\n",
        routes.config.file.display(),
        routes.apis().len(),
        routes.plugin_count()
    );
    for api in routes.apis() {
        let limit = api
            .rate_limit
            .as_ref()
            .map(|l| format!(", rate limit {}", l.describe()))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {} {} -> {}{limit}\n",
            api.id,
            api.listen_path,
            api.upstreams.summary()
        ));
        for endpoint in api.endpoints() {
            let methods = endpoint
                .methods()
                .map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "*".into());
            let plugin = endpoint.plugin.as_ref().map_or_else(
                || "(no plugin)".to_owned(),
                |p| match p.fan_out_names() {
                    Some(names) => format!("{} after fan-out to {}", p.label(), names.join(", ")),
                    None => p.label().to_owned(),
                },
            );
            let limit = endpoint
                .rate_limit
                .as_ref()
                .map(|l| format!(", rate limit {}", l.describe()))
                .unwrap_or_default();
            out.push_str(&format!("    {methods} {} => {plugin}{limit}\n", endpoint.template));
        }
    }
    out
}

/// Re-reads the configuration and plugins and swaps them in only if all
/// load; answers the settings the new files change that only a restart
/// applies (named in a warning; the rest of the reload holds).
pub async fn reload(
    gateway: &Gateway,
    runtime: &Arc<PluginRuntime>,
    config_file: &Path,
) -> Result<Vec<&'static str>, BuildError> {
    let result = try_reload(gateway, runtime, config_file).await;
    crate::telemetry::metrics::reloaded(result.is_ok());
    result
}

/// The settings read once at start whose value differs between `old` and `new`.
fn restart_only_changes(old: &Config, new: &Config, tls_listen_changed: bool) -> Vec<&'static str> {
    let checks: [(&'static str, bool); 13] = [
        ("listen", old.listen != new.listen),
        ("tls", old.tls.is_some() != new.tls.is_some()),
        ("tls.listen", tls_listen_changed),
        (
            "admin_listen",
            old.admin.as_ref().map(|a| &a.listen) != new.admin.as_ref().map(|a| &a.listen),
        ),
        (
            "admin_secret",
            old.admin.as_ref().map(|a| &a.secret) != new.admin.as_ref().map(|a| &a.secret),
        ),
        ("plugin_limits.pool_size", old.limits.pool_size != new.limits.pool_size),
        (
            "plugin_limits.memory_mb",
            old.limits.memory_bytes != new.limits.memory_bytes,
        ),
        (
            "max_outbound_in_flight",
            old.max_outbound_in_flight != new.max_outbound_in_flight,
        ),
        ("plugin_cache", old.plugin_cache != new.plugin_cache),
        ("session_store", old.session_store != new.session_store),
        ("tracing", old.tracing != new.tracing),
        ("access_log", old.access_log != new.access_log),
        (
            "client_head_timeout_ms/client_send_timeout_ms",
            old.client_timeouts != new.client_timeouts,
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

async fn try_reload(
    gateway: &Gateway,
    runtime: &Arc<PluginRuntime>,
    config_file: &Path,
) -> Result<Vec<&'static str>, BuildError> {
    let config = load_config(config_file).await?;
    let current = gateway.routes();
    let tls_listen_changed = matches!(
        (gateway.tls(), &config.tls),
        (Some(_), Some(loaded)) if loaded.settings.listen != current_tls_listen(&current)
    );
    let restart_only = restart_only_changes(&current.config, &config, tls_listen_changed);
    if !restart_only.is_empty() {
        tracing::warn!(
            settings = restart_only.join(", "),
            "these settings changed but take effect at the next restart; the running values stay"
        );
    }
    // Certificates were read and checked with the rest; they change with
    // it, when the listener exists (adding one takes a restart).
    let tls = match (gateway.tls(), &config.tls) {
        (Some(_), Some(loaded)) => Some(Arc::clone(loaded)),
        _ => None,
    };
    let routes = Routes::build(config, runtime, Some(&current)).await?;
    tracing::info!(
        apis = routes.apis().len(),
        plugins = routes.plugin_count(),
        "configuration reloaded"
    );
    if let (Some(live), Some(loaded)) = (gateway.tls(), tls) {
        live.replace(loaded);
    }
    gateway.swap(routes);
    Ok(restart_only)
}

fn current_tls_listen(routes: &Routes) -> &str {
    routes.config.tls.as_ref().map_or("", |t| t.settings.listen.as_str())
}
