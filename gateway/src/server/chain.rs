//! The chain a request goes through at its API, one function per phase:
//! admission (transport, client IP lists, a CORS preflight answered,
//! header hygiene, the endpoint and whether it is denied, declared size), the
//! limits on every caller, then the request phase (`pre`, authentication,
//! `post_auth`, the key's limits, the endpoint's plugin, `post`), then the
//! upstream or a plugin's response, then the `response` hooks. A phase with
//! nothing to do for an API makes no future: the common path pays only for
//! what is configured.

use super::*;
use crate::config::{EndpointPolicy, UpstreamTimeouts};
use crate::server::jwt::TokenError;

/// How the request phase ended.
pub(super) enum Phase {
    /// Go to the upstream.
    Upstream,
    /// A plugin answered.
    Respond(Response),
}

/// What arrived with the request besides the request itself: who sent
/// it, its id, and where its observation collects what the chain uses.
pub(super) struct Arrival<'a> {
    pub(super) client: Arc<Peer>,
    pub(super) request_id: &'a RequestId,
    pub(super) accounting: Option<Accounting>,
    pub(super) trace: Option<opentelemetry::Context>,
    /// Whether the request is a gRPC call (`content-type: application/grpc`).
    pub(super) grpc: bool,
}

/// Serves a request at its API, phase by phase. `rest` is the path after
/// the API's listen path.
pub(super) async fn serve_api(
    gateway: &Gateway,
    api: &ApiRoute,
    rest: &str,
    arrival: Arrival<'_>,
    mut parts: Parts,
    body: Body,
) -> Result<Response, RequestError> {
    check_transport(api, &arrival.client)?;
    if let Some(ips) = &api.client_ips
        && !ips.admits(arrival.client.ip_addr)
    {
        return Err(policy::Refusal::ClientIp.into());
    }
    // A browser's preflight carries no credentials: it is answered before
    // authentication, whatever endpoint its path would match.
    if let Some(cors) = &api.cors
        && let Some(answer) = policy::preflight(cors, &parts)
    {
        return answer;
    }
    let matched = admit(api, rest, &arrival.client, &mut parts)?;
    let limiters = [
        matched.as_ref().and_then(|m| m.endpoint.rate_limit.as_ref()),
        api.rate_limit.as_ref(),
    ];
    // No future at all on the common path: most APIs limit only by key.
    let limit_headers = if limiters.iter().all(Option::is_none) {
        LimitHeaders::default()
    } else {
        caller_limits(gateway, limiters, &arrival.client, &parts).await?
    };
    let mut ex = begin_exchange(api, rest, arrival, parts, body, matched.as_ref(), limit_headers);
    let policy = matched.as_ref().map(|m| &m.endpoint.policy);
    let skip_auth = policy.is_some_and(|p| p.skip_auth);
    let endpoint = matched.as_ref().and_then(|m| m.endpoint.plugin.as_ref());
    // The request phase and the response hooks are boxed: their futures
    // (plugin calls, the session store) are kilobytes, and inline they
    // would make every request's future as large, to be moved and kept per
    // connection, whether or not its API has anything for them to do.
    let keyless = skip_auth || matches!(api.auth, Auth::Keyless);
    let phase = if keyless && endpoint.is_none() && api.hooks.request_phase_is_empty() {
        Phase::Upstream
    } else {
        let phase = Box::pin(request_phase(gateway, api, rest, endpoint, skip_auth, &mut ex)).await;
        if ex.metadata_dirty {
            Box::pin(save_metadata(gateway, &mut ex)).await;
        }
        phase?
    };
    let (mut response, hooks) = match phase {
        Phase::Respond(response) => (response, &api.hooks.response[..]),
        // The endpoint answers for the upstream.
        Phase::Upstream if let Some(respond) = policy.and_then(|p| p.respond.as_ref()) => {
            (policy::static_response(respond), &api.hooks.response[..])
        }
        Phase::Upstream => {
            ex.transform_request(api, policy);
            match ex.timed_upstream(api).await? {
                Upstreamed::Response(response) => (response, &api.hooks.response[..]),
                // The connection now belongs to the tunnel: there is no
                // response for hooks to change (a 101 is not theirs to make).
                Upstreamed::Switched(response) => (response, &[][..]),
            }
        }
    };
    // The response phase: the headers request-phase plugins set on the
    // client's response, the `response` hooks, then the limit headers (the
    // gateway's, last, so no hook can forge them).
    set_all(response.headers_mut(), std::mem::take(&mut ex.response_headers));
    ex.transform_response(api, policy, &mut response);
    if !hooks.is_empty() {
        response = Box::pin(response_hooks(hooks, &mut ex, response)).await?;
    }
    ex.limit_headers.apply(response.headers_mut());
    Ok(response)
}

/// The API's transport: TLS, and a client certificate, when it asks.
fn check_transport(api: &ApiRoute, client: &Peer) -> Result<(), RequestError> {
    tracing::Span::current().record("api", &*api.id);
    match api.transport {
        Transport::Any => Ok(()),
        _ if !client.tls => Err(RequestError::TlsRequired),
        Transport::MutualTls if client.client_cert.is_none() => Err(RequestError::ClientCertRequired),
        Transport::Tls | Transport::MutualTls => Ok(()),
    }
}

/// Admission, what every request passes before any plugin runs (after its
/// transport, client address and a preflight's answer): header hygiene
/// (the client certificate header only the gateway may vouch for, the
/// override headers removed), the endpoint matched and not denied, and a
/// declared body size within the endpoint's (or API's) limit.
fn admit<'a>(
    api: &'a ApiRoute,
    rest: &str,
    client: &Peer,
    parts: &mut Parts,
) -> Result<Option<EndpointMatch<'a>>, RequestError> {
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
        tracing::Span::current().record("endpoint", m.endpoint.template.as_str());
        if m.endpoint.policy.deny {
            return Err(policy::Refusal::Endpoint.into());
        }
    } else if api.unmatched == Unmatched::Reject {
        return Err(RequestError::NoEndpoint);
    }
    let policy = matched.as_ref().map(|m| &m.endpoint.policy);
    if let Some(limit) = max_request_body_bytes(api, policy)
        && declared_length(&parts.headers).is_some_and(|length| length > limit as u64)
    {
        // Refused before any plugin runs or the upstream hears of it.
        return Err(RequestError::BodyTooLarge(limit));
    }
    Ok(matched)
}

/// The upstream exchange's timeouts: the API's, or its endpoint's; a
/// gRPC call's `grpc-timeout` shortens the wait for the head and bounds
/// the whole exchange.
fn upstream_timeouts(
    api: &ApiRoute,
    matched: Option<&EndpointMatch<'_>>,
    grpc: bool,
    headers: &HeaderMap,
) -> UpstreamTimeouts {
    let mut timeouts = api.timeouts;
    if let Some(head) = matched.and_then(|m| m.endpoint.policy.upstream_timeout) {
        timeouts.head = head;
    }
    if grpc && let Some(deadline) = crate::grpc::timeout(headers) {
        timeouts.head = timeouts.head.min(deadline);
        timeouts.total = Some(timeouts.total.map_or(deadline, |total| total.min(deadline)));
    }
    timeouts
}

/// The largest request body the endpoint (or else the API) takes.
fn max_request_body_bytes(api: &ApiRoute, endpoint: Option<&EndpointPolicy>) -> Option<usize> {
    endpoint
        .and_then(|e| e.max_request_body_bytes)
        .or(api.max_request_body_bytes)
}

/// The rate limits on every caller, the endpoint's then the API's: they
/// come before any plugin, so a refused request costs no plugin call, and
/// a request the endpoint refuses does not use the API's allowance.
async fn caller_limits(
    gateway: &Gateway,
    limiters: [Option<&RateLimiter>; 2],
    client: &Peer,
    parts: &Parts,
) -> Result<LimitHeaders, RequestError> {
    let mut limit_headers = LimitHeaders::default();
    for limiter in limiters.into_iter().flatten() {
        let mut headers = limiter.check(&gateway.store, &client.ip, &parts.headers).await?;
        // The most specific limit's headers win: the endpoint's over the API's.
        headers.extend(limit_headers);
        limit_headers = headers;
    }
    Ok(limit_headers)
}

/// The exchange an admitted request is served as: its plugin call context,
/// its default destination and the path the upstream sees. (Inlined: one
/// call site, and a call would copy the request head once more.)
#[inline]
fn begin_exchange(
    api: &ApiRoute,
    rest: &str,
    arrival: Arrival<'_>,
    parts: Parts,
    body: Body,
    matched: Option<&EndpointMatch<'_>>,
    limit_headers: LimitHeaders,
) -> Exchange {
    let Arrival {
        client,
        request_id,
        accounting,
        trace,
        grpc,
    } = arrival;
    if let Some(trace) = &trace {
        let mut attributes = vec![KeyValue::new("portcullis.api", api.id.to_string())];
        if let Some(m) = matched {
            attributes.push(KeyValue::new("http.route", m.endpoint.template.clone()));
        }
        telemetry::record(trace, attributes);
    }
    let mut ctx = api.call_context(request_id.clone(), &parts.headers, trace);
    let timeouts = upstream_timeouts(api, matched, grpc, &parts.headers);
    let usage = accounting.map(|(usage, plugins)| {
        ctx.stats = Some(plugins);
        if let Some(m) = matched {
            lock(&usage).endpoint = Some(m.endpoint.template.clone());
        }
        usage
    });
    Exchange {
        ctx,
        usage,
        destination: api.upstreams.default_destination(),
        upstream_path: if api.strip_listen_path {
            rest.to_owned()
        } else {
            parts.uri.path().to_owned()
        },
        params: matched.map(|m| m.params.clone()).unwrap_or_default(),
        parts,
        body: BodyState::Streaming(body),
        timeouts,
        max_body: max_request_body_bytes(api, matched.map(|m| &m.endpoint.policy)),
        client,
        session: Session::anonymous(),
        caller: None,
        metadata_dirty: false,
        limit_headers,
        response_headers: HeaderMap::new(),
        upstream_span: None,
        body_timeout: api.body_timeout,
    }
}

/// The `response` hooks, in order, over the response.
async fn response_hooks(hooks: &[Plugin], ex: &mut Exchange, mut response: Response) -> Result<Response, RequestError> {
    for plugin in hooks {
        response = ex.response_hook(plugin, response).await?;
    }
    Ok(response)
}

/// The request phase: `pre` hooks, authentication (keyless, an API key, or
/// an `auth` plugin's session), `post_auth` hooks, the caller's own rate
/// limit and quota, the endpoint's plugin, `post` hooks. A plugin that
/// answers ends it.
pub(super) async fn request_phase(
    gateway: &Gateway,
    api: &ApiRoute,
    rest: &str,
    endpoint: Option<&Plugin>,
    skip_auth: bool,
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
        _ if skip_auth => None,
        Auth::Keyless => None,
        Auth::Jwt(jwt) => {
            let token = jwt.token(&ex.parts).ok_or(Denied::Token(TokenError::Missing))?;
            let data = jwt.verify(&token).await.map_err(Denied::Token)?;
            Some(Caller {
                // The token is the session: nothing is stored.
                store_id: String::new(),
                counter_id: format!("jwt:{}", data.key_id),
                data,
            })
        }
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
                Ok(AuthResult::Authenticated { session, changes }) => {
                    match auth::plugin_caller(store, session, plugin.limits()).await? {
                        Ok(caller) => {
                            auth_changes = Some((plugin, changes));
                            Some(caller)
                        }
                        Err(why) => return Ok(Phase::Respond(plugin_failed(&ex.ctx, plugin, plugin.invalid(&why))?)),
                    }
                }
                Ok(AuthResult::Respond(reply)) => return Ok(Phase::Respond(framed(plugin, reply, None))),
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
