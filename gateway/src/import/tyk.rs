//! The classic Tyk API definition (`proxy`, `version_data`,
//! `extended_paths`, `custom_middleware`), field by field.

use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;

use super::*;
use crate::plugin_tools::scaffold::Kind;

/// Fields of the definition Portcullis knows and does not map, and why.
const NOT_MAPPED: &[(&str, &str)] = &[
    ("org_id", "Tyk's organisation: Portcullis has no tenants"),
    ("slug", "the Dashboard's URL slug: no behaviour in the gateway"),
    ("id", "the Dashboard's database id"),
    (
        "expiration",
        "API expiry: not supported; remove the API file when it should stop",
    ),
    (
        "listen_port",
        "a per-API port: Portcullis serves every API on its listeners (`listen`, `tls`)",
    ),
    (
        "protocol",
        "per-API protocol: Portcullis serves HTTP/1.1 and HTTP/2 (h2c and TLS) on its listeners",
    ),
    ("enable_proxy_protocol", "the PROXY protocol is not supported"),
    (
        "use_oauth2",
        "Tyk's OAuth server is not supported: use `auth: { type: jwt }` with your IdP's JWKS, or an auth plugin",
    ),
    ("oauth_meta", "Tyk's OAuth server is not supported"),
    (
        "external_oauth",
        "external OAuth introspection is not built in: write an auth plugin (outbound HTTP to the introspection endpoint)",
    ),
    (
        "use_openid",
        "OpenID Connect via Tyk's provider list: use `auth: { type: jwt }` with the IdP's JWKS URL",
    ),
    ("openid_options", "see use_openid"),
    ("use_basic_auth", "basic auth is not built in: write an auth plugin"),
    ("basic_auth", "see use_basic_auth"),
    (
        "enable_signature_checking",
        "HMAC request signing is not built in: write an auth plugin",
    ),
    ("hmac_allowed_clock_skew", "see enable_signature_checking"),
    ("hmac_allowed_algorithms", "see enable_signature_checking"),
    (
        "request_signing",
        "signing upstream requests is not built in: a `post` plugin can sign",
    ),
    (
        "use_mutual_tls_auth",
        "client certificates as keys: use `transport: mutual_tls` with the gateway's `tls.client_ca` (the certificate is verified, not looked up as a key)",
    ),
    ("client_certificates", "see use_mutual_tls_auth"),
    (
        "upstream_certificates",
        "certificates from Tyk's store, by id: export them and set `upstream_tls: { client_cert, client_key }`",
    ),
    (
        "pinned_public_keys",
        "public key pinning is not supported: set `upstream_tls.ca` to trust only the upstream's CA",
    ),
    (
        "certificates",
        "the listener's certificates live in the gateway file's `tls:` (by SNI)",
    ),
    ("cache_options", "response caching is not built in"),
    (
        "session_lifetime",
        "sessions of built-in keys live until their `expires`",
    ),
    ("session_lifetime_respects_key_expiration", "see session_lifetime"),
    (
        "event_handlers",
        "Tyk's webhooks on events are not supported: use the access log and metrics",
    ),
    (
        "enable_batch_request_support",
        "Tyk's batch endpoint is not supported: a plugin with a host-run fan-out can aggregate",
    ),
    (
        "response_processors",
        "response processors are Tyk's; header transforms map, body transforms do not",
    ),
    (
        "domain",
        "per-API host names are not supported: Portcullis routes by path",
    ),
    (
        "do_not_track",
        "analytics are Tyk's; Portcullis writes an access log and metrics for every API",
    ),
    ("enable_detailed_recording", "see do_not_track"),
    ("analytics_plugin", "see do_not_track"),
    (
        "detailed_tracing",
        "traces are on for every API with the gateway's `tracing:`",
    ),
    (
        "tags",
        "Tyk's node segmentation: every Portcullis node serves the APIs its gateway file lists",
    ),
    ("tag_headers", "see do_not_track"),
    (
        "enable_context_vars",
        "context variables are Tyk's: header transforms use {request_id}, {client_ip}, {api_id}, {method}, {path} and path parameters",
    ),
    (
        "strip_auth_data",
        "the credential is forwarded to the upstream; a `post` plugin can remove it",
    ),
    ("graphql", "GraphQL proxying and federation are not supported"),
    (
        "upstream_auth",
        "upstream authentication is not built in: a `post` plugin can add credentials",
    ),
    (
        "error_overrides",
        "error bodies are the gateway's JSON; a plugin's `fallback` or a response hook can change them",
    ),
    ("dont_set_quota_on_create", "keys are issued with the admin API"),
    ("expire_analytics_after", "see do_not_track"),
    ("notifications", "Tyk's key notifications are not supported"),
    ("auth_provider", "Tyk's auth provider plugins are not supported"),
    ("session_provider", "Tyk's session provider plugins are not supported"),
    (
        "base_identity_provided_by",
        "with several auth methods: Portcullis takes one per API",
    ),
    ("auth_configs", "per-method auth settings beyond `authToken` and `jwt`"),
    ("is_oas", "Tyk OAS bookkeeping"),
    (
        "security_requirements",
        "several auth methods at once: Portcullis takes one per API",
    ),
    ("security_requirement_scopes", "see security_requirements"),
    (
        "scopes",
        "JWT scope-to-policy mapping: Tyk policies are not imported; map scopes with `claims.tags`",
    ),
    ("jwt_scope_to_policy_mapping", "see scopes"),
    ("jwt_scope_claim_name", "see scopes"),
    (
        "jwt_default_policies",
        "Tyk policies are not imported: a token's own claims give its rate and quota (`claims`)",
    ),
    (
        "jwt_policy_field_name",
        "Tyk policies are not imported: map rate and quota claims with `auth.claims`",
    ),
    ("jwt_client_base_field", "see jwt_policy_field_name"),
    (
        "jwt_skip_kid",
        "keys are chosen by `kid` when the token has one, else every key of its kind is tried",
    ),
    ("idp_client_id_mapping_disabled", "see jwt_policy_field_name"),
    ("allowed_access_types", "Tyk's OAuth server is not supported"),
    ("allowed_authorize_types", "Tyk's OAuth server is not supported"),
    ("auth_login_redirect", "Tyk's OAuth server is not supported"),
    ("disable_caching", "response caching is not built in"),
    ("cache_ttl", "response caching is not built in"),
    ("extract_from_body", "credentials from the body: write an auth plugin"),
    ("body_user_regexp", "see extract_from_body"),
    ("body_password_regexp", "see extract_from_body"),
    ("json_rpc_version", "JSON-RPC (MCP) APIs are not supported"),
    ("application_protocol", "see json_rpc_version"),
    ("uptime_tests", "see proxy.check_host_against_uptime_tests"),
    (
        "custom_middleware_bundle",
        "bundles are Tyk's plugin packaging: plugins load from files or OCI registries",
    ),
    ("custom_middleware_bundle_disabled", "see custom_middleware_bundle"),
    ("config_data_disabled", "see config_data"),
    ("global_rate_limit", "malformed"),
    (
        "definition",
        "versioning by header, query or URL: only one version is imported",
    ),
    ("ip_access_control_disabled", "see enable_ip_whitelisting"),
    ("upstream_certificates_disabled", "see upstream_certificates"),
    ("certificate_pinning_disabled", "see pinned_public_keys"),
    ("domain_disabled", "see domain"),
    ("tags_disabled", "see tags"),
    ("error_overrides_disabled", "see error_overrides"),
    ("custom_plugin_auth_enabled", "see custom_middleware.auth_check"),
];

/// Imports one classic definition.
pub(super) fn import(file: &Path, object: Map<String, Value>, report: &mut Report) -> Result<Imported, String> {
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let raw_id = object
        .get("api_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| file.file_stem().unwrap_or_default().to_string_lossy().into_owned());
    let id = slug(&if raw_id.chars().all(|c| c.is_ascii_digit()) && !name.is_empty() {
        format!("{name}-{raw_id}")
    } else {
        raw_id.clone()
    });
    let mut f = Fields::new(object, "", &id, report);
    let mut api = Mapping::new();
    let mut ports = Vec::new();
    f.take("api_id");
    f.mapped("api_id", format!("`id: {id}`"));
    api.insert("id".into(), id.clone().into());
    if let Some(name) = f.take_str("name") {
        api.insert("name".into(), name.into());
        f.mapped("name", "`name`");
    }
    if let Some(active) = f.object.remove("active")
        && active == Value::Bool(false)
    {
        f.approximate(
            "active",
            "the API is inactive in Tyk; it is imported, and served once its file is listed",
        );
    }

    // Versioning settings mean nothing on an API that is not versioned.
    let not_versioned = f
        .object
        .get("version_data")
        .and_then(|v| v.get("not_versioned"))
        .and_then(Value::as_bool)
        == Some(true);
    if not_versioned && f.object.remove("definition").is_some() {
        f.report.defaults += 1;
    }

    // proxy
    let Some(mut proxy) = f.nested("proxy") else {
        return Err("no `proxy` (listen path and target)".into());
    };
    let listen_path = proxy.take_str("listen_path").unwrap_or_else(|| "/".into());
    proxy.mapped("listen_path", "`listen_path` (prefix match, as in Tyk)");
    let strip = proxy.take_bool("strip_listen_path");
    if strip {
        proxy.mapped("strip_listen_path", "`strip_listen_path: true`");
    }
    let target = proxy.take_str("target_url");
    let balanced = proxy.take_bool("enable_load_balancing");
    let targets: Vec<String> = proxy
        .take_array("target_list")
        .into_iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    let upstream = if balanced && !targets.is_empty() {
        proxy.mapped("enable_load_balancing", "`upstream.targets`, `balance: round_robin`");
        proxy.mapped("target_list", format!("{} targets", targets.len()));
        if target.is_some() {
            proxy.mapped("target_url", "unused while load balancing, as in Tyk");
        }
        map([
            (
                "targets",
                Yaml::Sequence(targets.iter().map(|t| t.clone().into()).collect()),
            ),
            ("balance", "round_robin".into()),
        ])
    } else {
        let Some(target) = target else {
            return Err("no `proxy.target_url`".into());
        };
        proxy.mapped("target_url", "`upstream`");
        if !targets.is_empty() {
            proxy.not_mapped(
                "target_list",
                "load balancing is off in Tyk (`enable_load_balancing: false`)",
            );
        }
        target.into()
    };
    if proxy.take_bool("preserve_host_header") {
        proxy.not_mapped(
            "preserve_host_header",
            "the upstream gets its own host in `Host` and the client's in `X-Forwarded-Host`",
        );
    }
    if proxy.take_bool("disable_strip_slash") {
        proxy.approximate(
            "disable_strip_slash",
            "paths are canonicalised (`//` merged) by default; set `paths: { merge_slashes: false }` to keep them",
        );
    }
    if proxy.take_bool("check_host_against_uptime_tests") {
        proxy.approximate(
            "check_host_against_uptime_tests",
            "add `upstream.health_check: { path: ... }` (uptime test definitions are not imported)",
        );
    }
    if let Some(mut transport) = proxy.nested("transport") {
        if transport.take_bool("ssl_insecure_skip_verify") {
            transport.not_mapped(
                "ssl_insecure_skip_verify",
                "Portcullis always verifies upstream certificates: give the upstream's CA in `upstream_tls.ca`",
            );
        }
        for (key, why) in [
            ("ssl_ciphers", "cipher suites are rustls's safe defaults"),
            ("ssl_min_version", "TLS 1.2 and 1.3 only (rustls)"),
            ("ssl_max_version", "TLS 1.2 and 1.3 only (rustls)"),
            (
                "ssl_force_common_name_check",
                "certificates are checked against their subject alternative names",
            ),
            ("proxy_url", "an outbound proxy is not supported"),
        ] {
            if transport.take(key).is_some() {
                transport.not_mapped(key, why);
            }
        }
        transport.finish(&[]);
    }
    proxy.finish(&[
        (
            "service_discovery",
            "service discovery is not supported: list targets, with DNS names re-resolved every `dns_refresh_ms`",
        ),
        (
            "ssl_insecure_skip_verify",
            "Portcullis always verifies upstream certificates",
        ),
    ]);
    api.insert("listen_path".into(), listen_path.into());
    if strip {
        api.insert("strip_listen_path".into(), true.into());
    }
    api.insert("upstream".into(), upstream);

    // Authentication
    let keyless = f.take_bool("use_keyless");
    let standard = f.take_bool("use_standard_auth");
    let jwt = f.take_bool("enable_jwt");
    let coprocess_auth = f.take_bool("enable_coprocess_auth") | f.take_bool("use_go_plugin_auth");
    let auth_block = f.take_object("auth");
    let auth_token = f
        .object
        .get("auth_configs")
        .and_then(|c| c.get("authToken"))
        .and_then(Value::as_object)
        .cloned();
    let auth_settings = auth_token.or(auth_block.clone());
    let header_of = |settings: &Option<Map<String, Value>>| {
        settings
            .as_ref()
            .and_then(|a| a.get("auth_header_name"))
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .unwrap_or("Authorization")
            .to_ascii_lowercase()
    };
    let mut middleware = f.take_object("custom_middleware");
    let auth_check_plugin = middleware.as_mut().and_then(|m| m.remove("auth_check"));
    let driver = middleware
        .as_ref()
        .and_then(|m| m.get("driver"))
        .and_then(Value::as_str)
        .unwrap_or("goplugin")
        .to_owned();
    if keyless {
        f.mapped("use_keyless", "`auth: { type: keyless }` (the default)");
        if auth_block.is_some() {
            f.mapped("auth", "unused on a keyless API");
        }
    } else if jwt {
        let auth = jwt_auth(&mut f, &header_of(&auth_settings));
        api.insert("auth".into(), auth);
    } else if coprocess_auth {
        match auth_check_plugin
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
        {
            Some(function) => {
                let port = port_for(function, Kind::Auth, &driver, "custom_middleware.auth_check");
                api.insert("auth".into(), map([("type", "plugin".into())]));
                api.insert("plugins".into(), map([("auth", reference_for(&port))]));
                f.mapped(
                    "enable_coprocess_auth",
                    format!("`auth: {{ type: plugin }}` with `plugins.auth` ({function}, to port)"),
                );
                ports.push(port);
            }
            None => f.not_mapped(
                "enable_coprocess_auth",
                "no `custom_middleware.auth_check` names the function",
            ),
        }
    } else {
        // Tyk's default: an auth token in a header.
        let header = header_of(&auth_settings);
        let mut auth = Mapping::new();
        auth.insert("type".into(), "api_key".into());
        auth.insert("header".into(), header.clone().into());
        let settings = auth_settings.clone().unwrap_or_default();
        if settings.get("use_param").and_then(Value::as_bool) == Some(true) {
            let param = settings
                .get("param_name")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .unwrap_or(&header);
            auth.insert("query".into(), param.into());
        }
        api.insert("auth".into(), Yaml::Mapping(auth));
        let what = if standard { "use_standard_auth" } else { "auth" };
        f.approximate(
            what,
            format!(
                "`auth: {{ type: api_key, header: {header} }}`: keys live in Tyk's Redis and are not imported; issue them with `POST /keys` on the admin API (hashed, with the same rate, quota and access rights)"
            ),
        );
        if settings.get("use_cookie").and_then(Value::as_bool) == Some(true) {
            f.not_mapped(
                "auth.use_cookie",
                "API keys are read from a header or a query parameter, not a cookie",
            );
        }
    }
    if auth_block.is_some() && (jwt || coprocess_auth) {
        f.report.defaults += 1;
    }
    f.object.remove("auth_configs");
    for key in [
        "jwt_signing_method",
        "jwt_source",
        "jwt_jwks_uris",
        "jwt_identity_base_field",
        "jwt_issued_at_validation_skew",
        "jwt_expires_at_validation_skew",
        "jwt_not_before_validation_skew",
    ] {
        if !jwt && f.take(key).is_some() {
            f.not_mapped(key, "JWT is not enabled (`enable_jwt: false`)");
        }
    }

    // Limits and access
    if let Some(mut limit) = f.nested("global_rate_limit") {
        let rate = limit.take_u64("rate");
        let per = limit.take_u64("per");
        if limit.take_bool("disabled") {
            limit.not_mapped("disabled", "the limit is disabled in Tyk");
        } else if let (Some(rate), Some(per)) = (rate, per) {
            let per = per.max(1);
            api.insert(
                "rate_limit".into(),
                map([("rate", rate.into()), ("per", per.into()), ("by", "api".into())]),
            );
            limit.mapped("rate", format!("`rate_limit: {{ rate: {rate}, per: {per}, by: api }}`: every caller together, across nodes sharing a Redis"));
        }
        limit.finish(&[]);
    }
    if let Some(mut cors) = f.nested("CORS") {
        if cors.take_bool("enable") {
            let list = |cors: &mut Fields<'_>, key: &str| -> Vec<Yaml> {
                cors.take_array(key)
                    .into_iter()
                    .filter_map(|v| v.as_str().map(|s| s.into()))
                    .collect()
            };
            let mut out = Mapping::new();
            let origins = list(&mut cors, "allowed_origins");
            out.insert(
                "origins".into(),
                Yaml::Sequence(if origins.is_empty() { vec!["*".into()] } else { origins }),
            );
            let methods = list(&mut cors, "allowed_methods");
            if !methods.is_empty() {
                out.insert("methods".into(), Yaml::Sequence(methods));
            }
            let headers = list(&mut cors, "allowed_headers");
            if !headers.is_empty() {
                out.insert("headers".into(), Yaml::Sequence(headers));
            }
            let exposed = list(&mut cors, "exposed_headers");
            if !exposed.is_empty() {
                out.insert("expose_headers".into(), Yaml::Sequence(exposed));
            }
            if cors.take_bool("allow_credentials") {
                out.insert("credentials".into(), true.into());
            }
            if let Some(age) = cors.take_u64("max_age") {
                out.insert("max_age_s".into(), age.into());
            }
            if cors.take_bool("options_passthrough") {
                out.insert("preflight_passthrough".into(), true.into());
            }
            cors.take("debug");
            cors.mapped(
                "enable",
                "`cors:` with its origins, methods, headers, exposed headers, credentials, max age and passthrough",
            );
            api.insert("cors".into(), Yaml::Mapping(out));
        }
        cors.finish(&[]);
    }
    let mut ips = Mapping::new();
    let allowed: Vec<Value> = if f.take_bool("enable_ip_whitelisting") {
        f.take_array("allowed_ips")
    } else {
        Vec::new()
    };
    if !allowed.is_empty() {
        ips.insert("allow".into(), yaml(&Value::Array(allowed)));
        f.mapped("allowed_ips", "`client_ips.allow` (the connection's peer address)");
    }
    let denied: Vec<Value> = if f.take_bool("enable_ip_blacklisting") {
        f.take_array("blacklisted_ips")
    } else {
        Vec::new()
    };
    if !denied.is_empty() {
        ips.insert("deny".into(), yaml(&Value::Array(denied)));
        f.mapped("blacklisted_ips", "`client_ips.deny`");
    }
    if !ips.is_empty() {
        api.insert("client_ips".into(), Yaml::Mapping(ips));
    }
    for key in ["allowed_ips", "blacklisted_ips"] {
        if f.take(key).is_some() {
            f.not_mapped(key, "the list is not enabled in Tyk");
        }
    }
    if f.take_bool("disable_rate_limit") {
        f.approximate(
            "disable_rate_limit",
            "keys' own rate limits apply whenever a key has one: issue keys without `rate`",
        );
    }
    if f.take_bool("disable_quota") {
        f.approximate(
            "disable_quota",
            "keys' quotas apply whenever a key has one: issue keys with `quota_max: -1`",
        );
    }
    if f.take_bool("internal") {
        f.not_mapped("internal", "internal (looped-only) APIs are not supported: the API is served publicly; remove its file or restrict it with client_ips");
    }
    if let Some(config) = f.take("config_data") {
        api.insert("config".into(), yaml(&config));
        f.mapped("config_data", "`config`, handed to every plugin as `api.config`");
    }

    // Middleware
    let mut hooks = match api.remove("plugins") {
        Some(Yaml::Mapping(m)) => m,
        _ => Mapping::new(),
    };
    if let Some(middleware) = middleware {
        let mut m = Fields::new(middleware, "custom_middleware.", &id, f.report);
        m.take("driver");
        for (key, hook, kind) in [
            ("pre", "pre", Kind::Request),
            ("post_key_auth", "post_auth", Kind::Request),
            ("post", "post", Kind::Request),
            ("response", "response", Kind::Response),
        ] {
            let list = m.take_array(key);
            let mut refs = Vec::new();
            for (i, item) in list.into_iter().enumerate() {
                let disabled = item.get("disabled").and_then(Value::as_bool) == Some(true);
                let Some(function) = item.get("name").and_then(Value::as_str) else {
                    continue;
                };
                if disabled {
                    m.not_mapped(&format!("{key}[{i}]"), format!("{function} is disabled in Tyk"));
                    continue;
                }
                let port = port_for(function, kind, &driver, &format!("custom_middleware.{key}[{i}]"));
                refs.push(reference_for(&port));
                m.mapped(
                    &format!("{key}[{i}]"),
                    format!("`plugins.{hook}`: {function} ({driver}), to port"),
                );
                ports.push(port);
            }
            if !refs.is_empty() {
                hooks.insert(hook.into(), Yaml::Sequence(refs));
            }
        }
        if auth_check_plugin.is_some() && !coprocess_auth {
            m.not_mapped(
                "auth_check",
                "custom auth is not enabled (`enable_coprocess_auth: false`)",
            );
        }
        m.finish(&[
            (
                "id_extractor",
                "Tyk's credential cache for custom auth: an auth plugin runs on every request",
            ),
            (
                "traffic_logs",
                "traffic log plugins are not supported: use the access log",
            ),
        ]);
    }
    if !hooks.is_empty() {
        api.insert("plugins".into(), Yaml::Mapping(hooks));
    }

    // Versions and their paths
    let mut endpoints: Vec<Yaml> = Vec::new();
    if let Some(mut versions) = f.nested("version_data") {
        versions.take("not_versioned");
        versions.take("default_version");
        let mut all = versions.take_object("versions").unwrap_or_default();
        let chosen = ["Default", "default", ""]
            .iter()
            .find_map(|k| all.remove_entry(*k))
            .or_else(|| {
                let first = all.keys().next()?.clone();
                all.remove_entry(&first)
            });
        for other in all.keys() {
            versions.not_mapped(
                &format!("versions.{other}"),
                "one version per API is imported: import it again into another API (listen path) if it is still served",
            );
        }
        if let Some((name, Value::Object(version))) = chosen {
            let mut v = Fields::new(version, &format!("version_data.versions.{name}."), &id, versions.report);
            let keyed = !keyless;
            endpoints = version_paths(&mut v, &mut api, &mut ports, keyed, &header_of(&auth_settings));
            v.take("name");
            v.take("use_extended_paths");
            v.take("expires");
            v.finish(&[
                ("paths", "the pre-2.x path lists: use extended_paths"),
                ("override_target", "a per-version target: only one version is imported"),
                ("ignore_endpoint_case", "paths match case-sensitively (RFC 3986)"),
            ]);
        }
        versions.finish(&[]);
    }
    if !endpoints.is_empty() {
        api.insert("endpoints".into(), Yaml::Sequence(endpoints));
    }
    f.finish(NOT_MAPPED);
    Ok(Imported {
        id,
        source: file.to_owned(),
        api,
        ports,
    })
}

/// `enable_jwt` and its `jwt_*` fields as `auth: { type: jwt }`.
fn jwt_auth(f: &mut Fields<'_>, header: &str) -> Yaml {
    let method = f.take_str("jwt_signing_method").unwrap_or_else(|| "rsa".into());
    let algorithms: Vec<Yaml> = match method.as_str() {
        "hmac" => ["HS256", "HS384", "HS512"].as_slice(),
        "rsa" => ["RS256", "RS384", "RS512"].as_slice(),
        "ecdsa" => ["ES256", "ES384"].as_slice(),
        _ => ["RS256"].as_slice(),
    }
    .iter()
    .map(|a| (*a).into())
    .collect();
    let mut auth = Mapping::new();
    auth.insert("type".into(), "jwt".into());
    if header != "authorization" {
        auth.insert("header".into(), header.into());
    }
    auth.insert("algorithms".into(), Yaml::Sequence(algorithms));
    f.mapped("enable_jwt", "`auth: { type: jwt }`");
    f.mapped("jwt_signing_method", format!("`algorithms` for {method}"));
    let uris: Vec<String> = f
        .take_array("jwt_jwks_uris")
        .into_iter()
        .filter_map(|u| u.get("url").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let source = f.take_str("jwt_source");
    let decoded = source.as_deref().and_then(|s| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()
    });
    let decoded_text = decoded
        .as_deref()
        .and_then(|d| std::str::from_utf8(d).ok())
        .map(str::trim);
    if let Some(url) = uris.first() {
        auth.insert("jwks_url".into(), url.clone().into());
        f.mapped("jwt_jwks_uris", "`jwks_url` (the first)");
        if uris.len() > 1 {
            f.approximate("jwt_jwks_uris", "only the first JWKS URL is used");
        }
    } else if let Some(text) = decoded_text.filter(|t| t.starts_with("http://") || t.starts_with("https://")) {
        auth.insert("jwks_url".into(), text.into());
        f.mapped("jwt_source", "`jwks_url`");
    } else if let Some(text) = decoded_text.filter(|t| t.starts_with("-----BEGIN")) {
        auth.insert("public_keys".into(), Yaml::Sequence(vec![text.into()]));
        f.mapped("jwt_source", "`public_keys` (the PEM key)");
    } else if let (Some(source), "hmac") = (&source, method.as_str()) {
        auth.insert("secret".into(), source.clone().into());
        auth.insert("secret_base64".into(), true.into());
        f.mapped(
            "jwt_source",
            "`secret` with `secret_base64: true`; consider `secret: env:NAME` instead of the secret in the file",
        );
        if decoded.as_ref().is_some_and(|d| d.len() < 32) {
            f.not_mapped(
                "jwt_source",
                "the HMAC secret is under 32 bytes: Portcullis refuses it; use a longer one",
            );
        }
    } else if source.is_some() {
        f.not_mapped(
            "jwt_source",
            "neither a base64 PEM key nor a JWKS URL: set `public_keys` or `jwks_url` by hand",
        );
    } else {
        f.not_mapped(
            "jwt_source",
            "no key source: the gateway takes keys from the token's policy in Tyk; set `jwks_url` or `public_keys`",
        );
    }
    if let Some(field) = f.take_str("jwt_identity_base_field") {
        auth.insert("claims".into(), map([("key_id", field.into())]));
        f.mapped("jwt_identity_base_field", "`claims.key_id`");
    }
    let skews = [
        "jwt_issued_at_validation_skew",
        "jwt_expires_at_validation_skew",
        "jwt_not_before_validation_skew",
    ]
    .map(|k| f.take_u64(k));
    if let Some(leeway) = skews.iter().flatten().max() {
        auth.insert("leeway_s".into(), (*leeway).into());
        f.approximate(
            "jwt_expires_at_validation_skew",
            format!("`leeway_s: {leeway}`, one leeway for exp, nbf and iat"),
        );
    }
    Yaml::Mapping(auth)
}

/// A plugin to port, named after its function.
pub(super) fn port_for(function: &str, kind: Kind, driver: &str, origin: &str) -> Port {
    let mut name = slug(function);
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "p-");
    }
    Port {
        name,
        function: function.to_owned(),
        kind,
        driver: match driver {
            "goplugin" => "Go plugin",
            "python" => "Python",
            "lua" => "Lua",
            "otto" => "JavaScript (otto)",
            "grpc" => "gRPC",
            other => other,
        }
        .to_owned(),
        origin: origin.to_owned(),
    }
}

/// The reference to a plugin to port, from an API file under `apis/`.
pub(super) fn reference_for(port: &Port) -> Yaml {
    map([
        ("path", format!("../plugins/{}.wasm", port.name).into()),
        ("function", port.function.clone().into()),
    ])
}

/// One endpoint being built: its template and methods, and its fields.
struct Endpoint {
    path: String,
    method: Option<String>,
    fields: Mapping,
}

/// The version's `extended_paths` and global settings as endpoints and
/// API-wide policies.
fn version_paths(
    v: &mut Fields<'_>,
    api: &mut Mapping,
    ports: &mut Vec<Port>,
    keyed: bool,
    auth_header: &str,
) -> Vec<Yaml> {
    // Global header transforms.
    let mut request = Mapping::new();
    let mut response = Mapping::new();
    if let Some(Value::Object(set)) = v.take("global_headers") {
        request.insert("set".into(), yaml(&Value::Object(set)));
        v.mapped("global_headers", "`headers.request.set`");
    }
    if let Some(Value::Array(remove)) = v.take("global_headers_remove") {
        request.insert("remove".into(), yaml(&Value::Array(remove)));
        v.mapped("global_headers_remove", "`headers.request.remove`");
    }
    if let Some(Value::Object(set)) = v.take("global_response_headers") {
        response.insert("set".into(), yaml(&Value::Object(set)));
        v.mapped("global_response_headers", "`headers.response.set`");
    }
    if let Some(Value::Array(remove)) = v.take("global_response_headers_remove") {
        response.insert("remove".into(), yaml(&Value::Array(remove)));
        v.mapped("global_response_headers_remove", "`headers.response.remove`");
    }
    let mut headers = Mapping::new();
    if !request.is_empty() {
        headers.insert("request".into(), Yaml::Mapping(request));
    }
    if !response.is_empty() {
        headers.insert("response".into(), Yaml::Mapping(response));
    }
    if !headers.is_empty() {
        api.insert("headers".into(), Yaml::Mapping(headers));
    }
    if let Some(size) = v.take_u64("global_size_limit") {
        api.insert("max_request_body_bytes".into(), size.into());
        v.mapped("global_size_limit", "`max_request_body_bytes`");
    }
    if let Some(seconds) = v.take_u64("global_enforce_timeout") {
        api.insert("upstream_timeout_ms".into(), (seconds * 1000).into());
        v.mapped("global_enforce_timeout", "`upstream_timeout_ms`");
    }
    for key in [
        "global_headers_disabled",
        "global_response_headers_disabled",
        "global_size_limit_disabled",
        "global_enforce_timeout_disabled",
    ] {
        v.take(key);
    }

    let mut list: Vec<Endpoint> = Vec::new();
    let Some(extended) = v.take_object("extended_paths") else {
        return Vec::new();
    };
    let prefix = format!("{}extended_paths.", v.prefix);
    let api_id = v.api.clone();
    let mut e = Fields::new(extended, &prefix, &api_id, v.report);
    let mut prefix_noted = false;
    // Each section: its entries, each made into changes on an endpoint.
    let sections = [
        "white_list",
        "black_list",
        "ignored",
        "mock_response",
        "transform_headers",
        "transform_response_headers",
        "url_rewrites",
        "hard_timeouts",
        "size_limits",
        "method_transforms",
        "rate_limit",
        "go_plugin",
        "virtual",
    ];
    let mut allow_list = false;
    for section in sections {
        let entries = e.take_array(section);
        for (i, entry) in entries.into_iter().enumerate() {
            let at = format!("{section}[{i}]");
            let Value::Object(entry) = entry else { continue };
            if entry.get("disabled").and_then(Value::as_bool) == Some(true) {
                e.not_mapped(&at, "disabled in Tyk");
                continue;
            }
            let Some(raw_path) = entry.get("path").and_then(Value::as_str) else {
                e.not_mapped(&at, "no `path`");
                continue;
            };
            let (path, exact) = match template(raw_path) {
                Ok(t) => t,
                Err(why) => {
                    e.not_mapped(&at, why);
                    continue;
                }
            };
            let is_prefix = !exact && path != "/" && !path.ends_with("{*rest}");
            // A denied path is denied with everything under it, as Tyk's
            // prefix match denies it; elsewhere the whole-path template is
            // the narrower (safer) reading.
            let paths = if section == "black_list" && is_prefix {
                vec![path.clone(), format!("{}/{{*rest}}", path.trim_end_matches('/'))]
            } else {
                vec![path.clone()]
            };
            if is_prefix && section != "black_list" && !prefix_noted {
                prefix_noted = true;
                e.approximate(
                    &at,
                    "Tyk matches endpoint paths as prefixes (`/users` also matches `/users/1`); Portcullis templates match the whole path: add `/{*rest}` endpoints where sub-paths should match (denied paths are imported with their sub-paths)",
                );
            }
            // White list entries carry their methods in `method_actions`.
            let methods: Vec<Option<String>> =
                if section == "white_list" || section == "black_list" || section == "ignored" {
                    let actions = entry.get("method_actions").and_then(Value::as_object);
                    match actions {
                        Some(actions) if !actions.is_empty() => {
                            actions.keys().map(|m| Some(m.to_ascii_uppercase())).collect()
                        }
                        _ => vec![
                            entry
                                .get("method")
                                .and_then(Value::as_str)
                                .filter(|m| !m.is_empty())
                                .map(|m| m.to_ascii_uppercase()),
                        ],
                    }
                } else {
                    vec![
                        entry
                            .get("method")
                            .and_then(Value::as_str)
                            .filter(|m| !m.is_empty())
                            .map(|m| m.to_ascii_uppercase()),
                    ]
                };
            for (path, method) in paths.iter().flat_map(|p| methods.iter().map(move |m| (p, m.clone()))) {
                let endpoint = match list.iter_mut().position(|x| x.path == *path && x.method == method) {
                    Some(k) => &mut list[k],
                    None => {
                        list.push(Endpoint {
                            path: path.clone(),
                            method: method.clone(),
                            fields: Mapping::new(),
                        });
                        list.last_mut().expect("just pushed")
                    }
                };
                let note = apply(
                    section,
                    &entry,
                    method.as_deref(),
                    endpoint,
                    ports,
                    keyed,
                    auth_header,
                    &at,
                );
                match note {
                    Ok((status, note)) => e.report.add(&api_id, &format!("{prefix}{at}"), status, note),
                    Err(why) => e.not_mapped(&at, why),
                }
            }
            if section == "white_list" {
                allow_list = true;
            }
        }
    }
    if allow_list {
        api.insert("unmatched".into(), "reject".into());
        e.report.add(
            &api_id,
            &format!("{prefix}white_list"),
            Status::Approximate,
            "`unmatched: reject`: only the listed endpoints are served; others get 404 (Tyk answers 403)".into(),
        );
    }
    e.finish(&[
        ("cache", "response caching is not built in"),
        ("advance_cache_config", "response caching is not built in"),
        (
            "transform",
            "body templates are not built in: a plugin can rewrite the body",
        ),
        (
            "transform_response",
            "body templates are not built in: a response plugin can rewrite the body",
        ),
        (
            "transform_jq",
            "jq transforms are not built in: a plugin can rewrite the body",
        ),
        ("transform_jq_response", "jq transforms are not built in"),
        (
            "circuit_breakers",
            "per-endpoint circuit breakers: use the upstream's `passive` ejection and retry budget",
        ),
        (
            "validate_json",
            "JSON schema validation of bodies is not built in: a plugin can validate",
        ),
        ("validate_request", "OAS request validation is not built in"),
        ("internal", "internal endpoints are not supported"),
        (
            "track_endpoints",
            "analytics are Tyk's; the access log records every request",
        ),
        ("do_not_track_endpoints", "analytics are Tyk's"),
        ("persist_graphql", "GraphQL is not supported"),
    ]);
    list.into_iter()
        .map(|endpoint| {
            let mut m = Mapping::new();
            if let Some(method) = endpoint.method {
                m.insert("method".into(), method.into());
            }
            m.insert("path".into(), endpoint.path.into());
            for (k, v) in endpoint.fields {
                m.insert(k, v);
            }
            Yaml::Mapping(m)
        })
        .collect()
}

/// One `extended_paths` entry's effect on its endpoint; the report's status
/// and note.
#[allow(clippy::too_many_arguments)]
fn apply(
    section: &str,
    entry: &Map<String, Value>,
    method: Option<&str>,
    endpoint: &mut Endpoint,
    ports: &mut Vec<Port>,
    keyed: bool,
    auth_header: &str,
    at: &str,
) -> Result<(Status, String), String> {
    let fields = &mut endpoint.fields;
    let text = |key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let number = |key: &str| entry.get(key).and_then(Value::as_u64);
    Ok(match section {
        "white_list" => {
            let reply = method
                .and_then(|m| entry.get("method_actions")?.get(m))
                .filter(|a| a.get("action").and_then(Value::as_str) == Some("reply"));
            if let Some(reply) = reply {
                fields.insert("respond".into(), mock(reply, "code", "data"));
                (
                    Status::Mapped,
                    "listed, with `respond` (the method action's reply)".into(),
                )
            } else {
                (Status::Mapped, "listed endpoint".into())
            }
        }
        "black_list" => {
            fields.insert("deny".into(), true.into());
            (Status::Mapped, "`deny: true` (403)".into())
        }
        "ignored" => {
            fields.insert("skip_auth".into(), true.into());
            (Status::Mapped, "`skip_auth: true`".into())
        }
        "mock_response" => {
            fields.insert("respond".into(), mock(&Value::Object(entry.clone()), "code", "body"));
            (Status::Mapped, "`respond` (status, headers, body)".into())
        }
        "transform_headers" | "transform_response_headers" => {
            let side = if section == "transform_headers" {
                "request"
            } else {
                "response"
            };
            let mut changes = Mapping::new();
            if let Some(Value::Array(remove)) = entry.get("delete_headers").filter(|v| !is_default(v)) {
                changes.insert("remove".into(), yaml(&Value::Array(remove.clone())));
            }
            let mut note = format!("`headers.{side}`");
            if let Some(Value::Object(add)) = entry.get("add_headers").filter(|v| !is_default(v)) {
                if add.values().any(|v| v.as_str().is_some_and(|s| s.contains('$'))) {
                    note.push_str("; `$tyk_context`/`$tyk_meta` values are copied as they are: rewrite them with {request_id}, {client_ip} or a plugin");
                }
                changes.insert("set".into(), yaml(&Value::Object(add.clone())));
            }
            let headers = fields
                .entry("headers".into())
                .or_insert_with(|| Yaml::Mapping(Mapping::new()));
            if let Yaml::Mapping(headers) = headers {
                headers.insert(side.into(), Yaml::Mapping(changes));
            }
            let status = if note.contains('$') {
                Status::Approximate
            } else {
                Status::Mapped
            };
            (status, note)
        }
        "url_rewrites" => {
            let pattern = text("match_pattern");
            let to = text("rewrite_to");
            if pattern.is_empty() || to.is_empty() {
                return Err("no match_pattern or rewrite_to".into());
            }
            if regex::Regex::new(&pattern).is_err() {
                return Err(format!(
                    "match_pattern {pattern:?} is not a regular expression the gateway accepts"
                ));
            }
            let triggers = entry.get("triggers").is_some_and(|t| !is_default(t));
            let to = if to.contains("://") {
                return Err(format!(
                    "rewrite_to {to:?} names another host: route with `upstreams` and a plugin, or a separate API"
                ));
            } else if to.starts_with('/') {
                to
            } else {
                format!("/{to}")
            };
            fields.insert("rewrite".into(), map([("match", pattern.into()), ("to", to.into())]));
            if triggers {
                (
                    Status::Approximate,
                    "`rewrite: { match, to }`; its triggers (conditional rewrites) are not mapped".into(),
                )
            } else {
                (Status::Mapped, "`rewrite: { match, to }` on the upstream path".into())
            }
        }
        "hard_timeouts" => {
            let seconds = number("timeout").ok_or("no timeout")?;
            fields.insert("upstream_timeout_ms".into(), (seconds * 1000).into());
            (Status::Mapped, "`upstream_timeout_ms` (504 past it)".into())
        }
        "size_limits" => {
            let size = number("size_limit").ok_or("no size_limit")?;
            fields.insert("max_request_body_bytes".into(), size.into());
            (Status::Mapped, "`max_request_body_bytes` (413 above it)".into())
        }
        "method_transforms" => {
            let to = text("to_method").to_ascii_uppercase();
            if to.is_empty() {
                return Err("no to_method".into());
            }
            fields.insert("upstream_method".into(), to.into());
            (Status::Mapped, "`upstream_method`".into())
        }
        "rate_limit" => {
            let (rate, per) = (number("rate").ok_or("no rate")?, number("per").ok_or("no per")?.max(1));
            let by = if keyed {
                format!("header:{auth_header}")
            } else {
                "api".into()
            };
            fields.insert(
                "rate_limit".into(),
                map([("rate", rate.into()), ("per", per.into()), ("by", by.clone().into())]),
            );
            (
                Status::Mapped,
                format!("`rate_limit: {{ rate: {rate}, per: {per}, by: {by} }}`"),
            )
        }
        "go_plugin" | "virtual" => {
            let function = if section == "go_plugin" {
                text("func_name")
            } else {
                text("response_function_name")
            };
            if function.is_empty() {
                return Err("no function name".into());
            }
            let tyk_driver = if section == "go_plugin" { "goplugin" } else { "otto" };
            let port = port_for(&function, Kind::Request, tyk_driver, &format!("extended_paths.{at}"));
            fields.insert("plugin".into(), reference_for(&port));
            ports.push(port);
            (Status::Mapped, format!("endpoint `plugin`: {function}, to port"))
        }
        _ => return Err(format!("{section}: not handled")),
    })
}

/// A mock response's status, headers and body as `respond`.
fn mock(value: &Value, code_key: &str, body_key: &str) -> Yaml {
    let code = value.get(code_key).and_then(Value::as_u64).unwrap_or(200);
    let mut respond = Mapping::new();
    respond.insert("status".into(), code.into());
    if let Some(Value::Object(headers)) = value.get("headers").filter(|h| !is_default(h)) {
        respond.insert("headers".into(), yaml(&Value::Object(headers.clone())));
    }
    let body = value.get(body_key).and_then(Value::as_str).unwrap_or_default();
    if !body.is_empty() {
        respond.insert("body".into(), body.into());
    }
    Yaml::Mapping(respond)
}
