//! The admin API, on its own listener (`admin_listen`), like Tyk's control
//! API: list the APIs, manage keys, reload. Every request must carry the
//! admin secret in `X-Admin-Secret` (401 without it, 403 when wrong), except
//! the two read-only routes for probes and scrapers, `GET /health` and
//! `GET /metrics`. None of these routes exist on the public listener.
//!
//! | route | does |
//! |---|---|
//! | `GET /health` | `{"status":"ok","apis":N,...}` with the configuration's digest and load time (no secret) |
//! | `GET /metrics` | Prometheus metrics, text format (no secret) |
//! | `GET /apis` | APIs with auth, hooks, endpoints and plugins |
//! | `GET /keys` | every stored session: API keys' and auth plugins' (by key id) |
//! | `POST /keys` | create a key from a session; answers the key, once |
//! | `GET /keys/{key}` | the key's session and remaining quota; `{key}` may also be the key id of a session an auth plugin created |
//! | `PUT /keys/{key}` | replace the key's session |
//! | `DELETE /keys/{key}` | revoke the key, or delete an auth plugin's session by key id |
//! | `POST /reload` | reload the configuration (like SIGHUP); `?cluster=true`: every node on the same Redis |
//! | `GET /cluster` | the nodes seen in the last minute: configuration digest, last reload |
//! | `GET /livez`, `GET /readyz` | probes (no secret): the process serves; it should get traffic, or why not |
//! | `GET /dashboard` | the dashboard page ([`super::dashboard`]); `GET /dashboard/state` its data |
//!
//! A browser cannot add `X-Admin-Secret` to a page it navigates to, so the
//! secret is also taken as HTTP Basic credentials' password (any user
//! name); without either, the answer asks for Basic credentials.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde_json::{Value, json};

use crate::control::cluster::{BroadcastError, Control, Trigger};
use crate::server::Gateway;
use crate::server::auth;
use crate::server::routes::{ApiRoute, Auth};
use crate::store::{self, SessionData, StoreError};

const SECRET_HEADER: &str = "x-admin-secret";

#[derive(Clone)]
struct Admin {
    control: Arc<Control>,
    gateway: Arc<Gateway>,
    secret: Arc<str>,
}

/// The admin app.
pub fn router(control: Arc<Control>, secret: &str) -> axum::Router {
    let state = Admin {
        gateway: Arc::clone(control.gateway()),
        control,
        secret: secret.into(),
    };
    axum::Router::new()
        .route("/apis", get(list_apis))
        .route("/upstreams", get(list_upstreams))
        .route("/keys", post(create_key).get(list_keys))
        .route("/keys/{key}", get(read_key).put(update_key).delete(delete_key))
        .route("/reload", post(reload))
        .route("/cluster", get(cluster))
        .route("/dashboard", get(super::dashboard::page))
        .route("/dashboard/state", get(dashboard_state))
        .route("/dashboard/app.js", get(super::dashboard::script))
        .route("/dashboard/app.css", get(super::dashboard::style))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin route") })
        .layer(middleware::from_fn_with_state(state.clone(), require_secret))
        // Added after the layer: probes and scrapers send no secret.
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health(State(admin): State<Admin>) -> Response {
    let report = admin.control.report();
    Json(json!({
        "status": "ok",
        "apis": admin.gateway.routes().apis().len(),
        "node": report.id,
        "config": { "hash": report.config_hash, "loaded_at": report.loaded_at_text() },
        "last_reload": report.last_reload,
    }))
    .into_response()
}

/// `GET /livez`: the process serves. (A gateway stuck past this point
/// is for a restart; nothing it depends on is checked here.)
async fn livez() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// How long `/readyz` waits for the session store.
const STORE_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /readyz`: whether this node should get traffic. It answers once
/// the configuration is loaded, its plugins compiled and the listeners
/// bound (the admin listener starts after them); it is not ready while the
/// session store its keyed or limited APIs need does not answer, nor
/// once a shutdown began. 503 names the reason.
async fn readyz(State(admin): State<Admin>) -> Response {
    let routes = admin.gateway.routes();
    let mut checks = serde_json::Map::new();
    checks.insert(
        "config".into(),
        json!({ "ok": true, "hash": routes.digest, "apis": routes.apis().len(), "plugins": routes.plugin_count() }),
    );
    checks.insert(
        "tls".into(),
        json!({ "ok": true, "listener": admin.gateway.tls().is_some() }),
    );
    let mut reasons = Vec::new();
    let needing: Vec<&str> = routes.store_needed_by().map(|api| &*api.id).collect();
    if !needing.is_empty() {
        let store = admin.gateway.store();
        let probe = tokio::time::timeout(STORE_PROBE, store.ping()).await;
        let error = match probe {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", STORE_PROBE.as_secs())),
        };
        if let Some(error) = &error {
            reasons.push(format!(
                "session store unreachable ({error}), needed by API(s) {}",
                needing.join(", ")
            ));
        }
        checks.insert(
            "session_store".into(),
            json!({ "ok": error.is_none(), "error": error, "needed_by": needing }),
        );
    }
    if admin.control.is_draining() {
        reasons.push("shutting down: finishing requests in flight".into());
    }
    let ready = reasons.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "reason": (!ready).then(|| reasons.join("; ")),
        "checks": checks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let routes = admin.gateway.routes();
    crate::telemetry::metrics::set_target_states(
        routes
            .apis()
            .iter()
            .flat_map(|api| api.upstreams.groups())
            .flat_map(|group| group.states()),
    );
    let runtime = admin.control.runtime();
    let text = crate::telemetry::metrics::encode(runtime.instances_in_use(), runtime.pool_size());
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message, "status": status.as_u16() }))).into_response()
}

fn store_error(e: StoreError) -> Response {
    tracing::warn!(error = %e, "admin request failed: session store");
    error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
}

/// Compares in time independent of where the strings differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The password of HTTP Basic credentials (`Authorization: Basic
/// base64(user:password)`), when the header holds them.
fn basic_password(headers: &http::HeaderMap) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let encoded = value
        .strip_prefix(b"Basic ")
        .or_else(|| value.strip_prefix(b"basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

async fn require_secret(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let given = match request.headers().get(SECRET_HEADER) {
        Some(value) => Some(value.as_bytes().to_vec()),
        None => basic_password(request.headers()),
    };
    match given {
        None => {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing X-Admin-Secret");
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Basic realm=\"Portcullis admin\", charset=\"UTF-8\""),
            );
            response
        }
        Some(given) if !same_secret(&given, admin.secret.as_bytes()) => {
            tracing::warn!(path = request.uri().path(), "admin request with a wrong secret");
            error(StatusCode::FORBIDDEN, "wrong X-Admin-Secret")
        }
        Some(_) => next.run(request).await,
    }
}

fn describe_api(api: &ApiRoute) -> Value {
    let labels = |plugins: &[crate::plugin::Plugin]| plugins.iter().map(|p| p.label().to_owned()).collect::<Vec<_>>();
    let auth = match &api.auth {
        Auth::Keyless => json!({ "type": "keyless" }),
        Auth::ApiKey { header, query } => json!({ "type": "api_key", "header": header.as_str(), "query": query }),
        Auth::Plugin(plugin) => json!({ "type": "plugin", "plugin": plugin.label() }),
        Auth::Jwt(jwt) => jwt.describe(),
    };
    let endpoints: Vec<Value> = api
        .endpoints()
        .iter()
        .map(|e| {
            json!({
                "methods": e.methods().map(|m| m.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
                "path": e.template,
                "plugin": e.plugin.as_ref().map(|p| p.label()),
                "rate_limit": e.rate_limit.as_ref().map(|l| l.describe()),
                "policies": e.policy.names(),
            })
        })
        .collect();
    json!({
        "id": &*api.id,
        "name": api.record.name,
        "listen_path": api.listen_path,
        "upstream": api.upstreams.default_url(),
        "auth": auth,
        "rate_limit": api.rate_limit.as_ref().map(|l| l.describe()),
        "policies": api.policy_names(),
        "plugins": {
            "pre": labels(&api.hooks.pre),
            "post_auth": labels(&api.hooks.post_auth),
            "post": labels(&api.hooks.post),
            "response": labels(&api.hooks.response),
        },
        "endpoints": endpoints,
        "components": components(api),
    })
}

/// Each plugin the API runs, once: where it came from and the digest that runs.
fn components(api: &ApiRoute) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    api.plugins()
        .filter(|p| seen.insert(p.label().to_owned()))
        .map(|p| {
            json!({
                "plugin": p.label(),
                "source": p.source(),
                "digest": p.digest(),
                "contract": p.contract(),
                "reuse": p.reuse(),
            })
        })
        .collect()
}

/// Every API's upstreams, each target with its state, since when and why.
fn upstreams(admin: &Admin) -> Vec<Value> {
    let routes = admin.gateway.routes();
    routes
        .apis()
        .iter()
        .map(|api| {
            let upstreams: Vec<Value> = api.upstreams.groups().iter().map(|g| g.describe()).collect();
            json!({ "api": &*api.id, "default": api.upstreams.default_name(), "upstreams": upstreams })
        })
        .collect()
}

async fn list_upstreams(State(admin): State<Admin>) -> Response {
    Json(json!({ "apis": upstreams(&admin) })).into_response()
}

fn apis(admin: &Admin) -> Vec<Value> {
    let routes = admin.gateway.routes();
    let mut apis: Vec<Value> = routes.apis().iter().map(describe_api).collect();
    apis.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    apis
}

async fn list_apis(State(admin): State<Admin>) -> Response {
    Json(json!({ "apis": apis(&admin) })).into_response()
}

/// `GET /dashboard/state`: what the dashboard draws besides the metrics
/// (which it reads from `/metrics`): the APIs, the upstreams' targets, the
/// cluster and the last reloads.
async fn dashboard_state(State(admin): State<Admin>) -> Response {
    let report = admin.control.report();
    let nodes = match admin.control.nodes().await {
        Ok(nodes) => json!(nodes),
        Err(e) => json!({ "error": e.to_string() }),
    };
    Json(json!({
        "node": report.id,
        "version": env!("CARGO_PKG_VERSION"),
        "config": { "hash": report.config_hash, "loaded_at": report.loaded_at_text() },
        "apis": apis(&admin),
        "upstreams": upstreams(&admin),
        "cluster": nodes,
        "reloads": admin.control.recent_reloads(),
    }))
    .into_response()
}

/// The body of `POST /keys` and `PUT /keys/{key}`: a session without its id.
/// Parsed as JSON whatever the content type says (`curl -d` sends a form type).
fn parse_session(body: &[u8]) -> Result<SessionData, String> {
    let session: SessionData = serde_json::from_slice(body).map_err(|e| format!("invalid session: {e}"))?;
    if !session.key_id.is_empty() {
        return Err("key_id is assigned by the gateway".into());
    }
    if session.per == 0 && session.rate > 0 {
        return Err("rate needs per (seconds) above 0".into());
    }
    Ok(session)
}

fn unknown_apis(admin: &Admin, session: &SessionData) -> Option<Response> {
    let routes = admin.gateway.routes();
    let unknown: Vec<&str> = session
        .apis
        .iter()
        .map(|a| a.api_id())
        .filter(|id| !routes.apis().iter().any(|api| &*api.id == *id))
        .collect();
    (!unknown.is_empty()).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("unknown API id(s): {}", unknown.join(", ")),
        )
    })
}

async fn create_key(State(admin): State<Admin>, body: Bytes) -> Response {
    let mut session = match parse_session(&body) {
        Ok(session) => session,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    if let Some(response) = unknown_apis(&admin, &session) {
        return response;
    }
    let (key, key_id) = store::new_key();
    session.key_id = key_id;
    if let Err(e) = admin.gateway.store().put(&store::key_hash(&key), &session).await {
        return store_error(e);
    }
    tracing::info!(key_id = session.key_id.as_str(), "key created");
    let mut reply = serde_json::to_value(&session).unwrap_or_default();
    reply["key"] = Value::String(key);
    (StatusCode::CREATED, Json(reply)).into_response()
}

/// Most sessions `GET /keys` lists.
const MAX_LISTED: usize = 10_000;

/// Every stored session, without the stored ids (a key's hash stays
/// inside): API keys' and those auth plugins created, which `GET` and
/// `DELETE /keys/{key_id}` reach.
async fn list_keys(State(admin): State<Admin>) -> Response {
    let sessions = match admin.gateway.store().list(MAX_LISTED).await {
        Ok(sessions) => sessions,
        Err(e) => return store_error(e),
    };
    let keys: Vec<Value> = sessions
        .into_iter()
        .map(|(id, session)| {
            let mut entry = serde_json::to_value(&session).unwrap_or_default();
            entry["source"] = json!(if auth::plugin_key_id(&id).is_some() {
                "plugin"
            } else {
                "api_key"
            });
            entry
        })
        .collect();
    let truncated = keys.len() >= MAX_LISTED;
    Json(json!({ "keys": keys, "truncated": truncated })).into_response()
}

/// The stored id of `key`: an API key's hash, or else the session an auth
/// plugin created under that key id. `None` when neither exists.
async fn find_key(admin: &Admin, key: &str) -> Result<Option<(String, SessionData)>, StoreError> {
    let store = admin.gateway.store();
    for id in [store::key_hash(key), auth::plugin_store_id(key)] {
        if let Some(session) = store.get(&id).await? {
            return Ok(Some((id, session)));
        }
    }
    Ok(None)
}

async fn read_key(State(admin): State<Admin>, Path(key): Path<String>) -> Response {
    let store = admin.gateway.store();
    let (id, session) = match find_key(&admin, &key).await {
        Ok(Some(found)) => found,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such key"),
        Err(e) => return store_error(e),
    };
    let plugin = auth::plugin_key_id(&id).is_some();
    let mut reply = serde_json::to_value(&session).unwrap_or_default();
    reply["source"] = json!(if plugin { "plugin" } else { "api_key" });
    reply["quota_remaining"] = json!(-1);
    if session.quota_max >= 0 {
        let now = auth::now();
        let counter_id = if plugin {
            id
        } else {
            auth::key_counter_id(&session.key_id)
        };
        let counter = auth::quota_counter(&counter_id);
        match store.peek(&counter, now).await {
            Ok(used) => {
                reply["quota_remaining"] = json!(auth::quota_remaining(session.quota_max, &used));
                if used.used > 0 && used.reset_at < store::NEVER {
                    reply["quota_resets_in"] = json!((used.reset_at - now).max(0));
                }
            }
            Err(e) => return store_error(e),
        }
    }
    Json(reply).into_response()
}

async fn update_key(State(admin): State<Admin>, Path(key): Path<String>, body: Bytes) -> Response {
    let mut session = match parse_session(&body) {
        Ok(session) => session,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    if let Some(response) = unknown_apis(&admin, &session) {
        return response;
    }
    let store = admin.gateway.store();
    let hash = store::key_hash(&key);
    match store.get(&hash).await {
        Ok(Some(existing)) => session.key_id = existing.key_id,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such key"),
        Err(e) => return store_error(e),
    }
    if let Err(e) = store.put(&hash, &session).await {
        return store_error(e);
    }
    tracing::info!(key_id = session.key_id.as_str(), "key updated");
    Json(serde_json::to_value(&session).unwrap_or_default()).into_response()
}

/// Revokes an API key, or deletes the session an auth plugin created (its
/// saved metadata and alias; the plugin makes a new one at the caller's
/// next request it accepts).
async fn delete_key(State(admin): State<Admin>, Path(key): Path<String>) -> Response {
    let id = match find_key(&admin, &key).await {
        Ok(Some((id, _))) => id,
        Ok(None) => return error(StatusCode::NOT_FOUND, "no such key"),
        Err(e) => return store_error(e),
    };
    match admin.gateway.store().delete(&id).await {
        Ok(true) => {
            tracing::info!(plugin_session = auth::plugin_key_id(&id), "key deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "no such key"),
        Err(e) => store_error(e),
    }
}

/// `POST /reload`: this node; with `?cluster=true`, every node sharing its
/// Redis (each from its own files).
async fn reload(State(admin): State<Admin>, uri: http::Uri) -> Response {
    let cluster = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| matches!(pair, "cluster" | "cluster=true" | "cluster=1"));
    let (result, announced) = if cluster {
        let (result, announced) = admin.control.reload_cluster(Trigger::Admin).await;
        (result, Some(announced))
    } else {
        (admin.control.reload(Trigger::Admin).await, None)
    };
    let mut body = json!({ "reloaded": result.is_ok(), "node": admin.control.node_id() });
    match &result {
        Ok(restart) if !restart.is_empty() => body["restart_required"] = json!(restart),
        Ok(_) => {}
        Err(e) => body["error"] = e.to_string().into(),
    }
    let mut status = if result.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    match announced {
        None => {}
        Some(Ok(())) => body["broadcast"] = true.into(),
        Some(Err(e)) => {
            body["broadcast"] = false.into();
            body["broadcast_error"] = e.to_string().into();
            status = match e {
                BroadcastError::NoCluster => StatusCode::BAD_REQUEST,
                BroadcastError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
        }
    }
    (status, Json(body)).into_response()
}

/// `GET /cluster`: the nodes seen in the last minute, each with its
/// configuration digest and last reload; `converged` when they all serve
/// the same configuration.
async fn cluster(State(admin): State<Admin>) -> Response {
    match admin.control.nodes().await {
        Ok(nodes) => {
            let converged = nodes.windows(2).all(|w| w[0].config_hash == w[1].config_hash);
            Json(json!({ "nodes": nodes, "converged": converged })).into_response()
        }
        Err(e) => store_error(e),
    }
}
