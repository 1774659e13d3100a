//! Loading the gateway file: its settings checked and resolved (paths,
//! TLS, tracing, secrets, limits), then every API file it names, and the
//! digest that says which configuration a node serves.

use super::*;

/// [`Config::digest`] of `sources`, named relative to `base`. Reads and
/// hashes every file: call it off the request-serving threads.
impl DigestInput {
    /// A SHA-256 of the files (named relative to the gateway file's
    /// directory) and the registry plugins: equal on two nodes when their
    /// gateway files, API files and plugins are the same, wherever each node
    /// keeps them (its plugin cache included).
    pub fn digest(self) -> Result<String, (PathBuf, std::io::Error)> {
        use sha2::{Digest, Sha256};
        let mut entries = Vec::new();
        for file in self.files {
            let content = Sha256::digest(std::fs::read(&file).map_err(|e| (file.clone(), e))?);
            let name = file
                .strip_prefix(&self.base)
                .unwrap_or(&file)
                .to_string_lossy()
                .into_owned();
            entries.push((name, content.into()));
        }
        entries.extend(self.registry_plugins.into_iter().map(|pinned| (pinned, [0u8; 32])));
        entries.sort();
        let mut all = Sha256::new();
        for (name, content) in entries {
            all.update(name.as_bytes());
            all.update([0]);
            all.update(content);
        }
        Ok(crate::text::hex(&all.finalize()))
    }
}

/// Loads and checks `file` and every API definition it names.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    load_unlocated(file).map_err(ConfigError::located)
}

/// Only `plugin_registries:` and `plugin_cache` of a gateway file, for the
/// plugin tools that talk to registries the way the gateway does.
pub fn registries_of(file: &Path) -> Result<(Registries, Option<PathBuf>), ConfigError> {
    let run = || {
        let file = std::path::absolute(file).map_err(|e| ConfigError::new(file, None, e.to_string()))?;
        let gateway: GatewayFile = parse_yaml(&file)?;
        let base = file.parent().unwrap_or(Path::new("/"));
        let cache = cache_dir(base, gateway.plugin_cache.as_ref());
        Ok((registries(&file, base, gateway.plugin_registries)?, cache))
    };
    run().map_err(ConfigError::located)
}

pub(super) fn load_unlocated(file: &Path) -> Result<Config, ConfigError> {
    let file = std::path::absolute(file).map_err(|e| ConfigError::new(file, None, e.to_string()))?;
    let mut gateway: GatewayFile = parse_yaml(&file)?;
    let base = file.parent().unwrap_or(Path::new("/"));

    let defaults = Limits::default().merged(&gateway.plugin_limits);
    check_limits(&file, "plugin_limits", &defaults)?;
    let plugin_cache = cache_dir(base, gateway.plugin_cache.as_ref());

    let plugin_trust = Arc::new(trust(&file, base, gateway.plugin_trust.take(), None)?);
    let registries = registries(&file, base, std::mem::take(&mut gateway.plugin_registries))?;
    let mut apis: Vec<ApiConfig> = Vec::new();
    for (i, pattern) in gateway.apis.iter().enumerate() {
        let field = || Some(format!("apis[{i}]"));
        let files = expand_api_pattern(base, pattern).map_err(|m| ConfigError::new(&file, field(), m))?;
        for api_file in files {
            if apis.iter().any(|a| a.file == api_file) {
                continue;
            }
            let api = load_api(&api_file, &gateway, &defaults, &plugin_trust)?;
            if let Some(other) = apis.iter().find(|a| a.id == api.id) {
                return Err(ConfigError::new(
                    &api_file,
                    Some("id".into()),
                    format!(
                        "duplicate API id {:?} (also defined in {})",
                        api.id,
                        other.file.display()
                    ),
                ));
            }
            if let Some(other) = apis.iter().find(|a| a.listen_path == api.listen_path) {
                return Err(ConfigError::new(
                    &api_file,
                    Some("listen_path".into()),
                    format!(
                        "listen path {:?} is already used by API {:?} ({})",
                        api.listen_path,
                        other.id,
                        other.file.display()
                    ),
                ));
            }
            apis.push(api);
        }
    }

    let session_store = gateway
        .session_store
        .as_deref()
        .map(|value| env_or_literal(&file, "session_store", value))
        .transpose()?;
    let session_store = match &session_store {
        Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => StoreConfig::Redis(url.clone()),
        Some(path) => StoreConfig::Embedded(base.join(path)),
        None => StoreConfig::Embedded(default_data_dir().join("sessions.redb")),
    };
    let admin = match (&gateway.admin_listen, &gateway.admin_secret) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                &file,
                Some("admin_secret".into()),
                "set admin_listen too, or remove admin_secret",
            ));
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                &file,
                Some("admin_secret".into()),
                "the admin API needs a secret (admin_secret: a string, or env:VARIABLE)",
            ));
        }
        (Some(listen), Some(secret)) => Some(AdminConfig {
            listen: listen.clone(),
            secret: resolve_secret(&file, secret)?,
        }),
    };

    let listen = match gateway.listen {
        ListenSetting::Address(address) => Some(address),
        ListenSetting::Enabled(false) => None,
        ListenSetting::Enabled(true) => {
            return Err(ConfigError::new(
                &file,
                Some("listen".into()),
                "write an address such as 0.0.0.0:8080, or false for no plain-HTTP listener",
            ));
        }
    };
    let tls = match gateway.tls {
        None if listen.is_none() => {
            return Err(ConfigError::new(
                &file,
                Some("listen".into()),
                "with `listen: false` the gateway needs a `tls:` listener",
            ));
        }
        None => None,
        Some(tls) => Some(Arc::new(server_tls(&file, base, tls)?)),
    };

    let access_log = match &gateway.access_log {
        Some(log) if log.path.trim().is_empty() => {
            return Err(ConfigError::new(
                &file,
                Some("access_log.path".into()),
                "empty: name a file (relative to this file) or `stdout`",
            ));
        }
        Some(log) => Some(crate::config::log_target(base, &log.path)),
        None => None,
    };
    let tracing = gateway.tracing.map(|t| tracing_config(&file, t)).transpose()?;
    Ok(Config {
        file,
        access_log,
        session_store,
        admin,
        listen,
        tls,
        limits: defaults,
        max_outbound_in_flight: gateway.max_outbound_in_flight.max(1),
        plugin_cache,
        registries,
        plugin_trust,
        watch: gateway.watch,
        tracing,
        paths: gateway.paths.over(crate::config::PathOptions::default()),
        client_timeouts: ClientTimeouts {
            head: Duration::from_millis(gateway.client_head_timeout_ms.max(1)),
            send: Duration::from_millis(gateway.client_send_timeout_ms.max(1)),
        },
        apis,
    })
}

pub(super) fn server_tls(file: &Path, base: &Path, tls: TlsFile) -> Result<ServerTls, ConfigError> {
    if tls.certificates.is_empty() {
        return Err(ConfigError::new(
            file,
            Some("tls.certificates".into()),
            "list at least one { cert, key } pair",
        ));
    }
    let client_auth = match (&tls.client_ca, tls.client_auth) {
        (None, None) => tls::ClientAuth::Off,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                file,
                Some("tls.client_auth".into()),
                "client certificates need a client_ca to verify them against",
            ));
        }
        (Some(_), Some(ClientAuthFile::Optional)) => tls::ClientAuth::Optional,
        (Some(_), Some(ClientAuthFile::Required) | None) => tls::ClientAuth::Required,
    };
    let settings = tls::ListenerSettings {
        listen: tls.listen,
        certificates: tls
            .certificates
            .into_iter()
            .map(|c| tls::CertKeyPaths {
                cert: base.join(c.cert),
                key: base.join(c.key),
            })
            .collect(),
        client_ca: tls.client_ca.map(|p| base.join(p)),
        client_auth,
        watch_interval: Duration::from_millis(tls.watch_interval_ms),
    };
    ServerTls::load(&settings).map_err(|e| tls_error(file, e))
}

/// A certificate problem as a configuration error: the field that names
/// the file, the file and the reason.
pub(super) fn tls_error(file: &Path, e: tls::TlsError) -> ConfigError {
    ConfigError::new(file, Some(e.field.clone()), e.to_string())
}

pub(super) fn upstream_tls(file: &Path, base: &Path, tls: UpstreamTlsFile) -> Result<ClientTls, ConfigError> {
    let bad = |field: &str, why: &str| {
        Err(ConfigError::new(
            file,
            Some(format!("upstream_tls.{field}")),
            why.to_owned(),
        ))
    };
    let client_cert = match (tls.client_cert, tls.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
        (Some(_), None) => return bad("client_key", "a client_cert needs its client_key"),
        (None, Some(_)) => return bad("client_cert", "a client_key needs its client_cert"),
    };
    if tls.system_roots && tls.ca.is_none() {
        return bad(
            "system_roots",
            "the system's CAs are trusted anyway without `ca`; remove it or add a ca",
        );
    }
    let server_name = match tls.server_name {
        None => None,
        Some(name) => match rustls::pki_types::ServerName::try_from(name.clone()) {
            Ok(server_name) => Some(server_name),
            Err(_) => {
                return bad(
                    "server_name",
                    &format!("{name:?} is not a valid DNS name or IP address"),
                );
            }
        },
    };
    let settings = tls::UpstreamSettings {
        ca: tls.ca.map(|p| base.join(p)),
        system_roots: tls.system_roots,
        client_cert,
        server_name,
    };
    ClientTls::load(&settings).map_err(|e| tls_error(file, e))
}

pub(super) fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("portcullis")
}

/// The `tracing:` block: an http:// collector (`/v1/traces` added to a bare
/// host), a sampling ratio in [0, 1], and headers that may be `env:NAME`.
pub(super) fn tracing_config(file: &Path, t: schema::TracingFile) -> Result<crate::config::TracingConfig, ConfigError> {
    let bad = |sub: &str, why: String| ConfigError::new(file, Some(format!("tracing.{sub}")), why);
    let url: http::Uri = t
        .endpoint
        .parse()
        .map_err(|e| bad("endpoint", format!("invalid URL {:?}: {e}", t.endpoint)))?;
    match url.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "endpoint",
                "https:// collectors are not supported yet: send to a collector on http:// (an agent on the node, a sidecar)".into(),
            ));
        }
        _ => return Err(bad("endpoint", format!("{:?}: expected an http:// URL", t.endpoint))),
    }
    let endpoint = if matches!(url.path(), "" | "/") {
        format!("{}/v1/traces", t.endpoint.trim_end_matches('/'))
    } else {
        t.endpoint.clone()
    };
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        return Err(bad(
            "sampling_ratio",
            format!("{} is not between 0 and 1", t.sampling_ratio),
        ));
    }
    let mut headers = std::collections::BTreeMap::new();
    for (name, value) in t.headers {
        let value = env_or_literal(file, &format!("tracing.headers.{name}"), &value)?;
        headers.insert(name, value);
    }
    Ok(crate::config::TracingConfig {
        endpoint,
        service_name: t.service_name,
        sampling_ratio: t.sampling_ratio,
        headers,
    })
}

/// `value`, or the environment variable it names as `env:VARIABLE`.
pub(super) fn env_or_literal(file: &Path, field: &str, value: &str) -> Result<String, ConfigError> {
    match value.strip_prefix("env:") {
        Some(name) => std::env::var(name).map_err(|_| {
            ConfigError::new(
                file,
                Some(field.to_owned()),
                format!("environment variable {name} is not set"),
            )
        }),
        None => Ok(value.to_owned()),
    }
}

/// `env:NAME` reads the secret from the environment; anything else is the
/// secret itself. Short secrets are refused.
pub(super) fn resolve_secret(file: &Path, secret: &str) -> Result<String, ConfigError> {
    let value = env_or_literal(file, "admin_secret", secret)?;
    if value.len() < 16 {
        return Err(ConfigError::new(
            file,
            Some("admin_secret".into()),
            "must be at least 16 characters",
        ));
    }
    Ok(value)
}

/// `plugin_cache:` resolved: a directory, or `None` when it is off.
fn cache_dir(base: &Path, setting: Option<&CacheSetting>) -> Option<PathBuf> {
    match setting {
        None | Some(CacheSetting::Enabled(true)) => default_cache_dir(),
        Some(CacheSetting::Enabled(false)) => None,
        Some(CacheSetting::Dir(dir)) => Some(base.join(dir)),
    }
}

/// Where `plugin_cache` points by default: `$XDG_CACHE_HOME/portcullis` or
/// `~/.cache/portcullis`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("portcullis"))
}

/// Highest `max_headers`: an HTTP header map holds at most 32768 fields, and
/// the gateway adds its own to what a plugin sets.
pub(super) const MAX_HEADERS_CEILING: usize = 10_000;

pub(super) fn check_limits(file: &Path, field: &str, limits: &Limits) -> Result<(), ConfigError> {
    let bad = |name: &str, why: &str| Err(ConfigError::new(file, Some(format!("{field}.{name}")), why.to_owned()));
    if limits.cpu.is_zero() {
        return bad("cpu_ms", "must be at least 1");
    }
    if limits.timeout.is_zero() {
        return bad("timeout_ms", "must be at least 1");
    }
    if limits.memory_bytes < 1 << 20 {
        return bad("memory_mb", "must be at least 1");
    }
    if !(1..=MAX_HEADERS_CEILING).contains(&limits.max_headers) {
        return bad("max_headers", &format!("must be between 1 and {MAX_HEADERS_CEILING}"));
    }
    if limits.pool_size == 0 {
        return bad("pool_size", "must be at least 1");
    }
    let ceiling = MAX_LIST_BYTES as usize;
    if limits.max_header_bytes > ceiling {
        return bad("max_header_bytes", &format!("must be at most {ceiling}"));
    }
    if limits.max_session_bytes > ceiling {
        return bad("max_session_bytes", &format!("must be at most {ceiling}"));
    }
    Ok(())
}

/// The files an `apis` entry stands for: the file itself, every YAML file in
/// a directory, or the matches of a glob pattern; sorted, never empty.
pub(super) fn expand_api_pattern(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = base.join(pattern);
    let is_yaml = |p: &Path| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"));
    let mut files: Vec<PathBuf> = if full.is_dir() {
        std::fs::read_dir(&full)
            .map_err(|e| format!("cannot read directory {}: {e}", full.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_yaml(p))
            .collect()
    } else if full.is_file() {
        vec![full.clone()]
    } else if pattern.contains(['*', '?', '[']) {
        let text = full
            .to_str()
            .ok_or_else(|| format!("pattern {pattern:?} is not valid UTF-8"))?;
        glob::glob(text)
            .map_err(|e| format!("invalid glob pattern {pattern:?}: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else {
        return Err(format!("no such file or directory: {}", full.display()));
    };
    if files.is_empty() {
        return Err(format!(
            "{pattern:?} matches no API definition files (looked in {})",
            full.display()
        ));
    }
    files.sort();
    Ok(files)
}
