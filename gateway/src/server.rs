//! The public listener and the request path:
//!
//! listener -> match API (longest listen path) -> match endpoint (method +
//! template) -> endpoint plugin (continue with changes, or respond) ->
//! upstream (streamed) -> client.
//!
//! The routing table sits behind an `ArcSwap`: a reload builds a complete new
//! table and swaps it in; requests in flight finish on the table (and plugin
//! versions) they started with.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http_body_util::BodyExt;
use tracing::Instrument;

use crate::config::OnError;
use crate::error::RequestError;
use crate::plugin::{self, Outcome, RequestChanges, Session};
use crate::proxy::{self, ProxyClient, Upstream};
use crate::routes::{ApiRoute, EndpointMatch, Routes};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Shared state of the public listener.
#[derive(Debug)]
pub struct Gateway {
    routes: ArcSwap<Routes>,
    proxy: ProxyClient,
}

impl Gateway {
    pub fn new(routes: Routes) -> Self {
        Gateway {
            routes: ArcSwap::from_pointee(routes),
            proxy: ProxyClient::default(),
        }
    }

    /// Serves new requests with `routes` from now on.
    pub fn swap(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// The axum app for the public listener.
    pub fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().fallback(handle).with_state(self)
    }
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let request_id: Arc<str> = match request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) if !id.is_empty() && id.len() <= 128 => id.into(),
        _ => uuid::Uuid::new_v4().to_string().into(),
    };
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id = &*request_id,
        api = tracing::field::Empty,
        endpoint = tracing::field::Empty,
        plugin = tracing::field::Empty,
    );
    let routes = gateway.routes.load_full();
    let result = serve(&gateway, &routes, client, &request_id, request)
        .instrument(span.clone())
        .await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            let status = error.status();
            span.in_scope(|| {
                if status.is_server_error() {
                    tracing::warn!(status = status.as_u16(), error = %error, "request failed");
                } else {
                    tracing::debug!(status = status.as_u16(), error = %error, "request rejected");
                }
            });
            error.into_response(&request_id)
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Where the request goes after the plugin ran: the upstream and the path.
struct Target {
    upstream: Upstream,
    path: String,
}

async fn serve(
    gateway: &Gateway,
    routes: &Routes,
    client: SocketAddr,
    request_id: &Arc<str>,
    request: Request,
) -> Result<Response, RequestError> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let (api, rest) = routes.route(&path).ok_or(RequestError::NoRoute)?;
    let span = tracing::Span::current();
    span.record("api", &*api.id);

    let mut target = Target {
        upstream: api.upstream.clone(),
        path: if api.strip_listen_path {
            rest.to_owned()
        } else {
            path.clone()
        },
    };
    let mut body = body;
    if let Some(matched) = api.match_endpoint(&parts.method, rest) {
        span.record("endpoint", matched.endpoint.template.as_str());
        span.record("plugin", matched.endpoint.plugin.label());
        match run_endpoint_plugin(
            api,
            &matched,
            &mut parts,
            body,
            &mut target,
            client,
            request_id,
        )
        .await?
        {
            PluginStep::Respond(response) => return Ok(response),
            PluginStep::Continue(new_body) => body = new_body,
        }
    }

    proxy::forwarded_request_headers(&mut parts.headers, client);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        parts.headers.insert(REQUEST_ID, value);
    }
    parts.uri = target
        .upstream
        .uri(&target.path, parts.uri.query())
        .map_err(|e| RequestError::Internal(e.to_string()))?;
    parts.version = http::Version::HTTP_11;
    let upstream_request = http::Request::from_parts(parts, body);
    Ok(gateway
        .proxy
        .send(upstream_request, api.upstream_timeout)
        .await?)
}

enum PluginStep {
    Respond(Response),
    /// Go on to the upstream with this body.
    Continue(Body),
}

async fn run_endpoint_plugin(
    api: &ApiRoute,
    matched: &EndpointMatch<'_>,
    parts: &mut Parts,
    body: Body,
    target: &mut Target,
    client: SocketAddr,
    request_id: &Arc<str>,
) -> Result<PluginStep, RequestError> {
    let plugin = &matched.endpoint.plugin;
    let limit = plugin.limits().max_body_bytes;
    let (body_bytes, body) = if plugin.wants_body() {
        let bytes = read_body(body, limit).await?;
        (Some(bytes.clone()), Body::from(bytes))
    } else {
        (None, body)
    };
    let request = plugin::Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        upstream_path: target.path.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body_bytes.map(|b| b.to_vec()),
        client_addr: client.to_string(),
        params: matched.params.clone(),
        request_id: request_id.to_string(),
    };
    let ctx = api.call_context(Arc::clone(request_id), &parts.headers);
    let outcome = match plugin
        .on_request(&ctx, &request, &anonymous_session())
        .await
    {
        Ok(outcome) => outcome,
        Err(error) => {
            tracing::warn!(
                plugin = plugin.label(),
                path = %plugin.path().display(),
                api = &*api.id,
                endpoint = matched.endpoint.template.as_str(),
                error = %error,
                on_error = ?plugin.on_error(),
                "plugin invocation failed"
            );
            if plugin.on_error() == OnError::Continue {
                return Ok(PluginStep::Continue(body));
            }
            if let Some(fallback) = plugin.fallback() {
                let mut response = Response::new(Body::from(fallback.body.clone()));
                *response.status_mut() = fallback.status;
                *response.headers_mut() = fallback.headers.clone();
                return Ok(PluginStep::Respond(response));
            }
            return Err(RequestError::Plugin {
                plugin: plugin.label().to_owned(),
                source: error,
            });
        }
    };
    match outcome {
        Outcome::Respond(response) => Ok(PluginStep::Respond(plugin_response(response)?)),
        Outcome::Continue(changes) => {
            let new_body = apply_changes(changes, parts, target)?;
            Ok(PluginStep::Continue(
                new_body.map(Body::from).unwrap_or(body),
            ))
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(RequestError::BodyTooLarge(limit))
        }
        Err(e) => Err(RequestError::BadBody(e.to_string())),
    }
}

/// The anonymous session of a keyless API.
fn anonymous_session() -> Session {
    Session {
        key_id: String::new(),
        rate: 0,
        per: 0,
        quota_max: -1,
        quota_remaining: -1,
        metadata: Vec::new(),
        tags: Vec::new(),
        expires: None,
    }
}

/// A plugin's `respond` outcome as an HTTP response. The outcome was checked
/// by the runtime, so conversions here do not fail in practice.
fn plugin_response(response: plugin::Response) -> Result<Response, RequestError> {
    let mut builder = http::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Body::from(response.body))
        .map_err(|e| RequestError::Internal(e.to_string()))
}

/// Applies a `continue` outcome to the request; returns the new body if the
/// plugin replaced it.
fn apply_changes(
    changes: RequestChanges,
    parts: &mut Parts,
    target: &mut Target,
) -> Result<Option<Vec<u8>>, RequestError> {
    let internal = |e: &dyn std::fmt::Display| RequestError::Internal(e.to_string());
    if let Some(method) = changes.method {
        parts.method = method.parse().map_err(|e| internal(&e))?;
    }
    if let Some(path) = changes.path {
        target.path = path;
    }
    if let Some(query) = changes.query {
        let path = parts.uri.path();
        let uri = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        parts.uri = uri.parse().map_err(|e| internal(&e))?;
    }
    for name in &changes.remove_headers {
        parts.headers.remove(name.as_str());
    }
    for (name, value) in &changes.set_headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| internal(&e))?;
        parts.headers.insert(
            name,
            HeaderValue::from_str(value).map_err(|e| internal(&e))?,
        );
    }
    if let Some(upstream) = changes.upstream {
        target.upstream = Upstream::parse(&upstream).map_err(|e| internal(&e))?;
    }
    if changes.body.is_some() {
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::TRANSFER_ENCODING);
    }
    Ok(changes.body)
}
