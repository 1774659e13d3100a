//! A Tyk OAS API definition: an OpenAPI document with the gateway's
//! settings under `x-tyk-api-gateway` (`info`, `upstream`, `server`,
//! `middleware.global`, `middleware.operations` by operationId).

use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;

use super::*;
use crate::plugin_tools::scaffold::Kind;

pub(super) fn import(file: &Path, mut object: Map<String, Value>, report: &mut Report) -> Result<Imported, String> {
    let Some(Value::Object(tyk)) = object.remove("x-tyk-api-gateway") else {
        return Err("`x-tyk-api-gateway` is not an object".into());
    };
    let name = tyk
        .get("info")
        .and_then(|i| i.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let id = slug(
        tyk.get("info")
            .and_then(|i| i.get("id"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(if name.is_empty() { "api" } else { &name }),
    );
    // Where each operation is: operationId -> (path, method).
    let mut operations: Vec<(String, String, String)> = Vec::new();
    if let Some(Value::Object(paths)) = object.get("paths") {
        for (path, item) in paths {
            let Some(item) = item.as_object() else { continue };
            for (method, op) in item {
                if let Some(op_id) = op.get("operationId").and_then(Value::as_str) {
                    operations.push((op_id.to_owned(), path.clone(), method.to_ascii_uppercase()));
                }
            }
        }
    }
    let security_schemes = object
        .get("components")
        .and_then(|c| c.get("securitySchemes"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut api = Mapping::new();
    let mut ports = Vec::new();
    let mut f = Fields::new(tyk, "x-tyk-api-gateway.", &id, report);
    api.insert("id".into(), id.clone().into());
    if !name.is_empty() {
        api.insert("name".into(), name.into());
    }
    if let Some(mut info) = f.nested("info") {
        info.take("id");
        info.take("name");
        info.mapped("id", format!("`id: {id}`"));
        if let Some(mut state) = info.nested("state") {
            if state.object.get("active") == Some(&Value::Bool(false)) {
                state.approximate("active", "inactive in Tyk; imported all the same");
            }
            state.object.remove("active");
            state.finish(&[("internal", "internal APIs are not supported")]);
        }
        info.finish(&[
            ("dbId", "the Dashboard's database id"),
            ("orgId", "Tyk's organisation: Portcullis has no tenants"),
            ("expiration", "API expiry is not supported"),
            ("versioning", "one version per API is imported"),
        ]);
    }
    // server
    let mut server = f.nested("server").ok_or("no `server` (listen path)")?;
    let listen = server.take_object("listenPath").unwrap_or_default();
    let listen_path = listen.get("value").and_then(Value::as_str).unwrap_or("/").to_owned();
    api.insert("listen_path".into(), listen_path.into());
    server.mapped("listenPath.value", "`listen_path`");
    if listen.get("strip").and_then(Value::as_bool) == Some(true) {
        api.insert("strip_listen_path".into(), true.into());
        server.mapped("listenPath.strip", "`strip_listen_path: true`");
    }
    let mut auth_header = "authorization".to_owned();
    let mut keyed = false;
    if let Some(mut authentication) = server.nested("authentication") {
        if authentication.take_bool("enabled") {
            keyed = true;
            let schemes = authentication.take_object("securitySchemes").unwrap_or_default();
            let mut chosen = None;
            for (scheme, settings) in schemes {
                if settings.get("enabled").and_then(Value::as_bool) != Some(true) {
                    continue;
                }
                if chosen.is_some() {
                    authentication.not_mapped(
                        &format!("securitySchemes.{scheme}"),
                        "one authentication method per API: the first is imported",
                    );
                    continue;
                }
                chosen = Some((scheme, settings));
            }
            match chosen {
                Some((scheme, settings)) => {
                    let kind = security_schemes.get(&scheme);
                    let is_jwt = settings.get("signingMethod").is_some()
                        || settings.get("source").is_some()
                        || settings.get("jwksURIs").is_some()
                        || kind.and_then(|k| k.get("bearerFormat")).and_then(Value::as_str) == Some("JWT");
                    let header = settings
                        .get("header")
                        .and_then(|h| h.get("name"))
                        .and_then(Value::as_str)
                        .or_else(|| {
                            kind.filter(|k| k.get("in").and_then(Value::as_str) == Some("header"))
                                .and_then(|k| k.get("name"))
                                .and_then(Value::as_str)
                        })
                        .unwrap_or("Authorization")
                        .to_ascii_lowercase();
                    auth_header = header.clone();
                    let at = format!("securitySchemes.{scheme}");
                    if is_jwt {
                        api.insert("auth".into(), jwt(&settings, &header, &mut authentication, &at));
                    } else {
                        let mut auth = Mapping::new();
                        auth.insert("type".into(), "api_key".into());
                        auth.insert("header".into(), header.clone().into());
                        if let Some(q) = settings
                            .get("query")
                            .filter(|q| q.get("enabled").and_then(Value::as_bool) == Some(true))
                        {
                            let name = q.get("name").and_then(Value::as_str).unwrap_or(&header);
                            auth.insert("query".into(), name.into());
                        }
                        api.insert("auth".into(), Yaml::Mapping(auth));
                        authentication.approximate(
                            &at,
                            format!("`auth: {{ type: api_key, header: {header} }}`: keys are not imported; issue them with `POST /keys`"),
                        );
                        if settings
                            .get("cookie")
                            .and_then(|c| c.get("enabled"))
                            .and_then(Value::as_bool)
                            == Some(true)
                        {
                            authentication.not_mapped(
                                &format!("{at}.cookie"),
                                "API keys are read from a header or a query parameter, not a cookie",
                            );
                        }
                    }
                }
                None => authentication.not_mapped("enabled", "no enabled security scheme"),
            }
        }
        authentication.finish(&[
            (
                "stripAuthorizationData",
                "the credential is forwarded; a `post` plugin can remove it",
            ),
            ("baseIdentityProvider", "one authentication method per API"),
            ("hmac", "HMAC request signing is not built in: write an auth plugin"),
            ("oidc", "use the IdP's JWKS with `auth: { type: jwt }`"),
            ("custom", "custom auth plugins: see middleware.global"),
            ("securityProcessingMode", "one authentication method per API"),
            ("security", "one authentication method per API"),
            ("certificateAuth", "use `transport: mutual_tls`"),
        ]);
    }
    if let Some(mut ips) = server.nested("ipAccessControl") {
        if ips.take_bool("enabled") {
            let mut out = Mapping::new();
            for (from, to) in [("allow", "allow"), ("block", "deny")] {
                let list = ips.take_array(from);
                if !list.is_empty() {
                    out.insert(to.into(), yaml(&Value::Array(list)));
                    ips.mapped(from, format!("`client_ips.{to}`"));
                }
            }
            if !out.is_empty() {
                api.insert("client_ips".into(), Yaml::Mapping(out));
            }
        }
        ips.finish(&[]);
    }
    server.finish(&[
        ("slug", "the Dashboard's URL slug"),
        ("clientCertificates", "use `transport: mutual_tls`"),
        ("gatewayTags", "every node serves the APIs its gateway file lists"),
        (
            "customDomain",
            "per-API host names are not supported: Portcullis routes by path",
        ),
        ("detailedActivityLogs", "the access log records every request"),
        (
            "detailedTracing",
            "traces are on for every API with the gateway's `tracing:`",
        ),
        ("eventHandlers", "Tyk's webhooks are not supported"),
        ("contextVariables", "context variables are Tyk's"),
        ("batchProcessing", "Tyk's batch endpoint is not supported"),
        ("port", "every API is served on the gateway's listeners"),
        ("protocol", "HTTP/1.1 and HTTP/2 on the gateway's listeners"),
    ]);

    // upstream
    let mut upstream = f.nested("upstream").ok_or("no `upstream`")?;
    let url = upstream.take_str("url");
    let mut targets = Vec::new();
    if let Some(mut lb) = upstream.nested("loadBalancing") {
        if lb.take_bool("enabled") {
            for t in lb.take_array("targets") {
                if let Some(u) = t.get("url").and_then(Value::as_str) {
                    let weight = t.get("weight").and_then(Value::as_u64).unwrap_or(1).max(1);
                    targets.push(map([("url", u.into()), ("weight", weight.into())]));
                }
            }
            lb.mapped("targets", "`upstream.targets` with their weights");
        }
        lb.finish(&[(
            "skipUnavailableHosts",
            "targets that fail are ejected (`passive`) and retried elsewhere",
        )]);
    }
    if !targets.is_empty() {
        api.insert(
            "upstream".into(),
            map([("targets", Yaml::Sequence(targets)), ("balance", "round_robin".into())]),
        );
    } else {
        let url = url.ok_or("no `upstream.url`")?;
        api.insert("upstream".into(), url.into());
        upstream.mapped("url", "`upstream`");
    }
    if let Some(mut limit) = upstream.nested("rateLimit") {
        if limit.take_bool("enabled") {
            let rate = limit.take_u64("rate").unwrap_or(0);
            let per = limit
                .take_str("per")
                .and_then(|p| humantime::parse_duration(&p).ok())
                .map_or(1, |d| d.as_secs().max(1));
            if rate > 0 {
                api.insert(
                    "rate_limit".into(),
                    map([("rate", rate.into()), ("per", per.into()), ("by", "api".into())]),
                );
                limit.mapped("rate", format!("`rate_limit: {{ rate: {rate}, per: {per}, by: api }}`"));
            }
        }
        limit.finish(&[]);
    }
    if let Some(mut timeout) = upstream.nested("enforceTimeout") {
        if timeout.take_bool("enabled")
            && let Some(seconds) = timeout.take_u64("value")
        {
            api.insert("upstream_timeout_ms".into(), (seconds * 1000).into());
            timeout.mapped("value", "`upstream_timeout_ms`");
        }
        timeout.finish(&[]);
    }
    upstream.finish(&[
        ("serviceDiscovery", "service discovery is not supported: list targets"),
        ("uptimeTests", "add `upstream.health_check` by hand"),
        (
            "mutualTLS",
            "certificates from Tyk's store: set `upstream_tls: { client_cert, client_key }`",
        ),
        ("certificatePinning", "pinning is not supported: set `upstream_tls.ca`"),
        (
            "authentication",
            "upstream authentication is not built in: a `post` plugin can add credentials",
        ),
        ("preserveHostHeader", "the upstream gets its own host in `Host`"),
        ("preserveTrailingSlash", "see `paths.trailing_slash`"),
        (
            "tlsTransport",
            "TLS 1.2 and 1.3 with rustls's defaults; certificates always verified",
        ),
        ("proxy", "an outbound proxy is not supported"),
    ]);

    // middleware
    let mut endpoints: Vec<Yaml> = Vec::new();
    if let Some(mut middleware) = f.nested("middleware") {
        if let Some(mut global) = middleware.nested("global") {
            let driver = global
                .object
                .get("pluginConfig")
                .and_then(|p| p.get("driver"))
                .and_then(Value::as_str)
                .unwrap_or("goplugin")
                .to_owned();
            global.object.remove("pluginConfig");
            let mut hooks = Mapping::new();
            for (keys, hook, kind) in [
                (["prePlugin", "prePlugins"], "pre", Kind::Request),
                (
                    ["postAuthenticationPlugin", "postAuthenticationPlugins"],
                    "post_auth",
                    Kind::Request,
                ),
                (["postPlugin", "postPlugins"], "post", Kind::Request),
                (["responsePlugin", "responsePlugins"], "response", Kind::Response),
            ] {
                let mut refs = Vec::new();
                for key in keys {
                    let items = match global.take(key) {
                        Some(Value::Array(items)) => items,
                        Some(Value::Object(one)) => one
                            .get("plugins")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_else(|| vec![Value::Object(one)]),
                        _ => Vec::new(),
                    };
                    for (i, item) in items.iter().enumerate() {
                        if item.get("enabled").and_then(Value::as_bool) == Some(false) {
                            continue;
                        }
                        let Some(function) = item.get("functionName").and_then(Value::as_str) else {
                            continue;
                        };
                        let p = super::tyk::port_for(function, kind, &driver, &format!("middleware.global.{key}[{i}]"));
                        refs.push(super::tyk::reference_for(&p));
                        global.mapped(&format!("{key}[{i}]"), format!("`plugins.{hook}`: {function}, to port"));
                        ports.push(p);
                    }
                }
                if !refs.is_empty() {
                    hooks.insert(hook.into(), Yaml::Sequence(refs));
                }
            }
            if !hooks.is_empty() {
                api.insert("plugins".into(), Yaml::Mapping(hooks));
            }
            if let Some(cors) = global.take_object("cors")
                && cors.get("enabled").and_then(Value::as_bool) == Some(true)
            {
                api.insert("cors".into(), oas_cors(&cors));
                global.mapped("cors", "`cors:`");
            }
            take_headers(&mut global, &mut api);
            if let Some(limit) = global.take_object("requestSizeLimit")
                && limit.get("enabled").and_then(Value::as_bool) == Some(true)
                && let Some(value) = limit.get("value").and_then(Value::as_u64)
            {
                api.insert("max_request_body_bytes".into(), value.into());
                global.mapped("requestSizeLimit", "`max_request_body_bytes`");
            }
            global.finish(&[
                ("cache", "response caching is not built in"),
                ("contextVariables", "context variables are Tyk's"),
                ("ignoreCase", "paths match case-sensitively"),
                ("trafficLogs", "the access log records every request"),
                ("skipRateLimit", "keys' own limits apply whenever they have them"),
                ("skipQuota", "keys' quotas apply whenever they have them"),
                ("skipQuotaReset", "keys' quotas apply whenever they have them"),
            ]);
        }
        if let Some(ops) = middleware.take_object("operations") {
            let prefix = format!("{}operations.", middleware.prefix);
            for (op_id, settings) in ops {
                let Value::Object(settings) = settings else { continue };
                let Some((_, path, method)) = operations.iter().find(|(id, _, _)| *id == op_id) else {
                    middleware.report.add(
                        &id,
                        &format!("{prefix}{op_id}"),
                        Status::NotMapped,
                        "no operation in `paths` has this operationId".into(),
                    );
                    continue;
                };
                let template = match super::template(path) {
                    Ok((t, _)) => t,
                    Err(why) => {
                        middleware
                            .report
                            .add(&id, &format!("{prefix}{op_id}"), Status::NotMapped, why);
                        continue;
                    }
                };
                let mut op = Fields::new(settings, &format!("{prefix}{op_id}."), &id, middleware.report);
                let mut endpoint = Mapping::new();
                endpoint.insert("method".into(), method.clone().into());
                endpoint.insert("path".into(), template.into());
                operation(&mut op, &mut endpoint, &mut ports, keyed, &auth_header);
                op.finish(&[
                    ("internal", "internal endpoints are not supported"),
                    (
                        "transformRequestBody",
                        "body templates are not built in: a plugin can rewrite the body",
                    ),
                    ("transformResponseBody", "body templates are not built in"),
                    (
                        "virtualEndpoint",
                        "JavaScript virtual endpoints: port as an endpoint plugin",
                    ),
                    ("trackEndpoint", "the access log records every request"),
                    ("doNotTrackEndpoint", "the access log records every request"),
                    (
                        "circuitBreaker",
                        "use the upstream's `passive` ejection and retry budget",
                    ),
                    ("cache", "response caching is not built in"),
                    (
                        "validateRequest",
                        "OAS request validation is not built in: a plugin can validate",
                    ),
                    ("scopeCheck", "map scopes with `claims.tags` and check them in a plugin"),
                    ("exchange", "token exchange is not built in"),
                ]);
                endpoints.push(Yaml::Mapping(endpoint));
            }
            let allow_list = endpoints.iter().any(|e| e.get("allowed").is_some());
            for e in &mut endpoints {
                if let Yaml::Mapping(m) = e {
                    m.remove("allowed");
                }
            }
            if allow_list {
                api.insert("unmatched".into(), "reject".into());
                middleware.report.add(
                    &id,
                    &format!("{prefix}*.allow"),
                    Status::Approximate,
                    "`unmatched: reject`: only allowed operations are served; others get 404 (Tyk answers 403)".into(),
                );
            }
        }
        middleware.finish(&[]);
    }
    if !endpoints.is_empty() {
        api.insert("endpoints".into(), Yaml::Sequence(endpoints));
    }
    f.finish(&[]);
    report.add(
        &id,
        "(OpenAPI document)",
        Status::Mapped,
        "the OpenAPI description places operations on paths; it is not needed to serve them".into(),
    );
    Ok(Imported {
        id,
        source: file.to_owned(),
        api,
        ports,
    })
}

/// One operation's middleware on its endpoint.
fn operation(op: &mut Fields<'_>, endpoint: &mut Mapping, ports: &mut Vec<Port>, keyed: bool, auth_header: &str) {
    let enabled = |o: &Map<String, Value>| o.get("enabled").and_then(Value::as_bool) == Some(true);
    if let Some(allow) = op.take_object("allow")
        && enabled(&allow)
    {
        endpoint.insert("allowed".into(), true.into());
        op.mapped("allow", "listed endpoint (with `unmatched: reject`)");
    }
    if let Some(block) = op.take_object("block")
        && enabled(&block)
    {
        endpoint.insert("deny".into(), true.into());
        op.mapped("block", "`deny: true` (403)");
    }
    if let Some(ignore) = op.take_object("ignoreAuthentication")
        && enabled(&ignore)
    {
        endpoint.insert("skip_auth".into(), true.into());
        op.mapped("ignoreAuthentication", "`skip_auth: true`");
    }
    if let Some(mock) = op.take_object("mockResponse")
        && enabled(&mock)
    {
        let mut respond = Mapping::new();
        respond.insert(
            "status".into(),
            mock.get("code").and_then(Value::as_u64).unwrap_or(200).into(),
        );
        if let Some(Value::Array(headers)) = mock.get("headers") {
            let mut h = Mapping::new();
            for header in headers {
                if let (Some(n), Some(v)) = (
                    header.get("name").and_then(Value::as_str),
                    header.get("value").and_then(Value::as_str),
                ) {
                    h.insert(n.into(), v.into());
                }
            }
            if !h.is_empty() {
                respond.insert("headers".into(), Yaml::Mapping(h));
            }
        }
        if let Some(body) = mock.get("body").and_then(Value::as_str).filter(|b| !b.is_empty()) {
            respond.insert("body".into(), body.into());
        }
        endpoint.insert("respond".into(), Yaml::Mapping(respond));
        if mock.get("fromOASExamples").is_some_and(|v| !is_default(v)) {
            op.approximate(
                "mockResponse",
                "`respond` with the given body; answers from the OpenAPI examples are not generated",
            );
        } else {
            op.mapped("mockResponse", "`respond`");
        }
    }
    take_headers(op, endpoint);
    if let Some(rewrite) = op.take_object("urlRewrite")
        && enabled(&rewrite)
    {
        let pattern = rewrite.get("pattern").and_then(Value::as_str).unwrap_or_default();
        let to = rewrite.get("rewriteTo").and_then(Value::as_str).unwrap_or_default();
        if to.contains("://") || regex::Regex::new(pattern).is_err() || pattern.is_empty() {
            op.not_mapped(
                "urlRewrite",
                format!("{pattern:?} -> {to:?}: another host, or a pattern the gateway does not accept"),
            );
        } else {
            let to = if to.starts_with('/') {
                to.to_owned()
            } else {
                format!("/{to}")
            };
            endpoint.insert("rewrite".into(), map([("match", pattern.into()), ("to", to.into())]));
            if rewrite.get("triggers").is_some_and(|t| !is_default(t)) {
                op.approximate("urlRewrite", "`rewrite: { match, to }`; its triggers are not mapped");
            } else {
                op.mapped("urlRewrite", "`rewrite: { match, to }`");
            }
        }
    }
    if let Some(timeout) = op.take_object("enforceTimeout")
        && enabled(&timeout)
        && let Some(seconds) = timeout.get("value").and_then(Value::as_u64)
    {
        endpoint.insert("upstream_timeout_ms".into(), (seconds * 1000).into());
        op.mapped("enforceTimeout", "`upstream_timeout_ms`");
    }
    if let Some(limit) = op.take_object("requestSizeLimit")
        && enabled(&limit)
        && let Some(value) = limit.get("value").and_then(Value::as_u64)
    {
        endpoint.insert("max_request_body_bytes".into(), value.into());
        op.mapped("requestSizeLimit", "`max_request_body_bytes`");
    }
    if let Some(method) = op.take_object("transformRequestMethod")
        && enabled(&method)
        && let Some(to) = method.get("toMethod").and_then(Value::as_str)
    {
        endpoint.insert("upstream_method".into(), to.to_ascii_uppercase().into());
        op.mapped("transformRequestMethod", "`upstream_method`");
    }
    if let Some(limit) = op.take_object("rateLimit")
        && enabled(&limit)
    {
        let rate = limit.get("rate").and_then(Value::as_u64).unwrap_or(0);
        let per = limit
            .get("per")
            .and_then(Value::as_str)
            .and_then(|p| humantime::parse_duration(p).ok())
            .map_or(1, |d| d.as_secs().max(1));
        let by = if keyed {
            format!("header:{auth_header}")
        } else {
            "api".into()
        };
        endpoint.insert(
            "rate_limit".into(),
            map([("rate", rate.into()), ("per", per.into()), ("by", by.clone().into())]),
        );
        op.mapped(
            "rateLimit",
            format!("`rate_limit: {{ rate: {rate}, per: {per}, by: {by} }}`"),
        );
    }
    if let Some(Value::Array(plugins)) = op.take("postPlugins")
        && let Some(function) = plugins
            .iter()
            .filter(|p| p.get("enabled").and_then(Value::as_bool) != Some(false))
            .find_map(|p| p.get("functionName").and_then(Value::as_str))
    {
        let p = super::tyk::port_for(function, Kind::Request, "goplugin", &op.path("postPlugins"));
        endpoint.insert("plugin".into(), super::tyk::reference_for(&p));
        op.mapped("postPlugins", format!("endpoint `plugin`: {function}, to port"));
        ports.push(p);
    }
}

/// `cors` of `middleware.global`.
fn oas_cors(cors: &Map<String, Value>) -> Yaml {
    let list = |key: &str| -> Option<Yaml> {
        let items = cors.get(key)?.as_array()?;
        (!items.is_empty()).then(|| yaml(&Value::Array(items.clone())))
    };
    let mut out = Mapping::new();
    out.insert(
        "origins".into(),
        list("allowedOrigins").unwrap_or_else(|| Yaml::Sequence(vec!["*".into()])),
    );
    for (from, to) in [
        ("allowedMethods", "methods"),
        ("allowedHeaders", "headers"),
        ("exposedHeaders", "expose_headers"),
    ] {
        if let Some(v) = list(from) {
            out.insert(to.into(), v);
        }
    }
    if cors.get("allowCredentials").and_then(Value::as_bool) == Some(true) {
        out.insert("credentials".into(), true.into());
    }
    if let Some(age) = cors.get("maxAge").and_then(Value::as_u64).filter(|a| *a > 0) {
        out.insert("max_age_s".into(), age.into());
    }
    if cors.get("optionsPassthrough").and_then(Value::as_bool) == Some(true) {
        out.insert("preflight_passthrough".into(), true.into());
    }
    Yaml::Mapping(out)
}

/// The header transforms of `f` (global or an operation) as `headers:`
/// in `into`.
fn take_headers(f: &mut Fields<'_>, into: &mut Mapping) {
    let mut headers = Mapping::new();
    for (key, side) in [
        ("transformRequestHeaders", "request"),
        ("transformResponseHeaders", "response"),
    ] {
        if let Some(t) = f.take_object(key)
            && let Some(changes) = oas_headers(&t)
        {
            headers.insert(side.into(), changes);
            f.mapped(key, format!("`headers.{side}`"));
        }
    }
    if !headers.is_empty() {
        into.insert("headers".into(), Yaml::Mapping(headers));
    }
}

/// `transformRequestHeaders`/`transformResponseHeaders`: `add` is a list
/// of `{name, value}`, `remove` a list of names.
fn oas_headers(t: &Map<String, Value>) -> Option<Yaml> {
    if t.get("enabled").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let mut changes = Mapping::new();
    if let Some(Value::Array(remove)) = t.get("remove").filter(|v| !is_default(v)) {
        changes.insert("remove".into(), yaml(&Value::Array(remove.clone())));
    }
    if let Some(Value::Array(add)) = t.get("add") {
        let mut set = Mapping::new();
        for h in add {
            if let (Some(n), Some(v)) = (
                h.get("name").and_then(Value::as_str),
                h.get("value").and_then(Value::as_str),
            ) {
                set.insert(n.into(), v.into());
            }
        }
        if !set.is_empty() {
            changes.insert("set".into(), Yaml::Mapping(set));
        }
    }
    (!changes.is_empty()).then_some(Yaml::Mapping(changes))
}

/// A JWT security scheme of Tyk OAS as `auth: { type: jwt }`.
fn jwt(settings: &Value, header: &str, f: &mut Fields<'_>, at: &str) -> Yaml {
    let method = settings.get("signingMethod").and_then(Value::as_str).unwrap_or("rsa");
    let algorithms: Vec<Yaml> = match method {
        "hmac" => vec!["HS256".into(), "HS384".into(), "HS512".into()],
        "ecdsa" => vec!["ES256".into(), "ES384".into()],
        _ => vec!["RS256".into(), "RS384".into(), "RS512".into()],
    };
    let mut auth = Mapping::new();
    auth.insert("type".into(), "jwt".into());
    if header != "authorization" {
        auth.insert("header".into(), header.into());
    }
    auth.insert("algorithms".into(), Yaml::Sequence(algorithms));
    let uri = settings
        .get("jwksURIs")
        .and_then(Value::as_array)
        .and_then(|u| u.first())
        .and_then(|u| u.get("url"))
        .and_then(Value::as_str);
    let source = settings.get("source").and_then(Value::as_str).unwrap_or_default();
    let decoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(source.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
    };
    if let Some(url) = uri {
        auth.insert("jwks_url".into(), url.into());
    } else if let Some(text) = decoded.as_deref().map(str::trim) {
        if text.starts_with("http") {
            auth.insert("jwks_url".into(), text.into());
        } else if text.starts_with("-----BEGIN") {
            auth.insert("public_keys".into(), Yaml::Sequence(vec![text.into()]));
        } else if method == "hmac" {
            auth.insert("secret".into(), source.into());
            auth.insert("secret_base64".into(), true.into());
        }
    }
    let mut claims = Mapping::new();
    if let Some(field) = settings
        .get("identityBaseField")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
    {
        claims.insert("key_id".into(), field.into());
    }
    if !claims.is_empty() {
        auth.insert("claims".into(), Yaml::Mapping(claims));
    }
    for (from, to) in [("allowedIssuers", "issuers"), ("allowedAudiences", "audiences")] {
        if let Some(Value::Array(items)) = settings.get(from).filter(|v| !is_default(v)) {
            auth.insert(to.into(), yaml(&Value::Array(items.clone())));
        }
    }
    let leeway = [
        "issuedAtValidationSkew",
        "notBeforeValidationSkew",
        "expiresAtValidationSkew",
    ]
    .iter()
    .filter_map(|k| settings.get(*k).and_then(Value::as_u64))
    .max();
    if let Some(leeway) = leeway {
        auth.insert("leeway_s".into(), leeway.into());
    }
    f.approximate(
        at,
        "`auth: { type: jwt }` with its algorithms, key source, identity claim, issuers, audiences and leeway; Tyk policies from claims are not imported (map rate and quota with `claims`)",
    );
    Yaml::Mapping(auth)
}
