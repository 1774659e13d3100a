//! The public listener and the request path:
//!
//! listener -> match API (longest listen path) -> match endpoint (method +
//! template) -> `rate_limit`s (endpoint's, API's) -> `pre` hooks -> auth
//! (keyless, API key, or `auth` plugin) -> `post_auth` hooks -> the key's
//! rate limit and quota -> endpoint plugin -> `post`
//! hooks -> upstream (streamed) or the plugin's response -> `response` hooks
//! -> client.
//!
//! A `respond` outcome anywhere in the request phase ends it; the response
//! hooks still run on that response. The routing table sits behind an
//! `ArcSwap`: a reload swaps in a complete new table, and requests in flight
//! finish on the one (and the plugin versions) they started with.

pub mod auth;
pub mod canonical;
pub mod client_io;
pub mod error;
pub mod live_tls;
pub mod proxy;
pub mod routes;
pub mod tunnel;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::config::{ClientTimeouts, Destination, Limits, OnError, OverrideHeaders, Transport, Unmatched};
use crate::framing;
use crate::plugin::{
    self, AuthOutcome, Authenticated, CallContext, HeaderText, Outcome, Plugin, PluginError, RequestChanges,
    RequestRecord, ResponseRecord, Session,
};
use crate::store::SessionStore;
use crate::sync::lock;
use crate::telemetry;
use crate::telemetry::CallStats;
use crate::telemetry::RequestId;
use crate::telemetry::access_log::{AccessLog, Counted, Entry, Logged, Usage};
use crate::telemetry::metrics::ApiMetrics;
use crate::tls;
use crate::upstream::{Affinity, OutBody, Outgoing, UpstreamError};
use auth::{Caller, Denied, LimitHeaders};
use canonical::PathError;
use client_io::ClientIo;
use error::RequestError;
use live_tls::LiveTls;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use routes::{ApiRoute, Auth, Routes};

type Request = http::Request<Body>;

/// Shared state of the public listener.
#[derive(Debug)]
pub struct Gateway {
    routes: ArcSwap<Routes>,
    store: SessionStore,
    /// One line per request, when configured.
    access_log: Option<AccessLog>,
    /// The HTTPS listener's certificates, replaced by reloads.
    tls: Option<Arc<LiveTls>>,
}

impl Gateway {
    pub fn new(routes: Routes, store: SessionStore, tls: Option<Arc<LiveTls>>) -> Self {
        routes.publish_certificates();
        Gateway {
            routes: ArcSwap::from_pointee(routes),
            store,
            access_log: None,
            tls,
        }
    }

    /// Writes one line per request to `log`.
    pub fn with_access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    pub fn access_log(&self) -> Option<&AccessLog> {
        self.access_log.as_ref()
    }

    pub fn tls(&self) -> Option<&Arc<LiveTls>> {
        self.tls.as_ref()
    }

    /// Serves new requests with `routes` from now on.
    pub fn swap(&self, routes: Routes) {
        routes.publish_certificates();
        self.routes.store(Arc::new(routes));
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    pub fn store(&self) -> &SessionStore {
        &self.store
    }

    /// Serves HTTP/1.1 and HTTP/2 connections from the listeners until
    /// `shutdown` completes, then waits for the requests in flight.
    ///
    /// A bare hyper service rather than a web framework's router: the
    /// routing table is ours, and every layer on this path costs CPU on
    /// every request.
    pub async fn serve(self: Arc<Self>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
        let Listeners { plain, tls, timeouts } = listeners;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Without a timer hyper cannot enforce its header read timeout, and a
        // client trickling a request head would hold a connection forever.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.head);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (accepted, secure) = tokio::select! {
                accepted = accept(plain.as_ref()) => (accepted, None),
                accepted = accept(tls.as_ref().map(|(listener, _)| listener)) => (accepted, tls.as_ref().map(|(_, live)| live)),
                () = &mut shutdown => break,
            };
            let (stream, client) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Responses leave in one write; do not hold the last segment back.
            let _ = stream.set_nodelay(true);
            let gateway = Arc::clone(&self);
            let Some(live) = secure else {
                let stream = ClientIo::new(stream, timeouts.head, timeouts.send);
                let connection = serve_connection(&builder, gateway, Peer::new(client, None), stream);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%client, error = %e, "connection ended with an error");
                    }
                });
                continue;
            };
            // The handshake runs in the connection's own task, so a slow
            // client holds up no one else; it uses the certificates current
            // when the connection arrived.
            let acceptor = tokio_rustls::TlsAcceptor::from(live.server_config());
            let (builder, watcher) = (Arc::clone(&builder), graceful.watcher());
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%client, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%client, "TLS handshake timed out");
                        return;
                    }
                };
                let client_cert = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(tls::forwarded_client_cert);
                let peer = Peer::new(client, Some(client_cert));
                let stream = ClientIo::new(stream, timeouts.head, timeouts.send);
                let connection = serve_connection(&builder, gateway, peer, stream);
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%client, error = %e, "connection ended with an error");
                }
            });
        }
        drop((plain, tls));
        graceful.shutdown().await;
    }
}

/// The sockets the gateway serves: plain HTTP, HTTPS, or both.
#[derive(Debug)]
pub struct Listeners {
    pub plain: Option<TcpListener>,
    pub tls: Option<(TcpListener, Arc<LiveTls>)>,
    /// Deadlines on clients, on both.
    pub timeouts: ClientTimeouts,
}

/// The next connection on `listener`; never, without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    gateway: Arc<Gateway>,
    peer: Peer,
    stream: S,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = Box<dyn std::error::Error + Send + Sync>> + use<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let service = service_fn(move |request: http::Request<Incoming>| {
        let gateway = Arc::clone(&gateway);
        let peer = Arc::clone(&peer);
        async move { Ok::<_, Infallible>(handle(&gateway, peer, request.map(Body::new)).await) }
    });
    builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned()
}

/// The client end of a connection, formatted once for all its requests.
#[derive(Debug)]
struct Peer {
    /// `ip:port`, what plugins see as `client-addr`.
    addr: String,
    /// The IP alone, for `X-Forwarded-For`.
    ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    proto: HeaderValue,
    /// Whether the connection is TLS.
    tls: bool,
    /// On TLS connections with a verified client certificate, its
    /// `x-forwarded-client-cert` value.
    client_cert: Option<HeaderValue>,
}

impl Peer {
    /// `tls` is `None` for plain connections, `Some` (with the client
    /// certificate's XFCC value, if one was verified) for TLS ones.
    fn new(addr: SocketAddr, tls: Option<Option<HeaderValue>>) -> Self {
        let ip = addr.ip().to_string();
        Peer {
            addr: addr.to_string(),
            ip: HeaderValue::from_str(&ip).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            proto: HeaderValue::from_static(if tls.is_some() { "https" } else { "http" }),
            tls: tls.is_some(),
            client_cert: tls.flatten(),
        }
    }
}

async fn handle(gateway: &Gateway, client: Arc<Peer>, request: Request) -> Response {
    let started = Instant::now();
    let request_id = RequestId::for_request(request.headers());
    let routes = gateway.routes.load_full();
    // From here on, everything sees the canonical path: the span, the
    // access log, limits, plugins and the upstream.
    let (request, resolved) = canonical_request(&routes, request);
    // At debug level every line of the request carries this context. At
    // info it is not built at all (formatting its fields on every request
    // costs more than routing it); the warnings below name the request
    // themselves.
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id = request_id.as_str(),
        api = tracing::field::Empty,
        endpoint = tracing::field::Empty,
        key_id = tracing::field::Empty,
        alias = tracing::field::Empty,
    );
    // Kept for the log line should the request fail (both clones share
    // their bytes with the request).
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let mut entry = gateway.access_log.as_ref().map(|log| {
        Entry::new(
            log,
            started,
            request_id.as_str(),
            client.addr.clone(),
            method.as_str(),
            uri.path(),
        )
    });
    let request = match &entry {
        Some(entry) => {
            let count = Arc::clone(&entry.bytes_in);
            request.map(|body| Body::new(Counted::new(body, count)))
        }
        None => request,
    };
    let usage = entry.as_ref().map(|e| (Arc::clone(&e.usage), Arc::clone(&e.plugins)));
    let trace = telemetry::request_span(
        request.headers(),
        method.as_str(),
        uri.path(),
        request_id.as_str(),
        &client.addr,
    );
    let (api, result) = serve(gateway, resolved, client, &request_id, request, usage, trace.clone())
        .instrument(span.clone())
        .await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            let status = error.status();
            if let Some(entry) = &mut entry {
                entry.error = Some(error.to_string());
            }
            span.in_scope(|| {
                let (path, request_id) = (uri.path(), request_id.as_str());
                if status.is_server_error() {
                    tracing::warn!(%method, path, request_id, status = status.as_u16(), error = %error, "request failed");
                } else {
                    tracing::debug!(%method, path, request_id, status = status.as_u16(), error = %error, "request rejected");
                }
            });
            let limit_headers = match &error {
                RequestError::Denied(Denied::RateLimited(h) | Denied::QuotaExceeded(h)) => Some(h.clone()),
                _ => None,
            };
            let mut response = error.into_response(request_id.as_str());
            if let Some(headers) = limit_headers {
                headers.apply(response.headers_mut());
            }
            response
        }
    };
    response
        .headers_mut()
        .insert(RequestId::HEADER, request_id.header().clone());
    let metrics = api.map_or(ApiMetrics::unrouted(), |api| &api.metrics);
    metrics.observe(response.status().as_u16(), started.elapsed());
    if let Some(trace) = trace {
        let status = response.status();
        telemetry::record(
            &trace,
            vec![KeyValue::new("http.response.status_code", i64::from(status.as_u16()))],
        );
        if status.is_server_error() {
            telemetry::fail(&trace, status.as_str());
        }
        // Ends with the body: sent to its end, or abandoned.
        response = response.map(|body| Body::new(telemetry::SpanBody::new(body, trace)));
    }
    match entry {
        Some(mut entry) => {
            entry.status = response.status().as_u16();
            entry.api = api.map(|api| api.id.to_string());
            response.map(|body| Body::new(Logged::new(body, entry)))
        }
        None => response,
    }
}

/// The request as it moves through the chain.
struct Exchange {
    parts: Parts,
    body: BodyState,
    /// Where it goes: upstream and the path the upstream sees.
    destination: Destination,
    upstream_path: String,
    params: Vec<(String, String)>,
    client: Arc<Peer>,
    ctx: CallContext,
    /// What plugins see: anonymous until authenticated.
    session: Session,
    caller: Option<Caller>,
    /// Session metadata changed by a plugin, to be saved.
    metadata_dirty: bool,
    limit_headers: LimitHeaders,
    /// Headers request-phase plugins set on the client's response.
    response_headers: HeaderMap,
    /// What the access log records as the request is served.
    usage: Option<Arc<std::sync::Mutex<Usage>>>,
    /// With traces on, while the upstream exchange runs: its span.
    upstream_span: Option<opentelemetry::Context>,
    /// How long the client may take to send a body the gateway reads whole.
    body_timeout: Duration,
}

enum BodyState {
    Streaming(Body),
    Buffered(Bytes),
}

/// How the request phase ended.
enum Phase {
    /// Go to the upstream.
    Upstream,
    /// A plugin answered.
    Respond(Response),
}

/// The request with its path canonicalised (the URI rewritten only when
/// the client's spelling was not canonical), and the API it routes to, or
/// why its path is refused.
fn canonical_request(routes: &Routes, request: Request) -> (Request, Result<Option<&ApiRoute>, PathError>) {
    let (mut parts, body) = request.into_parts();
    let resolved = match routes.resolve(parts.uri.path()) {
        Ok((api, Cow::Borrowed(_))) => Ok(api),
        Ok((api, Cow::Owned(path))) => match with_path(&parts.uri, &path) {
            Some(uri) => {
                parts.uri = uri;
                Ok(api)
            }
            None => Err(PathError::BadEscape),
        },
        Err(why) => Err(why),
    };
    (http::Request::from_parts(parts, body), resolved)
}

/// `uri` with its path replaced, query, scheme and authority kept.
fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Serves the request at the API it routed to; says which API it was.
async fn serve<'r>(
    gateway: &Gateway,
    resolved: Result<Option<&'r ApiRoute>, PathError>,
    client: Arc<Peer>,
    request_id: &RequestId,
    request: Request,
    usage: Option<Accounting>,
    trace: Option<opentelemetry::Context>,
) -> (Option<&'r ApiRoute>, Result<Response, RequestError>) {
    let api = match resolved {
        Ok(Some(api)) => api,
        Ok(None) => return (None, Err(RequestError::NoRoute)),
        Err(why) => return (None, Err(RequestError::BadPath(why))),
    };
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let rest = api.rest(&path).unwrap_or("/");
    let served = serve_api(gateway, api, rest, client, request_id, parts, body, usage, trace).await;
    (Some(api), served)
}

/// Where the access log's entry collects what serving the request used:
/// upstream time, key id and endpoint; and the plugin calls' totals.
type Accounting = (Arc<std::sync::Mutex<Usage>>, Arc<std::sync::Mutex<CallStats>>);

#[expect(clippy::too_many_arguments, reason = "one call site, each argument distinct")]
async fn serve_api(
    gateway: &Gateway,
    api: &ApiRoute,
    rest: &str,
    client: Arc<Peer>,
    request_id: &RequestId,
    parts: Parts,
    body: Body,
    accounting: Option<Accounting>,
    trace: Option<opentelemetry::Context>,
) -> Result<Response, RequestError> {
    let span = tracing::Span::current();
    span.record("api", &*api.id);
    match api.transport {
        Transport::Any => {}
        _ if !client.tls => return Err(RequestError::TlsRequired),
        Transport::MutualTls if client.client_cert.is_none() => return Err(RequestError::ClientCertRequired),
        Transport::Tls | Transport::MutualTls => {}
    }
    if let Some(limit) = api.max_request_body_bytes
        && declared_length(&parts.headers).is_some_and(|length| length > limit as u64)
    {
        // Refused before any plugin runs or the upstream hears of it.
        return Err(RequestError::BodyTooLarge(limit));
    }
    let mut parts = parts;
    // Only the gateway vouches for a client certificate: whatever the
    // client sent under this name goes.
    let xfcc = HeaderName::from_static("x-forwarded-client-cert");
    parts.headers.remove(&xfcc);
    if api.forward_client_cert
        && let Some(value) = &client.client_cert
    {
        parts.headers.insert(xfcc, value.clone());
    }
    if api.override_headers == OverrideHeaders::Remove {
        // The gateway routed on the real method and path; a backend that
        // obeys these would serve another.
        proxy::strip_override_headers(&mut parts.headers);
    }
    let matched = api.match_endpoint(&parts.method, rest);
    if let Some(m) = &matched {
        span.record("endpoint", m.endpoint.template.as_str());
    } else if api.unmatched == Unmatched::Reject {
        return Err(RequestError::NoEndpoint);
    }
    // Limits on every caller come first: a refused request costs no plugin
    // call. The endpoint's is counted before the API's, so a request the
    // endpoint refuses does not use the API's allowance.
    let mut limit_headers = LimitHeaders::default();
    for limiter in [
        matched.as_ref().and_then(|m| m.endpoint.rate_limit.as_ref()),
        api.rate_limit.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let mut headers = limiter.check(&gateway.store, &client.ip, &parts.headers).await?;
        // The most specific limit's headers win: the endpoint's over the API's.
        headers.extend(limit_headers);
        limit_headers = headers;
    }
    if let Some(trace) = &trace {
        let mut attributes = vec![KeyValue::new("portcullis.api", api.id.to_string())];
        if let Some(m) = &matched {
            attributes.push(KeyValue::new("http.route", m.endpoint.template.clone()));
        }
        telemetry::record(trace, attributes);
    }
    let mut ctx = api.call_context(request_id.clone(), &parts.headers, trace);
    let usage = accounting.map(|(usage, plugins)| {
        ctx.stats = Some(plugins);
        if let Some(m) = &matched {
            lock(&usage).endpoint = Some(m.endpoint.template.clone());
        }
        usage
    });
    let mut ex = Exchange {
        ctx,
        usage,
        destination: api.upstreams.default_destination(),
        upstream_path: if api.strip_listen_path {
            rest.to_owned()
        } else {
            parts.uri.path().to_owned()
        },
        params: matched.as_ref().map(|m| m.params.clone()).unwrap_or_default(),
        parts,
        body: BodyState::Streaming(body),
        client,
        session: Session::anonymous(),
        caller: None,
        metadata_dirty: false,
        limit_headers,
        response_headers: HeaderMap::new(),
        upstream_span: None,
        body_timeout: api.body_timeout,
    };

    let phase = request_phase(
        gateway,
        api,
        rest,
        matched.as_ref().and_then(|m| m.endpoint.plugin.as_ref()),
        &mut ex,
    )
    .await;
    save_metadata(gateway, &mut ex).await;
    let mut response = match phase? {
        Phase::Respond(response) => response,
        Phase::Upstream => match ex.timed_upstream(api).await? {
            Upstreamed::Response(response) => response,
            // The connection now belongs to the tunnel: there is no
            // response for hooks to change (a 101 is not theirs to make).
            Upstreamed::Switched(mut response) => {
                set_all(response.headers_mut(), std::mem::take(&mut ex.response_headers));
                ex.limit_headers.apply(response.headers_mut());
                return Ok(response);
            }
        },
    };
    set_all(response.headers_mut(), std::mem::take(&mut ex.response_headers));
    for plugin in &api.hooks.response {
        response = ex.response_hook(plugin, response).await?;
    }
    ex.limit_headers.apply(response.headers_mut());
    Ok(response)
}

async fn request_phase(
    gateway: &Gateway,
    api: &ApiRoute,
    rest: &str,
    endpoint: Option<&Plugin>,
    ex: &mut Exchange,
) -> Result<Phase, RequestError> {
    for plugin in &api.hooks.pre {
        if let Some(response) = ex.request_hook(plugin, "pre").await? {
            return Ok(Phase::Respond(response));
        }
    }

    let store = &gateway.store;
    // What an auth plugin changes in the request, applied once the caller's
    // session is in place (its metadata changes land there).
    let mut auth_changes = None;
    let caller = match &api.auth {
        Auth::Keyless => None,
        Auth::ApiKey { header, query } => {
            let key = auth::extract_key(&ex.parts.headers, header, query.as_deref(), ex.parts.uri.query())
                .ok_or(Denied::MissingKey)?;
            Some(auth::api_key(store, &key, &api.id, ex.parts.method.as_str(), rest).await?)
        }
        Auth::Plugin(plugin) => {
            ex.buffer_body_for(plugin).await?;
            ex.ctx.hook = "auth";
            let headers = HeaderText::new(&ex.parts.headers);
            let request = ex.plugin_request(plugin.wants_body(), &headers);
            match plugin.on_auth(&ex.ctx, &request).await {
                Ok(AuthOutcome::Authenticated(Authenticated { session, changes })) => {
                    match plugin_caller(store, plugin, session).await? {
                        Ok(caller) => {
                            auth_changes = Some((plugin, changes));
                            Some(caller)
                        }
                        Err(error) => return Ok(Phase::Respond(plugin_failed(&ex.ctx, plugin, error)?)),
                    }
                }
                Ok(AuthOutcome::Respond(response)) => return Ok(Phase::Respond(plugin_response(plugin, response)?)),
                Err(error) => return Ok(Phase::Respond(plugin_failed(&ex.ctx, plugin, error)?)),
            }
        }
    };
    if let Some(caller) = caller {
        let span = tracing::Span::current();
        span.record("key_id", caller.data.key_id.as_str());
        if let Some(alias) = &caller.data.alias {
            span.record("alias", alias.as_str());
        }
        // The quota is counted below, after post_auth; those hooks see what
        // is left before this request (read only if there are any).
        let remaining = if api.hooks.post_auth.is_empty() {
            -1
        } else {
            auth::peek_quota(store, &caller.data, &caller.counter_id)
                .await
                .map_err(Denied::from)?
        };
        ex.session = auth::to_wit(&caller.data, remaining);
        if let Some(usage) = &ex.usage {
            lock(usage).key_id = Some(ex.session.key_id.clone());
        }
        ex.caller = Some(caller);
    }
    if let Some((plugin, changes)) = auth_changes
        && let Err(error) = ex.continue_with(plugin, changes)
    {
        return Ok(Phase::Respond(plugin_failed(&ex.ctx, plugin, error)?));
    }

    for plugin in &api.hooks.post_auth {
        if let Some(response) = ex.request_hook(plugin, "post_auth").await? {
            return Ok(Phase::Respond(response));
        }
    }

    if let Some(caller) = &ex.caller {
        let (headers, remaining) = auth::enforce_limits(store, caller).await?;
        ex.limit_headers.extend(headers);
        ex.session.quota_remaining = remaining;
    }

    if let Some(plugin) = endpoint
        && let Some(response) = ex.request_hook(plugin, "endpoint").await?
    {
        return Ok(Phase::Respond(response));
    }
    for plugin in &api.hooks.post {
        if let Some(response) = ex.request_hook(plugin, "post").await? {
            return Ok(Phase::Respond(response));
        }
    }
    Ok(Phase::Upstream)
}

/// The caller an auth plugin's session makes: merged with what is stored
/// for its key and saved, if it stays within the plugin's session limits.
/// A session that would outgrow them is the plugin's failure (the inner
/// error), and nothing is saved.
async fn plugin_caller(
    store: &SessionStore,
    plugin: &Plugin,
    session: Session,
) -> Result<Result<Caller, PluginError>, RequestError> {
    let merged = auth::merge_plugin_session(store, session).await?;
    let data = &merged.caller.data;
    let size = plugin::check_session_size(
        &data.key_id,
        data.tags.iter().map(String::as_str),
        data.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        plugin.limits(),
    );
    if let Err(why) = size {
        return Ok(Err(plugin.invalid(&format!("with its stored metadata, {why}"))));
    }
    Ok(Ok(auth::save_plugin_session(store, merged).await?))
}

/// Saves session metadata written by plugins (keyed sessions only). A
/// failure is logged; the request goes on.
async fn save_metadata(gateway: &Gateway, ex: &mut Exchange) {
    if !ex.metadata_dirty {
        return;
    }
    let Some(caller) = &ex.caller else {
        tracing::debug!("session metadata set on an anonymous session is not saved");
        return;
    };
    if let Err(e) = gateway.store.put(&caller.store_id, &caller.data).await {
        tracing::warn!(
            request_id = ex.ctx.request_id.as_str(),
            key_id = caller.data.key_id.as_str(),
            error = %e,
            "cannot save session metadata"
        );
    }
}

/// What the upstream answered: a response, or protocols switched (101)
/// with a tunnel now running between client and upstream.
enum Upstreamed {
    Response(Response),
    Switched(Response),
}

async fn to_upstream(api: &ApiRoute, ex: &mut Exchange) -> Result<Upstreamed, RequestError> {
    let over_limit = |e: UpstreamError| match e {
        UpstreamError::RequestBodyTooLarge => {
            RequestError::BodyTooLarge(api.max_request_body_bytes.unwrap_or_default())
        }
        other => RequestError::Upstream(other),
    };
    // An upgrade (WebSocket) request, once the request phase let it through:
    // forwarded with its `Connection: upgrade`, tunnelled if the upstream
    // switches protocols.
    if let Some(protocol) = proxy::allowed_upgrade(&ex.parts.headers, &api.upgrades)
        && let Some(client_side) = ex.parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    {
        let mut request = ex.upstream_request(false, api.max_request_body_bytes)?;
        let headers = &mut request.parts.headers;
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
        let exchanged = api
            .upstreams
            .send(&ex.destination, request, api.timeouts.head, ex.affinity())
            .await
            .map_err(over_limit)?;
        let mut response = exchanged.response;
        let switched = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        let upstream_side = switched.then(|| hyper::upgrade::on(&mut response));
        let (mut parts, body) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        proxy::upstream_response_headers(&mut parts.headers);
        let Some(upstream_side) = upstream_side else {
            return Ok(Upstreamed::Response(Response::from_parts(parts, Body::new(body))));
        };
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        // The tunnel holds the target's in-flight slot while it lasts.
        let in_flight = exchanged.in_flight;
        let idle = api.tunnel_idle_timeout;
        let request_id = ex.ctx.request_id.clone();
        tokio::spawn(async move {
            tunnel::splice(client_side, upstream_side, idle, request_id).await;
            drop(in_flight);
        });
        return Ok(Upstreamed::Switched(Response::from_parts(parts, Body::empty())));
    }
    // Response hooks still need the request; otherwise it can move out.
    let request = ex.upstream_request(!api.hooks.response.is_empty(), api.max_request_body_bytes)?;
    let started = tokio::time::Instant::now();
    let timeouts = api.timeouts;
    let head = timeouts.total.map_or(timeouts.head, |total| total.min(timeouts.head));
    let exchanged = api
        .upstreams
        .send(&ex.destination, request, head, ex.affinity())
        .await
        .map_err(over_limit)?;
    let (mut parts, body) = exchanged.response.into_parts();
    if parts.status == http::StatusCode::SWITCHING_PROTOCOLS {
        // Nobody asked to switch: relaying it would hand the client's
        // connection to a protocol the gateway does not see into.
        return Err(RequestError::Upstream(UpstreamError::Protocol(
            "101 Switching Protocols to a request that asked for no upgrade",
        )));
    }
    proxy::upstream_response_headers(&mut parts.headers);
    // The body streams on under the read and total timeouts.
    let deadline = timeouts.total.map(|total| started + total);
    let body = proxy::TimedBody::new(
        body,
        timeouts.read,
        deadline,
        ex.ctx.request_id.clone(),
        exchanged.in_flight,
    );
    Ok(Upstreamed::Response(Response::from_parts(parts, Body::new(body))))
}

/// The body length a request declares, if it declares one.
impl Exchange {
    /// [`to_upstream`], noting in the access log's entry how long the
    /// upstream took to answer, under its own span when traced. With
    /// neither an access log nor traces this is `to_upstream` alone: no
    /// clock read.
    async fn timed_upstream(&mut self, api: &ApiRoute) -> Result<Upstreamed, RequestError> {
        if self.usage.is_none() && self.ctx.trace.span.is_none() {
            return to_upstream(api, self).await;
        }
        let started = Instant::now();
        self.upstream_span = self.ctx.trace.span.as_ref().map(|parent| {
            telemetry::child(
                parent,
                format!("upstream {}", api.id),
                SpanKind::Client,
                vec![
                    KeyValue::new("portcullis.api", api.id.to_string()),
                    KeyValue::new("http.request.method", self.parts.method.to_string()),
                    KeyValue::new("url.path", self.upstream_path.clone()),
                ],
            )
        });
        let upstreamed = to_upstream(api, self).await;
        if let Some(usage) = &self.usage {
            lock(usage).upstream_time = Some(started.elapsed());
        }
        if let Some(span) = self.upstream_span.take() {
            let status = match &upstreamed {
                Ok(Upstreamed::Response(response) | Upstreamed::Switched(response)) => Ok(response.status().as_u16()),
                Err(error) => Err(error.to_string()),
            };
            telemetry::end_call(&span, status);
        }
        upstreamed
    }
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl Exchange {
    /// The request to send upstream, as the chain left it, with the
    /// forwarding headers. `keep` leaves the exchange's copy of the request
    /// head for the response hooks; otherwise it moves out. A streamed body
    /// is cut off past `max_body` bytes; an empty one can be sent again.
    fn upstream_request(&mut self, keep: bool, max_body: Option<usize>) -> Result<Outgoing, RequestError> {
        let mut parts = if keep {
            self.parts.clone()
        } else {
            std::mem::replace(&mut self.parts, http::Request::new(()).into_parts().0)
        };
        proxy::forwarded_request_headers(
            &mut parts.headers,
            &self.client.ip,
            &self.client.proto,
            parts.uri.authority(),
        );
        if let Some(span) = &self.upstream_span {
            telemetry::inject(span, &mut parts.headers);
        }
        parts
            .headers
            .insert(RequestId::HEADER, self.ctx.request_id.header().clone());
        parts.version = http::Version::HTTP_11;
        let body = match (&mut self.body, max_body) {
            (BodyState::Streaming(body), _) if hyper::body::Body::is_end_stream(body) => OutBody::Bytes(Bytes::new()),
            (BodyState::Streaming(body), None) => OutBody::Stream(std::mem::take(body)),
            (BodyState::Streaming(body), Some(limit)) => {
                OutBody::Stream(Body::new(http_body_util::Limited::new(std::mem::take(body), limit)))
            }
            (BodyState::Buffered(bytes), Some(limit)) if bytes.len() > limit => {
                return Err(RequestError::BodyTooLarge(limit));
            }
            (BodyState::Buffered(bytes), _) => OutBody::Bytes(bytes.clone()),
        };
        let path = if keep {
            self.upstream_path.clone()
        } else {
            std::mem::take(&mut self.upstream_path)
        };
        Ok(Outgoing { parts, path, body })
    }

    /// What `consistent_hash` may hash besides the headers. (Borrows two
    /// fields, not the exchange, whose streaming body is not `Sync`.)
    fn affinity(&self) -> Affinity<'_> {
        Affinity {
            client_ip: self.client.ip.as_bytes(),
            key_id: self.caller.as_ref().map(|c| c.data.key_id.as_str()),
        }
    }

    /// Buffers the body if `plugin` reads it (before [`Self::plugin_request`]).
    async fn buffer_body_for(&mut self, plugin: &Plugin) -> Result<(), RequestError> {
        if plugin.wants_body() {
            self.buffered_body(plugin.limits().max_body_bytes).await?;
        }
        Ok(())
    }

    /// The request record a plugin sees, borrowed from the exchange. With
    /// `with_body` it carries the body [`Self::buffer_body_for`] buffered.
    fn plugin_request<'a>(&'a self, with_body: bool, headers: &'a HeaderText<'a>) -> RequestRecord<'a> {
        let body = match &self.body {
            BodyState::Buffered(bytes) if with_body => Some(&bytes[..]),
            _ => None,
        };
        RequestRecord {
            method: self.parts.method.as_str(),
            path: self.parts.uri.path(),
            upstream_path: &self.upstream_path,
            query: self.parts.uri.query().unwrap_or_default(),
            headers: headers.fields(),
            body,
            client_addr: &self.client.addr,
            params: &self.params,
            request_id: self.ctx.request_id.as_str(),
        }
    }

    async fn buffered_body(&mut self, limit: usize) -> Result<Bytes, RequestError> {
        let bytes = match std::mem::replace(&mut self.body, BodyState::Buffered(Bytes::new())) {
            BodyState::Buffered(bytes) if bytes.len() > limit => return Err(RequestError::BodyTooLarge(limit)),
            BodyState::Buffered(bytes) => bytes,
            BodyState::Streaming(body) => tokio::time::timeout(self.body_timeout, read_body(body, limit))
                .await
                .map_err(|_| RequestError::BodyTimeout(self.body_timeout.as_millis() as u64))??,
        };
        self.body = BodyState::Buffered(bytes.clone());
        Ok(bytes)
    }

    /// Runs one `request` plugin; `Some` if it answered (or failed into a
    /// fallback response).
    async fn request_hook(&mut self, plugin: &Plugin, hook: &'static str) -> Result<Option<Response>, RequestError> {
        self.ctx.hook = hook;
        self.buffer_body_for(plugin).await?;
        let headers = HeaderText::new(&self.parts.headers);
        let request = self.plugin_request(plugin.wants_body(), &headers);
        let result = match plugin.on_request(&self.ctx, &request, &self.session).await {
            Ok(Outcome::Continue(changes)) => self.continue_with(plugin, changes),
            Ok(Outcome::Respond(response)) => return Ok(Some(plugin_response(plugin, response)?)),
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => Ok(None),
            Err(error) if plugin.on_error() == OnError::Continue => {
                log_failure(&self.ctx, plugin, &error);
                Ok(None)
            }
            Err(error) => plugin_failed(&self.ctx, plugin, error).map(Some),
        }
    }

    /// Applies the changes a plugin continued with; a change the gateway
    /// cannot apply is the plugin's failure.
    fn continue_with(&mut self, plugin: &Plugin, changes: RequestChanges) -> Result<(), PluginError> {
        match self.apply(plugin.limits(), changes) {
            Ok(dropped) => {
                log_dropped(plugin, &dropped);
                Ok(())
            }
            Err(why) => Err(plugin.invalid(&why)),
        }
    }

    /// Applies a `continue` outcome, checked by the runtime. What can only
    /// be checked here (the session metadata merged with the session's own)
    /// is checked, and every value parsed, before anything changes: a
    /// refused outcome leaves the request as it was. Returns the header
    /// names it dropped (see [`framing`]).
    fn apply(&mut self, limits: &Limits, changes: RequestChanges) -> Result<Vec<HeaderName>, String> {
        let metadata = if changes.session_metadata.is_empty() {
            None
        } else {
            Some(self.merged_metadata(limits, changes.session_metadata)?)
        };
        let upstream = changes
            .upstream
            .as_deref()
            .map(|u| self.ctx.routing.target(u))
            .transpose()?;
        let (set_headers, mut dropped) = framing::plugin_headers(&changes.set_headers)?;
        let (response_headers, dropped_too) = framing::plugin_headers(&changes.response_headers)?;
        dropped.extend(dropped_too);
        let method: Option<http::Method> = changes
            .method
            .map(|m| m.parse())
            .transpose()
            .map_err(|e| format!("{e}"))?;
        let uri: Option<http::Uri> = changes
            .query
            .map(|query| {
                let path = self.parts.uri.path();
                if query.is_empty() {
                    path.parse()
                } else {
                    format!("{path}?{query}").parse()
                }
            })
            .transpose()
            .map_err(|e| format!("{e}"))?;
        let parts = &mut self.parts;
        if let Some(method) = method {
            parts.method = method;
        }
        if let Some(uri) = uri {
            parts.uri = uri;
        }
        if let Some(path) = changes.path {
            self.upstream_path = path;
        }
        for name in &changes.remove_headers {
            parts.headers.remove(name.as_str());
        }
        // Each name set replaces every value the request had for it.
        set_all(&mut parts.headers, set_headers);
        if let Some(destination) = upstream {
            self.destination = destination;
        }
        set_all(&mut self.response_headers, response_headers);
        if let Some(body) = changes.body {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::TRANSFER_ENCODING);
            self.body = BodyState::Buffered(body.into());
        }
        if let Some(metadata) = metadata {
            self.session.metadata = metadata.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
            if let Some(caller) = &mut self.caller {
                caller.data.metadata = metadata;
            }
            self.metadata_dirty = true;
        }
        Ok(dropped)
    }

    /// The session's metadata with `changes` set (a sorted map: linear in
    /// the entries, however many the plugin returns), if the session stays
    /// within the plugin's limits.
    fn merged_metadata(
        &self,
        limits: &Limits,
        changes: Vec<(String, String)>,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut merged: BTreeMap<String, String> = self.session.metadata.iter().cloned().collect();
        merged.extend(changes);
        plugin::check_session_size(
            &self.session.key_id,
            self.session.tags.iter().map(String::as_str),
            merged.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            limits,
        )
        .map_err(|why| format!("with the session's own metadata, {why}"))?;
        Ok(merged)
    }

    /// Runs one `response` plugin over `response`. The body is buffered only
    /// if the plugin reads it; otherwise it keeps streaming and only status
    /// and headers can change.
    async fn response_hook(&mut self, plugin: &Plugin, response: Response) -> Result<Response, RequestError> {
        self.ctx.hook = "response";
        let (parts, body) = response.into_parts();
        let (bytes, body) = if plugin.wants_body() {
            let limit = plugin.limits().max_body_bytes;
            let bytes = read_body(body, limit).await.map_err(|e| match e {
                RequestError::BodyTooLarge(limit) => RequestError::ResponseTooLarge(limit),
                other => other,
            })?;
            (bytes, None)
        } else {
            (Bytes::new(), Some(body))
        };
        // `(body)` on a response function means the response's body; the
        // request's has gone to the upstream, so its record carries none.
        let headers = HeaderText::new(&self.parts.headers);
        let request = self.plugin_request(false, &headers);
        let response_headers = HeaderText::new(&parts.headers);
        let record = ResponseRecord {
            status: parts.status.as_u16(),
            headers: response_headers.fields(),
            body: &bytes,
        };
        match plugin.on_response(&self.ctx, &request, &record, &self.session).await {
            Ok(changed) => {
                // A body the plugin did not read streams on unchanged.
                let body = body.unwrap_or_else(|| Body::from(changed.body));
                framed(plugin, framing::plugin_response(changed.status, &changed.headers, body))
            }
            Err(error) if plugin.on_error() == OnError::Continue => {
                log_failure(&self.ctx, plugin, &error);
                Ok(Response::from_parts(parts, body.unwrap_or_else(|| Body::from(bytes))))
            }
            Err(error) => plugin_failed(&self.ctx, plugin, error),
        }
    }
}

fn log_failure(ctx: &CallContext, plugin: &Plugin, error: &PluginError) {
    tracing::warn!(
        request_id = ctx.request_id.as_str(),
        api = &*ctx.api_id,
        plugin = plugin.label(),
        path = %plugin.path().display(),
        error = %error,
        on_error = ?plugin.on_error(),
        "plugin invocation failed"
    );
}

/// A failed plugin (with `on_error: fail`): its fallback response, or the
/// gateway's error.
fn plugin_failed(ctx: &CallContext, plugin: &Plugin, error: PluginError) -> Result<Response, RequestError> {
    log_failure(ctx, plugin, &error);
    match plugin.fallback() {
        Some(fallback) => {
            let body = if framing::has_no_body(fallback.status) {
                Body::empty()
            } else {
                Body::from(fallback.body.clone())
            };
            let mut response = Response::new(body);
            *response.status_mut() = fallback.status;
            *response.headers_mut() = fallback.headers.clone();
            Ok(response)
        }
        None => Err(RequestError::Plugin {
            plugin: plugin.label().to_owned(),
            source: error,
        }),
    }
}

/// Sets every name in `fields` on `headers`, replacing the values `headers`
/// had for it (a name `fields` holds several values for gets them all).
fn set_all(headers: &mut HeaderMap, fields: HeaderMap) {
    let mut last = None;
    for (name, value) in fields {
        match name {
            Some(name) => {
                headers.insert(&name, value);
                last = Some(name);
            }
            None => {
                if let Some(name) = &last {
                    headers.append(name, value);
                }
            }
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(RequestError::BodyTooLarge(limit)),
        Err(e) => Err(RequestError::BadBody(e.to_string())),
    }
}

/// A plugin's response record as an HTTP response, framed by the gateway.
/// The runtime checked it, so the conversion does not fail in practice.
fn plugin_response(plugin: &Plugin, response: plugin::Response) -> Result<Response, RequestError> {
    let body = Body::from(response.body);
    framed(
        plugin,
        framing::plugin_response(response.status, &response.headers, body),
    )
}

fn framed(plugin: &Plugin, built: Result<(Response, Vec<HeaderName>), String>) -> Result<Response, RequestError> {
    let (response, dropped) = built.map_err(RequestError::Internal)?;
    log_dropped(plugin, &dropped);
    Ok(response)
}

/// Notes the framing and connection headers a plugin set, which the
/// gateway dropped (see [`framing`]).
fn log_dropped(plugin: &Plugin, dropped: &[HeaderName]) {
    if !dropped.is_empty() {
        tracing::debug!(
            plugin = plugin.label(),
            ?dropped,
            "headers only the gateway sets were dropped"
        );
    }
}

#[cfg(test)]
mod props;
