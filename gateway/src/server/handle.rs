//! One request from arrival to response: its id, its canonical path, the
//! API it routes to, its observation begun and ended, and a failure turned
//! into the error response.

use super::*;

pub(super) async fn handle(gateway: &Gateway, client: Arc<Peer>, request: Request) -> Response {
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

/// The request with its path canonicalised (the URI rewritten only when
/// the client's spelling was not canonical), and the API it routes to, or
/// why its path is refused.
pub(super) fn canonical_request(routes: &Routes, request: Request) -> (Request, Result<Option<&ApiRoute>, PathError>) {
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
pub(super) fn with_path(uri: &http::Uri, path: &str) -> Option<http::Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Serves the request at the API it routed to; says which API it was.
pub(super) async fn serve<'r>(
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
pub(super) type Accounting = (Arc<std::sync::Mutex<Usage>>, Arc<std::sync::Mutex<CallStats>>);
