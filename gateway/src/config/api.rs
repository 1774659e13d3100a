//! Loading one API file: its endpoints, hooks and plugin references, each
//! reference's path, pin, config and fallback resolved and checked.

use super::*;

pub(super) fn fallback(file: &Path, field: &str, fallback: FallbackFile) -> Result<Fallback, ConfigError> {
    let bad = |sub: &str, why: String| ConfigError::new(file, Some(format!("{field}.{sub}")), why);
    let status = crate::framing::final_status(fallback.status).map_err(|why| bad("status", why))?;
    let mut headers = http::HeaderMap::new();
    for (name, value) in &fallback.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("headers", format!("invalid header name {name:?}")))?;
        if crate::framing::is_gateway_owned(&name) {
            return Err(bad(
                &format!("headers.{name}"),
                "the gateway computes framing and connection headers; remove it".to_owned(),
            ));
        }
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| bad("headers", format!("invalid value for header {name}")))?;
        headers.append(name, value);
    }
    Ok(Fallback {
        status,
        headers,
        body: fallback.body.into(),
    })
}

pub(super) fn load_api(
    file: &Path,
    gateway: &GatewayFile,
    defaults: &Limits,
    gateway_trust: &Arc<TrustPolicy>,
) -> Result<ApiConfig, ConfigError> {
    let mut api: ApiFile = parse_yaml(file)?;
    let plugin_trust = match api.plugin_trust.take() {
        None => Arc::clone(gateway_trust),
        written => Arc::new(trust(
            file,
            file.parent().unwrap_or(Path::new("/")),
            written,
            Some(gateway_trust),
        )?),
    };
    let base = file.parent().unwrap_or(Path::new("/"));
    let allow = parse_allow(&api.outbound.allow);
    let hook_scope = fan_out::Scope {
        allow: &allow,
        params: None,
    };

    let mut endpoints = Vec::with_capacity(api.endpoints.len());
    for (i, endpoint) in api.endpoints.into_iter().enumerate() {
        let field = format!("endpoints[{i}]");
        let methods = endpoint.method.map(|m| {
            m.into_vec()
                .into_iter()
                .map(|m| http::Method::from_bytes(m.0.as_bytes()).expect("validated as upper-case ASCII"))
                .collect()
        });
        let params: Vec<&str> = fan_out::template_params(&endpoint.path.0)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let headers = header_transforms(file, &format!("{field}.headers"), endpoint.headers, &params)?;
        let does_something = endpoint.plugin.is_some()
            || endpoint.rate_limit.is_some()
            || endpoint.deny
            || endpoint.respond.is_some()
            || endpoint.skip_auth
            || endpoint.rewrite.is_some()
            || endpoint.upstream_method.is_some()
            || !headers.is_empty()
            || endpoint.upstream_timeout_ms.is_some()
            || endpoint.max_request_body_bytes.is_some();
        // Under `unmatched: reject` an endpoint that only lists a path is
        // an allow-list entry.
        if !does_something && api.unmatched != Unmatched::Reject {
            return Err(ConfigError::new(
                file,
                Some(field),
                "an endpoint needs something to do: a `plugin`, a `rate_limit`, `deny`, `respond`, `skip_auth`, `rewrite`, `upstream_method`, `headers` or a limit (or the API's `unmatched: reject`, which makes it an allow-list entry)",
            ));
        }
        if endpoint.deny && (endpoint.plugin.is_some() || endpoint.respond.is_some()) {
            return Err(ConfigError::new(
                file,
                Some(format!("{field}.deny")),
                "a denied endpoint refuses every request: its plugin or response would never run",
            ));
        }
        let rewrite = endpoint
            .rewrite
            .map(|r| policy::rewrite(file, &format!("{field}.rewrite"), r, &params))
            .transpose()?;
        let respond = endpoint
            .respond
            .map(|r| fallback(file, &format!("{field}.respond"), r))
            .transpose()?;
        let plugin = endpoint
            .plugin
            .map(|p| {
                let scope = fan_out::Scope {
                    allow: &allow,
                    params: Some(fan_out::template_params(&endpoint.path.0)),
                };
                resolve_plugin(file, base, &format!("{field}.plugin"), p, defaults, &scope)
            })
            .transpose()?;
        endpoints.push(EndpointConfig {
            methods,
            path: endpoint.path.0,
            plugin,
            rate_limit: endpoint.rate_limit.map(RateLimit::from),
            policy: EndpointPolicy {
                deny: endpoint.deny,
                respond,
                skip_auth: endpoint.skip_auth,
                rewrite,
                upstream_method: endpoint
                    .upstream_method
                    .map(|m| http::Method::from_bytes(m.0.as_bytes()).expect("validated as upper-case ASCII")),
                headers,
                upstream_timeout: endpoint.upstream_timeout_ms.map(Duration::from_millis),
                max_request_body_bytes: endpoint.max_request_body_bytes,
            },
        });
    }

    let resolve_list = |hook: &str, plugins: Vec<PluginFile>| -> Result<Vec<PluginRef>, ConfigError> {
        plugins
            .into_iter()
            .enumerate()
            .map(|(i, p)| resolve_plugin(file, base, &format!("plugins.{hook}[{i}]"), p, defaults, &hook_scope))
            .collect()
    };
    let hooks_file = api.plugins;
    let auth = match (api.auth, hooks_file.auth) {
        (AuthFile::Plugin, Some(plugin)) if plugin.on_error == OnError::Continue => {
            return Err(ConfigError::new(
                file,
                Some("plugins.auth.on_error".into()),
                "an auth plugin cannot fail open (`continue` would let unauthenticated callers in); use `fail`, optionally with a fallback",
            ));
        }
        (AuthFile::Plugin, Some(plugin)) => AuthConfig::Plugin(Box::new(resolve_plugin(
            file,
            base,
            "plugins.auth",
            plugin,
            defaults,
            &hook_scope,
        )?)),
        (AuthFile::Plugin, None) => {
            return Err(ConfigError::new(
                file,
                Some("auth".into()),
                "auth type `plugin` needs a plugin under plugins.auth",
            ));
        }
        (_, Some(_)) => {
            return Err(ConfigError::new(
                file,
                Some("plugins.auth".into()),
                "an auth plugin runs only with `auth: { type: plugin }`",
            ));
        }
        (AuthFile::Keyless, None) => AuthConfig::Keyless,
        (AuthFile::Jwt(jwt), None) => AuthConfig::Jwt(Box::new(policy::jwt(file, base, *jwt)?)),
        (AuthFile::ApiKey { header, query }, None) => AuthConfig::ApiKey {
            header: http::HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()).map_err(|_| {
                ConfigError::new(
                    file,
                    Some("auth.header".into()),
                    format!("invalid header name {header:?}"),
                )
            })?,
            query,
        },
    };
    let hooks = HooksConfig {
        pre: resolve_list("pre", hooks_file.pre)?,
        post_auth: resolve_list("post_auth", hooks_file.post_auth)?,
        post: resolve_list("post", hooks_file.post)?,
        response: resolve_list("response", hooks_file.response)?,
    };

    let (upstreams, default_upstream) = upstream::load(file, api.upstream, api.upstreams)?;
    let routing = RoutingPolicy {
        names: upstreams.iter().enumerate().map(|(i, u)| (u.name.clone(), i)).collect(),
        origins: upstreams
            .iter()
            .flat_map(|u| u.targets.iter().map(|t| t.url.clone()))
            .collect(),
        allow: parse_allow(&api.routing.allow),
    };
    let upstream_tls = api.upstream_tls.map(|t| upstream_tls(file, base, t)).transpose()?;
    let mut listen_path = api.listen_path.0;
    if !listen_path.ends_with('/') {
        listen_path.push('/');
    }
    Ok(ApiConfig {
        file: file.to_owned(),
        name: api.name.unwrap_or_else(|| api.id.0.clone()),
        id: api.id.0,
        listen_path,
        strip_listen_path: api.strip_listen_path,
        upstreams,
        default_upstream,
        routing,
        timeouts: UpstreamTimeouts {
            head: Duration::from_millis(api.upstream_timeout_ms.unwrap_or(gateway.upstream_timeout_ms)),
            read: Duration::from_millis(
                api.upstream_read_timeout_ms
                    .unwrap_or(gateway.upstream_read_timeout_ms)
                    .max(1),
            ),
            total: api
                .upstream_total_timeout_ms
                .or(gateway.upstream_total_timeout_ms)
                .map(Duration::from_millis),
        },
        max_request_body_bytes: Some(api.max_request_body_bytes.unwrap_or(gateway.max_request_body_bytes)),
        tunnel_idle_timeout: Duration::from_millis(
            api.tunnel_idle_timeout_ms
                .unwrap_or(gateway.tunnel_idle_timeout_ms)
                .max(1),
        ),
        outbound: OutboundConfig {
            allow,
            timeout: Duration::from_millis(api.outbound.timeout_ms),
        },
        upstream_tls,
        forward_client_cert: api.forward_client_cert,
        paths: api
            .paths
            .over(gateway.paths.over(crate::config::PathOptions::default())),
        unmatched: api.unmatched,
        override_headers: api.override_headers,
        upgrades: api.upgrades.into_iter().map(|p| p.0).collect(),
        transport: api.transport,
        body_timeout: Duration::from_millis(api.body_timeout_ms.unwrap_or(gateway.body_timeout_ms).max(1)),
        config_json: yaml_to_json(file, "config", api.config)?,
        rate_limit: api.rate_limit.map(RateLimit::from),
        plugin_trust,
        cors: api.cors.map(|c| policy::cors(file, c)).transpose()?,
        client_ips: api.client_ips.map(|c| policy::client_ips(file, c)).transpose()?,
        headers: header_transforms(file, "headers", api.headers, &[])?,
        endpoints,
        auth,
        hooks,
    })
}

pub(super) fn parse_allow(entries: &[AllowEntry]) -> Vec<AllowRule> {
    entries
        .iter()
        .map(|a| AllowRule::parse(&a.0).expect("validated while parsing"))
        .collect()
}

pub(super) fn resolve_plugin(
    file: &Path,
    base: &Path,
    field: &str,
    plugin: PluginFile,
    defaults: &Limits,
    scope: &fan_out::Scope<'_>,
) -> Result<PluginRef, ConfigError> {
    let written = plugin.path.to_string_lossy();
    let oci = if written.starts_with("oci://") {
        Some(parse_oci(&written).map_err(|e| ConfigError::new(file, Some(format!("{field}.path")), e))?)
    } else {
        None
    };
    let path = if oci.is_some() {
        PathBuf::new()
    } else {
        base.join(&plugin.path)
    };
    if oci.is_none() && !path.is_file() {
        return Err(ConfigError::new(
            file,
            Some(format!("{field}.path")),
            format!(
                "plugin file not found: {} (paths are relative to the YAML file that names them)",
                path.display()
            ),
        ));
    }
    if plugin.limits.pool_size.is_some() {
        return Err(ConfigError::new(
            file,
            Some(format!("{field}.limits.pool_size")),
            "pool_size is gateway-wide: set it in plugin_limits of the gateway file",
        ));
    }
    let limits = defaults.merged(&plugin.limits);
    check_limits(file, &format!("{field}.limits"), &limits)?;
    if limits.memory_bytes > defaults.memory_bytes {
        return Err(ConfigError::new(
            file,
            Some(format!("{field}.limits.memory_mb")),
            format!(
                "{} MiB is above the gateway's plugin_limits.memory_mb ({} MiB)",
                limits.memory_bytes >> 20,
                defaults.memory_bytes >> 20
            ),
        ));
    }
    let fallback = match plugin.fallback {
        Some(_) if plugin.on_error == OnError::Continue => {
            return Err(ConfigError::new(
                file,
                Some(format!("{field}.fallback")),
                "a fallback response needs `on_error: fail` (with `continue` the request proceeds instead)",
            ));
        }
        Some(f) => Some(fallback(file, &format!("{field}.fallback"), f)?),
        None => None,
    };
    let sha256 = plugin
        .sha256
        .map(|hex| {
            parse_sha256(&hex).ok_or_else(|| {
                ConfigError::new(
                    file,
                    Some(format!("{field}.sha256")),
                    format!("{hex:?} is not a SHA-256 digest: expected 64 hexadecimal digits"),
                )
            })
        })
        .transpose()?;
    let fan_out = plugin
        .fan_out
        .map(|f| fan_out::resolve(file, &format!("{field}.fan_out"), f, scope, &limits))
        .transpose()?;
    Ok(PluginRef {
        fallback,
        sha256,
        fan_out,
        oci,
        path: if path.as_os_str().is_empty() {
            path
        } else {
            std::path::absolute(&path).unwrap_or(path)
        },
        function: plugin.function,
        config_json: yaml_to_json(file, &format!("{field}.config"), plugin.config)?,
        limits,
        on_error: plugin.on_error,
        reuse: plugin.reuse.map_or(1, std::num::NonZeroU32::get),
        file: file.to_owned(),
        field: field.to_owned(),
    })
}

/// A digest written as 64 hexadecimal digits (either case).
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(digest)
}
