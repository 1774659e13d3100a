//! One request from arrival to response: its id, its canonical path, the
//! API it routes to, its observation begun and ended
//! ([`crate::telemetry::Observer`]), and a failure turned into the error
//! response.

use super::*;

pub(super) async fn handle(gateway: &Gateway, client: Arc<Peer>, request: Request) -> Response {
    let started = Instant::now();
    let _in_flight = crate::telemetry::metrics::in_flight();
    let request_id = RequestId::for_request(request.headers());
    let routes = gateway.routes.load_full();
    // From here on, everything sees the canonical path: the span, the
    // access log, limits, plugins and the upstream.
    let (request, resolved) = canonical_request(&routes, request);
    let mut observer = Observer::begin(
        started,
        &request,
        &request_id,
        &client.addr,
        gateway.access_log.as_ref(),
    );
    // A browser's origin, when its API answers cross-origin requests.
    let origin = match &resolved {
        Ok(Some(api)) if api.cors.is_some() => Some(request.headers().get(header::ORIGIN).cloned()),
        _ => None,
    };
    let grpc = crate::grpc::is_grpc(request.headers());
    let request = observer.count_request_body(request);
    let span = observer.span().clone();
    let (api, result) = route(gateway, resolved, client, &request_id, request, &observer, grpc)
        .instrument(span)
        .await;
    let metrics = api.map_or(ApiMetrics::unrouted(), |api| &api.metrics);
    let (mut response, blame) = match result {
        Ok(response) => (response, None),
        Err(error) => {
            let blame = error.blame();
            if let Some(limit) = error.limit() {
                metrics.limited(limit);
            }
            observer.failed(&request_id, error.status(), blame, &error);
            let response = if grpc {
                error.into_grpc_response(request_id.as_str())
            } else {
                error.into_response(request_id.as_str())
            };
            (response, Some(blame))
        }
    };
    response
        .headers_mut()
        .insert(RequestId::HEADER, request_id.header().clone());
    if let (Some(origin), Some(cors)) = (origin, api.and_then(|api| api.cors.as_ref())) {
        policy::cors_response(cors, origin.as_ref(), response.headers_mut());
    }
    observer.end(metrics, api.map(|api| &*api.id), blame, response)
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

/// `uri` with its query replaced (removed if `query` is empty).
pub(super) fn with_query(uri: &http::Uri, query: &str) -> Option<http::Uri> {
    let path_and_query = if query.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{query}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Serves the request at the API it routed to; says which API it was.
async fn route<'r>(
    gateway: &Gateway,
    resolved: Result<Option<&'r ApiRoute>, PathError>,
    client: Arc<Peer>,
    request_id: &RequestId,
    request: Request,
    observer: &Observer,
    grpc: bool,
) -> (Option<&'r ApiRoute>, Result<Response, RequestError>) {
    let api = match resolved {
        Ok(Some(api)) => api,
        Ok(None) => return (None, Err(RequestError::NoRoute)),
        Err(why) => return (None, Err(RequestError::BadPath(why))),
    };
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let rest = api.rest(&path).unwrap_or("/");
    let arrival = Arrival {
        client,
        request_id,
        accounting: observer.accounting(),
        trace: observer.trace(),
        grpc,
    };
    let served = chain::serve_api(gateway, api, rest, arrival, parts, body).await;
    (Some(api), served)
}
